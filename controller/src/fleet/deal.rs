//! Dealing: the single-machine schedule cut into each agent's share (by
//! weight, in order, so the fleet behaves like one machine), sent as its
//! assignment; then waiting for every agent to be ready.

use std::time::Duration;

use loadfleet_proto::v1::{agent_message, controller_message};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::plan::{Plan, assign};
use crate::service::Event;

use super::agent::{Agent, State};
use super::{FleetError, INTERVAL, RunOptions, reject};

/// Deals `plan` to `agents` (sorted by name) and sends each its assignment.
pub(super) fn deal(
    plan: &Plan,
    agents: &mut [Agent],
    run_id: &str,
    seed: u64,
) -> Result<(), FleetError> {
    let weights: Vec<u32> = agents.iter().map(|a| a.weight).collect();
    let shares =
        assign::assignments(plan, &weights, run_id, seed, INTERVAL).map_err(FleetError::Unfit)?;
    for (agent, mut share) in agents.iter_mut().zip(shares) {
        share.assign.agent_name = agent.name.clone();
        share.assign.region = agent.region.clone();
        agent.users = share.users;
        agent.load_share = share.load_share;
        agent.send(controller_message::Body::Assign(share.assign));
    }
    Ok(())
}

/// Waits for every agent to acknowledge its assignment.
pub(super) async fn wait_ready(
    opts: &RunOptions,
    events: &mut mpsc::Receiver<Event>,
    agents: &mut [Agent],
    run_id: &str,
) -> Result<(), FleetError> {
    let limit = Duration::from_secs(30);
    let deadline = Instant::now() + limit;
    let abort = |agents: &[Agent]| {
        for a in agents {
            a.stop(run_id, false);
        }
    };
    let index = super::conn_index(agents);
    let mut unready = agents.iter().filter(|a| a.state != State::Ready).count();
    while unready > 0 {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Message { conn, body }) => {
                    let Some(a) = index.get(&conn).and_then(|&i| agents.get_mut(i)) else { continue };
                    match body {
                        agent_message::Body::Ready(r) if r.run_id == run_id => {
                            if a.state != State::Ready {
                                unready -= 1;
                            }
                            a.state = State::Ready;
                        }
                        agent_message::Body::Failed(f) => {
                            let err = FleetError::AgentFailed { agent: a.name.clone(), reason: f.reason, attached: Vec::new() };
                            abort(agents);
                            return Err(err);
                        }
                        other => tracing::warn!(agent = %a.name, message = ?other, "unexpected message before the start"),
                    }
                }
                Some(Event::Detached { conn, reason }) => {
                    if let Some(a) = index.get(&conn).and_then(|&i| agents.get(i)) {
                        let err = FleetError::AgentLeft { agent: a.name.clone(), reason, attached: Vec::new() };
                        abort(agents);
                        return Err(err);
                    }
                }
                Some(Event::Attached { outbound, .. }) => reject(&outbound, "a run is starting; try again later"),
                Some(Event::Refused(r)) => tracing::debug!(?r, "refused an agent"),
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
