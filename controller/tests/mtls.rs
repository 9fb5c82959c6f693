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

/// Days from now until a certificate file expires, as openssl reads it.
fn days_left(pem: &Path) -> i64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(pem)
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let date = text.trim().strip_prefix("notAfter=").expect("notAfter=");
    let epoch = Command::new("date")
        .args(["-d", date, "+%s"])
        .output()
        .unwrap();
    let end: i64 = String::from_utf8_lossy(&epoch.stdout)
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (end - now) / 86_400
}

/// The SHA-256 of a certificate's DER, as openssl computes it.
fn openssl_fingerprint(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase()
}

/// Certificates expire (agents and controller after a year, or `--days`;
/// the CA after ten), `renew` replaces an agent's pair and keeps the old
/// one, and a revoked certificate is refused by the controller: `--check`
/// with it exits 2 naming the revocation, while the renewed one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_expire_renew_and_a_revoked_one_is_refused() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    let f = fleet.to_str().unwrap();
    certs(&["certs", "init", f, "--days", "10"]);
    certs(&["certs", "agent", "eu-1", "--dir", f]);
    certs(&["certs", "agent", "eu-2", "--dir", f, "--days", "30"]);
    let (ca, ctl_cert) = (fleet.join("ca.pem"), fleet.join("controller.pem"));
    let (eu1, eu2) = (fleet.join("agents/eu-1.pem"), fleet.join("agents/eu-2.pem"));
    let days = [
        days_left(&ca),
        days_left(&ctl_cert),
        days_left(&eu1),
        days_left(&eu2),
    ];
    eprintln!(
        "days left: CA {}, controller {}, eu-1 {}, eu-2 {}",
        days[0], days[1], days[2], days[3]
    );
    assert!((3648..=3650).contains(&days[0]), "CA: {days:?}");
    assert!(
        (9..=10).contains(&days[1]),
        "controller --days 10: {days:?}"
    );
    assert!((364..=365).contains(&days[2]), "agent default: {days:?}");
    assert!((29..=30).contains(&days[3]), "agent --days 30: {days:?}");

    // `agent` never replaces a pair; `renew` does and keeps the old one.
    let again = run(
        &loadfleet(),
        &["certs", "agent", "eu-1", "--dir", f],
        Duration::from_secs(20),
    );
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("certs renew eu-1"),
        "{}",
        again.stderr
    );
    let old = std::fs::read_to_string(&eu1).unwrap();
    certs(&["certs", "renew", "eu-1", "--dir", f]);
    let previous = fleet.join("agents/eu-1.previous.pem");
    assert_eq!(std::fs::read_to_string(&previous).unwrap(), old);
    assert_ne!(std::fs::read_to_string(&eu1).unwrap(), old);
    certs(&["certs", "revoke", "eu-1", "--previous", "--dir", f]);
    let revoked = std::fs::read_to_string(fleet.join("revoked.txt")).unwrap();
    let fp = openssl_fingerprint(&previous);
    assert!(revoked.contains(&format!("sha256:{fp} eu-1 ")), "{revoked}");
    assert!(!revoked.contains(&openssl_fingerprint(&eu1)), "{revoked}");

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
            f,
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "1",
            "--wait-agents",
            "30s",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let url = format!("https://{}", ctl.listen_addr());
    // The old (revoked) pair, still within its validity: refused, and said.
    let d = |p: &str| fleet.join(p).to_str().unwrap().to_string();
    let (ca_s, old_cert, old_key) = (
        d("ca.pem"),
        d("agents/eu-1.previous.pem"),
        d("agents/eu-1.previous.key"),
    );
    let check = exited(
        agent(
            &url,
            "eu",
            "eu-1",
            &[
                "--ca", &ca_s, "--cert", &old_cert, "--key", &old_key, "--check",
            ],
        ),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(check.code, 2, "{}", check.stderr);
    assert!(
        check
            .stderr
            .contains("the certificate of agent eu-1 was revoked")
            && check.stderr.contains(&fp),
        "{}",
        check.stderr
    );
    assert_eq!(bed.stats().served(), 0);
    // The renewed pair attaches and runs.
    let _a = tls_agent(&url, &fleet, "eu-1", "eu-1");
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(bed.stats().served(), 10);
    assert!(
        exit.stderr
            .contains("warning: the controller certificate (controller.pem) expires on")
            && exit.stderr.contains("`loadfleet certs renew` it"),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains("was revoked"),
        "the refusal is noted: {}",
        exit.stderr
    );
    // The controller's certificate renews the same way.
    certs(&[
        "certs",
        "renew",
        "controller",
        "--dir",
        f,
        "--host",
        "127.0.0.1",
    ]);
    assert!(fleet.join("controller.previous.pem").exists());
    let renewed = days_left(&ctl_cert);
    assert!(
        (364..=365).contains(&renewed),
        "renewed controller: {renewed}"
    );
}
