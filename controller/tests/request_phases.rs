//! Request phases (`[http] phases = true`): where each request's time went,
//! DNS, connect, TLS, send, wait and receive, as exact histograms per step,
//! checked against what the plan makes happen: a new connection per request
//! or one per user, a name to resolve, a TLS handshake, a path the server
//! holds for 20 ms.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::{Config, self_signed};

fn plan(dir: &Path, base: &str, connections: &str, extra_target: &str) -> std::path::PathBuf {
    write_plan(
        dir,
        &format!("phases-{connections}.toml"),
        &format!(
            "name = \"phases\"\n[target]\nbase_url = \"{base}\"\n{extra_target}\
             [http]\nphases = true\nconnections = \"{connections}\"\n\
             [load]\nusers = 3\niterations = 5\n\
             [[scenario]]\nname = \"s\"\n\
             [[scenario.step]]\nname = \"fast\"\npath = \"/fast\"\n\
             [[scenario.step]]\nname = \"slow\"\npath = \"/slow\"\n"
        ),
    )
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn bed() -> Config {
    Config {
        latencies: vec![("/slow".into(), Duration::from_millis(20))],
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_per_request_shows_its_dns_and_connect_and_the_server_its_wait() {
    let bed = testbed(bed()).await;
    let dir = tempfile::tempdir().unwrap();
    // "localhost": a name to resolve for every connection.
    let base = format!("http://localhost:{}", bed.addr().port());
    let plan = plan(dir.path(), &base, "per_request", "");
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    for step in ["fast", "slow"] {
        let e = &s["requests"][step];
        let m = &e["metrics"];
        println!("{step}: {m}");
        let requests = u(&e["requests"]);
        assert_eq!(requests, 15);
        for phase in [
            "http_dns",
            "http_connect",
            "http_send",
            "http_wait",
            "http_receive",
        ] {
            assert_eq!(u(&m[phase]["count"]), requests, "{step} {phase}");
        }
        assert!(m.get("http_tls").is_none(), "no TLS over http");
        // The phases are parts of the request's latency.
        let per_request: u64 = [
            "http_dns",
            "http_connect",
            "http_send",
            "http_wait",
            "http_receive",
        ]
        .iter()
        .map(|p| u(&m[*p]["sum"]))
        .sum::<u64>()
            / requests;
        let latency_us = e["latency_ms"]["mean"].as_f64().unwrap() * 1000.0;
        println!("{step}: phases {per_request} µs per request, latency {latency_us:.0} µs");
        assert!(
            per_request as f64 <= latency_us * 1.02 + 5.0,
            "{step}: phases {per_request} µs > latency {latency_us} µs"
        );
    }
    // The server holds /slow for 20 ms: that is waiting, not the network.
    let slow = &s["requests"]["slow"]["metrics"];
    assert!(u(&slow["http_wait"]["min"]) >= 20_000, "{slow}");
    assert!(u(&slow["http_connect"]["p50"]) < 20_000, "{slow}");
    // The report stacks them per step (headless Chromium's rendering).
    let dom = dump_dom(&out.join("report.html"));
    assert!(
        dom.contains("Where a request's time went"),
        "no phases section"
    );
    assert!(dom.contains("title=\"wait: "), "no wait segment");
    // A legend names each phase's colour; each bar spans its own step's
    // time (the fast step's proportions as readable as the slow one's);
    // the phases are drawn over time.
    let legend = dom
        .split("id=\"phase-legend\"")
        .nth(1)
        .and_then(|l| l.split("</p>").next())
        .unwrap();
    for phase in ["DNS", "connect", "TLS", "send", "wait", "receive"] {
        assert!(
            legend.contains(&format!("</span>{phase}</span>")),
            "{phase} in {legend}"
        );
    }
    for row in dom.split("<tr>").filter(|r| r.contains("title=\"wait: ")) {
        let widths: f64 = row
            .split("style=\"width:")
            .skip(1)
            .filter_map(|w| w.split('%').next()?.parse::<f64>().ok())
            .sum();
        assert!(
            (widths - 100.0).abs() < 0.1,
            "a bar spans its step: {widths}% in {row}"
        );
    }
    assert!(
        dom.contains("aria-label=\"Request phases over time"),
        "phases over time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_connections_and_tls_handshakes_are_counted_once_per_connection() {
    let id = self_signed(&["127.0.0.1", "localhost"]).unwrap();
    let bed = testbed(Config {
        tls: Some(id.clone()),
        ..bed()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &id.cert_pem).unwrap();
    let plan = plan(
        dir.path(),
        &bed.base_url(),
        "per_user",
        &format!("ca_file = \"{}\"\n", ca.display()),
    );
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    let m = &s["total"]["metrics"];
    println!("all steps: {m}");
    // Three users, one kept connection each: three connects and three
    // handshakes over 30 requests; an IP address, so no name to resolve.
    assert_eq!(u(&m["http_connect"]["count"]), 3);
    assert_eq!(u(&m["http_tls"]["count"]), 3);
    assert!(m.get("http_dns").is_none(), "{m}");
    assert_eq!(u(&m["http_wait"]["count"]), 30);
}
