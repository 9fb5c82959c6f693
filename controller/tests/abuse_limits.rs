//! Limits an agent enforces whatever its controller asks: an allow-list of
//! targets (checked on the assignment and on every resolved address) and a
//! cap on users. Nothing outside them is ever sent.

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

async fn attempt(base: &str, load: &str, agent_flags: &[&str]) -> (Exit, Exit, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(base, load, &[("home", "/")]),
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 1);
    let a = agent(&url, "eu", "guarded", agent_flags);
    let ctl = exited(ctl, Duration::from_secs(60)).await;
    let a = exited(a, Duration::from_secs(20)).await;
    let s = if out.join("summary.json").exists() {
        summary(&out)
    } else {
        serde_json::Value::Null
    };
    (ctl, a, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_outside_the_allow_list_is_refused_before_anything_is_sent() {
    let bed = testbed(Config::default()).await;
    let (ctl, agent, _) = attempt(
        &bed.base_url(),
        "users = 2\niterations = 3",
        &["--allow-target", "10.0.0.0/8,staging.example.com"],
    )
    .await;
    assert_eq!(ctl.code, 3, "{}", ctl.stderr);
    assert!(ctl.stderr.contains("agent guarded cannot run the plan: target 127.0.0.1 is outside this agent's --allow-target list"), "{}", ctl.stderr);
    assert_eq!(agent.code, 3);
    assert_eq!(bed.stats().served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_cannot_slip_past_the_allow_list() {
    let bed = testbed(Config::default()).await;
    // `localhost` is not listed; it resolves to an address outside 127.0.0.2/32.
    let base = format!("http://localhost:{}", bed.addr().port());
    let (ctl, agent, s) = attempt(
        &base,
        "users = 2\niterations = 3",
        &["--allow-target", "127.0.0.2/32"],
    )
    .await;
    assert_eq!(ctl.code, 1, "{}", ctl.stderr);
    assert_eq!(agent.code, 0);
    assert_eq!(
        s["total"]["errors_by_kind"]["blocked"], 6,
        "every connect was refused: {}",
        s["errors"]
    );
    assert!(
        s["errors"]["blocked"]["sample"]
            .as_str()
            .unwrap()
            .contains("outside this agent's --allow-target list")
    );
    assert_eq!(bed.stats().served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plan_exceeds_the_agents_caps() {
    let bed = testbed(Config::default()).await;
    let (ctl, _, _) = attempt(
        &bed.base_url(),
        "users = 5\niterations = 1",
        &["--max-users", "3"],
    )
    .await;
    assert_eq!(ctl.code, 3);
    assert!(
        ctl.stderr
            .contains("the assignment asks for 5 users; this agent runs at most 3"),
        "{}",
        ctl.stderr
    );
    let (ctl, _, _) = attempt(
        &bed.base_url(),
        "rate = 50\nduration = \"1s\"\nmax_users = 5",
        &["--max-rps", "20"],
    )
    .await;
    assert_eq!(ctl.code, 3);
    assert!(
        ctl.stderr
            .contains("up to 50.0 arrivals/s; this agent allows at most 20"),
        "{}",
        ctl.stderr
    );
    assert_eq!(bed.stats().served(), 0);
    // Within the caps and the list, the run goes ahead.
    let (ctl, _, s) = attempt(
        &bed.base_url(),
        "users = 3\niterations = 2",
        &["--max-users", "3", "--allow-target", "127.0.0.0/8"],
    )
    .await;
    assert_eq!(ctl.code, 0, "{}", ctl.stderr);
    assert_eq!(s["total"]["requests"], 6);
}
