//! A controller killed mid-run (SIGKILL, as a crash or an OOM kill would)
//! loses at most its last second: the run's journal is on disk, and
//! `loadfleet report RUN_DIR` rebuilds summary.json and report.html from
//! it, status `incomplete`, saying what is missing.

use std::time::{Duration, Instant};

use loadfleet_testbed::Config;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_is_rebuilt_from_its_journal() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(5),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "long.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 3\nduration = \"30s\"",
            &[("home", "/"), ("page", "/page")],
        ),
    );
    let out = dir.path().join("run");
    let mut ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    load_started(&bed, 1).await;
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let served_early = bed.stats().served();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ctl.child.kill().unwrap(); // SIGKILL, 8 s in
    let _ = ctl.child.wait();
    let served_at_kill = bed.stats().served();
    eprintln!("killed {:?} after load began", began.elapsed());
    assert!(
        !out.join("summary.json").exists(),
        "nothing was written at the end"
    );

    let exit = run(
        &loadfleet(),
        &["report", out.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(exit.stdout.contains("status incomplete"), "{}", exit.stdout);
    let s = summary(&out);
    assert_eq!(s["status"], "incomplete");
    let total = s["total"]["requests"].as_u64().unwrap();
    eprintln!(
        "rebuilt {total} requests; served {served_early} by 5.5 s, {served_at_kill} by the kill"
    );
    assert!(
        (served_early..=served_at_kill).contains(&total),
        "every interval closed a second before the kill is there: {total} of {served_at_kill} \
         ({served_early} by 2.5 s before it)"
    );
    let measured = s["duration_s"].as_f64().unwrap();
    assert!((5.0..8.5).contains(&measured), "{measured} s measured");
    assert!(s["timeline"].as_array().unwrap().len() >= 5);
    assert!(s["requests"]["page"]["requests"].as_u64().unwrap() > 0);
    let missing = s["missing"].as_array().unwrap();
    assert!(
        missing[0]
            .as_str()
            .unwrap()
            .starts_with("the controller stopped after"),
        "{missing:?}"
    );
    assert_eq!(s["agents"]["local"]["end"], "unknown");
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("incomplete") && report.contains("the controller stopped after"));
    assert!(std::fs::metadata(out.join("latency.hlog")).unwrap().len() > 0);
}

/// A run that ends normally leaves its outputs, not its journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_leaves_no_journal() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "short.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 1\niterations = 3",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(out.join("summary.json").exists());
    assert!(!out.join("journal.json").exists() && !out.join("journal.bin").exists());
}
