//! The live dashboard in a real browser: headless Chromium loads it from
//! the controller while a run goes on; its numbers move, match
//! `summary.json` once the run has ended, the page asks nothing of any
//! other host, it links the report, and only its own Stop request stops
//! the run.

use std::io::{Read, Write};
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

/// The number in `<b id="ID">N</b>` of the page.
fn figure(dom: &str, id: &str) -> f64 {
    dom.split(&format!("id=\"{id}\">"))
        .nth(1)
        .and_then(|s| s.split('<').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no figure {id} in the page"))
}

fn page(url: &str) -> String {
    let (dom, stderr, requests) = chromium_open(url, &["--dump-dom"]);
    assert!(
        requests.is_empty(),
        "the page asked other hosts: {requests:?}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("CONSOLE") && l.contains("Uncaught")),
        "{stderr}"
    );
    dom
}

/// A raw POST; returns the status line.
fn post(addr: &str, path: &str, headers: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n{headers}\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_the_run_and_ends_with_its_numbers() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(2),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // A number read from every response, for the page's metrics table.
    let text = plan_toml(
        &bed.base_url(),
        "users = 4\nduration = \"5s\"",
        &[("home", "/"), ("gone", "/status/404")],
    ) + "\n[[metric]]\nname = \"size\"\nheader = \"content-length\"\nunit = \"bytes\"\n";
    let plan = write_plan(dir.path(), "live.toml", &text);
    let out = dir.path().join("run");
    // The page stays up until the test has read it (each read starts a
    // headless Chromium, which took over 4 s with a build beside the
    // suite); SIGINT then ends the linger, as Ctrl-C does for a person.
    let ctl = run_in_background(&plan, &out, &["--dashboard", "--dashboard-linger", "120s"]);
    let line = ctl.wait_for_line("dashboard at http://", Duration::from_secs(20));
    let url = line
        .split("dashboard at ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    load_started(&bed, 50).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let first = page(&url);
    assert!(
        first.contains("id=\"state\" class=\"state-running\""),
        "running"
    );
    assert!(first.contains("Stop the run"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = page(&url);
    let (a, b) = (figure(&first, "requests"), figure(&second, "requests"));
    eprintln!("requests on the page: {a}, then {b}");
    assert!(b > a && a > 0.0, "the numbers move: {a} then {b}");
    // A request without the page's header, or from another site, stops nothing.
    assert!(post(&addr, "/stop", "").contains("403"));
    assert!(
        post(
            &addr,
            "/stop",
            "X-Loadfleet: stop\r\nOrigin: http://evil.example\r\n"
        )
        .contains("403")
    );
    ctl.wait_for_line("dashboard stays up", Duration::from_secs(30));
    let last = page(&url);
    let s = summary(&out);
    assert!(last.contains("class=\"state-ended\""), "ended");
    // Charts with axes: y ticks and x ticks in seconds, rates and users on
    // charts of their own, and hover columns holding the values.
    let svg_of = |id: &str| -> String {
        last.split(&format!("id=\"{id}\""))
            .nth(1)
            .and_then(|s| s.split("</svg>").next())
            .unwrap_or_default()
            .to_string()
    };
    let latency = svg_of("latency");
    assert!(latency.matches("class=\"ytick\"").count() >= 3, "{latency}");
    assert!(
        latency.matches(" s</text>").count() >= 2,
        "x ticks: {latency}"
    );
    assert!(
        latency.contains("<rect class=\"hover\"") && latency.contains("p95 ms "),
        "hover values: {latency}"
    );
    assert!(svg_of("throughput").contains("requests/s"));
    assert!(
        !svg_of("throughput").contains("active users"),
        "users apart"
    );
    assert!(svg_of("users").contains("<polyline"), "a users chart");
    assert!(last.contains("completed with errors"), "the status");
    assert_eq!(
        figure(&last, "requests"),
        s["total"]["requests"].as_f64().unwrap()
    );
    assert_eq!(
        figure(&last, "errors"),
        s["total"]["errors"].as_f64().unwrap()
    );
    // The metric's row, as the script drew it last: the run's count and
    // exact mean, as the summary has them.
    let size = &s["total"]["metrics"]["size"];
    let row = format!(
        "<tr><td>size</td><td>bytes</td><td>{}</td><td>0</td><td>{:.2}</td>",
        size["count"],
        size["mean"].as_f64().unwrap()
    );
    eprintln!("the metric's row: {row}");
    assert!(size["count"].as_u64().unwrap() > 0);
    assert!(last.contains(&row), "{row} in {last}");
    // The step table, as the script drew it last: each step's requests and
    // errors as the summary has them (every 404 is an error).
    for step in ["home", "gone"] {
        let e = &s["requests"][step];
        let row = format!(
            "<tr><td>{step}</td><td>{}</td><td>{}</td>",
            e["requests"], e["errors"]
        );
        assert!(last.contains(&row), "{row} in {last}");
    }
    assert_eq!(
        s["requests"]["gone"]["errors"],
        s["requests"]["gone"]["requests"]
    );
    // Once ended, the tiles show the whole run, not its last fraction of
    // a second; no favicon request (the page names an empty one).
    assert!(
        last.contains("<span id=\"tiles\">the whole run</span>"),
        "{last}"
    );
    // The page shows two decimals of the p50 the summary has to three
    // (3.735 reads 3.73 in a browser, whose binary 3.735 is just under):
    // within 0.01 of the whole run's (a last sliver's can be far off).
    let (shown, run_p50) = (
        figure(&last, "p50"),
        s["total"]["latency_ms"]["p50"].as_f64().unwrap(),
    );
    assert!(
        (shown - run_p50).abs() <= 0.0101,
        "the run's p50: {shown} shown, {run_p50} in the summary"
    );
    assert!(last.contains("<link rel=\"icon\" href=\"data:,\">"));
    assert!(last.contains("href=\"/report\""), "links the report");
    let report = page(&format!("{url}report"));
    assert!(
        report.contains(s["run_id"].as_str().unwrap()),
        "the report is served"
    );
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &ctl.child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let exit = exited(ctl, Duration::from_secs(20)).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
}

/// The dashboard's Stop request ends the run gracefully, as Ctrl-C does:
/// status `interrupted`, results kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_button_stops_the_run_gracefully() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "long.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\nduration = \"60s\"",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let ctl = run_in_background(&plan, &out, &["--dashboard", "--dashboard-linger", "0s"]);
    let line = ctl.wait_for_line("dashboard at http://", Duration::from_secs(20));
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .to_string();
    load_started(&bed, 20).await;
    let asked = std::time::Instant::now();
    // What the button sends (the page's script; `confirm` first).
    assert!(post(&addr, "/stop", "X-Loadfleet: stop\r\n").contains("202"));
    let exit = exited(ctl, Duration::from_secs(30)).await;
    eprintln!("stopped {:?} after the request", asked.elapsed());
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    assert_eq!(summary(&out)["status"], "interrupted");
    assert!(exit.stderr.contains("stop asked from the dashboard"));
}

/// A sweep keeps one dashboard from run to run, and the page says which
/// run it is showing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_keeps_one_dashboard_that_names_the_current_run() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "sweep.toml",
        &plan_toml(
            &bed.base_url(),
            "users = [2, 3]\nduration = \"3s\"",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("series");
    let ctl = run_in_background(&plan, &out, &["--dashboard", "--dashboard-linger", "0s"]);
    let line = ctl.wait_for_line("dashboard at http://", Duration::from_secs(20));
    let url = line
        .split("dashboard at ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    ctl.wait_for_line("run 2 of 2", Duration::from_secs(30));
    // Into the second run (3 s long), with time left for the page to load.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let dom = page(&url);
    assert!(
        dom.contains("run 2 of 2: users-3"),
        "the page names the run"
    );
    assert!(dom.contains("class=\"state-running\""));
    let exit = exited(ctl, Duration::from_secs(30)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
}
