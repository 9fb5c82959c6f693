//! The agent's side of the fleet protocol: dial the controller, take an
//! assignment, run it with the engine, stream intervals back; then dial again
//! for the next run.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadfleet_proto::v1::{self, agent_message, controller_message, fleet_client::FleetClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::assignment::Assignment;
use crate::backoff::Backoff;
use crate::engine;

/// Largest message an agent accepts from its controller.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How an agent identifies itself and finds its controller.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `http://HOST:PORT` of the controller.
    pub controller: String,
    pub name: String,
    pub region: String,
    /// Relative share of the fleet's load.
    pub weight: u32,
    /// Worker threads (single-threaded runtimes) for virtual users.
    pub workers: usize,
    /// Exit after one run instead of waiting for the next.
    pub once: bool,
    /// How the open model waits for arrival instants.
    pub timing: engine::Timing,
    /// Shared fleet token, sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// mTLS: the fleet CA (to verify the controller) and this agent's certificate and key, PEM.
    pub tls: Option<AgentTls>,
    /// Limits this agent enforces whatever its controller asks.
    pub policy: crate::policy::Policy,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
}

/// mTLS material of an agent.
#[derive(Debug, Clone)]
pub struct AgentTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Why an agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("controller address `{0}` is not a valid URL")]
    BadControllerUrl(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("refused the assignment: {0}")]
    Refused(String),
    #[error("controller rejected this agent: {0}")]
    Rejected(String),
    #[error("cannot reach the controller at {0}")]
    Unreachable(String),
}

/// What one attachment to a controller came to.
#[derive(Debug)]
enum Attach {
    /// A run was assigned and ended (completed, stopped, or failed to start).
    RunEnded,
    /// The controller closed the stream without assigning a run.
    Idle,
}

#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("cannot reach controller: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("controller stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("controller went away")]
    Gone,
    #[error("controller rejected this agent: {0}")]
    Rejected(String),
    #[error("refused the assignment: {0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Checks that the agent can work as configured: its controller address
/// parses, its certificates load, and the controller answers on that
/// address (for mTLS, the TLS handshake with this agent's certificate
/// succeeds). It does not attach, so it never joins a run; a shared token is
/// only checked when the agent attaches. Returns what was checked.
pub async fn check(opts: &AgentOptions) -> Result<String, AgentError> {
    let endpoint = endpoint(opts)?;
    match tokio::time::timeout(Duration::from_secs(5), endpoint.connect()).await {
        Ok(Ok(_)) => Ok(format!(
            "controller {} answers{}; agent {} (region {}), {}",
            opts.controller,
            if opts.tls.is_some() {
                " and accepted this agent's certificate in the TLS handshake"
            } else {
                ""
            },
            opts.name,
            opts.region,
            if opts.tls.is_some() {
                "mTLS"
            } else if opts.token.is_some() {
                "shared token (checked when the agent attaches)"
            } else {
                "no authentication (a loopback controller)"
            }
        )),
        Ok(Err(e)) => Err(AgentError::Unreachable(format!(
            "{}: {e}{}",
            opts.controller,
            std::error::Error::source(&e)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ))),
        Err(_) => Err(AgentError::Unreachable(format!(
            "{}: no answer within 5 s",
            opts.controller
        ))),
    }
}

fn endpoint(opts: &AgentOptions) -> Result<tonic::transport::Endpoint, AgentError> {
    if !(opts.controller.starts_with("http://") || opts.controller.starts_with("https://")) {
        return Err(AgentError::BadControllerUrl(opts.controller.clone()));
    }
    let endpoint = tonic::transport::Endpoint::from_shared(opts.controller.clone())
        .map_err(|_| AgentError::BadControllerUrl(opts.controller.clone()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let endpoint = match &opts.tls {
        None => endpoint,
        Some(t) => {
            if !opts.controller.starts_with("https://") {
                return Err(AgentError::Tls(format!(
                    "with certificates the controller address must be https://, got {}",
                    opts.controller
                )));
            }
            let config = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&t.ca_pem))
                .identity(tonic::transport::Identity::from_pem(
                    &t.cert_pem,
                    &t.key_pem,
                ));
            endpoint
                .tls_config(config)
                .map_err(|e| AgentError::Tls(e.to_string()))?
        }
    };
    Ok(endpoint)
}

/// Runs the agent until `shutdown` fires, or after one run with `once`.
pub async fn run_agent(opts: AgentOptions, shutdown: CancellationToken) -> Result<(), AgentError> {
    let endpoint = endpoint(&opts)?;
    let seed = u64::from(std::process::id())
        ^ (Instant::now().elapsed().as_nanos() as u64)
        ^ hash(&opts.name);
    let mut backoff = Backoff::new(Duration::from_millis(100), opts.max_backoff, seed);
    // The agent's clock for start synchronization: monotonic, never wall time.
    let clock = Instant::now();
    loop {
        let attempt = tokio::select! {
            r = attach_once(&endpoint, &opts, clock, &shutdown) => r,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match attempt {
            Ok(Attach::RunEnded) => {
                backoff.reset();
                if opts.once {
                    return Ok(());
                }
            }
            Ok(Attach::Idle) => {}
            Err(AttachError::Rejected(why)) if opts.once => return Err(AgentError::Rejected(why)),
            Err(AttachError::Refused(why)) if opts.once => return Err(AgentError::Refused(why)),
            Err(AttachError::Refused(why)) => {
                tracing::error!(reason = %why, "refused an assignment")
            }
            Err(e) => tracing::info!(error = %e, controller = %opts.controller, "not attached"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Most interval reports an agent keeps while its controller has not
/// acknowledged them: five minutes of one-second intervals (a few KB each).
pub const MAX_UNACKED: usize = 300;

/// Silence from the controller (which renews leases every second) after
/// which an agent dials again on a fresh connection, before its lease runs
/// out, rather than wait for a stalled TCP connection to recover.
const SILENCE: Duration = Duration::from_millis(2500);

/// Longest a reconnect attempt may take.
const REDIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// A stream to the controller during a run.
struct Link {
    tx: mpsc::Sender<v1::AgentMessage>,
    inbound: tonic::Streaming<v1::ControllerMessage>,
    /// When the controller last said anything.
    heard: tokio::time::Instant,
}

type Redial = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(Link, u64, Duration), ResumeError>> + Send>,
>;

#[derive(Debug)]
enum ResumeError {
    /// Nothing listens at the controller's address any more.
    Gone(String),
    /// The controller answered but does not hold this run (any more).
    Rejected(String),
    /// Anything else (a timeout, an unreachable network): try again.
    Failed(String),
}

/// Forgets the reports the controller holds (every seq below `next_seq`).
fn acknowledge(unacked: &mut VecDeque<v1::Interval>, next_seq: u64) {
    while unacked.front().is_some_and(|i| i.seq < next_seq) {
        unacked.pop_front();
    }
}

/// Dials the controller again after `delay` to carry on with `run_id`.
/// Returns the new stream, the first seq the controller lacks and the lease.
async fn resume(
    endpoint: tonic::transport::Endpoint,
    opts: AgentOptions,
    run_id: String,
    delay: Duration,
) -> Result<(Link, u64, Duration), ResumeError> {
    tokio::time::sleep(delay).await;
    let attempt = async {
        let channel = endpoint.connect().await.map_err(|e| {
            if refused(&e) {
                ResumeError::Gone(e.to_string())
            } else {
                ResumeError::Failed(e.to_string())
            }
        })?;
        let mut client = FleetClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel::<v1::AgentMessage>(MAX_UNACKED + 16);
        let hello = v1::Hello {
            name: opts.name.clone(),
            region: opts.region.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            weight: opts.weight,
            resume_run_id: run_id.clone(),
        };
        tx.send(msg(agent_message::Body::Hello(hello)))
            .await
            .map_err(|_| ResumeError::Failed("stream closed".into()))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &opts.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        let mut inbound = client
            .attach(request)
            .await
            .map_err(|s| ResumeError::Rejected(s.message().to_string()))?
            .into_inner();
        match inbound.message().await {
            Ok(Some(v1::ControllerMessage {
                body: Some(controller_message::Body::Lease(l)),
            })) if l.run_id == run_id => Ok((
                Link {
                    tx,
                    inbound,
                    heard: tokio::time::Instant::now(),
                },
                l.next_seq,
                Duration::from_micros(l.valid_for_us),
            )),
            Ok(Some(v1::ControllerMessage {
                body: Some(controller_message::Body::Reject(r)),
            })) => Err(ResumeError::Rejected(r.reason)),
            Ok(other) => Err(ResumeError::Rejected(format!(
                "expected a Lease, got {other:?}"
            ))),
            Err(e) => Err(ResumeError::Failed(e.to_string())),
        }
    };
    tokio::time::timeout(REDIAL_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(ResumeError::Failed("timed out".into())))
}

/// Whether a dial failed because nothing listens at the address.
fn refused(e: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn msg(body: agent_message::Body) -> v1::AgentMessage {
    v1::AgentMessage { body: Some(body) }
}

/// Sends a last message and waits (briefly) for the controller to close the
/// stream, so the message is delivered rather than cut off by our hang-up.
async fn farewell(
    tx: &mpsc::Sender<v1::AgentMessage>,
    inbound: &mut tonic::Streaming<v1::ControllerMessage>,
    last: v1::AgentMessage,
) {
    if tx.send(last).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }
}

fn micros_since(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn attach_once(
    endpoint: &tonic::transport::Endpoint,
    opts: &AgentOptions,
    clock: Instant,
    shutdown: &CancellationToken,
) -> Result<Attach, AttachError> {
    let channel = endpoint.connect().await?;
    let mut client = FleetClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(MAX_UNACKED + 16);
    let hello = v1::Hello {
        name: opts.name.clone(),
        region: opts.region.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        weight: opts.weight,
        resume_run_id: String::new(),
    };
    tx.send(msg(agent_message::Body::Hello(hello)))
        .await
        .map_err(|_| AttachError::Gone)?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &opts.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| AttachError::Rejected("the token is not valid header text".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut inbound = match client.attach(request).await {
        Ok(r) => r.into_inner(),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) =>
        {
            return Err(AttachError::Rejected(status.message().to_string()));
        }
        Err(status) => return Err(status.into()),
    };
    tracing::info!(controller = %opts.controller, name = %opts.name, "attached; waiting for a run");

    // Wait for an assignment.
    let assign = match inbound.message().await? {
        None => return Ok(Attach::Idle),
        Some(m) => match m.body {
            Some(controller_message::Body::Assign(a)) => a,
            Some(controller_message::Body::Reject(r)) => {
                return Err(AttachError::Rejected(r.reason));
            }
            Some(controller_message::Body::Stop(_)) => return Ok(Attach::Idle),
            other => {
                return Err(AttachError::Protocol(format!(
                    "expected Assign, got {other:?}"
                )));
            }
        },
    };
    let run_id = assign.run_id.clone();
    let assignment = match Assignment::try_from(assign) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::error!(error = %e, "cannot run assignment");
            let failed = v1::Failed {
                run_id,
                reason: e.to_string(),
            };
            farewell(&tx, &mut inbound, msg(agent_message::Body::Failed(failed))).await;
            return Ok(Attach::RunEnded);
        }
    };
    if let Err(reason) = opts.policy.check(&assignment) {
        tracing::error!(%reason, "refused the assignment");
        let failed = v1::Failed {
            run_id,
            reason: reason.clone(),
        };
        farewell(&tx, &mut inbound, msg(agent_message::Body::Failed(failed))).await;
        return Err(AttachError::Refused(reason));
    }
    tracing::info!(run_id = %run_id, users = assignment.users.len(), "assigned");
    tx.send(msg(agent_message::Body::Ready(v1::Ready {
        run_id: run_id.clone(),
    })))
    .await
    .map_err(|_| AttachError::Gone)?;

    // Answer clock pings, then wait for the start signal: an instant on this
    // agent's own clock (or a relative offset), never a wall-clock time.
    let (start_at, first_lease) = loop {
        let Some(m) = inbound.message().await? else {
            return Err(AttachError::Gone);
        };
        match m.body {
            Some(controller_message::Body::Ping(p)) => {
                let pong = v1::Pong {
                    nonce: p.nonce,
                    agent_clock_us: micros_since(clock),
                };
                tx.send(msg(agent_message::Body::Pong(pong)))
                    .await
                    .map_err(|_| AttachError::Gone)?;
            }
            Some(controller_message::Body::Start(s)) if s.run_id == run_id => {
                let at = if s.start_at_us > 0 {
                    clock + Duration::from_micros(s.start_at_us)
                } else {
                    Instant::now() + Duration::from_micros(s.start_in_us)
                };
                break (at, Duration::from_micros(s.lease_us));
            }
            Some(controller_message::Body::Stop(_)) => return Ok(Attach::RunEnded),
            other => {
                return Err(AttachError::Protocol(format!(
                    "expected Ping or Start, got {other:?}"
                )));
            }
        }
    };
    let config = engine::EngineConfig {
        workers: opts.workers,
        timing: opts.timing,
        policy: Arc::new(opts.policy.clone()),
    };
    let mut engine = match engine::start(assignment, start_at, config) {
        Ok(e) => e,
        Err(e) => {
            let failed = v1::Failed {
                run_id,
                reason: e.to_string(),
            };
            farewell(&tx, &mut inbound, msg(agent_message::Body::Failed(failed))).await;
            return Ok(Attach::RunEnded);
        }
    };
    let mut last_seq = 0;
    // The dead-man switch: without a renewed lease, all load stops. A lease
    // of 0 (an older controller) means none.
    let mut lease_until = (!first_lease.is_zero())
        .then(|| tokio::time::Instant::from_std(start_at.max(Instant::now())) + first_lease);
    let mut link = Some(Link {
        tx,
        inbound,
        heard: tokio::time::Instant::from_std(start_at.max(Instant::now())),
    });
    // Reports the controller has not acknowledged yet, oldest first.
    let mut unacked: VecDeque<v1::Interval> = VecDeque::new();
    let mut redial: Option<Redial> = None;
    // Redial fast: the lease (5 s by default) is running.
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(500),
        hash(&opts.name) ^ u64::from(std::process::id()),
    );
    let mut engine_done = false;
    loop {
        if engine_done && link.is_some() {
            break;
        }
        if link.is_none() && redial.is_none() {
            redial = Some(Box::pin(resume(
                endpoint.clone(),
                opts.clone(),
                run_id.clone(),
                backoff.next_delay(),
            )));
        }
        let lease_expiry = async {
            match lease_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let silent_at = link.as_ref().map(|l| l.heard + SILENCE);
        let silence = async {
            match silent_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let inbound_msg = async {
            match link.as_mut() {
                Some(l) => l.inbound.message().await,
                None => std::future::pending().await,
            }
        };
        let redialed = async {
            match redial.as_mut() {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = lease_expiry => {
                tracing::error!("lease expired: the controller is silent; stopping all load now");
                engine.stop.hard();
                return Err(AttachError::Gone);
            }
            interval = engine.intervals.recv(), if !engine_done => match interval {
                Some(i) => {
                    last_seq = i.seq;
                    if unacked.len() == MAX_UNACKED {
                        unacked.pop_front();
                        tracing::warn!("more than {MAX_UNACKED} reports unacknowledged; the oldest is dropped");
                    }
                    unacked.push_back(i.clone());
                    // Never wait on a stalled stream: the report stays in
                    // `unacked` and goes again after a reconnect.
                    if let Some(l) = &link
                        && l.tx.try_send(msg(agent_message::Body::Interval(i))).is_err()
                    {
                        tracing::warn!("the controller stream is closed or stalled; reconnecting while the lease lasts");
                        link = None;
                    }
                }
                None => engine_done = true,
            },
            m = inbound_msg => match m {
                Ok(Some(v1::ControllerMessage { body: Some(controller_message::Body::Lease(l)) })) if l.run_id == run_id => {
                    lease_until = Some(tokio::time::Instant::now() + Duration::from_micros(l.valid_for_us));
                    acknowledge(&mut unacked, l.next_seq);
                    if let Some(link) = link.as_mut() { link.heard = tokio::time::Instant::now(); }
                }
                Ok(Some(v1::ControllerMessage { body: Some(controller_message::Body::Stop(s)) })) => {
                    tracing::info!(graceful = s.graceful, "controller asked to stop");
                    if s.graceful { engine.stop.graceful() } else { engine.stop.hard() }
                    if let Some(link) = link.as_mut() { link.heard = tokio::time::Instant::now(); }
                }
                Ok(Some(other)) => tracing::warn!(message = ?other, "ignored unexpected message during a run"),
                Ok(None) | Err(_) => {
                    tracing::warn!("lost the controller stream; reconnecting while the lease lasts");
                    link = None;
                }
            },
            _ = silence => {
                tracing::warn!("the controller has been silent for {SILENCE:?}; reconnecting while the lease lasts");
                link = None;
            }
            r = redialed => {
                redial = None;
                match r {
                    Ok((new_link, next_seq, lease)) => {
                        acknowledge(&mut unacked, next_seq);
                        tracing::info!(resend = unacked.len(), "reconnected to the controller; the run goes on");
                        lease_until = Some(tokio::time::Instant::now() + lease);
                        backoff.reset();
                        let mut ok = true;
                        for i in &unacked {
                            if new_link.tx.try_send(msg(agent_message::Body::Interval(i.clone()))).is_err() {
                                ok = false;
                                break;
                            }
                        }
                        if ok {
                            link = Some(new_link);
                        }
                    }
                    Err(ResumeError::Gone(why)) => {
                        // Nobody listens where the controller was: nobody is
                        // watching this load, so it stops now.
                        tracing::warn!(%why, "the controller is gone; stopping all load");
                        engine.stop.hard();
                        return Err(AttachError::Gone);
                    }
                    Err(ResumeError::Rejected(why)) => {
                        tracing::warn!(%why, "the controller no longer holds this run; stopping all load");
                        engine.stop.hard();
                        return Err(AttachError::Gone);
                    }
                    Err(ResumeError::Failed(why)) => {
                        tracing::info!(%why, "reconnect failed; trying again while the lease lasts");
                    }
                }
            }
            _ = shutdown.cancelled() => {
                engine.stop.hard();
                return Ok(Attach::RunEnded);
            }
        }
    }
    let Some(Link {
        tx, mut inbound, ..
    }) = link
    else {
        return Err(AttachError::Gone);
    };
    let start_lateness = engine.start_lateness();
    let totals = engine.totals();
    if let Err(reason) = engine.finish() {
        tracing::error!(%reason, "engine failure");
        let failed = v1::Failed { run_id, reason };
        farewell(&tx, &mut inbound, msg(agent_message::Body::Failed(failed))).await;
        return Ok(Attach::RunEnded);
    }
    tx.send(msg(agent_message::Body::Done(v1::Done {
        run_id: run_id.clone(),
        last_seq,
        start_lateness_us: u64::try_from(start_lateness.as_micros()).unwrap_or(u64::MAX),
        totals,
    })))
    .await
    .map_err(|_| AttachError::Gone)?;
    // Wait (briefly) for the controller to close the stream, so the Done is delivered.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
    tracing::info!(run_id = %run_id, "run finished");
    Ok(Attach::RunEnded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_forgets_exactly_the_acknowledged_reports() {
        let mut unacked: VecDeque<v1::Interval> = (3..8)
            .map(|seq| v1::Interval {
                seq,
                ..Default::default()
            })
            .collect();
        acknowledge(&mut unacked, 0);
        assert_eq!(unacked.len(), 5, "an older controller acknowledges nothing");
        acknowledge(&mut unacked, 5);
        assert_eq!(
            unacked.iter().map(|i| i.seq).collect::<Vec<_>>(),
            [5, 6, 7],
            "3 and 4 are held by the controller; 5 onwards go again"
        );
        acknowledge(&mut unacked, 100);
        assert!(unacked.is_empty());
    }
}
