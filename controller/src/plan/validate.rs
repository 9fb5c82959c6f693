//! From the raw TOML shapes to a validated [`Plan`]: every value checked,
//! every error with its file, line, column, key and what was expected.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use loadfleet_proto::v1;
use toml::Spanned;

use super::raw::*;
use super::*;

pub(super) struct Validator<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

/// The scenarios, the names of their rows in order of first use, and
/// which rows are groups.
type Journeys = (Vec<ScenarioSpec>, Vec<String>, Vec<bool>);

impl Validator<'_> {
    pub(super) fn error(&self, span: Range<usize>, message: impl Into<String>) -> PlanError {
        let (line, column) = line_column(self.text, span.start);
        PlanError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(super) fn plan(&self, mut raw: RawPlan, default_name: &str) -> Result<Plan, PlanError> {
        let name = match raw.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                return Err(self.error(n.span(), "`name`: expected a non-empty string"));
            }
            Some(n) => n.into_inner(),
            None => default_name.to_string(),
        };
        let mut target = self.target(raw.target)?;
        if let Some(http) = raw.http.take() {
            self.http(http, &mut target, &mut raw.scenario)?;
        }
        let phases_raw = std::mem::take(&mut raw.phase);
        // The run's load; with phases, the first phase's (below).
        let main = if raw.scenario.iter().any(|s| s.get_ref().load.is_some()) {
            let (load, max_duration, throttle) = self.scenario_loads(
                raw.load.take(),
                &raw.scenario,
                !phases_raw.is_empty(),
                target.timeout,
            )?;
            Some((load, None, max_duration, throttle))
        } else {
            match self.main_load(raw.load.take(), !phases_raw.is_empty())? {
                Some(main) => Some(self.load_of(main, target.timeout)?),
                None => None,
            }
        };
        if raw.scenario.is_empty() {
            return Err(self.error(
                0..0,
                "expected at least one [[scenario]] with at least one [[scenario.step]]",
            ));
        }
        let vars = self.vars(raw.vars)?;
        let data = self.data(raw.data.clone())?;
        let (mut metrics, plan_metrics) = self.plan_metrics(&raw.metric)?;
        let (scenarios, step_names, groups) = self.scenarios(
            raw.scenario,
            &target,
            &vars,
            &data,
            &plan_metrics,
            &mut metrics,
        )?;
        self.upload_bound(&scenarios)?;
        let (phases, phase_sweep) = self.phases(phases_raw, &scenarios, target.timeout)?;
        let (load, sweep, max_duration, throttle_per_s) = match (main, phases.first()) {
            (Some(main), _) => main,
            (None, Some(first)) => (
                first.load.clone(),
                None,
                first.max_duration,
                first.throttle_per_s,
            ),
            (None, None) => unreachable!("main_load refuses a plan with neither"),
        };
        // A plan with phases sweeps one phase's load: every value runs
        // all the phases.
        let sweep = phase_sweep.or(sweep);
        self.unique_data(&data, &raw.data, &load, sweep.as_ref(), &phases)?;
        if target.request_phases {
            self.request_phase_metrics(&mut metrics)?;
        }
        let thresholds = match raw.thresholds {
            Some(t) => self.thresholds(t, &step_names, &metrics, &scenarios, &groups)?,
            None => Thresholds::default(),
        };
        let experiment = match raw.experiment {
            Some(e) => Some(self.experiment(e)?),
            None => None,
        };
        Ok(Plan {
            name,
            target,
            load,
            sweep,
            scenarios,
            step_names,
            groups,
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
            experiment,
            overrides: Vec::new(),
        })
    }

    /// `[http]`: default headers into every step, and the target's
    /// connection, TLS, body and protocol settings.
    fn http(
        &self,
        http: RawHttp,
        target: &mut TargetSpec,
        scenarios: &mut [Spanned<RawScenario>],
    ) -> Result<(), PlanError> {
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
        for s in scenarios.iter_mut() {
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
            target.request_phases = p.into_inner();
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
        Ok(())
    }

    /// The plan's `[load]`; `None` for a plan with phases, which carry
    /// their own.
    fn main_load(
        &self,
        load: Option<Spanned<RawLoad>>,
        has_phases: bool,
    ) -> Result<Option<Spanned<RawLoad>>, PlanError> {
        match (load, has_phases) {
            (Some(l), false) => Ok(Some(l)),
            (None, true) => Ok(None),
            (Some(l), true) => {
                Err(self.error(
                    l.span(),
                    "`load`: a plan with [[phase]] gives each phase its own `load`; remove [load]",
                ))
            }
            (None, false) => {
                Err(self.error(
                    0..0,
                    "expected a [load] table (users, ramp_up, iterations, …) or [[phase]] entries with a `load` each",
                ))
            }
        }
    }

    /// The plan-wide `[[metric]]`s, checked and given ids.
    #[allow(clippy::type_complexity)]
    fn plan_metrics(
        &self,
        raw: &[Spanned<journey::RawMetric>],
    ) -> Result<(Vec<MetricSpec>, Vec<(journey::CheckedMetric, u32)>), PlanError> {
        let mut metrics: Vec<MetricSpec> = Vec::new();
        let mut plan_metrics = Vec::with_capacity(raw.len());
        for m in raw {
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
        Ok((metrics, plan_metrics))
    }

    /// The scenarios and their steps; the steps' names in order of first
    /// use (a name used twice is one step of the results).
    fn scenarios(
        &self,
        raw: Vec<Spanned<RawScenario>>,
        target: &TargetSpec,
        vars: &HashMap<String, String>,
        data: &[DataSpec],
        plan_metrics: &[(journey::CheckedMetric, u32)],
        metrics: &mut Vec<MetricSpec>,
    ) -> Result<Journeys, PlanError> {
        let mut groups = Vec::new();
        let groups = &mut groups;
        let columns: HashSet<String> = data
            .iter()
            .flat_map(|d| d.columns.iter().map(move |c| format!("{}.{c}", d.name)))
            .collect();
        let mut step_ids: HashMap<String, usize> = HashMap::new();
        let mut step_names = Vec::new();
        let mut seen = HashMap::new();
        let mut scenarios = Vec::with_capacity(raw.len());
        for s in raw {
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
                vars,
                columns: &columns,
                extracted: HashSet::new(),
                later: s
                    .step
                    .iter()
                    .flat_map(|st| st.get_ref().extract_names())
                    .collect(),
                lists: HashSet::new(),
                inside: HashMap::new(),
                // A `unique` file's rows are dealt to their users' agents:
                // no agent holds them all, so no `for_each` walks them.
                data_rows: data
                    .iter()
                    .filter(|d| d.mode != v1::DataMode::Unique)
                    .map(|d| (d.name.clone(), d.rows.len() as u64))
                    .collect(),
            };
            let mut b = flow::Build::new(
                target,
                think.as_ref(),
                plan_metrics,
                metrics,
                &mut step_ids,
                &mut step_names,
                groups,
            );
            let bound = self.flow_steps(s.step, &mut b, &mut scope, 0)?;
            let flows = b.flows;
            let (steps, program, tree) = (b.steps, b.program, b.tree);
            scenarios.push(ScenarioSpec {
                name: sname,
                weight,
                steps,
                program: if flows { program } else { Vec::new() },
                tree,
                max_requests: bound.requests,
                longest: bound.time,
                on_error,
                pacing: s.pacing.map(|p| p.into_inner().0).unwrap_or_default(),
            });
        }
        Ok((scenarios, step_names, std::mem::take(groups)))
    }

    /// `[[phase]]`s: each a load of its own over some of the scenarios.
    fn phases(
        &self,
        raw: Vec<Spanned<RawPhase>>,
        scenarios: &[ScenarioSpec],
        timeout: Duration,
    ) -> Result<(Vec<Phase>, Option<super::Sweep>), PlanError> {
        let mut phases = Vec::with_capacity(raw.len());
        let mut swept: Option<super::Sweep> = None;
        for ph in raw {
            let ph_span = ph.span();
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
            let load_span = ph.load.as_ref().map_or(ph_span.clone(), Spanned::span);
            let (indices, load, sweep, max_duration, throttle_per_s) = match (ph.loads, ph.load) {
                (Some(loads), top) => {
                    if let Some(list) = &ph.scenarios {
                        return Err(self.error(
                            list.span(),
                            format!(
                                "phase \"{name}\" `scenarios`: a phase with `loads` runs the scenarios named there; remove `scenarios`"
                            ),
                        ));
                    }
                    let (indices, loads) = self.phase_loads(&name, loads, scenarios, timeout)?;
                    let (max_duration, throttle) = self.run_wide(top, &loads)?;
                    (
                        indices,
                        LoadModel::Scenarios(loads),
                        None,
                        max_duration,
                        throttle,
                    )
                }
                (None, Some(l)) => {
                    let (load, sweep, max_duration, throttle) = self.load_of(l, timeout)?;
                    (indices, load, sweep, max_duration, throttle)
                }
                (None, None) => {
                    return Err(self.error(
                        ph_span,
                        format!(
                            "phase \"{name}\": expected a `load` ([phase.load]) or a load per scenario ([phase.loads.NAME])"
                        ),
                    ));
                }
            };
            if let Some(s) = sweep {
                if let Some(first) = &swept {
                    let other = first
                        .phase
                        .and_then(|i| phases.get(i))
                        .map_or("", |p: &Phase| p.name.as_str());
                    return Err(self.error(
                        load_span,
                        format!(
                            "phase \"{name}\" `load`: phase \"{other}\" already sweeps its load; one phase of a plan may (every value runs all the phases)"
                        ),
                    ));
                }
                swept = Some(super::Sweep {
                    phase: Some(phases.len()),
                    ..s
                });
            }
            phases.push(Phase {
                name,
                scenarios: indices,
                load,
                max_duration,
                throttle_per_s,
            });
        }
        Ok((phases, swept))
    }

    /// Files uploaded by multipart steps go to every agent with each step
    /// that sends them: all together they are bounded.
    fn upload_bound(&self, scenarios: &[ScenarioSpec]) -> Result<(), PlanError> {
        let total: usize = scenarios
            .iter()
            .flat_map(|s| &s.steps)
            .map(|st| match &st.wire.body {
                Some(v1::step::Body::Multipart(m)) => m.parts.iter().map(|p| p.content.len()).sum(),
                _ => 0,
            })
            .sum();
        let max = super::journey::MAX_UPLOAD_BYTES;
        if total > max {
            return Err(self.error(
                0..0,
                format!(
                    "the plan's multipart steps upload {total} bytes of files in all (each step's files counted once per step), above the {} MiB a plan may upload",
                    max >> 20
                ),
            ));
        }
        Ok(())
    }

    /// A phase's load per scenario (`[phase.loads.NAME]`): the plan's
    /// indices of the scenarios it runs (in the plan's order) and their
    /// loads, each numbered by its place among them (the phase's own run
    /// holds only those scenarios).
    fn phase_loads(
        &self,
        phase: &str,
        loads: Spanned<std::collections::BTreeMap<String, Spanned<RawScenarioLoad>>>,
        scenarios: &[ScenarioSpec],
        timeout: Duration,
    ) -> Result<(Vec<usize>, Vec<super::ScenarioLoad>), PlanError> {
        let span = loads.span();
        let loads = loads.into_inner();
        let mut named = Vec::with_capacity(loads.len());
        for (name, l) in &loads {
            let Some(i) = scenarios.iter().position(|s| s.name == name.trim()) else {
                let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
                return Err(self.error(
                    l.span(),
                    format!(
                        "phase \"{phase}\" `loads`: no scenario is named \"{name}\"; expected one of {names:?}"
                    ),
                ));
            };
            named.push((i, name, l));
        }
        if named.is_empty() {
            return Err(self.error(
                span,
                format!("phase \"{phase}\" `loads`: expected at least one scenario's load"),
            ));
        }
        named.sort_by_key(|(i, _, _)| *i);
        let indices: Vec<usize> = named.iter().map(|(i, _, _)| *i).collect();
        let mut out = Vec::with_capacity(named.len());
        for (k, (_, name, l)) in named.into_iter().enumerate() {
            out.push(self.scenario_load(k, name.trim().to_string(), l, timeout)?);
        }
        Ok((indices, out))
    }

    /// Data in mode "unique" binds rows to users: it needs the closed
    /// model, and one row for every user of the largest run.
    fn unique_data(
        &self,
        data: &[DataSpec],
        raw: &[Spanned<journey::RawData>],
        load: &LoadModel,
        sweep: Option<&Sweep>,
        phases: &[Phase],
    ) -> Result<(), PlanError> {
        // Unique rows bind to users: every user of the largest run needs one.
        let most_users = match sweep {
            Some(sw) if matches!(load, LoadModel::Closed { .. }) => {
                sw.values.iter().fold(0.0f64, |a, &b| a.max(b)) as u64
            }
            _ => phases
                .iter()
                .map(|p| p.load.peak_users())
                .fold(load.peak_users(), u64::max),
        };
        for (d, raw_d) in data.iter().zip(raw) {
            if d.mode != v1::DataMode::Unique {
                continue;
            }
            if load.is_open() || phases.iter().any(|p| p.load.is_open()) {
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
        Ok(())
    }

    /// `[experiment]`: arms with names and set-up commands, and the
    /// design's settings.
    fn experiment(&self, raw: Spanned<RawExperiment>) -> Result<ExperimentSpec, PlanError> {
        let span = raw.span();
        let e = raw.into_inner();
        let mut arms: Vec<(String, String)> = Vec::new();
        for a in &e.arm {
            let a = a.get_ref();
            let name = a.name.get_ref().trim().to_string();
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(self.error(
                    a.name.span(),
                    "experiment arm `name`: expected letters, digits, `-` or `_` (it names run directories)",
                ));
            }
            if arms.iter().any(|(n, _)| *n == name) {
                return Err(self.error(
                    a.name.span(),
                    format!(
                        "experiment arm `name`: \"{name}\" is used twice; expected unique names"
                    ),
                ));
            }
            if a.setup.get_ref().trim().is_empty() {
                return Err(self.error(
                    a.setup.span(),
                    "experiment arm `setup`: expected a shell command that puts the system in this arm's configuration",
                ));
            }
            arms.push((name, a.setup.get_ref().clone()));
        }
        if arms.len() == 1 {
            return Err(self.error(
                span,
                "[experiment]: expected two or more [[experiment.arm]] entries (the first is the baseline)",
            ));
        }
        if let Some(r) = &e.runs
            && *r.get_ref() < 2
        {
            return Err(self.error(
                r.span(),
                "experiment `runs`: expected at least 2 (an interval needs two runs of each arm)",
            ));
        }
        if let Some(o) = &e.order
            && !matches!(o.get_ref().as_str(), "balanced" | "random")
        {
            return Err(self.error(
                o.span(),
                format!(
                    "experiment `order`: expected \"balanced\" or \"random\", found \"{}\"",
                    o.get_ref()
                ),
            ));
        }
        if let Some(m) = &e.margin
            && !(*m.get_ref() > 0.0 && *m.get_ref() <= 100.0)
        {
            return Err(self.error(
                m.span(),
                "experiment `margin`: expected a percentage above 0, at most 100",
            ));
        }
        Ok(ExperimentSpec {
            arms,
            runs: e.runs.map(|r| r.into_inner() as usize),
            warm_up: e.warm_up.map(|d| d.into_inner().0),
            settle: e.settle.map(|d| d.into_inner().0),
            setup_timeout: e.setup_timeout.map(|d| d.into_inner().0),
            order: e.order.map(Spanned::into_inner),
            seed: e.seed,
            margin_pct: e.margin.map(Spanned::into_inner),
        })
    }

    /// `[http] phases = true`: each request phase is a metric of its own.
    fn request_phase_metrics(&self, metrics: &mut Vec<MetricSpec>) -> Result<(), PlanError> {
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
        Ok(())
    }

    /// The id of metric `m`: a name read in several places is one metric,
    /// so it must have one unit and scale.
    pub(super) fn metric_id(
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
    pub(super) fn step_metrics(
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

    pub(super) fn thresholds(
        &self,
        raw: RawThresholds,
        step_names: &[String],
        metrics: &[MetricSpec],
        scenarios: &[ScenarioSpec],
        groups: &[bool],
    ) -> Result<Thresholds, PlanError> {
        let mut rules = Vec::new();
        let rule = |text: &Spanned<String>,
                    step: Option<usize>|
         -> Result<crate::thresholds::Rule, PlanError> {
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
            Ok(r)
        };
        for t in &raw.overall {
            rules.push(rule(t, None)?);
        }
        for (name, list) in &raw.steps {
            let Some(id) = step_names.iter().position(|n| n == name) else {
                return Err(self.error(
                    list.span(),
                    format!("`thresholds.steps`: no step is named \"{name}\"; expected one of {step_names:?}"),
                ));
            };
            for t in list.get_ref() {
                rules.push(rule(t, Some(id))?);
            }
        }
        for (name, list) in &raw.scenarios {
            let Some(sc) = scenarios.iter().find(|s| s.name == *name) else {
                let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
                return Err(self.error(
                    list.span(),
                    format!(
                        "`thresholds.scenarios`: no scenario is named \"{name}\"; expected one of {names:?}"
                    ),
                ));
            };
            for t in list.get_ref() {
                let mut r = rule(t, None)?;
                if matches!(
                    r.metric,
                    crate::thresholds::Metric::AgentCpu | crate::thresholds::Metric::AgentLag
                ) {
                    return Err(self.error(
                        t.span(),
                        format!(
                            "`thresholds.scenarios`: in \"{}\": the generators' health is not a scenario's; put it in `overall`",
                            t.get_ref()
                        ),
                    ));
                }
                r.scenario = Some(crate::thresholds::ScenarioScope {
                    name: name.clone(),
                    steps: sc.request_steps(groups),
                });
                rules.push(r);
            }
        }
        Ok(Thresholds {
            rules,
            abort_on_fail: raw.abort_on_fail,
            grace: raw.grace.map(|g| g.into_inner().0).unwrap_or_default(),
        })
    }

    pub(super) fn target(&self, raw: Spanned<RawTarget>) -> Result<TargetSpec, PlanError> {
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
            request_phases: false,
            version: v1::HttpVersion::Auto,
        })
    }

    /// `http.body_limit`: bytes, from a number or "512KiB"/"8MiB"/"1MB".
    pub(super) fn body_limit(&self, v: &Spanned<toml::Value>) -> Result<u64, PlanError> {
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
    pub(super) fn ca_file(&self, f: &Spanned<String>) -> Result<String, PlanError> {
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
}

pub(super) fn http_header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn http_header_value_ok(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The dotted key whose value starts at `offset` (`load.users`), read from
/// the line's `key =` and the nearest table header above it.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
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
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const TARGET: &str = "[target]\nbase_url = \"http://127.0.0.1:8080\"\n";
    const LOAD: &str = "[load]\nusers = 2\nramp_up = \"1s\"\niterations = 1\n";
    const SCENARIO: &str = "[[scenario]]\nname = \"s\"\n[[scenario.step]]\npath = \"/\"\n";

    /// The error for `text`, as `line:column: message`.
    fn error(text: &str) -> String {
        let e = parse("p.toml", text, "p").expect_err("the plan should be refused");
        assert_eq!(e.file, "p.toml");
        format!("{}:{}: {}", e.line, e.column, e.message)
    }

    #[test]
    fn a_minimal_plan_is_one_scenario_of_one_step() {
        let plan = parse("p.toml", &format!("{TARGET}{LOAD}{SCENARIO}"), "p").unwrap();
        assert_eq!(plan.name, "p");
        assert_eq!(plan.scenarios.len(), 1);
        assert_eq!(plan.step_names, ["GET /"]);
        assert!(!plan.target.request_phases);
    }

    #[test]
    fn http_settings_are_checked_where_they_are_written() {
        let e = error(&format!(
            "{TARGET}[http]\nconnections = \"pooled\"\n{LOAD}{SCENARIO}"
        ));
        assert_eq!(
            e,
            "4:15: `http.connections`: expected \"per_user\", \"per_iteration\" or \"per_request\", found \"pooled\""
        );
        let https = TARGET.replace("http://", "https://");
        let e = error(&format!(
            "{https}[http]\nversion = \"h2c\"\n{LOAD}{SCENARIO}"
        ));
        assert!(e.starts_with("4:11: `http.version`: \"h2c\""), "{e}");
        let e = error(&format!(
            "{TARGET}[http]\naccept_encoding = \"gzip\"\nheaders = {{ \"accept-encoding\" = \"br\" }}\n{LOAD}{SCENARIO}"
        ));
        assert!(
            e.contains("`http.headers` sets `accept-encoding` too"),
            "{e}"
        );
    }

    #[test]
    fn a_plan_has_one_load_or_phases_with_their_own() {
        let e = error(&format!("{TARGET}{SCENARIO}"));
        assert!(e.starts_with("1:1: expected a [load] table"), "{e}");
        let phase = "[[phase]]\nname = \"warm\"\n[phase.load]\nusers = 1\nramp_up = \"1s\"\niterations = 1\n";
        let e = error(&format!("{TARGET}{LOAD}{phase}{SCENARIO}"));
        assert!(e.starts_with("3:1: `load`: a plan with [[phase]]"), "{e}");
        let plan = parse("p.toml", &format!("{TARGET}{phase}{SCENARIO}"), "p").unwrap();
        assert_eq!(plan.phases.len(), 1);
        assert_eq!(plan.phases[0].scenarios, [0]);
    }

    #[test]
    fn scenarios_need_unique_names_and_a_positive_weight() {
        let e = error(&format!("{TARGET}{LOAD}{SCENARIO}{SCENARIO}"));
        assert_eq!(
            e,
            "12:8: scenario `name`: \"s\" is used twice; expected unique names"
        );
        let e = error(&format!(
            "{TARGET}{LOAD}[[scenario]]\nname = \"s\"\nweight = 0\n[[scenario.step]]\npath = \"/\"\n"
        ));
        assert_eq!(
            e,
            "9:10: scenario `weight`: expected an integer of at least 1"
        );
    }

    #[test]
    fn a_phase_names_existing_scenarios_and_runs_one_load() {
        let phase = |scenarios: &str, users: &str| {
            format!(
                "[[phase]]\nname = \"p1\"\n{scenarios}[phase.load]\nusers = {users}\nramp_up = \"1s\"\niterations = 1\n"
            )
        };
        let e = error(&format!(
            "{TARGET}{}{SCENARIO}",
            phase("scenarios = [\"nope\"]\n", "1")
        ));
        assert!(
            e.starts_with("5:14: phase \"p1\" `scenarios`: no scenario is named \"nope\""),
            "{e}"
        );
        // One phase may sweep its load: every value runs all the phases.
        let warm = "[[phase]]\nname = \"warm\"\n[phase.load]\nusers = 1\niterations = 1\n";
        let swept = format!(
            "{TARGET}{warm}{}{SCENARIO}",
            phase("", "[1, 2]").replace("\"p1\"", "\"test\"")
        );
        let p = parse("p.toml", &swept, "p").unwrap();
        let sweep = p.sweep.clone().unwrap();
        assert_eq!((sweep.values, sweep.phase), (vec![1.0, 2.0], Some(1)));
        let at = p.at(2.0);
        assert_eq!(at.phases[1].load.peak_users(), 2);
        assert_eq!(at.phases[0].load.peak_users(), 1, "the warm-up as written");
        assert!(at.sweep.is_none());
        let two = format!(
            "{TARGET}{}{}{SCENARIO}",
            phase("", "[1, 2]"),
            phase("", "[3, 4]").replace("\"p1\"", "\"p2\"")
        );
        let e = error(&two);
        assert!(e.contains("phase \"p1\" already sweeps its load"), "{e}");
    }

    #[test]
    fn unique_data_needs_fixed_users_and_a_row_for_each() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("u.csv"), "name\na\n").unwrap();
        let file = dir.path().join("p.toml");
        let data = "[[data]]\nname = \"u\"\nfile = \"u.csv\"\nmode = \"unique\"\n";
        let e = parse(
            file.to_str().unwrap(),
            &format!("{TARGET}{LOAD}{SCENARIO}{data}"),
            "p",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (11, 1));
        assert_eq!(
            e.message,
            "data \"u\": mode \"unique\" needs one row per user: 1 rows for 2 users"
        );
        let open = "[load]\nrate = 10\nduration = \"1s\"\nmax_users = 2\n";
        let e = parse(
            file.to_str().unwrap(),
            &format!("{TARGET}{open}{SCENARIO}{data}"),
            "p",
        )
        .unwrap_err();
        assert!(
            e.message.contains("the open model has no fixed users"),
            "{e}"
        );
    }

    #[test]
    fn a_for_each_walks_a_shared_data_column_but_not_a_unique_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("u.csv"), "name\na\nb\n").unwrap();
        let file = dir.path().join("p.toml");
        let walk = "[[scenario.step]]\nfor_each = \"u.name\"\nas = \"n\"\n  [[scenario.step.step]]\n  path = \"/${n}\"\n";
        let plan = |mode: &str| {
            format!(
                "{TARGET}{LOAD}[[scenario]]\nname = \"s\"\n{walk}[[data]]\nname = \"u\"\nfile = \"u.csv\"\nmode = \"{mode}\"\n"
            )
        };
        let p = parse(file.to_str().unwrap(), &plan("sequential"), "p").unwrap();
        assert_eq!(p.scenarios[0].max_requests, Some(2), "one pass per row");
        let e = parse(file.to_str().unwrap(), &plan("unique"), "p").unwrap_err();
        assert!(e.message.contains("is a `unique` data file"), "{e}");
    }

    #[test]
    fn request_phases_become_metrics_whose_names_are_taken() {
        let plan = parse(
            "p.toml",
            &format!("{TARGET}[http]\nphases = true\n{LOAD}{SCENARIO}"),
            "p",
        )
        .unwrap();
        assert!(plan.target.request_phases);
        let names: Vec<&str> = plan.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, loadfleet_agent::assignment::PHASE_METRICS);
        let e = error(&format!(
            "{TARGET}[http]\nphases = true\n{LOAD}{SCENARIO}[[metric]]\nname = \"http_wait\"\nheader = \"x-t\"\n"
        ));
        assert!(
            e.contains("metric `http_wait`: the name of a request phase"),
            "{e}"
        );
    }
}
