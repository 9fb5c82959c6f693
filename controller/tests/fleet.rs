//! End to end with real processes: a `loadfleet` controller and
//! `loadfleet-agent` processes in two regions against the testbed.

use std::time::Duration;

use crate::support::*;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use loadfleet_testbed::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_in_two_regions_merge_to_what_the_target_served() {
    let bed = testbed(Config {
        latencies: vec![("/slow".into(), Duration::from_millis(10))],
        default_latency: Duration::from_millis(1),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = 8\nramp_up = \"1s\"\niterations = 20",
        &[("home", "/"), ("slow", "/slow")],
    );
    let plan = write_plan(dir.path(), "fleet.toml", &text);
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let a1 = agent(&url, "eu-west", "a1", &["--workers", "1"]);
    let a2 = agent(&url, "us-east", "a2", &["--workers", "2"]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "controller: {}\n{}", exit.stdout, exit.stderr);
    let (e1, e2) = (
        exited(a1, Duration::from_secs(20)).await,
        exited(a2, Duration::from_secs(20)).await,
    );
    assert_eq!(
        (e1.code, e2.code),
        (0, 0),
        "agents exit 0 after one run with --once"
    );

    let s = summary(&out);
    let served = bed.stats().served();
    assert_eq!(served, 8 * 20 * 2, "8 users x 20 iterations x 2 steps");
    assert_eq!(
        s["total"]["requests"], served,
        "merged count equals what the target served"
    );
    assert_eq!(s["total"]["errors"], 0);
    assert_eq!(
        s["requests"]["home"]["requests"],
        bed.stats().served_path("/")
    );
    assert_eq!(
        s["requests"]["slow"]["requests"],
        bed.stats().served_path("/slow")
    );
    let eu = s["regions"]["eu-west"]["requests"].as_u64().unwrap();
    let us = s["regions"]["us-east"]["requests"].as_u64().unwrap();
    assert_eq!(eu + us, served, "region rows add up to the total");
    assert_eq!((eu, us), (160, 160), "4 users each");
    assert_eq!(s["agents"]["a1"]["region"], "eu-west");
    assert_eq!(s["agents"]["a2"]["region"], "us-east");
    assert_eq!(s["agents"]["a1"]["users"], 4);
    assert_eq!(s["agents"]["a1"]["end"], "finished");
    assert_eq!(s["status"], "completed");
    // Each agent's latency figures come from the totals it sent when done:
    // both ran /slow (10 ms), and the fleet's slowest response is one of
    // theirs.
    let agent_max = |a: &str| s["agents"][a]["latency_ms"]["max"].as_f64().unwrap();
    let (a1_max, a2_max) = (agent_max("a1"), agent_max("a2"));
    assert!(
        a1_max >= 10.0 && a2_max >= 10.0,
        "agents' max {a1_max} and {a2_max} ms"
    );
    assert_eq!(
        s["total"]["latency_ms"]["max"].as_f64().unwrap(),
        a1_max.max(a2_max)
    );
    assert!(
        s["agents"]["a1"]["note"].is_null(),
        "{}",
        s["agents"]["a1"]["note"]
    );
    let slow_p50 = s["requests"]["slow"]["latency_ms"]["p50"].as_f64().unwrap();
    assert!(
        slow_p50 >= 10.0,
        "the /slow path sleeps 10 ms; p50 was {slow_p50} ms"
    );
    assert!(s["started_at"].as_str().unwrap().ends_with('Z'));
    // The terminal table shows the same numbers.
    assert!(
        exit.stdout.contains("eu-west") && exit.stdout.contains(&served.to_string()),
        "{}",
        exit.stdout
    );

    // latency.hlog is a standard interval log: its untagged histograms add up to the total.
    let log = std::fs::read(out.join("latency.hlog")).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("#[Histogram log format version 1.3]")
            && text.contains("\"StartTimestamp\",\"Interval_Length\"")
    );
    let mut untagged = 0;
    let mut tagged = 0;
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(i) = entry.expect("every line parses") {
            let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut base64_decode(i.encoded_histogram()).as_slice())
                .unwrap();
            if i.tag().is_some() {
                tagged += h.len()
            } else {
                untagged += h.len()
            }
        }
    }
    assert_eq!((untagged, tagged), (served, served));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("eu-west") && html.contains("<svg"));
    assert!(
        html.contains("start skew"),
        "the report shows each agent's start skew"
    );
    assert!(
        s["agents"]["a1"]["start_skew_ms"].as_f64().unwrap() < 5.0,
        "{}",
        s["agents"]["a1"]
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_is_the_single_machine_ramp_on_two_agents() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = 10\nramp_up = \"5s\"\niterations = 1",
        &[("home", "/")],
    );
    let plan = write_plan(dir.path(), "ramp.toml", &text);
    let (ctl, url) = fleet_controller(&plan, &dir.path().join("run"), 2);
    let _a1 = agent(&url, "r1", "a1", &[]);
    let _a2 = agent(&url, "r2", "a2", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let arrivals = bed.stats().first_request_times();
    assert_eq!(arrivals.len(), 10, "one connection per user");
    let gaps: Vec<f64> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    eprintln!("gaps between users' first requests (s): {gaps:?}");
    for g in &gaps {
        assert!(
            (0.4..=0.6).contains(g),
            "users arrive 0.5 s apart, not in pairs: gaps {gaps:?}"
        );
    }
    let span = (arrivals[9] - arrivals[0]).as_secs_f64();
    assert!(
        (4.4..=4.6).contains(&span),
        "first to last user: {span} s, expected 4.5 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_is_counted_not_a_crash() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &format!("http://127.0.0.1:{port}"),
        "users = 2\niterations = 3",
        &[("home", "/")],
    );
    let plan = write_plan(dir.path(), "down.toml", &text);
    let exit = run_plan(&plan, &dir.path().join("run")).await;
    assert_eq!(exit.code, 1, "completed with errors: {}", exit.stderr);
    let s = summary(&dir.path().join("run"));
    assert_eq!(s["total"]["requests"], 6);
    assert_eq!(s["total"]["errors"], 6);
    assert_eq!(s["total"]["errors_by_kind"]["connect"], 6);
    assert!(
        s["total"]["latency_responses_ms"].is_null(),
        "no response, no response latency"
    );
    // Each refused connect still took time, and the headline counts it.
    assert!(s["total"]["latency_failures_ms"]["max"].as_f64().unwrap() > 0.0);
    assert_eq!(s["total"]["latency_ms"], s["total"]["latency_failures_ms"]);
    assert_eq!(s["status"], "completed_with_errors");
    assert!(
        exit.stdout.contains("connect"),
        "error table lists the kind: {}",
        exit.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_agents_is_a_fleet_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let out_arg = out.to_str().unwrap().to_string();
    let text = plan_toml(
        "http://127.0.0.1:9",
        "users = 1\niterations = 1",
        &[("home", "/")],
    );
    let plan = write_plan(dir.path(), "p.toml", &text);
    let p = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "2",
            "--wait-agents",
            "1s",
            "-q",
            "--out",
            &out_arg,
        ],
    );
    let exit = exited(p, Duration::from_secs(20)).await;
    assert_eq!(exit.code, 3);
    assert!(
        exit.stderr
            .contains("expected 2 agent(s), 0 attached after 1s"),
        "{}",
        exit.stderr
    );
    assert!(!out.exists(), "no empty run directory is left behind");
}

/// Active users are reported as each interval's peak and time-weighted
/// mean, not only sampled at its end (where users between iterations, or
/// done, read 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_users_have_a_peak_and_a_mean_per_interval() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "busy.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 4\nramp_up = \"1s\"\niterations = 2",
            &[("a", "/a"), ("b", "/b")],
        ),
    );
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    let timeline = s["timeline"].as_array().unwrap();
    let peak = timeline
        .iter()
        .map(|p| p["active_peak"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(peak, 4, "all four users were active at once");
    // Each user is busy for four 300 ms requests: about 4.8 user-seconds.
    let user_seconds: f64 = timeline
        .iter()
        .map(|p| p["active_mean"].as_f64().unwrap() * p["length_s"].as_f64().unwrap())
        .sum();
    assert!(
        (4.3..6.0).contains(&user_seconds),
        "{user_seconds} user-seconds"
    );
    assert_eq!(
        timeline.last().unwrap()["active_users"],
        0,
        "at the very end nobody is active"
    );
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("peak active users"));
}

/// A second agent with a name already attached is refused, and the
/// controller says so: in its notes and in the "expected N" error, which
/// also says what URL agents dial; the audit line lists the agent that did
/// attach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_agent_name_is_named_and_the_dial_url_is_said() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 1",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let audit = dir.path().join("audit.jsonl");
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "2",
            "--wait-agents",
            "4s",
            "--audit-log",
            audit.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let url = format!("http://{}", ctl.listen_addr());
    let first = agent(&url, "eu", "dup", &[]);
    ctl.wait_for_line("agent dup (region eu) attached", Duration::from_secs(10));
    let second = agent(&url, "us", "dup", &[]);
    let exit = exited(ctl, Duration::from_secs(30)).await;
    drop((first, second));
    assert_eq!(exit.code, 3, "{}", exit.stderr);
    let all = format!("{}{}", exit.stdout, exit.stderr);
    assert!(
        all.contains("an agent named dup is already attached (give each agent its own --name)"),
        "{all}"
    );
    let error = exit
        .stderr
        .lines()
        .find(|l| l.contains("expected 2 agent(s), 1 attached"))
        .unwrap_or_else(|| panic!("{}", exit.stderr));
    assert!(error.contains("already attached"), "{error}");
    assert!(error.ends_with(&format!("agents dial {url}")), "{error}");
    let line = std::fs::read_to_string(&audit).unwrap();
    let last: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(last["agents"][0]["name"], "dup", "{last}");
    assert_eq!(bed.stats().served(), 0);
}
