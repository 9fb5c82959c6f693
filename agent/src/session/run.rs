//! A running assignment, from the agent's side: the link to the controller
//! (which may break and be redialed while the lease lasts), the reports the
//! controller has not acknowledged yet, and the lease, the dead-man switch
//! that stops all load when nobody renews it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use loadfleet_proto::v1::{self, agent_message, controller_message};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::engine::Engine;

use super::handshake::{self, OpenError, Stream};
use super::{AgentOptions, Attach, AttachError, MAX_UNACKED, farewell, hash, msg};

/// Silence from the controller (which renews leases every second) after
/// which an agent dials again on a fresh connection, before its lease runs
/// out, rather than wait for a stalled TCP connection to recover.
const SILENCE: Duration = Duration::from_millis(2500);

/// Longest a reconnect attempt may take.
const REDIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// After its lease ran out (its load stopped), how long an agent keeps
/// trying to hand the controller what it measured before giving up.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);

/// A stream to the controller during a run.
struct Link {
    stream: Stream,
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

/// The agent's side of a started run.
pub(super) struct RunState {
    run_id: String,
    /// The stream to the controller; `None` while redialing.
    link: Option<Link>,
    /// Reports the controller has not acknowledged yet, oldest first.
    unacked: VecDeque<v1::Interval>,
    /// When the lease runs out; `None` for an older controller that grants none.
    lease_until: Option<tokio::time::Instant>,
    /// The redial in flight.
    redial: Option<Redial>,
    /// Redial fast: the lease (5 s by default) is running.
    backoff: Backoff,
    /// The last interval's sequence number.
    last_seq: u64,
    /// The engine has sent its last interval.
    engine_done: bool,
    /// The lease ran out: load has stopped, and what was measured is being
    /// delivered until this instant.
    delivering_until: Option<tokio::time::Instant>,
    /// Why the run ended early on this side, for the Done.
    cut_short: Option<String>,
}

impl RunState {
    /// The run starting at `start_at` on `stream`, with its first lease (0:
    /// none).
    pub(super) fn new(
        run_id: String,
        stream: Stream,
        start_at: Instant,
        first_lease: Duration,
        opts: &AgentOptions,
    ) -> RunState {
        let begins = tokio::time::Instant::from_std(start_at.max(Instant::now()));
        RunState {
            run_id,
            link: Some(Link {
                stream,
                heard: begins,
            }),
            unacked: VecDeque::new(),
            lease_until: (!first_lease.is_zero()).then(|| begins + first_lease),
            redial: None,
            backoff: Backoff::new(
                Duration::from_millis(100),
                Duration::from_millis(500),
                hash(&opts.name) ^ u64::from(std::process::id()),
            ),
            last_seq: 0,
            engine_done: false,
            delivering_until: None,
            cut_short: None,
        }
    }

    /// Runs until the engine is done and a link to the controller is up
    /// (then says Done), or the run ends otherwise.
    pub(super) async fn drive(
        mut self,
        mut engine: Engine,
        endpoint: &tonic::transport::Endpoint,
        opts: &AgentOptions,
        shutdown: &CancellationToken,
    ) -> Result<Attach, AttachError> {
        while !(self.engine_done && self.link.is_some()) {
            // The users check the lease before each request themselves (a
            // frozen process may wake its workers before this loop).
            if let Some(t) = self.lease_until {
                engine.stop.lease_until(t.into_std());
            }
            if self.link.is_none() && self.redial.is_none() {
                self.redial = Some(Box::pin(resume(
                    endpoint.clone(),
                    opts.clone(),
                    self.run_id.clone(),
                    self.backoff.next_delay(),
                )));
            }
            let lease_until = self.lease_until;
            let lease_expiry = async {
                match lease_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let silent_at = self.link.as_ref().map(|l| l.heard + SILENCE);
            let silence = async {
                match silent_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let inbound_msg = async {
                match self.link.as_mut() {
                    Some(l) => l.stream.inbound.message().await,
                    None => std::future::pending().await,
                }
            };
            let redialed = async {
                match self.redial.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            let delivering_until = self.delivering_until;
            let delivery_over = async {
                match delivering_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = lease_expiry => {
                    // The dead-man switch: no new request goes out (those in
                    // flight finish within their timeout, so what the target
                    // served is what gets counted). What was measured is
                    // still handed over if the controller takes it.
                    tracing::error!("lease expired: the controller is silent; stopping all load now");
                    engine.stop.graceful();
                    self.lease_until = None;
                    self.delivering_until = Some(tokio::time::Instant::now() + DELIVERY_GRACE);
                    self.cut_short = Some(
                        "its lease expired (the controller was silent); it stopped its load".into(),
                    );
                    self.link = None;
                }
                _ = delivery_over => {
                    engine.stop.hard();
                    return Err(AttachError::RunLost(format!(
                        "its lease expired and the controller took no reports within {DELIVERY_GRACE:?}"
                    )));
                }
                interval = engine.intervals.recv(), if !self.engine_done => self.on_interval(interval),
                m = inbound_msg => self.on_message(m, &engine),
                _ = silence => {
                    tracing::warn!("the controller has been silent for {SILENCE:?}; reconnecting while the lease lasts");
                    self.link = None;
                }
                r = redialed => {
                    self.redial = None;
                    if let Err(e) = self.on_redialed(r) {
                        engine.stop.hard();
                        return Err(e);
                    }
                }
                _ = shutdown.cancelled() => {
                    engine.stop.hard();
                    return Ok(Attach::RunEnded);
                }
            }
        }
        self.finish(engine).await
    }

    /// An interval from the engine (`None`: the engine is done).
    fn on_interval(&mut self, interval: Option<v1::Interval>) {
        let Some(i) = interval else {
            self.engine_done = true;
            return;
        };
        self.last_seq = i.seq;
        if self.unacked.len() == MAX_UNACKED {
            self.unacked.pop_front();
            tracing::warn!("more than {MAX_UNACKED} reports unacknowledged; the oldest is dropped");
        }
        self.unacked.push_back(i.clone());
        // Never wait on a stalled stream: the report stays in `unacked` and
        // goes again after a reconnect.
        if let Some(l) = &self.link
            && l.stream
                .tx
                .try_send(msg(agent_message::Body::Interval(i)))
                .is_err()
        {
            tracing::warn!(
                "the controller stream is closed or stalled; reconnecting while the lease lasts"
            );
            self.link = None;
        }
    }

    /// A message from the controller, or the stream's end.
    fn on_message(
        &mut self,
        m: Result<Option<v1::ControllerMessage>, tonic::Status>,
        engine: &Engine,
    ) {
        let body = match m {
            Ok(Some(v1::ControllerMessage { body })) => body,
            Ok(None) | Err(_) => {
                tracing::warn!("lost the controller stream; reconnecting while the lease lasts");
                self.link = None;
                return;
            }
        };
        match body {
            Some(controller_message::Body::Lease(l)) if l.run_id == self.run_id => {
                self.lease_until =
                    Some(tokio::time::Instant::now() + Duration::from_micros(l.valid_for_us));
                acknowledge(&mut self.unacked, l.next_seq);
            }
            Some(controller_message::Body::Stop(s)) => {
                tracing::info!(graceful = s.graceful, "controller asked to stop");
                if s.graceful {
                    engine.stop.graceful()
                } else {
                    engine.stop.hard()
                }
            }
            other => {
                tracing::warn!(message = ?other, "ignored unexpected message during a run");
                return;
            }
        }
        if let Some(link) = self.link.as_mut() {
            link.heard = tokio::time::Instant::now();
        }
    }

    /// A redial ended: carry on over the new link (sending again what the
    /// controller lacks), try again, or stop all load when the controller
    /// is gone or no longer holds the run.
    fn on_redialed(
        &mut self,
        r: Result<(Link, u64, Duration), ResumeError>,
    ) -> Result<(), AttachError> {
        match r {
            Ok((link, next_seq, lease)) => {
                acknowledge(&mut self.unacked, next_seq);
                tracing::info!(
                    resend = self.unacked.len(),
                    "reconnected to the controller; the run goes on"
                );
                self.lease_until = Some(tokio::time::Instant::now() + lease);
                self.backoff.reset();
                let resent = self.unacked.iter().all(|i| {
                    link.stream
                        .tx
                        .try_send(msg(agent_message::Body::Interval(i.clone())))
                        .is_ok()
                });
                if resent {
                    self.link = Some(link);
                }
                Ok(())
            }
            Err(ResumeError::Gone(why)) => {
                // Nobody listens where the controller was: nobody is
                // watching this load, so it stops now.
                tracing::warn!(%why, "the controller is gone; stopping all load");
                Err(AttachError::RunLost(format!(
                    "nothing listens at its address: {why}"
                )))
            }
            Err(ResumeError::Rejected(why)) => {
                tracing::warn!(%why, "the controller no longer holds this run; stopping all load");
                Err(AttachError::RunLost(format!(
                    "it no longer holds the run: {why}"
                )))
            }
            Err(ResumeError::Failed(why)) => {
                tracing::info!(%why, "reconnect failed; trying again while the lease lasts");
                Ok(())
            }
        }
    }

    /// The engine is done and the link is up: say Done (or Failed) and wait
    /// for the controller to close the stream, so the message is delivered.
    async fn finish(self, engine: Engine) -> Result<Attach, AttachError> {
        let Some(Link { mut stream, .. }) = self.link else {
            return Err(AttachError::RunLost("no link to say Done on".into()));
        };
        let run_id = self.run_id;
        let start_lateness = engine.start_lateness();
        let totals = engine.totals();
        let cut_short = engine.cut_short().or(self.cut_short).unwrap_or_default();
        let abandoned = engine.abandoned();
        if !cut_short.is_empty() {
            tracing::warn!(%cut_short, "the run was cut short; the controller is told");
        }
        if let Err(reason) = engine.finish() {
            tracing::error!(%reason, "engine failure");
            let failed = v1::Failed { run_id, reason };
            farewell(&mut stream, msg(agent_message::Body::Failed(failed))).await;
            return Ok(Attach::RunEnded);
        }
        stream
            .tx
            .send(msg(agent_message::Body::Done(v1::Done {
                run_id: run_id.clone(),
                last_seq: self.last_seq,
                start_lateness_us: u64::try_from(start_lateness.as_micros()).unwrap_or(u64::MAX),
                totals,
                cut_short,
                abandoned: abandoned.load(std::sync::atomic::Ordering::Relaxed),
            })))
            .await
            .map_err(|_| AttachError::RunLost("the stream closed before Done".into()))?;
        // Wait (briefly) for the controller to close the stream, so the Done is delivered.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(_)) = stream.inbound.message().await {}
        })
        .await;
        tracing::info!(run_id = %run_id, "run finished");
        Ok(Attach::RunEnded)
    }
}

/// Forgets the reports the controller holds (every seq below `next_seq`).
fn acknowledge(unacked: &mut VecDeque<v1::Interval>, next_seq: u64) {
    while unacked.front().is_some_and(|i| i.seq < next_seq) {
        unacked.pop_front();
    }
}

/// Dials the controller again after `delay` to carry on with `run_id`.
/// Returns the new link, the first seq the controller lacks and the lease.
async fn resume(
    endpoint: tonic::transport::Endpoint,
    opts: AgentOptions,
    run_id: String,
    delay: Duration,
) -> Result<(Link, u64, Duration), ResumeError> {
    tokio::time::sleep(delay).await;
    let attempt = async {
        let mut stream = handshake::open(&endpoint, &opts, handshake::Intent::Resume(&run_id))
            .await
            .map_err(|e| match e {
                OpenError::Connect(e) if refused(&e) => ResumeError::Gone(e.to_string()),
                OpenError::Connect(e) => ResumeError::Failed(e.to_string()),
                OpenError::Closed => ResumeError::Failed("stream closed".into()),
                OpenError::BadToken => {
                    ResumeError::Rejected("the token is not valid header text".into())
                }
                OpenError::Status(s) => ResumeError::Rejected(s.message().to_string()),
            })?;
        match stream.inbound.message().await {
            Ok(Some(v1::ControllerMessage {
                body: Some(controller_message::Body::Lease(l)),
            })) if l.run_id == run_id => Ok((
                Link {
                    stream,
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
pub(super) fn refused(e: &tonic::transport::Error) -> bool {
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
