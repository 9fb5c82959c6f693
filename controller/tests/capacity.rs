//! Capacity search finds the knee of a target whose latency rises past a
//! known concurrency: the testbed serves 8 requests at once (20 ms each) and
//! queues the rest, so 8 users meet "p95 < 30ms" and 9 do not.

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_knee_within_one_step() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(20),
        concurrency: Some(8),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "knee.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 1\niterations = 1",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("capacity");
    let p = Proc::spawn(
        &loadfleet(),
        &[
            "capacity",
            plan.to_str().unwrap(),
            "--slo",
            "p95 < 30ms",
            "--slo",
            "errors < 1%",
            "--step-duration",
            "1s",
            "--max-steps",
            "10",
            "--max-load",
            "64",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let exit = exited(p, Duration::from_secs(120)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("capacity.json")).unwrap()).unwrap();
    eprintln!("{}", exit.stdout);
    let capacity = report["capacity"].as_f64().unwrap();
    let failure = report["first_failure"].as_f64().unwrap();
    assert!(
        (7.0..=9.0).contains(&capacity),
        "the knee is at 8 users, found {capacity}"
    );
    assert_eq!(failure, capacity + 1.0, "narrowed to one user");
    let steps = report["steps"].as_array().unwrap();
    assert!(steps.len() <= 10);
    let loads: Vec<f64> = steps.iter().map(|s| s["load"].as_f64().unwrap()).collect();
    assert_eq!(&loads[..4], &[1.0, 2.0, 4.0, 8.0], "doubling first");
    for s in steps {
        let run = out.join(s["run"].as_str().unwrap());
        assert!(
            run.join("summary.json").exists(),
            "every step is a full run: {}",
            run.display()
        );
    }
    assert!(
        exit.stdout
            .contains(&format!("highest users that met every SLO: {capacity}")),
        "{}",
        exit.stdout
    );
    // What a broken SLO observed reads as a number, everywhere.
    let broken = exit
        .stdout
        .lines()
        .find(|l| l.contains("p95 < 30ms") && l.contains("FAIL"))
        .unwrap_or_else(|| panic!("{}", exit.stdout));
    assert!(broken.contains('.'), "{broken}");
    assert!(!exit.stderr.contains("Some(") && !exit.stdout.contains("Some("));
    // capacity.html: the answer first, the knee marked on the charts, and
    // every step linked to its report (which exists).
    let page = std::fs::read_to_string(out.join("capacity.html")).unwrap();
    let answer =
        format!("highest users that met every SLO: {capacity} (first failure at {failure})");
    assert!(
        page.find(&answer).unwrap() < page.find("<svg").unwrap(),
        "the answer comes first"
    );
    assert!(
        page.contains(&format!("capacity ({capacity})")),
        "the knee is marked"
    );
    assert!(page.contains("name=\"viewport\""));
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains("<a href=\"capacity.html\">"), "{index}");
    for s in steps {
        let link = format!("href=\"{}/report.html\"", s["run"].as_str().unwrap());
        assert!(page.contains(&link), "{link}");
        assert!(index.contains(&link), "{link} in the index");
        assert!(
            out.join(s["run"].as_str().unwrap())
                .join("report.html")
                .exists()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_slo_is_a_usage_error_and_sends_nothing() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 1\niterations = 1",
            &[("home", "/")],
        ),
    );
    let exit = run(
        &loadfleet(),
        &["capacity", plan.to_str().unwrap(), "--slo", "p95 < quick"],
        Duration::from_secs(10),
    );
    assert_eq!(exit.code, 2);
    assert!(
        exit.stderr.contains("--slo: in \"p95 < quick\""),
        "{}",
        exit.stderr
    );
    assert_eq!(bed.stats().served(), 0);
}
