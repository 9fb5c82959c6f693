//! `loadfleet import jmeter`: a plan in the shape Moodle's generator writes
//! (two serialized thread groups, a shared CSV without a header row, regex
//! extractors, the "Logged in" assertion, a shared throughput timer) turns
//! into a plan with two phases that runs against the test target's Moodle
//! site with zero errors, its logins and replies counted there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;
use loadfleet_testbed::moodle::MoodleConfig;

/// The fixture JMX and its users file, copied into `dir`.
fn fixture(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for f in ["moodle-testplan.jmx", "moodle-users.csv"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir.join("moodle-testplan.jmx")
}

fn import(jmx: &Path, out: &Path, extra: &[&str]) -> Exit {
    let mut args = vec![
        "import",
        "jmeter",
        jmx.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&loadfleet(), &args, Duration::from_secs(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moodles_generated_plan_imports_and_runs_unchanged() {
    let bed = testbed(Config {
        moodle: Some(MoodleConfig::default()),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let jmx = fixture(dir.path());
    let out = dir.path().join("moodle.toml");
    // The throughput timer's 120 samples a minute would make the test last
    // minutes: a JMeter property raises it, as `jmeter -J` would.
    let exit = import(
        &jmx,
        &out,
        &[
            "--base-url",
            &bed.base_url(),
            "-J",
            "throughput=6000",
            "-J",
            "loops=2",
        ],
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    println!("{}\n{}", exit.stdout, exit.stderr);
    assert!(
        exit.stdout.contains("2 scenario(s), 20 steps"),
        "{}",
        exit.stdout
    );
    // What does not map is named, on stderr and in the plan.
    for what in [
        "BeanShellListener \"Sampler recorder\": a listener",
        "ResultCollector \"Results\": a listener",
    ] {
        assert!(exit.stderr.contains(what), "{what}: {}", exit.stderr);
    }
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}");
    // A listener changes nothing that is sent: listed apart.
    assert!(
        plan.contains("# LEFT OUT (the load is the same): BeanShellListener"),
        "{plan}"
    );
    // Two phases, the shared throttle in each; the CSV without its header
    // row; the extractions and the assertion.
    assert_eq!(plan.matches("[[phase]]").count(), 2, "{plan}");
    assert!(plan.contains("throttle = \"6000/min\""), "{plan}");
    assert!(
        plan.contains("iterations = 2") && plan.contains("iterations = 1"),
        "{plan}"
    );
    assert!(
        plan.contains("columns = [\"username\", \"password\"]"),
        "{plan}"
    );
    assert!(plan.contains("file = \"moodle-users.csv\""), "{plan}");
    assert!(
        plan.contains("clear_cookies_each_iteration = true"),
        "{plan}"
    );
    assert!(
        plan.contains(r#"body_matches = ['id="user-menu-toggle"']"#),
        "{plan}"
    );
    assert!(
        plan.contains("match = 2"),
        "the course page's second sesskey"
    );
    assert!(plan.contains("username = \"${users.username}\""), "{plan}");

    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    println!("{}", exit.stdout);
    // One run directory per phase, each with only its own figures.
    let warm = summary(&run_dir.join("phase-1-warm-up-site"));
    let test = summary(&run_dir.join("phase-2-moodle-test"));
    for (s, requests) in [(&warm, 4 * 6), (&test, 4 * 2 * 14)] {
        assert_eq!(s["total"]["errors"], 0, "{}", s["errors"]);
        assert_eq!(s["total"]["requests"], requests, "{}", s["total"]);
    }
    assert!(
        warm["requests"].get("Send the reply").is_none(),
        "the warm-up lists only its own steps"
    );
    assert_eq!(test["requests"]["Send the reply"]["requests"], 8);
    // A plan of Moodle's generator reads the footer: every page carries
    // every footer metric (the fixture's reply follows its redirect to the
    // discussion page, which has one).
    assert!(
        plan.contains("# Moodle's performance footer (a plan of Moodle's generator"),
        "{plan}"
    );
    for (step, e) in test["requests"].as_object().unwrap() {
        for m in [
            "time_used",
            "db_reads",
            "cache_hits",
            "cache_misses",
            "app_hits",
            "app_misses",
        ] {
            let metric = &e["metrics"][m];
            assert_eq!(metric["count"], e["requests"], "{step} {m}: {metric}");
            assert_eq!(metric["missing"], 0, "{step} {m}: {metric}");
        }
    }
    let phases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("phases.json")).unwrap())
            .unwrap();
    assert_eq!(phases["phases"][0]["phase"], "Warm-up site");
    assert_eq!(phases["phases"][1]["exit_code"], 0);
    assert!(
        exit.stdout.contains("2 phases, one run each"),
        "{}",
        exit.stdout
    );
    let page = std::fs::read_to_string(run_dir.join("phases.html")).unwrap();
    assert!(
        page.contains("href=\"phase-2-moodle-test/report.html\""),
        "{page}"
    );

    // Counted on the target: every user logged in once in the warm-up and
    // once per loop in the test, and every reply was accepted.
    let site = bed.moodle().unwrap();
    let logins: u64 = site.logins().values().sum();
    println!(
        "the site: {logins} logins, {} replies, {} refused logins, {} refused posts",
        site.replies(),
        site.failed_logins(),
        site.rejected_posts()
    );
    assert_eq!(logins, 4 + 4 * 2);
    assert_eq!(site.replies(), 4 * 2);
    assert_eq!((site.failed_logins(), site.rejected_posts()), (0, 0));
}

#[test]
fn strict_refuses_what_does_not_map_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jmx = fixture(dir.path());
    let out = dir.path().join("strict.toml");
    let exit = import(
        &jmx,
        &out,
        &["--strict", "--base-url", "http://127.0.0.1:9"],
    );
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    assert!(exit.stderr.contains("--strict:"), "{}", exit.stderr);
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn a_broken_jmx_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let jmx = dir.path().join("broken.jmx");
    std::fs::write(
        &jmx,
        "<?xml version=\"1.0\"?>\n<jmeterTestPlan>\n  <hashTree>\n    <TestPlan>\n  </hashTree>\n</jmeterTestPlan>\n",
    )
    .unwrap();
    let out = dir.path().join("broken.toml");
    let exit = import(&jmx, &out, &[]);
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("broken.jmx:5:3: not a JMeter plan (XML)"),
        "{}",
        exit.stderr
    );
    assert!(!out.exists());
}

/// `--out NAME.toml` in the current directory: the CSV beside the JMX is
/// found (it was reported as not existing, and the note landed in the plan).
#[test]
fn a_bare_out_file_name_finds_the_csv_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let out = std::process::Command::new(loadfleet())
        .args([
            "import",
            "jmeter",
            "moodle-testplan.jmx",
            "--out",
            "moodle.toml",
            "--base-url",
            "http://127.0.0.1:9",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("does not exist here"), "{stderr}");
    let plan = std::fs::read_to_string(dir.path().join("moodle.toml")).unwrap();
    assert!(!plan.contains("does not exist here"), "{plan}");
    assert!(plan.contains("file = \"moodle-users.csv\""), "{plan}");
}
