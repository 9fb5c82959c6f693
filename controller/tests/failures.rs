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
