//! Closed-model stages: users ramp up and down linearly between levels; a
//! ramp-down lets each stopped user finish its iteration.

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_reach_each_level_at_the_right_time() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(50),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let load = "stages = [{ users = 4, duration = \"2s\" }, { users = 4, duration = \"2s\" }, { users = 0, duration = \"2s\" }]\ngraceful_stop = \"5s\"";
    let plan = write_plan(
        dir.path(),
        "stages.toml",
        &plan_toml(&bed.base_url(), load, &[("a", "/a"), ("b", "/b")]),
    );
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["load"]["user_stages"][2]["to"], 0);
    // Users arrive every 0.5 s while ramping 0 -> 4 over 2 s.
    let arrivals = bed.stats().first_request_times();
    assert_eq!(arrivals.len(), 4);
    let gaps: Vec<f64> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(gaps.iter().all(|g| (0.4..=0.6).contains(g)), "{gaps:?}");
    // Active users at the end of each second: up, hold at 4, down.
    let active: Vec<u64> = s["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["active_users"].as_u64().unwrap())
        .collect();
    eprintln!("active users per second: {active:?}");
    assert!(active[0] <= 3, "{active:?}");
    assert_eq!(active[2], 4, "held at 4 from 2 s to 4 s: {active:?}");
    assert_eq!(active[3], 4, "{active:?}");
    assert!((1..=3).contains(&active[4]), "ramping down: {active:?}");
    // A stopped user finishes its iteration: both steps ran equally often.
    assert_eq!(
        s["requests"]["a"]["requests"],
        s["requests"]["b"]["requests"]
    );
    assert_eq!(s["total"]["errors"], 0);
    assert!(s["duration_s"].as_f64().unwrap() < 7.0);
}
