//! Observers (`loadfleet-agent --observe`) on the system under test: their
//! figures against `/proc` read by the test itself, and a busy neighbour
//! started on the observed host during some runs of an experiment getting
//! exactly those runs flagged and left out.
//!
//! A binary of its own: an observer counts every process that is not the
//! system under test (nor loadfleet) as a neighbour, and the integration
//! binary runs its tests in parallel, whose processes would be neighbours
//! here. Cargo runs test binaries one after another.

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The tests of this binary take turns: each one's target is a process the
/// other's observer would count.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The test target as a process of its own (its command name, as the
/// kernel keeps it in 15 characters, is `loadfleet-testb`), serving `/`
/// in 2 ms on `port`.
fn target(port: u16) -> Proc {
    let p = Proc::spawn(
        &testbed_bin(),
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--default-latency",
            "2ms",
            "--exit-after",
            "120",
        ],
    );
    p.wait_for_line("listening on", Duration::from_secs(20));
    p
}

/// (busy, all) CPU ticks of the host, from /proc/stat's `cpu` line (busy:
/// user, nice, system, irq, softirq).
fn host_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let v: Vec<u64> = stat.lines().next().unwrap()[4..]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0] + v[1] + v[2] + v[5] + v[6], v.iter().take(8).sum())
}

/// utime + stime of a process, in ticks of 10 ms.
fn process_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn an_observer_reads_its_host_as_proc_does() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tb = target(port);
    let plan = write_plan(
        dir.path(),
        "obs.toml",
        &plan_toml(
            &format!("http://127.0.0.1:{port}"),
            "users = 4\nramp_up = \"0s\"\nduration = \"4s\"",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-observers",
            "1",
            "--local-agents",
            "1",
            "--out",
            out.to_str().unwrap(),
            "-q",
        ],
    );
    let url = format!("http://{}", ctl.listen_addr());
    // The target is idle until the run: every tick of its CPU from here on
    // is the run's.
    let tb_before = process_ticks(tb.child.id());
    let host_before = host_ticks();
    let observer = Proc::spawn(
        &agent_bin(),
        &[
            "--controller",
            &url,
            "--observe",
            "--observe-process",
            "loadfleet-testb",
            "--name",
            "sut",
            "--region",
            "db-zone",
            "--once",
        ],
    );
    let exit = ctl.wait(Duration::from_secs(60));
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    let o = observer.wait(Duration::from_secs(15));
    assert_eq!(
        o.code, 0,
        "the observer ends with its --once run: {}",
        o.stderr
    );
    let host_after = host_ticks();
    let tb_after = process_ticks(tb.child.id());
    let tb_rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", tb.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();

    let s = summary(&out);
    let h = &s["hosts"][0];
    assert_eq!(h["name"], "sut");
    assert_eq!(h["region"], "db-zone");
    // The observer is no load agent: the run's agents are the local one.
    assert_eq!(s["agents"].as_object().unwrap().len(), 1, "{}", s["agents"]);
    let cores = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes()[3].is_ascii_digit())
        .count();
    assert_eq!(h["cores"], cores as u64);
    let mem_total: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(f(&h["mem_total_bytes"]) as u64, mem_total * 1024);
    let observed = f(&h["observed_s"]);
    assert!(
        (4.0..7.0).contains(&observed),
        "observed {observed} s of a 4 s run (from the start signal to the stop)"
    );

    // The target's CPU time: the observer's sum against the test's own two
    // readings of /proc/PID/stat around the whole run. Both count the same
    // ticks of 10 ms; the observer's window is inside the test's and holds
    // every request, so they differ by at most a few ticks at its edges.
    let p = &h["processes"][0];
    assert_eq!(p["name"], "loadfleet-testb");
    assert_eq!(p["count_max"], 1);
    let by_observer = f(&p["cpu_core_pct"]["mean"]) / 100.0 * observed;
    let by_test = (tb_after - tb_before) as f64 / 100.0;
    eprintln!(
        "target CPU: observer {by_observer:.3} s, /proc {by_test:.3} s; requests {}",
        s["total"]["requests"]
    );
    assert!(by_test >= 0.05, "the target worked: {by_test} s of CPU");
    assert!(
        (by_observer - by_test).abs() <= 0.04 + 0.05 * by_test,
        "observer {by_observer:.3} s against /proc {by_test:.3} s"
    );
    let rss = f(&p["rss_max_bytes"]) / 1024.0;
    assert!(
        (tb_rss_kib as f64 * 0.5..=tb_rss_kib as f64 * 2.0).contains(&rss),
        "target resident {rss} KiB by the observer, {tb_rss_kib} KiB now"
    );

    // The host's busy CPU over the observed span lies inside the test's
    // wider window, and holds at least the target's own.
    let busy_obs = f(&h["cpu_busy_pct"]["mean"]) / 100.0 * cores as f64 * observed;
    let busy_test = (host_after.0 - host_before.0) as f64 / 100.0;
    eprintln!("host busy: observer {busy_obs:.3} s, /proc over a wider window {busy_test:.3} s");
    assert!(
        busy_obs <= busy_test + 0.05 && busy_obs + 0.05 >= by_test,
        "host busy {busy_obs:.3} s: at most /proc's {busy_test:.3} s, at least the target's {by_test:.3} s"
    );
    assert!(
        exit.stdout.contains("target host sut (region db-zone"),
        "{}",
        exit.stdout
    );
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("The system under test") && report.contains("sut: CPU, % of all its CPUs")
    );
}

/// The host's busy CPU over one second now, in percent of one core.
fn background_core_pct() -> f64 {
    let a = host_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let b = host_ticks();
    (b.0 - a.0) as f64
}

#[test]
fn a_busy_neighbour_on_the_target_host_flags_the_runs_it_ran_beside() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let _tb = target(port);
    let plan = write_plan(
        d,
        "exp.toml",
        &plan_toml(
            &format!("http://127.0.0.1:{port}"),
            "users = 2\nramp_up = \"0s\"\nduration = \"2s\"",
            &[("home", "/")],
        ),
    );
    // The "busy" arm's set-up starts a neighbour that spins a core (`yes`,
    // bounded by `timeout`, which passes SIGTERM on); the "quiet" arm's
    // stops it. The system under test is the same in both.
    std::fs::write(
        d.join("busy.sh"),
        format!(
            "cd {d}\n[ -f yes.pid ] && kill $(cat yes.pid) 2>/dev/null\ntimeout 60 yes >/dev/null 2>&1 &\necho $! > yes.pid\nsleep 0.3\necho neighbour started\n",
            d = d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("quiet.sh"),
        format!(
            "cd {d}\nif [ -f yes.pid ]; then kill $(cat yes.pid) 2>/dev/null; rm -f yes.pid; fi\nsleep 0.3\necho quiet\n",
            d = d.display()
        ),
    )
    .unwrap();
    // What the machine does anyway (another process busy on a core reads
    // about 100): a neighbour adds the most of a core it can get beyond
    // that. `yes` is always runnable, so with one other busy process on
    // two cores it still gets over half a core.
    let background = background_core_pct();
    let bound = background + 50.0;
    let listen = format!("127.0.0.1:{}", free_port());
    let out = d.join("ex");
    let ex = Proc::spawn(
        &loadfleet(),
        &[
            "experiment",
            plan.to_str().unwrap(),
            "--arm",
            &format!("quiet=sh {}", d.join("quiet.sh").display()),
            "--arm",
            &format!("busy=sh {}", d.join("busy.sh").display()),
            "--runs",
            "2",
            "--listen",
            &listen,
            "--expect-observers",
            "1",
            "--local-agents",
            "1",
            "--max-other-cpu",
            &format!("{bound:.0}"),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ],
    );
    // Not --once: it observes every run of the experiment, dialing again
    // after each.
    let observer = Proc::spawn(
        &agent_bin(),
        &[
            "--controller",
            &format!("http://{listen}"),
            "--observe",
            "--observe-process",
            "loadfleet-testb",
            "--name",
            "sut",
        ],
    );
    let started = Instant::now();
    let exit = ex.wait(Duration::from_secs(150));
    drop(observer);
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "[ -f {p} ] && kill $(cat {p})",
            p = d.join("yes.pid").display()
        ))
        .status();
    eprintln!(
        "background {background:.0}% of a core, bound {bound:.0}%; experiment took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // Runs were left out of the statistics: exit 1, and it says so. (A
    // machine already busy on more than one of its two cores leaves a
    // neighbour no half core to take: then nothing can be flagged.)
    assert_eq!(
        exit.code, 1,
        "background {background:.0}% of a core (more than 100% leaves a neighbour too little room)\n{}\n{}",
        exit.stdout, exit.stderr
    );
    let json = checked_json(&out.join("experiment.json"), "experiment.schema.json");
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for r in runs {
        let s = summary(&out.join("runs").join(r["run"].as_str().unwrap()));
        let others = f(&s["hosts"][0]["others_cpu_core_pct"]["mean"]);
        let flagged: Vec<&str> = r["flagged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        eprintln!(
            "{} {}: others {others:.0}% of a core; flagged {flagged:?}",
            r["run"], r["arm"]
        );
        if r["arm"] == "busy" {
            // The neighbour is named when it is the busiest other process
            // (another busy process, a compiler say, may outdo it).
            assert!(
                flagged
                    .iter()
                    .any(|f| f.contains("host sut: other processes used")),
                "{}: {flagged:?}",
                r["run"]
            );
            let top = &s["hosts"][0]["top_other"];
            assert!(
                top[0] == "yes" || f(&top[1]) >= 50.0,
                "the busiest other process: {top}"
            );
            assert_eq!(r["used"], false);
        } else {
            assert!(flagged.is_empty(), "{}: {flagged:?}", r["run"]);
            assert_eq!(r["used"], true);
        }
    }
    assert!(
        exit.stdout.contains("host sut: other processes used"),
        "the terminal says why runs were left out: {}",
        exit.stdout
    );
    let _ = Path::new(d);
}
