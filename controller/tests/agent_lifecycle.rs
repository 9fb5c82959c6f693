//! Agents outlive runs, and stop when their controller is gone: a controller
//! killed mid-run leaves no load behind, and the same agent process then
//! attaches to the next controller and runs again.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use loadfleet_testbed::Config;

fn plan_text(base: &str, load: &str) -> String {
    plan_toml(base, load, &[("home", "/")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stops_when_its_controller_dies_and_serves_the_next_run() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(5),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let long = write_plan(
        dir.path(),
        "long.toml",
        &plan_text(&bed.base_url(), "users = 4\nduration = \"60s\""),
    );
    let short = write_plan(
        dir.path(),
        "short.toml",
        &plan_text(&bed.base_url(), "users = 2\niterations = 5"),
    );

    let mut first = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            long.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "1",
            "-q",
            "--out",
            dir.path().join("r1").to_str().unwrap(),
        ],
    );
    let addr = first.listen_addr();
    let mut agent = Proc::spawn(
        &agent_bin(),
        &[
            "--controller",
            &format!("http://{addr}"),
            "--allow-target",
            "127.0.0.0/8",
            "--name",
            "survivor",
            "--region",
            "eu",
            "--max-backoff-s",
            "1",
        ],
    );

    // Wait until load is flowing, then kill the controller outright.
    load_started(&bed, 100).await;
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let killed_at = Instant::now();
    // The killed controller still left a record that load was sent.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(line["status"], "started", "{audit}");
    assert_eq!(line["target"], bed.base_url());
    assert_eq!(line["agents"][0]["name"], "survivor");
    assert!(line["run_id"].as_str().is_some_and(|r| !r.is_empty()));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after_1s = bed.stats().served();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let after_3s = bed.stats().served();
    eprintln!("served: {after_1s} one second after the kill, {after_3s} three seconds after");
    assert_eq!(
        after_1s, after_3s,
        "no request is sent once the controller is gone"
    );
    assert!(agent.is_running(), "the agent outlives the run");
    assert!(killed_at.elapsed() < Duration::from_secs(10));

    // A new controller on the same address gets the same agent for its run.
    let served_before = bed.stats().served();
    let second = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            short.to_str().unwrap(),
            "--listen",
            &addr,
            "--expect-agents",
            "1",
            "--wait-agents",
            "20s",
            "-q",
            "--out",
            dir.path().join("r2").to_str().unwrap(),
        ],
    );
    let exit = exited(second, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&dir.path().join("r2"));
    assert_eq!(s["total"]["requests"], 10);
    assert_eq!(s["agents"]["survivor"]["requests"], 10);
    assert_eq!(bed.stats().served() - served_before, 10);
    assert!(agent.is_running(), "still waiting for the next run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_gracefully_and_still_writes_the_results() {
    stops_gracefully_on("INT").await;
}

/// What `timeout`, systemd, `docker stop` and Kubernetes send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_still_writes_the_results() {
    stops_gracefully_on("TERM").await;
}

/// Sends `signal` to a running controller: it stops gracefully, writes
/// every output, says `interrupted` and exits 1.
async fn stops_gracefully_on(signal: &str) {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(20),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "long.toml",
        &plan_text(&bed.base_url(), "users = 3\nduration = \"60s\""),
    );
    let out = dir.path().join("run");
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    load_started(&bed, 30).await;
    let interrupted = Instant::now();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &ctl.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = exited(ctl, Duration::from_secs(20)).await;
    let took = interrupted.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stopped {took:?} after SIG{signal}"
    );
    assert_eq!(exit.code, 1, "an interrupted run exits 1: {}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["status"], "interrupted");
    assert_eq!(
        s["total"]["requests"],
        bed.stats().served(),
        "users finished their step and every response was counted"
    );
    assert_eq!(s["total"]["errors"], 0, "a graceful stop abandons nothing");
}

/// `--health-listen` answers Kubernetes probes while the agent waits for a
/// controller (here: one that is not there yet).
#[test]
fn the_health_probe_answers_while_the_agent_waits() {
    use std::io::{Read, Write};
    let agent = Proc::spawn(
        &agent_bin(),
        &[
            "--controller",
            "http://127.0.0.1:9",
            "--allow-target",
            "127.0.0.0/8",
            "--health-listen",
            "127.0.0.1:0",
        ],
    );
    let line = agent.wait_for_line("health probe on http://", Duration::from_secs(10));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_string();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let ok = get("/healthz");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("ok\n"), "{ok}");
    assert!(get("/other").starts_with("HTTP/1.1 404"));
}

/// `loadfleet agents` lists who attaches within a few seconds and offers
/// them no run: they keep waiting for a real controller.
#[test]
fn loadfleet_agents_lists_the_agents_that_attach() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut a1 = Proc::spawn(
        &agent_bin(),
        &[
            "--controller",
            &url,
            "--allow-target",
            "127.0.0.0/8",
            "--region",
            "eu-west",
            "--name",
            "a1",
            "--max-backoff-s",
            "1",
        ],
    );
    let mut a2 = Proc::spawn(
        &agent_bin(),
        &[
            "--controller",
            &url,
            "--allow-target",
            "127.0.0.0/8",
            "--region",
            "us-east",
            "--name",
            "a2",
            "--max-backoff-s",
            "1",
        ],
    );
    let listen = format!("127.0.0.1:{port}");
    let exit = run(
        &loadfleet(),
        &["agents", "--listen", &listen, "--for", "4s", "--json"],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let seen: Vec<serde_json::Value> = exit
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seen.len(), 2, "{}", exit.stdout);
    assert_eq!(seen[0]["name"], "a1");
    assert_eq!(seen[0]["region"], "eu-west");
    assert_eq!(seen[1]["name"], "a2");
    assert_eq!(seen[1]["region"], "us-east");
    for a in &seen {
        assert_eq!(a["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(a["identity"], "none");
        assert_eq!(a["state"], "waiting for a run");
        assert!(a["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    assert!(
        a1.is_running() && a2.is_running(),
        "refused, they keep waiting"
    );
}

/// Where an agent's settings come from: a flag, else the environment, else
/// the environment file. A malformed file is refused with its line.
#[test]
fn flags_win_over_the_environment_which_wins_over_the_env_file() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.env");
    std::fs::write(
        &file,
        format!(
            "# settings\nLOADFLEET_CONTROLLER=http://127.0.0.1:{port}\nLOADFLEET_REGION=file-region\nLOADFLEET_NAME=file-name\nLOADFLEET_ALLOW_TARGET=127.0.0.1\n"
        ),
    )
    .unwrap();
    let file_s = file.to_str().unwrap();
    // The environment names the agent; the file sets region and controller;
    // the flag --region would beat both (second agent).
    let bin = agent_bin();
    let bin_s = bin.to_str().unwrap();
    let _a1 = Proc::spawn(
        Path::new("/usr/bin/env"),
        &[
            "LOADFLEET_NAME=env-name",
            bin_s,
            "--env-file",
            file_s,
            "--max-backoff-s",
            "1",
        ],
    );
    let _a2 = Proc::spawn(
        Path::new("/usr/bin/env"),
        &[
            "LOADFLEET_NAME=flagged",
            bin_s,
            "--env-file",
            file_s,
            "--region",
            "flag-region",
            "--max-backoff-s",
            "1",
        ],
    );
    let exit = run(
        &loadfleet(),
        &[
            "agents",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--for",
            "4s",
            "--json",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let seen: Vec<serde_json::Value> = exit
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let region = |name: &str| {
        seen.iter()
            .find(|a| a["name"] == name)
            .map(|a| a["region"].as_str().unwrap().to_string())
    };
    assert_eq!(
        region("env-name").as_deref(),
        Some("file-region"),
        "{}",
        exit.stdout
    );
    assert_eq!(
        region("flagged").as_deref(),
        Some("flag-region"),
        "{}",
        exit.stdout
    );
    assert_eq!(region("file-name"), None, "the environment's name won");

    std::fs::write(&file, "LOADFLEET_REGION=x\nnot a setting\n").unwrap();
    let bad = run(
        &bin,
        &["--env-file", file_s, "--check"],
        Duration::from_secs(10),
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("agent.env:2: expected KEY=value"),
        "{}",
        bad.stderr
    );
}

/// An agent started for one run (`--once`) whose controller dies mid-run
/// stops its load and exits (code 3, saying why) instead of redialing a
/// controller that is gone for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_agent_exits_when_its_controller_dies() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(5),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let long = write_plan(
        dir.path(),
        "long.toml",
        &plan_text(&bed.base_url(), "users = 2\nduration = \"60s\""),
    );
    let (mut ctl, url) = fleet_controller(&long, &dir.path().join("r"), 1);
    let once = agent(&url, "eu", "once", &["--max-backoff-s", "1"]);
    load_started(&bed, 50).await;
    ctl.child.kill().unwrap();
    let _ = ctl.child.wait();
    let exit = exited(once, Duration::from_secs(15)).await;
    assert_eq!(exit.code, 3, "{}", exit.stderr);
    assert!(exit.stderr.contains("controller"), "{}", exit.stderr);
}

/// An agent that cannot attach says why in words an operator can act on,
/// at WARN, once per cause (not once per retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_says_why_it_cannot_attach() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let bed = testbed(Config::default()).await;
    for (url, expect) in [
        (format!("http://{closed}"), "connection refused at"),
        (bed.base_url(), "not in gRPC over plain HTTP/2"),
    ] {
        let agent = Proc::spawn(
            &agent_bin(),
            &[
                "--controller",
                &url,
                "--allow-target",
                "127.0.0.0/8",
                "--name",
                "lost",
                "--max-backoff-s",
                "1",
            ],
        );
        let line = agent.wait_for_line(expect, Duration::from_secs(10));
        assert!(line.contains("WARN"), "{line}");
        // Retries every second or so; the same cause is not said again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let exit = {
            let mut agent = agent;
            let _ = agent.child.kill();
            agent.wait(Duration::from_secs(5))
        };
        assert_eq!(
            exit.stderr.matches(expect).count(),
            1,
            "said once: {}",
            exit.stderr
        );
    }
}

/// Ctrl-C twice: the second stops everything at once. Requests then waiting
/// for their response are abandoned and said (counted here at the agent,
/// and against what the target served), and the agent, stopped by its
/// operator, ends `finished`, not `lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_interrupt_says_what_it_abandoned() {
    let bed = testbed(Config {
        latencies: vec![("/slow".into(), Duration::from_secs(5))],
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "slow.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 3\nduration = \"60s\"",
            &[("quick", "/"), ("slow", "/slow")],
        ),
    );
    let out = dir.path().join("run");
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    // Each user has had its quick page and waits 5 s for the slow one.
    load_started(&bed, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = ctl.child.id().to_string();
    for _ in 0..2 {
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let exit = exited(ctl, Duration::from_secs(20)).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    println!("{}\n{}", s["agents"], s["warnings"]);
    assert_eq!(s["status"], "interrupted");
    assert_eq!(s["agents"]["local"]["end"], "finished", "{}", s["agents"]);
    assert_eq!(s["agents"]["local"]["abandoned"], 3, "{}", s["agents"]);
    // The quick pages were answered and counted; the slow ones never were.
    assert_eq!(s["total"]["requests"], 3);
    assert_eq!(bed.stats().served_path("/slow"), 0);
    assert!(
        s["warnings"].as_array().unwrap().iter().any(|w| w
            == "agent local: 3 request(s) were waiting for a response when the load stopped at once: they are in no figure (the target may have served them)"),
        "{}",
        s["warnings"]
    );
}
