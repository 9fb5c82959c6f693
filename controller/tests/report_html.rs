//! report.html in a real browser: headless Chromium renders it offline and
//! the numbers a person reads are the ones in summary.json.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use loadfleet_testbed::Config;
use support::*;

fn chromium() -> PathBuf {
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "headless Chromium is needed for this test: `apt-get install chromium` (.ci/run installs it)"
    );
}

/// The DOM after Chromium loaded and laid out the page.
fn dump_dom(file: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", file.display()),
        ])
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

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
            "name = \"report-check\"\n[target]\nbase_url = \"{}\"\n[load]\nusers = 3\nramp_up = \"1s\"\nduration = \"3s\"\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\nname = \"<script>alert(1)</script>\"\npath = \"/\"\n[[scenario.step]]\nname = \"second\"\npath = \"/status/404\"\n",
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
    assert!(dom.contains("http_404"), "errors table lists the kind");
    assert!(
        !dom.contains("<script>alert(1)</script>"),
        "escaped in the live DOM too"
    );
}
