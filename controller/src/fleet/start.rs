//! Starting together: measure each agent's clock offset with a few pings,
//! then give every agent the same instant on its own clock.

use std::time::Duration;

use loadfleet_proto::v1::{self, agent_message, controller_message};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::service::Event;

use super::agent::{Agent, State};
use super::{FleetError, RunOptions, micros, reject};

/// Pings each agent a few times (one ping in flight per agent) and keeps,
/// per agent, the clock offset measured with the shortest round trip: the
/// offset's error is at most half of that round trip.
pub(super) async fn sync_clocks(
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
    let index = super::conn_index(agents);
    let mut unsynced = agents.iter().filter(|a| a.clock.samples < PINGS).count();
    while unsynced > 0 {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Message { conn, body: agent_message::Body::Pong(p) }) => {
                    let now = Instant::now();
                    let Some(a) = index.get(&conn).and_then(|&i| agents.get_mut(i)) else { continue };
                    let Some((nonce, sent)) = a.clock.in_flight else { continue };
                    if p.nonce != nonce {
                        continue;
                    }
                    let rtt = now - sent;
                    // The controller's wall clock at the ping's midpoint.
                    let wall_mid = time::OffsetDateTime::now_utc() - rtt / 2;
                    let wall_offset = (p.agent_wall_us != 0).then(|| {
                        let mid_us = i64::try_from(wall_mid.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
                        p.agent_wall_us.saturating_sub(mid_us)
                    });
                    let midpoint = i64::try_from((sent - clock + rtt / 2).as_micros()).unwrap_or(i64::MAX);
                    let offset = i64::try_from(p.agent_clock_us).unwrap_or(i64::MAX) - midpoint;
                    if a.clock.best.is_none_or(|(best, _)| rtt < best) {
                        a.clock.best = Some((rtt, offset));
                        a.clock.wall_offset_us = wall_offset;
                    }
                    a.clock.samples += 1;
                    a.clock.in_flight = None;
                    if a.clock.samples < PINGS {
                        ping(a);
                    } else if a.clock.samples == PINGS {
                        unsynced -= 1;
                    }
                }
                Some(Event::Detached { conn, reason }) => {
                    if let Some(a) = index.get(&conn).and_then(|&i| agents.get(i)) {
                        return Err(FleetError::AgentLeft { agent: a.name.clone(), reason, attached: Vec::new() });
                    }
                }
                Some(Event::Attached { outbound, .. }) => reject(&outbound, "a run is starting; try again later"),
                Some(Event::Message { .. }) => {}
                Some(Event::Refused(r)) => tracing::debug!(?r, "refused an agent"),
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

/// Starts every agent at `start_delay` from now, each on its own clock
/// corrected by the offset measured with its fastest ping (`clock` is the
/// controller's zero for those offsets); returns the instant and wall time
/// of the schedule's zero.
pub(super) fn start_all(
    agents: &mut [Agent],
    run_id: &str,
    clock: Instant,
    start_delay: Duration,
    lease: Duration,
) -> (Instant, time::OffsetDateTime) {
    let start = Instant::now() + start_delay;
    let started_at = time::OffsetDateTime::now_utc() + start_delay;
    let start_us = micros(start - clock) as i64;
    for a in agents.iter_mut() {
        let (start_in_us, start_at_us) = match a.clock.best {
            Some((_, offset)) => (0, u64::try_from(start_us + offset).unwrap_or(1).max(1)),
            None => (micros(start.saturating_duration_since(Instant::now())), 0),
        };
        a.send(controller_message::Body::Start(v1::Start {
            run_id: run_id.to_string(),
            start_in_us,
            start_at_us,
            lease_us: micros(lease),
        }));
        a.state = State::Running;
        a.last_heard = start;
        a.last_report_at = start;
    }
    (start, started_at)
}
