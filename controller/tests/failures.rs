//! A request that gets no response still took time: timeouts are in the
//! headline latency (as in k6's, JMeter's and Gatling's "all requests"),
//! with responses-only and failures-only figures beside them, and the
//! thresholds judge all of them.

use std::time::Duration;

use loadfleet_testbed::Config;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_in_the_headline_percentiles() {
    // Half the requests go to a path that answers after 5 s, past the
    // 400 ms timeout.
    let bed = testbed(Config {
        latencies: vec![("/hang".into(), Duration::from_secs(5))],
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[target]\nbase_url = \"{}\"\ntimeout = \"400ms\"\n[load]\nusers = 2\niterations = 5\n\
         [thresholds]\noverall = [\"p95 < 200ms\"]\n\
         [[scenario]]\nname = \"s\"\n\
         [[scenario.step]]\nname = \"fast\"\npath = \"/fast\"\n\
         [[scenario.step]]\nname = \"hang\"\npath = \"/hang\"\n",
        bed.base_url()
    );
    let plan = write_plan(dir.path(), "half.toml", &text);
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    let total = &s["total"];
    assert_eq!(total["requests"], 20);
    assert_eq!(total["errors_by_kind"]["timeout"], 10);
    let ms = |v: &serde_json::Value| v.as_f64().unwrap();
    // Every request: half near zero, half at the 400 ms timeout.
    assert!(
        ms(&total["latency_ms"]["p99"]) >= 390.0,
        "{}",
        total["latency_ms"]
    );
    assert!(
        ms(&total["latency_ms"]["p90"]) >= 390.0,
        "{}",
        total["latency_ms"]
    );
    // Beside it: the responses alone, and the failures alone.
    assert!(
        ms(&total["latency_responses_ms"]["p99"]) < 200.0,
        "{}",
        total["latency_responses_ms"]
    );
    assert!(
        ms(&total["latency_failures_ms"]["p50"]) >= 390.0,
        "{}",
        total["latency_failures_ms"]
    );
    assert!(ms(&s["requests"]["hang"]["latency_ms"]["p50"]) >= 390.0);
    // The distribution's top is a timeout, not a fast response.
    let top = s["total"]["distribution"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert!(ms(&top[1]) >= 390.0, "{top}");
    // The threshold judges every request.
    assert_eq!(s["status"], "thresholds_failed");
    assert!(
        exit.stdout
            .contains("requests without a response (time to the failure): p50"),
        "{}",
        exit.stdout
    );
}

/// A listener whose accept queue is full (listen(0), one connection held):
/// further connects get no answer at all, as from a host that drops SYNs.
/// A Python process holds it, printing its port; killed on drop.
struct SilentListener {
    child: std::process::Child,
    port: u16,
}

impl SilentListener {
    fn start() -> SilentListener {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time\n\
                 s=socket.socket();s.bind(('127.0.0.1',0));s.listen(0)\n\
                 c=socket.socket();c.connect(s.getsockname())\n\
                 print(s.getsockname()[1],flush=True)\n\
                 time.sleep(60)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        SilentListener {
            child,
            port: line.trim().parse().expect("a port"),
        }
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection that never opens is a `connect_timeout`, not a response
/// `timeout`: after `connect_timeout` when the plan sets one, else when the
/// request's timeout runs out while connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_opens_is_a_connect_timeout() {
    let silent = SilentListener::start();
    let dir = tempfile::tempdir().unwrap();
    for (extra, at_least_ms, below_ms) in [
        ("connect_timeout = \"300ms\"\n", 290.0, 900.0),
        ("", 990.0, 1_500.0),
    ] {
        let text = format!(
            "[target]\nbase_url = \"http://127.0.0.1:{}\"\ntimeout = \"1s\"\n{extra}\
             [load]\nusers = 1\niterations = 2\n\
             [[scenario]]\nname = \"s\"\n[[scenario.step]]\nname = \"home\"\npath = \"/\"\n",
            silent.port
        );
        let plan = write_plan(dir.path(), "silent.toml", &text);
        let out = dir.path().join(format!("run{}", extra.len()));
        let exit = run_plan(&plan, &out).await;
        assert_eq!(exit.code, 1, "{}", exit.stderr);
        let s = summary(&out);
        assert_eq!(
            s["total"]["errors_by_kind"]["connect_timeout"], 2,
            "{extra}: {}",
            s["total"]
        );
        assert!(
            s["total"]["errors_by_kind"].get("timeout").is_none(),
            "{}",
            s["total"]
        );
        let p50 = s["total"]["latency_failures_ms"]["p50"].as_f64().unwrap();
        assert!(
            (at_least_ms..below_ms).contains(&p50),
            "{extra}: failed after {p50} ms"
        );
    }
}

/// A target that refuses every connection: the progress line says so in
/// the first second's line, before the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_line_says_when_no_connection_ever_opened() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) has no listener on these machines: refused at once.
    let plan = write_plan(
        dir.path(),
        "closed.toml",
        "[target]\nbase_url = \"http://127.0.0.1:9\"\ntimeout = \"1s\"\n[load]\nusers = 1\nduration = \"3s\"\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\npath = \"/\"\nthink = \"200ms\"\n",
    );
    let out = dir.path().join("out");
    let p = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let exit = exited(p, Duration::from_secs(30)).await;
    let said = "no connection to http://127.0.0.1:9 has opened yet: is the target running?";
    let first = exit
        .stdout
        .lines()
        .chain(exit.stderr.lines())
        .find(|l| l.contains(said))
        .unwrap_or_else(|| panic!("{}\n{}", exit.stdout, exit.stderr));
    eprintln!("{first}");
    assert!(
        first.starts_with("1s/3s") || first.starts_with("2s/3s"),
        "{first}"
    );
    assert_eq!(exit.code, 1, "every request failed: exit 1");
}

/// `run --users N --iterations M` replaces the plan's load for one run,
/// says so before and in the summary; a value that does not fit the
/// plan's model is refused with why, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sets_the_load_for_one_run_and_says_so() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 20\nramp_up = \"1s\"\niterations = 5",
            &[("a", "/a"), ("b", "/b")],
        ),
    );
    let out = dir.path().join("out");
    let exit = exited(
        run_in_background(&plan, &out, &["--users", "3", "--iterations", "2"]),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("for this run: --users 3 (the plan: 20)"),
        "{}",
        exit.stderr
    );
    assert_eq!(
        bed.stats().served(),
        3 * 2 * 2,
        "3 users x 2 iterations x 2 steps"
    );
    let s = summary(&out);
    assert_eq!(s["load"]["users"], 3);
    assert!(
        s["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("--iterations 2 (the plan: 5 iterations)")),
        "{}",
        s["warnings"]
    );
    let refused = exited(
        run_in_background(&plan, &dir.path().join("no"), &["--rate", "10"]),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(refused.code, 2);
    assert!(
        refused
            .stderr
            .contains("--rate is for a plan whose [load] has a `rate`")
    );
    assert_eq!(bed.stats().served(), 12, "nothing more was sent");
}
