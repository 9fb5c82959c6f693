//! The load models, and what the controller knows of each in one place:
//! its validation from `[load]`, how it reads to a person, how a sweep or
//! a capacity search varies it, and how the summary describes it. Its
//! split among agents is in `assign`.

use std::ops::Range;
use std::time::Duration;

use serde::Serialize;
use toml::Spanned;

use super::raw::{Numbers, RawLoad};
use super::validate::Validator;
use super::{DEFAULT_GRACEFUL_STOP, DEFAULT_MAX_USERS, MAX_USERS, PlanError, RunBound, Sweep};
use crate::duration::PlanDuration;

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
    /// Closed model with a load per scenario (`[scenario.load]`): the
    /// scenarios run at once, each with its own users, ramp-up, bound and
    /// start, as k6's scenarios and JMeter's concurrent thread groups do.
    Scenarios(Vec<ScenarioLoad>),
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

/// One scenario's own load.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioLoad {
    /// Index into the plan's scenarios, and its name.
    pub scenario: usize,
    pub name: String,
    pub users: u64,
    pub ramp_up: Duration,
    /// Iterations per user, or a duration counted from `start`.
    pub bound: RunBound,
    /// When its first user starts, from the run's start.
    pub start: Duration,
    /// Set for a scenario with an arrival rate of its own (the open model
    /// for this scenario): `users` is then its concurrency cap, `ramp_up`
    /// zero and `bound` the stages' length.
    pub rate: Option<ScenarioRate>,
}

/// A scenario's own arrival rate.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioRate {
    pub stages: Vec<RateStage>,
    /// How long an arrival may wait for a free user before it is dropped.
    pub max_wait: Duration,
}

impl ScenarioLoad {
    /// When its users stop at the latest (a duration's end), from the
    /// run's start; `None` when iterations bound them.
    pub fn end(&self) -> Option<Duration> {
        match self.bound {
            RunBound::Duration(d) => Some(self.start + d),
            RunBound::Iterations(_) => None,
        }
    }
}

/// "5 arrivals/s for 30s", or each stage's ramp.
fn describe_rates(stages: &[RateStage]) -> String {
    use crate::duration::format_duration as fd;
    match stages {
        [s] if s.from == s.to => format!("{} arrivals/s for {}", s.from, fd(s.duration)),
        _ => stages
            .iter()
            .map(|s| format!("{}→{}/s over {}", s.from, s.to, fd(s.duration)))
            .collect::<Vec<_>>()
            .join(", "),
    }
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
            LoadModel::Scenarios(loads) => {
                let each: Vec<String> = loads
                    .iter()
                    .map(|l| {
                        let bound = match l.bound {
                            RunBound::Iterations(1) => "1 iteration each".to_string(),
                            RunBound::Iterations(n) => format!("{n} iterations each"),
                            RunBound::Duration(d) => format!("for {}", fd(d)),
                        };
                        let from = if l.start.is_zero() {
                            String::new()
                        } else {
                            format!(", from {}", fd(l.start))
                        };
                        if let Some(rate) = &l.rate {
                            return format!(
                                "\"{}\" {} (at most {} users at once){from}",
                                l.name,
                                describe_rates(&rate.stages),
                                l.users
                            );
                        }
                        format!(
                            "\"{}\" {} users over a {} ramp-up, {bound}{from}",
                            l.name,
                            l.users,
                            fd(l.ramp_up)
                        )
                    })
                    .collect();
                let model = match loads.iter().filter(|l| l.rate.is_some()).count() {
                    0 => "closed model",
                    n if n == loads.len() => "open model",
                    _ => "closed and open models",
                };
                format!("{model}, a load per scenario: {}", each.join("; "))
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
                let rates = describe_rates(stages);
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
        match self {
            LoadModel::Open { .. } => true,
            LoadModel::Scenarios(loads) => loads.iter().any(|l| l.rate.is_some()),
            _ => false,
        }
    }

    /// Some scenarios with an arrival rate of their own and some with
    /// users: latencies of the first are measured from intended sends.
    pub fn is_mixed(&self) -> bool {
        match self {
            LoadModel::Scenarios(loads) => {
                loads.iter().any(|l| l.rate.is_some()) && loads.iter().any(|l| l.rate.is_none())
            }
            _ => false,
        }
    }

    /// The most users at once: the closed model's users, the highest
    /// stage, or the open model's concurrency cap.
    pub fn peak_users(&self) -> u64 {
        match self {
            LoadModel::Closed { users, .. } => *users,
            LoadModel::Staged { stages, .. } => stages.iter().map(|s| s.0).max().unwrap_or(0),
            // At most all of them at once.
            LoadModel::Scenarios(loads) => loads.iter().map(|l| l.users).sum(),
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
            LoadModel::Scenarios(loads) => loads.iter().try_fold(0u64, |sum, l| match l.bound {
                RunBound::Iterations(n) => Some(sum.saturating_add(l.users.saturating_mul(n))),
                RunBound::Duration(_) => None,
            }),
            _ => None,
        }
    }

    /// This model at one level of a sweep: the closed model's users, or
    /// the open model's rate in every stage (stages are kept).
    pub fn level(&self, value: f64) -> LoadModel {
        let mut m = self.clone();
        match &mut m {
            LoadModel::Closed { users, .. } => *users = value as u64,
            LoadModel::Open { stages, .. } => {
                for s in stages {
                    (s.from, s.to) = (value, value);
                }
            }
            LoadModel::Staged { .. } | LoadModel::Scenarios(_) => {}
        }
        m
    }

    /// What a sweep or a capacity search varies: `users` or `rate`.
    pub fn level_name(&self) -> &'static str {
        match self {
            LoadModel::Closed { .. } | LoadModel::Staged { .. } | LoadModel::Scenarios(_) => {
                "users"
            }
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
            LoadModel::Scenarios(_) => Err(
                "capacity search needs one [load] (`users` or a constant `rate`), not a load per scenario"
                    .into(),
            ),
            LoadModel::Open { stages, .. } => match stages.as_slice() {
                [s] if s.from == s.to => Ok(s.from),
                _ => Err("capacity search needs a constant `rate`, not `stages`".into()),
            },
        }
    }

    /// A warm-up of `length` at this model's load: its users (the highest
    /// stage's) or its highest rate, held, ramping over at most a third
    /// of it.
    pub fn warm_up(&self, length: Duration) -> LoadModel {
        let level = match self {
            LoadModel::Closed { users, .. } => *users as f64,
            LoadModel::Staged { .. } | LoadModel::Scenarios(_) => self.peak_users() as f64,
            LoadModel::Open { stages, .. } => {
                stages.iter().map(|s| s.from.max(s.to)).fold(0.0, f64::max)
            }
        };
        let closed = match self {
            LoadModel::Staged { .. } | LoadModel::Scenarios(_) => &LoadModel::Closed {
                users: 0,
                ramp_up: length / 3,
                bound: RunBound::Duration(length),
            },
            other => other,
        };
        closed.held_at(level, length, length / 3)
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
            LoadModel::Staged { .. } | LoadModel::Scenarios(_) => self.clone(),
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

/// `[load]`, validated into a model.
impl Validator<'_> {
    /// A `[load]` (the plan's or a phase's): the model, its sweep, its
    /// `max_duration` and its `throttle`.
    #[allow(clippy::type_complexity)]
    pub(super) fn load_of(
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

    /// Loads per scenario (`[scenario.load]` in every scenario): the model,
    /// and from `[load]` (which then holds only run-wide keys) the run's
    /// `max_duration` and `throttle`.
    #[allow(clippy::type_complexity)]
    pub(super) fn scenario_loads(
        &self,
        top: Option<Spanned<RawLoad>>,
        scenarios: &[Spanned<super::raw::RawScenario>],
        has_phases: bool,
        timeout: Duration,
    ) -> Result<(LoadModel, Option<Duration>, Option<f64>), PlanError> {
        let mut loads = Vec::with_capacity(scenarios.len());
        for (i, s) in scenarios.iter().enumerate() {
            let sc = s.get_ref();
            let name = sc.name.get_ref().trim().to_string();
            let Some(l) = &sc.load else {
                return Err(self.error(
                    s.span(),
                    format!(
                        "scenario \"{name}\": expected a [scenario.load] as the other scenarios have (a load per scenario is for every scenario or none)"
                    ),
                ));
            };
            if has_phases {
                return Err(self.error(
                    l.span(),
                    "`scenario.load`: a plan with [[phase]] gives each phase its load (a load per scenario in a phase is [phase.loads.NAME])",
                ));
            }
            if let Some(w) = &sc.weight {
                return Err(self.error(
                    w.span(),
                    "scenario `weight`: its own load says how many users it has; remove `weight`",
                ));
            }
            loads.push(self.scenario_load(i, name, l, timeout)?);
        }
        let (max_duration, throttle) = self.run_wide(top, &loads)?;
        Ok((LoadModel::Scenarios(loads), max_duration, throttle))
    }

    /// One scenario's own load (`[scenario.load]`, or `[phase.loads.NAME]`);
    /// `i` is the scenario's index in the run it is part of.
    pub(super) fn scenario_load(
        &self,
        i: usize,
        name: String,
        l: &Spanned<super::raw::RawScenarioLoad>,
        timeout: Duration,
    ) -> Result<ScenarioLoad, PlanError> {
        let raw = l.get_ref();
        if raw.rate.is_none() && raw.stages.is_none() {
            let only_open = [
                ("max_users", raw.max_users.as_ref().map(Spanned::span)),
                ("max_wait", raw.max_wait.as_ref().map(Spanned::span)),
            ];
            if let Some((key, Some(span))) = only_open.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(
                    span,
                    format!("`scenario.load.{key}`: is for a scenario with a `rate`; with `users`, the users are the cap"),
                ));
            }
        }
        if let Some(st) = raw.stages.as_ref().and_then(|s| s.first())
            && st.get_ref().users.is_some()
        {
            return Err(self.error(
                st.span(),
                "`scenario.load.stages`: a scenario's stages are rate stages (`{ rate = 5, duration = \"1m\" }`); stages of users are for one plan-wide [load]",
            ));
        }
        let as_load = RawLoad {
            users: raw.users.clone(),
            rate: raw.rate.clone(),
            ramp_up: raw.ramp_up.clone(),
            iterations: raw.iterations.clone(),
            duration: raw.duration.clone(),
            stages: raw.stages.clone(),
            max_users: raw.max_users.clone(),
            max_wait: raw.max_wait.clone(),
            cooldown: None,
            throttle: None,
            graceful_stop: None,
            max_duration: None,
        };
        let (model, sweep) = self.load(Spanned::new(l.span(), as_load), timeout)?;
        if sweep.is_some() {
            return Err(self.error(
                l.span(),
                "`scenario.load`: a list of values (a sweep) is for one plan-wide [load]",
            ));
        }
        let start = raw
            .start
            .as_ref()
            .map(|s| s.get_ref().0)
            .unwrap_or_default();
        Ok(match model {
            LoadModel::Closed {
                users,
                ramp_up,
                bound,
            } => ScenarioLoad {
                scenario: i,
                name,
                users,
                ramp_up,
                bound,
                start,
                rate: None,
            },
            LoadModel::Open {
                stages,
                max_users,
                max_wait,
            } => ScenarioLoad {
                scenario: i,
                name,
                users: max_users,
                ramp_up: Duration::ZERO,
                bound: RunBound::Duration(stages.iter().map(|s| s.duration).sum()),
                start,
                rate: Some(ScenarioRate { stages, max_wait }),
            },
            LoadModel::Staged { .. } | LoadModel::Scenarios(_) => {
                return Err(self.error(
                    l.span(),
                    "`scenario.load`: expected `users` with `iterations` or `duration`, or `rate` with `duration` (or rate `stages`)",
                ));
            }
        })
    }

    /// With a load per scenario, `[load]` (or a phase's `load`) holds only
    /// the run-wide `max_duration` and `throttle`.
    pub(super) fn run_wide(
        &self,
        top: Option<Spanned<RawLoad>>,
        loads: &[ScenarioLoad],
    ) -> Result<(Option<Duration>, Option<f64>), PlanError> {
        let (mut max_duration, mut throttle) = (None, None);
        if let Some(top) = top {
            let t = top.get_ref();
            let refused = [
                ("users", t.users.as_ref().map(Spanned::span)),
                ("rate", t.rate.as_ref().map(Spanned::span)),
                ("ramp_up", t.ramp_up.as_ref().map(Spanned::span)),
                ("iterations", t.iterations.as_ref().map(Spanned::span)),
                ("duration", t.duration.as_ref().map(Spanned::span)),
                ("max_users", t.max_users.as_ref().map(Spanned::span)),
                ("max_wait", t.max_wait.as_ref().map(Spanned::span)),
                ("cooldown", t.cooldown.as_ref().map(Spanned::span)),
                ("graceful_stop", t.graceful_stop.as_ref().map(Spanned::span)),
            ];
            if let Some((key, Some(span))) = refused.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(
                    span,
                    format!(
                        "`load.{key}`: with a load per scenario, [load] holds only `max_duration` and `throttle`; put `{key}` in each [scenario.load]"
                    ),
                ));
            }
            if t.stages.is_some() {
                return Err(self.error(
                    top.span(),
                    "`load.stages`: with a load per scenario, [load] holds only `max_duration` and `throttle`",
                ));
            }
            if let Some(m) = &t.max_duration {
                if m.get_ref().0.is_zero() {
                    return Err(self.error(
                        m.span(),
                        "`load.max_duration`: expected a duration above zero",
                    ));
                }
                max_duration = Some(m.get_ref().0);
            }
            if let Some(th) = &t.throttle {
                throttle = Some(self.throttle(th, loads.iter().any(|l| l.rate.is_some()))?);
            }
        }
        Ok((max_duration, throttle))
    }

    /// `load.throttle`: "120/min" and the like, as requests per second.
    pub(super) fn throttle(&self, t: &Spanned<String>, open_model: bool) -> Result<f64, PlanError> {
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

    pub(super) fn load(
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
                phase: None,
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

    pub(super) fn closed_stages(
        &self,
        raw: RawLoad,
    ) -> Result<(LoadModel, Option<Sweep>), PlanError> {
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
            if let Some(f) = &st.from {
                return Err(self.error(f.span(), "`load.stages`: `from` is for rate stages; a stage of users ramps from the level before it"));
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

    pub(super) fn open_stages(
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
            let from = match &st.from {
                Some(f) if !(0.0..=10_000_000.0).contains(f.get_ref()) => {
                    return Err(self.error(
                        f.span(),
                        format!(
                            "`load.stages`: `from` {} is not a rate from 0 to 10000000 per second",
                            f.get_ref()
                        ),
                    ));
                }
                Some(f) => *f.get_ref(),
                None => level,
            };
            stages.push(RateStage {
                from,
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

    pub(super) fn open_model(
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
    /// A load per scenario: each scenario's users, ramp-up, bound and start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_loads: Option<Vec<ScenarioLoadSummary>>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ScenarioLoadSummary {
    pub scenario: String,
    /// Its users, or with a rate its concurrency cap.
    pub users: u64,
    pub ramp_up_s: f64,
    pub iterations: Option<u64>,
    pub duration_s: Option<f64>,
    pub start_s: f64,
    /// With an arrival rate of its own: its stages (from its start) and
    /// how long an arrival may wait for a free user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_stages: Option<Vec<RateStageSummary>>,
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
            scenario_loads: None,
        };
        match load {
            LoadModel::Scenarios(loads) => {
                s.model = match (load.is_open(), load.is_mixed()) {
                    (_, true) => "mixed".into(),
                    (true, false) => "open".into(),
                    (false, false) => "closed".into(),
                };
                s.users = Some(load.peak_users());
                s.iterations = None;
                s.scenario_loads = Some(
                    loads
                        .iter()
                        .map(|l| ScenarioLoadSummary {
                            scenario: l.name.clone(),
                            users: l.users,
                            ramp_up_s: l.ramp_up.as_secs_f64(),
                            iterations: match l.bound {
                                RunBound::Iterations(n) => Some(n),
                                RunBound::Duration(_) => None,
                            },
                            duration_s: match l.bound {
                                RunBound::Duration(d) => Some(d.as_secs_f64()),
                                RunBound::Iterations(_) => None,
                            },
                            start_s: l.start.as_secs_f64(),
                            rate_stages: l.rate.as_ref().map(|r| {
                                r.stages
                                    .iter()
                                    .map(|x| RateStageSummary {
                                        from: x.from,
                                        to: x.to,
                                        duration_s: x.duration.as_secs_f64(),
                                    })
                                    .collect()
                            }),
                            max_wait_s: l.rate.as_ref().map(|r| r.max_wait.as_secs_f64()),
                        })
                        .collect(),
                );
            }
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
