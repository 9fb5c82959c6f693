//! Prometheus out: `/metrics` in the text format while the run goes on
//! (checked by Prometheus's own `promtool`), and remote write into a real
//! Prometheus (Debian's package, with its remote-write receiver on), whose
//! PromQL then returns the run's request count exactly.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

/// A plain HTTP/1.0 GET; returns (status line, body).
fn get(addr: &str, path_and_query: &str, headers: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// A Prometheus of its own: remote-write receiver on, nothing scraped.
fn prometheus(dir: &Path) -> (Proc, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.join("prometheus.yml"), "scrape_configs: []\n").unwrap();
    let addr = format!("127.0.0.1:{port}");
    let p = Proc::spawn(
        Path::new("prometheus"),
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address={addr}"),
            "--web.enable-remote-write-receiver",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(&addr).is_ok()
            && get(&addr, "/-/ready", "").0.contains("200")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prometheus did not get ready (apt-get install prometheus)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (p, addr)
}

fn promql(addr: &str, query: &str) -> f64 {
    let (status, body) = get(
        addr,
        &format!(
            "/api/v1/query?query={}",
            form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        ),
        "",
    );
    assert!(status.contains("200"), "{status}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("{query}: {body}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_while_running_and_remote_write_into_a_real_prometheus() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(2),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_prom, prom) = prometheus(dir.path());
    // A number read from every response: its Content-Length.
    let text = plan_toml(
        &bed.base_url(),
        // Two scrapes come at most 2.8 s after load has started, which a
        // busy machine can delay by seconds: 8 s keeps the run (and its
        // /metrics listener) up past them.
        "users = 4\nduration = \"8s\"",
        &[("home", "/"), ("missing", "/status/404")],
    ) + "\n[[metric]]\nname = \"size\"\nheader = \"content-length\"\nunit = \"bytes\"\n";
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    let ctl = run_in_background(
        &plan,
        &out,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--prometheus-remote-write",
            &format!("http://{prom}/api/v1/write"),
        ],
    );
    let line = ctl.wait_for_line("metrics at http://", Duration::from_secs(20));
    let metrics = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap()
        .to_string();
    load_started(&bed, 50).await;
    // Two scrapes a second and a half apart: the counters move, and
    // Prometheus's own checker accepts the text.
    let scrape = |n: &str| {
        let (status, body) = get(&metrics, "/metrics", "");
        assert!(status.contains("200"), "{status}");
        let file = dir.path().join(format!("scrape-{n}.txt"));
        std::fs::write(&file, &body).unwrap();
        let check = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .expect("promtool (apt-get install prometheus)");
        assert!(
            check.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        body.lines()
            .find(|l| l.starts_with("loadfleet_requests_total{") && l.contains("step=\"home\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let first = scrape("1");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = scrape("2");
    eprintln!("home requests at two scrapes: {first}, {second}");
    assert!(second > first && first > 0.0, "{first} then {second}");
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 1, "404s are errors: {}", exit.stderr);
    assert!(
        !exit.stderr.contains("remote write failed"),
        "{}",
        exit.stderr
    );
    let s = summary(&out);
    let run = s["run_id"].as_str().unwrap();
    let total = s["total"]["requests"].as_f64().unwrap();
    let pushed = promql(
        &prom,
        &format!("sum(loadfleet_requests_total{{run_id=\"{run}\"}})"),
    );
    let errors = promql(
        &prom,
        &format!("sum(loadfleet_errors_total{{run_id=\"{run}\",kind=\"http_404\"}})"),
    );
    let count = promql(
        &prom,
        &format!("sum(loadfleet_request_duration_seconds_count{{run_id=\"{run}\"}})"),
    );
    eprintln!(
        "summary {total} requests; Prometheus {pushed} requests, {count} timed, {errors} 404s"
    );
    assert_eq!(pushed, total, "the run's count, exactly");
    assert_eq!(count, total);
    assert_eq!(errors, s["requests"]["missing"]["errors"].as_f64().unwrap());
    // The response metric, and the protocol count, as the summary has them.
    let size = &s["total"]["metrics"]["size"];
    let sum = promql(
        &prom,
        &format!(
            "sum(loadfleet_response_metric_value_total{{run_id=\"{run}\",metric=\"size\",unit=\"bytes\"}})"
        ),
    );
    let carried = promql(
        &prom,
        &format!(
            "sum(loadfleet_response_metric_responses_total{{run_id=\"{run}\",metric=\"size\"}})"
        ),
    );
    let missing = promql(
        &prom,
        &format!(
            "sum(loadfleet_response_metric_missing_total{{run_id=\"{run}\",metric=\"size\"}})"
        ),
    );
    let http2 = promql(
        &prom,
        &format!("sum(loadfleet_http2_responses_total{{run_id=\"{run}\"}})"),
    );
    eprintln!(
        "size: summary {size}; Prometheus sum {sum}, {carried} carried, {missing} missing; {http2} over HTTP/2"
    );
    assert!(sum > 0.0, "Content-Length summed: {sum}");
    assert_eq!(sum, size["sum"].as_f64().unwrap());
    assert_eq!(carried, size["count"].as_f64().unwrap());
    assert_eq!(missing, size["missing"].as_f64().unwrap());
    assert_eq!(http2, 0.0, "plain http is HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_beyond_loopback_need_a_token_and_scrapers_present_it() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            "http://127.0.0.1:9",
            "users = 1\niterations = 1",
            &[("home", "/")],
        ),
    );
    let exit = run(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--metrics-listen",
            "0.0.0.0:0",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("refusing to serve /metrics or the dashboard on 0.0.0.0:0 without a token"),
        "{}",
        exit.stderr
    );
    // With a token, a scrape without it is refused.
    let bed = testbed(Config::default()).await;
    let plan = write_plan(
        dir.path(),
        "q.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 1\nduration = \"3s\"",
            &[("home", "/")],
        ),
    );
    let token = "metrics-test-token-0123456789";
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "-q",
            "--token",
            token,
            "--out",
            dir.path().join("run").to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let line = ctl.wait_for_line("metrics at http://", Duration::from_secs(20));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap()
        .to_string();
    let (denied, _) = get(&addr, "/metrics", "");
    assert!(denied.contains("401"), "{denied}");
    // Once the run has started (agents attached), its series are there.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, body) = get(
            &addr,
            "/metrics",
            &format!("Authorization: Bearer {token}\r\n"),
        );
        assert!(ok.contains("200"), "{ok}");
        if body.contains("# TYPE loadfleet_requests_total counter") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = exited(ctl, Duration::from_secs(30)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
}
