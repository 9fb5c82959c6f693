//! Plan files: TOML in, one validated [`Plan`] out, before anything is sent.
//!
//! Every error names the file, line and column, the key and what was expected.
//!
//! Its parts: `raw` (the TOML shapes as written), `validate` (from
//! those shapes to a [`Plan`], with the line and column of every error),
//! `journey` (steps, variables, checks and data) and [`assign`] (a plan
//! cut into what each agent receives).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use loadfleet_proto::v1;

pub mod assign;
mod flow;
mod journey;
pub mod load;
mod raw;
mod validate;

pub use journey::{DataSpec, MAX_DATA_BYTES, MetricSpec, parse_think};
pub use load::{LoadModel, RateStage, ScenarioLoad, ScenarioRate};

use raw::RawPlan;
use validate::{Validator, key_at};

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
    /// By step id: whether the row is a group (a transaction) rather than
    /// a request; groups are left out of every overall figure.
    pub groups: Vec<bool>,
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
    /// `[experiment]`: arms and repetitions for `loadfleet experiment`.
    pub experiment: Option<ExperimentSpec>,
    /// The load's values the command line replaced (`run --users 10`), in
    /// words, for the run's warnings.
    pub overrides: Vec<String>,
}

/// The load's values `loadfleet run` may replace for one run.
#[derive(Debug, Clone, Default)]
pub struct LoadOverride {
    pub users: Option<u64>,
    pub ramp_up: Option<Duration>,
    pub iterations: Option<u64>,
    pub duration: Option<Duration>,
    pub rate: Option<f64>,
}

impl LoadOverride {
    pub fn is_empty(&self) -> bool {
        self.users.is_none()
            && self.ramp_up.is_none()
            && self.iterations.is_none()
            && self.duration.is_none()
            && self.rate.is_none()
    }
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
    /// `http.phases`: record each request's phases (DNS, connect, TLS, send,
    /// wait, receive) as metrics (default false). Not the plan's `[[phase]]`s.
    pub request_phases: bool,
    /// `http.version`: "auto" (default), "1.1", "2" or "h2c".
    pub version: v1::HttpVersion,
}

/// The largest `http.body_limit`: every user may keep a body this big.
/// The agent's own limit, so that a plan the controller accepts is one an
/// agent accepts.
pub const MAX_BODY_LIMIT: u64 = loadfleet_agent::assignment::MAX_BODY_LIMIT as u64;

/// `[experiment]` and its `[[experiment.arm]]`s, as the plan writes them
/// (`loadfleet experiment` flags override each).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExperimentSpec {
    /// (name, set-up command), the baseline first.
    pub arms: Vec<(String, String)>,
    pub runs: Option<usize>,
    pub warm_up: Option<Duration>,
    pub settle: Option<Duration>,
    pub setup_timeout: Option<Duration>,
    /// `balanced` or `random`.
    pub order: Option<String>,
    pub seed: Option<u64>,
    pub margin_pct: Option<f64>,
}

/// One plan run once per value, one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Users (closed model) or arrivals per second (open model), in order.
    pub values: Vec<f64>,
    /// Pause between two runs.
    pub cooldown: Duration,
    /// The phase whose load the values set, in a plan with phases: every
    /// value runs all the phases (its warm-up first) with that one at it.
    pub phase: Option<usize>,
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
    /// The requests; `program` says in which order and how often (each
    /// once, in order, when it is empty).
    pub steps: Vec<StepSpec>,
    pub program: Vec<v1::Op>,
    /// The journey as an indented tree, a line per step and block
    /// (`loadfleet validate --explain`).
    pub tree: Vec<String>,
    /// The most requests one iteration can send (`None`: only time bounds
    /// them), and the longest it can take (timeouts and think times).
    pub max_requests: Option<u64>,
    pub longest: Duration,
    pub on_error: v1::OnError,
    /// Minimum length of an iteration.
    pub pacing: Duration,
}

impl ScenarioSpec {
    /// The ids of the rows its requests count in (groups left out), sorted
    /// and each once: what its figures add together.
    pub fn request_steps(&self, groups: &[bool]) -> Vec<usize> {
        let mut ids: Vec<usize> = self
            .steps
            .iter()
            .map(|st| st.id)
            .filter(|&id| !groups.get(id).copied().unwrap_or(false))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
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
        if !self.overrides.is_empty() {
            w.push(format!(
                "the load was set on the command line, not as the plan says: {}",
                self.overrides.join(", ")
            ));
        }
        if !self.target.tls_verify {
            w.push(
                "target.tls_verify = false: servers' certificates were not checked; \
                 anyone on the path could have answered in the target's place"
                    .to_string(),
            );
        }
        w
    }

    /// Replaces the load's values for one run (`loadfleet run --users 10
    /// --duration 30s`), as k6's `--vus` and `--duration` do; each
    /// replacement is kept in [`Plan::overrides`].
    pub fn override_load(&mut self, o: &LoadOverride) -> Result<(), String> {
        use crate::duration::format_duration as fd;
        if o.is_empty() {
            return Ok(());
        }
        if self.sweep.is_some() || !self.phases.is_empty() {
            return Err(
                "--users, --rate, --duration, --iterations and --ramp-up replace one [load]; this plan has a sweep or phases: edit the plan".into(),
            );
        }
        if o.iterations.is_some() && o.duration.is_some() {
            return Err("give --iterations or --duration, not both".into());
        }
        if o.users == Some(0) || o.iterations == Some(0) || o.duration.is_some_and(|d| d.is_zero())
        {
            return Err("--users, --iterations and --duration must be above 0".into());
        }
        let mut said = Vec::new();
        match &mut self.load {
            LoadModel::Closed {
                users,
                ramp_up,
                bound,
            } => {
                if o.rate.is_some() {
                    return Err("--rate is for a plan whose [load] has a `rate` (the open model); this one has `users`: give --users".into());
                }
                if let Some(u) = o.users {
                    said.push(format!("--users {u} (the plan: {users})"));
                    *users = u;
                }
                if let Some(r) = o.ramp_up {
                    said.push(format!("--ramp-up {} (the plan: {})", fd(r), fd(*ramp_up)));
                    *ramp_up = r;
                }
                let was = match bound {
                    RunBound::Iterations(n) => format!("{n} iterations"),
                    RunBound::Duration(d) => fd(*d),
                };
                if let Some(n) = o.iterations {
                    said.push(format!("--iterations {n} (the plan: {was})"));
                    *bound = RunBound::Iterations(n);
                }
                if let Some(d) = o.duration {
                    said.push(format!("--duration {} (the plan: {was})", fd(d)));
                    *bound = RunBound::Duration(d);
                }
            }
            LoadModel::Open { stages, .. } => {
                if o.users.is_some() || o.iterations.is_some() || o.ramp_up.is_some() {
                    return Err("this plan's [load] has a `rate` (the open model): give --rate and --duration".into());
                }
                if stages.len() != 1 || stages[0].from != stages[0].to {
                    return Err("this plan's rate changes in stages: edit the plan".into());
                }
                if let Some(r) = o.rate {
                    if !(r.is_finite() && r > 0.0) {
                        return Err("--rate must be above 0".into());
                    }
                    said.push(format!("--rate {r}/s (the plan: {}/s)", stages[0].from));
                    (stages[0].from, stages[0].to) = (r, r);
                }
                if let Some(d) = o.duration {
                    said.push(format!(
                        "--duration {} (the plan: {})",
                        fd(d),
                        fd(stages[0].duration)
                    ));
                    stages[0].duration = d;
                }
            }
            LoadModel::Staged { .. } | LoadModel::Scenarios(_) => {
                return Err(
                    "this plan's load has stages or a load per scenario: edit the plan".into(),
                );
            }
        }
        self.overrides.extend(said);
        Ok(())
    }

    /// The fleet-wide user count (the concurrency cap in the open model).
    pub fn users(&self) -> u64 {
        self.load.peak_users()
    }

    /// The plan for one value of its sweep (users or rate), without the sweep.
    pub fn at(&self, value: f64) -> Plan {
        let mut p = self.clone();
        let phase = p.sweep.take().and_then(|s| s.phase);
        if let Some(i) = phase {
            if let Some(ph) = p.phases.get_mut(i) {
                ph.load = ph.load.level(value);
            }
            if i == 0 {
                p.load = p.load.level(value);
            }
            return p;
        }
        match &mut p.load {
            LoadModel::Closed { users, .. } => *users = value as u64,
            LoadModel::Staged { .. } | LoadModel::Scenarios(_) => {}
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
        let mut groups: Vec<bool> = Vec::new();
        let mut renumber = vec![None; self.step_names.len()];
        let mut number = |old: usize| -> usize {
            match renumber[old] {
                Some(id) => id,
                None => {
                    names.push(self.step_names[old].clone());
                    groups.push(self.groups.get(old).copied().unwrap_or(false));
                    renumber[old] = Some(names.len() - 1);
                    names.len() - 1
                }
            }
        };
        for s in &mut p.scenarios {
            for st in &mut s.steps {
                let id = number(st.id);
                st.id = id;
                st.wire.id = id as u32;
            }
            // Groups, and the rows that count loops' bound hits.
            for op in &mut s.program {
                match &mut op.op {
                    Some(v1::op::Op::GroupBegin(g)) => g.step = number(g.step as usize) as u32,
                    Some(v1::op::Op::LoopTest(t)) if t.bound_step > 0 => {
                        t.bound_step = number(t.bound_step as usize - 1) as u32 + 1
                    }
                    _ => {}
                }
            }
        }
        p.step_names = names;
        p.groups = groups;
        p.thresholds.rules = self
            .thresholds
            .rules
            .iter()
            .filter_map(|r| {
                let mut r = r.clone();
                if let Some(sc) = &mut r.scenario {
                    // About a scenario this phase does not run: left out.
                    if !p.scenarios.iter().any(|s| s.name == sc.name) {
                        return None;
                    }
                    sc.steps = sc
                        .steps
                        .iter()
                        .filter_map(|&old| renumber.get(old).copied().flatten())
                        .collect();
                    sc.steps.sort_unstable();
                }
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
            // Known when every scenario runs for a duration.
            LoadModel::Scenarios(loads) => loads
                .iter()
                .map(|l| l.end())
                .try_fold(Duration::ZERO, |most, end| end.map(|e| most.max(e))),
            LoadModel::Staged { stages, .. } => Some(stages.iter().map(|s| s.1).sum()),
            LoadModel::Open { stages, .. } => Some(stages.iter().map(|s| s.duration).sum()),
        }
    }

    /// Where the plan sends requests: each origin (scheme, host and port)
    /// with the number of steps aimed at it, the target's first; a URL
    /// that a variable makes is listed as such.
    pub fn hosts(&self) -> Vec<(String, usize)> {
        let origin = |url: &str| -> String {
            match url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| loadfleet_agent::assignment::Origin::split(&u).ok())
            {
                Some((o, _)) => format!(
                    "{}://{}:{}",
                    if o.https { "https" } else { "http" },
                    o.host,
                    o.port
                ),
                None => format!("a URL a variable makes ({url})"),
            }
        };
        let mut out: Vec<(String, usize)> = vec![(origin(&self.target.base_url), 0)];
        for s in &self.scenarios {
            for st in &s.steps {
                let o = if st.wire.url.is_empty() {
                    out[0].0.clone()
                } else {
                    origin(&st.wire.url)
                };
                match out.iter_mut().find(|(h, _)| *h == o) {
                    Some(h) => h.1 += 1,
                    None => out.push((o, 1)),
                }
            }
        }
        out
    }

    /// The longest one iteration of any scenario can take: each request's
    /// timeout and its longest think time, as often as its loops may run it
    /// (see [`flow::Bound`]), or the scenario's pacing when that is longer.
    pub fn iteration_bound(&self) -> Duration {
        self.scenarios
            .iter()
            .map(|s| s.longest.max(s.pacing))
            .max()
            .unwrap_or(self.target.timeout)
    }

    /// The most requests the plan can send, when its load is bounded by
    /// iterations (users × iterations × the most requests of a scenario's
    /// iteration, its loops counted; redirects followed are not requests
    /// of their own). `None` when only time bounds them.
    pub fn requests_bound(&self) -> Option<u64> {
        if let LoadModel::Scenarios(loads) = &self.load {
            return loads.iter().try_fold(0u64, |sum, l| {
                let per = self.scenarios.get(l.scenario)?.max_requests?;
                match l.bound {
                    RunBound::Iterations(n) => {
                        Some(sum.saturating_add(l.users.saturating_mul(n).saturating_mul(per)))
                    }
                    RunBound::Duration(_) => None,
                }
            });
        }
        match self.load {
            LoadModel::Closed {
                users,
                bound: RunBound::Iterations(n),
                ..
            } => {
                let mut most = 0u64;
                for s in &self.scenarios {
                    most = most.max(s.max_requests?);
                }
                Some(users.saturating_mul(n).saturating_mul(most))
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
            // The latest any scenario's users can end, each with its own
            // longest iteration.
            LoadModel::Scenarios(ref loads) => loads
                .iter()
                .map(|l| {
                    let s = self.scenarios.get(l.scenario);
                    let iteration = s.map_or(iteration, |s| s.longest.max(s.pacing));
                    match l.bound {
                        // An arrival may wait, then runs a whole iteration.
                        RunBound::Duration(d) if l.rate.is_some() => {
                            let wait = l.rate.as_ref().map_or(Duration::ZERO, |r| r.max_wait);
                            l.start + d + wait + iteration
                        }
                        RunBound::Duration(d) => l.start + d + self.target.timeout,
                        RunBound::Iterations(n) => {
                            l.start.saturating_add(l.ramp_up).saturating_add(
                                iteration.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)),
                            )
                        }
                    }
                })
                .max()
                .unwrap_or_default()
                .saturating_add(slack),
        }
    }
}

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

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
