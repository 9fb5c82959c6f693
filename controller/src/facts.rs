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
    /// The response-time ranges' bounds, ms: the plan's latency threshold
    /// limits (the lowest, and the highest or 1.5 times the lowest), else
    /// 800 and 1,200 as Gatling's.
    #[serde(default = "default_ranges")]
    pub ranges_ms: (f64, f64),
}

fn default_ranges() -> (f64, f64) {
    (800.0, 1200.0)
}

/// The ranges' bounds from the latency rules' limits.
fn ranges_of(t: &crate::thresholds::Thresholds) -> (f64, f64) {
    use crate::thresholds::Metric;
    let limits: Vec<f64> = t
        .rules
        .iter()
        .filter(|r| matches!(r.metric, Metric::Quantile(_) | Metric::Mean | Metric::Max))
        .map(|r| r.limit)
        .filter(|l| *l > 0.0)
        .collect();
    let lo = limits.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = limits.iter().copied().fold(0.0, f64::max);
    match (lo.is_finite(), hi > lo) {
        (false, _) => default_ranges(),
        (true, true) => (lo, hi),
        (true, false) => (lo, lo * 1.5),
    }
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
                .map(|s| (s.name.clone(), s.request_steps(&plan.groups)))
                .collect(),
            ranges_ms: ranges_of(&plan.thresholds),
        }
    }
}
