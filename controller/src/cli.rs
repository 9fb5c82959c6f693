//! The `loadfleet` command line: arguments become [`RunOptions`], results
//! become outputs and an exit code. The binary only calls [`main_with`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadfleet_agent::engine::Timing;
use tokio_util::sync::CancellationToken;

use crate::duration::parse_duration;
use crate::fleet::{self, LocalAgent, RunOptions, RunResult, RunStatus};
use crate::output::{self, Summary};
use crate::plan::{self, Plan};
use crate::progress::ProgressMode;

/// Exit code: the run completed without errors.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run completed, but some requests failed (or it was interrupted).
pub const EXIT_ERRORS: u8 = 1;
/// Exit code: the plan or the command line is wrong; nothing was sent.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the fleet failed (agents never attached, all agents lost).
pub const EXIT_FLEET: u8 = 3;

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
        /// The plan file (TOML).
        plan: PathBuf,
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
    /// Rebuild report.html of a run directory from its summary.json alone.
    Report {
        /// The run directory.
        run: PathBuf,
    },
    /// Listen for a few seconds and list the agents that attach (name,
    /// region, version, address, identity, state); offers them no run.
    Agents(AgentsArgs),
    /// The Moodle journey at 20, 30 and 40 users against an in-process test
    /// target, its cache on shared file storage then on Redis, on two local
    /// agents over gRPC; prints the two side by side.
    Demo(DemoArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The plan file (TOML).
    pub plan: PathBuf,
    /// Run directory (default: runs/<UTC timestamp>-<plan name>/; a sweep's
    /// series directory ends in -series).
    #[arg(long)]
    pub out: Option<PathBuf>,
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
    /// Agents to run in this process (default: 1 without --expect-agents, else 0).
    #[arg(long)]
    pub local_agents: Option<usize>,
    /// How long to wait for the expected agents, e.g. 60s or 5m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub wait_agents: Duration,
    /// Worker threads of each local agent (default: the number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Open model, local agents: wait for arrivals on the millisecond timer
    /// only (up to ~2 ms late, reported as send lateness) instead of polling
    /// the last 2 ms before each arrival, as `loadfleet-agent
    /// --frugal-timing` does.
    #[arg(long)]
    pub frugal_timing: bool,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
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
    /// How long an agent's lease lasts without renewal (renewed every second
    /// while a run is active); an agent whose lease runs out stops all load.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Append one JSON line per run here: who ran what, against which
    /// target, when and how it ended (default: audit.jsonl beside the run
    /// directory).
    #[arg(long, env = "LOADFLEET_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
}

impl FleetArgs {
    /// The settings, or a usage error.
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
        let workers = self.workers.unwrap_or_else(default_workers);
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
        if token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(
                "the fleet token must be at least 16 characters (try `openssl rand -hex 32`)"
                    .into(),
            );
        }
        if self.lease < Duration::from_secs(2) {
            return Err("--lease must be at least 2s (it is renewed every second)".into());
        }
        let tls = self
            .tls_dir
            .as_deref()
            .map(crate::certs::ControllerTls::load)
            .transpose()?;
        Ok(RunSettings {
            tls,
            token,
            lease: self.lease,
            audit_log: self.audit_log.clone(),
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            expect_agents: self.expect_agents,
            local_agents: (0..local)
                .map(|i| LocalAgent {
                    name: if local == 1 {
                        "local".into()
                    } else {
                        format!("local-{}", i + 1)
                    },
                    region: "local".into(),
                    workers,
                    timing: if self.frugal_timing {
                        Timing::Frugal
                    } else {
                        Timing::Precise
                    },
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

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a CA and the controller's certificate in DIR.
    Init {
        dir: PathBuf,
        /// Host names or IP addresses agents use to reach the controller; repeatable.
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Create DIR/agents/NAME.pem and NAME.key for agent NAME, signed by DIR's CA.
    Agent {
        name: String,
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run directories; the first is the baseline.
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<PathBuf>,
    /// Percent change per step that counts as worse or better.
    #[arg(long, default_value_t = 2.0)]
    pub step_threshold: f64,
    /// Percent change of all steps together that counts as worse or better.
    #[arg(long, default_value_t = 4.0)]
    pub overall_threshold: f64,
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
    /// Shared fleet token (or LOADFLEET_TOKEN).
    #[arg(long, env = "LOADFLEET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the shared fleet token.
    #[arg(long, env = "LOADFLEET_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// mTLS directory from `loadfleet certs init`.
    #[arg(long, env = "LOADFLEET_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// One JSON object per agent instead of a table.
    #[arg(long)]
    pub json: bool,
}

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

/// Parses `args` and runs the command; returns the process exit code.
pub async fn main_with(
    cli: Cli,
    interrupt: CancellationToken,
    hard_interrupt: CancellationToken,
) -> ExitCode {
    match cli.command {
        Command::Validate { plan } => match plan::load(&plan) {
            Ok(p) => {
                say(&describe(&p));
                ExitCode::from(EXIT_OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run(args) => usage_or(run_command(args, interrupt, hard_interrupt).await),
        Command::Capacity(args) => {
            usage_or(capacity_command(args, interrupt, hard_interrupt).await)
        }
        Command::Compare(args) => ExitCode::from(compare_runs(&args)),
        Command::Certs(CertsCommand::Init { dir, hosts }) => match crate::certs::init(&dir, &hosts)
        {
            Ok(()) => {
                say(&format!(
                    "fleet CA and controller certificate (for {}) in {}; keep ca.key safe\nnext: loadfleet certs agent NAME --dir {}",
                    hosts.join(", "),
                    dir.display(),
                    dir.display()
                ));
                ExitCode::from(EXIT_OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Certs(CertsCommand::Agent { name, dir }) => match crate::certs::agent(&dir, &name)
        {
            Ok((cert, key)) => {
                say(&format!(
                    "agent {name}: {} and {}",
                    cert.display(),
                    key.display()
                ));
                ExitCode::from(EXIT_OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Agents(args) => ExitCode::from(list_agents(args).await),
        Command::Report { run } => match output::read_summary(&run) {
            Ok(summary) => match output::report::render(&summary) {
                Ok(html) => match std::fs::write(run.join("report.html"), html) {
                    Ok(()) => {
                        say(&format!("report: {}", run.join("report.html").display()));
                        ExitCode::from(EXIT_OK)
                    }
                    Err(e) => {
                        eprintln!("error: cannot write the report: {e}");
                        ExitCode::from(EXIT_FLEET)
                    }
                },
                Err(e) => {
                    eprintln!("error: cannot render the report: {e}");
                    ExitCode::from(EXIT_FLEET)
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Demo(args) => demo(args, interrupt, hard_interrupt).await,
    }
}

/// Maps a command's outcome to an exit code: a usage error (the plan or the
/// command line; nothing was sent) is printed and exits 2.
fn usage_or(outcome: Result<u8, String>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

async fn run_command(
    args: RunArgs,
    interrupt: CancellationToken,
    hard: CancellationToken,
) -> Result<u8, String> {
    let plan = plan::load(&args.plan).map_err(|e| e.to_string())?;
    let settings = args.fleet.settings(interrupt, hard)?;
    Ok(match plan.sweep.clone() {
        Some(sweep) => {
            crate::series::run_series(&settings, &plan, &sweep, args.out, &args.plan).await
        }
        None => {
            run_and_report(settings.options(plan), args.out, Some(&args.plan))
                .await
                .0
        }
    })
}

async fn capacity_command(
    args: CapacityArgs,
    interrupt: CancellationToken,
    hard: CancellationToken,
) -> Result<u8, String> {
    let plan = plan::load(&args.plan).map_err(|e| e.to_string())?;
    let search = crate::capacity::Search::new(&plan, &args)?;
    let settings = args.fleet.settings(interrupt, hard)?;
    Ok(search.run(&settings, &plan, args.out).await)
}

/// Prints a line to stdout; a closed pipe (`| head`) is not an error.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn compare_runs(args: &CompareArgs) -> u8 {
    let mut runs = Vec::new();
    for dir in &args.runs {
        match output::read_summary(dir) {
            Ok(s) => runs.push((dir.display().to_string(), s)),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let limits = crate::compare::Limits {
        step: args.step_threshold,
        overall: args.overall_threshold,
    };
    let (base_name, base) = &runs[0];
    let comparisons: Vec<crate::compare::Comparison> = runs[1..]
        .iter()
        .map(|(name, s)| crate::compare::compare((base_name, base), (name, s), limits))
        .collect();
    for c in &comparisons {
        say(&crate::compare::render(c, limits));
    }
    if let Some(path) = &args.html {
        let summaries: Vec<(&str, &Summary)> = runs.iter().map(|(n, s)| (n.as_str(), s)).collect();
        match output::report::render_comparison(&summaries, &comparisons, limits) {
            Ok(html) => {
                if let Err(e) = std::fs::write(path, html) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return EXIT_FLEET;
                }
                say(&format!("comparison report: {}", path.display()));
            }
            Err(e) => {
                eprintln!("error: cannot render the comparison: {e}");
                return EXIT_FLEET;
            }
        }
    }
    let worse: usize = comparisons.iter().map(|c| c.worse()).sum();
    if args.fail_on_regression && worse > 0 {
        eprintln!("{worse} change(s) are worse than the thresholds");
        return EXIT_ERRORS;
    }
    EXIT_OK
}

/// How to run plans: everything but the plan itself.
pub struct RunSettings {
    pub token: Option<String>,
    pub tls: Option<crate::certs::ControllerTls>,
    pub lease: Duration,
    pub listen: SocketAddr,
    pub expect_agents: usize,
    pub local_agents: Vec<LocalAgent>,
    pub wait_for_agents: Duration,
    pub progress: ProgressMode,
    pub interrupt: CancellationToken,
    pub hard_interrupt: CancellationToken,
    pub audit_log: Option<PathBuf>,
}

impl RunSettings {
    /// Options to run `plan` with these settings.
    pub fn options(&self, plan: Plan) -> RunOptions {
        RunOptions {
            plan,
            listen: self.listen,
            expect_agents: self.expect_agents,
            local_agents: self.local_agents.clone(),
            wait_for_agents: self.wait_for_agents,
            start_delay: Duration::from_millis(250),
            progress: self.progress,
            interrupt: self.interrupt.clone(),
            hard_interrupt: self.hard_interrupt.clone(),
            on_listening: None,
            token: self.token.clone(),
            tls: self.tls.clone(),
            lease: self.lease,
            audit_log: self.audit_log.clone(),
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A short description of what a plan will do.
pub fn describe(p: &Plan) -> String {
    let steps: usize = p.scenarios.iter().map(|s| s.steps.len()).sum();
    let sweep = p.sweep.as_ref().map_or_else(String::new, |s| {
        let values: Vec<String> = s.values.iter().map(|v| v.to_string()).collect();
        format!(" (a sweep: one run each at {})", values.join(", "))
    });
    format!(
        "plan \"{}\" is valid: {}{sweep}; {} scenario(s), {steps} step(s); target {}",
        p.name,
        p.load.describe(),
        p.scenarios.len(),
        p.target.base_url
    )
}

/// Runs, prints the table, writes the run directory, and maps the outcome to an exit code.
pub async fn run_and_report(
    opts: RunOptions,
    out: Option<PathBuf>,
    plan_file: Option<&Path>,
) -> (u8, Option<Summary>) {
    let out =
        out.unwrap_or_else(|| plan::default_out_dir(&opts.plan, time::OffsetDateTime::now_utc()));
    // Fail before sending anything if the results could not be kept.
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create run directory {}: {e}", out.display());
        return (EXIT_USAGE, None);
    }
    let audit_path = opts.audit_log.clone().unwrap_or_else(|| {
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("audit.jsonl")
    });
    let audit_plan =
        crate::audit::PlanFacts::of(&opts.plan, opts.token.is_some(), opts.tls.is_some());
    let began = time::OffsetDateTime::now_utc();
    let outcome = fleet::execute(opts).await;
    crate::audit::append(&audit_path, &audit_plan, began, &out, &outcome);
    match outcome {
        Ok(result) => {
            let summary = Summary::of(&result);
            (finish(&result, &summary, &out, plan_file), Some(summary))
        }
        Err(e) => {
            eprintln!("error: {e}");
            // Nothing ran: leave no empty run directory behind.
            let _ = std::fs::remove_dir(&out);
            let code = match e {
                fleet::FleetError::Insecure { .. } => EXIT_USAGE,
                _ => EXIT_FLEET,
            };
            (code, None)
        }
    }
}

fn finish(result: &RunResult, summary: &Summary, out: &Path, plan_file: Option<&Path>) -> u8 {
    say(output::table::render(summary).trim_end());
    if let Some(p) = plan_file {
        let _ = std::fs::copy(p, out.join("plan.toml"));
    }
    match output::write_run_dir(result, summary, out) {
        Ok(files) => say(&format!(
            "run directory: {}\n  summary: {}\n  histograms: {}\n  report: {}",
            files.dir.display(),
            files.summary.display(),
            files.hlog.display(),
            files.report.display()
        )),
        Err(e) => {
            eprintln!("error: cannot write results to {}: {e}", out.display());
            return EXIT_FLEET;
        }
    }
    for a in result
        .agents
        .iter()
        .filter(|a| a.end != fleet::AgentEnd::Finished)
    {
        eprintln!(
            "warning: agent {} ({}) did not finish: {:?} {}",
            a.name, a.region, a.end, a.note
        );
    }
    match result.status {
        RunStatus::Completed => EXIT_OK,
        RunStatus::CompletedWithErrors
        | RunStatus::ThresholdsFailed
        | RunStatus::Degraded
        | RunStatus::Interrupted => EXIT_ERRORS,
    }
}

/// `loadfleet agents`: who attaches within a few seconds.
async fn list_agents(args: AgentsArgs) -> u8 {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                eprintln!("error: cannot read token file {}: {e}", path.display());
                return EXIT_USAGE;
            }
        },
        (None, None) => None,
    };
    let tls = match args
        .tls_dir
        .as_deref()
        .map(crate::certs::ControllerTls::load)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
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
            EXIT_OK
        }
        Ok((_, seen)) => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
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
            say(&format!("{} agent(s) attached\n{t}", seen.len()));
            EXIT_OK
        }
        Err(e @ fleet::FleetError::Insecure { .. }) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FLEET
        }
    }
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

/// The original question, on one machine: the Moodle journey at 20, 30 and
/// 40 users against the test target with its application cache on shared
/// file storage, then on Redis; two agents in two regions each time.
async fn demo(
    args: DemoArgs,
    interrupt: CancellationToken,
    hard_interrupt: CancellationToken,
) -> ExitCode {
    use loadfleet_testbed::moodle::{CacheStore, MoodleConfig};
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
    };
    // Quick mode compresses the ramp 10 times; the cache costs stretch by
    // the same factor in full mode, so both tell the same story.
    let scale = if args.full { 10 } else { 1 };
    let stores = [
        ("shared-file", CacheStore::shared_file_scaled(scale)),
        ("redis", CacheStore::redis_scaled(scale)),
    ];
    let mut worst = EXIT_OK;
    let mut series = Vec::new();
    for (label, cache) in stores {
        let config = loadfleet_testbed::Config {
            moodle: Some(MoodleConfig {
                cache,
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
                    return ExitCode::from(EXIT_FLEET);
                }
            };
        let dir = out.join(label);
        let plan_file = dir.join("plan.toml");
        if let Err(e) = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&plan_file, demo_plan(&bed.base_url(), !args.full)))
            .and_then(|()| std::fs::write(dir.join("users.csv"), MOODLE_USERS))
        {
            eprintln!("error: cannot write to {}: {e}", dir.display());
            return ExitCode::from(EXIT_USAGE);
        }
        let plan = match plan::load(&plan_file) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let Some(sweep) = plan.sweep.clone() else {
            eprintln!("error: the demo plan has no sweep");
            return ExitCode::from(EXIT_USAGE);
        };
        say(&format!(
            "demo: Moodle journey, application cache on {label}: test target on {}; \
             two agents (regions region-a, region-b) dial the controller over gRPC",
            bed.base_url()
        ));
        let code = crate::series::run_series(
            &settings,
            &plan,
            &sweep,
            Some(dir.join("series")),
            &plan_file,
        )
        .await;
        worst = worst.max(code);
        bed.stop().await;
        let json = std::fs::read_to_string(dir.join("series/series.json")).unwrap_or_default();
        series.push((label, serde_json::from_str::<serde_json::Value>(&json).ok()));
        if settings.interrupt.is_cancelled() {
            break;
        }
    }
    let table = demo_table(&series);
    say(&table);
    let _ = std::fs::write(out.join("demo.txt"), format!("{table}\n"));
    say(&format!(
        "demo directory: {}\n  one series per cache store, one run directory per user count \
         (summary.json, latency.hlog, report.html)\n  compare two runs: loadfleet compare {}/shared-file/series/users-30 {}/redis/series/users-30",
        out.display(),
        out.display(),
        out.display()
    ));
    ExitCode::from(worst)
}

/// Users against p50, p95 and errors, one column group per cache store.
fn demo_table(series: &[(&str, Option<serde_json::Value>)]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let mut header = vec!["users".to_string()];
    for (label, _) in series {
        for col in ["p50 ms", "p95 ms", "errors"] {
            header.push(format!("{label} {col}"));
        }
    }
    t.set_header(header);
    let runs = |s: &Option<serde_json::Value>| {
        s.as_ref()
            .and_then(|v| v["runs"].as_array().cloned())
            .unwrap_or_default()
    };
    let rows = series.first().map_or(0, |(_, s)| runs(s).len());
    for i in 0..rows {
        let mut row = Vec::new();
        for (k, (_, s)) in series.iter().enumerate() {
            let r = runs(s).get(i).cloned().unwrap_or_default();
            if k == 0 {
                row.push(r["value"].as_f64().map_or("-".into(), |v| v.to_string()));
            }
            let ms = |key: &str| r[key].as_f64().map_or("-".into(), |v| format!("{v:.1}"));
            row.push(ms("p50_ms"));
            row.push(ms("p95_ms"));
            row.push(r["errors"].as_u64().map_or("-".into(), |v| v.to_string()));
        }
        t.add_row(row);
    }
    format!(
        "Moodle journey, shared file storage versus Redis as the application cache (latency of all steps):\n{t}"
    )
}
