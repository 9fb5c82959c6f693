//! The agent's side of the fleet protocol: dial the controller, take an
//! assignment, run it with the engine, stream intervals back; then dial again
//! for the next run. One file per phase of an attachment: [`handshake`]
//! (Hello, the assignment, Ready), [`start`] (clock pings, the start
//! instant) and [`run`] (the link, the unacknowledged reports, the lease and
//! the redial).

mod auth;
mod handshake;
mod observe;
mod run;
mod start;

use std::sync::Arc;
use std::time::{Duration, Instant};

use loadfleet_proto::v1::{self, agent_message, controller_message};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::engine;

pub use auth::AgentTls;
use handshake::{OpenError, Taken};
use run::RunState;

/// Most interval reports an agent keeps while its controller has not
/// acknowledged them: five minutes of one-second intervals (a few KB each).
pub const MAX_UNACKED: usize = 300;

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
    /// `--observe`: an observer on the system under test, not a load agent
    /// (with the process names it reports apart); `None` for a load agent.
    pub observe: Option<Vec<String>>,
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
    #[error(
        "the controller of this agent's run is gone ({0}); all load stopped, and with --once the agent exits"
    )]
    ControllerLost(String),
    /// `--check`: the controller answers but would refuse this agent.
    #[error("{0}")]
    NotAccepted(String),
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
    /// A run was under way and its controller went away (or no longer
    /// holds it): all load has stopped.
    #[error("the run ended without its controller: {0}")]
    RunLost(String),
    #[error("controller rejected this agent: {0}")]
    Rejected(String),
    /// Its token or certificate was refused: a configuration error.
    #[error("{0}")]
    NotAccepted(String),
    #[error("refused the assignment: {0}")]
    Refused(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Checks that the agent can work as configured and would be accepted:
/// its controller address parses, its certificates load, the controller
/// answers, and it accepts this agent (its token, or its certificate and
/// the name it claims) without joining a run. Returns what was checked.
pub async fn check(opts: &AgentOptions) -> Result<String, AgentError> {
    let endpoint = endpoint(opts)?;
    let unreachable = |e: &tonic::transport::Error| {
        AgentError::Unreachable(format!(
            "{}: {e}{}",
            opts.controller,
            std::error::Error::source(e)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ))
    };
    // A refusal of our token or certificate is a configuration error (exit
    // 2); any other failure of the call means what answered is not a
    // loadfleet controller (an HTTP server, a proxy): unreachable (exit 1).
    let refused = |s: &tonic::Status| match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            AgentError::NotAccepted(refusal(s))
        }
        _ => AgentError::Unreachable(format!(
            "{}: what answered is not a loadfleet controller ({}: {})",
            opts.controller,
            s.code(),
            s.message()
        )),
    };
    let asked = async {
        let mut stream = match handshake::open(&endpoint, opts, handshake::Intent::Check).await {
            Ok(s) => s,
            Err(OpenError::Connect(e)) => return Err(unreachable(&e)),
            Err(OpenError::Closed) => {
                return Err(AgentError::Unreachable(format!(
                    "{}: the stream closed at once",
                    opts.controller
                )));
            }
            Err(OpenError::BadToken) => {
                return Err(AgentError::NotAccepted(
                    "the fleet token is not valid header text".into(),
                ));
            }
            Err(OpenError::Status(s)) => return Err(refused(&s)),
        };
        match stream.inbound.message().await {
            Ok(Some(v1::ControllerMessage {
                body: Some(controller_message::Body::Accepted(a)),
            })) => Ok(format!(
                "controller {} accepts agent {} (region {}) as {}",
                opts.controller, opts.name, opts.region, a.identity
            )),
            Ok(Some(v1::ControllerMessage {
                body: Some(controller_message::Body::Reject(r)),
            })) => Err(AgentError::NotAccepted(r.reason)),
            Ok(other) => Err(AgentError::NotAccepted(format!(
                "unexpected answer {other:?} (is the controller older than this agent?)"
            ))),
            Err(s) => Err(refused(&s)),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), asked)
        .await
        .unwrap_or_else(|_| {
            Err(AgentError::Unreachable(format!(
                "{}: no answer within 5 s",
                opts.controller
            )))
        })
}

/// A controller's refusal in words an operator can act on.
fn refusal(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unauthenticated => format!(
            "the controller refused our fleet token ({}): give this agent the controller's token \
             (LOADFLEET_TOKEN or --token-file)",
            status.message()
        ),
        tonic::Code::PermissionDenied => {
            format!("the controller refused this agent: {}", status.message())
        }
        _ => format!("the controller refused this agent: {status}"),
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
    match &opts.tls {
        None => Ok(endpoint),
        Some(t) => t
            .endpoint(endpoint, &opts.controller)
            .map_err(AgentError::Tls),
    }
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
    let mut said = Said::default();
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
            Err(AttachError::RunLost(why)) if opts.once => {
                return Err(AgentError::ControllerLost(why));
            }
            Err(AttachError::Refused(why)) => {
                tracing::error!(reason = %why, "refused an assignment")
            }
            Err(AttachError::NotAccepted(why)) if opts.once => {
                return Err(AgentError::NotAccepted(why));
            }
            Err(AttachError::NotAccepted(why)) => {
                tracing::error!(controller = %opts.controller, "{why}")
            }
            Err(e) => {
                let why = explain(&e, &opts.controller);
                // Said at WARN the first time a cause is seen, then every
                // 30 s at most while it recurs (an agent retries every few
                // seconds for as long as its controller is away, and two
                // causes can alternate: a non-gRPC server answers a reset
                // one time and a protocol error the next).
                if let Some(again) = said.note(why.clone(), Instant::now()) {
                    tracing::warn!("not attached: {why}{again}; trying again");
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// How often an unchanged reason for not attaching is said again.
const SAY_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// The reasons for not attaching said recently: each is said once, then
/// again at most every [`SAY_AGAIN_AFTER`] with how many attempts it
/// failed in between. Bounded: the oldest reason is forgotten first.
#[derive(Default)]
struct Said {
    recent: Vec<(String, Instant, u32)>,
}

impl Said {
    const KEEP: usize = 8;

    /// Notes one failure; returns the suffix to say it with, or `None`
    /// when it was said recently enough.
    fn note(&mut self, why: String, now: Instant) -> Option<String> {
        if let Some(i) = self.recent.iter().position(|(w, _, _)| *w == why) {
            let (_, at, n) = &mut self.recent[i];
            if now.duration_since(*at) < SAY_AGAIN_AFTER {
                *n += 1;
                return None;
            }
            let again = if *n > 0 {
                format!(" ({n} more attempts since)")
            } else {
                String::new()
            };
            *at = now;
            *n = 0;
            return Some(again);
        }
        if self.recent.len() == Self::KEEP {
            self.recent.remove(0);
        }
        self.recent.push((why, now, 0));
        Some(String::new())
    }
}

/// Why an attachment failed, in words an operator can act on.
fn explain(e: &AttachError, controller: &str) -> String {
    match e {
        AttachError::Connect(t) if run::refused(t) => format!(
            "connection refused at {controller}: is the controller running, listening there (loadfleet run --listen)?"
        ),
        AttachError::Connect(t) => {
            let mut chain = t.to_string();
            let mut source = std::error::Error::source(t);
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            if chain.contains("BrokenPipe") || chain.contains("broken pipe") {
                format!(
                    "{controller} answered, but not as a loadfleet controller (a plain HTTP server, or a TLS port dialed with http://?): {chain}"
                )
            } else {
                format!("cannot reach the controller at {controller}: {chain}")
            }
        }
        AttachError::Stream(s)
            if [
                "h2 protocol error",
                "FRAME_SIZE_ERROR",
                "BrokenPipe",
                "broken pipe",
            ]
            .iter()
            .any(|sign| s.to_string().contains(sign)) =>
        {
            format!(
                "{controller} answered, but not in gRPC over plain HTTP/2: a controller that \
                 speaks TLS (dial https:// with the fleet's certificates, --ca, --cert, --key), or \
                 not a loadfleet controller at all (an HTTP server on that port?)"
            )
        }
        other => other.to_string(),
    }
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
async fn farewell(stream: &mut handshake::Stream, last: v1::AgentMessage) {
    if stream.tx.send(last).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = stream.inbound.message().await {}
        })
        .await;
    }
}

fn micros_since(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One attachment: say Hello, take an assignment, start with the fleet,
/// run it and report; or learn there is no run.
async fn attach_once(
    endpoint: &tonic::transport::Endpoint,
    opts: &AgentOptions,
    clock: Instant,
    shutdown: &CancellationToken,
) -> Result<Attach, AttachError> {
    let mut stream = handshake::open(endpoint, opts, handshake::Intent::Attach)
        .await
        .map_err(|e| match e {
            OpenError::Connect(e) => AttachError::Connect(e),
            OpenError::Closed => AttachError::Gone,
            OpenError::BadToken => {
                AttachError::Rejected("the token is not valid header text".into())
            }
            OpenError::Status(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                AttachError::NotAccepted(refusal(&status))
            }
            OpenError::Status(status) => AttachError::Stream(status),
        })?;
    if let Some(names) = &opts.observe {
        tracing::info!(controller = %opts.controller, name = %opts.name, "attached as an observer; waiting for a run");
        return observe::attend(stream, opts, names, shutdown).await;
    }
    tracing::info!(controller = %opts.controller, name = %opts.name, "attached; waiting for a run");
    let (run_id, assignment) = match handshake::take_assignment(&mut stream, opts).await? {
        Taken::Assigned { run_id, assignment } => (run_id, assignment),
        Taken::Ended(how) => return Ok(how),
    };
    let Some((start_at, first_lease)) = start::await_start(&mut stream, &run_id, clock).await?
    else {
        return Ok(Attach::RunEnded);
    };
    let config = engine::EngineConfig {
        workers: opts.workers,
        timing: opts.timing,
        policy: Arc::new(opts.policy.clone()),
    };
    let engine = match engine::start(assignment, start_at, config) {
        Ok(e) => e,
        Err(e) => {
            let failed = v1::Failed {
                run_id,
                reason: e.to_string(),
            };
            farewell(&mut stream, msg(agent_message::Body::Failed(failed))).await;
            return Ok(Attach::RunEnded);
        }
    };
    RunState::new(run_id, stream, start_at, first_lease, opts)
        .drive(engine, endpoint, opts, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_causes_are_each_said_once_then_again_after_a_while() {
        let mut said = Said::default();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        assert_eq!(said.note("reset".into(), s(0)), Some(String::new()));
        assert_eq!(said.note("not grpc".into(), s(1)), Some(String::new()));
        assert_eq!(said.note("reset".into(), s(2)), None);
        assert_eq!(said.note("not grpc".into(), s(3)), None);
        assert_eq!(said.note("reset".into(), s(4)), None);
        // 31 s after it was first said, "reset" is said again with the count.
        assert_eq!(
            said.note("reset".into(), s(31)),
            Some(" (2 more attempts since)".into())
        );
        // Bounded: nine distinct causes forget the first.
        for i in 0..9 {
            said.note(format!("cause {i}"), s(32));
        }
        assert_eq!(said.recent.len(), Said::KEEP);
        assert_eq!(said.note("cause 0".into(), s(33)), Some(String::new()));
    }
}
