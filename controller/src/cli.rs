//! The `loadfleet` command line: arguments become settings and plans,
//! typed outcomes become outputs and an [`Exit`] code. The binary only
//! calls [`main_with`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadfleet_agent::engine::{TimingMode, parse_window};
use tokio_util::sync::CancellationToken;

use crate::capacity::{CapacityError, SearchSpec};
use crate::console::say;
use crate::duration::parse_duration;
use crate::exit::Exit;
use crate::fleet::{self, LocalAgent};
use crate::plan::{self, Plan};
use crate::progress::ProgressMode;
use crate::runner::{RunSettings, run_and_report};
use crate::summary::{self, Summary};

/// loadfleet: distributed HTTP load testing with exact merged percentiles.
#[derive(Parser, Debug)]
#[command(name = "loadfleet", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a plan: on this machine (default) or on a fleet of agents (--expect-agents).
    Run(RunArgs),
    /// Check a plan and print what it would do; sends nothing.
    Validate {
        /// The plan files (TOML); each is checked, every error is shown.
        #[arg(required = true, num_args = 1..)]
        plans: Vec<PathBuf>,
        /// Also print each scenario's journey as an indented tree: every
        /// request, group, loop (with its bound), condition and choice.
        #[arg(long)]
        explain: bool,
    },
    /// Find the highest load that meets every SLO: raise it step by step
    /// until an SLO breaks, then narrow down between the last good and the
    /// first bad step.
    Capacity(CapacityArgs),
    /// Make mTLS certificates: a fleet CA, the controller's, one per agent.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Compare runs with the first one: p50, p95, p99, req/s and errors per
    /// step and overall, with the change in percent and a verdict.
    Compare(CompareArgs),
    /// Compare configurations of the system under test (arms), each put in
    /// place by a set-up command, with repeated runs in interleaved blocks:
    /// every difference with a 95% confidence interval, and a verdict only
    /// where the interval allows one.
    Experiment(ExperimentArgs),
    /// Turn a plan you already have into a loadfleet plan.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Rebuild report.html of a run directory from its summary.json alone.
    Report {
        /// A run directory (or its summary.json), or a series, capacity or
        /// demo directory: every run under it gets its report again.
        run: PathBuf,
    },
    /// Listen for a few seconds and list the agents that attach (name,
    /// region, version, address, identity, state); offers them no run.
    Agents(AgentsArgs),
    /// Is Moodle's application cache better in files or in Redis at 20, 30
    /// and 40 users? An experiment: the Moodle journey against an
    /// in-process test site whose pages do a Moodle page's cache work
    /// through the real store (files with locking, or a Redis server the
    /// demo starts; redis-server must be installed), each store 3 times per
    /// load, interleaved, on two local agents over gRPC; ends with a
    /// verdict per load and its 95% interval.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The plan file (TOML).
    pub plan: PathBuf,
    /// Run directory (default: runs/<UTC timestamp>-<plan name>/; a sweep's
    /// series directory ends in -series).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// For this run only: the closed model's users (the plan's `users`).
    #[arg(long)]
    pub users: Option<u64>,
    /// For this run only: how long users start over, e.g. 30s.
    #[arg(long, value_parser = parse_duration)]
    pub ramp_up: Option<Duration>,
    /// For this run only: iterations per user.
    #[arg(long)]
    pub iterations: Option<u64>,
    /// For this run only: how long the load runs, e.g. 30s or 5m.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// For this run only: the open model's arrivals per second.
    #[arg(long)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Where the load comes from: agents in this process, or a fleet.
#[derive(Args, Debug)]
pub struct FleetArgs {
    /// Address agents dial (default: 127.0.0.1 on a free port).
    #[arg(long, env = "LOADFLEET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Remote agents to wait for; with 0, agents run in this process.
    #[arg(long, default_value_t = 0)]
    pub expect_agents: usize,
    /// Observers to wait for: `loadfleet-agent --observe` on the system
    /// under test, reporting its host's CPU, steal, load, memory, disk and
    /// network beside the latencies. Observers that attach before the start
    /// are taken along without it.
    #[arg(long, default_value_t = 0)]
    pub expect_observers: usize,
    /// An observed host whose other processes (not named with
    /// --observe-process, not loadfleet's) used more than this share of a
    /// core on average during a run was disturbed: said in the summary, and
    /// the run is left out of an experiment's statistics. Percent of one core.
    #[arg(long, default_value_t = 50.0)]
    pub max_other_cpu: f64,
    /// An observed host whose hypervisor took more than this share of its
    /// CPU time as steal during a run was disturbed (percent).
    #[arg(long, default_value_t = 5.0)]
    pub max_steal: f64,
    /// Agents to run in this process (default: 1 without --expect-agents, else 0).
    #[arg(long)]
    pub local_agents: Option<usize>,
    /// How long to wait for the expected agents, e.g. 60s or 5m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub wait_agents: Duration,
    /// Worker threads of each local agent (default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Open model, local agents: how arrivals wait for their instant, as
    /// `loadfleet-agent --timing`: `timer` (default; a high-resolution timer,
    /// arrivals within `--timing-window` of each other sharing a wake-up) or
    /// `poll` (within microseconds, a core busy).
    #[arg(long, default_value_t = TimingMode::Timer)]
    pub timing: TimingMode,
    /// `--timing timer`: arrivals due within this span of the earliest one
    /// waiting share its wake-up (`500us`, `2ms`, `0`), as `loadfleet-agent
    /// --timing-window`.
    #[arg(long, default_value = "750us", value_parser = parse_window)]
    pub timing_window: Duration,
    /// Replaced by `--timing`; accepted with a warning.
    #[arg(long, hide = true)]
    pub frugal_timing: bool,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// How long an agent's lease lasts without renewal (renewed every second
    /// while a run is active); an agent whose lease runs out stops all load.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Append one JSON line per run here: who ran what, against which
    /// target, when and how it ended (default: audit.jsonl beside the run
    /// directory).
    #[arg(long, env = "LOADFLEET_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Who is running this, for the audit log (default: the OS user this
    /// process runs as; the audit line keeps that user as well).
    #[arg(long, env = "LOADFLEET_OPERATOR")]
    pub operator: Option<String>,
    /// Serve a live dashboard of the run at http://ADDR/ (default
    /// 127.0.0.1:0, printed at start): figures every second, with a Stop
    /// button. Beyond loopback only with a token (open it with ?token=).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    pub dashboard: Option<SocketAddr>,
    /// How long the dashboard stays up after the last run, to show how it
    /// ended and serve its report (Ctrl-C leaves at once).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub dashboard_linger: Duration,
    /// Serve the merged figures at http://ADDR/metrics in Prometheus's text
    /// format while runs go on (beyond loopback only with a token, which
    /// scrapers send as a bearer token).
    #[arg(long, value_name = "ADDR", env = "LOADFLEET_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Push the merged figures every second to this Prometheus remote-write
    /// URL (e.g. http://prometheus:9090/api/v1/write), labelled with the
    /// run's id.
    #[arg(long, value_name = "URL", env = "LOADFLEET_PROMETHEUS_REMOTE_WRITE")]
    pub prometheus_remote_write: Option<String>,
}

/// How agents prove who they are: the same options for `run`, `capacity`
/// and `agents`.
#[derive(Args, Debug)]
pub struct AuthArgs {
    /// Shared fleet token agents must present (required to listen beyond
    /// loopback). Prefer the environment or --token-file.
    #[arg(long, env = "LOADFLEET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the shared fleet token.
    #[arg(long, env = "LOADFLEET_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// mTLS: a directory made by `loadfleet certs init` (ca.pem,
    /// controller.pem, controller.key). Only agents with a certificate from
    /// that CA, naming them, may attach; agents dial https://.
    #[arg(long, env = "LOADFLEET_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
}

impl AuthArgs {
    /// The token (read from its file if given) and the TLS material, or a
    /// usage error.
    fn load(&self) -> Result<(Option<String>, Option<crate::certs::ControllerTls>), String> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let tls = self
            .tls_dir
            .as_deref()
            .map(crate::certs::ControllerTls::load)
            .transpose()?;
        for w in tls.iter().flat_map(|t| t.expiry_warnings()) {
            eprintln!("warning: {w}");
        }
        Ok((token, tls))
    }
}

impl FleetArgs {
    /// The settings, or a usage error.
    /// Keeps the dashboard up a while after the last run, so its page can
    /// say how the run ended and serve the report (Ctrl-C leaves at once).
    async fn linger(&self, settings: &RunSettings) {
        if self.dashboard.is_none() || self.dashboard_linger.is_zero() {
            return;
        }
        eprintln!(
            "loadfleet: the dashboard stays up {} more (--dashboard-linger); Ctrl-C leaves now",
            crate::duration::format_duration(self.dashboard_linger)
        );
        tokio::select! {
            _ = tokio::time::sleep(self.dashboard_linger) => {}
            _ = settings.hard_interrupt.cancelled() => {}
            _ = settings.interrupt.cancelled(), if !settings.interrupt.is_cancelled() => {}
        }
    }

    /// Starts the dashboard, `/metrics` and remote write when asked for;
    /// the dashboard's Stop button cancels `stop` (as Ctrl-C does).
    async fn live(
        &self,
        token: Option<String>,
        stop: CancellationToken,
    ) -> Result<Option<std::sync::Arc<crate::live::Live>>, String> {
        if self.dashboard.is_none()
            && self.metrics_listen.is_none()
            && self.prometheus_remote_write.is_none()
        {
            return Ok(None);
        }
        let remote = self
            .prometheus_remote_write
            .as_deref()
            .map(crate::live::remote_write::Target::parse)
            .transpose()?;
        let with_token = token.is_some();
        let live = crate::live::Live::new(token, remote, stop);
        if let Some(addr) = self.dashboard {
            let bound = live.serve(addr).await?;
            eprintln!(
                "loadfleet: dashboard at http://{bound}/{}",
                if with_token {
                    " (add ?token=THE_FLEET_TOKEN)"
                } else {
                    ""
                }
            );
        }
        if let Some(addr) = self.metrics_listen {
            let bound = live.serve(addr).await?;
            eprintln!("loadfleet: metrics at http://{bound}/metrics");
        }
        Ok(Some(live))
    }

    fn settings(
        &self,
        interrupt: CancellationToken,
        hard_interrupt: CancellationToken,
    ) -> Result<RunSettings, String> {
        let local = self
            .local_agents
            .unwrap_or(if self.expect_agents == 0 { 1 } else { 0 });
        if local + self.expect_agents == 0 {
            return Err("no agents: give --expect-agents N or --local-agents N".into());
        }
        if self.frugal_timing {
            tracing::warn!(
                "--frugal-timing is no longer needed and is ignored: the default `--timing timer` \
                 sleeps on a high-resolution timer and is idle between arrivals"
            );
        }
        let workers = self.workers.unwrap_or_else(default_workers);
        let (token, tls) = self.auth.load()?;
        if token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(
                "the fleet token must be at least 16 characters (try `openssl rand -hex 32`)"
                    .into(),
            );
        }
        if self.lease < Duration::from_secs(2) {
            return Err("--lease must be at least 2s (it is renewed every second)".into());
        }
        Ok(RunSettings {
            tls,
            token,
            lease: self.lease,
            audit_log: self.audit_log.clone(),
            operator: self.operator.clone(),
            live: None,
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            expect_agents: self.expect_agents,
            expect_observers: self.expect_observers,
            host_bounds: crate::hosts::Bounds {
                other_cpu_core_pct: self.max_other_cpu,
                steal_pct: self.max_steal,
            },
            local_agents: (0..local)
                .map(|i| LocalAgent {
                    name: if local == 1 {
                        "local".into()
                    } else {
                        format!("local-{}", i + 1)
                    },
                    region: "local".into(),
                    workers,
                    timing: self.timing.with_window(self.timing_window),
                })
                .collect(),
            wait_for_agents: self.wait_agents,
            progress: if self.quiet {
                ProgressMode::Off
            } else {
                ProgressMode::Auto
            },
            interrupt,
            hard_interrupt,
        })
    }
}

#[derive(Args, Debug)]
pub struct CapacityArgs {
    /// The plan file (TOML); its `users` (or `rate`) is where the search starts.
    pub plan: PathBuf,
    /// A service-level objective every step must meet, e.g. "p95 < 2s" or
    /// "errors < 1%"; repeatable.
    #[arg(long = "slo", required = true)]
    pub slos: Vec<String>,
    /// How long each step holds its load.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// Most steps (runs) the search may take.
    #[arg(long, default_value_t = 8)]
    pub max_steps: u32,
    /// Highest load to try (users, or arrivals per second).
    #[arg(long)]
    pub max_load: Option<f64>,
    /// Capacity directory (default: runs/<UTC timestamp>-<plan name>-capacity/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// The plan file (TOML). A sweep (`users = [20, 30, 40]`) makes each
    /// value a load of the experiment; `[experiment]` in the plan may hold
    /// the arms and settings these flags override.
    pub plan: PathBuf,
    /// An arm: its name and the shell command (`sh -c`, on this machine)
    /// that puts the system in its configuration; repeatable, the first is
    /// the baseline. Given here, they replace the plan's arms.
    #[arg(long = "arm", value_name = "NAME=COMMAND", value_parser = parse_property)]
    pub arms: Vec<(String, String)>,
    /// Measured runs of each arm at each load (default 4; at least 2).
    #[arg(long)]
    pub runs: Option<usize>,
    /// A run of this length before every measured run, at its load, not
    /// counted (default: none).
    #[arg(long, value_parser = parse_duration)]
    pub warm_up: Option<Duration>,
    /// A pause after each set-up command (default 0s).
    #[arg(long, value_parser = parse_duration)]
    pub settle: Option<Duration>,
    /// Longest a set-up command may take (default 5m).
    #[arg(long, value_parser = parse_duration)]
    pub setup_timeout: Option<Duration>,
    /// `balanced` (arms rotated block by block: AB BA AB…) or `random`
    /// (each block shuffled; the seed is recorded).
    #[arg(long)]
    pub order: Option<String>,
    /// The seed of `--order random` (default: a fresh one, recorded).
    #[arg(long)]
    pub seed: Option<u64>,
    /// An interval within ± this many percent reads "same" (default 5;
    /// for the error rate, a fifth of it in percentage points).
    #[arg(long)]
    pub margin: Option<f64>,
    /// Keep runs flagged by a generator's health (saturated) or status
    /// (degraded, truncated) in the statistics; by default they are left
    /// out, with a line saying so.
    #[arg(long)]
    pub keep_flagged: bool,
    /// Experiment directory (default: runs/<UTC timestamp>-<plan name>-experiment/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// A browser recording (HAR, as Chrome's or Firefox's developer tools
    /// export it) as a journey: documents and XHR/fetch requests as steps,
    /// the recorded pauses as think times.
    Har {
        /// The .har file.
        har: PathBuf,
        /// The plan to write (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Keep static assets (scripts, styles, images, fonts) as steps.
        #[arg(long)]
        include_assets: bool,
        /// Point the plan here instead of the recording's first origin.
        #[arg(long)]
        base_url: Option<String>,
        /// Also keep requests to this host (the first document's host is
        /// kept; every other one is left out, and listed); repeatable.
        #[arg(long = "include-host", value_name = "HOST")]
        include_hosts: Vec<String>,
        /// Keep requests to every recorded host (analytics and trackers
        /// included).
        #[arg(long)]
        all_hosts: bool,
        /// The longest recorded pause kept as think time; a longer one
        /// becomes this (and is listed).
        #[arg(long, default_value = "30s", value_parser = crate::duration::parse_duration)]
        max_think: std::time::Duration,
    },
    /// A JMeter test plan (.jmx): thread groups as scenarios (and phases
    /// when the plan runs them one after another), HTTP samplers as steps,
    /// CSV data sets, extractors, assertions, timers and a shared throughput
    /// timer; everything else is listed with why.
    Jmeter {
        /// The .jmx file.
        jmx: PathBuf,
        /// The plan to write (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// A JMeter property for ${__P(name,…)} and ${__property(name,…)}, as
        /// NAME=VALUE; repeatable (as JMeter's own -J).
        #[arg(short = 'J', value_name = "NAME=VALUE", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Point the plan here instead of the JMX's HTTP Request Defaults.
        #[arg(long)]
        base_url: Option<String>,
        /// Refuse the plan (write nothing) when any element does not map.
        #[arg(long)]
        strict: bool,
        /// Read Moodle's performance footer as metrics (time used, DB reads
        /// and writes, every cache's and the application store's hits and
        /// misses), as for a plan Moodle's test-plan generator wrote, which
        /// is recognised by itself.
        #[arg(long)]
        moodle: bool,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, found `{s}`"))
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a CA (valid ten years) and the controller's certificate in DIR.
    Init {
        dir: PathBuf,
        /// Host names or IP addresses agents use to reach the controller; repeatable.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
        /// Days the controller's certificate is valid.
        #[arg(long, default_value_t = crate::certs::DEFAULT_DAYS)]
        days: u32,
    },
    /// Create DIR/agents/NAME.pem and NAME.key for agent NAME, signed by DIR's CA.
    Agent {
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = crate::certs::DEFAULT_DAYS)]
        days: u32,
    },
    /// Issue a new certificate and key for agent NAME (or, as NAME
    /// `controller`, for the controller). The old pair is kept as
    /// NAME.previous.pem/.key and works until it expires or is revoked
    /// (`revoke NAME --previous`).
    Renew {
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// Days the new certificate is valid.
        #[arg(long, default_value_t = crate::certs::DEFAULT_DAYS)]
        days: u32,
        /// For `renew controller`: the host names or IP addresses agents
        /// use to reach the controller; repeatable.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Revoke agent NAME's certificate: the controller (at its next start)
    /// refuses it, and says so to the agent and in its notes.
    Revoke {
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// Revoke the certificate `renew` replaced (NAME.previous.pem).
        #[arg(long)]
        previous: bool,
    },
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run directories, the first the baseline; or two series directories
    /// (sweeps), compared load by load.
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<PathBuf>,
    /// Percent change per step that counts as worse or better.
    #[arg(long, default_value_t = 2.0)]
    pub step_threshold: f64,
    /// Percent change of all steps together that counts as worse or better.
    #[arg(long, default_value_t = 4.0)]
    pub overall_threshold: f64,
    /// A latency change smaller than this many milliseconds is never worse
    /// or better, whatever its percentage.
    #[arg(long, default_value_t = 1.0)]
    pub min_change_ms: f64,
    /// Exit 1 when any change is worse (to gate a CI pipeline).
    #[arg(long)]
    pub fail_on_regression: bool,
    /// Also write one comparison report (HTML) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AgentsArgs {
    /// Where agents dial in, as for `run --listen`.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// How long to listen. Agents retry every few seconds (at most
    /// --max-backoff-s, 3 s by default), so 5 s sees every live one.
    #[arg(long = "for", default_value = "5s", value_parser = parse_duration)]
    pub for_how_long: Duration,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// One JSON object per agent instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `args` and runs the command; returns the process exit code.
pub async fn main_with(
    cli: Cli,
    interrupt: CancellationToken,
    hard_interrupt: CancellationToken,
) -> ExitCode {
    let exit = match cli.command {
        Command::Validate { plans, explain } => {
            let mut worst = Exit::Ok;
            for plan in &plans {
                match plan::load(plan) {
                    Ok(p) => {
                        say(&describe(&p));
                        say(&sends_to(&p));
                        if explain {
                            say(&explain_journeys(&p));
                        }
                    }
                    Err(e) => worst = worst.max(usage(e)),
                }
            }
            worst
        }
        Command::Run(args) => run_command(args, interrupt, hard_interrupt)
            .await
            .unwrap_or_else(usage),
        Command::Capacity(args) => capacity_command(args, interrupt, hard_interrupt)
            .await
            .unwrap_or_else(usage),
        Command::Compare(args) => compare_runs(&args),
        Command::Experiment(args) => experiment_command(args, interrupt, hard_interrupt)
            .await
            .unwrap_or_else(usage),
        Command::Certs(cmd) => certs_command(cmd),
        Command::Import(cmd) => import_command(cmd),
        Command::Agents(args) => list_agents(args).await,
        Command::Report { run } => report_command(&run),
        #[cfg(feature = "demo")]
        Command::Demo(args) => crate::demo::demo(args, interrupt, hard_interrupt).await,
    };
    exit.into()
}

/// `loadfleet import ...`: converts, checks the result as `validate`
/// would, and writes it only then (never over an existing file).
fn import_command(cmd: ImportCommand) -> Exit {
    match cmd {
        ImportCommand::Har {
            har,
            out,
            include_assets,
            base_url,
            include_hosts,
            all_hosts,
            max_think,
        } => import_har(
            har,
            out,
            crate::import::har::Options {
                include_assets,
                base_url,
                include_hosts,
                all_hosts,
                max_think,
                ..Default::default()
            },
        ),
        ImportCommand::Jmeter {
            jmx,
            out,
            properties,
            base_url,
            strict,
            moodle,
        } => import_jmeter(jmx, out, properties, base_url, strict, moodle),
    }
}

/// The name of an imported plan: its file's stem.
fn plan_name(out: &Path) -> String {
    out.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "imported".into())
}

/// Checks an imported plan as `validate` would, and writes it only then.
/// A plan that does not validate is written beside it as `NAME.draft.toml`,
/// the errors at its top, and the import fails pointing at it: nothing
/// imported is lost, and nothing that cannot run is taken for a plan.
fn write_imported(out: &Path, plan_text: &str) -> Result<(), Exit> {
    if let Err(e) = plan::parse(&out.display().to_string(), plan_text, &plan_name(out)) {
        let draft = out.with_extension("draft.toml");
        let header = format!(
            "# DRAFT: this import does not validate yet: line {} (of the plan below, {} lines down in this file): {}\n",
            e.line,
            e.line + 1,
            e.message
        );
        let text = format!("{header}{plan_text}");
        let written = crate::atomic::write(&draft, &text);
        return Err(usage(match written {
            Ok(()) => format!(
                "the converted plan does not validate: {}:{}:{}: {} (the draft is in {}: fix it there, then rename it; nothing else was written)",
                draft.display(),
                e.line + 1,
                e.column,
                e.message,
                draft.display()
            ),
            Err(w) => format!(
                "the converted plan does not validate ({e}), and its draft could not be written to {}: {w}",
                draft.display()
            ),
        }));
    }
    crate::atomic::write(out, plan_text)
        .map_err(|e| usage(format!("cannot write {}: {e}", out.display())))
}

fn import_jmeter(
    jmx: PathBuf,
    out: PathBuf,
    properties: Vec<(String, String)>,
    base_url: Option<String>,
    strict: bool,
    moodle: bool,
) -> Exit {
    if out.exists() {
        return usage(format!(
            "{} exists; give another --out (nothing was written)",
            out.display()
        ));
    }
    let text = match std::fs::read_to_string(&jmx) {
        Ok(t) => t,
        Err(e) => return usage(format!("cannot read {}: {e}", jmx.display())),
    };
    let opts = crate::import::jmeter::Options {
        properties: properties.into_iter().collect(),
        base_url,
        name: plan_name(&out),
        source: jmx.clone(),
        out: out.clone(),
        moodle,
    };
    let imported = match crate::import::jmeter::import(&text, &opts) {
        Ok(i) => i,
        Err(e) => return usage(e),
    };
    for u in &imported.unmapped {
        eprintln!("NOT MAPPED: {u}");
    }
    for u in &imported.harmless {
        eprintln!("LEFT OUT (the load is the same): {u}");
    }
    // --strict refuses what changes the load; a listener does not.
    if strict && !imported.unmapped.is_empty() {
        return usage(format!(
            "--strict: {} element(s) of {} do not map (listed above); nothing was written",
            imported.unmapped.len(),
            jmx.display()
        ));
    }
    if let Err(exit) = write_imported(&out, &imported.plan) {
        return exit;
    }
    say(&format!(
        "wrote {}: {} scenario(s), {} steps{}; `loadfleet validate {}` passes",
        out.display(),
        imported.scenarios,
        imported.steps,
        if imported.unmapped.is_empty() {
            String::new()
        } else {
            format!(
                "; {} element(s) not mapped or mapped approximately (NOT MAPPED lines above, and comments in the plan)",
                imported.unmapped.len()
            )
        },
        out.display()
    ));
    Exit::Ok
}

fn import_har(har: PathBuf, out: PathBuf, opts: crate::import::har::Options) -> Exit {
    if out.exists() {
        return usage(format!(
            "{} exists; give another --out (nothing was written)",
            out.display()
        ));
    }
    let text = match std::fs::read_to_string(&har) {
        Ok(t) => t,
        Err(e) => return usage(format!("cannot read {}: {e}", har.display())),
    };
    let opts = crate::import::har::Options {
        name: plan_name(&out),
        source: har.display().to_string(),
        ..opts
    };
    let imported = match crate::import::har::import(&text, &opts) {
        Ok(i) => i,
        Err(e) => return usage(e),
    };
    if let Err(exit) = write_imported(&out, &imported.plan) {
        return exit;
    }
    for w in &imported.warnings {
        eprintln!("CHECK: {w}");
    }
    say(&format!(
        "wrote {}: {} steps ({} static assets left out){}; `loadfleet validate {}` passes",
        out.display(),
        imported.steps,
        imported.left_out,
        if imported.warnings.is_empty() {
            String::new()
        } else {
            format!(
                "; {} value(s) to check (CHECK lines above, and comments in the plan)",
                imported.warnings.len()
            )
        },
        out.display()
    ));
    Exit::Ok
}

/// `loadfleet certs ...`.
fn certs_command(cmd: CertsCommand) -> Exit {
    use crate::certs;
    let outcome = match cmd {
        CertsCommand::Init { dir, hosts, days } => certs::init(&dir, &hosts, days).map(|()| {
            format!(
                "fleet CA (valid {} days) and controller certificate (for {}, valid {days} days) in {}; keep ca.key safe\nnext: loadfleet certs agent NAME --dir {}",
                certs::CA_DAYS,
                hosts.join(", "),
                dir.display(),
                dir.display()
            )
        }),
        CertsCommand::Agent { name, dir, days } => certs::agent(&dir, &name, days).map(|(c, k)| {
            format!(
                "agent {name}: {} and {} (valid {days} days)",
                c.display(),
                k.display()
            )
        }),
        CertsCommand::Renew {
            name,
            dir,
            days,
            hosts,
        } if name == certs::CONTROLLER => certs::controller(&dir, &hosts, days).map(|()| {
            format!(
                "controller certificate renewed for {} (valid {days} days); the old one is {}; restart the controller to use it",
                hosts.join(", "),
                dir.join("controller.previous.pem").display()
            )
        }),
        CertsCommand::Renew {
            name, dir, days, ..
        } => certs::renew(&dir, &name, days).map(|(c, k)| {
            format!(
                "agent {name}: new {} and {} (valid {days} days); the old pair is agents/{name}.previous.*: it works until it expires or `loadfleet certs revoke {name} --previous --dir {}`",
                c.display(),
                k.display(),
                dir.display()
            )
        }),
        CertsCommand::Revoke {
            name,
            dir,
            previous,
        } => certs::revoke(&dir, &name, previous).map(|(fp, already)| {
            let path = dir.join(certs::REVOKED);
            if already {
                format!("agent {name}'s certificate (sha256:{fp}) was already in {}", path.display())
            } else {
                format!(
                    "revoked agent {name}'s certificate (sha256:{fp}) in {}; a controller started with --tls-dir {} refuses it",
                    path.display(),
                    dir.display()
                )
            }
        }),
    };
    match outcome {
        Ok(text) => {
            say(&text);
            Exit::Ok
        }
        Err(e) => usage(e),
    }
}

/// A usage error (the plan or the command line; nothing was sent): printed,
/// exit 2.
fn usage(e: impl std::fmt::Display) -> Exit {
    eprintln!("error: {e}");
    Exit::Usage
}

async fn run_command(
    args: RunArgs,
    interrupt: CancellationToken,
    hard: CancellationToken,
) -> Result<Exit, String> {
    let mut plan = plan::load(&args.plan).map_err(|e| e.to_string())?;
    plan.override_load(&plan::LoadOverride {
        users: args.users,
        ramp_up: args.ramp_up,
        iterations: args.iterations,
        duration: args.duration,
        rate: args.rate,
    })?;
    for o in &plan.overrides {
        eprintln!("for this run: {o}");
    }
    // Before anything is sent: where it will go.
    eprintln!("{}", sends_to(&plan));
    let mut settings = args.fleet.settings(interrupt, hard)?;
    settings.live = args
        .fleet
        .live(settings.token.clone(), settings.interrupt.clone())
        .await?;
    let exit = match plan.sweep.clone() {
        Some(sweep) => {
            let outcome =
                crate::series::run_series(&settings, &plan, &sweep, args.out, &args.plan).await;
            crate::series::say_outcome(&outcome);
            outcome.map_or_else(|e| e.exit(), |s| s.exit())
        }
        None if !plan.phases.is_empty() => {
            let outcome =
                crate::phases::run_phases(&settings, &plan, args.out, &args.plan, None).await;
            crate::phases::say_outcome(&outcome);
            outcome.map_or_else(|e| e.exit(), |p| p.exit())
        }
        None => {
            Exit::of_run(&run_and_report(settings.options(plan), args.out, Some(&args.plan)).await)
        }
    };
    args.fleet.linger(&settings).await;
    Ok(exit)
}

async fn capacity_command(
    args: CapacityArgs,
    interrupt: CancellationToken,
    hard: CancellationToken,
) -> Result<Exit, String> {
    let plan = plan::load(&args.plan).map_err(|e| e.to_string())?;
    eprintln!("{}", sends_to(&plan));
    if !plan.phases.is_empty() {
        return Err(format!(
            "{}: a capacity search varies one load, and this plan has {} phases; search with a plan of one [load]",
            args.plan.display(),
            plan.phases.len()
        ));
    }
    let spec = SearchSpec {
        slos: args.slos.clone(),
        step_duration: args.step_duration,
        max_steps: args.max_steps,
        max_load: args.max_load,
    };
    let search = crate::capacity::Search::new(&plan, &spec)?;
    let mut settings = args.fleet.settings(interrupt, hard)?;
    settings.live = args
        .fleet
        .live(settings.token.clone(), settings.interrupt.clone())
        .await?;
    let exit = match search.run(&settings, &plan, args.out).await {
        Ok(report) => {
            say(&crate::capacity::render(&report));
            say(&format!("capacity directory: {}", report.dir.display()));
            Exit::of_capacity(&report)
        }
        Err(e @ CapacityError::CreateDir { .. }) => usage(e),
        Err(e @ CapacityError::StepNotRun { .. }) => {
            eprintln!("error: {e}");
            Exit::Fleet
        }
        Err(CapacityError::Write { report, error }) => {
            say(&crate::capacity::render(&report));
            eprintln!("error: cannot write the capacity report: {error}");
            Exit::Fleet
        }
    };
    args.fleet.linger(&settings).await;
    Ok(exit)
}

async fn experiment_command(
    args: ExperimentArgs,
    interrupt: CancellationToken,
    hard: CancellationToken,
) -> Result<Exit, String> {
    use crate::experiment::{Arm, Design, Order};
    let plan = plan::load(&args.plan).map_err(|e| e.to_string())?;
    eprintln!("{}", sends_to(&plan));
    if !plan.phases.is_empty() {
        return Err(format!(
            "{}: an experiment repeats one load (or a sweep's loads); this plan has {} phases (use --warm-up for a warm-up before each run)",
            args.plan.display(),
            plan.phases.len()
        ));
    }
    let spec = plan.experiment.clone().unwrap_or_default();
    let arms = if args.arms.is_empty() {
        spec.arms.clone()
    } else {
        args.arms.clone()
    };
    let order = match args.order.as_deref().or(spec.order.as_deref()) {
        None | Some("balanced") => Order::Balanced,
        Some("random") => Order::Random(args.seed.or(spec.seed).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })),
        Some(other) => {
            return Err(format!(
                "--order: expected `balanced` or `random`, found `{other}`"
            ));
        }
    };
    let design = Design {
        arms: arms
            .into_iter()
            .map(|(name, setup)| Arm { name, setup })
            .collect(),
        runs: args.runs.or(spec.runs).unwrap_or(4),
        warm_up: args.warm_up.or(spec.warm_up),
        settle: args.settle.or(spec.settle).unwrap_or_default(),
        setup_timeout: args
            .setup_timeout
            .or(spec.setup_timeout)
            .unwrap_or(Duration::from_secs(300)),
        order,
        margin_pct: args.margin.or(spec.margin_pct).unwrap_or(5.0),
        keep_flagged: args.keep_flagged,
    };
    design.check()?;
    let mut settings = args.fleet.settings(interrupt, hard)?;
    settings.live = args
        .fleet
        .live(settings.token.clone(), settings.interrupt.clone())
        .await?;
    let outcome =
        crate::experiment::run_experiment(&settings, &plan, &design, args.out, &args.plan).await;
    let exit = match outcome {
        Ok(ex) => {
            say(&crate::experiment::render(&ex));
            say(&format!(
                "experiment directory: {} (experiment.html, experiment.json)",
                ex.dir.display()
            ));
            ex.exit()
        }
        Err(e @ crate::experiment::ExperimentError::CreateDir { .. }) => usage(e),
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Fleet
        }
    };
    args.fleet.linger(&settings).await;
    Ok(exit)
}

/// A series directory (a sweep): series.json and no summary.json.
/// The run directory of a path given as a run directory or its summary.json.
fn run_dir_of(path: &Path) -> &Path {
    if path.file_name().is_some_and(|n| n == "summary.json") {
        path.parent().unwrap_or(Path::new("."))
    } else {
        path
    }
}

fn is_series(dir: &Path) -> bool {
    dir.join("series.json").is_file() && !dir.join("summary.json").exists()
}

/// One run of a series: its value, its directory's name, its summary.
type SeriesRun = (f64, String, Summary);

/// The runs of a series directory and the parameter they vary, by value.
fn series_runs(dir: &Path) -> Result<(String, Vec<SeriesRun>), String> {
    let path = dir.join("series.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let series: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a loadfleet series: {e}", path.display()))?;
    let parameter = series["parameter"].as_str().unwrap_or("load").to_string();
    let mut runs = Vec::new();
    for r in series["runs"].as_array().into_iter().flatten() {
        let (Some(value), Some(name)) = (r["value"].as_f64(), r["run"].as_str()) else {
            return Err(format!("{}: a run without value or name", path.display()));
        };
        // A run that kept no summary (its fleet failed) cannot be compared.
        if let Ok(s) = summary::read_summary(&dir.join(name)) {
            runs.push((value, name.to_string(), s));
        }
    }
    Ok((parameter, runs))
}

/// `loadfleet compare SERIES_A SERIES_B`: load by load, B against A.
fn compare_series(args: &CompareArgs, a: &Path, b: &Path, limits: crate::compare::Limits) -> Exit {
    let ((parameter, runs_a), (_, runs_b)) = match (series_runs(a), series_runs(b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return usage(e),
    };
    let mut pairs = Vec::new();
    for (value, name_a, sa) in &runs_a {
        if let Some((_, name_b, sb)) = runs_b.iter().find(|(v, _, _)| v == value) {
            let na = format!("{}/{name_a}", a.display());
            let nb = format!("{}/{name_b}", b.display());
            let steps = (
                crate::compare::StepIntervals::read(&a.join(name_a)),
                crate::compare::StepIntervals::read(&b.join(name_b)),
            );
            let c = crate::compare::compare_with(
                (&na, sa),
                (&nb, sb),
                limits,
                steps.0.as_ref().zip(steps.1.as_ref()),
            );
            pairs.push((*value, na, sa, nb, sb, c));
        }
    }
    if pairs.is_empty() {
        return usage(format!(
            "{} and {} share no {parameter} value to compare",
            a.display(),
            b.display()
        ));
    }
    let only: Vec<String> = runs_a
        .iter()
        .chain(&runs_b)
        .filter(|(v, _, _)| !pairs.iter().any(|p| p.0 == *v))
        .map(|(v, n, _)| format!("{n} ({v})"))
        .collect();
    let table: Vec<(f64, &crate::compare::Comparison)> =
        pairs.iter().map(|p| (p.0, &p.5)).collect();
    say(&crate::compare::render_series(
        &a.display().to_string(),
        &b.display().to_string(),
        &parameter,
        &table,
        limits,
    ));
    if !only.is_empty() {
        say(&format!(
            "not compared (in one series only): {}",
            only.join(", ")
        ));
    }
    if let Some(path) = &args.html {
        let summaries: Vec<(&str, &Summary)> = pairs
            .iter()
            .flat_map(|p| [(p.1.as_str(), p.2), (p.3.as_str(), p.4)])
            .collect();
        let comparisons: Vec<crate::compare::Comparison> =
            pairs.iter().map(|p| p.5.clone()).collect();
        match crate::output::report::render_comparison(&summaries, &comparisons, limits)
            .map_err(|e| e.to_string())
            .and_then(|html| crate::atomic::write(path, html).map_err(|e| e.to_string()))
        {
            Ok(()) => say(&format!("comparison report: {}", path.display())),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                return Exit::Fleet;
            }
        }
    }
    let worse: usize = pairs.iter().map(|p| p.5.worse()).sum();
    if args.fail_on_regression && worse > 0 {
        eprintln!("{worse} change(s) are worse than the thresholds");
        return Exit::Errors;
    }
    Exit::Ok
}

/// `loadfleet report PATH`: a run directory or its `summary.json`; or a
/// directory of runs (a series, a capacity search, a demo), whose runs each
/// get their report again.
fn report_command(path: &Path) -> Exit {
    let dir = if path.file_name().is_some_and(|n| n == "summary.json") && path.is_file() {
        path.parent().unwrap_or(Path::new("."))
    } else {
        path
    };
    if dir.join("summary.json").is_file() || crate::journal::exists(dir) {
        return rebuild_report(dir);
    }
    let runs = runs_under(dir, 3);
    if runs.is_empty() {
        return usage(format!(
            "{}: no run here (no summary.json or journal, in it or below it)",
            path.display()
        ));
    }
    runs.iter()
        .map(|r| rebuild_report(r))
        .max()
        .unwrap_or(Exit::Ok)
}

/// Run directories (holding summary.json or a journal) below `dir`, at most
/// `depth` levels down, in name order.
fn runs_under(dir: &Path, depth: u32) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut subdirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    let mut runs = Vec::new();
    for d in subdirs {
        if d.join("summary.json").is_file() || crate::journal::exists(&d) {
            runs.push(d);
        } else if depth > 1 {
            runs.extend(runs_under(&d, depth - 1));
        }
    }
    runs
}

/// `loadfleet report RUN_DIR`: report.html again from summary.json (or the
/// whole run again from its journal).
fn rebuild_report(run: &Path) -> Exit {
    // A run whose controller stopped before the end has a journal and no
    // summary: rebuild everything from what was measured.
    if !run.join("summary.json").exists() && crate::journal::exists(run) {
        return rebuild_from_journal(run);
    }
    let summary = match summary::read_summary(run) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let html = match crate::output::report::render(&summary) {
        Ok(html) => html,
        Err(e) => {
            eprintln!("error: cannot render the report: {e}");
            return Exit::Fleet;
        }
    };
    match crate::atomic::write(run.join("report.html"), html) {
        Ok(()) => {
            say(&format!("report: {}", run.join("report.html").display()));
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: cannot write the report: {e}");
            Exit::Fleet
        }
    }
}

/// `loadfleet report` on a run directory that holds only a journal.
fn rebuild_from_journal(run: &Path) -> Exit {
    let replayed = match crate::journal::replay(run) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let mut summary = Summary::of(&replayed.result);
    summary.missing = replayed.missing;
    say(crate::output::table::render(&summary).trim_end());
    match crate::output::write_run_dir(&replayed.result, &summary, run) {
        Ok(files) => {
            say(&format!(
                "rebuilt from the run's journal (status incomplete): {}\n  summary: {}\n  report: {}",
                files.dir.display(),
                files.summary.display(),
                files.report.display()
            ));
            Exit::Ok
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the rebuilt results to {}: {e}",
                run.display()
            );
            Exit::Unsaved
        }
    }
}

fn compare_runs(args: &CompareArgs) -> Exit {
    let limits = crate::compare::Limits {
        step: args.step_threshold,
        overall: args.overall_threshold,
        floor_ms: args.min_change_ms,
    };
    if let [a, b] = args.runs.as_slice()
        && is_series(a)
        && is_series(b)
    {
        return compare_series(args, a, b, limits);
    }
    let mut runs = Vec::new();
    let mut intervals = Vec::new();
    for dir in &args.runs {
        match summary::read_summary(dir) {
            Ok(s) => runs.push((dir.display().to_string(), s)),
            Err(e) => return usage(e),
        }
        intervals.push(crate::compare::StepIntervals::read(run_dir_of(dir)));
    }
    let (base_name, base) = &runs[0];
    let comparisons: Vec<crate::compare::Comparison> = runs[1..]
        .iter()
        .zip(&intervals[1..])
        .map(|((name, s), steps)| {
            crate::compare::compare_with(
                (base_name, base),
                (name, s),
                limits,
                intervals[0].as_ref().zip(steps.as_ref()),
            )
        })
        .collect();
    for c in &comparisons {
        say(&crate::compare::render(c, limits));
    }
    if let Some(path) = &args.html {
        let summaries: Vec<(&str, &Summary)> = runs.iter().map(|(n, s)| (n.as_str(), s)).collect();
        match crate::output::report::render_comparison(&summaries, &comparisons, limits) {
            Ok(html) => {
                if let Err(e) = crate::atomic::write(path, html) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return Exit::Fleet;
                }
                say(&format!("comparison report: {}", path.display()));
            }
            Err(e) => {
                eprintln!("error: cannot render the comparison: {e}");
                return Exit::Fleet;
            }
        }
    }
    let worse: usize = comparisons.iter().map(|c| c.worse()).sum();
    if args.fail_on_regression && worse > 0 {
        eprintln!("{worse} change(s) are worse than the thresholds");
        return Exit::Errors;
    }
    Exit::Ok
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Each scenario's journey as an indented tree, with the most requests and
/// the longest time one iteration can take.
pub fn explain_journeys(p: &Plan) -> String {
    let mut out = String::new();
    for s in &p.scenarios {
        let most = s.max_requests.map_or_else(
            || "no fixed most (a `during` loop or a `for_each` over matches decides)".to_string(),
            |n| format!("at most {n} request(s)"),
        );
        out.push_str(&format!(
            "scenario \"{}\" (weight {}): per iteration {most}, lasting at most {:.1} s with every timeout and the longest think times\n",
            s.name,
            s.weight,
            s.longest.as_secs_f64()
        ));
        for line in &s.tree {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// The hosts a plan sends requests to, in one line.
pub fn sends_to(p: &Plan) -> String {
    let hosts: Vec<String> = p
        .hosts()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(h, n)| format!("{h} ({n} step{})", if *n == 1 { "" } else { "s" }))
        .collect();
    format!("requests go to: {}", hosts.join(", "))
}

/// A short description of what a plan will do.
pub fn describe(p: &Plan) -> String {
    let steps: usize = p.scenarios.iter().map(|s| s.steps.len()).sum();
    let sweep = p.sweep.as_ref().map_or_else(String::new, |s| {
        let values: Vec<String> = s.values.iter().map(|v| v.to_string()).collect();
        format!(" (a sweep: one run each at {})", values.join(", "))
    });
    let load = if p.phases.is_empty() {
        p.load.describe()
    } else {
        let phases: Vec<String> = p
            .phases
            .iter()
            .map(|ph| {
                let scenarios: Vec<&str> = ph
                    .scenarios
                    .iter()
                    .filter_map(|&i| p.scenarios.get(i).map(|s| s.name.as_str()))
                    .collect();
                format!(
                    "\"{}\": {} ({})",
                    ph.name,
                    ph.load.describe(),
                    scenarios.join(", ")
                )
            })
            .collect();
        format!(
            "{} phases, one after another: {}",
            p.phases.len(),
            phases.join("; then ")
        )
    };
    let metrics = if p.metrics.is_empty() {
        String::new()
    } else {
        format!(
            "; {} metric(s) read from responses ({})",
            p.metrics.len(),
            p.metrics
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!(
        "plan \"{}\" is valid: {load}{sweep}; {} scenario(s), {steps} step(s){metrics}; target {}",
        p.name,
        p.scenarios.len(),
        p.target.base_url
    )
}

/// `loadfleet agents`: who attaches within a few seconds.
async fn list_agents(args: AgentsArgs) -> Exit {
    let (token, tls) = match args.auth.load() {
        Ok(auth) => auth,
        Err(e) => return usage(e),
    };
    eprintln!(
        "listening on {} for {}…",
        args.listen,
        crate::duration::format_duration(args.for_how_long)
    );
    match fleet::list_agents(args.listen, token, tls.as_ref(), args.for_how_long).await {
        Ok((_, seen)) if args.json => {
            for a in &seen {
                say(&serde_json::to_string(a).unwrap_or_default());
            }
            Exit::Ok
        }
        Ok((_, seen)) => {
            let mut t = crate::console::new_table();
            t.set_header(["name", "region", "version", "address", "identity", "state"]);
            for a in &seen {
                t.add_row([
                    &a.name,
                    &a.region,
                    &a.version,
                    &a.address,
                    &a.identity,
                    &a.state,
                ]);
            }
            let refused = seen
                .iter()
                .filter(|a| a.state.starts_with("refused"))
                .count();
            say(&format!(
                "{} agent(s) attached, {refused} refused\n{t}",
                seen.len() - refused
            ));
            Exit::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::of_fleet_error(&e)
        }
    }
}
