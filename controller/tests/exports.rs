//! What a run writes, checked by tools that are not loadfleet's: the JSON
//! Schema of summary.json (Python jsonschema) and latency.hlog read by
//! HdrHistogram's Python port; requests.csv and latency.hgrm add up.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

/// Runs tests/py/check_run.py (needs `pip install jsonschema hdrhistogram`,
/// which .ci/run does) and returns its facts.
fn check_with_python(run: &Path) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tests/py/check_run.py"))
        .arg(run)
        .arg(root.join("../docs/summary.schema.json"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the independent check failed (missing `pip install jsonschema hdrhistogram`?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_agree_with_the_summary_and_with_independent_readers() {
    let bed = testbed(Config {
        latencies: vec![("/slow".into(), Duration::from_millis(15))],
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plans = [
        (
            "closed",
            plan_toml(
                &bed.base_url(),
                "users = 3\nramp_up = \"500ms\"\nduration = \"2s\"",
                &[
                    ("home, page", "/"),
                    ("slow", "/slow"),
                    ("missing", "/status/404"),
                ],
            ),
        ),
        (
            "open",
            plan_toml(
                &bed.base_url(),
                "rate = 150\nduration = \"2s\"\nmax_users = 20",
                &[("home, page", "/"), ("slow", "/slow")],
            ) + "\n[thresholds]\noverall = [\"p99 < 5s\"]\n",
        ),
    ];
    for (name, text) in plans {
        let plan = write_plan(dir.path(), &format!("{name}.toml"), &text);
        let out = dir.path().join(name);
        let exit = run_plan(&plan, &out).await;
        assert!(exit.code <= 1, "{name}: {}", exit.stderr);
        let s = summary(&out);
        // The interval records went through their file in the run
        // directory, which is gone once the outputs hold them.
        assert!(
            !out.join(".intervals.part").exists(),
            "{name}: the spill file is left behind"
        );
        let facts = check_with_python(&out);
        assert_eq!(facts["schema_valid"], true);
        let responses = s["total"]["requests"].as_u64().unwrap()
            - s["total"]["errors_by_kind"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.starts_with("http_"))
                .map(|(_, v)| v.as_u64().unwrap())
                .sum::<u64>();
        assert_eq!(
            facts["hlog_count"].as_u64().unwrap(),
            responses,
            "{name}: HdrHistogram's Python port counts every response"
        );
        // Same rank rule (ceil(q * N)) on both sides, so the values agree to
        // the summary's rounding, not merely to a tolerance: with a few
        // hundred samples a different rank rule picks a different sample.
        for q in ["p50", "p99"] {
            let ours = s["total"]["latency_ms"][q].as_f64().unwrap();
            let theirs = facts[format!("hlog_{q}_ms")].as_f64().unwrap();
            assert!(
                (theirs - ours).abs() <= 0.0015,
                "{name}: {q} {ours} ms here, {theirs} ms from the Python reader"
            );
        }
        assert_eq!(
            facts["tag_counts"]["home__page"].as_u64(),
            s["requests"]["home, page"]["requests"].as_u64(),
            "{name}: one tag per step"
        );

        // requests.csv: one row per step and interval, adding up to the totals.
        let csv = std::fs::read_to_string(out.join("requests.csv")).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "step,interval_start_s,interval_length_s,requests,errors,p50_ms,p90_ms,p95_ms,p99_ms,max_ms"
        );
        let (mut requests, mut errors, mut quoted) = (0u64, 0u64, false);
        for line in lines {
            let (step, rest) = if let Some(r) = line.strip_prefix("\"home, page\",") {
                quoted = true;
                ("home, page", r)
            } else {
                line.split_once(',').unwrap()
            };
            assert!(s["requests"].get(step).is_some(), "{step}");
            let f: Vec<&str> = rest.split(',').collect();
            requests += f[2].parse::<u64>().unwrap();
            errors += f[3].parse::<u64>().unwrap();
        }
        assert!(quoted, "a step name with a comma is quoted");
        assert_eq!(
            requests,
            s["total"]["requests"].as_u64().unwrap(),
            "{name}: csv rows add up to the total"
        );
        assert_eq!(errors, s["total"]["errors"].as_u64().unwrap());

        // latency.hgrm: HdrHistogram's classic text, same count and max.
        let hgrm = std::fs::read_to_string(out.join("latency.hgrm")).unwrap();
        assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(
            hgrm.contains(&format!("Total count    = {responses:>12}]")),
            "{hgrm}"
        );
    }
}
