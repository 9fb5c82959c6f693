//! A guard on what each attached agent costs the controller in memory:
//! 1,000 simulated agents (real gRPC streams from `examples/swarm.rs`, each
//! reporting every step every second) for 10 s, and the controller's peak
//! resident memory against a bound stated from measurement. Memory, unlike
//! CPU share, does not move with a busy machine, so it is held here; CPU is
//! left to `bench/controller_cost.sh`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const AGENTS: usize = 1000;

/// The peak the controller may reach with 1,000 agents, in MiB. Measured in
/// this debug build on 6 December 2026: 90.6, 90.9 and 91.1 MiB before each
/// agent's outbound messages were boxed, 77.6 and 79.8 after (about 80 KiB
/// per agent, the process's own start included). The bound adds 25 KB per
/// agent: a regression of that size (the previous round's was about 60 KB
/// per agent) fails it.
const PEAK_MIB: f64 = 105.0;

fn swarm_bin() -> PathBuf {
    let p = loadfleet().parent().unwrap().join("examples").join("swarm");
    assert!(
        p.exists(),
        "{} is missing: `cargo test --workspace` builds the examples",
        p.display()
    );
    p
}

/// VmHWM (the peak resident set) of a process, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn a_thousand_agents_stay_within_the_controllers_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = String::from(
        "name = \"memory-guard\"\n[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\n",
    );
    plan.push_str(&format!(
        "users = {AGENTS}\nduration = \"10s\"\n[[scenario]]\nname = \"s\"\n"
    ));
    for i in 0..5 {
        plan.push_str(&format!(
            "[[scenario.step]]\nname = \"step {i}\"\npath = \"/{i}\"\n"
        ));
    }
    let plan = write_plan(dir.path(), "plan.toml", &plan);
    let out = dir.path().join("run");
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            &AGENTS.to_string(),
            "--wait-agents",
            "120s",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let line = ctl.wait_for_line("listening on", Duration::from_secs(30));
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_string();
    // The plan's target (port 9) is never contacted: the swarm sends
    // reports, not load. Bounded by the plan's 10 s and its own timeouts.
    let mut swarm = Command::new(swarm_bin())
        .args([&format!("http://{addr}"), &AGENTS.to_string(), "sw", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = ctl.child.id();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(150);
    while let Some(kib) = peak_kib(pid) {
        peak = peak.max(kib);
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = ctl.wait(Duration::from_secs(10));
    let _ = swarm.kill();
    let _ = swarm.wait();
    let s = summary(&out);
    assert_eq!(
        s["agents"].as_object().unwrap().len(),
        AGENTS,
        "every agent in the summary: {}",
        exit.stderr
    );
    let mib = peak as f64 / 1024.0;
    eprintln!(
        "controller peak RSS with {AGENTS} agents: {mib:.1} MiB ({:.1} KiB per agent)",
        peak as f64 / AGENTS as f64
    );
    assert!(
        mib < PEAK_MIB,
        "peak {mib:.1} MiB with {AGENTS} agents, above the {PEAK_MIB} MiB bound"
    );
}
