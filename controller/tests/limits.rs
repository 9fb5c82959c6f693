//! Time limits never end a run silently: think time and pacing count in
//! the agents' safety limit, and when a limit does end users early (the
//! plan's own `max_duration` here), the status (`truncated`), the summary
//! (iterations planned against run), the terminal and the exit code say so.

use std::time::Duration;

use loadfleet_testbed::Config;

use crate::support::*;

fn plan(base: &str, load: &str, think: &str) -> String {
    format!(
        "[target]\nbase_url = \"{base}\"\ntimeout = \"200ms\"\n[load]\n{load}\n\
         [[scenario]]\nname = \"s\"\n[[scenario.step]]\nname = \"home\"\npath = \"/\"\nthink = \"{think}\"\n"
    )
}

/// 2 users × 3 iterations with 2.5 s of think time after each request:
/// about 7.5 s, longer than three timeouts plus the 5 s slack the limit
/// used to allow (5.6 s), which ended 2 to 4 of the 6 iterations early
/// with status `completed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_time_does_not_cut_iterations() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = write_plan(
        dir.path(),
        "think.toml",
        &plan(&bed.base_url(), "users = 2\niterations = 3", "2500ms"),
    );
    let out = dir.path().join("run");
    let exit = run_plan(&p, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["total"]["requests"], 6);
    assert_eq!(bed.stats().served(), 6);
    assert_eq!(s["iterations"]["planned"], 6);
    assert_eq!(s["iterations"]["completed"], 6);
    assert_eq!(s["cut_short"], serde_json::json!([]));
    assert!(
        exit.stdout.contains("iterations: all 6 planned ran"),
        "{}",
        exit.stdout
    );
}

/// A remote agent whose limit (`max_duration = "2s"`) ends 100 iterations
/// early tells the controller why; the run says `truncated` everywhere and
/// exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_short_by_a_limit_says_so_and_exits_1() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = write_plan(
        dir.path(),
        "capped.toml",
        &plan(
            &bed.base_url(),
            "users = 2\niterations = 100\nmax_duration = \"2s\"",
            "200ms",
        ),
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&p, &out, 1);
    let agent = agent(&url, "eu", "capped", &[]);
    let exit = exited(ctl, Duration::from_secs(30)).await;
    let _ = exited(agent, Duration::from_secs(15)).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["status"], "truncated");
    assert_eq!(s["iterations"]["planned"], 200);
    let completed = s["iterations"]["completed"].as_u64().unwrap();
    assert!(
        (2..200).contains(&completed),
        "{completed} of 200 iterations ran"
    );
    let why = s["cut_short"][0].as_str().unwrap_or_default();
    assert!(
        why.starts_with("agent capped: its time limit of 2.0 s passed"),
        "{why}"
    );
    assert!(
        exit.stdout
            .contains(&format!("iterations: {completed} of 200 planned"))
            && exit.stdout.contains("CUT SHORT: agent capped"),
        "{}",
        exit.stdout
    );
    assert!(
        s["total"]["requests"].as_u64().unwrap() <= bed.stats().served(),
        "nothing counted that the target did not serve"
    );
}
