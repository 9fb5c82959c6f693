//! Multi-host: the controller, the target and two agents each on their own
//! host (a network namespace of this test, joined by a bridge). Agents dial
//! the controller across the network; nothing runs on loopback.
//!
//! Needs root (as CI runs) for `ip netns`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// Hosts on one private bridge, all in namespaces this test creates and removes.
struct Network {
    prefix: String,
    hosts: Vec<String>,
}

const SUBNET: &str = "10.250.0";

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
        let prefix = format!("lf{}", std::process::id() % 100_000);
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

    // Stop the target and read how much it served.
    let pid = target.child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let t = target.wait(Duration::from_secs(10));
    let served: u64 = t
        .stdout
        .trim()
        .strip_prefix("served ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("target printed {:?}", t.stdout));

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
