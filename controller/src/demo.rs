//! `loadfleet demo`: the shape of the question loadfleet began with, on one
//! machine and with no files: the Moodle journey at 20, 30 and 40 users
//! against the test target with two latency *models* of its application
//! cache, one contended lock (how a cache on shared storage with locking
//! behaves) and a flat per-request cost (how a fast in-memory store
//! behaves). They are models in the test target, not real cache stores, and
//! are named so. Built with the default `demo` feature (it links the test
//! target).

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
    use loadfleet_testbed::moodle::{LatencyModel, MoodleConfig};
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
        local_agents: ["a", "b"]
            .iter()
            .map(|r| LocalAgent {
                name: format!("agent-{r}"),
                region: format!("region-{r}"),
                workers: 1,
                timing: Timing::Precise,
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
    // Quick mode compresses the ramp 10 times; the cache costs stretch by
    // the same factor in full mode, so both tell the same story.
    let scale = if args.full { 10 } else { 1 };
    let stores = [
        ("contended-lock", LatencyModel::contended_lock_scaled(scale)),
        ("flat-cost", LatencyModel::flat_cost_scaled(scale)),
    ];
    let mut worst = Exit::Ok;
    let mut series = Vec::new();
    for (label, cache) in stores {
        let config = loadfleet_testbed::Config {
            moodle: Some(MoodleConfig {
                latency_model: cache,
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
            .and_then(|()| {
                crate::output::atomic::write(&plan_file, demo_plan(&bed.base_url(), !args.full))
            })
            .and_then(|()| crate::output::atomic::write(dir.join("users.csv"), MOODLE_USERS))
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
            "demo: Moodle journey, application cache on {label}: test target on {}; \
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
    let table = demo_table(&series);
    say(&table);
    let _ = crate::output::atomic::write(out.join("demo.txt"), format!("{table}\n"));
    say(&format!(
        "demo directory: {}\n  one series per cache model, one run directory per user count \
         (summary.json, latency.hlog, report.html)\n  compare the two cache models load by load: loadfleet compare {}/contended-lock/series {}/flat-cost/series\n  \
         (with loadfleet on your PATH: cargo install --locked --path controller; or cargo run --locked --bin loadfleet -- compare ...)",
        out.display(),
        out.display(),
        out.display()
    ));
    worst
}

/// Users against p50, p95 and errors, one column group per cache store.
fn demo_table(series: &[(&str, Option<Series>)]) -> String {
    let mut t = crate::output::table::new_table();
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
        "Moodle journey against the test target's two latency models of an application cache, one contended lock versus a flat per-request cost (latency of all steps; models, not real cache stores):\n{t}"
    )
}
