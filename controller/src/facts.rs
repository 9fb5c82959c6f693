//! What the outputs say about the plan: the load model as run and the few
//! facts a summary needs, taken when the run starts. The fleet keeps them in
//! its result and the journal on disk, so a summary is made (or rebuilt)
//! without the plan.

use serde::Serialize;

pub use crate::plan::load::{LoadSummary, RateStageSummary, UserStageSummary};

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
    /// Each scenario's name and the steps it sends (ids into the run's
    /// step names; groups left out), for the figures per scenario.
    #[serde(default)]
    pub scenarios: Vec<(String, Vec<usize>)>,
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
            open_model: plan.load.is_open(),
            iterations_planned: plan.load.iterations_planned(),
            warnings: plan.warnings(),
            scenarios: plan
                .scenarios
                .iter()
                .map(|s| {
                    let mut ids: Vec<usize> = s
                        .steps
                        .iter()
                        .map(|st| st.id)
                        .filter(|&id| !plan.groups.get(id).copied().unwrap_or(false))
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    (s.name.clone(), ids)
                })
                .collect(),
        }
    }
}
