//! Plan files: TOML in, one validated [`Plan`] out, before anything is sent.
//!
//! Every error names the file, line and column, the key and what was expected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::duration::PlanDuration;
use loadfleet_proto::v1;

mod journey;
pub use journey::{DataSpec, MAX_DATA_BYTES, MetricSpec, parse_think};

/// Most virtual users one plan may ask for.
pub const MAX_USERS: u64 = 10_000_000;
/// Default time a user stopped by a ramp-down may finish its iteration.
pub const DEFAULT_GRACEFUL_STOP: Duration = Duration::from_secs(30);
/// Default concurrency cap of the open model.
pub const DEFAULT_MAX_USERS: u64 = 1000;
/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A plan that failed to load: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PlanError {
    pub file: String,
    /// 1-based; 0 when the error has no position (e.g. the file is unreadable).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub target: TargetSpec,
    pub load: LoadModel,
    /// Set when `users` or `rate` is a list: the plan runs once per value.
    pub sweep: Option<Sweep>,
    pub scenarios: Vec<ScenarioSpec>,
    /// Distinct step names; steps with the same name share one row in results.
    pub step_names: Vec<String>,
    pub thresholds: Thresholds,
    /// What happens to the run when an agent is lost for good.
    pub on_agent_loss: OnAgentLoss,
    /// `[[data]]` files, read when the plan is loaded.
    pub data: Vec<DataSpec>,
    /// `[session] clear_cookies_each_iteration`.
    pub clear_cookies_each_iteration: bool,
    /// SHA-256 of the plan's text, hex (for the audit log).
    pub sha256: String,
    /// `load.max_duration`: the operator's own cap on the whole run; users
    /// still running when it passes are stopped and the run is `truncated`.
    pub max_duration: Option<Duration>,
    /// `seed`: replays a run's random choices (think times, random data
    /// rows); `None`: a fresh seed per run, recorded in its summary.
    pub seed: Option<u64>,
    /// `load.throttle`: requests per second the whole fleet sends at most
    /// (closed model), shared by the agents as their users are.
    pub throttle_per_s: Option<f64>,
    /// Numbers read from responses (`[[metric]]`, `[[scenario.step.metric]]`),
    /// by id (`v1::Metric::id`).
    pub metrics: Vec<MetricSpec>,
    /// `[[phase]]`: loads run one after another, each a run of its own
    /// ([`Plan::phase`]); empty for a plan with one `[load]`. `load`,
    /// `max_duration` and `throttle_per_s` above are then the first phase's.
    pub phases: Vec<Phase>,
}

/// One phase of a plan with `[[phase]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    /// Indices into [`Plan::scenarios`].
    pub scenarios: Vec<usize>,
    pub load: LoadModel,
    pub max_duration: Option<Duration>,
    pub throttle_per_s: Option<f64>,
}

/// `[fleet] on_agent_loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnAgentLoss {
    /// The other agents go on; the run is marked degraded (exit code 1).
    #[default]
    Continue,
    /// The other agents stop gracefully; the run ends early.
    Abort,
}

pub use crate::thresholds::Thresholds;

#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub base_url: String,
    pub timeout: Duration,
    /// `target.connect_timeout`: the longest a new connection (TCP connect
    /// and TLS handshake) may take; `None`: the request timeout.
    pub connect_timeout: Option<Duration>,
    /// Extra certificate authorities (PEM) trusted for https targets, read
    /// from `ca_file` and shipped to agents, so agents need no files.
    pub ca_pem: Option<String>,
    /// `http.body_limit`: bytes of a body checks and extractions see;
    /// `None`: the agent's default (8 MiB).
    pub body_limit: Option<u64>,
    /// `target.tls_verify`: check servers' certificates (default true).
    pub tls_verify: bool,
    /// `http.connections`: how long a user keeps a connection.
    pub connections: v1::Connections,
    /// `http.tls_resumption` (default true).
    pub tls_resumption: bool,
    /// `http.phases`: record each request's phases as metrics (default false).
    pub phases: bool,
    /// `http.version`: "auto" (default), "1.1", "2" or "h2c".
    pub version: v1::HttpVersion,
}

/// The largest `http.body_limit`: every user may keep a body this big.
/// The agent's own limit, so that a plan the controller accepts is one an
/// agent accepts.
pub const MAX_BODY_LIMIT: u64 = loadfleet_agent::assignment::MAX_BODY_LIMIT as u64;

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

pub use loadfleet_agent::arrivals::RateStage;

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
}

/// One plan run once per value, one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Users (closed model) or arrivals per second (open model), in order.
    pub values: Vec<f64>,
    /// Pause between two runs.
    pub cooldown: Duration,
}

/// How long each user of a closed model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunBound {
    Iterations(u64),
    Duration(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioSpec {
    pub name: String,
    pub weight: u32,
    pub steps: Vec<StepSpec>,
    pub on_error: v1::OnError,
    /// Minimum length of an iteration.
    pub pacing: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// Index into [`Plan::step_names`].
    pub id: usize,
    pub name: String,
    /// The step as agents receive it: `[vars]` and `${env:NAME}` already
    /// substituted, every regex and selector already checked.
    pub wire: v1::Step,
}

impl Plan {
    /// What this plan turns off that everyone reading its results must know.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.target.tls_verify {
            w.push(
                "target.tls_verify = false: servers' certificates were not checked; \
                 anyone on the path could have answered in the target's place"
                    .to_string(),
            );
        }
        w
    }

    /// The fleet-wide user count (the concurrency cap in the open model).
    pub fn users(&self) -> u64 {
        self_users(&self.load)
    }

    /// The plan for one value of its sweep (users or rate), without the sweep.
    pub fn at(&self, value: f64) -> Plan {
        let mut p = self.clone();
        p.sweep = None;
        match &mut p.load {
            LoadModel::Closed { users, .. } => *users = value as u64,
            LoadModel::Staged { .. } => {}
            LoadModel::Open { stages, .. } => {
                for s in stages {
                    (s.from, s.to) = (value, value);
                }
            }
        }
        p
    }

    /// Phase `i` as a plan of its own: its load, its scenarios (their
    /// steps numbered afresh, so its results list only its own steps) and
    /// the thresholds about them (a rule about a step of another phase is
    /// left out). `None` past the last phase.
    pub fn phase(&self, i: usize) -> Option<Plan> {
        let ph = self.phases.get(i)?;
        let mut p = self.clone();
        p.phases = Vec::new();
        p.sweep = None;
        p.load = ph.load.clone();
        p.max_duration = ph.max_duration;
        p.throttle_per_s = ph.throttle_per_s;
        p.scenarios = ph
            .scenarios
            .iter()
            .filter_map(|&s| self.scenarios.get(s).cloned())
            .collect();
        let mut names: Vec<String> = Vec::new();
        let mut renumber = vec![None; self.step_names.len()];
        for s in &mut p.scenarios {
            for st in &mut s.steps {
                let id = match renumber[st.id] {
                    Some(id) => id,
                    None => {
                        names.push(st.name.clone());
                        renumber[st.id] = Some(names.len() - 1);
                        names.len() - 1
                    }
                };
                st.id = id;
                st.wire.id = id as u32;
            }
        }
        p.step_names = names;
        p.thresholds.rules = self
            .thresholds
            .rules
            .iter()
            .filter_map(|r| {
                let mut r = r.clone();
                match r.step {
                    None => Some(r),
                    Some(old) => {
                        r.step = Some(renumber.get(old).copied().flatten()?);
                        Some(r)
                    }
                }
            })
            .collect();
        Some(p)
    }

    /// Length of the scheduled load, when the plan fixes it.
    pub fn scheduled_duration(&self) -> Option<Duration> {
        match &self.load {
            LoadModel::Closed {
                bound: RunBound::Duration(d),
                ..
            } => Some(*d),
            LoadModel::Closed { .. } => None,
            LoadModel::Staged { stages, .. } => Some(stages.iter().map(|s| s.1).sum()),
            LoadModel::Open { stages, .. } => Some(stages.iter().map(|s| s.duration).sum()),
        }
    }

    /// The longest one iteration of any scenario can take: each step's
    /// timeout and its longest think time, or the scenario's pacing when
    /// that is longer. A Gaussian think time counts as its mean plus six
    /// deviations (a sample beyond that is about one in a billion; the agent
    /// caps samples at a day).
    pub fn iteration_bound(&self) -> Duration {
        let think_max = |t: &Option<v1::Think>| -> Duration {
            use v1::think::Kind;
            match t.as_ref().and_then(|t| t.kind.as_ref()) {
                None => Duration::ZERO,
                Some(Kind::ConstantUs(us)) => Duration::from_micros(*us),
                Some(Kind::Uniform(r)) => Duration::from_micros(r.max_us.max(r.min_us)),
                Some(Kind::Gaussian(g)) => Duration::from_micros(
                    g.mean_us.saturating_add(g.deviation_us.saturating_mul(6)),
                )
                .min(Duration::from_secs(86_400)),
            }
        };
        self.scenarios
            .iter()
            .map(|s| {
                s.steps
                    .iter()
                    .map(|st| {
                        self.target
                            .timeout
                            .saturating_add(think_max(&st.wire.think))
                    })
                    .fold(Duration::ZERO, Duration::saturating_add)
                    .max(s.pacing)
            })
            .max()
            .unwrap_or(self.target.timeout)
    }

    /// The most requests the plan can send, when its load is bounded by
    /// iterations (users × iterations × the longest scenario's steps;
    /// redirects followed are not requests of their own).
    pub fn requests_bound(&self) -> Option<u64> {
        match self.load {
            LoadModel::Closed {
                users,
                bound: RunBound::Iterations(n),
                ..
            } => {
                let longest = self.scenarios.iter().map(|s| s.steps.len()).max()?;
                Some(users.saturating_mul(n).saturating_mul(longest as u64))
            }
            _ => None,
        }
    }

    /// The longest the run may take before agents stop by themselves (and
    /// say so: the run is then `truncated`): `load.max_duration` when the
    /// plan sets it, else the schedule plus the longest iteration it could
    /// still be in, plus 5 s.
    pub fn max_run(&self) -> Duration {
        if let Some(cap) = self.max_duration {
            return cap;
        }
        let slack = Duration::from_secs(5);
        let iteration = self.iteration_bound();
        match self.load {
            LoadModel::Staged { graceful_stop, .. } => self
                .scheduled_duration()
                .unwrap_or_default()
                .saturating_add(graceful_stop.max(self.target.timeout))
                .saturating_add(slack),
            LoadModel::Open { max_wait, .. } => self
                .scheduled_duration()
                .unwrap_or_default()
                .saturating_add(max_wait)
                .saturating_add(iteration)
                .saturating_add(slack),
            LoadModel::Closed { ramp_up, bound, .. } => match bound {
                RunBound::Duration(d) => d + self.target.timeout + slack,
                RunBound::Iterations(n) => ramp_up
                    .saturating_add(iteration.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)))
                    .saturating_add(slack),
            },
        }
    }
}

// === raw TOML model ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<Spanned<String>>,
    seed: Option<u64>,
    target: Spanned<RawTarget>,
    /// Required unless the plan has phases, which carry their own.
    load: Option<Spanned<RawLoad>>,
    /// Loads that run one after another in one run, each reported apart.
    #[serde(default)]
    phase: Vec<Spanned<RawPhase>>,
    #[serde(default)]
    scenario: Vec<Spanned<RawScenario>>,
    thresholds: Option<RawThresholds>,
    fleet: Option<RawFleet>,
    vars: Option<BTreeMap<String, Spanned<toml::Value>>>,
    session: Option<journey::RawSession>,
    #[serde(default)]
    data: Vec<Spanned<journey::RawData>>,
    http: Option<RawHttp>,
    /// Metrics read from every response of every step.
    #[serde(default)]
    metric: Vec<Spanned<journey::RawMetric>>,
}

/// `[http]`: what every request carries and how much of a body is kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Headers every step sends unless it sets the same one.
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    /// `Accept-Encoding` of every request ("" asks for no compression).
    accept_encoding: Option<Spanned<String>>,
    /// Bytes of a body that checks and extractions see: a number, or a
    /// string with a unit ("512KiB", "8MiB").
    body_limit: Option<Spanned<toml::Value>>,
    /// "per_user" (default), "per_iteration" or "per_request".
    connections: Option<Spanned<String>>,
    /// false: every TLS connection does a full handshake.
    tls_resumption: Option<Spanned<bool>>,
    /// true: each request's DNS, connect, TLS, send, wait and receive times.
    phases: Option<Spanned<bool>>,
    /// "auto" (default), "1.1", "2" or "h2c".
    version: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(default)]
    on_agent_loss: OnAgentLoss,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    #[serde(default)]
    overall: Vec<Spanned<String>>,
    #[serde(default)]
    steps: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    abort_on_fail: bool,
    grace: Option<Spanned<PlanDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    base_url: Spanned<String>,
    timeout: Option<Spanned<PlanDuration>>,
    connect_timeout: Option<Spanned<PlanDuration>>,
    ca_file: Option<Spanned<String>>,
    tls_verify: Option<Spanned<bool>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    users: Option<Spanned<Numbers>>,
    rate: Option<Spanned<Numbers>>,
    ramp_up: Option<Spanned<PlanDuration>>,
    iterations: Option<Spanned<u64>>,
    duration: Option<Spanned<PlanDuration>>,
    stages: Option<Vec<Spanned<RawStage>>>,
    max_users: Option<Spanned<u64>>,
    max_wait: Option<Spanned<PlanDuration>>,
    cooldown: Option<Spanned<PlanDuration>>,
    /// "120/min", "5/s", "1000/h": requests the whole fleet sends at most.
    throttle: Option<Spanned<String>>,
    graceful_stop: Option<Spanned<PlanDuration>>,
    max_duration: Option<Spanned<PlanDuration>>,
}

/// `[[phase]]`: a load of its own, run after the phase before it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    name: Spanned<String>,
    /// The scenarios this phase runs (by name); all of them when absent.
    scenarios: Option<Spanned<Vec<Spanned<String>>>>,
    load: Spanned<RawLoad>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawStage {
    rate: Option<Spanned<Numbers>>,
    users: Option<Spanned<Numbers>>,
    duration: Spanned<PlanDuration>,
}

/// A number or a list of numbers (a sweep), integers or floats.
#[derive(Debug, Clone, PartialEq)]
struct Numbers {
    values: Vec<f64>,
    list: bool,
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
struct RawScenario {
    name: Spanned<String>,
    weight: Option<Spanned<u32>>,
    on_error: Option<Spanned<String>>,
    think: Option<Spanned<String>>,
    pacing: Option<Spanned<PlanDuration>>,
    #[serde(default)]
    step: Vec<Spanned<journey::RawStep>>,
}

// === loading ===

/// Reads and validates a plan file.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: file.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read plan: {e}"),
    })?;
    let default_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan".into());
    parse(&file, &text, &default_name)
}

/// Parses and validates plan text; `file` is used in error messages.
pub fn parse(file: &str, text: &str, default_name: &str) -> Result<Plan, PlanError> {
    let v = Validator { file, text };
    let raw: RawPlan = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut message = e
            .message()
            .trim()
            .replace("expected u64", "expected a non-negative integer")
            .replace("expected u32", "expected a non-negative integer");
        if let Some(key) = key_at(text, span.start)
            && !message.contains(&format!("`{}`", key.rsplit('.').next().unwrap_or(&key)))
        {
            message = format!("`{key}`: {message}");
        }
        v.error(span, message)
    })?;
    v.plan(raw, default_name)
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Validator<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> PlanError {
        let (line, column) = line_column(self.text, span.start);
        PlanError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn plan(&self, mut raw: RawPlan, default_name: &str) -> Result<Plan, PlanError> {
        let name = match raw.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                return Err(self.error(n.span(), "`name`: expected a non-empty string"));
            }
            Some(n) => n.into_inner(),
            None => default_name.to_string(),
        };
        let mut target = self.target(raw.target)?;
        if let Some(http) = raw.http.take() {
            let mut defaults = http.headers;
            if let Some(ae) = http.accept_encoding {
                if let Some((k, _)) = defaults
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("accept-encoding"))
                {
                    return Err(self.error(
                        ae.span(),
                        format!("`http.accept_encoding`: `http.headers` sets `{k}` too; keep one"),
                    ));
                }
                defaults.insert("Accept-Encoding".into(), ae);
            }
            for s in &mut raw.scenario {
                for st in &mut s.get_mut().step {
                    st.get_mut().default_headers(&defaults);
                }
            }
            if let Some(limit) = http.body_limit {
                target.body_limit = Some(self.body_limit(&limit)?);
            }
            if let Some(c) = http.connections {
                target.connections = match c.get_ref().as_str() {
                    "per_user" => v1::Connections::PerUser,
                    "per_iteration" => v1::Connections::PerIteration,
                    "per_request" => v1::Connections::PerRequest,
                    other => {
                        return Err(self.error(
                            c.span(),
                            format!(
                                "`http.connections`: expected \"per_user\", \"per_iteration\" or \"per_request\", found \"{other}\""
                            ),
                        ));
                    }
                };
            }
            if let Some(r) = http.tls_resumption {
                target.tls_resumption = r.into_inner();
            }
            if let Some(p) = http.phases {
                target.phases = p.into_inner();
            }
            if let Some(v) = http.version {
                target.version = match v.get_ref().as_str() {
                    "auto" => v1::HttpVersion::Auto,
                    "1.1" => v1::HttpVersion::Http1,
                    "2" => v1::HttpVersion::Http2,
                    "h2c" if target.base_url.starts_with("https://") => {
                        return Err(self.error(
                            v.span(),
                            "`http.version`: \"h2c\" is HTTP/2 over plain TCP, and the target is https; expected \"2\" (HTTP/2 over TLS) or \"auto\"",
                        ));
                    }
                    "h2c" => v1::HttpVersion::H2c,
                    other => {
                        return Err(self.error(
                            v.span(),
                            format!(
                                "`http.version`: expected \"auto\", \"1.1\", \"2\" or \"h2c\", found \"{other}\""
                            ),
                        ));
                    }
                };
            }
        }
        let phases_raw = std::mem::take(&mut raw.phase);
        let main = match (raw.load.take(), phases_raw.first()) {
            (Some(l), None) => l,
            (None, Some(first)) => first.get_ref().load.clone(),
            (Some(l), Some(_)) => {
                return Err(self.error(
                    l.span(),
                    "`load`: a plan with [[phase]] gives each phase its own `load`; remove [load]",
                ));
            }
            (None, None) => {
                return Err(self.error(
                    0..0,
                    "expected a [load] table (users, ramp_up, iterations, …) or [[phase]] entries with a `load` each",
                ));
            }
        };
        let (load, sweep, max_duration, throttle_per_s) = self.load_of(main, target.timeout)?;
        if raw.scenario.is_empty() {
            return Err(self.error(
                0..0,
                "expected at least one [[scenario]] with at least one [[scenario.step]]",
            ));
        }
        let vars = self.vars(raw.vars)?;
        let data = self.data(raw.data.clone())?;
        let columns: HashSet<String> = data
            .iter()
            .flat_map(|d| d.columns.iter().map(move |c| format!("{}.{c}", d.name)))
            .collect();
        let mut metrics: Vec<MetricSpec> = Vec::new();
        let mut plan_metrics = Vec::with_capacity(raw.metric.len());
        for m in &raw.metric {
            let m = self.metric(m)?;
            if plan_metrics
                .iter()
                .any(|(p, _): &(journey::CheckedMetric, u32)| p.name == m.name)
            {
                return Err(self.error(
                    m.name_span.clone(),
                    format!(
                        "metric `{}`: defined twice in [[metric]]; expected unique names",
                        m.name
                    ),
                ));
            }
            let id = self.metric_id(&mut metrics, &m)?;
            plan_metrics.push((m, id));
        }
        let mut step_ids: HashMap<String, usize> = HashMap::new();
        let mut step_names = Vec::new();
        let mut seen = HashMap::new();
        let mut scenarios = Vec::with_capacity(raw.scenario.len());
        for s in raw.scenario {
            let span = s.span();
            let s = s.into_inner();
            let sname = s.name.get_ref().trim().to_string();
            if sname.is_empty() {
                return Err(self.error(
                    s.name.span(),
                    "scenario `name`: expected a non-empty string",
                ));
            }
            if seen.insert(sname.clone(), ()).is_some() {
                return Err(self.error(
                    s.name.span(),
                    format!("scenario `name`: \"{sname}\" is used twice; expected unique names"),
                ));
            }
            let weight = match s.weight {
                Some(w) if *w.get_ref() == 0 => {
                    return Err(self.error(
                        w.span(),
                        "scenario `weight`: expected an integer of at least 1",
                    ));
                }
                Some(w) => w.into_inner(),
                None => 1,
            };
            if s.step.is_empty() {
                return Err(self.error(
                    span,
                    format!("scenario \"{sname}\": expected at least one [[scenario.step]]"),
                ));
            }
            let on_error = match &s.on_error {
                Some(o) => journey::parse_on_error(o.get_ref())
                    .map_err(|e| self.error(o.span(), format!("scenario `on_error`: {e}")))?,
                None => v1::OnError::Continue,
            };
            let think = match &s.think {
                Some(t) => Some(self.think(t, "scenario `think`")?),
                None => None,
            };
            let mut scope = journey::Scope {
                vars: &vars,
                columns: &columns,
                extracted: HashSet::new(),
                later: s
                    .step
                    .iter()
                    .flat_map(|st| st.get_ref().extract_names())
                    .collect(),
            };
            let mut steps = Vec::with_capacity(s.step.len());
            for st in s.step {
                let span = st.span();
                let mut st = st.into_inner();
                let own = std::mem::take(&mut st.metric);
                let (name, mut wire) =
                    self.journey_step(st, span, &target, &mut scope, think.as_ref())?;
                wire.metrics = self.step_metrics(&own, &plan_metrics, &mut metrics)?;
                let id = *step_ids.entry(name.clone()).or_insert_with(|| {
                    step_names.push(name.clone());
                    step_names.len() - 1
                });
                wire.id = id as u32;
                steps.push(StepSpec { id, name, wire });
            }
            scenarios.push(ScenarioSpec {
                name: sname,
                weight,
                steps,
                on_error,
                pacing: s.pacing.map(|p| p.into_inner().0).unwrap_or_default(),
            });
        }
        let mut phases = Vec::with_capacity(phases_raw.len());
        for ph in phases_raw {
            let ph = ph.into_inner();
            let name = ph.name.get_ref().trim().to_string();
            if name.is_empty() || phases.iter().any(|p: &Phase| p.name == name) {
                return Err(self.error(
                    ph.name.span(),
                    "phase `name`: expected a non-empty name, unique among the phases",
                ));
            }
            let indices = match &ph.scenarios {
                None => (0..scenarios.len()).collect(),
                Some(list) => {
                    let mut v = Vec::new();
                    for n in list.get_ref() {
                        let i = scenarios
                            .iter()
                            .position(|s| s.name == n.get_ref().trim())
                            .ok_or_else(|| {
                                let names: Vec<&str> =
                                    scenarios.iter().map(|s| s.name.as_str()).collect();
                                self.error(
                                    n.span(),
                                    format!(
                                        "phase \"{name}\" `scenarios`: no scenario is named \"{}\"; expected one of {names:?}",
                                        n.get_ref()
                                    ),
                                )
                            })?;
                        if !v.contains(&i) {
                            v.push(i);
                        }
                    }
                    if v.is_empty() {
                        return Err(self.error(
                            list.span(),
                            format!("phase \"{name}\" `scenarios`: expected at least one scenario"),
                        ));
                    }
                    v
                }
            };
            let load_span = ph.load.span();
            let (load, sweep, max_duration, throttle_per_s) =
                self.load_of(ph.load, target.timeout)?;
            if sweep.is_some() {
                return Err(self.error(
                    load_span,
                    format!(
                        "phase \"{name}\" `load`: a phase runs one load; expected single numbers, not lists (a sweep)"
                    ),
                ));
            }
            phases.push(Phase {
                name,
                scenarios: indices,
                load,
                max_duration,
                throttle_per_s,
            });
        }
        // Unique rows bind to users: every user of the largest run needs one.
        let most_users = match &sweep {
            Some(sw) if matches!(load, LoadModel::Closed { .. }) => {
                sw.values.iter().fold(0.0f64, |a, &b| a.max(b)) as u64
            }
            _ => phases
                .iter()
                .map(|p| self_users(&p.load))
                .fold(self_users(&load), u64::max),
        };
        for (d, raw_d) in data.iter().zip(&raw.data) {
            if d.mode != v1::DataMode::Unique {
                continue;
            }
            if matches!(load, LoadModel::Open { .. })
                || phases
                    .iter()
                    .any(|p| matches!(p.load, LoadModel::Open { .. }))
            {
                return Err(self.error(
                    raw_d.span(),
                    format!(
                        "data \"{}\": mode \"unique\" gives each user its own row, but the open model has no fixed users; expected \"sequential\" or \"random\"",
                        d.name
                    ),
                ));
            }
            if (d.rows.len() as u64) < most_users {
                return Err(self.error(
                    raw_d.span(),
                    format!(
                        "data \"{}\": mode \"unique\" needs one row per user: {} rows for {most_users} users",
                        d.name,
                        d.rows.len()
                    ),
                ));
            }
        }
        if target.phases {
            for name in loadfleet_agent::assignment::PHASE_METRICS {
                if metrics.iter().any(|m| m.name == name) {
                    return Err(self.error(
                        0..0,
                        format!(
                            "metric `{name}`: the name of a request phase, which `[http] phases = true` records; give the metric another name"
                        ),
                    ));
                }
                metrics.push(MetricSpec {
                    name: name.to_string(),
                    unit: "µs".into(),
                    scale: 1.0,
                });
            }
        }
        let thresholds = match raw.thresholds {
            Some(t) => self.thresholds(t, &step_names, &metrics)?,
            None => Thresholds::default(),
        };
        Ok(Plan {
            name,
            target,
            load,
            sweep,
            scenarios,
            step_names,
            thresholds,
            on_agent_loss: raw.fleet.map(|f| f.on_agent_loss).unwrap_or_default(),
            data,
            clear_cookies_each_iteration: raw
                .session
                .is_some_and(|s| s.clear_cookies_each_iteration),
            sha256: sha256_hex(self.text.as_bytes()),
            max_duration,
            seed: raw.seed,
            throttle_per_s,
            metrics,
            phases,
        })
    }

    /// A `[load]` (the plan's or a phase's): the model, its sweep, its
    /// `max_duration` and its `throttle`.
    #[allow(clippy::type_complexity)]
    fn load_of(
        &self,
        raw: Spanned<RawLoad>,
        timeout: Duration,
    ) -> Result<(LoadModel, Option<Sweep>, Option<Duration>, Option<f64>), PlanError> {
        let max_duration = match &raw.get_ref().max_duration {
            Some(m) if m.get_ref().0.is_zero() => {
                return Err(self.error(
                    m.span(),
                    "`load.max_duration`: expected a duration above zero",
                ));
            }
            Some(m) => Some(m.get_ref().0),
            None => None,
        };
        let throttle_per_s = match &raw.get_ref().throttle {
            None => None,
            Some(t) => Some(self.throttle(t, raw.get_ref().rate.is_some())?),
        };
        let (load, sweep) = self.load(raw, timeout)?;
        Ok((load, sweep, max_duration, throttle_per_s))
    }

    /// The id of metric `m`: a name read in several places is one metric,
    /// so it must have one unit and scale.
    fn metric_id(
        &self,
        metrics: &mut Vec<MetricSpec>,
        m: &journey::CheckedMetric,
    ) -> Result<u32, PlanError> {
        if let Some(i) = metrics.iter().position(|x| x.name == m.name) {
            let x = &metrics[i];
            if x.unit != m.unit || x.scale != m.scale {
                return Err(self.error(
                    m.name_span.clone(),
                    format!(
                        "metric `{}`: read elsewhere with unit \"{}\" and scale {}; expected one unit and scale per name",
                        m.name, x.unit, x.scale
                    ),
                ));
            }
            return Ok(i as u32);
        }
        metrics.push(MetricSpec {
            name: m.name.clone(),
            unit: m.unit.clone(),
            scale: m.scale,
        });
        Ok((metrics.len() - 1) as u32)
    }

    /// A step's metrics: its own, then the plan's that it does not redefine.
    fn step_metrics(
        &self,
        own: &[Spanned<journey::RawMetric>],
        plan: &[(journey::CheckedMetric, u32)],
        metrics: &mut Vec<MetricSpec>,
    ) -> Result<Vec<v1::Metric>, PlanError> {
        let mut out: Vec<v1::Metric> = Vec::with_capacity(own.len() + plan.len());
        let mut names: Vec<String> = Vec::with_capacity(own.len());
        for m in own {
            let m = self.metric(m)?;
            if names.contains(&m.name) {
                return Err(self.error(
                    m.name_span.clone(),
                    format!(
                        "metric `{}`: read twice by this step; expected unique names",
                        m.name
                    ),
                ));
            }
            let id = self.metric_id(metrics, &m)?;
            names.push(m.name);
            out.push(v1::Metric {
                id,
                source: Some(m.source),
                scale: m.scale,
            });
        }
        for (m, id) in plan {
            if !names.contains(&m.name) {
                out.push(v1::Metric {
                    id: *id,
                    source: Some(m.source.clone()),
                    scale: m.scale,
                });
            }
        }
        Ok(out)
    }

    fn thresholds(
        &self,
        raw: RawThresholds,
        step_names: &[String],
        metrics: &[MetricSpec],
    ) -> Result<Thresholds, PlanError> {
        let mut rules = Vec::new();
        let mut rule = |text: &Spanned<String>, step: Option<usize>| -> Result<(), PlanError> {
            let mut r = crate::thresholds::parse_rule(text.get_ref(), step)
                .map_err(|e| self.error(text.span(), format!("`thresholds`: {e}")))?;
            if let crate::thresholds::Metric::Read { name, id, .. } = &mut r.metric {
                let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
                *id = names.iter().position(|n| n == name).ok_or_else(|| {
                    self.error(
                        text.span(),
                        format!(
                            "`thresholds`: no metric is named \"{name}\"; expected one of {names:?} (from [[metric]] or [[scenario.step.metric]])"
                        ),
                    )
                })? as u32;
            }
            rules.push(r);
            Ok(())
        };
        for t in &raw.overall {
            rule(t, None)?;
        }
        for (name, list) in &raw.steps {
            let Some(id) = step_names.iter().position(|n| n == name) else {
                return Err(self.error(
                    list.span(),
                    format!("`thresholds.steps`: no step is named \"{name}\"; expected one of {step_names:?}"),
                ));
            };
            for t in list.get_ref() {
                rule(t, Some(id))?;
            }
        }
        Ok(Thresholds {
            rules,
            abort_on_fail: raw.abort_on_fail,
            grace: raw.grace.map(|g| g.into_inner().0).unwrap_or_default(),
        })
    }

    fn target(&self, raw: Spanned<RawTarget>) -> Result<TargetSpec, PlanError> {
        let raw = raw.into_inner();
        let timeout = match raw.timeout {
            Some(t) if t.get_ref().0.is_zero() => {
                return Err(
                    self.error(t.span(), "`target.timeout`: expected a duration above zero")
                );
            }
            Some(t) => t.into_inner().0,
            None => DEFAULT_TIMEOUT,
        };
        let connect_timeout = match raw.connect_timeout {
            Some(t) if t.get_ref().0.is_zero() || t.get_ref().0 > timeout => {
                return Err(self.error(
                    t.span(),
                    format!(
                        "`target.connect_timeout`: expected a duration above zero and at most `timeout` ({})",
                        crate::duration::format_duration(timeout)
                    ),
                ));
            }
            Some(t) => Some(t.into_inner().0),
            None => None,
        };
        let url = raw.base_url.get_ref().trim().to_string();
        if let Err(e) = loadfleet_agent::assignment::Target::parse(&url, timeout) {
            return Err(self.error(raw.base_url.span(), format!("`target.base_url`: {e}")));
        }
        let ca_pem = match raw.ca_file {
            None => None,
            Some(f) => Some(self.ca_file(&f)?),
        };
        Ok(TargetSpec {
            base_url: url,
            timeout,
            connect_timeout,
            ca_pem,
            body_limit: None,
            tls_verify: raw.tls_verify.is_none_or(Spanned::into_inner),
            connections: v1::Connections::PerUser,
            tls_resumption: true,
            phases: false,
            version: v1::HttpVersion::Auto,
        })
    }

    /// `load.throttle`: "120/min" and the like, as requests per second.
    fn throttle(&self, t: &Spanned<String>, open_model: bool) -> Result<f64, PlanError> {
        if open_model {
            return Err(self.error(
                t.span(),
                "`load.throttle`: the open model's `rate` already sets the pace; throttle caps a closed model",
            ));
        }
        let bad = || {
            self.error(
                t.span(),
                format!(
                    "`load.throttle`: expected requests per unit of time, such as \"120/min\", \"5/s\" or \"1000/h\", found \"{}\"",
                    t.get_ref()
                ),
            )
        };
        let (n, unit) = t.get_ref().split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        let rate = n / per;
        if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
            return Err(bad());
        }
        Ok(rate)
    }

    /// `http.body_limit`: bytes, from a number or "512KiB"/"8MiB"/"1MB".
    fn body_limit(&self, v: &Spanned<toml::Value>) -> Result<u64, PlanError> {
        let bad = || {
            self.error(
                v.span(),
                format!(
                    "`http.body_limit`: expected a size from 1KiB to {} MiB, as bytes or with a unit (\"512KiB\", \"8MiB\")",
                    MAX_BODY_LIMIT >> 20
                ),
            )
        };
        let bytes = match v.get_ref() {
            toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad())?,
            toml::Value::String(s) => {
                let s = s.trim();
                let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
                let (digits, unit) = s.split_at(split);
                let n: u64 = digits.parse().map_err(|_| bad())?;
                let scale = match unit.trim() {
                    "" | "B" => 1,
                    "KiB" => 1 << 10,
                    "MiB" => 1 << 20,
                    "KB" | "kB" => 1_000,
                    "MB" => 1_000_000,
                    _ => return Err(bad()),
                };
                n.checked_mul(scale).ok_or_else(bad)?
            }
            _ => return Err(bad()),
        };
        if !(1 << 10..=MAX_BODY_LIMIT).contains(&bytes) {
            return Err(bad());
        }
        Ok(bytes)
    }

    /// Reads `target.ca_file` (relative to the plan's folder) and checks it
    /// holds PEM certificates.
    fn ca_file(&self, f: &Spanned<String>) -> Result<String, PlanError> {
        let base = Path::new(self.file).parent().unwrap_or(Path::new("."));
        let path = base.join(f.get_ref());
        let pem = std::fs::read_to_string(&path).map_err(|e| {
            self.error(
                f.span(),
                format!("`target.ca_file`: cannot read {}: {e}", path.display()),
            )
        })?;
        match loadfleet_agent::tls::parse_pem_certs(&pem) {
            Ok(certs) if !certs.is_empty() => Ok(pem),
            Ok(_) => Err(self.error(
                f.span(),
                format!(
                    "`target.ca_file`: expected PEM certificates in {}",
                    path.display()
                ),
            )),
            Err(e) => Err(self.error(
                f.span(),
                format!(
                    "`target.ca_file`: expected PEM certificates in {}: {e}",
                    path.display()
                ),
            )),
        }
    }

    fn load(
        &self,
        raw: Spanned<RawLoad>,
        timeout: Duration,
    ) -> Result<(LoadModel, Option<Sweep>), PlanError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let not_with = |key: &str, other: &str, at: Range<usize>| {
            self.error(at, format!("`load.{key}`: not allowed with {other}"))
        };
        let positive = |d: &Option<Spanned<PlanDuration>>, key: &str| -> Result<(), PlanError> {
            match d {
                Some(d) if d.get_ref().0.is_zero() => Err(self.error(
                    d.span(),
                    format!("`load.{key}`: expected a duration above zero"),
                )),
                _ => Ok(()),
            }
        };
        positive(&raw.duration, "duration")?;
        let cooldown = raw
            .cooldown
            .as_ref()
            .map(|c| c.get_ref().0)
            .unwrap_or_default();
        let sweep_of = |n: &Spanned<Numbers>| {
            n.get_ref().list.then(|| Sweep {
                values: n.get_ref().values.clone(),
                cooldown,
            })
        };
        match (&raw.users, &raw.rate) {
            (Some(_), Some(r)) => Err(self.error(
                r.span(),
                "`load.rate`: expected either `users` (closed model) or `rate` (open model), not both",
            )),
            (None, None) if raw.stages.as_ref().and_then(|s| s.first()).is_some_and(|s| s.get_ref().users.is_some()) => {
                self.closed_stages(raw)
            }
            (None, None) if raw.stages.is_some() => self.open_stages(raw, timeout),
            (None, None) => Err(self.error(
                span,
                "[load]: expected `users = N` (closed model) or `rate = N` (open model)",
            )),
            (Some(users), None) => {
                for key in [("max_users", raw.max_users.as_ref().map(Spanned::span)), ("max_wait", raw.max_wait.as_ref().map(Spanned::span))] {
                    if let (name, Some(at)) = key {
                        return Err(not_with(name, "`users` (the closed model)", at));
                    }
                }
                if let Some(st) = raw.stages.as_ref().and_then(|s| s.first()) {
                    return Err(not_with("stages", "`users` (stages set their own users)", st.span()));
                }
                for &u in &users.get_ref().values {
                    if u < 1.0 || u > MAX_USERS as f64 || u.fract() != 0.0 {
                        return Err(self.error(
                            users.span(),
                            format!("`load.users`: expected an integer from 1 to {MAX_USERS}, found {u}"),
                        ));
                    }
                }
                let ramp_span = raw.ramp_up.as_ref().map(Spanned::span);
                let ramp_up = raw.ramp_up.map(|r| r.into_inner().0).unwrap_or_default();
                let bound = match (raw.iterations, raw.duration) {
                    (Some(_), Some(d)) => {
                        return Err(self.error(d.span(), "`load.duration`: expected either `iterations` or `duration`, not both"));
                    }
                    (None, None) => {
                        return Err(self.error(span, "[load]: expected `iterations = N` or `duration = \"2m\"`"));
                    }
                    (Some(i), None) => {
                        if *i.get_ref() == 0 {
                            return Err(self.error(i.span(), "`load.iterations`: expected an integer of at least 1"));
                        }
                        RunBound::Iterations(i.into_inner())
                    }
                    (None, Some(d)) => RunBound::Duration(d.into_inner().0),
                };
                use crate::duration::format_duration;
                // User k of N starts at k × ramp_up / N: with a ramp longer
                // than the run, the last users would never start.
                if let (RunBound::Duration(d), Some(at)) = (bound, ramp_span) {
                    for &u in &users.get_ref().values {
                        let n = u as u64;
                        let started = (0..n)
                            .take_while(|&k| ramp_up.mul_f64(k as f64 / n as f64) < d)
                            .count() as u64;
                        if started < n {
                            return Err(self.error(
                                at,
                                format!(
                                    "`load.ramp_up`: {} is longer than the run (`duration` {}): one user starts every {}, so only {started} of {n} users would start before the run ends; shorten `ramp_up` or lengthen `duration` (or use `stages`)",
                                    format_duration(ramp_up),
                                    format_duration(d),
                                    format_duration(ramp_up / u32::try_from(n).unwrap_or(u32::MAX)),
                                ),
                            ));
                        }
                    }
                }
                let model = LoadModel::Closed {
                    users: users.get_ref().values[0] as u64,
                    ramp_up,
                    bound,
                };
                Ok((model, sweep_of(users)))
            }
            (None, Some(rate)) => {
                if let Some(i) = &raw.iterations {
                    return Err(not_with("iterations", "`rate` (the open model runs for a `duration`)", i.span()));
                }
                if let Some(r) = &raw.ramp_up {
                    return Err(not_with("ramp_up", "`rate` (use `stages` to ramp the rate)", r.span()));
                }
                if let Some(st) = raw.stages.as_ref().and_then(|s| s.first()) {
                    return Err(not_with("stages", "`rate`", st.span()));
                }
                for &r in &rate.get_ref().values {
                    if r <= 0.0 || r > 10_000_000.0 {
                        return Err(self.error(rate.span(), format!("`load.rate`: expected arrivals per second above 0 and at most 10000000, found {r}")));
                    }
                }
                let Some(d) = raw.duration.as_ref() else {
                    return Err(self.error(span, "[load]: the open model needs `duration = \"2m\"` (or `stages`)"));
                };
                let r = rate.get_ref().values[0];
                let stages = vec![RateStage { from: r, to: r, duration: d.get_ref().0 }];
                let sweep = sweep_of(rate);
                Ok((self.open_model(&raw, stages, timeout)?, sweep))
            }
        }
    }

    fn closed_stages(&self, raw: RawLoad) -> Result<(LoadModel, Option<Sweep>), PlanError> {
        for (key, at) in [
            ("duration", raw.duration.as_ref().map(Spanned::span)),
            ("ramp_up", raw.ramp_up.as_ref().map(Spanned::span)),
            ("iterations", raw.iterations.as_ref().map(Spanned::span)),
            ("max_users", raw.max_users.as_ref().map(Spanned::span)),
            ("max_wait", raw.max_wait.as_ref().map(Spanned::span)),
        ] {
            if let Some(at) = at {
                return Err(self.error(at, format!("`load.{key}`: not allowed with `stages` of `users` (each stage has its own duration)")));
            }
        }
        let mut stages = Vec::new();
        for st in raw.stages.iter().flatten() {
            let at = st.span();
            let st = st.get_ref();
            if let Some(r) = &st.rate {
                return Err(self.error(r.span(), "`load.stages`: expected `users` in every stage (or `rate` in every stage), not both kinds"));
            }
            let Some(users) = &st.users else {
                return Err(
                    self.error(at, "`load.stages`: each stage needs `users` and `duration`")
                );
            };
            let u = users.get_ref().values[0];
            if users.get_ref().list || u.fract() != 0.0 || u > MAX_USERS as f64 {
                return Err(self.error(
                    users.span(),
                    format!("`load.stages`: expected a number of users from 0 to {MAX_USERS}"),
                ));
            }
            if st.duration.get_ref().0.is_zero() {
                return Err(self.error(
                    st.duration.span(),
                    "`load.stages`: expected a duration above zero",
                ));
            }
            stages.push((u as u64, st.duration.get_ref().0));
        }
        if stages.iter().all(|s| s.0 == 0) {
            return Err(self.error(
                0..0,
                "`load.stages`: expected at least one stage with users",
            ));
        }
        let graceful_stop = raw
            .graceful_stop
            .map_or(DEFAULT_GRACEFUL_STOP, |g| g.into_inner().0);
        Ok((
            LoadModel::Staged {
                stages,
                graceful_stop,
            },
            None,
        ))
    }

    fn open_stages(
        &self,
        raw: RawLoad,
        timeout: Duration,
    ) -> Result<(LoadModel, Option<Sweep>), PlanError> {
        if let Some(d) = &raw.duration {
            return Err(self.error(
                d.span(),
                "`load.duration`: not allowed with `stages` (each stage has its own)",
            ));
        }
        if let Some(r) = &raw.ramp_up {
            return Err(self.error(
                r.span(),
                "`load.ramp_up`: not allowed with `stages` (ramp between stages instead)",
            ));
        }
        let mut stages = Vec::new();
        let mut level = 0.0;
        for st in raw.stages.iter().flatten() {
            let at = st.span();
            let st = st.get_ref();
            if let Some(u) = &st.users {
                return Err(self.error(u.span(), "`load.stages`: expected `rate` in every stage (or `users` in every stage), not both kinds"));
            }
            let Some(rate) = &st.rate else {
                return Err(self.error(at, "`load.stages`: each stage needs `rate` and `duration`"));
            };
            if rate.get_ref().list {
                return Err(self.error(rate.span(), "`load.stages`: a stage's rate is one number"));
            }
            let r = rate.get_ref().values[0];
            if r > 10_000_000.0 {
                return Err(self.error(
                    rate.span(),
                    format!("`load.stages`: rate {r} is above 10000000 per second"),
                ));
            }
            if st.duration.get_ref().0.is_zero() {
                return Err(self.error(
                    st.duration.span(),
                    "`load.stages`: expected a duration above zero",
                ));
            }
            stages.push(RateStage {
                from: level,
                to: r,
                duration: st.duration.get_ref().0,
            });
            level = r;
        }
        if stages.is_empty() || stages.iter().all(|s| s.from == 0.0 && s.to == 0.0) {
            return Err(self.error(
                0..0,
                "`load.stages`: expected at least one stage with a rate above zero",
            ));
        }
        Ok((self.open_model(&raw, stages, timeout)?, None))
    }

    fn open_model(
        &self,
        raw: &RawLoad,
        stages: Vec<RateStage>,
        timeout: Duration,
    ) -> Result<LoadModel, PlanError> {
        let max_users = match &raw.max_users {
            Some(m) if *m.get_ref() == 0 || *m.get_ref() > MAX_USERS => {
                return Err(self.error(
                    m.span(),
                    format!("`load.max_users`: expected an integer from 1 to {MAX_USERS}"),
                ));
            }
            Some(m) => *m.get_ref(),
            None => DEFAULT_MAX_USERS,
        };
        let max_wait = raw.max_wait.as_ref().map_or(timeout, |w| w.get_ref().0);
        Ok(LoadModel::Open {
            stages,
            max_users,
            max_wait,
        })
    }
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Users of a load model (the concurrency cap of the open model).
fn self_users(load: &LoadModel) -> u64 {
    match load {
        LoadModel::Closed { users, .. } => *users,
        LoadModel::Staged { stages, .. } => stages.iter().map(|s| s.0).max().unwrap_or(0),
        LoadModel::Open { max_users, .. } => *max_users,
    }
}

fn http_header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn http_header_value_ok(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The dotted key whose value starts at `offset` (`load.users`), read from
/// the line's `key =` and the nearest table header above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = text.floor_char_boundary(offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let eq = line.find('=')?;
    if offset - line_start <= eq {
        return None;
    }
    let key = line[..eq].trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where outputs go by default: `runs/<UTC timestamp>-<plan name>/`.
pub fn default_out_dir(plan: &Plan, now: time::OffsetDateTime) -> PathBuf {
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "run".into());
    let safe: String = plan
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from("runs").join(format!("{stamp}-{safe}"))
}
