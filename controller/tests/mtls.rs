//! mTLS between controller and agents: only agents with a certificate from
//! the fleet's CA attach, and only under the name their certificate gives.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

fn certs(args: &[&str]) {
    let exit = run(&loadfleet(), args, Duration::from_secs(20));
    assert_eq!(exit.code, 0, "loadfleet {args:?}: {}", exit.stderr);
}

fn tls_agent(url: &str, dir: &Path, cert_of: &str, name: &str) -> Proc {
    tls_agent_with(url, dir, cert_of, name, &[])
}

fn tls_agent_with(url: &str, dir: &Path, cert_of: &str, name: &str, extra: &[&str]) -> Proc {
    let d = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (ca, cert, key) = (
        d("ca.pem"),
        d(&format!("agents/{cert_of}.pem")),
        d(&format!("agents/{cert_of}.key")),
    );
    let mut args = vec!["--ca", &ca, "--cert", &cert, "--key", &key];
    args.extend_from_slice(extra);
    agent(url, "eu", name, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_agents_with_a_fleet_certificate_under_their_own_name_attach() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    let other = dir.path().join("other");
    certs(&["certs", "init", fleet.to_str().unwrap()]);
    certs(&["certs", "agent", "a1", "--dir", fleet.to_str().unwrap()]);
    certs(&["certs", "init", other.to_str().unwrap()]);
    certs(&["certs", "agent", "a1", "--dir", other.to_str().unwrap()]);

    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 5",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--tls-dir",
            fleet.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "1",
            "--wait-agents",
            "30s",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let addr = ctl.listen_addr();
    let url = format!("https://{addr}");

    // A certificate from another CA never gets through the handshake.
    let mut stranger = tls_agent(&url, &other, "a1", "a1");
    // No certificate at all: plain gRPC to a TLS port fails too.
    let mut plain = agent(&format!("http://{addr}"), "eu", "a1", &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stranger.is_running() && plain.is_running(),
        "still knocking: they were never let in"
    );
    drop(stranger);
    drop(plain);
    assert_eq!(bed.stats().served(), 0);

    // --check says so before any run: a2 with a1's certificate is a
    // configuration error (exit 2) that names the mismatch.
    let check = exited(
        tls_agent_with(&url, &fleet, "a1", "a2", &["--check"]),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(check.code, 2, "{}", check.stderr);
    assert!(
        check.stderr.contains("does not match its certificate"),
        "{}",
        check.stderr
    );
    // A file that holds no certificate is named before anything is dialed.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let bad = run(
        &agent_bin(),
        &[
            "--controller",
            &url,
            "--allow-target",
            "127.0.0.0/8",
            "--name",
            "a1",
            "--ca",
            garbage.to_str().unwrap(),
            "--cert",
            fleet.join("agents/a1.pem").to_str().unwrap(),
            "--key",
            fleet.join("agents/a1.key").to_str().unwrap(),
            "--check",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains(&format!("--ca {}", garbage.display())),
        "{}",
        bad.stderr
    );
    // The fleet's certificate for a1 cannot attach as another agent.
    let impostor = exited(tls_agent(&url, &fleet, "a1", "a2"), Duration::from_secs(20)).await;
    assert_eq!(impostor.code, 2, "a configuration error");
    assert!(
        impostor.stderr.contains("does not match its certificate"),
        "{}",
        impostor.stderr
    );

    // a1 with its own certificate runs the plan.
    let member = tls_agent(&url, &fleet, "a1", "a1");
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(exited(member, Duration::from_secs(20)).await.code, 0);
    let s = summary(&out);
    assert_eq!(
        s["agents"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["a1"]
    );
    assert_eq!(s["total"]["requests"], 10);
    assert_eq!(bed.stats().served(), 10);

    // The audit log (beside the run directory) records who ran what.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "a started line and a final line: {audit}");
    assert_eq!(lines[0]["status"], "started");
    assert!(lines[0]["ended_at"].is_null());
    assert_eq!(lines[0]["run_id"], lines[1]["run_id"]);
    assert_eq!(lines[0]["agents"][0]["identity"], "mtls:a1.agent.loadfleet");
    let line = &lines[1];
    let sha = Command::new("sha256sum").arg(&plan).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(line["plan_sha256"], sha.split_whitespace().next().unwrap());
    assert_eq!(line["agent_auth"], "mtls");
    assert_eq!(line["target"], bed.base_url());
    assert_eq!(line["status"], "completed");
    assert_eq!(line["requests"], 10);
    assert_eq!(line["run_id"], s["run_id"]);
    assert_eq!(line["agents"][0]["identity"], "mtls:a1.agent.loadfleet");
    assert_eq!(line["agents"][0]["end"], "finished");
}
