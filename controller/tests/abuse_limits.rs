//! Limits an agent enforces whatever its controller asks: an allow-list of
//! targets (checked on the assignment and on every resolved address) and a
//! cap on users. Nothing outside them is ever sent.

use std::process::Command;
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

/// A remote agent must be told what it may load: without --allow-target or
/// --allow-any-target it refuses to start (exit 2), says how, and dials
/// nothing. `--check` says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_told_nothing_about_targets_refuses_to_start() {
    // A controller that would accept it: nothing may reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    for extra in [&[][..], &["--check"][..]] {
        let exit = run(
            &agent_bin(),
            &[
                &["--controller", url.as_str(), "--name", "bare", "--once"][..],
                extra,
            ]
            .concat(),
            Duration::from_secs(20),
        );
        assert_eq!(exit.code, 2, "{extra:?}: {}", exit.stderr);
        assert!(
            exit.stderr.contains("--allow-target") && exit.stderr.contains("--allow-any-target"),
            "the error says how: {}",
            exit.stderr
        );
    }
    assert!(
        listener.accept().is_err(),
        "the agent dialed its controller anyway"
    );
}

/// The audit lines of one run, read from `audit.jsonl` in `dir`.
fn audit_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `--allow-any-target` is a knowing choice, and it is said everywhere: the
/// agent warns at start, the controller notes it as the agent attaches, and
/// the audit line records what each agent may load. The operator is the OS
/// user even with `$USER` unset, or the name `--operator` gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_target_is_said_and_recorded_with_the_os_user() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 2",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let loadfleet = loadfleet();
    let ctl = Proc::spawn(
        std::path::Path::new("/usr/bin/env"),
        &[
            "-u",
            "USER",
            "-u",
            "LOGNAME",
            loadfleet.to_str().unwrap(),
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--operator",
            "alice (ticket OPS-7)",
        ],
    );
    let url = format!("http://{}", ctl.listen_addr());
    let any = agent(&url, "eu", "roamer", &["--allow-any-target"]);
    let _fenced = agent(&url, "us", "fenced", &[]);
    let ctl = exited(ctl, Duration::from_secs(60)).await;
    let any = exited(any, Duration::from_secs(20)).await;
    assert_eq!(ctl.code, 0, "{}", ctl.stderr);
    assert!(
        any.stderr.contains("WARN") && any.stderr.contains("--allow-any-target"),
        "{}",
        any.stderr
    );
    assert!(
        ctl.stderr
            .contains("agent roamer (region eu) attached from")
            && ctl
                .stderr
                .contains("it loads any target it is told (--allow-any-target)"),
        "{}",
        ctl.stderr
    );
    assert!(
        ctl.stderr.contains("it loads only 127.0.0.0/8"),
        "{}",
        ctl.stderr
    );
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    for line in audit_lines(dir.path()) {
        assert_eq!(line["operator"], "alice (ticket OPS-7)", "{line}");
        assert_eq!(line["os_user"], me.trim(), "{line}");
        let targets: std::collections::BTreeMap<String, String> = line["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_string(),
                    a["targets"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(targets["roamer"], "any", "{line}");
        assert_eq!(targets["fenced"], "127.0.0.0/8", "{line}");
    }
}

/// A run an agent refuses leaves an audit line naming every agent that
/// attached and the one that refused, with what each may load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_line_of_a_refused_run_names_the_agents() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 2",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let _willing = agent(&url, "eu", "willing", &[]);
    let _guarded = agent(&url, "us", "guarded", &["--allow-target", "10.0.0.0/8"]);
    let ctl = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(ctl.code, 3, "{}", ctl.stderr);
    assert_eq!(bed.stats().served(), 0);
    let lines = audit_lines(dir.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["status"], "not_run");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("agent guarded cannot run the plan"),
        "{line}"
    );
    let agents: Vec<(String, String, String)> = line["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_string();
            (s("name"), s("end"), s("targets"))
        })
        .collect();
    assert_eq!(
        agents,
        [
            ("guarded".into(), "refused".into(), "10.0.0.0/8".into()),
            ("willing".into(), "attached".into(), "127.0.0.0/8".into()),
        ],
        "{line}"
    );
}
