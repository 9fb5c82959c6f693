//! `loadfleet import har`: a recording in the shape Chrome exports turns
//! into a plan that validates, names the values that need an extraction,
//! and runs against the test target with zero errors, counted there.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/session.har")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_recording_becomes_a_journey_that_runs() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("recorded.toml");
    let har = fixture();
    let exit = run(
        &loadfleet(),
        &[
            "import",
            "har",
            har.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--base-url",
            &bed.base_url(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(
        exit.stdout.contains("4 steps (2 static assets left out)"),
        "{}",
        exit.stdout
    );
    // The per-session values are named, on stderr and in the plan.
    for token in ["form field `csrf_token`", "header `X-CSRF-Token`"] {
        assert!(exit.stderr.contains(token), "{token}: {}", exit.stderr);
    }
    let plan = std::fs::read_to_string(&out).unwrap();
    eprintln!("{plan}");
    assert!(
        plan.contains("# CHECK: step 2 (POST /echo): form field `csrf_token`"),
        "{plan}"
    );
    // The recorded pause: from the first page's end (0.12 s) to the POST (2 s).
    assert!(plan.contains("think = \"1880ms\""), "{plan}");
    // Cookies, Host and pseudo-headers are not replayed; the recorded
    // redirect target is no step of its own.
    assert!(!plan.contains("rec0rded") && !plan.contains(":authority") && !plan.contains("Host"));
    assert_eq!(plan.matches("[[scenario.step]]").count(), 4);
    // The recorded site's Referer and Origin name the site it now loads.
    assert!(
        plan.contains(&format!("Referer = \"{}/\"", bed.base_url())),
        "{plan}"
    );
    // A literal `${name}` in the recorded JSON stays literal.
    assert!(plan.contains("$${name}"), "{plan}");
    let check = run(
        &loadfleet(),
        &["validate", out.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(check.code, 0, "{}", check.stderr);

    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&run_dir);
    assert_eq!(s["total"]["errors"], 0, "{}", s["errors"]);
    assert_eq!(s["total"]["requests"], 4);
    let stats = bed.stats();
    eprintln!(
        "served: / {}, /echo {}, /redirect/1 {}",
        stats.served_path("/"),
        stats.served_path("/echo"),
        stats.served_path("/redirect/1")
    );
    assert_eq!(stats.served_path("/"), 1);
    assert_eq!(
        stats.served_path("/echo"),
        3,
        "form POST, the followed redirect, the XHR"
    );
    assert_eq!(stats.served_path("/redirect/1"), 1);
    assert_eq!(stats.served(), 5);

    // Never over an existing file; a file that is not HAR says where.
    let again = run(
        &loadfleet(),
        &[
            "import",
            "har",
            har.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    let junk = dir.path().join("junk.har");
    std::fs::write(&junk, "{\"log\": {\"entries\": [1]}}").unwrap();
    let bad = run(
        &loadfleet(),
        &[
            "import",
            "har",
            junk.to_str().unwrap(),
            "--out",
            dir.path().join("x.toml").to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("not a HAR file") && bad.stderr.contains("line 1"),
        "{}",
        bad.stderr
    );
    assert!(!dir.path().join("x.toml").exists());
}
