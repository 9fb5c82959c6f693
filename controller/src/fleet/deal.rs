//! Dealing: the single-machine schedule cut into each agent's share (by
//! weight, in order, so the fleet behaves like one machine), sent as its
//! assignment; then waiting for every agent to be ready.

use std::time::Duration;

use loadfleet_proto::v1::{self, agent_message, controller_message};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::plan::{LoadModel, Plan, RunBound};
use crate::schedule;
use crate::service::Event;

use super::agent::{Agent, State};
use super::{FleetError, INTERVAL, RunOptions, micros, reject};

/// Deals `plan` to `agents` (sorted by name) and sends each its assignment.
pub(super) fn deal(
    plan: &Plan,
    agents: &mut [Agent],
    run_id: &str,
    seed: u64,
) -> Result<(), FleetError> {
    let weights: Vec<u32> = plan.scenarios.iter().map(|s| s.weight).collect();
    let agent_weights: Vec<u32> = agents.iter().map(|a| a.weight).collect();
    let shares = Shares::of(plan, &weights, &agent_weights)?;
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
        let data = data_for(plan, &users);
        agent.send(controller_message::Body::Assign(v1::Assign {
            run_id: run_id.to_string(),
            target: Some(v1::Target {
                base_url: plan.target.base_url.clone(),
                timeout_us: micros(plan.target.timeout),
                connect_timeout_us: plan.target.connect_timeout.map_or(0, micros),
                ca_pem: plan.target.ca_pem.clone().unwrap_or_default(),
                body_limit: plan.target.body_limit.unwrap_or(0),
                insecure_tls: !plan.target.tls_verify,
                connections: plan.target.connections.into(),
                no_tls_resumption: !plan.target.tls_resumption,
                phases: plan.target.phases,
                version: plan.target.version.into(),
            }),
            scenarios: scenarios.clone(),
            users,
            iterations: shares.iterations,
            duration_us: shares.duration_us,
            interval_us: micros(INTERVAL),
            step_names: plan.step_names.clone(),
            metric_names: plan.metrics.iter().map(|m| m.name.clone()).collect(),
            max_run_us: micros(max_run),
            data,
            open,
            graceful_stop_us: shares.graceful_stop_us,
            fleet_users,
            clear_cookies_each_iteration: plan.clear_cookies_each_iteration,
            // Its share of the fleet's cap, as its share of the users.
            throttle_per_s: plan.throttle_per_s.map_or(0.0, |t| t * agent.load_share),
            seed,
        }));
    }
    Ok(())
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
