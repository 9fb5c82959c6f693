//! The generators' own health: every agent reports its CPU, memory,
//! event-loop lag and connections each interval. A generator that stalls
//! (here: frozen with SIGSTOP, as an overloaded or starved machine would
//! be) is named in a warning, its intervals are marked suspect, and a
//! threshold on it can fail the run; a healthy one is not flagged.

use std::process::Command;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

async fn run_with(stall: bool) -> (Exit, serde_json::Value) {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(2),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "h.toml",
        &(plan_toml(
            &bed.base_url(),
            "users = 4\nduration = \"5s\"",
            &[("home", "/")],
        ) + "[thresholds]\noverall = [\"agent_lag < 40ms\"]\n"),
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 1);
    let a = agent(&url, "eu", "gen", &["--workers", "1"]);
    load_started(&bed, 50).await;
    if stall {
        let pid = a.child.id().to_string();
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let _ = Command::new("kill").args(["-STOP", &pid]).status();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = Command::new("kill").args(["-CONT", &pid]).status();
        }
    }
    let exit = exited(ctl, Duration::from_secs(60)).await;
    drop(a);
    (exit, summary(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_generator_is_named_and_its_intervals_marked() {
    let (exit, s) = run_with(true).await;
    let h = &s["agents"]["gen"]["health"];
    eprintln!("stalled generator: {h}");
    assert!(h["loop_lag_ms_max"].as_f64().unwrap() >= 250.0, "{h}");
    let saturated = h["saturated_intervals"].as_u64().unwrap();
    assert!((1..=4).contains(&saturated), "{h}");
    let suspect = s["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["suspect"] == serde_json::json!(["gen"]))
        .count() as u64;
    assert_eq!(suspect, saturated, "each saturated interval is marked");
    let warning = s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .find(|w| w.starts_with("agent gen's generator was saturated"))
        .unwrap_or_else(|| panic!("{}", s["warnings"]));
    assert!(
        exit.stdout.contains(&format!("WARNING: {warning}")),
        "{}",
        exit.stdout
    );
    // The threshold on the generators fails the run.
    assert_eq!(s["status"], "thresholds_failed", "{}", s["thresholds"]);
    assert_eq!(exit.code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_generator_reports_its_figures_and_is_not_flagged() {
    let (exit, s) = run_with(false).await;
    let h = &s["agents"]["gen"]["health"];
    eprintln!("healthy generator: {h}");
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(h["intervals"].as_u64().unwrap() >= 4, "{h}");
    assert_eq!(h["saturated_intervals"], 0, "{h}");
    assert!(h["cores"].as_u64().unwrap() >= 1);
    assert!(h["rss_mb_max"].as_f64().unwrap() > 1.0, "{h}");
    assert!(
        h["connections_max"].as_u64().unwrap() >= 4,
        "one per user: {h}"
    );
    let cpu = h["cpu_pct_mean"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 90.0, "{h}");
    assert!(
        s["warnings"].as_array().unwrap().is_empty(),
        "{}",
        s["warnings"]
    );
}
