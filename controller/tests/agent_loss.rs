//! An agent lost for good (kill -9): the controller notices at once, the
//! report lists it with its partial contribution, the run is degraded; with
//! `on_agent_loss = "abort"` the others stop too.

use std::time::{Duration, Instant};

use crate::support::*;
use loadfleet_testbed::Config;

async fn lose_one(policy: &str) -> (Exit, serde_json::Value, Duration) {
    let (exit, s, took, _, _) = lose_one_then(policy, false).await;
    (exit, s, took)
}

/// Kills one of two agents mid-run; with `restart`, starts an agent of the
/// same name again at once. Returns the controller's exit, the summary, how
/// long the controller took after the kill, what the target served and the
/// restarted agent's exit.
async fn lose_one_then(
    policy: &str,
    restart: bool,
) -> (Exit, serde_json::Value, Duration, u64, Option<Exit>) {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(5),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = 4\nduration = \"6s\"",
        &[("home", "/")],
    ) + &format!("\n[fleet]\non_agent_loss = \"{policy}\"\n");
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let _stays = agent(&url, "eu", "stays", &[]);
    let mut doomed = agent(&url, "us", "doomed", &[]);
    load_started(&bed, 100).await;
    // Past the first interval report, so the doomed agent has contributed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    doomed.child.kill().unwrap(); // SIGKILL: no goodbye
    let _ = doomed.child.wait();
    let again = restart.then(|| agent(&url, "us", "doomed", &[]));
    let exit = exited(ctl, Duration::from_secs(60)).await;
    let took = started.elapsed();
    let again = match again {
        Some(p) => Some(exited(p, Duration::from_secs(30)).await),
        None => None,
    };
    (exit, summary(&out), took, bed.stats().served(), again)
}

/// An agent restarted under the same name during a run holds no state for
/// it: it is refused, and nothing it could do is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_does_not_rejoin_the_run() {
    let (exit, s, _, served, again) = lose_one_then("continue", true).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    assert_eq!(s["agents"]["doomed"]["end"], "lost");
    let again = again.unwrap();
    assert_ne!(again.code, 0, "the restarted agent was refused");
    assert!(
        again.stderr.contains("a run is in progress"),
        "{}",
        again.stderr
    );
    // Nothing is counted twice: the merged count never exceeds what the
    // target served (the killed agent's last, unreported second is missing
    // from it), and the run has its two agents, no third.
    let merged = s["total"]["requests"].as_u64().unwrap();
    assert!(merged <= served, "merged {merged}, served {served}");
    assert_eq!(s["agents"].as_object().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_keeps_the_others_running_and_marks_the_run_degraded() {
    let (exit, s, _) = lose_one("continue").await;
    assert_eq!(exit.code, 1, "a degraded run exits 1: {}", exit.stderr);
    assert_eq!(s["status"], "degraded");
    assert_eq!(s["agents"]["doomed"]["end"], "lost");
    assert!(s["agents"]["doomed"]["ended_at_s"].as_f64().unwrap() < 6.0);
    assert!(
        s["agents"]["doomed"]["requests"].as_u64().unwrap() > 0,
        "its partial contribution is kept"
    );
    assert_eq!(s["agents"]["stays"]["end"], "finished");
    // A lost agent never sends its totals: its own percentiles are unknown
    // (and the row says why), while its reports still count in its
    // region's exact figures.
    assert!(s["agents"]["doomed"]["latency_ms"].is_null());
    assert!(
        s["agents"]["doomed"]["note"]
            .as_str()
            .unwrap()
            .contains("its totals never arrived"),
        "{}",
        s["agents"]["doomed"]["note"]
    );
    assert!(s["agents"]["stays"]["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    let by_region: u64 = s["regions"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(by_region, s["total"]["requests"].as_u64().unwrap());
    assert!(
        s["duration_s"].as_f64().unwrap() >= 5.9,
        "the others ran to the end"
    );
    assert!(
        exit.stderr
            .contains("warning: agent doomed (region us) was lost at"),
        "{}",
        exit.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_the_others() {
    let (exit, s, took) = lose_one("abort").await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    assert_eq!(s["status"], "degraded");
    assert_eq!(
        s["aborted_by"],
        "agent doomed was lost (on_agent_loss = abort)"
    );
    assert!(
        took < Duration::from_secs(3),
        "the run stopped right after the loss, took {took:?}"
    );
    assert!(s["duration_s"].as_f64().unwrap() < 5.0);
}

/// An agent frozen (SIGSTOP) past its lease is marked lost; when it wakes
/// it gets no more load, but what it measured is still handed over and
/// counted, late, so the run's total equals what the target served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agent_that_comes_back_hands_over_what_it_measured() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(5),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = 4\nduration = \"16s\"",
        // Each agent its own path, so the target says who sent what.
        &[("home", "/a/${__agent}")],
    );
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let _stays = agent(&url, "eu", "stays", &[]);
    let frozen = agent(&url, "us", "frozen", &[]);
    load_started(&bed, 100).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = frozen.child.id().to_string();
    let signal = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    // Past its 5 s lease and the controller's 6 s of patience.
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Whatever it had sent before the freeze has been answered by now.
    let before = bed.stats().served_path("/a/frozen");
    signal("-CONT");
    let exit = exited(ctl, Duration::from_secs(60)).await;
    let agent_exit = exited(frozen, Duration::from_secs(30)).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["status"], "degraded");
    assert_eq!(s["agents"]["frozen"]["end"], "lost");
    assert!(
        s["agents"]["frozen"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("handed over its reports late")),
        "{}",
        s["agents"]["frozen"]
    );
    assert!(
        s["late_reports"].as_u64().unwrap() > 0,
        "{}",
        s["late_reports"]
    );
    assert_eq!(
        s["total"]["requests"].as_u64().unwrap(),
        bed.stats().served(),
        "every request the target served is counted"
    );
    assert_eq!(agent_exit.code, 0, "{}", agent_exit.stderr);
    // Woken past its lease, it sent nothing more, whichever of its threads
    // woke first.
    let after = bed.stats().served_path("/a/frozen");
    println!("the frozen agent: {before} requests served before it woke, {after} at the end");
    assert!(before > 0);
    assert_eq!(
        after, before,
        "a request went out after its lease had run out"
    );
    // What happened, said as it was: it went silent, came back, and every
    // report it made is counted; not "not counted".
    assert_eq!(
        s["agents"]["frozen"]["returned"], true,
        "{}",
        s["agents"]["frozen"]
    );
    let gap = s["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g.as_str())
        .find(|g| g.starts_with("agent frozen (region"))
        .unwrap_or_else(|| panic!("{}", s["warnings"]));
    assert!(
        !s["gaps"].to_string().contains("agent frozen (region"),
        "nothing of it is uncounted: {}",
        s["gaps"]
    );
    println!("{gap}");
    assert!(
        gap.contains("came back: every report it made arrived (late) and is counted"),
        "{gap}"
    );
    assert!(!gap.contains("not counted"), "{gap}");
}
