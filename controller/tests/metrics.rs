//! Metrics read from responses, end to end: the Moodle journey of
//! examples/moodle (which reads the site's performance footer) against the
//! test target's site with its cache in a real Redis server or in files, and
//! merged across two agents. The numbers are checked against what the site
//! counted and against what Redis itself says it served.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;
use loadfleet_testbed::moodle::{MoodleConfig, PagePerf, StoreSpec};

/// A Redis server of the test's own on a free loopback port, killed on drop.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { port, child }
    }

    /// `redis-cli --raw ARGS`: Redis's own client, so what is checked is
    /// what the server holds, not what the test target believes.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A field of `INFO stats`.
    fn stat(&self, field: &str) -> u64 {
        self.cli(&["info", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO stats has no {field}"))
    }

    /// Calls of one command (`INFO commandstats`).
    fn calls(&self, command: &str) -> u64 {
        self.cli(&["info", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bed_with(store: StoreSpec) -> Config {
    Config {
        moodle: Some(MoodleConfig {
            store,
            ..MoodleConfig::default()
        }),
        ..Config::default()
    }
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The site's footer totals over every page, and the number of pages.
fn footer_totals(bed: &loadfleet_testbed::Testbed) -> (u64, PagePerf) {
    let mut pages = 0;
    let mut t = PagePerf::default();
    for (_, (n, p)) in bed.moodle().unwrap().footers() {
        pages += n;
        t.add(&p);
    }
    (pages, t)
}

/// Every metric of the run, summed by loadfleet, against what the site's
/// footers said: the same pages, the same sums.
fn assert_metrics_match_the_footers(s: &serde_json::Value, bed: &loadfleet_testbed::Testbed) {
    let (pages, t) = footer_totals(bed);
    let m = &s["total"]["metrics"];
    for (name, site) in [
        ("db_reads", t.db_reads),
        ("db_writes", t.db_writes),
        ("cache_hits", t.cache_hits),
        ("cache_misses", t.cache_misses),
        ("cache_sets", t.cache_sets),
        ("app_hits", t.app_hits),
        ("app_misses", t.app_misses),
        ("time_used", t.time_used_us),
        ("db_time", t.db_time_us),
    ] {
        println!(
            "{name}: loadfleet count {} missing {} sum {}; the site's footers: {pages} pages, sum {site}",
            m[name]["count"], m[name]["missing"], m[name]["sum"]
        );
        assert_eq!(u(&m[name]["count"]), pages, "{name}: one sample per page");
        assert_eq!(u(&m[name]["missing"]), 0, "{name}: every page has a footer");
        assert_eq!(u(&m[name]["sum"]), site, "{name}: the footers' sum");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_footer_numbers_agree_with_the_site_and_with_redis() {
    let redis = Redis::start();
    let bed = testbed(bed_with(StoreSpec::Redis(format!(
        "127.0.0.1:{}",
        redis.port
    ))))
    .await;
    // The store's check at start (a PING) is the only command so far.
    let (hits0, misses0, sets0) = (
        redis.stat("keyspace_hits"),
        redis.stat("keyspace_misses"),
        redis.calls("set"),
    );
    let dir = tempfile::tempdir().unwrap();
    let plan = moodle_plan(dir.path(), &bed.base_url(), 6, |t| t);
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(u(&s["total"]["errors"]), 0, "{}", s["total"]);
    assert_eq!(u(&s["total"]["requests"]), 6 * 14);
    let site = bed.moodle().unwrap();
    assert_eq!(site.store_errors(), 0);
    assert_eq!((site.replies(), site.logouts()), (6, 6));

    // What loadfleet read from the pages is what the pages said.
    assert_metrics_match_the_footers(&s, &bed);
    // The report, as headless Chromium renders it, shows them per step and
    // each metric over time.
    let dom = dump_dom(&out.join("report.html"));
    assert!(
        dom.contains("Numbers read from responses"),
        "no metrics section"
    );
    for needle in [
        "<td>Send the reply</td><td style=\"text-align:left\">cache_misses</td>",
        "db_reads: mean per interval",
    ] {
        assert!(dom.contains(needle), "the report lacks {needle}");
    }
    // The step that posts a reply ends on the discussion page, which the
    // reply invalidated: it misses (unless another user's page cached it
    // again in between), and it reads the site's data exactly when it does.
    let reply = &s["requests"]["Send the reply"]["metrics"];
    println!("Send the reply: {reply}");
    let misses = u(&reply["app_misses"]["sum"]);
    assert!((1..=6).contains(&misses), "{misses} misses");
    assert_eq!(u(&reply["db_reads"]["sum"]), misses);
    // Each page does a Moodle page's application-cache work through the
    // store: 124 keys every page reads, and the page's own.
    let per_page = |m: &str| {
        f64::from(u32::try_from(u(&s["total"]["metrics"][m]["sum"])).unwrap())
            / u(&s["total"]["metrics"][m]["count"]) as f64
    };
    let app_reads = per_page("app_hits") + per_page("app_misses");
    let all_reads = per_page("cache_hits") + per_page("cache_misses");
    println!("per page: {app_reads:.1} application-store reads, {all_reads:.1} over all caches");
    assert!((124.0..=128.0).contains(&app_reads), "{app_reads}");
    assert!((700.0..=1_900.0).contains(&all_reads), "{all_reads}");

    // What the site counted over every request (redirects included) is
    // what Redis says it served.
    let all = site.all();
    let (hits, misses, sets) = (
        redis.stat("keyspace_hits") - hits0,
        redis.stat("keyspace_misses") - misses0,
        redis.calls("set") - sets0,
    );
    println!(
        "the site counted hits/misses/sets {}/{}/{}; Redis served {hits}/{misses}/{sets}",
        all.store_hits, all.store_misses, all.store_sets
    );
    assert_eq!(
        (all.store_hits, all.store_misses, all.store_sets),
        (hits, misses, sets)
    );
    assert!(
        hits > 6 * 10,
        "sessions are read on every page: {hits} hits"
    );

    // The keys the site's cache semantics leave: the course's module info,
    // the page, the forum's discussion list and the participants, cached
    // once and kept; the discussion re-cached after the last reply; and
    // sessions, none of which names a user, since every user logged out.
    let keys = redis.cli(&["keys", "loadfleet-testbed:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    for k in [
        "course/2/modinfo",
        "page/3",
        "forum/4/discussions",
        "course/2/participants",
        "site/frontpage",
        "discussion/1",
    ] {
        let key = format!("loadfleet-testbed:{k}");
        assert!(keys.contains(&key.as_str()), "{key} in {keys:?}");
    }
    assert_eq!(
        redis
            .cli(&["get", "loadfleet-testbed:course/2/modinfo"])
            .trim(),
        "page=3;forum=4"
    );
    let sessions: Vec<&&str> = keys
        .iter()
        .filter(|k| k.starts_with("loadfleet-testbed:session/"))
        .collect();
    assert!(!sessions.is_empty(), "sessions live in Redis: {keys:?}");
    for k in sessions {
        let v = redis.cli(&["get", k]);
        let user = v.lines().next().unwrap_or("");
        assert_eq!(user, "", "{k} still names a user after logout: {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_store_keeps_the_cache_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bed = testbed(bed_with(StoreSpec::File(cache.clone()))).await;
    let plan = moodle_plan(dir.path(), &bed.base_url(), 3, |t| t);
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(u(&s["total"]["errors"]), 0, "{}", s["total"]);
    assert_eq!(bed.moodle().unwrap().store_errors(), 0);
    assert_metrics_match_the_footers(&s, &bed);
    let modinfo = std::fs::read_to_string(cache.join("course%2%modinfo")).unwrap();
    assert_eq!(modinfo, "page=3;forum=4");
    let sessions = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("session%") && !n.ends_with(".lock") && !n.ends_with(".tmp")
        })
        .count();
    println!("{sessions} session files in {}", cache.display());
    assert!(sessions >= 3, "one session file per user at least");
}

/// Two agents (real processes) each read the time each page says it took;
/// the controller's merged histogram of that metric, per step and overall,
/// is the histogram of every value the site printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_merged_across_two_agents_equals_one_histogram_of_all_samples() {
    let bed = testbed(bed_with(StoreSpec::Memory)).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = moodle_plan(dir.path(), &bed.base_url(), 8, |t| t);
    // The same time in units of 10 ns: values in the tens of thousands,
    // where the histogram's buckets are wider than one unit, so equal
    // percentiles mean equal buckets, not just equal small integers.
    let mut text = std::fs::read_to_string(&plan).unwrap();
    text = text.replacen(
        "[[scenario]]",
        "[[metric]]\nname = \"time_fine\"\nregex = 'class=\"timeused[^\"]*\">([0-9.]+) secs'\nscale = 100000000\n\n[[scenario]]",
        1,
    );
    std::fs::write(&plan, text).unwrap();
    let out = dir.path().join("out");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let a1 = agent(&url, "eu", "a1", &[]);
    let a2 = agent(&url, "us", "a2", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    for a in [a1, a2] {
        assert_eq!(exited(a, Duration::from_secs(20)).await.code, 0);
    }
    let s = summary(&out);
    assert_eq!(u(&s["total"]["errors"]), 0, "{}", s["total"]);
    for agent in ["a1", "a2"] {
        assert!(
            u(&s["agents"][agent]["requests"]) > 0,
            "{agent} sent requests: {}",
            s["agents"][agent]
        );
    }
    let times = bed.moodle().unwrap().footer_times();
    let histogram = |path: Option<&str>, factor: u64| {
        let mut h = loadfleet_agent::recorder::new_histogram();
        for (p, us) in &times {
            if path.is_none_or(|want| p == want) {
                h.record(*us * factor).unwrap();
            }
        }
        h
    };
    let page = Some("/mod/page/view.php");
    let step = &s["requests"]["View a page activity"]["metrics"];
    for (scope, path, factor, figures) in [
        (
            "all steps, µs",
            None,
            1,
            &s["total"]["metrics"]["time_used"],
        ),
        (
            "all steps, 10 ns",
            None,
            100,
            &s["total"]["metrics"]["time_fine"],
        ),
        ("View a page activity, µs", page, 1, &step["time_used"]),
        ("View a page activity, 10 ns", page, 100, &step["time_fine"]),
    ] {
        let h = histogram(path, factor);
        let sum: u64 = times
            .iter()
            .filter(|(p, _)| path.is_none_or(|want| p == want))
            .map(|(_, us)| us * factor)
            .sum();
        println!(
            "{scope}: merged {figures}; the site's own {} values: p50 {} p95 {} p99 {} max {} sum {sum}",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.max()
        );
        assert_eq!(u(&figures["count"]), h.len(), "{scope}");
        assert_eq!(u(&figures["sum"]), sum, "{scope}");
        assert_eq!(u(&figures["min"]), h.min(), "{scope}");
        assert_eq!(u(&figures["max"]), h.max(), "{scope}");
        for (q, key) in [(0.5, "p50"), (0.9, "p90"), (0.95, "p95"), (0.99, "p99")] {
            assert_eq!(u(&figures[key]), h.value_at_quantile(q), "{scope} {key}");
        }
    }
}

/// A step none of whose responses can carry a metric (a redirect not
/// followed: no page) is said once, not as MISSING for every metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_never_carries_the_metrics_is_said_once() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[target]\nbase_url = \"{}\"\n[load]\nusers = 1\niterations = 3\n\
         [[metric]]\nname = \"said\"\nregex = 'GET /a/(\\d+)'\n\
         [[metric]]\nname = \"end\"\nregex = '(\\d+)</p>'\n\
         [[scenario]]\nname = \"s\"\n\
         [[scenario.step]]\nname = \"page\"\npath = \"/a/123\"\n\
         [[scenario.step]]\nname = \"post\"\npath = \"/redirect/1\"\nfollow_redirects = false\n",
        bed.base_url()
    );
    let plan = write_plan(dir.path(), "m.toml", &text);
    let out = dir.path().join("out");
    let exit = exited(
        Proc::spawn(
            &loadfleet(),
            &[
                "run",
                plan.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        ),
        Duration::from_secs(60),
    )
    .await;
    println!("{}", exit.stdout);
    assert!(
        exit.stdout
            .lines()
            .any(|l| l.contains("│ post")
                && l.contains("none of its 3 responses carried any of them")),
        "{}",
        exit.stdout
    );
    let post_rows = exit.stdout.lines().filter(|l| l.contains("│ post")).count();
    assert_eq!(
        post_rows, 2,
        "one row in the step table, one in the metrics table"
    );
    // The page carries both; over all steps the post's 3 responses are
    // still counted as missing.
    assert!(
        exit.stdout.contains("│ page      ┆ said"),
        "{}",
        exit.stdout
    );
    let all = exit
        .stdout
        .lines()
        .find(|l| l.contains("│ all steps ┆ said"))
        .unwrap();
    assert!(all.contains("3 MISSING"), "{all}");
}

/// The example plan's footer metrics, read from a page in the structure of
/// a real Moodle 4.5 front page's footer (tests/fixtures, with the counts
/// measured on a real site), served by a real HTTP server (Python's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plans_metrics_read_a_moodle_45_footer() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let port = free_port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(&fixtures)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/moodle/plan.toml"),
    )
    .unwrap();
    let metrics =
        &example[example.find("[[metric]]").unwrap()..example.find("[[scenario]]").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "footer.toml",
        &format!(
            "{metrics}\n{}",
            plan_toml(
                &format!("http://127.0.0.1:{port}"),
                "users = 1\niterations = 2",
                &[("front page", "/moodle45-frontpage.html")],
            )
        ),
    );
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    let m = &s["requests"]["front page"]["metrics"];
    for (name, per_page) in [
        ("time_used", 152_341),
        ("db_reads", 41),
        ("db_writes", 1),
        ("db_time", 24_350),
        ("cache_hits", 756),
        ("cache_misses", 110),
        ("cache_sets", 10),
        ("app_hits", 123),
        ("app_misses", 1),
    ] {
        println!("{name}: {}", m[name]);
        assert_eq!(u(&m[name]["count"]), 2, "{name}: {}", m[name]);
        assert_eq!(u(&m[name]["missing"]), 0, "{name}");
        assert_eq!(u(&m[name]["sum"]), 2 * per_page, "{name}: {}", m[name]);
    }
}
