//! A plan cut into what each agent receives: the single-machine schedule
//! split by the agents' weights (in order, so the fleet behaves like one
//! machine), the scenarios as wire steps, and each agent's data rows.

use std::time::Duration;

use loadfleet_proto::v1;

use crate::duration::micros;
use crate::schedule;

use super::{LoadModel, Plan, RateStage, RunBound};

/// One agent's part of a run.
#[derive(Debug, Clone)]
pub struct AgentShare {
    /// What is sent to it.
    pub assign: v1::Assign,
    /// The users it may run at once (its user slots, or its part of the
    /// open model's `max_users`).
    pub users: usize,
    /// Its planned share of the load (0..1): of the arrivals (open model)
    /// or of the user slots (closed).
    pub load_share: f64,
}

/// The assignments of a fleet whose agents (sorted by name) have
/// `agent_weights`, in the same order; an error when the plan cannot be
/// shared by that many agents.
pub fn assignments(
    plan: &Plan,
    agent_weights: &[u32],
    run_id: &str,
    seed: u64,
    interval: Duration,
) -> Result<Vec<AgentShare>, String> {
    let weights: Vec<u32> = plan.scenarios.iter().map(|s| s.weight).collect();
    let shares = Shares::of(plan, &weights, agent_weights)?;
    let max_run = plan.max_run();
    let scenarios: Vec<v1::Scenario> = plan
        .scenarios
        .iter()
        .map(|s| v1::Scenario {
            name: s.name.clone(),
            steps: s.steps.iter().map(|st| st.wire.clone()).collect(),
            on_error: s.on_error as i32,
            pacing_us: micros(s.pacing),
            program: s.program.clone(),
        })
        .collect();
    let fleet_users: u64 = shares.closed.iter().map(|u| u.len() as u64).sum();
    let total_slots: usize = shares.closed.iter().map(Vec::len).sum();
    let target = v1::Target {
        base_url: plan.target.base_url.clone(),
        timeout_us: micros(plan.target.timeout),
        connect_timeout_us: plan.target.connect_timeout.map_or(0, micros),
        ca_pem: plan.target.ca_pem.clone().unwrap_or_default(),
        body_limit: plan.target.body_limit.unwrap_or(0),
        insecure_tls: !plan.target.tls_verify,
        connections: plan.target.connections.into(),
        no_tls_resumption: !plan.target.tls_resumption,
        phases: plan.target.request_phases,
        version: plan.target.version.into(),
    };
    let mut out = Vec::with_capacity(agent_weights.len());
    for i in 0..agent_weights.len() {
        let (users, open) = shares.for_agent(i);
        let of_arrivals = open
            .first()
            .map(|o| o.positions.len() as f64 / f64::from(o.period.max(1)));
        let of_slots = (total_slots > 0).then(|| users.len() as f64 / total_slots as f64);
        // Every schedule and the user slots are dealt by the same weights:
        // with both (rates for some scenarios, users for others), the two
        // shares agree to within a slot.
        let load_share = match (of_arrivals, of_slots) {
            (Some(a), Some(s)) => (a + s) / 2.0,
            (Some(a), None) => a,
            (None, Some(s)) => s,
            (None, None) => 0.0,
        };
        let max_users = users.len() + open.iter().map(|o| o.max_users as usize).sum::<usize>();
        let data = data_for(plan, &users);
        out.push(AgentShare {
            users: max_users,
            load_share,
            assign: v1::Assign {
                run_id: run_id.to_string(),
                target: Some(target.clone()),
                scenarios: scenarios.clone(),
                users,
                iterations: shares.iterations,
                duration_us: shares.duration_us,
                interval_us: micros(interval),
                step_names: plan.step_names.clone(),
                metric_names: plan.metrics.iter().map(|m| m.name.clone()).collect(),
                max_run_us: micros(max_run),
                data,
                open,
                graceful_stop_us: shares.graceful_stop_us,
                fleet_users,
                clear_cookies_each_iteration: plan.clear_cookies_each_iteration,
                // Its share of the fleet's cap, as its share of the users.
                throttle_per_s: plan.throttle_per_s.map_or(0.0, |t| t * load_share),
                seed,
                group_steps: plan
                    .groups
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| **g)
                    .map(|(i, _)| i as u32)
                    .collect(),
                // Filled in as each share is dealt to its agent.
                agent_name: String::new(),
                region: String::new(),
            },
        });
    }
    Ok(out)
}

/// A rate schedule, each agent's arrival positions and each agent's share
/// of its concurrency cap.
type OpenShares = (v1::OpenModel, Vec<Vec<u32>>, Vec<u32>);

/// The schedule dealt to agents: closed-model user slots, or the open
/// model's arrival positions and concurrency shares.
struct Shares {
    closed: Vec<Vec<schedule::Slot>>,
    /// Each rate schedule, with each agent's arrival positions and share of
    /// its concurrency cap.
    open: Vec<OpenShares>,
    iterations: u64,
    duration_us: u64,
    graceful_stop_us: u64,
}

impl Shares {
    fn of(plan: &Plan, scenario_weights: &[u32], agent_weights: &[u32]) -> Result<Shares, String> {
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
                    open: Vec::new(),
                    iterations,
                    duration_us,
                    graceful_stop_us: 0,
                })
            }
            LoadModel::Scenarios(loads) => {
                let mut open = Vec::new();
                for l in loads {
                    let Some(rate) = &l.rate else { continue };
                    // The start is a leading stage without arrivals.
                    let lead = (!l.start.is_zero()).then_some(RateStage {
                        from: 0.0,
                        to: 0.0,
                        duration: l.start,
                    });
                    let stages: Vec<RateStage> = lead
                        .into_iter()
                        .chain(rate.stages.iter().copied())
                        .collect();
                    open.push(
                        open_model(
                            &stages,
                            l.users,
                            rate.max_wait,
                            vec![l.scenario as u32],
                            agent_weights,
                        )
                        .map_err(|e| format!("scenario \"{}\": {e}", l.name))?,
                    );
                }
                let users: Vec<schedule::ScenarioUsers> = loads
                    .iter()
                    .filter(|l| l.rate.is_none())
                    .map(|l| schedule::ScenarioUsers {
                        scenario: l.scenario as u32,
                        users: l.users,
                        ramp_up: l.ramp_up,
                        start: l.start,
                        iterations: match l.bound {
                            RunBound::Iterations(n) => n,
                            RunBound::Duration(_) => 0,
                        },
                        end: l.end(),
                    })
                    .collect();
                let slots = schedule::scenario_slots(&users);
                // Every user has its own bound; the run's is the latest end
                // (or the most iterations), which no user reads.
                let end = loads.iter().filter_map(|l| l.end()).max();
                let most = loads
                    .iter()
                    .filter_map(|l| match l.bound {
                        RunBound::Iterations(n) => Some(n),
                        RunBound::Duration(_) => None,
                    })
                    .max();
                let (iterations, duration_us) = match (end, most) {
                    (Some(e), _) => (0, micros(e)),
                    (None, n) => (n.unwrap_or(1), 0),
                };
                Ok(Shares {
                    closed: schedule::deal(&slots, agent_weights),
                    open,
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
                    open: Vec::new(),
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
                let model = open_model(
                    stages,
                    *max_users,
                    *max_wait,
                    schedule::cycle(scenario_weights),
                    agent_weights,
                )?;
                Ok(Shares {
                    closed: vec![Vec::new(); agent_weights.len()],
                    open: vec![model],
                    iterations: 0,
                    duration_us: micros(plan.scheduled_duration().unwrap_or_default()),
                    graceful_stop_us: 0,
                })
            }
        }
    }

    fn for_agent(&self, i: usize) -> (Vec<v1::UserSlot>, Vec<v1::OpenModel>) {
        let users = self.closed[i]
            .iter()
            .map(|s| v1::UserSlot {
                index: s.index,
                start_offset_us: micros(s.start_offset),
                scenario: s.scenario,
                stop_offset_us: s.stop_offset.map_or(0, micros),
                iterations: s.iterations,
                end_us: s.end.map_or(0, micros),
            })
            .collect();
        let open = self
            .open
            .iter()
            .map(|(model, positions, caps)| v1::OpenModel {
                positions: positions[i].clone(),
                max_users: caps[i],
                ..model.clone()
            })
            .collect();
        (users, open)
    }
}

/// A rate schedule as agents receive it (positions and caps left for each
/// agent), with each agent's arrival positions and share of `max_users`.
fn open_model(
    stages: &[RateStage],
    max_users: u64,
    max_wait: Duration,
    scenario_cycle: Vec<u32>,
    agent_weights: &[u32],
) -> Result<OpenShares, String> {
    if (max_users as usize) < agent_weights.len() {
        return Err(format!(
            "max_users = {max_users} cannot be shared by {} agents; raise it to at least {}",
            agent_weights.len(),
            agent_weights.len()
        ));
    }
    let positions = schedule::arrival_positions(agent_weights);
    let caps = schedule::split_count(max_users, agent_weights);
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
        max_wait_us: micros(max_wait),
        scenario_cycle,
    };
    Ok((model, positions, caps))
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
        let plan = super::super::parse(file.to_str().unwrap(), &text, "p").unwrap();
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
