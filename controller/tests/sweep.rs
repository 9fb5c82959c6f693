//! Sweeps: `users = [2, 4, 6]` runs the plan once per value into one series
//! directory, with a table of value against req/s, percentiles and errors.

use std::time::{Duration, Instant};

use crate::support::*;
use loadfleet_testbed::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sweep_writes_one_run_per_value_and_a_series_table() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(2),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = [2, 4, 6]\nramp_up = \"200ms\"\niterations = 5\ncooldown = \"500ms\"",
        &[("home", "/")],
    );
    let plan = write_plan(dir.path(), "sweep.toml", &text);
    let out = dir.path().join("series");
    let started = Instant::now();
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "two cooldowns of 0.5 s between three runs"
    );
    for (users, requests) in [(2, 10), (4, 20), (6, 30)] {
        let s = summary(&out.join(format!("users-{users}")));
        assert_eq!(s["load"]["users"], users);
        assert_eq!(
            s["total"]["requests"], requests,
            "{users} users x 5 iterations"
        );
    }
    assert_eq!(bed.stats().served(), 60, "the three runs together");
    let series: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("series.json")).unwrap()).unwrap();
    assert_eq!(series["parameter"], "users");
    let rows = series["runs"].as_array().unwrap();
    let values: Vec<f64> = rows.iter().map(|r| r["value"].as_f64().unwrap()).collect();
    assert_eq!(values, [2.0, 4.0, 6.0]);
    assert!(
        rows.iter()
            .all(|r| r["p95_ms"].as_f64().unwrap() >= 2.0 && r["errors"] == 0)
    );
    let table = std::fs::read_to_string(out.join("series.txt")).unwrap();
    assert!(
        table.contains("users") && table.contains("p95 ms") && table.lines().count() >= 6,
        "{table}"
    );
    assert!(
        exit.stdout.contains("series sweep (users per run)"),
        "{}",
        exit.stdout
    );
    // The series report, in a browser: one row per value, charts drawn.
    let dom = dump_dom(&out.join("series.html"));
    for users in [2, 4, 6] {
        assert!(
            dom.contains(&format!("<td>{users}</td>")),
            "a row for {users} users"
        );
    }
    assert!(
        dom.contains("users-4/report.html"),
        "rows link to each run's report"
    );
    assert_eq!(
        dom.matches("<polyline").count(),
        5,
        "p50, p90, p95, p99 and req/s against users"
    );
    // `loadfleet report` on the series directory rebuilds every run's report;
    // on a run's summary.json, that run's.
    for users in [2, 4, 6] {
        std::fs::remove_file(out.join(format!("users-{users}/report.html"))).unwrap();
    }
    let again = run(
        &loadfleet(),
        &["report", out.to_str().unwrap()],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    for users in [2, 4, 6] {
        assert!(out.join(format!("users-{users}/report.html")).exists());
    }
    let one = out.join("users-4/summary.json");
    let again = run(
        &loadfleet(),
        &["report", one.to_str().unwrap()],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("users-4/report.html"),
        "{}",
        again.stdout
    );
}

/// Two sweeps (a fast and a slow target, as the demo compares two cache
/// stores) compare load by load, in one table and one page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_series_compare_load_by_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut series = Vec::new();
    for (name, ms) in [("fast", 10), ("slow", 80)] {
        let bed = testbed(Config {
            default_latency: std::time::Duration::from_millis(ms),
            ..Config::default()
        })
        .await;
        let plan = write_plan(
            dir.path(),
            &format!("{name}.toml"),
            &plan_toml(
                &bed.base_url(),
                "users = [1, 2]\niterations = 25",
                &[("home", "/")],
            ),
        );
        let out = dir.path().join(name);
        let exit = run_plan(&plan, &out).await;
        assert_eq!(exit.code, 0, "{}", exit.stderr);
        series.push(out);
    }
    let page = dir.path().join("series.html");
    let exit = run(
        &loadfleet(),
        &[
            "compare",
            series[0].to_str().unwrap(),
            series[1].to_str().unwrap(),
            "--html",
            page.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(exit.stdout.contains("users by users"), "{}", exit.stdout);
    let rows: Vec<&str> = exit
        .stdout
        .lines()
        .filter(|l| l.contains("p50_ms"))
        .collect();
    assert_eq!(rows.len(), 2, "one p50 row per load:\n{}", exit.stdout);
    assert!(
        rows.iter().all(|r| r.contains("WORSE")),
        "80 ms against 10 ms is worse at every load:\n{}",
        exit.stdout
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("users-1") && html.contains("users-2"));
}

/// A series on a remote fleet: an agent started with `--once` leaves after
/// the first run; the second run's error names it and says why, instead of
/// only "expected 2, 1 attached".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_leaves_a_series_is_named() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = [2, 4]\niterations = 2",
        &[("home", "/")],
    );
    let plan = write_plan(dir.path(), "sweep.toml", &text);
    let out = dir.path().join("series");
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "2",
            "--wait-agents",
            "3s",
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let url = format!("http://{}", ctl.listen_addr());
    // `agent` adds --once: this one leaves after the first run.
    let _once = agent(&url, "us", "fleeting", &[]);
    let stays = Proc::spawn(
        &agent_bin(),
        &[
            "--controller",
            &url,
            "--allow-target",
            "127.0.0.0/8",
            "--name",
            "stays",
            "--region",
            "eu",
            "--max-backoff-s",
            "1",
        ],
    );
    let exit = exited(ctl, Duration::from_secs(60)).await;
    drop(stays);
    assert_ne!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(summary(&out.join("users-2"))["total"]["requests"], 4);
    let line = exit
        .stderr
        .lines()
        .find(|l| l.contains("expected 2 agent(s), 1 attached"))
        .unwrap_or_else(|| panic!("{}", exit.stderr));
    assert!(
        line.contains("not back since the previous run: fleeting (us)") && line.contains("--once"),
        "{line}"
    );
}

/// The numbers read from responses go beside the latency, per load, in
/// series.txt, series.json and series.html.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_shows_the_numbers_read_from_responses_per_load() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = plan_toml(
        &bed.base_url(),
        "users = [1, 2]\niterations = 2",
        &[("page", "/a/123")],
    );
    text.push_str("[[metric]]\nname = \"n\"\nregex = 'GET /a/(\\d+)'\nunit = \"items\"\n");
    let plan = write_plan(dir.path(), "sweep.toml", &text);
    let out = dir.path().join("series");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let table = std::fs::read_to_string(out.join("series.txt")).unwrap();
    println!("{table}");
    assert!(
        table.contains("numbers read from responses, over all steps"),
        "{table}"
    );
    assert!(table.contains("n mean (items)"), "{table}");
    assert_eq!(
        table.matches("123.00").count(),
        2,
        "one mean per load: {table}"
    );
    let series: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("series.json")).unwrap()).unwrap();
    assert_eq!(series["runs"][1]["metric_means"]["n"][0], 123.0);
    let page = std::fs::read_to_string(out.join("series.html")).unwrap();
    assert!(page.contains("<th>n mean (items)</th>"), "the page's table");
    assert!(page.contains("name=\"viewport\""), "laid out for phones");
}

/// A plan with a warm-up phase and a swept test phase: every value runs
/// the warm-up, then the test at that value; the series' rows are the test
/// phase's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_load_of_a_swept_phase_gets_its_warm_up() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[target]\nbase_url = \"{}\"\n\
         [[phase]]\nname = \"warm\"\nscenarios = [\"warm\"]\n[phase.load]\nusers = 1\niterations = 1\n\
         [[phase]]\nname = \"test\"\nscenarios = [\"test\"]\n[phase.load]\nusers = [1, 2]\niterations = 2\n\
         [[scenario]]\nname = \"warm\"\n[[scenario.step]]\npath = \"/warm\"\n\
         [[scenario]]\nname = \"test\"\n[[scenario.step]]\npath = \"/test\"\n",
        bed.base_url()
    );
    let plan = write_plan(dir.path(), "swept.toml", &text);
    let out = dir.path().join("series");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    assert_eq!(bed.stats().served_path("/warm"), 2, "a warm-up per value");
    assert_eq!(bed.stats().served_path("/test"), 2 + 4, "1 x 2 then 2 x 2");
    let series: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("series.json")).unwrap()).unwrap();
    let rows = series["runs"].as_array().unwrap();
    let requests: Vec<u64> = rows
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(
        requests,
        [2, 4],
        "the test phase's figures, not the warm-up's"
    );
    assert_eq!(rows[1]["run"], "users-2/phase-2-test");
    assert!(out.join("users-2/phase-1-warm/summary.json").exists());
    let s = summary(&out.join("users-2/phase-2-test"));
    assert_eq!(s["load"]["users"], 2);
    let phases = std::fs::read_to_string(out.join("users-2/phases.html")).unwrap();
    assert!(phases.contains("name=\"viewport\""), "laid out for phones");
    // Opening the series directory shows every run's report, one click away.
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains("<a href=\"series.html\">"), "{index}");
    for run in [
        "users-1/phase-1-warm",
        "users-1/phase-2-test",
        "users-2/phase-1-warm",
        "users-2/phase-2-test",
    ] {
        assert!(out.join(run).join("report.html").exists(), "{run}");
        assert!(
            index.contains(&format!("<a href=\"{run}/report.html\">")),
            "{run} in {index}"
        );
    }
    assert!(index.contains("Every run's report (4)"), "{index}");
}

/// A warm-up phase, then a phase whose scenarios each run a load of their
/// own (users for one, an arrival rate for the other), with a rule about
/// one scenario: each phase's run holds only its own scenarios.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_runs_a_load_per_scenario() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[target]\nbase_url = \"{}\"\n\
         [thresholds]\nscenarios = {{ api = [\"errors < 1%\"], warm = [\"errors < 1%\"] }}\n\
         [[phase]]\nname = \"warm\"\nscenarios = [\"warm\"]\n[phase.load]\nusers = 1\niterations = 1\n\
         [[phase]]\nname = \"test\"\n\
         [phase.loads.browse]\nusers = 2\niterations = 3\n\
         [phase.loads.api]\nrate = 10\nduration = \"1s\"\nstart = \"500ms\"\nmax_users = 4\n\
         [[scenario]]\nname = \"warm\"\n[[scenario.step]]\npath = \"/warm\"\n\
         [[scenario]]\nname = \"browse\"\n[[scenario.step]]\npath = \"/browse\"\n\
         [[scenario]]\nname = \"api\"\n[[scenario.step]]\npath = \"/api\"\n",
        bed.base_url()
    );
    let plan = write_plan(dir.path(), "phased.toml", &text);
    let out = dir.path().join("phases");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    let stats = bed.stats();
    let served = |p: &str| stats.served_path(p);
    println!(
        "warm {}, browse {}, api {}",
        served("/warm"),
        served("/browse"),
        served("/api")
    );
    assert_eq!(served("/warm"), 1);
    assert_eq!(served("/browse"), 6, "2 users x 3 iterations");
    assert_eq!(served("/api"), 10, "10/s for 1 s");
    let test = summary(&out.join("phase-2-test"));
    assert_eq!(test["load"]["model"], "mixed");
    let loads = test["load"]["scenario_loads"].as_array().unwrap();
    let names: Vec<&str> = loads
        .iter()
        .map(|l| l["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["browse", "api"], "in the plan's order");
    assert_eq!(test["requests"]["GET /api"]["requests"], 10);
    assert!(
        test["requests"].get("GET /warm").is_none(),
        "{}",
        test["requests"]
    );
    // The rule about the warm-up's scenario is the warm-up phase's only.
    let scopes: Vec<&str> = test["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["scenario api"]);
    let warm = summary(&out.join("phase-1-warm"));
    assert_eq!(warm["thresholds"][0]["scope"], "scenario warm");
    assert_eq!(warm["thresholds"][0]["observed"], 0.0);
}
