//! report.html in a real browser: headless Chromium renders it offline and
//! the numbers a person reads are the ones in summary.json.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_renders_offline_with_the_summary_numbers() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(3),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // A hostile step name must come out escaped, never as markup.
    let plan = write_plan(
        dir.path(),
        "r.toml",
        &format!(
            "name = \"<b>report-check</b>\"\n[target]\nbase_url = \"{}\"\n[load]\nusers = 3\nramp_up = \"1s\"\nduration = \"3s\"\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\nname = \"<script>alert(1)</script>\"\npath = \"/\"\n[[scenario.step]]\nname = \"second\"\npath = \"/status/404\"\n",
            bed.base_url()
        ),
    );
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(
        exit.code, 1,
        "404s make it a run with errors: {}",
        exit.stderr
    );
    let s = summary(&out);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        !html.contains("<script>alert(1)</script>"),
        "step names are escaped"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") || html.contains("&#60;script&#62;")
    );
    for external in ["http://", "https://", "src=", "@import"] {
        let hits: Vec<&str> = html
            .lines()
            .filter(|l| {
                l.contains(external) && !l.contains("xmlns") && !l.contains(bed.base_url().as_str())
            })
            .collect();
        assert!(
            hits.is_empty(),
            "report must be self-contained, found {external}: {hits:?}"
        );
    }

    // p95 is drawn over time beside p50 and p99; the one region's curve,
    // identical to the whole run's, is said rather than hidden under it.
    for line in ["p50", "p90", "p95", "p99", "max"] {
        assert!(
            html.contains(&format!("</span>{line}</li>")),
            "{line} in the latency-over-time legend"
        );
    }
    assert!(
        html.contains("region local: same as overall</li>"),
        "a single region's distribution is the run's"
    );
    let dom = dump_dom(&out.join("report.html"));
    let total = s["total"]["requests"].as_u64().unwrap();
    let errors = s["total"]["errors"].as_u64().unwrap();
    assert!(total > 30, "3 users for 3 s sent {total}");
    assert_eq!(
        s["requests"]["second"]["requests"].as_u64().unwrap(),
        errors,
        "every request of the second step is a 404"
    );
    assert_eq!(
        s["requests"]["second"]["errors_by_kind"]["http_404"]
            .as_u64()
            .unwrap(),
        errors
    );
    let row = dom
        .split("<tr>")
        .find(|r| r.contains("<td>all steps</td>"))
        .expect("overall row rendered");
    assert!(
        row.contains(&format!("<td>{total}</td>")) && row.contains(&format!("<td>{errors}</td>")),
        "{row}"
    );
    let p99 = s["total"]["latency_ms"]["p99"].as_f64().unwrap();
    assert!(
        row.contains(&format!("<td>{p99:.2}</td>")),
        "p99 {p99:.2} in {row}"
    );
    assert!(
        dom.matches("<polyline").count() >= 4,
        "latency chart lines rendered"
    );
    // Every chart drew something: each SVG has at least one line with points.
    for (i, svg) in dom.split("<svg").skip(1).enumerate() {
        let svg = svg.split("</svg>").next().unwrap();
        assert!(
            svg.contains("<polyline") && svg.contains("points=\"") && !svg.contains("points=\"\""),
            "chart {i} is empty"
        );
    }
    assert!(dom.contains("data-series=\"overall\"") && dom.contains("Percentile distribution"));
    // A picture for people: kept as a test artifact.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("report.png");
    let (_, _, requests) = chromium_run(
        &out.join("report.html"),
        &[
            "--window-size=1000,2600",
            &format!("--screenshot={}", png.display()),
        ],
    );
    assert!(requests.is_empty(), "{requests:?}");
    assert!(
        std::fs::metadata(&png)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot written"
    );
    assert!(dom.contains("http_404"), "errors table lists the kind");
    assert!(
        !dom.contains("<script>alert(1)</script>"),
        "escaped in the live DOM too"
    );
}

/// Requests by response time, Gatling's bar: bounds from the plan's latency
/// threshold (50 ms, and 1.5 times it), counted per step and for the run,
/// shown first in the report with a bar per step, and a navigation bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_response_time_ranges() {
    let bed = testbed(loadfleet_testbed::Config {
        latencies: vec![
            ("/quick".into(), std::time::Duration::from_millis(5)),
            ("/middling".into(), std::time::Duration::from_millis(60)),
            ("/slow".into(), std::time::Duration::from_millis(120)),
        ],
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "ranges.toml",
        &format!(
            "{}[thresholds]\noverall = [\"p95 < 50ms\"]\n",
            plan_toml(
                &bed.base_url(),
                "users = 2\niterations = 3",
                &[
                    ("quick", "/quick"),
                    ("middling", "/middling"),
                    ("slow", "/slow")
                ],
            )
        ),
    );
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    // The threshold fails (p95 is a slow page's): exit 1, as it should.
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    let r = &s["total"]["ranges"];
    println!("{r}");
    // Each page's latency is the target's (5, 60, 120 ms) plus under 10 ms
    // of the request's own time: 6 of each, one range each.
    assert_eq!(r["bounds_ms"], serde_json::json!([50.0, 75.0]));
    assert_eq!(
        (&r["under"], &r["between"], &r["over"], &r["no_response"]),
        (
            &serde_json::json!(6),
            &serde_json::json!(6),
            &serde_json::json!(6),
            &serde_json::json!(0)
        )
    );
    assert_eq!(s["requests"]["middling"]["ranges"]["between"], 6);
    assert_eq!(s["requests"]["slow"]["ranges"]["over"], 6);
    assert!(
        exit.stdout.contains("under 50 ms 33.3% (6), 50 to 75 ms 33.3% (6), 75 ms or more 33.3% (6), no response 0.0% (0)"),
        "{}",
        exit.stdout
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let headline = &html[html.find("id=\"headline\"").unwrap()..html.find("<dl>").unwrap()];
    assert!(
        headline.contains("under 50 ms <b>33.3%</b> (6)"),
        "{headline}"
    );
    assert!(html.contains("<h3>Response-time ranges by step</h3>"));
    for anchor in ["#overall", "#steps", "#regions", "#agents", "#thresholds"] {
        let id = format!("id=\"{}\"", &anchor[1..]);
        assert!(
            html.contains(&format!("href=\"{anchor}\"")) && html.contains(&id),
            "{anchor}"
        );
    }
}
