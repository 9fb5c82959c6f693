//! `loadfleet compare`: a slower target is flagged worse, an identical one
//! is not, and `--fail-on-regression` gates on it; `loadfleet report`
//! rebuilds a report from the run directory alone.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

async fn run_against(latency_ms: u64, dir: &Path, name: &str) -> std::path::PathBuf {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(latency_ms),
        ..Config::default()
    })
    .await;
    let plan = write_plan(
        dir,
        &format!("{name}.toml"),
        &plan_toml(
            &bed.base_url(),
            "users = 4\niterations = 20",
            &[("home", "/"), ("page", "/page")],
        ),
    );
    let out = dir.join(name);
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slower_runs_are_flagged_and_identical_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let fast = run_against(100, dir.path(), "fast").await;
    let same = run_against(100, dir.path(), "same").await;
    let slow = run_against(150, dir.path(), "slow").await;
    let arg = |p: &Path| p.to_str().unwrap().to_string();

    let exit = run(
        &loadfleet(),
        &["compare", &arg(&fast), &arg(&slow)],
        Duration::from_secs(20),
    );
    assert_eq!(
        exit.code, 0,
        "without --fail-on-regression a regression is reported, not failed: {}",
        exit.stderr
    );
    let overall_p50 = exit
        .stdout
        .lines()
        .find(|l| l.contains("overall") && l.contains("p50_ms"))
        .unwrap_or_default()
        .to_string();
    assert!(
        overall_p50.contains("WORSE") && (overall_p50.contains("+4") || overall_p50.contains("+5")),
        "150 ms vs 100 ms is about +50%: {overall_p50}"
    );
    // One run per side: the comparison says what it cannot know.
    assert!(
        exit.stdout.contains(
            "note: one run per side: run-to-run variation unknown, so a verdict may be noise; `loadfleet experiment` repeats runs"
        ),
        "{}",
        exit.stdout
    );
    let gated = run(
        &loadfleet(),
        &["compare", &arg(&fast), &arg(&slow), "--fail-on-regression"],
        Duration::from_secs(20),
    );
    assert_eq!(gated.code, 1);

    let back = run(
        &loadfleet(),
        &["compare", &arg(&slow), &arg(&fast)],
        Duration::from_secs(20),
    );
    assert!(
        back.stdout
            .lines()
            .any(|l| l.contains("overall") && l.contains("p50_ms") && l.contains("better")),
        "{}",
        back.stdout
    );

    // Side by side, the two runs' latency charts share one y scale, so a
    // taller line means a slower run.
    let sides = dir.path().join("sides.html");
    let exit = run(
        &loadfleet(),
        &[
            "compare",
            &arg(&fast),
            &arg(&slow),
            "--html",
            sides.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(sides.exists(), "{}", exit.stderr);
    let page = std::fs::read_to_string(&sides).unwrap();
    let ticks: Vec<Vec<&str>> = page
        .split("<svg")
        .skip(1)
        .filter(|svg| svg.contains("aria-label=\"Latency over time:"))
        .map(|svg| {
            svg.split("</svg>")
                .next()
                .unwrap()
                .split("class=\"ytick\"")
                .skip(1)
                .filter_map(|t| t.split('>').nth(1)?.split('<').next())
                .collect()
        })
        .collect();
    println!("y ticks side by side: {ticks:?}");
    assert_eq!(ticks.len(), 2);
    assert!(ticks[0].len() >= 3, "{ticks:?}");
    assert_eq!(ticks[0], ticks[1], "one y scale for both runs");
    // Legible on a laptop and a phone: charts within the window, their
    // text at least 11 CSS px as drawn.
    for width in [1280, 390] {
        let m = crate::report_layout::measure(&sides, width);
        eprintln!("compare at {width} px: {m}");
        assert_eq!(m["overflow"], serde_json::json!([]), "{m}");
        assert!(m["page"].as_u64() <= m["vw"].as_u64(), "{m}");
        let smallest = m["smallest_text"].as_f64().unwrap();
        assert!(
            smallest >= 10.95,
            "chart text of {smallest:.1} px at {width} px: {m}"
        );
    }

    let html = dir.path().join("cmp.html");
    let identical = run(
        &loadfleet(),
        &[
            "compare",
            &arg(&fast),
            &arg(&same),
            "--fail-on-regression",
            "--html",
            html.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(
        identical.code, 0,
        "identical profiles flag nothing: {}",
        identical.stdout
    );
    assert!(identical.stdout.contains("0 worse"), "{}", identical.stdout);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("Note: one run per side"),
        "the page says it too"
    );
    assert_eq!(
        page.matches("<svg").count(),
        3,
        "overlaid distributions and both runs' latency charts"
    );
    // In a browser, offline: the delta table and every chart are drawn.
    let dom = dump_dom(&html);
    assert!(
        dom.contains("p95_ms") && dom.contains(&format!("{} against {}", arg(&same), arg(&fast))),
        "delta table rendered"
    );
    for svg in dom.split("<svg").skip(1) {
        let svg = svg.split("</svg>").next().unwrap();
        assert!(
            svg.contains("<polyline") && !svg.contains("points=\"\""),
            "a chart is empty"
        );
    }
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("compare.png");
    let (_, _, requests) = chromium_run(
        &html,
        &[
            "--window-size=1200,2400",
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_load_parameters_are_warned_about() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let a = write_plan(
        dir.path(),
        "a.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 3",
            &[("home", "/")],
        ),
    );
    let b = write_plan(
        dir.path(),
        "b.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 3\niterations = 3",
            &[("home", "/")],
        ),
    );
    let (ra, rb) = (dir.path().join("ra"), dir.path().join("rb"));
    assert_eq!(run_plan(&a, &ra).await.code, 0);
    assert_eq!(run_plan(&b, &rb).await.code, 0);
    let exit = run(
        &loadfleet(),
        &["compare", ra.to_str().unwrap(), rb.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(
        exit.stdout
            .contains("warning: the runs may not be comparable: users differs: 2 vs 3"),
        "{}",
        exit.stdout
    );

    // The report is rebuilt from summary.json alone.
    std::fs::remove_file(ra.join("report.html")).unwrap();
    let exit = run(
        &loadfleet(),
        &["report", ra.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let html = std::fs::read_to_string(ra.join("report.html")).unwrap();
    let s = summary(&ra);
    assert!(
        html.contains(&format!("<td>{}</td>", s["total"]["requests"])),
        "the rebuilt report has the run's numbers"
    );
    // Not a run directory: a clear error.
    let exit = run(
        &loadfleet(),
        &[
            "compare",
            ra.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 2);
    assert!(exit.stderr.contains("summary.json"), "{}", exit.stderr);
}

/// Steps keep the journey's order (not the alphabet's) in the terminal
/// table, `summary.json`'s `step_order`, the report and `compare`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_are_shown_in_journey_order() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let journey = [("zeta", "/z"), ("alpha", "/a"), ("mid", "/m")];
    let plan = write_plan(
        dir.path(),
        "order.toml",
        &plan_toml(&bed.base_url(), "users = 1\niterations = 2", &journey),
    );
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let exit = run_plan(&plan, out).await;
        assert_eq!(exit.code, 0, "{}", exit.stderr);
        let order: Vec<usize> = ["zeta", "alpha", "mid"]
            .iter()
            .map(|n| exit.stdout.find(&format!("│ {n}")).expect(n))
            .collect();
        assert!(order.is_sorted(), "table order {order:?}:\n{}", exit.stdout);
    }
    assert_eq!(
        summary(&a)["step_order"],
        serde_json::json!(["zeta", "alpha", "mid"])
    );
    let report = std::fs::read_to_string(a.join("report.html")).unwrap();
    let pos: Vec<usize> = ["zeta", "alpha", "mid"]
        .iter()
        .map(|n| report.find(&format!("<td>{n}</td>")).expect(n))
        .collect();
    assert!(pos.is_sorted(), "report order {pos:?}");
    let exit = run(
        &loadfleet(),
        &["compare", a.to_str().unwrap(), b.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let pos: Vec<usize> = ["zeta", "alpha", "mid"]
        .iter()
        .map(|n| exit.stdout.find(n).expect(n))
        .collect();
    assert!(pos.is_sorted(), "compare order {pos:?}:\n{}", exit.stdout);
}

/// In an 80-column terminal the tables wrap to fit (through `script`, which
/// gives the run a real terminal); piped, they keep their natural width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_fit_an_80_column_terminal() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let steps = [
        ("front page with a long name", "/a"),
        ("login form with a long name", "/b"),
        ("course view", "/c"),
    ];
    let plan = write_plan(
        dir.path(),
        "wide.toml",
        &plan_toml(&bed.base_url(), "users = 2\niterations = 2", &steps),
    );
    let typescript = dir.path().join("typescript");
    let command = format!(
        "stty cols 80; {} run {} -q --out {}",
        loadfleet().display(),
        plan.display(),
        dir.path().join("run").display()
    );
    let status = std::process::Command::new("script")
        .args(["-qec", &command])
        .arg(&typescript)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("script (util-linux) runs");
    assert!(status.success());
    let text = std::fs::read_to_string(&typescript).unwrap();
    let table_lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with(['┌', '│', '╞', '├', '└']))
        .collect();
    assert!(table_lines.len() > 10, "{text}");
    let widest = table_lines.iter().map(|l| l.chars().count()).max().unwrap();
    assert!(widest <= 80, "a table line of {widest} columns:\n{text}");
    // Piped, the step table is wider than 80 columns.
    let piped = run_plan(&plan, &dir.path().join("piped")).await;
    let natural = piped
        .stdout
        .lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| l.chars().count())
        .max()
        .unwrap();
    assert!(natural > 80, "piped tables keep their width: {natural}");
}
