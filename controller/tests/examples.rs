//! Every plan shipped in examples/ is valid, so the examples stay true.

use loadfleet_controller::plan;

#[test]
fn every_example_plan_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .collect();
    files.push(dir.join("moodle/plan.toml"));
    for path in files {
        if path.extension().is_some_and(|e| e == "toml") {
            let p = plan::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(p.users() > 0);
            checked.push(p.name);
        }
    }
    checked.sort();
    assert_eq!(checked, ["journey", "moodle", "ramp-20", "smoke"]);
}

/// The demo's plan holds the seed's concurrency: its 40 users are all
/// active at once after the ramp (the seed's JMeter plan had them overlap
/// because its pages took seconds), against the test site with 0 errors,
/// every page carrying every footer metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plan_holds_forty_users_at_once() {
    use crate::support::*;
    let bed = testbed(loadfleet_testbed::Config {
        moodle: Some(loadfleet_testbed::moodle::MoodleConfig::default()),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.csv"),
        loadfleet_controller::demo::MOODLE_USERS,
    )
    .unwrap();
    let plan = write_plan(
        dir.path(),
        "demo.toml",
        // Its sweep's largest load.
        &loadfleet_controller::demo::demo_plan(&bed.base_url(), "1s", "4s")
            .replace("users = [20, 30, 40]", "users = 40"),
    );
    let out = dir.path().join("out");
    let exit = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ],
    )
    .wait(std::time::Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    let s = summary(&out);
    let peak = s["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["active_peak"].as_u64().unwrap_or(0))
        .max()
        .unwrap();
    println!("peak {peak} users; {} requests", s["total"]["requests"]);
    assert!((36..=40).contains(&peak), "peak {peak} of 40 users");
    assert_eq!(s["total"]["errors"], 0, "{}", s["errors"]);
    for m in [
        "time_used",
        "db_reads",
        "cache_hits",
        "app_hits",
        "app_misses",
    ] {
        let e = &s["total"]["metrics"][m];
        assert!(e["count"].as_u64().unwrap() > 100, "{m}: {e}");
    }
}
