//! Between Ready and the run: answer the controller's clock pings, then
//! wait for the start signal, an instant on this agent's own clock (or a
//! relative offset), never a wall-clock time.

use std::time::{Duration, Instant};

use loadfleet_proto::v1::{self, agent_message, controller_message};

use super::handshake::Stream;
use super::{AttachError, micros_since, msg};

/// The wall clock, microseconds since the Unix epoch (negative before it).
fn wall_us() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// When to start and the first lease; `None` when the controller stopped
/// the run before it began.
pub(super) async fn await_start(
    stream: &mut Stream,
    run_id: &str,
    clock: Instant,
) -> Result<Option<(Instant, Duration)>, AttachError> {
    loop {
        let Some(m) = stream.inbound.message().await? else {
            return Err(AttachError::Gone);
        };
        match m.body {
            Some(controller_message::Body::Ping(p)) => {
                let pong = v1::Pong {
                    nonce: p.nonce,
                    agent_clock_us: micros_since(clock),
                    agent_wall_us: wall_us(),
                };
                stream
                    .tx
                    .send(msg(agent_message::Body::Pong(pong)))
                    .await
                    .map_err(|_| AttachError::Gone)?;
            }
            Some(controller_message::Body::Start(s)) if s.run_id == run_id => {
                let at = if s.start_at_us > 0 {
                    clock + Duration::from_micros(s.start_at_us)
                } else {
                    Instant::now() + Duration::from_micros(s.start_in_us)
                };
                return Ok(Some((at, Duration::from_micros(s.lease_us))));
            }
            Some(controller_message::Body::Stop(_)) => return Ok(None),
            other => {
                return Err(AttachError::Protocol(format!(
                    "expected Ping or Start, got {other:?}"
                )));
            }
        }
    }
}
