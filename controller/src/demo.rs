//! `loadfleet demo`: the question loadfleet began with, on one machine and
//! with no files: the Moodle journey at 20, 30 and 40 users against the
//! test target's Moodle-like site with its application cache in real
//! stores, files on disk with locking (as Moodle's file store), then a real
//! Redis server when `redis-server` is installed. Every page's performance
//! footer is read as metrics, so the comparison shows cache misses and DB
//! reads per step beside latency. Without Redis it says so and runs the
//! file store alone. Built with the default `demo` feature (it links the
//! test target).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use loadfleet_agent::engine::Timing;
use tokio_util::sync::CancellationToken;

use crate::console::say;
use crate::exit::Exit;
use crate::fleet::LocalAgent;
use crate::plan;
use crate::progress::ProgressMode;
use crate::runner::RunSettings;
use crate::series::{Series, SeriesError};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Demo directory (default: runs/<UTC timestamp>-demo/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The original 30 s ramp-up and 5 s cool-down (about 3 minutes in all)
    /// instead of 3 s and 1 s (about a minute).
    #[arg(long)]
    pub full: bool,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The Moodle journey of examples/moodle, built in so the demo needs no files.
pub const MOODLE_PLAN: &str = include_str!("../../examples/moodle/plan.toml");
/// Its accounts (the test target accepts `pw-` + username).
pub const MOODLE_USERS: &str = include_str!("../../examples/moodle/users.csv");

/// The demo's plan: the Moodle journey aimed at `base_url`; `quick`
/// compresses the 30 s ramp-up to 3 s and the cool-down to 1 s.
pub fn demo_plan(base_url: &str, quick: bool) -> String {
    let text = MOODLE_PLAN.replace("http://127.0.0.1:8080", base_url);
    if quick {
        text.replace("ramp_up = \"30s\"", "ramp_up = \"3s\"")
            .replace("cooldown = \"5s\"", "cooldown = \"1s\"")
    } else {
        text
    }
}

/// The original question's shape, on one machine: the Moodle journey at
/// 20, 30 and 40 users against the test target with each of its two cache
/// models; two agents in two regions each time.
pub async fn demo(
    args: DemoArgs,
    interrupt: CancellationToken,
    hard_interrupt: CancellationToken,
) -> Exit {
    use loadfleet_testbed::moodle::{MoodleConfig, StoreSpec};
    let out = args.out.unwrap_or_else(|| {
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_else(|_| "run".into());
        PathBuf::from("runs").join(format!("{stamp}-demo"))
    });
    let settings = RunSettings {
        token: None,
        tls: None,
        lease: Duration::from_secs(5),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        expect_agents: 0,
        expect_observers: 0,
        host_bounds: Default::default(),
        local_agents: ["a", "b"]
            .iter()
            .map(|r| LocalAgent {
                name: format!("agent-{r}"),
                region: format!("region-{r}"),
                workers: 1,
                timing: Timing::default(),
            })
            .collect(),
        wait_for_agents: Duration::from_secs(10),
        progress: if args.quiet {
            ProgressMode::Off
        } else {
            ProgressMode::Auto
        },
        interrupt,
        hard_interrupt,
        audit_log: None,
        operator: None,
        live: None,
    };
    // The file store always; Redis when it is installed, in a server of
    // its own on a free loopback port, stopped with the demo.
    let mut redis = None;
    let mut stores = vec![(
        "file-store",
        "files on disk with locking",
        StoreSpec::File(out.join("file-store").join("cache")),
    )];
    match RedisServer::start().await {
        Ok(Some(server)) => {
            stores.push((
                "redis",
                "a Redis server",
                StoreSpec::Redis(server.addr.clone()),
            ));
            redis = Some(server);
        }
        Ok(None) => say(
            "demo: redis-server is not installed, so this demo runs the file store only; \
             to compare it with Redis: sudo apt-get install redis-server (then run the demo again)",
        ),
        Err(e) => say(&format!(
            "demo: cannot start redis-server ({e}), so this demo runs the file store only"
        )),
    }
    let mut worst = Exit::Ok;
    let mut series = Vec::new();
    for (label, what, store) in stores {
        let config = loadfleet_testbed::Config {
            moodle: Some(MoodleConfig {
                store,
                ..MoodleConfig::default()
            }),
            ..loadfleet_testbed::Config::default()
        };
        let bed =
            match loadfleet_testbed::Testbed::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: cannot start the demo target: {e}");
                    return Exit::Fleet;
                }
            };
        let dir = out.join(label);
        let plan_file = dir.join("plan.toml");
        if let Err(e) = std::fs::create_dir_all(&dir)
            .and_then(|()| crate::atomic::write(&plan_file, demo_plan(&bed.base_url(), !args.full)))
            .and_then(|()| crate::atomic::write(dir.join("users.csv"), MOODLE_USERS))
        {
            eprintln!("error: cannot write to {}: {e}", dir.display());
            return Exit::Usage;
        }
        let plan = match plan::load(&plan_file) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Usage;
            }
        };
        let Some(sweep) = plan.sweep.clone() else {
            eprintln!("error: the demo plan has no sweep");
            return Exit::Usage;
        };
        say(&format!(
            "demo: Moodle journey, application cache in {what}: test target on {}; \
             two agents (regions region-a, region-b) dial the controller over gRPC",
            bed.base_url()
        ));
        let outcome = crate::series::run_series(
            &settings,
            &plan,
            &sweep,
            Some(dir.join("series")),
            &plan_file,
        )
        .await;
        let kept = match &outcome {
            Ok(s) => Some(s.clone()),
            Err(SeriesError::Write { series, .. }) => Some(series.as_ref().clone()),
            Err(SeriesError::CreateDir { .. }) => None,
        };
        crate::series::say_outcome(&outcome);
        worst = worst.max(outcome.map_or_else(|e| e.exit(), |s| s.exit()));
        bed.stop().await;
        series.push((label, kept));
        if settings.interrupt.is_cancelled() {
            break;
        }
    }
    drop(redis);
    let mut table = demo_table(&series);
    if let Some(steps) = step_table(&series) {
        table.push_str("\n\n");
        table.push_str(&steps);
    }
    if series.len() < 2 {
        table.push_str(
            "\n\nRedis was not run (redis-server is not installed): the file store alone is shown.",
        );
    }
    say(&table);
    let _ = crate::atomic::write(out.join("demo.txt"), format!("{table}\n"));
    let compare = if series.len() >= 2 {
        format!(
            "\n  compare the two stores load by load: loadfleet compare {}/file-store/series {}/redis/series\n  \
             (with loadfleet on your PATH: cargo install --locked --path controller; or cargo run --locked --bin loadfleet -- compare ...)",
            out.display(),
            out.display()
        )
    } else {
        String::new()
    };
    say(&format!(
        "demo directory: {}\n  one series per cache store, one run directory per user count \
         (summary.json, latency.hlog, report.html){compare}",
        out.display(),
    ));
    worst
}

/// A Redis server of the demo's own, on a free loopback port; stopped
/// (killed) when dropped.
struct RedisServer {
    addr: String,
    child: std::process::Child,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    /// `Ok(None)` when `redis-server` is not installed.
    async fn start() -> std::io::Result<Option<RedisServer>> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let addr = format!("127.0.0.1:{port}");
        // Wait until it accepts connections (a few milliseconds).
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(Some(RedisServer { addr, child }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("redis-server did not listen on {addr} within 5 s"),
        ))
    }
}

/// Per step, at the largest user count: p50 latency, DB reads and cache
/// misses per page (means of what the pages' performance footers said),
/// one column group per store.
fn step_table(series: &[(&str, Option<Series>)]) -> Option<String> {
    let runs: Vec<(&str, crate::summary::Summary)> = series
        .iter()
        .filter_map(|(label, s)| {
            let s = s.as_ref()?;
            let last = s.runs.last()?;
            let summary = crate::summary::read_summary(&s.dir.join(&last.run)).ok()?;
            Some((*label, summary))
        })
        .collect();
    let (_, first) = runs.first()?;
    let users = first.load.users.unwrap_or_default();
    let mut t = crate::console::new_table();
    let mut header = vec!["step".to_string()];
    for (label, _) in &runs {
        for col in ["p50 ms", "DB reads", "cache misses"] {
            header.push(format!("{label} {col}"));
        }
    }
    t.set_header(header);
    let mean = |e: &crate::summary::Entry, m: &str| {
        e.metrics
            .get(m)
            .and_then(|m| m.stats.mean)
            .map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
    };
    for (step, _) in first.steps() {
        let mut row = vec![step.clone()];
        for (_, s) in &runs {
            let e = s.requests.get(step);
            row.push(
                e.and_then(|e| e.latency_ms)
                    .map_or_else(|| "-".to_string(), |l| format!("{:.2}", l.p50)),
            );
            row.push(e.map_or_else(|| "-".to_string(), |e| mean(e, "db_reads")));
            row.push(e.map_or_else(|| "-".to_string(), |e| mean(e, "cache_misses")));
        }
        t.add_row(row);
    }
    Some(format!(
        "By step at {users} users: p50 latency, and the DB reads and cache misses per page that the site's \
         performance footer reported (means over every page of the step):\n{t}"
    ))
}

/// Users against p50, p95 and errors, one column group per cache store.
fn demo_table(series: &[(&str, Option<Series>)]) -> String {
    let mut t = crate::console::new_table();
    let mut header = vec!["users".to_string()];
    for (label, _) in series {
        for col in ["p50 ms", "p95 ms", "errors"] {
            header.push(format!("{label} {col}"));
        }
    }
    t.set_header(header);
    let rows = series
        .first()
        .and_then(|(_, s)| s.as_ref())
        .map_or(0, |s| s.runs.len());
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    for i in 0..rows {
        let mut row = Vec::new();
        for (k, (_, s)) in series.iter().enumerate() {
            let r = s.as_ref().and_then(|s| s.runs.get(i));
            if k == 0 {
                row.push(r.map_or("-".into(), |r| r.value.to_string()));
            }
            row.push(ms(r.and_then(|r| r.p50_ms)));
            row.push(ms(r.and_then(|r| r.p95_ms)));
            row.push(r.map_or("-".into(), |r| r.errors.to_string()));
        }
        t.add_row(row);
    }
    format!(
        "Moodle journey against the test target's Moodle-like site, its application cache in each real store (latency of all steps):\n{t}"
    )
}
