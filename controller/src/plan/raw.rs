//! The plan's TOML as written: the shapes serde reads, with the spans that
//! errors point at. Nothing here is validated; see `validate`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::duration::PlanDuration;

use super::{OnAgentLoss, journey};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) name: Option<Spanned<String>>,
    pub(super) seed: Option<u64>,
    pub(super) target: Spanned<RawTarget>,
    /// Required unless the plan has phases, which carry their own.
    pub(super) load: Option<Spanned<RawLoad>>,
    /// Loads that run one after another in one run, each reported apart.
    #[serde(default)]
    pub(super) phase: Vec<Spanned<RawPhase>>,
    #[serde(default)]
    pub(super) scenario: Vec<Spanned<RawScenario>>,
    pub(super) thresholds: Option<RawThresholds>,
    pub(super) fleet: Option<RawFleet>,
    pub(super) vars: Option<BTreeMap<String, Spanned<toml::Value>>>,
    pub(super) session: Option<journey::RawSession>,
    #[serde(default)]
    pub(super) data: Vec<Spanned<journey::RawData>>,
    pub(super) http: Option<RawHttp>,
    /// Metrics read from every response of every step.
    #[serde(default)]
    pub(super) metric: Vec<Spanned<journey::RawMetric>>,
    pub(super) experiment: Option<Spanned<RawExperiment>>,
}

/// `[experiment]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExperiment {
    #[serde(default)]
    pub(super) arm: Vec<Spanned<RawArm>>,
    pub(super) runs: Option<Spanned<u32>>,
    pub(super) warm_up: Option<Spanned<PlanDuration>>,
    pub(super) settle: Option<Spanned<PlanDuration>>,
    pub(super) setup_timeout: Option<Spanned<PlanDuration>>,
    pub(super) order: Option<Spanned<String>>,
    pub(super) seed: Option<u64>,
    pub(super) margin: Option<Spanned<f64>>,
}

/// `[[experiment.arm]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArm {
    pub(super) name: Spanned<String>,
    pub(super) setup: Spanned<String>,
}

/// `[http]`: what every request carries and how much of a body is kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    /// Headers every step sends unless it sets the same one.
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Spanned<String>>,
    /// `Accept-Encoding` of every request ("" asks for no compression).
    pub(super) accept_encoding: Option<Spanned<String>>,
    /// Bytes of a body that checks and extractions see: a number, or a
    /// string with a unit ("512KiB", "8MiB").
    pub(super) body_limit: Option<Spanned<toml::Value>>,
    /// "per_user" (default), "per_iteration" or "per_request".
    pub(super) connections: Option<Spanned<String>>,
    /// false: every TLS connection does a full handshake.
    pub(super) tls_resumption: Option<Spanned<bool>>,
    /// true: each request's DNS, connect, TLS, send, wait and receive times.
    pub(super) phases: Option<Spanned<bool>>,
    /// "auto" (default), "1.1", "2" or "h2c".
    pub(super) version: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    #[serde(default)]
    pub(super) on_agent_loss: OnAgentLoss,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThresholds {
    #[serde(default)]
    pub(super) overall: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) steps: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    /// Rules about one scenario's requests, by scenario name.
    #[serde(default)]
    pub(super) scenarios: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) abort_on_fail: bool,
    pub(super) grace: Option<Spanned<PlanDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) base_url: Spanned<String>,
    pub(super) timeout: Option<Spanned<PlanDuration>>,
    pub(super) connect_timeout: Option<Spanned<PlanDuration>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) tls_verify: Option<Spanned<bool>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoad {
    pub(super) users: Option<Spanned<Numbers>>,
    pub(super) rate: Option<Spanned<Numbers>>,
    pub(super) ramp_up: Option<Spanned<PlanDuration>>,
    pub(super) iterations: Option<Spanned<u64>>,
    pub(super) duration: Option<Spanned<PlanDuration>>,
    pub(super) stages: Option<Vec<Spanned<RawStage>>>,
    pub(super) max_users: Option<Spanned<u64>>,
    pub(super) max_wait: Option<Spanned<PlanDuration>>,
    pub(super) cooldown: Option<Spanned<PlanDuration>>,
    /// "120/min", "5/s", "1000/h": requests the whole fleet sends at most.
    pub(super) throttle: Option<Spanned<String>>,
    pub(super) graceful_stop: Option<Spanned<PlanDuration>>,
    pub(super) max_duration: Option<Spanned<PlanDuration>>,
}

/// `[[phase]]`: a load of its own, run after the phase before it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPhase {
    pub(super) name: Spanned<String>,
    /// The scenarios this phase runs (by name); all of them when absent.
    pub(super) scenarios: Option<Spanned<Vec<Spanned<String>>>>,
    /// Its load, shared by its scenarios by weight; with `loads`, only the
    /// phase's `max_duration` and `throttle`.
    pub(super) load: Option<Spanned<RawLoad>>,
    /// A load per scenario (`[phase.loads.NAME]`): the scenarios it names
    /// run at once, each with its own.
    pub(super) loads: Option<Spanned<BTreeMap<String, Spanned<RawScenarioLoad>>>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStage {
    pub(super) rate: Option<Spanned<Numbers>>,
    /// A rate stage's rate at its start, when it is not where the stage
    /// before ended (a step); absent, it ramps from there.
    pub(super) from: Option<Spanned<f64>>,
    pub(super) users: Option<Spanned<Numbers>>,
    pub(super) duration: Spanned<PlanDuration>,
}

/// A number or a list of numbers (a sweep), integers or floats.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Numbers {
    pub(super) values: Vec<f64>,
    pub(super) list: bool,
}

impl<'de> Deserialize<'de> for Numbers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Numbers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative number or a list of them")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Numbers, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "expected a non-negative integer, found {v}"
                    )));
                }
                Ok(Numbers {
                    values: vec![v as f64],
                    list: false,
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Numbers, E> {
                Ok(Numbers {
                    values: vec![v as f64],
                    list: false,
                })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Numbers, E> {
                if !v.is_finite() || v < 0.0 {
                    return Err(E::custom(format!(
                        "expected a non-negative number, found {v}"
                    )));
                }
                Ok(Numbers {
                    values: vec![v],
                    list: false,
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Numbers, A::Error> {
                let mut values = Vec::new();
                while let Some(n) = seq.next_element::<Numbers>()? {
                    if n.list {
                        return Err(serde::de::Error::custom(
                            "expected numbers, found a nested list",
                        ));
                    }
                    values.extend(n.values);
                }
                if values.is_empty() {
                    return Err(serde::de::Error::custom(
                        "expected at least one value in the list",
                    ));
                }
                Ok(Numbers { values, list: true })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub(super) name: Spanned<String>,
    pub(super) weight: Option<Spanned<u32>>,
    pub(super) on_error: Option<Spanned<String>>,
    pub(super) think: Option<Spanned<String>>,
    pub(super) pacing: Option<Spanned<PlanDuration>>,
    /// A load of its own (`[scenario.load]`), run at once with the others'.
    pub(super) load: Option<Spanned<RawScenarioLoad>>,
    #[serde(default)]
    pub(super) step: Vec<Spanned<journey::RawStep>>,
}

/// `[scenario.load]`: a load of the scenario's own: users (closed) or an
/// arrival rate (open).
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenarioLoad {
    pub(super) users: Option<Spanned<Numbers>>,
    pub(super) ramp_up: Option<Spanned<PlanDuration>>,
    pub(super) iterations: Option<Spanned<u64>>,
    pub(super) duration: Option<Spanned<PlanDuration>>,
    /// When its first user starts, from the run's start.
    pub(super) start: Option<Spanned<PlanDuration>>,
    /// Arrivals per second, with `duration` (or `stages`).
    pub(super) rate: Option<Spanned<Numbers>>,
    /// Rate stages (`{ rate, duration }` each).
    pub(super) stages: Option<Vec<Spanned<RawStage>>>,
    /// The rate's concurrency cap, fleet-wide.
    pub(super) max_users: Option<Spanned<u64>>,
    /// How long an arrival may wait for a free user.
    pub(super) max_wait: Option<Spanned<PlanDuration>>,
}
