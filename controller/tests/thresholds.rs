//! Thresholds on merged data: they pass and fail as they should, set the
//! exit code, appear in the table and summary.json, and can stop a run.

use std::time::{Duration, Instant};

use crate::support::*;
use loadfleet_controller::plan::parse;
use loadfleet_testbed::Config;

async fn slow_bed() -> loadfleet_testbed::Testbed {
    testbed(Config {
        latencies: vec![("/slow".into(), Duration::from_millis(30))],
        ..Config::default()
    })
    .await
}

fn plan_with(base: &str, load: &str, thresholds: &str) -> String {
    plan_toml(base, load, &[("home", "/"), ("slow", "/slow")]) + "\n[thresholds]\n" + thresholds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_passing_rules_set_the_exit_code() {
    let bed = slow_bed().await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_with(
        &bed.base_url(),
        "users = 2\niterations = 10",
        "overall = [\"p95 < 1s\", \"errors < 1%\"]\nsteps = { \"slow\" = [\"p50 < 10ms\"], \"home\" = [\"max < 1s\"] }",
    );
    let out = dir.path().join("fail");
    let exit = run_plan(&write_plan(dir.path(), "fail.toml", &text), &out).await;
    assert_eq!(exit.code, 1, "a failed threshold exits 1: {}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["status"], "thresholds_failed");
    assert_eq!(s["thresholds_passed"], false);
    let rules = s["thresholds"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    let slow = rules.iter().find(|r| r["scope"] == "slow").unwrap();
    assert_eq!(slow["passed"], false);
    assert!(slow["observed"].as_f64().unwrap() >= 30.0, "{slow}");
    assert!(
        rules
            .iter()
            .filter(|r| r["scope"] != "slow")
            .all(|r| r["passed"] == true),
        "{rules:?}"
    );
    assert!(
        exit.stdout.contains("p50 < 10ms") && exit.stdout.contains("FAIL"),
        "{}",
        exit.stdout
    );

    let text = plan_with(
        &bed.base_url(),
        "users = 2\niterations = 10",
        "overall = [\"p95 < 1s\", \"errors < 1%\", \"rps > 1\"]",
    );
    let out = dir.path().join("pass");
    let exit = run_plan(&write_plan(dir.path(), "pass.toml", &text), &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(
        (s["status"].as_str(), s["thresholds_passed"].as_bool()),
        (Some("completed"), Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_the_run_after_the_grace_time() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = 2\nduration = \"60s\"",
        &[("broken", "/status/500")],
    ) + "\n[thresholds]\noverall = [\"errors < 1%\"]\nabort_on_fail = true\ngrace = \"1s\"\n";
    let out = dir.path().join("run");
    let started = Instant::now();
    let exit = run_plan(&write_plan(dir.path(), "p.toml", &text), &out).await;
    let took = started.elapsed();
    assert_eq!(exit.code, 1);
    assert!(
        took < Duration::from_secs(10),
        "stopped after the grace time, not after 60 s: {took:?}"
    );
    let s = summary(&out);
    assert_eq!(s["status"], "thresholds_failed");
    assert_eq!(s["aborted_by"], "errors < 1% (overall)");
    assert!(
        s["duration_s"].as_f64().unwrap() >= 1.0,
        "not before the grace time"
    );
    assert_eq!(s["total"]["requests"], bed.stats().served());
}

#[test]
fn threshold_errors_have_positions() {
    let base = plan_toml(
        "http://127.0.0.1:9",
        "users = 1\niterations = 1",
        &[("home", "/")],
    );
    let e = parse(
        "plan.toml",
        &(base.clone() + "[thresholds]\noverall = [\"p95 < soon\"]\n"),
        "p",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("plan.toml:13:12: `thresholds`: in \"p95 < soon\""),
        "{e}"
    );
    let e = parse(
        "plan.toml",
        &(base.clone() + "[thresholds]\nsteps = { \"nope\" = [\"p95 < 1s\"] }\n"),
        "p",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("plan.toml:13:20: `thresholds.steps`: no step is named \"nope\""),
        "{e}"
    );
    let e = parse(
        "plan.toml",
        &(base.clone() + "[thresholds]\nscenarios = { \"nope\" = [\"p95 < 1s\"] }\n"),
        "p",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("plan.toml:13:24: `thresholds.scenarios`: no scenario is named \"nope\""),
        "{e}"
    );
    let e = parse(
        "plan.toml",
        &(base.clone() + "[thresholds]\nscenarios = { s = [\"agent_cpu < 80%\"] }\n"),
        "p",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`thresholds.scenarios`: in \"agent_cpu < 80%\": the generators' health"),
        "{e}"
    );
    let e = parse("plan.toml", &(base + "[thresholds]\noveral = []\n"), "p")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `overal`"), "{e}");
}
