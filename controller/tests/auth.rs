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
    assert_eq!(
        wrong.code, 2,
        "an agent whose token is refused has a configuration error: with --once it exits 2"
    );
    assert!(
        wrong.stderr.contains("wrong fleet token"),
        "{}",
        wrong.stderr
    );
    let missing = exited(agent(&url, "eu", "anonymous", &[]), Duration::from_secs(20)).await;
    assert_eq!(missing.code, 2);
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

/// An agent with the wrong token is named by the controller (in its notes
/// and in the "not enough agents" error), says what is wrong in its own
/// log, and `--check` fails on it before any run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_named_on_both_sides() {
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
            "4s",
            "--token",
            TOKEN,
            "--out",
            dir.path().join("run").to_str().unwrap(),
        ],
    );
    let url = format!("http://{}", ctl.listen_addr());
    let wrong = ["--token", "not-the-fleet-token-at-all"];
    // --check: exit 2 (a configuration error), saying which.
    let check = run(
        &agent_bin(),
        &[
            &[
                "--controller",
                &url,
                "--allow-target",
                "127.0.0.1",
                "--name",
                "eu-1",
                "--check",
            ][..],
            &wrong[..],
        ]
        .concat(),
        Duration::from_secs(20),
    );
    assert_eq!(check.code, 2, "{}", check.stderr);
    assert!(
        check.stderr.contains("refused our fleet token"),
        "{}",
        check.stderr
    );
    // The right token passes --check, which joins no run.
    let ok = run(
        &agent_bin(),
        &[
            "--controller",
            &url,
            "--allow-target",
            "127.0.0.0/8",
            "--name",
            "eu-1",
            "--check",
            "--token",
            TOKEN,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("accepts agent eu-1"), "{}", ok.stdout);
    // Without --once the agent keeps trying, and says why at error level.
    let mut args = vec![
        "--controller",
        url.as_str(),
        "--allow-target",
        "127.0.0.0/8",
        "--name",
        "eu-1",
        "--max-backoff-s",
        "1",
    ];
    args.extend_from_slice(&wrong);
    let agent = Proc::spawn(&agent_bin(), &args);
    let line = agent.wait_for_line("refused our fleet token", Duration::from_secs(10));
    assert!(line.contains("ERROR"), "{line}");
    let exit = exited(ctl, Duration::from_secs(30)).await;
    assert_eq!(exit.code, 3, "{}", exit.stderr);
    assert!(
        exit.stderr.contains("refused: agent eu-1 from 127.0.0.1")
            && exit.stderr.contains("missing or wrong fleet token"),
        "{}",
        exit.stderr
    );
    drop(agent);
}

/// `--check` against a server that is not a loadfleet controller (the test
/// target, an HTTP/1.1 server) exits 1 and says what answered is not a
/// controller; 2 stays for a refused token or certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_something_that_is_not_a_controller_exits_1() {
    let bed = loadfleet_testbed::Testbed::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        loadfleet_testbed::Config::default(),
    )
    .await
    .unwrap();
    let url = bed.base_url();
    let check = tokio::task::spawn_blocking(move || {
        run(
            &agent_bin(),
            &[
                "--controller",
                &url,
                "--allow-target",
                "127.0.0.1",
                "--check",
            ],
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap();
    assert_eq!(check.code, 1, "{}", check.stderr);
    assert!(
        check.stderr.contains("is not a loadfleet controller"),
        "{}",
        check.stderr
    );
}
