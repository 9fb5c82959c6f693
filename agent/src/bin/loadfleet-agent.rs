//! `loadfleet-agent`: dials a controller and runs the load it is assigned.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadfleet_agent::engine::{TimingMode, parse_window};
use loadfleet_agent::exit::Exit;
use loadfleet_agent::{AgentOptions, run_agent};
use tokio_util::sync::CancellationToken;

/// A small, frugal loadfleet load generator. It dials the controller (no
/// inbound port needed), runs its share of each run, streams latency
/// histograms back every second, and waits for the next run.
///
/// Each setting comes from its flag, else from its LOADFLEET_* environment
/// variable (shown with each option), else from the environment file
/// (--env-file, default /etc/loadfleet/agent.env when it exists: KEY=value
/// lines with the same names), else from its default. Under systemd, mTLS
/// files and the token may also come as credentials ($CREDENTIALS_DIRECTORY:
/// ca.pem, agent.pem, agent.key, token).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Controller to dial, e.g. http://10.0.0.5:7700.
    #[arg(long, env = "LOADFLEET_CONTROLLER")]
    controller: String,
    /// Region this agent reports its results under.
    #[arg(long, env = "LOADFLEET_REGION", default_value = "default")]
    region: String,
    /// Name of this agent in reports (default: the host name).
    #[arg(long, env = "LOADFLEET_NAME")]
    name: Option<String>,
    /// Relative share of the fleet's load this agent takes.
    #[arg(long, env = "LOADFLEET_WEIGHT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    weight: u32,
    /// Worker threads for virtual users (default: the number of CPUs).
    #[arg(long, env = "LOADFLEET_WORKERS")]
    workers: Option<usize>,
    /// Exit after one run instead of waiting for the next.
    #[arg(long)]
    once: bool,
    /// Shared fleet token (prefer the environment or --token-file: command
    /// lines are visible to other users of the machine).
    #[arg(long, env = "LOADFLEET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only load these targets: CIDR ranges, IP addresses or host names
    /// (`.example.com` for a domain); repeatable or comma-separated. Checked
    /// on the assignment and on the resolved address at every connect.
    #[arg(
        long = "allow-target",
        env = "LOADFLEET_ALLOW_TARGET",
        value_delimiter = ','
    )]
    allow_targets: Vec<String>,
    /// Load whatever target the controller names. A load agent aims traffic
    /// where it is told: without --allow-target, this must be given
    /// knowingly. It is logged as a warning at start and reported to the
    /// controller (and its audit log).
    #[arg(
        long = "allow-any-target",
        env = "LOADFLEET_ALLOW_ANY_TARGET",
        conflicts_with = "allow_targets"
    )]
    allow_any_target: bool,
    /// Never run more than this many users, whatever a plan asks.
    #[arg(long, env = "LOADFLEET_MAX_USERS")]
    max_users: Option<u32>,
    /// Never start more than this many iterations per second (open model).
    #[arg(long, env = "LOADFLEET_MAX_RPS")]
    max_rps: Option<f64>,
    /// mTLS: the fleet CA certificate (PEM), to verify the controller.
    #[arg(long, env = "LOADFLEET_CA", requires_all = ["cert", "key"])]
    ca: Option<std::path::PathBuf>,
    /// mTLS: this agent's certificate (PEM), from `loadfleet certs agent NAME`.
    #[arg(long, env = "LOADFLEET_CERT", requires = "ca")]
    cert: Option<std::path::PathBuf>,
    /// mTLS: this agent's private key (PEM).
    #[arg(long, env = "LOADFLEET_KEY", requires = "ca")]
    key: Option<std::path::PathBuf>,
    /// File holding the shared fleet token.
    #[arg(long, env = "LOADFLEET_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// Open model: how the generator waits for each arrival's instant.
    /// `timer` (the default): a high-resolution kernel timer to the instant;
    /// arrivals within `--timing-window` of each other share one wake-up
    /// (leaving up to the window late, reported as send lateness), and the
    /// agent is idle between wake-ups. `poll`: sleep to 2 ms before each
    /// instant, then poll until it: within microseconds, but a whole core
    /// busy at 500 arrivals/s per worker.
    #[arg(long, env = "LOADFLEET_TIMING", default_value_t = TimingMode::Timer)]
    timing: TimingMode,
    /// `--timing timer`: arrivals due within this span of the earliest one
    /// waiting share its wake-up (`500us`, `2ms`; `0` gives every arrival
    /// its own). A longer window costs less CPU per arrival at high rates
    /// and sends more of them late, by at most the window.
    #[arg(long, env = "LOADFLEET_TIMING_WINDOW", default_value = "750us", value_parser = parse_window)]
    timing_window: Duration,
    /// Replaced by `--timing`: the default timing is frugal now. Accepted,
    /// with a warning, so that older settings files still start an agent.
    #[arg(long, env = "LOADFLEET_FRUGAL_TIMING", hide = true)]
    frugal_timing: bool,
    /// Longest wait between attempts to reach the controller, in seconds.
    #[arg(long, default_value_t = 3)]
    max_backoff_s: u64,
    /// Settings file of KEY=value lines (the LOADFLEET_* names), used for
    /// what neither a flag nor the environment sets. Default:
    /// /etc/loadfleet/agent.env when it exists.
    #[arg(long, env = "LOADFLEET_ENV_FILE")]
    env_file: Option<std::path::PathBuf>,
    /// Check the configuration and certificates and that the controller
    /// answers (for mTLS, that it accepts this agent's certificate), then
    /// exit: 0 when all is well, 1 when the controller cannot be reached, 2
    /// for a bad configuration. It never joins a run.
    #[arg(long)]
    check: bool,
    /// Answer `GET /healthz` with 200 on this address (for Kubernetes
    /// probes), e.g. 0.0.0.0:9700. Off by default: an agent listens on
    /// nothing unless asked.
    #[arg(long, env = "LOADFLEET_HEALTH_LISTEN")]
    health_listen: Option<std::net::SocketAddr>,
    /// Observe this host instead of loading: run it on the system under
    /// test. It sends no request (it needs no --allow-target) and reports
    /// the host's CPU (user, system, iowait, steal), load average, memory,
    /// disk and network bytes every interval while runs go on; the
    /// controller shows them beside the latencies and flags runs whose host
    /// was disturbed. It is never counted as a load agent.
    #[arg(long, env = "LOADFLEET_OBSERVE", conflicts_with_all = ["allow_targets", "allow_any_target", "max_users", "max_rps"])]
    observe: bool,
    /// With --observe: report the processes of this name apart (their CPU
    /// and memory), e.g. php-fpm, postgres; repeatable or comma-separated.
    /// A name is the process's command name as `ps -o comm` shows it (at
    /// most 15 characters).
    #[arg(
        long = "observe-process",
        env = "LOADFLEET_OBSERVE_PROCESS",
        value_delimiter = ',',
        requires = "observe"
    )]
    observe_processes: Vec<String>,
}

const DEFAULT_ENV_FILE: &str = "/etc/loadfleet/agent.env";

/// Adds the environment file's settings to the command line, for every
/// option that neither a flag nor an environment variable sets: flags win,
/// then the environment, then the file.
fn with_env_file(mut argv: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    use clap::CommandFactory;
    let given = |long: &str| {
        argv.iter().any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}") || a.starts_with(&format!("--{long}="))
        })
    };
    let explicit = argv
        .iter()
        .position(|a| a == "--env-file")
        .and_then(|i| argv.get(i + 1))
        .map(std::path::PathBuf::from)
        .or_else(|| {
            argv.iter()
                .find_map(|a| a.to_str()?.strip_prefix("--env-file=").map(Into::into))
        })
        .or_else(|| std::env::var_os("LOADFLEET_ENV_FILE").map(Into::into));
    let path = match explicit {
        Some(p) => p,
        None if std::path::Path::new(DEFAULT_ENV_FILE).is_file() => DEFAULT_ENV_FILE.into(),
        None => return Ok(argv),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the environment file {}: {e}", path.display()))?;
    let mut file = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "{}:{}: expected KEY=value, found `{line}`",
                path.display(),
                n + 1
            ));
        };
        let v = v.trim().trim_matches('"');
        file.insert(k.trim().to_string(), v.to_string());
    }
    let mut extra = Vec::new();
    for arg in Args::command().get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(value) = env.to_str().and_then(|e| file.get(e)) else {
            continue;
        };
        if std::env::var_os(env).is_some() || given(long) {
            continue;
        }
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            // A switch: on when the file says so.
            if matches!(
                value.to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            ) {
                extra.push(format!("--{long}").into());
            }
        } else {
            extra.push(format!("--{long}={value}").into());
        }
    }
    argv.splice(1..1, extra);
    Ok(argv)
}

/// systemd's credentials (`LoadCredential=`): files named `ca.pem`,
/// `agent.pem`, `agent.key` and `token` in `$CREDENTIALS_DIRECTORY` are
/// used when the matching option is not given.
fn from_credentials(args: &mut Args) {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from) else {
        return;
    };
    let found = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    if args.ca.is_none()
        && let (Some(ca), Some(cert), Some(key)) =
            (found("ca.pem"), found("agent.pem"), found("agent.key"))
    {
        args.ca = Some(ca);
        args.cert = Some(cert);
        args.key = Some(key);
    }
    if args.token.is_none() && args.token_file.is_none() {
        args.token_file = found("token");
    }
}

fn main() -> ExitCode {
    let argv = match with_env_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config.into();
        }
    };
    let mut args = Args::parse_from(argv);
    from_credentials(&mut args);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if args.frugal_timing {
        tracing::warn!(
            "--frugal-timing (LOADFLEET_FRUGAL_TIMING) is no longer needed and is ignored: the \
             default `--timing timer` sleeps on a high-resolution timer and is idle between \
             arrivals"
        );
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                eprintln!("error: cannot read token file {}: {e}", path.display());
                return Exit::Config.into();
            }
        },
        (None, None) => None,
    };
    let tls = match (&args.ca, &args.cert, &args.key) {
        (Some(ca), Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            match (read(ca), read(cert), read(key)) {
                (Ok(ca_pem), Ok(cert_pem), Ok(key_pem)) => {
                    let tls = loadfleet_agent::AgentTls {
                        ca_pem,
                        cert_pem,
                        key_pem,
                    };
                    if let Err((part, why)) = tls.validate() {
                        let path = match part {
                            "ca" => ca,
                            "cert" => cert,
                            _ => key,
                        };
                        eprintln!("error: --{part} {}: {why}", path.display());
                        return Exit::Config.into();
                    }
                    Some(tls)
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    eprintln!("error: {e}");
                    return Exit::Config.into();
                }
            }
        }
        _ => None,
    };
    let mut policy = loadfleet_agent::policy::Policy {
        max_users: args.max_users,
        max_rps: args.max_rps,
        ..Default::default()
    };
    for entry in &args.allow_targets {
        if let Err(e) = policy.allow(entry) {
            eprintln!("error: {e}");
            return Exit::Config.into();
        }
    }
    if let Some(long) = args
        .observe_processes
        .iter()
        .find(|n| n.is_empty() || n.len() > 15)
    {
        eprintln!(
            "error: --observe-process `{long}`: a process's command name has 1 to 15 characters (as `ps -o comm` shows it)"
        );
        return Exit::Config.into();
    }
    if !policy.restricts() && !args.allow_any_target && !args.observe {
        eprintln!(
            "error: this agent would load whatever its controller names. Say what it may load: \
             --allow-target (or LOADFLEET_ALLOW_TARGET) with CIDR ranges, addresses or host names, \
             e.g. --allow-target 10.0.0.0/8,.staging.example.com; or, knowingly, --allow-any-target"
        );
        return Exit::Config.into();
    }
    if args.allow_any_target {
        tracing::warn!(
            "--allow-any-target: this agent loads whatever target its controller names \
             (the controller is told, and its audit log records it)"
        );
    }
    let opts = AgentOptions {
        policy,
        tls,
        token,
        controller: args.controller,
        name: args.name.unwrap_or_else(default_name),
        region: args.region,
        weight: args.weight,
        workers,
        once: args.once,
        timing: args.timing.with_window(args.timing_window),
        observe: args.observe.then(|| args.observe_processes.clone()),
        max_backoff: Duration::from_secs(args.max_backoff_s.max(1)),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return Exit::Stopped.into();
        }
    };
    if args.check {
        return rt.block_on(async {
            let outcome = loadfleet_agent::session::check(&opts).await;
            match &outcome {
                Ok(what) => {
                    use std::io::Write;
                    let _ = writeln!(std::io::stdout().lock(), "ok: {what}");
                }
                Err(e) => eprintln!("error: {e}"),
            }
            Exit::of_check(&outcome).into()
        });
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    let health = args.health_listen;
    rt.block_on(async move {
        if let Some(addr) = health {
            match loadfleet_agent::health::serve(addr).await {
                Ok(bound) => tracing::info!(%bound, "health probe on http://{bound}/healthz"),
                Err(e) => {
                    eprintln!("error: cannot listen for health probes on {addr}: {e}");
                    return Exit::Config.into();
                }
            }
        }
        // Ctrl-C, or SIGTERM from systemd or Kubernetes: stop all load, exit.
        tokio::spawn(async move {
            loadfleet_agent::signal::stop_signal().await;
            on_signal.cancel();
        });
        let outcome = run_agent(opts, shutdown).await;
        if let Err(e) = &outcome {
            eprintln!("error: {e}");
        }
        Exit::of_run(&outcome).into()
    })
}

/// The host's name: /etc/hostname, else $HOSTNAME (or %COMPUTERNAME% on
/// Windows), else agent-PID.
fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("agent-{}", std::process::id()))
}
