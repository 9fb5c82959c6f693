//! One run, from the controller's side: listen, gather the fleet, deal the
//! schedule, start everyone together, merge what they send.
//!
//! A single owner task holds the fleet and the merged data; the gRPC
//! handlers only forward [`Event`]s to it over a bounded channel. The run
//! goes through its phases in order, one file each: [`gather`] the agents,
//! [`deal`] them the schedule, [`start`] them together, [`drive`] the run
//! (the [`drive::Run`] that owns its state), and [`farewell`]: how it ended.

mod agent;
mod deal;
mod drive;
mod farewell;
mod gather;
mod listing;
mod observer;
mod refusals;
mod start;

pub use crate::outcome::{
    Abort, AgentEnd, AgentFacts, AgentReport, FleetError, RunResult, RunStatus, StartNote,
};
pub use listing::{SeenAgent, list_agents};

use std::net::SocketAddr;
use std::time::Duration;

use loadfleet_agent::{AgentOptions, run_agent};
use loadfleet_proto::v1::{self, controller_message, fleet_server::FleetServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::auth::{Gate, check_listen, server_tls};
use crate::duration::micros;
use crate::plan::Plan;
use crate::progress::{Progress, ProgressMode};
use crate::service::{Event, FleetService, MAX_MESSAGE_BYTES, Outbound};

/// Length of one reporting interval.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// An agent the controller starts in its own process.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    pub name: String,
    pub region: String,
    pub workers: usize,
    /// How the open model waits for each arrival's instant.
    pub timing: loadfleet_agent::engine::Timing,
}

/// A callback for the start of load (the audit log's `started` line).
pub struct OnStart(pub Box<dyn FnOnce(&StartNote) + Send>);

impl std::fmt::Debug for OnStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStart")
    }
}

/// How to run a plan.
#[derive(Debug)]
pub struct RunOptions {
    pub plan: Plan,
    /// Where agents dial in (port 0 for any free port).
    pub listen: SocketAddr,
    /// Remote agents to wait for.
    pub expect_agents: usize,
    /// Observers (`loadfleet-agent --observe`) to wait for; others that
    /// attach before the start are taken along too.
    pub expect_observers: usize,
    /// When an observed host counts as disturbed.
    pub host_bounds: crate::hosts::Bounds,
    /// Agents run in this process (the embedded default), dialing `listen`.
    pub local_agents: Vec<LocalAgent>,
    /// How long to wait for the expected agents.
    pub wait_for_agents: Duration,
    /// Delay between the start signal and the schedule's zero.
    pub start_delay: Duration,
    pub progress: ProgressMode,
    /// First cancellation: stop gracefully (users finish their step).
    pub interrupt: CancellationToken,
    /// Stop at once.
    pub hard_interrupt: CancellationToken,
    /// Told the bound address once the controller listens.
    pub on_listening: Option<oneshot::Sender<SocketAddr>>,
    /// Shared token agents must present.
    pub token: Option<String>,
    /// mTLS: only agents with a certificate from this CA, naming them, attach.
    pub tls: Option<crate::certs::ControllerTls>,
    /// How long an agent's lease lasts without renewal.
    pub lease: Duration,
    /// The audit log (JSON lines) this run appends to; `None`: `audit.jsonl`
    /// beside the run directory.
    pub audit_log: Option<std::path::PathBuf>,
    /// Who runs it, for the audit log (`--operator`); `None`: the OS user.
    pub operator: Option<String>,
    /// The agents of the previous run of a series or capacity search (name,
    /// region): one that does not come back is named.
    pub previous_agents: Vec<(String, String)>,
    /// Where the merged figures are published while the run goes on.
    pub live: Option<std::sync::Arc<crate::live::Live>>,
    /// Which run of a series or capacity search this is (`users-30`), for
    /// the dashboard.
    pub label: Option<String>,
    /// Called once, as the start signal goes out: the moment load begins.
    pub on_start: Option<OnStart>,
    /// Keep the run's journal in this directory (the run directory), so a
    /// killed controller's results can be rebuilt (see [`crate::journal`]).
    pub journal: Option<std::path::PathBuf>,
}

/// Names the attached agents in an error that ended a run before its start.
fn with_attached(e: FleetError, agents: &[agent::Agent]) -> FleetError {
    let attached = agents.iter().map(agent::Agent::facts).collect();
    match e {
        FleetError::AgentFailed { agent, reason, .. } => FleetError::AgentFailed {
            agent,
            reason,
            attached,
        },
        FleetError::AgentLeft { agent, reason, .. } => FleetError::AgentLeft {
            agent,
            reason,
            attached,
        },
        other => other,
    }
}

fn reject(outbound: &Outbound, reason: &str) {
    let body = controller_message::Body::Reject(v1::Reject {
        reason: reason.to_string(),
    });
    let _ = outbound.try_send(Box::new(v1::ControllerMessage { body: Some(body) }));
}

type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Serves the fleet protocol on `listener`; returns the events of attached
/// agents, a token that stops the server, and its task.
fn start_server(
    listener: TcpListener,
    token: Option<String>,
    tls: Option<&crate::certs::ControllerTls>,
) -> Result<(mpsc::Receiver<Event>, CancellationToken, ServerTask), FleetError> {
    let (events_tx, events) = mpsc::channel::<Event>(1024);
    let server_stop = CancellationToken::new();
    let service = FleetServer::new(FleetService::new(events_tx, Gate::new(token, tls)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        builder = builder
            .tls_config(server_tls(t))
            .map_err(|e| FleetError::Unfit(format!("TLS setup: {e}")))?;
    }
    let server = tokio::spawn(
        builder
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                server_stop.clone().cancelled_owned(),
            ),
    );
    Ok((events, server_stop, server))
}

/// Runs a plan on the fleet and returns what was measured.
pub async fn execute(mut opts: RunOptions) -> Result<RunResult, FleetError> {
    check_listen(opts.listen, opts.token.is_some(), opts.tls.is_some())?;
    if opts.tls.is_some() && !opts.local_agents.is_empty() {
        return Err(FleetError::Unfit(
            "agents in this process have no certificates: with --tls-dir, start loadfleet-agent processes".into(),
        ));
    }
    // A capacity search or a sweep can ask for more users than a unique data
    // file has rows; say so before anything is sent.
    if let Some(d) = opts
        .plan
        .data
        .iter()
        .find(|d| d.mode == v1::DataMode::Unique && (d.rows.len() as u64) < opts.plan.users())
    {
        return Err(FleetError::Unfit(format!(
            "data \"{}\" is unique (one row per user) but has {} rows for {} users",
            d.name,
            d.rows.len(),
            opts.plan.users()
        )));
    }
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| FleetError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| FleetError::Listen {
        addr: opts.listen,
        source,
    })?;
    let (mut events, server_stop, server) =
        start_server(listener, opts.token.clone(), opts.tls.as_ref())?;
    if let Some(tx) = opts.on_listening.take() {
        let _ = tx.send(addr);
    }

    let local_stop = CancellationToken::new();
    let mut local_tasks = Vec::new();
    for la in &opts.local_agents {
        let agent_opts = AgentOptions {
            controller: format!("http://{addr}"),
            name: la.name.clone(),
            region: la.region.clone(),
            weight: 1,
            workers: la.workers,
            once: true,
            max_backoff: Duration::from_millis(500),
            timing: la.timing,
            token: opts.token.clone(),
            tls: None,
            policy: Default::default(),
            observe: None,
        };
        local_tasks.push(tokio::spawn(run_agent(agent_opts, local_stop.clone())));
    }

    let progress = Progress::new(opts.progress);
    let result = drive(&mut opts, &mut events, &progress, addr).await;
    progress.finish();

    // Closing the agents' streams tells them the run is over.
    drop(events);
    server_stop.cancel();
    local_stop.cancel();
    for t in local_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    result
}

async fn drive(
    opts: &mut RunOptions,
    events: &mut mpsc::Receiver<Event>,
    progress: &Progress,
    addr: SocketAddr,
) -> Result<RunResult, FleetError> {
    // The controller's clock for start synchronization (monotonic).
    let clock = Instant::now();
    let expected = opts.expect_agents + opts.local_agents.len();
    if opts.expect_agents > 0 || opts.expect_observers > 0 {
        // Always printed (also with --quiet): scripts read the port from it.
        eprintln!(
            "loadfleet: listening on {addr}; waiting for {expected} agent(s){}",
            if opts.expect_observers > 0 {
                format!(" and {} observer(s)", opts.expect_observers)
            } else {
                String::new()
            }
        );
    }
    let mut observers = Vec::new();
    let mut agents = gather::gather(opts, events, progress, expected, addr, &mut observers).await?;
    // Deal in a stable order, whatever order the agents attached in.
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    let plan = opts.plan.clone();
    let run_id = format!(
        "{}-{:x}",
        plan.name,
        time::OffsetDateTime::now_utc().unix_timestamp_nanos() & 0xffff_ffff
    );
    let seed = plan.seed.unwrap_or_else(fresh_seed);
    deal::deal(&plan, &mut agents, &run_id, seed)?;
    deal::wait_ready(opts, events, &mut agents, &run_id)
        .await
        .map_err(|e| with_attached(e, &agents))?;
    start::sync_clocks(opts, events, &mut agents, clock)
        .await
        .map_err(|e| with_attached(e, &agents))?;
    let (start, started_at) =
        start::start_all(&mut agents, &run_id, clock, opts.start_delay, opts.lease);
    for o in &mut observers {
        if !o.observe(
            &run_id,
            opts.lease,
            plan.max_run() + Duration::from_secs(15),
        ) {
            progress.note(&format!(
                "observer {} left before the load started",
                o.report.name
            ));
        }
    }
    if let Some(OnStart(f)) = opts.on_start.take() {
        f(&StartNote {
            run_id: run_id.clone(),
            started_at,
            agents: agents.iter().map(agent::Agent::facts).collect(),
        });
    }
    let journal = opts.journal.as_deref().map(|dir| {
        crate::journal::Writer::start(
            dir,
            &crate::journal::Header {
                schema: crate::journal::SCHEMA.into(),
                run_id: run_id.clone(),
                started_at: started_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                facts: crate::facts::RunFacts::of(&plan),
                step_names: plan.step_names.clone(),
                groups: plan.groups.clone(),
                metrics: plan.metrics.clone(),
                interval_s: INTERVAL.as_secs_f64(),
                seed,
                agents: agents
                    .iter()
                    .map(|a| crate::journal::JournalAgent {
                        name: a.name.clone(),
                        region: a.region.clone(),
                        address: a.peer.clone(),
                        identity: a.identity.to_string(),
                        targets: a.targets.clone(),
                        timing: a.timing.clone(),
                        users: a.users,
                        load_share: a.load_share,
                    })
                    .collect(),
                scheduled_s: plan.scheduled_duration().map(|d| d.as_secs_f64()),
            },
        )
    });
    let mut run = drive::Run::new(run_id, plan, start, opts.lease, agents, progress, journal);
    // Closed intervals' records go to the run directory, not memory.
    if let Some(dir) = opts.journal.as_deref() {
        run.collector.spill_to(dir);
    }
    run.observers = observers;
    run.host_bounds = opts.host_bounds;
    run.live = opts.live.clone();
    run.label = opts.label.clone();
    run.drive(events, &opts.interrupt, &opts.hard_interrupt)
        .await;
    if let Some(live) = &opts.live {
        live.publish_final(&run.families()).await;
        let mut s = run.snapshot(&[]);
        s.whole_run(&run.collector);
        s.state = "stopping".into();
        live.show(s);
    }
    run.finish(addr, started_at, seed)
}

/// A seed for a run whose plan names none: the clock's nanoseconds and the
/// process id, mixed, in 53 bits.
fn fresh_seed() -> u64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    // 53 bits: exact in every JSON reader, and a TOML integer.
    (z ^ (z >> 31)) & ((1 << 53) - 1)
}

/// Each agent's index by its stream, for the loops that hear from ten
/// thousand agents (a walk through all of them per message is quadratic).
fn conn_index(agents: &[agent::Agent]) -> std::collections::HashMap<crate::service::ConnId, usize> {
    agents
        .iter()
        .enumerate()
        .map(|(i, a)| (a.conn, i))
        .collect()
}
