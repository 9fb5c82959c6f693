//! The load models, and what the controller knows of each in one place:
//! how it reads to a person, how a sweep or a capacity search varies it,
//! and how the summary describes it. Its validation is in `validate`, its
//! split among agents in `assign`.

use std::time::Duration;

use serde::Serialize;

use super::RunBound;

pub use loadfleet_agent::arrivals::RateStage;

/// How much load, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadModel {
    /// A fixed number of users started over a ramp, as in a JMeter thread group.
    Closed {
        users: u64,
        ramp_up: Duration,
        bound: RunBound,
    },
    /// Closed model with stages of `(users, duration)`, each ramping linearly
    /// from the previous level (from 0); a ramp-down stops users gracefully.
    Staged {
        stages: Vec<(u64, Duration)>,
        /// How long a stopped user may finish its iteration.
        graceful_stop: Duration,
    },
    /// Iterations started at scheduled instants (arrivals per second),
    /// whatever the target's response times.
    Open {
        stages: Vec<RateStage>,
        /// Concurrency cap, fleet-wide.
        max_users: u64,
        /// How long an arrival may wait for a free user before it is dropped.
        max_wait: Duration,
    },
}

impl LoadModel {
    /// One line a person reads: "20 users over a 30s ramp-up, 1 iteration each".
    pub fn describe(&self) -> String {
        use crate::duration::format_duration as fd;
        match self {
            LoadModel::Closed {
                users,
                ramp_up,
                bound,
            } => {
                let bound = match bound {
                    RunBound::Iterations(1) => "1 iteration each".to_string(),
                    RunBound::Iterations(n) => format!("{n} iterations each"),
                    RunBound::Duration(d) => format!("for {}", fd(*d)),
                };
                format!(
                    "closed model: {users} users over a {} ramp-up, {bound}",
                    fd(*ramp_up)
                )
            }
            LoadModel::Staged {
                stages,
                graceful_stop,
            } => {
                let mut level = 0;
                let parts: Vec<String> = stages
                    .iter()
                    .map(|&(u, d)| {
                        let part = format!("{level}→{u} users over {}", fd(d));
                        level = u;
                        part
                    })
                    .collect();
                format!(
                    "closed model in stages: {}; stopped users finish their iteration within {}",
                    parts.join(", "),
                    fd(*graceful_stop)
                )
            }
            LoadModel::Open {
                stages,
                max_users,
                max_wait,
            } => {
                let rates = match stages.as_slice() {
                    [s] if s.from == s.to => {
                        format!("{} arrivals/s for {}", s.from, fd(s.duration))
                    }
                    _ => stages
                        .iter()
                        .map(|s| format!("{}→{}/s over {}", s.from, s.to, fd(s.duration)))
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                format!(
                    "open model: {rates}; at most {max_users} users; arrivals wait up to {} for one",
                    fd(*max_wait)
                )
            }
        }
    }

    /// The open model (arrivals at instants, latency corrected for
    /// coordinated omission).
    pub fn is_open(&self) -> bool {
        matches!(self, LoadModel::Open { .. })
    }

    /// The most users at once: the closed model's users, the highest
    /// stage, or the open model's concurrency cap.
    pub fn peak_users(&self) -> u64 {
        match self {
            LoadModel::Closed { users, .. } => *users,
            LoadModel::Staged { stages, .. } => stages.iter().map(|s| s.0).max().unwrap_or(0),
            LoadModel::Open { max_users, .. } => *max_users,
        }
    }

    /// Users × `iterations`, for the closed model with `iterations`.
    pub fn iterations_planned(&self) -> Option<u64> {
        match self {
            LoadModel::Closed {
                users,
                bound: RunBound::Iterations(n),
                ..
            } => Some(users.saturating_mul(*n)),
            _ => None,
        }
    }

    /// What a sweep or a capacity search varies: `users` or `rate`.
    pub fn level_name(&self) -> &'static str {
        match self {
            LoadModel::Closed { .. } | LoadModel::Staged { .. } => "users",
            LoadModel::Open { .. } => "rate",
        }
    }

    /// The one level a capacity search starts from: the closed model's
    /// users or the open model's constant rate.
    pub fn constant_level(&self) -> Result<f64, String> {
        match self {
            LoadModel::Closed { users, .. } => Ok(*users as f64),
            LoadModel::Staged { .. } => Err(
                "capacity search needs `users` (with `ramp_up`) or a constant `rate`, not `stages`"
                    .into(),
            ),
            LoadModel::Open { stages, .. } => match stages.as_slice() {
                [s] if s.from == s.to => Ok(s.from),
                _ => Err("capacity search needs a constant `rate`, not `stages`".into()),
            },
        }
    }

    /// This model held at `level` (users, or arrivals per second) for
    /// `hold`, ramping over at most `max_ramp` (a capacity search's step).
    /// Stages are kept as they are.
    pub fn held_at(&self, level: f64, hold: Duration, max_ramp: Duration) -> LoadModel {
        match self {
            LoadModel::Closed { ramp_up, .. } => LoadModel::Closed {
                users: level as u64,
                ramp_up: (*ramp_up).min(max_ramp),
                bound: RunBound::Duration(hold),
            },
            LoadModel::Staged { .. } => self.clone(),
            LoadModel::Open {
                max_users,
                max_wait,
                ..
            } => LoadModel::Open {
                stages: vec![RateStage {
                    from: level,
                    to: level,
                    duration: hold,
                }],
                max_users: *max_users,
                max_wait: *max_wait,
            },
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
