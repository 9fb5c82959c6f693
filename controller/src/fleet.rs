//! One run, from the controller's side: listen, gather the fleet, deal the
//! schedule, start everyone together, merge what they send.
//!
//! A single owner task holds the fleet and the merged data; the gRPC
//! handlers only forward [`Event`]s to it over a bounded channel.

use std::net::SocketAddr;
use std::time::Duration;

use loadfleet_agent::{AgentOptions, run_agent};
use loadfleet_proto::v1::{self, agent_message, controller_message, fleet_server::FleetServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::plan::{LoadModel, Plan, RunBound};
use crate::progress::{Progress, ProgressMode, Snapshot};
use crate::schedule;
use crate::service::{ConnId, Event, FleetService, MAX_MESSAGE_BYTES, Outbound};
use crate::stats::Collector;

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

/// How to run a plan.
#[derive(Debug)]
pub struct RunOptions {
    pub plan: Plan,
    /// Where agents dial in (port 0 for any free port).
    pub listen: SocketAddr,
    /// Remote agents to wait for.
    pub expect_agents: usize,
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
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "refusing to listen on {addr} without authentication: anyone who can reach it could aim this fleet. \
         Use mTLS (`loadfleet certs init DIR`, then --tls-dir DIR), or set a shared token on the controller and every agent, \
         e.g. `export LOADFLEET_TOKEN=$(openssl rand -hex 32)` (or --token-file), or listen on 127.0.0.1"
    )]
    Insecure { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("expected {expected} agent(s), {attached} attached after {waited:?}{names}")]
    NotEnoughAgents {
        expected: usize,
        attached: usize,
        waited: Duration,
        names: String,
    },
    #[error("agent {agent} cannot run the plan: {reason}")]
    AgentFailed { agent: String, reason: String },
    #[error("agent {agent} left before the run started ({reason})")]
    AgentLeft { agent: String, reason: String },
    #[error("agents were not ready within {0:?}")]
    NotReady(Duration),
    #[error("interrupted before the run started")]
    InterruptedBeforeStart,
    #[error("every agent was lost; nothing was measured")]
    AllLost,
    #[error("the plan does not fit this fleet: {0}")]
    Unfit(String),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    CompletedWithErrors,
    /// A threshold failed (the run may have been stopped early by it).
    ThresholdsFailed,
    /// An agent was lost or failed during the run: its part is partial.
    Degraded,
    Interrupted,
}

/// How one agent's part of the run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEnd {
    Finished,
    Lost,
    Failed,
}

/// One agent of the run.
#[derive(Debug, Clone)]
pub struct AgentReport {
    pub name: String,
    pub region: String,
    pub peer: String,
    /// How it proved who it is: `mtls:NAME.agent.loadfleet`, `token` or `none`.
    pub identity: String,
    pub users: usize,
    pub end: AgentEnd,
    /// Seconds from the start at which it was lost or failed.
    pub ended_at_s: Option<f64>,
    pub note: String,
    /// Shortest round trip of the clock pings.
    pub clock_rtt: Option<Duration>,
    /// How late the agent began its schedule by its own clock (reported with Done).
    pub start_lateness: Option<Duration>,
    /// The agent's planned share of the load (0..1).
    pub load_share: f64,
}

/// What a run measured.
#[derive(Debug)]
pub struct RunResult {
    pub run_id: String,
    pub plan: Plan,
    pub listen: SocketAddr,
    pub started_at: time::OffsetDateTime,
    pub duration: Duration,
    pub collector: Collector,
    pub agents: Vec<AgentReport>,
    pub status: RunStatus,
    /// Every threshold rule's final outcome.
    pub thresholds: Vec<crate::thresholds::Outcome>,
    /// The rule that stopped the run early (`abort_on_fail`).
    pub aborted_by: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Attached,
    Ready,
    Running,
    Finished,
    Lost,
    Failed,
}

struct Agent {
    conn: ConnId,
    name: String,
    region: String,
    weight: u32,
    peer: String,
    /// How it proved who it is (see [`Event::Attached`]).
    identity: String,
    outbound: Outbound,
    state: State,
    next_seq: u64,
    users: usize,
    ended_at: Option<Duration>,
    note: String,
    clock: ClockSync,
    start_lateness: Option<Duration>,
    load_share: f64,
    /// When the agent last sent anything.
    last_heard: Instant,
    /// Its stream broke at this instant; it may resume within [`RESUME_GRACE`].
    disconnected_at: Option<Instant>,
}

/// How long a running agent whose stream broke may take to resume it
/// (an agent whose process died never does; one behind a reset NAT
/// redials within a few hundred milliseconds).
const RESUME_GRACE: Duration = Duration::from_secs(1);

/// What the pings told about one agent's clock.
#[derive(Debug, Clone, Copy, Default)]
struct ClockSync {
    /// Pongs received.
    samples: u32,
    /// Nonce of the ping in flight and when it was sent.
    in_flight: Option<(u64, Instant)>,
    /// Shortest round trip seen, and the offset measured with it:
    /// agent clock minus controller clock, in microseconds.
    best: Option<(Duration, i64)>,
}

impl Agent {
    fn send(&self, body: controller_message::Body) {
        // A full or closed channel means the agent is gone or stuck; its
        // stream's end is reported separately, so nothing else to do here.
        let _ = self
            .outbound
            .try_send(Ok(v1::ControllerMessage { body: Some(body) }));
    }

    fn is_running(&self) -> bool {
        matches!(self.state, State::Running)
    }
}

fn reject(outbound: &Outbound, reason: &str) {
    let body = controller_message::Body::Reject(v1::Reject {
        reason: reason.to_string(),
    });
    let _ = outbound.try_send(Ok(v1::ControllerMessage { body: Some(body) }));
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
    let service = FleetServer::new(FleetService::new(events_tx, token, tls.is_some()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &t.cert_pem,
                &t.key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&t.ca_pem));
        builder = builder
            .tls_config(config)
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

/// An agent seen by [`list_agents`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeenAgent {
    pub name: String,
    pub region: String,
    pub version: String,
    pub address: String,
    /// `mtls:NAME.agent.loadfleet`, `token` or `none`.
    pub identity: String,
    /// `waiting for a run`, or the run it tried to resume.
    pub state: String,
}

/// Listens for `for_how_long` and lists the agents that attach, refusing
/// each (no run is offered), so they go on waiting for a real controller.
pub async fn list_agents(
    listen: SocketAddr,
    token: Option<String>,
    tls: Option<&crate::certs::ControllerTls>,
    for_how_long: Duration,
) -> Result<(SocketAddr, Vec<SeenAgent>), FleetError> {
    if !listen.ip().is_loopback() && token.is_none() && tls.is_none() {
        return Err(FleetError::Insecure { addr: listen });
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| FleetError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| FleetError::Listen {
        addr: listen,
        source,
    })?;
    let (mut events, stop, server) = start_server(listener, token, tls)?;
    let mut seen: Vec<SeenAgent> = Vec::new();
    let until = Instant::now() + for_how_long;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Attached { hello, peer, identity, outbound, .. }) => {
                    reject(&outbound, "this controller only lists agents; no run is offered");
                    let state = if hello.resume_run_id.is_empty() {
                        "waiting for a run".to_string()
                    } else {
                        format!("resuming run {}", hello.resume_run_id)
                    };
                    let agent = SeenAgent {
                        name: hello.name,
                        region: hello.region,
                        version: hello.version,
                        address: peer,
                        identity,
                        state,
                    };
                    match seen.iter_mut().find(|s| s.name == agent.name) {
                        Some(s) => *s = agent,
                        None => seen.push(agent),
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    // An agent that attached as the time ran out is refused too: its stream
    // would otherwise stay open and hold the server's shutdown forever.
    while let Ok(ev) = events.try_recv() {
        if let Event::Attached { outbound, .. } = ev {
            reject(
                &outbound,
                "this controller only lists agents; no run is offered",
            );
        }
    }
    drop(events);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((addr, seen))
}

/// Runs a plan on the fleet and returns what was measured.
pub async fn execute(mut opts: RunOptions) -> Result<RunResult, FleetError> {
    if !opts.listen.ip().is_loopback() && opts.token.is_none() && opts.tls.is_none() {
        return Err(FleetError::Insecure { addr: opts.listen });
    }
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
    if opts.expect_agents > 0 {
        // Always printed (also with --quiet): scripts read the port from it.
        eprintln!("loadfleet: listening on {addr}; waiting for {expected} agent(s)");
    }
    let mut agents = gather(opts, events, progress, expected).await?;
    // Deal in a stable order, whatever order the agents attached in.
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    let plan = opts.plan.clone();
    let run_id = format!(
        "{}-{:x}",
        plan.name,
        time::OffsetDateTime::now_utc().unix_timestamp_nanos() & 0xffff_ffff
    );

    // Deal the single-machine schedule to agents by weight.
    let weights: Vec<u32> = plan.scenarios.iter().map(|s| s.weight).collect();
    let agent_weights: Vec<u32> = agents.iter().map(|a| a.weight).collect();
    let shares = Shares::of(&plan, &weights, &agent_weights)?;
    let max_run = plan.max_run();
    let scenarios: Vec<v1::Scenario> = plan
        .scenarios
        .iter()
        .map(|s| v1::Scenario {
            name: s.name.clone(),
            steps: s.steps.iter().map(|st| st.wire.clone()).collect(),
            on_error: s.on_error as i32,
            pacing_us: micros(s.pacing),
        })
        .collect();
    let fleet_users: u64 = shares.closed.iter().map(|u| u.len() as u64).sum();
    for (i, agent) in agents.iter_mut().enumerate() {
        let (users, open) = shares.for_agent(i);
        agent.users = users
            .len()
            .max(open.as_ref().map_or(0, |o| o.max_users as usize));
        // The agent's planned share of the load: of the arrivals (open
        // model) or of the user slots (closed).
        let total_slots: usize = shares.closed.iter().map(Vec::len).sum();
        agent.load_share = match &open {
            Some(o) => o.positions.len() as f64 / f64::from(o.period.max(1)),
            None => users.len() as f64 / total_slots.max(1) as f64,
        };
        let data = data_for(&plan, &users);
        agent.send(controller_message::Body::Assign(v1::Assign {
            run_id: run_id.clone(),
            epoch: 1,
            target: Some(v1::Target {
                base_url: plan.target.base_url.clone(),
                timeout_us: micros(plan.target.timeout),
                ca_pem: plan.target.ca_pem.clone().unwrap_or_default(),
            }),
            scenarios: scenarios.clone(),
            users,
            iterations: shares.iterations,
            duration_us: shares.duration_us,
            interval_us: micros(INTERVAL),
            step_names: plan.step_names.clone(),
            max_run_us: micros(max_run),
            data,
            open,
            graceful_stop_us: shares.graceful_stop_us,
            fleet_users,
            clear_cookies_each_iteration: plan.clear_cookies_each_iteration,
        }));
    }
    wait_ready(opts, events, &mut agents, &run_id).await?;
    sync_clocks(opts, events, &mut agents, clock).await?;

    // Start together: each agent gets the common instant on its own clock,
    // corrected by the offset measured with its fastest ping.
    let start = Instant::now() + opts.start_delay;
    let started_at = time::OffsetDateTime::now_utc() + opts.start_delay;
    let start_us = micros(start - clock) as i64;
    for a in agents.iter_mut() {
        let (start_in_us, start_at_us) = match a.clock.best {
            Some((_, offset)) => (0, u64::try_from(start_us + offset).unwrap_or(1).max(1)),
            None => (micros(start.saturating_duration_since(Instant::now())), 0),
        };
        a.send(controller_message::Body::Start(v1::Start {
            run_id: run_id.clone(),
            start_in_us,
            start_at_us,
            lease_us: micros(opts.lease),
        }));
        a.state = State::Running;
        a.last_heard = start;
    }
    let total = plan.scheduled_duration();
    let mut collector = Collector::new(plan.step_names.clone(), INTERVAL);
    let hard_deadline = start + max_run + Duration::from_secs(10);
    let mut tick =
        tokio::time::interval_at(start + INTERVAL + Duration::from_millis(150), INTERVAL);
    let mut stopping = false;
    let mut aborted_by: Option<String> = None;
    loop {
        if agents.iter().all(|a| !a.is_running()) {
            break;
        }
        // The first moment a broken stream's grace runs out.
        let resume_deadline = agents
            .iter()
            .filter(|a| a.is_running())
            .filter_map(|a| a.disconnected_at)
            .min()
            .map(|t| t + RESUME_GRACE + Duration::from_millis(10));
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let ctx = RunCtx { run_id: &run_id, start, lease: opts.lease, stopping };
                if let Some(lost) = on_event(ev, &mut agents, &mut collector, &ctx, progress)
                    && plan.on_agent_loss == crate::plan::OnAgentLoss::Abort
                    && !stopping
                    && aborted_by.is_none()
                {
                    aborted_by = Some(abort_for_loss(&lost, &agents, &run_id, progress));
                }
            }
            _ = tokio::time::sleep_until(resume_deadline.unwrap_or(hard_deadline)), if resume_deadline.is_some() => {
                for lost in expire_silent(&mut agents, start, opts.lease, progress) {
                    if plan.on_agent_loss == crate::plan::OnAgentLoss::Abort && !stopping && aborted_by.is_none() {
                        aborted_by = Some(abort_for_loss(&lost, &agents, &run_id, progress));
                    }
                }
            }
            _ = tick.tick() => {
                // Agents that broke their stream and did not resume it, or
                // went silent for longer than their lease, are lost.
                for lost in expire_silent(&mut agents, start, opts.lease, progress) {
                    if plan.on_agent_loss == crate::plan::OnAgentLoss::Abort && !stopping && aborted_by.is_none() {
                        aborted_by = Some(abort_for_loss(&lost, &agents, &run_id, progress));
                    }
                }
                // Renew every running agent's lease (the dead-man switch),
                // acknowledging the reports received so far.
                for a in agents.iter().filter(|a| a.is_running()) {
                    a.send(controller_message::Body::Lease(v1::Lease {
                        run_id: run_id.clone(),
                        valid_for_us: micros(opts.lease),
                        next_seq: a.next_seq,
                    }));
                }
                close_reported(&mut collector, &agents);
                let t = &plan.thresholds;
                if t.abort_on_fail && !stopping && aborted_by.is_none() && start.elapsed() >= t.grace
                    && let Some(failed) = t.check(&collector, start.elapsed(), false).into_iter().find(|o| !o.passed)
                {
                    progress.note(&format!(
                        "threshold failed: {} ({}) observed {:?}; stopping the run",
                        failed.rule, failed.scope, failed.observed
                    ));
                    for a in agents.iter().filter(|a| a.is_running()) {
                        a.send(controller_message::Body::Stop(v1::Stop { run_id: run_id.clone(), graceful: true }));
                    }
                    aborted_by = Some(format!("{} ({})", failed.rule, failed.scope));
                }
                let snap = Snapshot {
                    elapsed: start.elapsed(),
                    total,
                    last: collector.timeline.last().cloned(),
                    errors_total: collector.total.error_count(),
                    agents_running: agents.iter().filter(|a| a.is_running()).count(),
                    agents_total: agents.len(),
                };
                progress.show(&snap);
            }
            _ = opts.interrupt.cancelled(), if !stopping => {
                stopping = true;
                progress.note("stopping: users finish their current step (Ctrl-C again to stop at once)");
                for a in agents.iter().filter(|a| a.is_running()) {
                    a.send(controller_message::Body::Stop(v1::Stop { run_id: run_id.clone(), graceful: true }));
                }
            }
            _ = opts.hard_interrupt.cancelled() => {
                stopping = true;
                for a in agents.iter().filter(|a| a.is_running()) {
                    a.send(controller_message::Body::Stop(v1::Stop { run_id: run_id.clone(), graceful: false }));
                }
                break;
            }
            _ = tokio::time::sleep_until(hard_deadline) => {
                progress.note("the run passed its time limit; stopping every agent");
                for a in agents.iter().filter(|a| a.is_running()) {
                    a.send(controller_message::Body::Stop(v1::Stop { run_id: run_id.clone(), graceful: false }));
                }
                break;
            }
        }
    }
    collector.close_all();
    if agents.iter().all(|a| a.state != State::Finished) && collector.total.requests() == 0 {
        return Err(FleetError::AllLost);
    }
    let duration = if collector.elapsed.is_zero() {
        start.elapsed()
    } else {
        collector.elapsed
    };
    let degraded = agents.iter().any(|a| a.state != State::Finished);
    let thresholds = plan.thresholds.check(&collector, duration, true);
    let threshold_abort = aborted_by
        .as_ref()
        .is_some_and(|a| !a.contains("on_agent_loss"));
    let status = if stopping {
        RunStatus::Interrupted
    } else if threshold_abort || thresholds.iter().any(|o| !o.passed) {
        RunStatus::ThresholdsFailed
    } else if degraded {
        RunStatus::Degraded
    } else if collector.total.error_count() > 0 {
        RunStatus::CompletedWithErrors
    } else {
        RunStatus::Completed
    };
    let reports = agents
        .into_iter()
        .map(|a| AgentReport {
            end: match a.state {
                State::Finished => AgentEnd::Finished,
                State::Failed => AgentEnd::Failed,
                _ => AgentEnd::Lost,
            },
            name: a.name,
            region: a.region,
            peer: a.peer,
            identity: a.identity,
            users: a.users,
            ended_at_s: a.ended_at.map(|d| d.as_secs_f64()),
            note: a.note,
            clock_rtt: a.clock.best.map(|(rtt, _)| rtt),
            start_lateness: a.start_lateness,
            load_share: a.load_share,
        })
        .collect();
    Ok(RunResult {
        run_id,
        plan,
        listen: addr,
        started_at,
        duration,
        collector,
        agents: reports,
        status,
        thresholds,
        aborted_by,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The schedule dealt to agents: closed-model user slots, or the open
/// model's arrival positions and concurrency shares.
struct Shares {
    closed: Vec<Vec<schedule::Slot>>,
    open: Option<(v1::OpenModel, Vec<Vec<u32>>, Vec<u32>)>,
    iterations: u64,
    duration_us: u64,
    graceful_stop_us: u64,
}

impl Shares {
    fn of(
        plan: &Plan,
        scenario_weights: &[u32],
        agent_weights: &[u32],
    ) -> Result<Shares, FleetError> {
        match &plan.load {
            LoadModel::Closed {
                users,
                ramp_up,
                bound,
            } => {
                let slots = schedule::closed_slots(*users, *ramp_up, scenario_weights);
                let (iterations, duration_us) = match bound {
                    RunBound::Iterations(n) => (*n, 0),
                    RunBound::Duration(d) => (0, micros(*d)),
                };
                Ok(Shares {
                    closed: schedule::deal(&slots, agent_weights),
                    open: None,
                    iterations,
                    duration_us,
                    graceful_stop_us: 0,
                })
            }
            LoadModel::Staged {
                stages,
                graceful_stop,
            } => {
                let slots = schedule::staged_slots(stages, scenario_weights);
                Ok(Shares {
                    closed: schedule::deal(&slots, agent_weights),
                    open: None,
                    iterations: 0,
                    // Every slot has its own graceful stop; the hard end comes after it.
                    duration_us: micros(
                        plan.scheduled_duration().unwrap_or_default() + *graceful_stop,
                    ),
                    graceful_stop_us: micros(*graceful_stop),
                })
            }
            LoadModel::Open {
                stages,
                max_users,
                max_wait,
            } => {
                if (*max_users as usize) < agent_weights.len() {
                    return Err(FleetError::Unfit(format!(
                        "max_users = {max_users} cannot be shared by {} agents; raise it to at least {}",
                        agent_weights.len(),
                        agent_weights.len()
                    )));
                }
                let positions = schedule::arrival_positions(agent_weights);
                let caps = schedule::split_count(*max_users, agent_weights);
                let model = v1::OpenModel {
                    stages: stages
                        .iter()
                        .map(|s| v1::RateStage {
                            from: s.from,
                            to: s.to,
                            duration_us: micros(s.duration),
                        })
                        .collect(),
                    period: agent_weights.iter().sum(),
                    positions: Vec::new(),
                    max_users: 0,
                    max_wait_us: micros(*max_wait),
                    scenario_cycle: schedule::cycle(scenario_weights),
                };
                Ok(Shares {
                    closed: vec![Vec::new(); agent_weights.len()],
                    open: Some((model, positions, caps)),
                    iterations: 0,
                    duration_us: micros(plan.scheduled_duration().unwrap_or_default()),
                    graceful_stop_us: 0,
                })
            }
        }
    }

    fn for_agent(&self, i: usize) -> (Vec<v1::UserSlot>, Option<v1::OpenModel>) {
        let users = self.closed[i]
            .iter()
            .map(|s| v1::UserSlot {
                index: s.index,
                start_offset_us: micros(s.start_offset),
                scenario: s.scenario,
                stop_offset_us: s.stop_offset.map_or(0, micros),
            })
            .collect();
        let open = self
            .open
            .as_ref()
            .map(|(model, positions, caps)| v1::OpenModel {
                positions: positions[i].clone(),
                max_users: caps[i],
                ..model.clone()
            });
        (users, open)
    }
}

/// Waits until the expected number of agents is attached.
async fn gather(
    opts: &RunOptions,
    events: &mut mpsc::Receiver<Event>,
    progress: &Progress,
    expected: usize,
) -> Result<Vec<Agent>, FleetError> {
    let mut agents: Vec<Agent> = Vec::new();
    let deadline = Instant::now() + opts.wait_for_agents;
    while agents.len() < expected {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Attached { conn, hello, peer, identity, outbound }) => {
                    if !hello.resume_run_id.is_empty() {
                        // Resuming a run this controller never held (its
                        // controller died and this one took the address).
                        reject(&outbound, "this controller does not hold that run");
                        continue;
                    }
                    if agents.iter().any(|a| a.name == hello.name) {
                        reject(&outbound, &format!("an agent named {} is already attached", hello.name));
                        continue;
                    }
                    progress.note(&format!(
                        "agent {} (region {}) attached from {peer} [{}/{expected}]",
                        hello.name, hello.region, agents.len() + 1
                    ));
                    agents.push(Agent {
                        conn,
                        name: hello.name,
                        region: hello.region,
                        weight: hello.weight.clamp(1, 1000),
                        peer,
                        identity,
                        outbound,
                        state: State::Attached,
                        next_seq: 0,
                        users: 0,
                        ended_at: None,
                        note: String::new(),
                        clock: ClockSync::default(),
                        last_heard: Instant::now(),
                        disconnected_at: None,
                        start_lateness: None,
                        load_share: 0.0,
                    });
                }
                Some(Event::Detached { conn, reason }) => {
                    if let Some(i) = agents.iter().position(|a| a.conn == conn) {
                        let a = agents.remove(i);
                        progress.note(&format!("agent {} left before the start ({reason})", a.name));
                    }
                }
                Some(Event::Message { .. }) | None => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                let names: Vec<String> = agents.iter().map(|a| format!("{} ({})", a.name, a.region)).collect();
                return Err(FleetError::NotEnoughAgents {
                    expected,
                    attached: agents.len(),
                    waited: opts.wait_for_agents,
                    names: if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
                });
            }
            _ = opts.interrupt.cancelled() => return Err(FleetError::InterruptedBeforeStart),
        }
    }
    Ok(agents)
}

/// Waits for every agent to acknowledge its assignment.
async fn wait_ready(
    opts: &RunOptions,
    events: &mut mpsc::Receiver<Event>,
    agents: &mut [Agent],
    run_id: &str,
) -> Result<(), FleetError> {
    let limit = Duration::from_secs(30);
    let deadline = Instant::now() + limit;
    let abort = |agents: &[Agent]| {
        for a in agents {
            a.send(controller_message::Body::Stop(v1::Stop {
                run_id: run_id.to_string(),
                graceful: false,
            }));
        }
    };
    while agents.iter().any(|a| a.state != State::Ready) {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Message { conn, body }) => {
                    let Some(a) = agents.iter_mut().find(|a| a.conn == conn) else { continue };
                    match body {
                        agent_message::Body::Ready(r) if r.run_id == run_id => a.state = State::Ready,
                        agent_message::Body::Failed(f) => {
                            let err = FleetError::AgentFailed { agent: a.name.clone(), reason: f.reason };
                            abort(agents);
                            return Err(err);
                        }
                        other => tracing::warn!(agent = %a.name, message = ?other, "unexpected message before the start"),
                    }
                }
                Some(Event::Detached { conn, reason }) => {
                    if let Some(a) = agents.iter().find(|a| a.conn == conn) {
                        let err = FleetError::AgentLeft { agent: a.name.clone(), reason };
                        abort(agents);
                        return Err(err);
                    }
                }
                Some(Event::Attached { outbound, .. }) => reject(&outbound, "a run is starting; try again later"),
                None => return Err(FleetError::NotReady(limit)),
            },
            _ = tokio::time::sleep_until(deadline) => {
                abort(agents);
                return Err(FleetError::NotReady(limit));
            }
            _ = opts.interrupt.cancelled() => {
                abort(agents);
                return Err(FleetError::InterruptedBeforeStart);
            }
        }
    }
    Ok(())
}

/// Pings each agent a few times (one ping in flight per agent) and keeps,
/// per agent, the clock offset measured with the shortest round trip: the
/// offset's error is at most half of that round trip.
async fn sync_clocks(
    opts: &RunOptions,
    events: &mut mpsc::Receiver<Event>,
    agents: &mut [Agent],
    clock: Instant,
) -> Result<(), FleetError> {
    const PINGS: u32 = 5;
    let ping = |a: &mut Agent| {
        let nonce = u64::from(a.clock.samples) + 1;
        a.clock.in_flight = Some((nonce, Instant::now()));
        a.send(controller_message::Body::Ping(v1::Ping { nonce }));
    };
    agents.iter_mut().for_each(ping);
    let deadline = Instant::now() + Duration::from_secs(5);
    while agents.iter().any(|a| a.clock.samples < PINGS) {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Message { conn, body: agent_message::Body::Pong(p) }) => {
                    let now = Instant::now();
                    let Some(a) = agents.iter_mut().find(|a| a.conn == conn) else { continue };
                    let Some((nonce, sent)) = a.clock.in_flight else { continue };
                    if p.nonce != nonce {
                        continue;
                    }
                    let rtt = now - sent;
                    let midpoint = i64::try_from((sent - clock + rtt / 2).as_micros()).unwrap_or(i64::MAX);
                    let offset = i64::try_from(p.agent_clock_us).unwrap_or(i64::MAX) - midpoint;
                    if a.clock.best.is_none_or(|(best, _)| rtt < best) {
                        a.clock.best = Some((rtt, offset));
                    }
                    a.clock.samples += 1;
                    a.clock.in_flight = None;
                    if a.clock.samples < PINGS {
                        ping(a);
                    }
                }
                Some(Event::Detached { conn, reason }) => {
                    if let Some(a) = agents.iter().find(|a| a.conn == conn) {
                        return Err(FleetError::AgentLeft { agent: a.name.clone(), reason });
                    }
                }
                Some(Event::Attached { outbound, .. }) => reject(&outbound, "a run is starting; try again later"),
                Some(Event::Message { .. }) => {}
                None => return Err(FleetError::NotReady(Duration::from_secs(5))),
            },
            _ = tokio::time::sleep_until(deadline) => {
                // Agents that answered no ping start on a relative offset instead.
                tracing::warn!("clock sync incomplete after 5 s; starting with what was measured");
                break;
            }
            _ = opts.interrupt.cancelled() => return Err(FleetError::InterruptedBeforeStart),
        }
    }
    Ok(())
}

/// Handles one event of a running fleet; returns the name of an agent that
/// was just lost.
/// What [`on_event`] needs to know about the run.
struct RunCtx<'a> {
    run_id: &'a str,
    start: Instant,
    lease: Duration,
    stopping: bool,
}

/// Stops the other agents after `lost` was lost (`on_agent_loss = "abort"`);
/// returns the reason the run stopped.
fn abort_for_loss(lost: &str, agents: &[Agent], run_id: &str, progress: &Progress) -> String {
    progress.note(&format!(
        "agent {lost} is gone and on_agent_loss = \"abort\": stopping the run"
    ));
    for a in agents.iter().filter(|a| a.is_running()) {
        a.send(controller_message::Body::Stop(v1::Stop {
            run_id: run_id.to_string(),
            graceful: true,
        }));
    }
    format!("agent {lost} was lost (on_agent_loss = abort)")
}

/// Marks lost the running agents whose stream broke more than
/// [`RESUME_GRACE`] ago, or that have been silent for longer than their
/// lease plus a second (a link that stalls without breaking); returns them.
fn expire_silent(
    agents: &mut [Agent],
    start: Instant,
    lease: Duration,
    progress: &Progress,
) -> Vec<String> {
    let mut lost = Vec::new();
    for a in agents.iter_mut().filter(|a| a.is_running()) {
        let gone_at = match a.disconnected_at {
            Some(t) if t.elapsed() > RESUME_GRACE => Some(t),
            _ if a.last_heard.elapsed() > lease + Duration::from_secs(1) => {
                a.note = format!("silent for {:.1} s", a.last_heard.elapsed().as_secs_f64());
                Some(a.last_heard)
            }
            _ => None,
        };
        if let Some(t) = gone_at {
            progress.note(&format!("agent {} was lost ({})", a.name, a.note));
            a.state = State::Lost;
            a.ended_at = Some(t.saturating_duration_since(start));
            lost.push(a.name.clone());
        }
    }
    lost
}

fn on_event(
    ev: Event,
    agents: &mut [Agent],
    collector: &mut Collector,
    ctx: &RunCtx<'_>,
    progress: &Progress,
) -> Option<String> {
    let run_id = ctx.run_id;
    match ev {
        Event::Attached {
            conn,
            outbound,
            hello,
            peer,
            ..
        } => {
            // An agent of this run carrying on after its stream broke (the
            // service already checked its certificate names it).
            let resumed = (!hello.resume_run_id.is_empty() && hello.resume_run_id == run_id)
                .then(|| {
                    agents
                        .iter_mut()
                        .find(|a| a.name == hello.name && a.is_running())
                })
                .flatten();
            match resumed {
                Some(a) => {
                    let away = a.last_heard.elapsed();
                    a.conn = conn;
                    a.outbound = outbound;
                    a.peer = peer;
                    a.disconnected_at = None;
                    a.last_heard = Instant::now();
                    a.send(controller_message::Body::Lease(v1::Lease {
                        run_id: run_id.to_string(),
                        valid_for_us: micros(ctx.lease),
                        next_seq: a.next_seq,
                    }));
                    if ctx.stopping {
                        a.send(controller_message::Body::Stop(v1::Stop {
                            run_id: run_id.to_string(),
                            graceful: true,
                        }));
                    }
                    progress.note(&format!(
                        "agent {} reconnected after {:.1} s of silence; it sends again from interval {}",
                        a.name,
                        away.as_secs_f64(),
                        a.next_seq
                    ));
                }
                None if !hello.resume_run_id.is_empty() => {
                    tracing::info!(agent = %hello.name, run = %hello.resume_run_id, "refused a resume");
                    reject(
                        &outbound,
                        "this controller does not hold that run for this agent (it ended, or the agent was lost)",
                    );
                }
                None => {
                    tracing::info!(agent = %hello.name, "rejected: a run is in progress");
                    reject(&outbound, "a run is in progress; try again later");
                }
            }
        }
        Event::Message { conn, body } => {
            let a = agents.iter_mut().find(|a| a.conn == conn)?;
            a.last_heard = Instant::now();
            match body {
                agent_message::Body::Interval(iv) => {
                    if iv.run_id != run_id {
                        tracing::warn!(agent = %a.name, run = %iv.run_id, "dropped an interval of another run");
                        return None;
                    }
                    if iv.seq < a.next_seq {
                        tracing::debug!(agent = %a.name, seq = iv.seq, "duplicate interval ignored");
                        return None;
                    }
                    match collector.apply(&a.name, &a.region, &iv) {
                        Ok(()) => {}
                        Err(e) => {
                            collector.dropped_reports += 1;
                            tracing::warn!("dropped a report from agent {}: {e}", a.name);
                        }
                    }
                    a.next_seq = iv.seq + 1;
                }
                agent_message::Body::Done(d) if d.run_id == run_id => {
                    a.state = State::Finished;
                    a.start_lateness = Some(Duration::from_micros(d.start_lateness_us));
                    let why = match &d.totals {
                        Some(t) => collector
                            .apply_totals(&a.name, t)
                            .err()
                            .map(|e| e.to_string()),
                        None => {
                            Some("sent no totals: its latency percentiles are not shown".into())
                        }
                    };
                    if let Some(why) = why {
                        tracing::warn!(agent = %a.name, "{why}");
                        if a.note.is_empty() {
                            a.note = why;
                        }
                    }
                }
                agent_message::Body::Failed(f) => {
                    progress.note(&format!("agent {} failed: {}", a.name, f.reason));
                    a.state = State::Failed;
                    a.ended_at = Some(ctx.start.elapsed());
                    a.note = f.reason;
                    return Some(a.name.clone());
                }
                other => {
                    tracing::warn!(agent = %a.name, message = ?other, "unexpected message during the run")
                }
            }
        }
        Event::Detached { conn, reason } => {
            let a = agents.iter_mut().find(|a| a.conn == conn)?;
            if a.state == State::Running {
                // Lost unless it resumes soon (see `expire_silent`).
                tracing::info!(agent = %a.name, %reason, "stream broke; waiting for a resume");
                a.disconnected_at = Some(Instant::now());
                a.note = reason;
            }
        }
    }
    None
}

/// Closes the intervals every running agent has reported; a lagging agent
/// holds intervals open for at most five intervals (its later reports still
/// count in the totals).
fn close_reported(collector: &mut Collector, agents: &[Agent]) {
    let running: Vec<u64> = agents
        .iter()
        .filter(|a| a.is_running())
        .map(|a| a.next_seq)
        .collect();
    let reported = running.iter().copied().min().unwrap_or(u64::MAX);
    let lag_limit = collector.newest_seq().map_or(0, |n| n.saturating_sub(5));
    collector.close_before(reported.max(lag_limit));
}

/// The data an agent receives: every row of `sequential` and `random` files;
/// of a `unique` file, only the rows of its own users (row i belongs to the
/// fleet's user i), so no row is ever used by two agents.
fn data_for(plan: &Plan, users: &[v1::UserSlot]) -> Vec<v1::DataSet> {
    plan.data
        .iter()
        .map(|d| {
            let row = |r: &Vec<String>| v1::DataRow { values: r.clone() };
            let (rows, user_indices) = if d.mode == v1::DataMode::Unique {
                users
                    .iter()
                    .filter_map(|u| d.rows.get(u.index as usize).map(|r| (row(r), u.index)))
                    .unzip()
            } else {
                (d.rows.iter().map(row).collect(), Vec::new())
            };
            v1::DataSet {
                name: d.name.clone(),
                columns: d.columns.clone(),
                rows,
                mode: d.mode as i32,
                user_indices,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_rows_go_only_to_the_agent_of_their_user() {
        let mut text = String::from(
            "[target]\nbase_url = \"http://127.0.0.1:1\"\n[load]\nusers = 5\nramp_up = \"1s\"\niterations = 1\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\npath = \"/\"\n",
        );
        text.push_str("[[data]]\nname = \"u\"\nfile = \"u.csv\"\nmode = \"unique\"\n[[data]]\nname = \"all\"\nfile = \"u.csv\"\n");
        let dir = tempfile::tempdir().unwrap();
        let csv: String = std::iter::once("name\n".to_string())
            .chain((0..7).map(|i| format!("row{i}\n")))
            .collect();
        std::fs::write(dir.path().join("u.csv"), csv).unwrap();
        let file = dir.path().join("p.toml");
        let plan = crate::plan::parse(file.to_str().unwrap(), &text, "p").unwrap();
        let shares = Shares::of(&plan, &[1], &[1, 1]).unwrap();
        let mut seen = Vec::new();
        for agent in 0..2 {
            let (users, _) = shares.for_agent(agent);
            let data = data_for(&plan, &users);
            let unique = &data[0];
            assert_eq!(unique.rows.len(), users.len(), "one row per own user");
            for (row, user) in unique.rows.iter().zip(&unique.user_indices) {
                assert_eq!(row.values, [format!("row{user}")], "row i is user i's");
                seen.push(*user);
            }
            assert_eq!(data[1].rows.len(), 7, "sequential data goes whole");
        }
        seen.sort();
        assert_eq!(
            seen,
            [0, 1, 2, 3, 4],
            "every user's row went to exactly one agent"
        );
    }
}
