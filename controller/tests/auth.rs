//! Only agents with the fleet token attach; a controller refuses to listen
//! beyond loopback without one.

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_the_fleet_token() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 5",
            &[("home", "/")],
        ),
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let out = dir.path().join("run");
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "1",
            "--wait-agents",
            "20s",
            "--token-file",
            token_file.to_str().unwrap(),
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let url = format!("http://{}", ctl.listen_addr());

    let wrong = exited(
        agent(
            &url,
            "eu",
            "intruder",
            &["--token", "not-the-fleet-token-at-all"],
        ),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(wrong.code, 3, "a rejected agent with --once exits 3");
    assert!(
        wrong.stderr.contains("wrong fleet token"),
        "{}",
        wrong.stderr
    );
    let missing = exited(agent(&url, "eu", "anonymous", &[]), Duration::from_secs(20)).await;
    assert_eq!(missing.code, 3);
    assert_eq!(bed.stats().served(), 0, "no rejected agent sent anything");

    let good = agent(&url, "eu", "member", &["--token", TOKEN]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(exited(good, Duration::from_secs(20)).await.code, 0);
    let s = summary(&out);
    assert_eq!(
        s["agents"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["member"]
    );
    assert_eq!(s["total"]["requests"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            "http://127.0.0.1:9",
            "users = 1\niterations = 1",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let p = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
            "--expect-agents",
            "1",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let exit = exited(p, Duration::from_secs(20)).await;
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("refusing to listen on 0.0.0.0:0 without authentication")
            && exit.stderr.contains("LOADFLEET_TOKEN"),
        "{}",
        exit.stderr
    );
    assert!(!out.exists());
    let short = exited(
        Proc::spawn(
            &loadfleet(),
            &["run", plan.to_str().unwrap(), "--token", "short", "-q"],
        ),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(short.code, 2);
    assert!(
        short.stderr.contains("at least 16 characters"),
        "{}",
        short.stderr
    );
}
