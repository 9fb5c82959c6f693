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

/// `[load] throttle`: a fleet-wide cap on a closed model's requests, split
/// across agents and workers, measured on the target's side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_caps_the_fleet_as_measured_at_the_target() {
    let bed = testbed(loadfleet_testbed::Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "throttle.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 6\nduration = \"6s\"\nthrottle = \"300/min\"",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let ctl = run_in_background(&plan, &out, &["--local-agents", "2"]);
    load_started(&bed, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let (t1, n1) = (std::time::Instant::now(), bed.stats().served());
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let (t2, n2) = (std::time::Instant::now(), bed.stats().served());
    let rate = (n2 - n1) as f64 / (t2 - t1).as_secs_f64();
    let exit = exited(ctl, std::time::Duration::from_secs(30)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    eprintln!(
        "throttle 300/min: {rate:.2} req/s at the target; {} requests in all",
        s["total"]["requests"]
    );
    assert!(
        (4.0..=6.0).contains(&rate),
        "5/s expected, the target saw {rate:.2}/s"
    );
    let total = s["total"]["requests"].as_u64().unwrap();
    assert!((25..=36).contains(&total), "about 6 s x 5/s: {total}");
    assert!(
        s["load"]["description"]
            .as_str()
            .unwrap()
            .contains("throttled to 300 requests/min"),
        "{}",
        s["load"]["description"]
    );
    // Only on a closed model, and only with a unit of time.
    for (load, expected) in [
        (
            "rate = 10\nduration = \"1s\"\nthrottle = \"5/s\"",
            "the open model's `rate` already sets the pace",
        ),
        (
            "users = 1\niterations = 1\nthrottle = \"5 per second\"",
            "expected requests per unit of time",
        ),
    ] {
        let p = write_plan(
            dir.path(),
            "bad.toml",
            &plan_toml("http://127.0.0.1:9", load, &[("home", "/")]),
        );
        let e = run(
            &loadfleet(),
            &["validate", p.to_str().unwrap()],
            std::time::Duration::from_secs(10),
        );
        assert_eq!(e.code, 2, "{}", e.stderr);
        assert!(
            e.stderr.contains("`load.throttle`") && e.stderr.contains(expected),
            "{}",
            e.stderr
        );
    }
}
