//! An observer's attachment (`loadfleet-agent --observe`): it is dealt no
//! load. When a run's load starts the controller sends Observe; from then
//! on the observer samples its host every interval and sends each sample,
//! until the controller stops it, its lease runs out (the controller is
//! gone), or the run's hard limit passes. Then a last, partial sample and
//! Done.

use std::time::{Duration, Instant};

use loadfleet_proto::v1::{self, agent_message, controller_message};
use tokio_util::sync::CancellationToken;

use crate::observe::HostSampler;

use super::handshake::Stream;
use super::{AgentOptions, Attach, AttachError, farewell, msg};

/// Waits for a run to observe, observes it, and says Done.
pub(super) async fn attend(
    mut stream: Stream,
    opts: &AgentOptions,
    names: &[String],
    shutdown: &CancellationToken,
) -> Result<Attach, AttachError> {
    let observe = loop {
        let Some(m) = stream.inbound.message().await? else {
            return Ok(Attach::Idle);
        };
        match m.body {
            Some(controller_message::Body::Observe(o)) => break o,
            Some(controller_message::Body::Reject(r)) => {
                return Err(AttachError::Rejected(r.reason));
            }
            // A Stop before the load started, or a lease: nothing to do.
            Some(_) => {}
            None => {}
        }
    };
    let run_id = observe.run_id.clone();
    tracing::info!(run_id = %run_id, controller = %opts.controller, "observing this host");
    let mut sampler = HostSampler::new(names.to_vec());
    let began = Instant::now();
    let interval = Duration::from_micros(observe.interval_us.clamp(100_000, 60_000_000));
    let deadline = began + Duration::from_micros(observe.max_run_us.max(1));
    let mut lease_until = began + Duration::from_micros(observe.lease_us.max(1));
    let mut tick = tokio::time::interval_at((began + interval).into(), interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let report = |seq: u64, host: v1::HostVitals| {
        msg(agent_message::Body::Interval(v1::Interval {
            run_id: run_id.clone(),
            seq,
            elapsed_us: u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX),
            host: Some(host),
            ..Default::default()
        }))
    };
    let why = loop {
        tokio::select! {
            _ = tick.tick() => {
                // A full channel means the controller reads nothing: this
                // sample is dropped rather than the observer blocked.
                if stream.tx.try_send(report(seq, sampler.sample())).is_err() {
                    tracing::warn!(seq, "the controller is not reading: a host sample was not sent");
                }
                seq += 1;
            }
            m = stream.inbound.message() => match m {
                Ok(Some(v1::ControllerMessage { body: Some(controller_message::Body::Lease(l)) })) if l.run_id == run_id => {
                    lease_until = Instant::now() + Duration::from_micros(l.valid_for_us);
                }
                Ok(Some(v1::ControllerMessage { body: Some(controller_message::Body::Stop(_)) })) => break "stopped by the controller",
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    tracing::warn!(run_id = %run_id, "the controller's stream closed: observing stopped");
                    return Err(AttachError::RunLost("the stream to the controller closed".into()));
                }
            },
            _ = tokio::time::sleep_until(lease_until.into()) => {
                tracing::warn!(run_id = %run_id, "no lease from the controller: observing stopped");
                return Err(AttachError::RunLost("its lease ran out".into()));
            }
            _ = tokio::time::sleep_until(deadline.into()) => break "the run's time limit passed",
            _ = shutdown.cancelled() => break "this observer is shutting down",
        }
    };
    tracing::info!(run_id = %run_id, samples = seq, "{why}");
    // The partial interval since the last tick.
    let _ = stream.tx.try_send(report(seq, sampler.sample()));
    let done = v1::Done {
        run_id: run_id.clone(),
        last_seq: seq,
        ..Default::default()
    };
    farewell(&mut stream, msg(agent_message::Body::Done(done))).await;
    Ok(Attach::RunEnded)
}
