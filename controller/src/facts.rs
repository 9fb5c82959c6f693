//! What the outputs say about the plan: the load model as run and the few
//! facts a summary needs, taken when the run starts. The fleet keeps them in
//! its result and the journal on disk, so a summary is made (or rebuilt)
//! without the plan.

use serde::Serialize;

use crate::plan::{LoadModel, RunBound};

/// What a summary needs of the plan, taken when the run starts (and kept
/// in the run's journal, so a summary can be rebuilt without the plan).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunFacts {
    pub name: String,
    pub target: String,
    pub load: LoadSummary,
    /// The open model (latency corrected for coordinated omission).
    pub open_model: bool,
    /// Users × `iterations`, for the closed model with `iterations`.
    pub iterations_planned: Option<u64>,
    /// What the plan turned off that a reader must know (`tls_verify =
    /// false`): said in the terminal, the summary and the report.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl RunFacts {
    pub fn of(plan: &crate::plan::Plan) -> RunFacts {
        let mut load = LoadSummary::of(&plan.load);
        if let Some(t) = plan.throttle_per_s {
            load.description.push_str(&format!(
                ", throttled to {} requests/min across the fleet",
                (t * 60.0 * 10.0).round() / 10.0
            ));
        }
        RunFacts {
            name: plan.name.clone(),
            target: plan.target.base_url.clone(),
            load,
            open_model: matches!(plan.load, LoadModel::Open { .. }),
            iterations_planned: match plan.load {
                LoadModel::Closed {
                    users,
                    bound: RunBound::Iterations(n),
                    ..
                } => Some(users.saturating_mul(n)),
                _ => None,
            },
            warnings: plan.warnings(),
        }
    }
}

/// The load model as run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LoadSummary {
    /// `closed` or `open`.
    pub model: String,
    pub description: String,
    /// Closed model: users, ramp-up, and iterations or duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_up_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    pub duration_s: Option<f64>,
    /// Closed model in stages: users, ramping linearly within each stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_stages: Option<Vec<UserStageSummary>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_stop_s: Option<f64>,
    /// Open model: arrivals per second, ramping linearly within each stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_stages: Option<Vec<RateStageSummary>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UserStageSummary {
    pub from: u64,
    pub to: u64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RateStageSummary {
    pub from: f64,
    pub to: f64,
    pub duration_s: f64,
}

impl LoadSummary {
    pub fn of(load: &LoadModel) -> LoadSummary {
        let mut s = LoadSummary {
            model: "closed".into(),
            description: load.describe(),
            users: None,
            ramp_up_s: None,
            iterations: None,
            duration_s: None,
            user_stages: None,
            graceful_stop_s: None,
            rate_stages: None,
            max_users: None,
            max_wait_s: None,
        };
        match load {
            LoadModel::Closed {
                users,
                ramp_up,
                bound,
            } => {
                s.users = Some(*users);
                s.ramp_up_s = Some(ramp_up.as_secs_f64());
                match bound {
                    RunBound::Iterations(n) => s.iterations = Some(*n),
                    RunBound::Duration(d) => s.duration_s = Some(d.as_secs_f64()),
                }
            }
            LoadModel::Staged {
                stages,
                graceful_stop,
            } => {
                s.duration_s = Some(stages.iter().map(|x| x.1.as_secs_f64()).sum());
                let mut level = 0;
                s.user_stages = Some(
                    stages
                        .iter()
                        .map(|&(u, d)| {
                            let st = UserStageSummary {
                                from: level,
                                to: u,
                                duration_s: d.as_secs_f64(),
                            };
                            level = u;
                            st
                        })
                        .collect(),
                );
                s.graceful_stop_s = Some(graceful_stop.as_secs_f64());
            }
            LoadModel::Open {
                stages,
                max_users,
                max_wait,
            } => {
                s.model = "open".into();
                s.duration_s = Some(stages.iter().map(|x| x.duration.as_secs_f64()).sum());
                s.rate_stages = Some(
                    stages
                        .iter()
                        .map(|x| RateStageSummary {
                            from: x.from,
                            to: x.to,
                            duration_s: x.duration.as_secs_f64(),
                        })
                        .collect(),
                );
                s.max_users = Some(*max_users);
                s.max_wait_s = Some(max_wait.as_secs_f64());
            }
        }
        s
    }
}
