//! Memory does not grow with the plan's size: a plan of 1,000 steps walked
//! once by one user runs in a small process (each step used to cost about
//! half a megabyte in full-range histograms, whether or not a sample landed
//! in them: 557 MiB for this plan).

use std::time::Duration;

use loadfleet_testbed::Config;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_step_plan_run_once_stays_small() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
    let steps: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "/")).collect();
    let plan = write_plan(
        dir.path(),
        "long.toml",
        &plan_toml(&bed.base_url(), "users = 1\niterations = 1", &steps),
    );
    let out = dir.path().join("r");
    let run = run_in_background(&plan, &out, &[]);
    let (exit, peak_kib) =
        tokio::task::spawn_blocking(move || run.wait_watching_rss(Duration::from_secs(120)))
            .await
            .unwrap();
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["total"]["requests"], 1000, "every step ran once");
    assert_eq!(s["requests"].as_object().map(|m| m.len()), Some(1000));
    let peak_mib = peak_kib as f64 / 1024.0;
    eprintln!("1,000 steps, embedded: peak RSS {peak_mib:.1} MiB");
    // A debug build; the release build peaks at about 46 MiB.
    assert!(
        peak_mib > 1.0 && peak_mib < 128.0,
        "peak RSS {peak_mib:.1} MiB for a 1,000-step plan"
    );
}
