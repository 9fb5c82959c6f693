//! `loadfleet demo`: the question loadfleet began with, on one machine and
//! with no files: is Moodle's application cache better in files or in
//! Redis at 20, 30 and 40 users? The Moodle journey of examples/moodle runs
//! against the test target's Moodle-like site, whose pages do a Moodle
//! page's cache work through the real store (files on disk with locking,
//! or a real Redis server of the demo's own), as an experiment: each store
//! several times at each load, interleaved, each run after a restart of the
//! site with its cache purged and a warm-up; the last lines give the
//! verdict per load with its interval. Built with the default `demo`
//! feature (it links the test target).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use loadfleet_agent::engine::Timing;
use tokio_util::sync::CancellationToken;

use crate::console::say;
use crate::exit::Exit;
use crate::experiment::{Arm, Design, Order};
use crate::fleet::LocalAgent;
use crate::plan;
use crate::progress::ProgressMode;
use crate::runner::RunSettings;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Demo directory (default: runs/<UTC timestamp>-demo/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The seed's 30 s ramp-up, a 10 s hold and a 5 s warm-up before each
    /// run (about 15 minutes) instead of a 2 s ramp-up, a 6 s hold and a
    /// 2 s warm-up (about 3 minutes). Either way 20, 30 and 40 users run at
    /// once, each store 3 times at each load.
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

/// The demo's plan: the Moodle journey aimed at `base_url`, at the seed's
/// concurrency: 20, 30 and 40 users ramped up over `ramp` and then held
/// together for `hold`, each reading each page for 0.5 to 1 s (the seed's
/// pages took seconds, so its users overlapped; on the fast test site a
/// single pass would end before the next user started). Shorter pauses
/// saturated the demo's generator, which shares the machine with the site,
/// in about a sixth of the runs on a busy 2-core machine.
pub fn demo_plan(base_url: &str, ramp: &str, hold: &str) -> String {
    MOODLE_PLAN
        .replace("http://127.0.0.1:8080", base_url)
        .replace(
            "ramp_up = \"30s\"\niterations = 1\ncooldown = \"5s\"",
            &format!("ramp_up = \"{ramp}\"\nduration = \"{hold}\""),
        )
        .replace(
            "on_error = \"next_iteration\"",
            "on_error = \"next_iteration\"\nthink = \"uniform(500ms, 1s)\"",
        )
}

/// The stores the demo compares: name, in words, and the site's store.
fn stores(
    out: &std::path::Path,
    redis: &str,
) -> Vec<(
    &'static str,
    &'static str,
    loadfleet_testbed::moodle::StoreSpec,
)> {
    use loadfleet_testbed::moodle::StoreSpec;
    vec![
        (
            "file",
            "files on disk with locking (Moodle's file store)",
            StoreSpec::File(out.join("file-store-cache")),
        ),
        (
            "redis",
            "a Redis server",
            StoreSpec::Redis(redis.to_string()),
        ),
    ]
}

/// The original question, on one machine: the Moodle journey at 20, 30 and
/// 40 users against the test target with its application cache in files
/// and in Redis, as an experiment (interleaved, repeated runs of each
/// store, each after a restart of the site with its cache purged and a
/// warm-up), ending with a verdict per load and how sure it is.
pub async fn demo(
    args: DemoArgs,
    interrupt: CancellationToken,
    hard_interrupt: CancellationToken,
) -> Exit {
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
    let redis = match RedisServer::start().await {
        Ok(Some(server)) => server,
        Ok(None) => {
            eprintln!(
                "error: the demo compares the file store with Redis, and redis-server is not installed: \
                 run `sudo apt-get install redis-server` (or `bash scripts/demo.sh` as root, which installs it), then again"
            );
            return Exit::Usage;
        }
        Err(e) => {
            eprintln!("error: cannot start redis-server for the demo: {e}");
            return Exit::Fleet;
        }
    };
    let (ramp, hold, warm_up, runs) = if args.full {
        ("30s", "10s", Duration::from_secs(5), 3)
    } else {
        ("2s", "6s", Duration::from_secs(2), 3)
    };
    // The site's address stays the same across restarts: the plan names it.
    let addr = match std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: no free port on 127.0.0.1: {e}");
            return Exit::Fleet;
        }
    };
    let plan_file = out.join("plan.toml");
    if let Err(e) = std::fs::create_dir_all(&out)
        .and_then(|()| {
            crate::atomic::write(&plan_file, demo_plan(&format!("http://{addr}"), ramp, hold))
        })
        .and_then(|()| crate::atomic::write(out.join("users.csv"), MOODLE_USERS))
    {
        eprintln!("error: cannot write to {}: {e}", out.display());
        return Exit::Usage;
    }
    let plan = match plan::load(&plan_file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let stores = stores(&out, &redis.addr);
    let design = Design {
        arms: stores
            .iter()
            .map(|(name, what, _)| Arm {
                name: (*name).to_string(),
                setup: format!(
                    "(built in) restart the test site on {addr} with its application cache in {what}, purged"
                ),
            })
            .collect(),
        runs,
        warm_up: Some(warm_up),
        settle: Duration::ZERO,
        setup_timeout: Duration::from_secs(60),
        order: Order::Balanced,
        margin_pct: 5.0,
        keep_flagged: false,
    };
    say(&format!(
        "demo: is Moodle's application cache better in files or in Redis at 20, 30 and 40 users? \
         The Moodle journey (examples/moodle) against the test target's Moodle-like site on {addr}, \
         whose every page does a Moodle page's cache work through the real store; two agents \
         (regions region-a, region-b) dial the controller over gRPC. Each store runs {runs} times \
         at each load, interleaved, each run after a restart of the site with its cache purged \
         and a {}-second warm-up.",
        warm_up.as_secs()
    ));
    let site: std::sync::Arc<tokio::sync::Mutex<Option<loadfleet_testbed::Testbed>>> =
        Default::default();
    let setup = {
        let site = site.clone();
        let stores = stores.clone();
        let redis_addr = redis.addr.clone();
        move |arm: usize| -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, String>> + Send>,
        > {
            let site = site.clone();
            let (name, what, store) = stores[arm].clone();
            let redis_addr = redis_addr.clone();
            Box::pin(async move { restart_site(&site, addr, name, what, store, &redis_addr).await })
        }
    };
    let outcome = crate::experiment::run_experiment_with(
        &settings,
        &plan,
        &design,
        Some(out.join("experiment")),
        &plan_file,
        Some(&setup),
    )
    .await;
    if let Some(bed) = site.lock().await.take() {
        bed.stop().await;
    }
    drop(redis);
    let ex = match outcome {
        Ok(ex) => ex,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Fleet;
        }
    };
    let text = format!("{}\n{}", crate::experiment::render(&ex), answer(&ex));
    say(&text);
    let _ = crate::atomic::write(out.join("demo.txt"), format!("{text}\n"));
    if let Err(e) = crate::output::index::write(
        &out,
        "loadfleet demo: Redis or files as Moodle's application cache",
        "experiment/experiment.html",
    ) {
        eprintln!("warning: index.html was not written: {e}");
    }
    say(&format!(
        "demo directory: {}\n  index.html links experiment/experiment.html, which answers first, and every run's report (under experiment/runs/)",
        out.display(),
    ));
    ex.exit()
}

/// Stops the site, purges the store the arm uses, and starts the site again
/// on `addr` with it.
async fn restart_site(
    site: &tokio::sync::Mutex<Option<loadfleet_testbed::Testbed>>,
    addr: SocketAddr,
    name: &str,
    what: &str,
    store: loadfleet_testbed::moodle::StoreSpec,
    redis_addr: &str,
) -> Result<String, String> {
    use loadfleet_testbed::moodle::{MoodleConfig, StoreSpec};
    let mut held = site.lock().await;
    if let Some(bed) = held.take() {
        bed.stop().await;
    }
    match &store {
        StoreSpec::File(dir) => {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .map_err(|e| format!("cannot purge {}: {e}", dir.display()))?;
            }
        }
        StoreSpec::Redis(_) => flush_redis(redis_addr).await?,
        StoreSpec::Memory => {}
    }
    let config = loadfleet_testbed::Config {
        moodle: Some(MoodleConfig {
            store,
            ..MoodleConfig::default()
        }),
        ..loadfleet_testbed::Config::default()
    };
    // The old listener has just closed; the port may take a moment to free.
    let mut last = String::new();
    for _ in 0..50 {
        match loadfleet_testbed::Testbed::start(addr, config.clone()).await {
            Ok(bed) => {
                *held = Some(bed);
                return Ok(format!(
                    "store {name}: restarted the test site on {addr} with its application cache in {what}, purged"
                ));
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("cannot start the test site on {addr}: {last}"))
}

/// `FLUSHALL` on the demo's own Redis server.
async fn flush_redis(addr: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach Redis at {addr}: {e}"))?;
    s.write_all(b"FLUSHALL\r\n")
        .await
        .map_err(|e| format!("Redis at {addr}: {e}"))?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .map_err(|_| format!("Redis at {addr} did not answer FLUSHALL in 5 s"))?
        .map_err(|e| format!("Redis at {addr}: {e}"))?;
    if buf[..n].starts_with(b"+OK") {
        Ok(())
    } else {
        Err(format!(
            "Redis at {addr} answered FLUSHALL with {:?}",
            String::from_utf8_lossy(&buf[..n])
        ))
    }
}

/// The demo's last lines: per load, the verdict on the 95th percentile
/// and on the server's own time per page, in words with their intervals,
/// and what the pages' footers said each store did.
/// Each arm's mean over its counted runs ("file 125.2, redis 125.2"), or
/// that none was counted (all its runs left out): never a made-up number.
fn arm_means(arms: &std::collections::BTreeMap<String, Vec<Option<f64>>>) -> String {
    arms.iter()
        .map(|(arm, v)| {
            let vals: Vec<f64> = v.iter().flatten().copied().collect();
            if vals.is_empty() {
                // (An empty sum is -0.0: never shown as a value.)
                return format!("{arm} no run counted");
            }
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            format!("{arm} {mean:.1}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn answer(ex: &crate::experiment::Experiment) -> String {
    let mut out = String::from("The answer, load by load (redis against file, the baseline):\n");
    for l in &ex.loads {
        out.push_str(&format!("  {}:\n", l.label));
        for key in ["p95_ms", "metric.time_used mean"] {
            if let Some(m) = l.measures.get(key) {
                for c in &m.comparisons {
                    out.push_str(&format!("    {}\n", c.difference.words));
                }
            }
        }
        let per_arm = |key: &str| l.measures.get(key).map(|m| arm_means(&m.arms));
        if let (Some(reads), Some(misses)) = (
            per_arm("metric.app_hits mean"),
            per_arm("metric.app_misses mean"),
        ) {
            out.push_str(&format!(
                "    per page, the application store's hits: {reads}; misses: {misses} (the pages' footers)\n"
            ));
        }
    }
    if !ex.left_out.is_empty() {
        out.push_str(&format!(
            "  {} run(s) were left out of the statistics: {}\n",
            ex.left_out.len(),
            ex.left_out.join("; ")
        ));
    }
    out
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

#[cfg(test)]
mod tests {
    #[test]
    fn an_arm_without_counted_runs_says_so() {
        let arms = [
            ("file".to_string(), vec![None, None, None]),
            ("redis".to_string(), vec![Some(125.0), None, Some(125.4)]),
        ]
        .into_iter()
        .collect();
        assert_eq!(super::arm_means(&arms), "file no run counted, redis 125.2");
    }
}
