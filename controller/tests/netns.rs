//! Multi-host: the controller, the target and two agents each on their own
//! host (a network namespace of this test, joined by a bridge). Agents dial
//! the controller across the network; nothing runs on loopback.
//!
//! Needs root (as CI runs) for `ip netns`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Hosts on one private bridge, all in namespaces this test creates and removes.
struct Network {
    prefix: String,
    hosts: Vec<String>,
}

const SUBNET: &str = "10.250.0";
const TOKEN: &str = "netns-test-token-0123456789abcdef";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) is installed");
    assert!(
        out.status.success(),
        "ip {}: {} (network-namespace tests need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Network {
    /// Creates `hosts`, host `i` at 10.250.0.(i+1).
    fn new(hosts: &[&str]) -> Network {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("lf{}{n}", std::process::id() % 100_000);
        let mut net = Network {
            prefix: prefix.clone(),
            hosts: Vec::new(),
        };
        let sw = format!("{prefix}-sw");
        ip(&["netns", "add", &sw]);
        net.hosts.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for (i, h) in hosts.iter().enumerate() {
            let ns = format!("{prefix}-{h}");
            ip(&["netns", "add", &ns]);
            net.hosts.push(ns.clone());
            let port = format!("{prefix}p{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{SUBNET}.{}/24", i + 1),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Spawns `bin` on `host`.
    fn spawn(&self, host: &str, bin: &Path, args: &[&str]) -> Proc {
        let ns = self.ns(host);
        let mut all = vec!["netns", "exec", ns.as_str(), bin.to_str().unwrap()];
        all.extend_from_slice(args);
        Proc::spawn(Path::new("ip"), &all)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.hosts.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Stops the target (SIGINT) and returns how many responses it served.
fn stop_and_count(target: Proc) -> u64 {
    let pid = target.child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let t = target.wait(Duration::from_secs(10));
    t.stdout
        .trim()
        .strip_prefix("served ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("target printed {:?}", t.stdout))
}

#[test]
fn fleet_across_hosts_merges_to_what_the_target_served() {
    // ctl = 10.250.0.1, target = .2, agents = .3 and .4
    let net = Network::new(&["ctl", "tgt", "a1", "a2"]);
    let testbed_bin = loadfleet().with_file_name("loadfleet-testbed");
    assert!(testbed_bin.exists(), "build with `cargo test --workspace`");
    let target = net.spawn(
        "tgt",
        &testbed_bin,
        &[
            "--listen",
            &format!("{SUBNET}.2:8080"),
            "--latency",
            "/slow=5ms",
            "--exit-after",
            "120",
        ],
    );
    target.wait_for_line("listening on", Duration::from_secs(10));

    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "hosts.toml",
        &format!(
            "name = \"hosts\"\n[target]\nbase_url = \"http://{SUBNET}.2:8080\"\n[load]\nusers = 6\nramp_up = \"1s\"\niterations = 15\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\nname = \"home\"\npath = \"/\"\n[[scenario.step]]\nname = \"slow\"\npath = \"/slow\"\n"
        ),
    );
    let out = dir.path().join("run");
    let ctl = net.spawn(
        "ctl",
        &loadfleet(),
        &[
            "run",
            "--token",
            TOKEN,
            plan.to_str().unwrap(),
            "--listen",
            &format!("{SUBNET}.1:7700"),
            "--expect-agents",
            "2",
            "--wait-agents",
            "30s",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ctl.wait_for_line("listening on", Duration::from_secs(10));
    let url = format!("http://{SUBNET}.1:7700");
    let a1 = net.spawn(
        "a1",
        &agent_bin(),
        &[
            "--controller",
            &url,
            "--allow-target",
            &format!("{SUBNET}.0/24"),
            "--token",
            TOKEN,
            "--region",
            "eu-west",
            "--name",
            "a1",
            "--once",
        ],
    );
    let a2 = net.spawn(
        "a2",
        &agent_bin(),
        &[
            "--controller",
            &url,
            "--allow-target",
            &format!("{SUBNET}.0/24"),
            "--token",
            TOKEN,
            "--region",
            "us-east",
            "--name",
            "a2",
            "--once",
        ],
    );
    let exit = ctl.wait(Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(a1.wait(Duration::from_secs(15)).code, 0);
    assert_eq!(a2.wait(Duration::from_secs(15)).code, 0);

    let served = stop_and_count(target);

    let s = summary(&out);
    assert_eq!(served, 6 * 15 * 2);
    assert_eq!(s["total"]["requests"], served);
    assert_eq!(
        s["regions"]["eu-west"]["requests"].as_u64().unwrap()
            + s["regions"]["us-east"]["requests"].as_u64().unwrap(),
        served
    );
    let addr = |a: &str| s["agents"][a]["address"].as_str().unwrap().to_string();
    assert!(
        addr("a1").starts_with(&format!("{SUBNET}.3:")),
        "a1 dialed from its own host: {}",
        addr("a1")
    );
    assert!(
        addr("a2").starts_with(&format!("{SUBNET}.4:")),
        "a2 dialed from its own host: {}",
        addr("a2")
    );
    assert!(s["requests"]["slow"]["latency_ms"]["p50"].as_f64().unwrap() >= 5.0);
}

/// The dead-man switch across a network: when the controller's host drops
/// off the network mid-run (no reset, no FIN: the link just goes quiet), the
/// agent stops all load once its lease runs out. Measured at the target.
#[test]
fn agent_stops_within_its_lease_when_the_controller_goes_silent() {
    let net = Network::new(&["ctl", "tgt", "a1"]);
    let testbed_bin = loadfleet().with_file_name("loadfleet-testbed");
    let target = net.spawn(
        "tgt",
        &testbed_bin,
        &[
            "--listen",
            &format!("{SUBNET}.2:8080"),
            "--default-latency",
            "5ms",
            "--report-every",
            "200ms",
            "--exit-after",
            "120",
        ],
    );
    target.wait_for_line("listening on", Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "long.toml",
        &plan_toml(
            &format!("http://{SUBNET}.2:8080"),
            "users = 4\nduration = \"60s\"",
            &[("home", "/")],
        ),
    );
    let ctl = net.spawn(
        "ctl",
        &loadfleet(),
        &[
            "run",
            "--token",
            TOKEN,
            plan.to_str().unwrap(),
            "--listen",
            &format!("{SUBNET}.1:7700"),
            "--expect-agents",
            "1",
            "--lease",
            "3s",
            "-q",
            "--out",
            dir.path().join("run").to_str().unwrap(),
        ],
    );
    ctl.wait_for_line("listening on", Duration::from_secs(10));
    let agent = net.spawn(
        "a1",
        &agent_bin(),
        &[
            "--controller",
            &format!("http://{SUBNET}.1:7700"),
            "--allow-target",
            &format!("{SUBNET}.0/24"),
            "--token",
            TOKEN,
            "--name",
            "a1",
            "--once",
        ],
    );
    agent.wait_for_line("assigned", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));

    // The controller's host goes quiet: its link drops, nothing is sent.
    let cut = std::time::Instant::now();
    ip(&["-n", &net.ns("ctl"), "link", "set", "eth0", "down"]);
    agent.wait_for_line("lease expired", Duration::from_secs(10));
    let noticed = cut.elapsed();
    // Watch the target's count (printed every 200 ms) until it has been flat for 2 s.
    let mut last = 0u64;
    let mut last_change = cut;
    let watch_until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < watch_until {
        let line = target.wait_for_line("served ", Duration::from_secs(2));
        let n: u64 = line
            .trim()
            .trim_start_matches("served ")
            .parse()
            .unwrap_or(0);
        if n != last {
            last = n;
            last_change = std::time::Instant::now();
        }
    }
    let stopped_after = last_change.saturating_duration_since(cut);
    eprintln!(
        "agent noticed after {noticed:?}; the target's count last moved {stopped_after:?} after the cut, at {last}"
    );
    assert!(
        noticed <= Duration::from_secs(6),
        "the lease (3 s) must stop load within 6 s, took {noticed:?}"
    );
    assert!(
        stopped_after <= Duration::from_secs(6),
        "traffic at the target stopped {stopped_after:?} after the cut"
    );
    assert!(last > 100, "load was flowing before the cut: {last}");
    drop(ctl);
    drop(agent);
}

/// Reconnect without loss: agent a1's path to the controller is cut for 3 s
/// (a blackhole route on its host; the target stays reachable) and then
/// restored. a1 keeps its load going under its lease, dials again, and sends
/// again what the controller had not acknowledged. The run completes, and
/// the merged count equals what the target served: nothing lost, nothing
/// counted twice.
#[test]
fn a_three_second_cut_loses_nothing_and_counts_nothing_twice() {
    let net = Network::new(&["ctl", "tgt", "a1", "a2"]);
    let testbed_bin = loadfleet().with_file_name("loadfleet-testbed");
    let target = net.spawn(
        "tgt",
        &testbed_bin,
        &[
            "--listen",
            &format!("{SUBNET}.2:8080"),
            "--default-latency",
            "5ms",
            "--exit-after",
            "120",
        ],
    );
    target.wait_for_line("listening on", Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "cut.toml",
        &plan_toml(
            &format!("http://{SUBNET}.2:8080"),
            "users = 4\nramp_up = \"0s\"\nduration = \"10s\"",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let ctl = net.spawn(
        "ctl",
        &loadfleet(),
        &[
            "run",
            "--token",
            TOKEN,
            plan.to_str().unwrap(),
            "--listen",
            &format!("{SUBNET}.1:7700"),
            "--expect-agents",
            "2",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ctl.wait_for_line("listening on", Duration::from_secs(10));
    let url = format!("http://{SUBNET}.1:7700");
    let agent = |host: &str| {
        net.spawn(
            host,
            &agent_bin(),
            &[
                "--controller",
                &url,
                "--allow-target",
                &format!("{SUBNET}.0/24"),
                "--token",
                TOKEN,
                "--region",
                host,
                "--name",
                host,
                "--once",
            ],
        )
    };
    let a1 = agent("a1");
    let a2 = agent("a2");
    a1.wait_for_line("assigned", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let ns = net.ns("a1");
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "blackhole",
        &format!("{SUBNET}.1/32"),
    ]);
    std::thread::sleep(Duration::from_secs(3));
    ip(&[
        "-n",
        &ns,
        "route",
        "del",
        "blackhole",
        &format!("{SUBNET}.1/32"),
    ]);
    let line = a1.wait_for_line("reconnected to the controller", Duration::from_secs(10));
    eprintln!("a1: {line}");

    let exit = ctl.wait(Duration::from_secs(60));
    assert_eq!(
        exit.code, 0,
        "the run completed, not degraded: {}",
        exit.stderr
    );
    assert_eq!(a1.wait(Duration::from_secs(15)).code, 0);
    assert_eq!(a2.wait(Duration::from_secs(15)).code, 0);
    let served = stop_and_count(target);
    let s = summary(&out);
    let a1_requests = s["agents"]["a1"]["requests"].as_u64().unwrap();
    eprintln!(
        "served {served}; merged {} (a1 {a1_requests}, a2 {})",
        s["total"]["requests"], s["agents"]["a2"]["requests"]
    );
    assert_eq!(s["status"], "completed");
    assert_eq!(s["agents"]["a1"]["end"], "finished");
    assert_eq!(s["total"]["errors"], 0);
    assert_eq!(
        s["total"]["requests"], served,
        "nothing lost, nothing twice"
    );
    // a1 kept its load going through the cut: its share is about half.
    assert!(
        a1_requests * 10 >= served * 4,
        "a1 ran through the cut: {a1_requests} of {served}"
    );
}

/// What deploy/systemd says to run: the unit's ExecStartPre and ExecStart
/// command lines, its LoadCredential names, and the example environment file.
struct Unit {
    pre: Vec<String>,
    start: Vec<String>,
    credentials: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

fn systemd_unit() -> Unit {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let unit = std::fs::read_to_string(root.join("loadfleet-agent.service")).unwrap();
    let agent = agent_bin().to_str().unwrap().to_string();
    let command = |key: &str| -> Vec<String> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("the unit has {key}"));
        line.split_whitespace()
            .map(|w| w.replace("/usr/local/bin/loadfleet-agent", &agent))
            .collect()
    };
    let credentials = unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .filter_map(|c| c.split_once(':'))
        .map(|(name, path)| (name.to_string(), path.to_string()))
        .collect();
    let env = std::fs::read_to_string(root.join("agent.env.example"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Unit {
        pre: command("ExecStartPre="),
        start: command("ExecStart="),
        credentials,
        env,
    }
}

/// Agents started the way deploy/systemd starts them: the unit's command
/// lines, its environment file (with this network's values), and its
/// credentials (mTLS files under `$CREDENTIALS_DIRECTORY`, as
/// `LoadCredential=` provides them). The `--check` of ExecStartPre passes,
/// then both agents attach over mTLS from their own hosts and run the plan.
#[test]
fn agents_started_as_the_systemd_unit_does_attach_and_run() {
    let unit = systemd_unit();
    assert_eq!(unit.pre.last().map(String::as_str), Some("--check"));
    let net = Network::new(&["ctl", "tgt", "a1", "a2"]);
    let testbed_bin = loadfleet().with_file_name("loadfleet-testbed");
    let target = net.spawn(
        "tgt",
        &testbed_bin,
        &[
            "--listen",
            &format!("{SUBNET}.2:8080"),
            "--exit-after",
            "120",
        ],
    );
    target.wait_for_line("listening on", Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("fleet");
    let cert_cmd = |args: &[&str]| {
        let exit = run(&loadfleet(), args, Duration::from_secs(20));
        assert_eq!(exit.code, 0, "{args:?}: {}", exit.stderr);
    };
    let certs_s = certs.to_str().unwrap();
    cert_cmd(&["certs", "init", certs_s, "--host", &format!("{SUBNET}.1")]);
    let plan = write_plan(
        dir.path(),
        "unit.toml",
        &plan_toml(
            &format!("http://{SUBNET}.2:8080"),
            "users = 4\nramp_up = \"0s\"\niterations = 10",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let ctl = net.spawn(
        "ctl",
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--tls-dir",
            certs_s,
            "--listen",
            &format!("{SUBNET}.1:7700"),
            "--expect-agents",
            "2",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ctl.wait_for_line("listening on", Duration::from_secs(10));
    let start_agent = |host: &str, region: &str| -> (Exit, Proc) {
        cert_cmd(&["certs", "agent", host, "--dir", certs_s]);
        // What LoadCredential= does: the files, under the credential names.
        let creds = dir.path().join(format!("credentials-{host}"));
        std::fs::create_dir_all(&creds).unwrap();
        for (name, path) in &unit.credentials {
            let source = match Path::new(path).file_name().unwrap().to_str().unwrap() {
                "ca.pem" => certs.join("ca.pem"),
                "agent.pem" => certs.join(format!("agents/{host}.pem")),
                "agent.key" => certs.join(format!("agents/{host}.key")),
                other => panic!("unexpected credential {other}"),
            };
            std::fs::copy(source, creds.join(name)).unwrap();
        }
        let mut env: Vec<String> = unit
            .env
            .iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "LOADFLEET_CONTROLLER" => format!("https://{SUBNET}.1:7700"),
                    "LOADFLEET_NAME" => host.to_string(),
                    "LOADFLEET_REGION" => region.to_string(),
                    "LOADFLEET_ALLOW_TARGET" => format!("{SUBNET}.2"),
                    _ => v.clone(),
                };
                format!("{k}={v}")
            })
            .collect();
        env.push(format!("CREDENTIALS_DIRECTORY={}", creds.display()));
        let with_env = |cmd: &[String]| -> Vec<String> {
            let mut all = vec!["-i".to_string()];
            all.extend(env.iter().cloned());
            all.extend(cmd.iter().cloned());
            all
        };
        let env_bin = Path::new("/usr/bin/env");
        let pre: Vec<String> = with_env(&unit.pre);
        let pre: Vec<&str> = pre.iter().map(String::as_str).collect();
        let check = net.spawn(host, env_bin, &pre).wait(Duration::from_secs(20));
        let mut start = with_env(&unit.start);
        start.push("--once".into());
        let start: Vec<&str> = start.iter().map(String::as_str).collect();
        (check, net.spawn(host, env_bin, &start))
    };
    let (check1, a1) = start_agent("a1", "eu-west");
    let (check2, a2) = start_agent("a2", "us-east");
    for check in [&check1, &check2] {
        assert_eq!(check.code, 0, "ExecStartPre --check: {}", check.stderr);
        assert!(
            check.stdout.contains("as mtls:") && check.stdout.contains(".agent.loadfleet"),
            "{}",
            check.stdout
        );
    }
    let exit = ctl.wait(Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(a1.wait(Duration::from_secs(15)).code, 0);
    assert_eq!(a2.wait(Duration::from_secs(15)).code, 0);
    let s = summary(&out);
    assert_eq!(s["total"]["requests"], 40);
    assert_eq!(s["regions"]["eu-west"]["requests"], 20);
    assert_eq!(s["regions"]["us-east"]["requests"], 20);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"identity\":\"mtls:a1.agent.loadfleet\""),
        "{audit}"
    );
}

/// A lost agent's gap is shown, not hidden. Agent a2 freezes (SIGSTOP) for
/// 3 s mid-run, so its reports stop: the progress line names it as stale.
/// Then it is killed (SIGKILL). The run completes on a1; the summary, the
/// terminal and the report say when a2 was lost and from when on its
/// requests are not counted, and its region's row carries the mark. The
/// target served more than the merged total: exactly the part said to be
/// missing.
#[test]
fn a_lost_agents_gap_is_named_and_its_region_marked() {
    let net = Network::new(&["ctl", "tgt", "a1", "a2"]);
    let testbed_bin = loadfleet().with_file_name("loadfleet-testbed");
    let target = net.spawn(
        "tgt",
        &testbed_bin,
        &[
            "--listen",
            &format!("{SUBNET}.2:8080"),
            "--default-latency",
            "5ms",
            "--exit-after",
            "120",
        ],
    );
    target.wait_for_line("listening on", Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "gap.toml",
        &plan_toml(
            &format!("http://{SUBNET}.2:8080"),
            "users = 4\nduration = \"9s\"",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let ctl = net.spawn(
        "ctl",
        &loadfleet(),
        &[
            "run",
            "--token",
            TOKEN,
            plan.to_str().unwrap(),
            "--listen",
            &format!("{SUBNET}.1:7700"),
            "--expect-agents",
            "2",
            "--lease",
            "3s",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ctl.wait_for_line("listening on", Duration::from_secs(10));
    let url = format!("http://{SUBNET}.1:7700");
    let agent = |host: &str, region: &str| {
        net.spawn(
            host,
            &agent_bin(),
            &[
                "--controller",
                &url,
                "--allow-target",
                &format!("{SUBNET}.0/24"),
                "--token",
                TOKEN,
                "--region",
                region,
                "--name",
                host,
                "--once",
            ],
        )
    };
    let a1 = agent("a1", "eu-west");
    let a2 = agent("a2", "us-east");
    a2.wait_for_line("assigned", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(2500));
    // `ip netns exec` executes the agent in its own place: this is its pid.
    let pid = a2.child.id().to_string();
    let signal = |sig: &str| {
        let _ = Command::new("kill").args([sig, &pid]).status();
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(3));
    signal("-KILL");
    let exit = ctl.wait(Duration::from_secs(60));
    assert_eq!(a1.wait(Duration::from_secs(15)).code, 0);
    drop(a2);
    let served = stop_and_count(target);
    let s = summary(&out);

    assert_eq!(exit.code, 1, "a degraded run exits 1: {}", exit.stderr);
    assert_eq!(s["status"], "degraded");
    // Live: the progress line named the stale agent while it was frozen.
    let stale = exit
        .stderr
        .lines()
        .find(|l| l.contains("STALE: no report from a2"))
        .unwrap_or_else(|| panic!("no stale agent on the progress line:\n{}", exit.stderr));
    eprintln!("progress while a2 was frozen: {stale}");

    let a2s = &s["agents"]["a2"];
    let lost_at = a2s["ended_at_s"].as_f64().unwrap();
    let until = a2s["reported_until_s"].as_f64().unwrap();
    let merged = s["total"]["requests"].as_u64().unwrap();
    eprintln!(
        "a2 lost at {lost_at} s, reports cover 0-{until} s; target served {served}, merged {merged}"
    );
    assert!(
        until >= 1.0 && until <= lost_at,
        "reported until {until}, lost at {lost_at}"
    );
    // What a2 sent after its last report is the whole difference.
    assert!(
        served > merged,
        "the gap is real: served {served}, merged {merged}"
    );
    let gaps = s["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = gaps[0].as_str().unwrap();
    assert!(
        gap.starts_with(&format!(
            "agent a2 (region us-east) was lost at {lost_at:.1} s"
        )) && gap.contains(&format!("its reports cover the run up to {until:.1} s"))
            && gap.contains("not counted"),
        "{gap}"
    );
    // a2's rate is over what its reports cover, not the whole run.
    let a2_rps = a2s["rps"].as_f64().unwrap();
    let a2_requests = a2s["requests"].as_f64().unwrap();
    assert!(
        (a2_rps - a2_requests / until).abs() < 0.01,
        "rps {a2_rps} = {a2_requests} / {until}"
    );
    // The terminal: the gap, and the region's row marked.
    assert!(
        exit.stdout.contains(&format!("NOT ALL COUNTED: {gap}")),
        "{}",
        exit.stdout
    );
    assert!(
        exit.stdout.contains("us-east (a2 lost: not all counted)"),
        "{}",
        exit.stdout
    );
    assert!(exit.stderr.contains(&format!("warning: {gap}")));
    // The report: the gap in its header, the region marked, a2's cells
    // say why they are empty.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Not all counted"), "report lacks the gap");
    assert!(html.contains("us-east (a2 lost: not all counted)"));
    assert!(html.contains("percentiles unknown: its totals never arrived"));
}
