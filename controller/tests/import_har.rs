//! `loadfleet import har`: a recording in the shape Chrome exports turns
//! into a plan that validates, names the values that need an extraction,
//! and runs against the test target with zero errors, counted there.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/session.har")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_recording_becomes_a_journey_that_runs() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("recorded.toml");
    let har = fixture();
    let exit = run(
        &loadfleet(),
        &[
            "import",
            "har",
            har.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--base-url",
            &bed.base_url(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(
        exit.stdout.contains("4 steps (2 static assets left out)"),
        "{}",
        exit.stdout
    );
    // The per-session values are named, on stderr and in the plan.
    for token in ["form field `csrf_token`", "header `X-CSRF-Token`"] {
        assert!(exit.stderr.contains(token), "{token}: {}", exit.stderr);
    }
    let plan = std::fs::read_to_string(&out).unwrap();
    eprintln!("{plan}");
    assert!(
        plan.contains("# CHECK: step 2 (POST /echo): form field `csrf_token`"),
        "{plan}"
    );
    // The recorded pause: from the first page's end (0.12 s) to the POST (2 s).
    assert!(plan.contains("think = \"1880ms\""), "{plan}");
    // Cookies, Host and pseudo-headers are not replayed; the recorded
    // redirect target is no step of its own.
    assert!(!plan.contains("rec0rded") && !plan.contains(":authority") && !plan.contains("Host"));
    assert_eq!(plan.matches("[[scenario.step]]").count(), 4);
    // The recorded site's Referer and Origin name the site it now loads.
    assert!(
        plan.contains(&format!("Referer = \"{}/\"", bed.base_url())),
        "{plan}"
    );
    // A literal `${name}` in the recorded JSON stays literal.
    assert!(plan.contains("$${name}"), "{plan}");
    let check = run(
        &loadfleet(),
        &["validate", out.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(check.code, 0, "{}", check.stderr);

    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&run_dir);
    assert_eq!(s["total"]["errors"], 0, "{}", s["errors"]);
    assert_eq!(s["total"]["requests"], 4);
    let stats = bed.stats();
    eprintln!(
        "served: / {}, /echo {}, /redirect/1 {}",
        stats.served_path("/"),
        stats.served_path("/echo"),
        stats.served_path("/redirect/1")
    );
    assert_eq!(stats.served_path("/"), 1);
    assert_eq!(
        stats.served_path("/echo"),
        3,
        "form POST, the followed redirect, the XHR"
    );
    assert_eq!(stats.served_path("/redirect/1"), 1);
    assert_eq!(stats.served(), 5);

    // Never over an existing file; a file that is not HAR says where.
    let again = run(
        &loadfleet(),
        &[
            "import",
            "har",
            har.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    let junk = dir.path().join("junk.har");
    std::fs::write(&junk, "{\"log\": {\"entries\": [1]}}").unwrap();
    let bad = run(
        &loadfleet(),
        &[
            "import",
            "har",
            junk.to_str().unwrap(),
            "--out",
            dir.path().join("x.toml").to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("not a HAR file") && bad.stderr.contains("line 1"),
        "{}",
        bad.stderr
    );
    assert!(!dir.path().join("x.toml").exists());
}

/// A recording in the shapes real tools export: a byte-order mark, `null`
/// for optional fields, `postData.params` as an object, a pseudo-header
/// recorded as a header name, an analytics collector and a tracker on
/// other hosts, an SVG without a resource type, a 304 and a cancelled
/// request, a two-hop redirect chain, a form with repeated fields out of
/// order, a WebSocket, and a pause of 105 days.
fn shapes(base: &str) -> String {
    let host = base.trim_start_matches("http://");
    let day = 86_400_000i64;
    let entry = |ms: i64, method: &str, url: &str, status: u16, extra: &str| {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(
            (1_700_000_000_000i128 + ms as i128) * 1_000_000,
        )
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
        format!(
            r#"{{"startedDateTime": "{t}", "time": 50, "request": {{"method": "{method}", "url": "{url}", "headers": [], "postData": null}}, "response": {{"status": {status}, "redirectURL": null, "content": {{"mimeType": "text/html"}}}}{extra}}}"#
        )
    };
    let entries = [
        entry(0, "GET", &format!("{base}/"), 200, r#", "_resourceType": "document""#)
            .replace(
                r#""headers": []"#,
                r#""headers": [{"name": "GET /pixel/x HTTP/1.1", "value": ""}, {"name": "If-None-Match", "value": "\"abc\""}, {"name": "Accept", "value": "text/html"}]"#,
            ),
        entry(100, "GET", "https://www.google-analytics.com/collect?v=1", 200, r#", "_resourceType": "xhr""#),
        entry(150, "GET", "https://tracker.example.org/t", 200, r#", "_resourceType": "fetch""#),
        entry(200, "GET", &format!("{base}/logo.svg"), 200, "")
            .replace("text/html", "image/svg+xml"),
        entry(250, "GET", &format!("{base}/cached.css"), 304, ""),
        entry(300, "GET", &format!("{base}/cancelled"), 0, ""),
        entry(400, "GET", &format!("{base}/redirect/2"), 302, r#", "_resourceType": "document""#)
            .replace(r#""redirectURL": null"#, r#""redirectURL": "1""#),
        entry(460, "GET", &format!("{base}/redirect/1"), 302, r#", "_resourceType": "document""#)
            .replace(r#""redirectURL": null"#, r#""redirectURL": "/echo""#),
        entry(520, "GET", &format!("{base}/echo"), 200, r#", "_resourceType": "document""#),
        entry(105 * day, "POST", &format!("{base}/echo"), 200, r#", "_resourceType": "xhr""#)
            .replace(
                r#""postData": null"#,
                r#""postData": {"mimeType": "application/x-www-form-urlencoded", "params": [{"name": "b", "value": "2"}, {"name": "a", "value": "1"}, {"name": "a", "value": "3"}]}"#,
            ),
        entry(105 * day + 100, "POST", &format!("{base}/form2"), 200, r#", "_resourceType": "xhr""#)
            .replace(
                r#""postData": null"#,
                r#""postData": {"mimeType": "application/x-www-form-urlencoded", "params": {"x": "1", "y": "2"}}"#,
            ),
        entry(105 * day + 200, "GET", &format!("ws://{host}/socket"), 101, r#", "_resourceType": "websocket""#),
    ];
    format!(
        "\u{feff}{{\"log\": {{\"version\": \"1.2\", \"creator\": null, \"entries\": [{}]}}}}",
        entries.join(",\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_site_is_imported_pauses_are_capped_and_odd_shapes_are_read() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let har = dir.path().join("shapes.har");
    std::fs::write(&har, shapes(&bed.base_url())).unwrap();
    let out = dir.path().join("shapes.toml");
    let exit = run(
        &loadfleet(),
        &[
            "import",
            "har",
            har.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-think",
            "1s",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}\n{}", exit.stderr);
    for said in [
        "1 request(s) to www.google-analytics.com left out: not the site",
        "1 request(s) to tracker.example.org left out",
        "WebSocket is not supported yet: ws://",
        "is capped at 1.0 s (--max-think)",
        "header \"GET /pixel/x HTTP/1.1\" is not a valid HTTP header; left out",
    ] {
        assert!(exit.stderr.contains(said), "{said}: {}", exit.stderr);
    }
    assert!(
        plan.contains("1 static asset(s) (--include-assets keeps them), 2 from the browser's cache or cancelled, 0 beacon(s), 1 WebSocket(s), 2 to other hosts"),
        "{plan}"
    );
    assert!(!plan.contains("google-analytics") || plan.contains("# CHECK"));
    assert!(
        !plan.contains("If-None-Match"),
        "conditional headers dropped"
    );
    assert!(
        plan.contains("think = \"1000ms\""),
        "the 105-day pause capped"
    );
    assert!(
        plan.contains("body = \"b=2&a=1&a=3\""),
        "the recorded order and repeats"
    );
    assert!(plan.contains("form = { x = \"1\", y = \"2\" }"), "{plan}");
    let run_dir = dir.path().join("run");
    let started = std::time::Instant::now();
    let exit = run_plan(&out, &run_dir).await;
    let took = started.elapsed();
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let served = bed.stats().paths();
    println!("served {served:?} in {took:?}");
    let expected: std::collections::BTreeMap<String, u64> = [
        ("/", 1),
        // One step, the chain followed by loadfleet as by the browser.
        ("/redirect/2", 1),
        ("/redirect/1", 1),
        ("/echo", 2),
        ("/form2", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(served, expected);
    // The recorded 350 ms pause and the capped 1 s one.
    assert!(took >= Duration::from_millis(1_300), "took {took:?}");
    // Without the cap the run would last 105 days; with it, seconds.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
