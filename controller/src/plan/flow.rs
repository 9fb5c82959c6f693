//! A journey's control flow: the blocks a `[[scenario.step]]` may be
//! instead of a request (`group`, `repeat`, `while`, `during`, `if`/`else`,
//! `for_each`, `once`, `one_of`, `in_turn`, `percent`) and the `set`s of
//! variables, checked and compiled once into the flat program agents run
//! (`v1::Op`), with the indented tree `loadfleet validate --explain` prints
//! and each scenario's bounds (most requests, longest time per iteration).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use loadfleet_proto::v1;
use toml::Spanned;

use super::journey::{CheckedMetric, MetricSpec, RawStep, Scope};
use super::{PlanError, StepSpec, TargetSpec, Validator};

/// The most passes a loop may be given (`repeat`, `max_loops`).
pub const MAX_LOOPS: u64 = 1_000_000;

/// The deepest blocks may nest (the checks recurse once per level).
pub const MAX_NESTING: usize = 32;

/// Passes assumed for a `for_each` over an extraction's matches when the
/// plan's time bound is estimated (the list's length is known only when
/// the response comes).
const ASSUMED_MATCHES: u64 = 100;

/// What a scenario's compilation keeps across its steps.
pub(super) struct Build<'p> {
    pub target: &'p TargetSpec,
    pub default_think: Option<&'p v1::Think>,
    pub plan_metrics: &'p [(CheckedMetric, u32)],
    pub metrics: &'p mut Vec<MetricSpec>,
    /// Every row's id by name, its names in order, and whether each is a
    /// group (plan-wide: a name used twice is one row).
    pub ids: &'p mut HashMap<String, usize>,
    pub names: &'p mut Vec<String>,
    pub groups: &'p mut Vec<bool>,
    pub steps: Vec<StepSpec>,
    pub program: Vec<v1::Op>,
    pub tree: Vec<String>,
    loops: u32,
    group_slots: u32,
    turns: u32,
    /// Whether any block was compiled (a straight journey sends no program).
    pub flows: bool,
}

/// The most one part of a journey can do per iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bound {
    /// Requests; `None` when only time bounds them (`during`, or a
    /// `for_each` over matches).
    pub requests: Option<u64>,
    /// Time: each request's timeout and longest think time.
    pub time: Duration,
}

impl Bound {
    fn then(self, other: Bound) -> Bound {
        Bound {
            requests: self
                .requests
                .zip(other.requests)
                .map(|(a, b)| a.saturating_add(b)),
            time: self.time.saturating_add(other.time),
        }
    }

    fn either(self, other: Bound) -> Bound {
        Bound {
            requests: self.requests.zip(other.requests).map(|(a, b)| a.max(b)),
            time: self.time.max(other.time),
        }
    }

    fn times(self, n: u64) -> Bound {
        Bound {
            requests: self.requests.map(|r| r.saturating_mul(n)),
            time: self
                .time
                .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }
}

/// The longest a think time can be: a Gaussian one counts as its mean plus
/// six deviations (a sample beyond that is about one in a billion; the
/// agent caps samples at a day).
pub fn think_max(t: &Option<v1::Think>) -> Duration {
    use v1::think::Kind;
    match t.as_ref().and_then(|t| t.kind.as_ref()) {
        None => Duration::ZERO,
        Some(Kind::ConstantUs(us)) => Duration::from_micros(*us),
        Some(Kind::Uniform(r)) => Duration::from_micros(r.max_us.max(r.min_us)),
        Some(Kind::Gaussian(g)) => {
            Duration::from_micros(g.mean_us.saturating_add(g.deviation_us.saturating_mul(6)))
                .min(Duration::from_secs(86_400))
        }
    }
}

impl<'p> Build<'p> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: &'p TargetSpec,
        default_think: Option<&'p v1::Think>,
        plan_metrics: &'p [(CheckedMetric, u32)],
        metrics: &'p mut Vec<MetricSpec>,
        ids: &'p mut HashMap<String, usize>,
        names: &'p mut Vec<String>,
        groups: &'p mut Vec<bool>,
    ) -> Build<'p> {
        Build {
            target,
            default_think,
            plan_metrics,
            metrics,
            ids,
            names,
            groups,
            steps: Vec::new(),
            program: Vec::new(),
            tree: Vec::new(),
            loops: 0,
            group_slots: 0,
            turns: 0,
            flows: false,
        }
    }

    fn here(&self) -> u32 {
        self.program.len() as u32
    }

    fn push(&mut self, op: v1::op::Op) -> usize {
        self.program.push(v1::Op { op: Some(op) });
        self.program.len() - 1
    }

    fn line(&mut self, depth: usize, text: String) {
        self.tree.push(format!("{}{text}", "  ".repeat(depth + 1)));
    }
}

/// The control keys of a step, with their spans.
fn controls(st: &RawStep) -> Vec<(&'static str, Range<usize>)> {
    let mut out = Vec::new();
    let mut add = |k: &'static str, s: Option<Range<usize>>| {
        if let Some(s) = s {
            out.push((k, s));
        }
    };
    add("repeat", st.repeat.as_ref().map(Spanned::span));
    add("while", st.while_.as_ref().map(Spanned::span));
    add("during", st.during.as_ref().map(Spanned::span));
    add("if", st.if_.as_ref().map(Spanned::span));
    add("for_each", st.for_each.as_ref().map(Spanned::span));
    add("once", st.once.as_ref().map(Spanned::span));
    add("one_of", st.one_of.as_ref().map(Spanned::span));
    add("in_turn", st.in_turn.as_ref().map(Spanned::span));
    add("percent", st.percent.as_ref().map(Spanned::span));
    out
}

impl Validator<'_> {
    /// Steps in order, each a request or a block.
    pub(super) fn flow_steps(
        &self,
        list: Vec<Spanned<RawStep>>,
        b: &mut Build<'_>,
        scope: &mut Scope<'_>,
        depth: usize,
    ) -> Result<Bound, PlanError> {
        let mut bound = Bound {
            requests: Some(0),
            time: Duration::ZERO,
        };
        for st in list {
            bound = bound.then(self.flow_step(st, b, scope, depth, false)?);
        }
        Ok(bound)
    }

    /// One step: a request, a block, or only `set`s.
    fn flow_step(
        &self,
        st: Spanned<RawStep>,
        b: &mut Build<'_>,
        scope: &mut Scope<'_>,
        depth: usize,
        branch: bool,
    ) -> Result<Bound, PlanError> {
        let span = st.span();
        if depth > MAX_NESTING {
            return Err(self.error(
                span,
                format!("step: blocks nested more than {MAX_NESTING} deep"),
            ));
        }
        let mut st = st.into_inner();
        if let Some(w) = &st.weight
            && !branch
        {
            return Err(self.error(
                w.span(),
                "step `weight`: applies to the branches of a `one_of` block only",
            ));
        }
        let keys = controls(&st);
        if keys.len() > 1 {
            return Err(self.error(
                keys[1].1.clone(),
                format!(
                    "step: `{}` and `{}` in one step; expected one control key per step (nest one block in the other)",
                    keys[0].0, keys[1].0
                ),
            ));
        }
        let control = keys.first().cloned();
        if st.is_request() {
            if let Some((k, s)) = control
                .clone()
                .or_else(|| st.group.as_ref().map(|g| ("group", g.span())))
                .or_else(|| st.step.first().map(|c| ("step", c.span())))
            {
                return Err(self.error(
                    s,
                    format!(
                        "step: a request (`path` or `url`) cannot also be a block (`{k}`); expected the request inside the block's [[...step]]"
                    ),
                ));
            }
            return self.flow_request(st, span, b, scope, depth);
        }
        for (key, s) in [
            ("max_loops", st.max_loops.as_ref().map(Spanned::span)),
            ("as", st.as_.as_ref().map(Spanned::span)),
            (
                "include_think",
                st.include_think.as_ref().map(Spanned::span),
            ),
            ("else", st.else_.first().map(Spanned::span)),
        ] {
            let allowed = match key {
                "max_loops" => matches!(control, Some(("while" | "during", _))),
                "as" => matches!(control, Some(("for_each", _))),
                "else" => matches!(control, Some(("if", _))),
                _ => st.group.is_some() || matches!(control, Some(("while", _))),
            };
            if let (Some(s), false) = (s, allowed) {
                return Err(self.error(
                    s,
                    format!(
                        "step `{key}`: does not apply here; it belongs to {}",
                        match key {
                            "max_loops" => "a `while` or `during` block",
                            "as" => "a `for_each` block",
                            "else" => "an `if` block",
                            _ => "a `group` or a `while`",
                        }
                    ),
                ));
            }
        }
        if control.is_none()
            && st.group.is_none()
            && st.set.is_none()
            && st.step.is_empty()
            && let Some(t) = st.think.take()
        {
            // Only `think`: a pause of its own.
            if let Some((k, s)) = st.request_key() {
                return Err(self.error(
                    s,
                    format!("step `{k}`: a step without `path` or `url` sends no request"),
                ));
            }
            let think = self.think(&t, "step `think`")?;
            b.line(depth, format!("pause {}", t.get_ref().trim()));
            let time = think_max(&Some(think));
            b.push(v1::op::Op::Pause(think));
            b.flows = true;
            return Ok(Bound {
                requests: Some(0),
                time,
            });
        }
        if control.is_none() && st.group.is_none() {
            if let Some(set) = st.set.take() {
                if let Some(c) = st.step.first() {
                    return Err(self.error(
                        c.span(),
                        "step: nested steps need a block key (`group`, `repeat`, `if`...)",
                    ));
                }
                if let Some((k, s)) = st.request_key() {
                    return Err(self.error(
                        s,
                        format!("step `{k}`: a step without `path` or `url` sends no request"),
                    ));
                }
                self.flow_sets(&set, b, scope, depth, None)?;
                b.flows = true;
                return Ok(Bound {
                    requests: Some(0),
                    time: Duration::ZERO,
                });
            }
            return Err(self.error(
                span,
                "step: expected a `path` (or an absolute `url`) for a request, a block (`group`, `repeat`, `while`, `during`, `if`, `for_each`, `once`, `one_of`, `in_turn`, `percent`) with nested [[...step]]s, only `set`, or only `think` (a pause)",
            ));
        }
        if let Some((k, s)) = st.request_key() {
            return Err(self.error(
                s,
                format!(
                    "step `{k}`: a block sends no request itself; expected `{k}` on a request inside it"
                ),
            ));
        }
        if let Some(s) = &st.set {
            return Err(self.error(
                s.span(),
                "step `set`: a block does not set variables; expected a step of its own with only `set`",
            ));
        }
        if st.step.is_empty() {
            let what = control.as_ref().map_or("group", |c| c.0);
            return Err(self.error(
                span,
                format!("`{what}` block: expected at least one nested [[...step]]"),
            ));
        }
        b.flows = true;
        self.flow_block(st, span, control, b, scope, depth)
    }

    fn flow_request(
        &self,
        mut st: RawStep,
        span: Range<usize>,
        b: &mut Build<'_>,
        scope: &mut Scope<'_>,
        depth: usize,
    ) -> Result<Bound, PlanError> {
        let own = std::mem::take(&mut st.metric);
        let set = st.set.take();
        let (name, mut wire) =
            self.journey_step(st, span.clone(), b.target, scope, b.default_think)?;
        wire.metrics = self.step_metrics(&own, b.plan_metrics, b.metrics)?;
        let id = match b.ids.get(&name) {
            Some(&id) if b.groups[id] => {
                return Err(self.error(
                    span,
                    format!("step \"{name}\": a group has this name; expected a name of its own"),
                ));
            }
            Some(&id) => id,
            None => {
                b.names.push(name.clone());
                b.groups.push(false);
                b.ids.insert(name.clone(), b.names.len() - 1);
                b.names.len() - 1
            }
        };
        wire.id = id as u32;
        let time = b
            .target
            .timeout
            .saturating_add(super::flow::think_max(&wire.think));
        b.line(depth, name.clone());
        if let Some(set) = &set {
            wire.set = self.flow_sets(set, b, scope, depth + 1, Some(()))?;
        }
        let index = b.steps.len() as u32;
        b.steps.push(StepSpec { id, name, wire });
        b.push(v1::op::Op::Request(index));
        Ok(Bound {
            requests: Some(1),
            time,
        })
    }

    /// A step's `set`s: on a request they go with it (returned), on a step
    /// of their own they are ops.
    fn flow_sets(
        &self,
        set: &Spanned<BTreeMap<String, Spanned<String>>>,
        b: &mut Build<'_>,
        scope: &mut Scope<'_>,
        depth: usize,
        on_request: Option<()>,
    ) -> Result<Vec<v1::SetVar>, PlanError> {
        if set.get_ref().is_empty() {
            return Err(self.error(
                set.span(),
                "`set`: expected at least one `name = \"expression\"`",
            ));
        }
        let mut out = Vec::new();
        for (name, e) in set.get_ref() {
            let name = name.trim();
            if !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                || name.is_empty()
                || name.starts_with("__")
            {
                return Err(self.error(
                    e.span(),
                    format!("`set` `{name}`: expected a name of letters, digits, `_` and `-` (not starting with `__`, kept for built-ins)"),
                ));
            }
            if scope.vars.contains_key(name) {
                return Err(self.error(
                    e.span(),
                    format!("`set` `{name}`: a [vars] constant has this name; expected another"),
                ));
            }
            let expression = self.expression(e, &format!("`set` `{name}`"), scope, false)?;
            scope.extracted.insert(name.to_string());
            b.line(depth, format!("set {name} = {}", e.get_ref().trim()));
            let sv = v1::SetVar {
                name: name.to_string(),
                expression,
            };
            match on_request {
                Some(()) => out.push(sv),
                None => {
                    b.push(v1::op::Op::Set(sv));
                }
            }
        }
        Ok(out)
    }

    /// Checks an expression (a condition when `condition`): its variables
    /// are set before it, its types agree. `[vars]` constants go in as
    /// literals. Returns the text agents compile.
    fn expression(
        &self,
        e: &Spanned<String>,
        what: &str,
        scope: &Scope<'_>,
        condition: bool,
    ) -> Result<String, PlanError> {
        let text = e.get_ref();
        let span = e.span();
        let at = |i: usize| self.inner(&span, i);
        let fail = |err: loadfleet_agent::expr::ExprError| {
            self.error(
                at(err.at),
                format!("{what}: `{}`: {}", text.trim(), err.message),
            )
        };
        let names = loadfleet_agent::expr::expr_vars(text).map_err(fail)?;
        // Constants become literals, from the end so offsets hold.
        let mut out = text.clone();
        for (offset, name) in names.iter().rev() {
            match super::journey::resolve(name, scope) {
                Err(msg) => return Err(self.error(at(*offset), format!("{what}: {msg}"))),
                Ok(None) => {}
                Ok(Some(value)) => {
                    if !text[*offset..].starts_with("${") {
                        return Err(self.error(
                            at(*offset),
                            format!("{what}: `{name}` is a constant; it always exists"),
                        ));
                    }
                    let end = offset + text[*offset..].find('}').map_or(0, |e| e + 1);
                    let literal = if value.trim().parse::<i64>().is_ok() {
                        value.trim().to_string()
                    } else {
                        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
                    };
                    out.replace_range(*offset..end, &literal);
                }
            }
        }
        let check = |t: &str| {
            let mut vars = loadfleet_agent::template::VarTable::default();
            if condition {
                loadfleet_agent::expr::Expr::condition(t, &mut vars)
            } else {
                loadfleet_agent::expr::Expr::parse(t, &mut vars)
            }
        };
        check(text).map_err(fail)?;
        if out != *text {
            check(&out).map_err(|err| {
                self.error(
                    span.clone(),
                    format!(
                        "{what}: with [vars] put in, `{}`: {}",
                        out.trim(),
                        err.message
                    ),
                )
            })?;
        }
        Ok(out)
    }

    /// A group's row: its id (a name used by a request is refused).
    fn group_row(
        &self,
        name: &str,
        span: Range<usize>,
        b: &mut Build<'_>,
    ) -> Result<usize, PlanError> {
        match b.ids.get(name) {
            Some(&id) if !b.groups[id] => Err(self.error(
                span,
                format!(
                    "`group` \"{name}\": a request step has this name; expected a name of its own"
                ),
            )),
            Some(&id) => Ok(id),
            None => {
                b.names.push(name.to_string());
                b.groups.push(true);
                b.ids.insert(name.to_string(), b.names.len() - 1);
                Ok(b.names.len() - 1)
            }
        }
    }

    /// Compiles a body that may not run: what it sets is not visible
    /// after it.
    fn flow_maybe(
        &self,
        list: Vec<Spanned<RawStep>>,
        b: &mut Build<'_>,
        scope: &mut Scope<'_>,
        depth: usize,
        words: &str,
    ) -> Result<Bound, PlanError> {
        let before = scope.extracted.clone();
        let lists = scope.lists.clone();
        let bound = self.flow_steps(list, b, scope, depth)?;
        for name in scope.extracted.difference(&before) {
            scope
                .inside
                .entry(name.clone())
                .or_insert_with(|| words.to_string());
        }
        for name in scope.lists.difference(&lists) {
            scope
                .inside
                .entry(name.clone())
                .or_insert_with(|| words.to_string());
        }
        scope.extracted = before;
        scope.lists = lists;
        Ok(bound)
    }

    fn flow_block(
        &self,
        st: RawStep,
        span: Range<usize>,
        control: Option<(&'static str, Range<usize>)>,
        b: &mut Build<'_>,
        scope: &mut Scope<'_>,
        depth: usize,
    ) -> Result<Bound, PlanError> {
        let (line, column) = super::validate::line_column(self.text, span.start);
        let words = |k: &str| format!("the `{k}` block at {line}:{column}");
        let max_loops = |what: &str| -> Result<Option<u64>, PlanError> {
            match &st.max_loops {
                Some(m) if *m.get_ref() == 0 || *m.get_ref() > MAX_LOOPS => Err(self.error(
                    m.span(),
                    format!("`{what}` `max_loops`: expected 1 to {MAX_LOOPS}"),
                )),
                Some(m) => Ok(Some(*m.get_ref())),
                None => Ok(None),
            }
        };
        // A group around the block: named by `group`, or (for a loop that
        // can hit its bound) by the loop itself, so its hits have a row.
        let default_row = match &control {
            Some(("while", _)) => st
                .while_
                .as_ref()
                .map(|w| format!("while {}", w.get_ref().trim())),
            Some(("during", _)) if st.max_loops.is_some() => st
                .during
                .as_ref()
                .map(|d| format!("during {}", crate::duration::format_duration(d.get_ref().0))),
            _ => None,
        };
        let row = match (&st.group, default_row) {
            (Some(g), _) => {
                let name = g.get_ref().trim().to_string();
                if name.is_empty() {
                    return Err(self.error(g.span(), "`group`: expected a non-empty name"));
                }
                Some((self.group_row(&name, g.span(), b)?, name))
            }
            (None, Some(name)) => Some((self.group_row(&name, span.clone(), b)?, name)),
            (None, None) => None,
        };
        let mut depth = depth;
        let group_slot = match &row {
            Some((id, name)) => {
                let slot = b.group_slots;
                b.group_slots += 1;
                let include_think = st.include_think.as_ref().is_some_and(|i| *i.get_ref());
                b.push(v1::op::Op::GroupBegin(v1::GroupBegin {
                    slot,
                    step: *id as u32,
                    include_think,
                }));
                b.line(
                    depth,
                    format!(
                        "group \"{name}\"{}",
                        if include_think {
                            " (think time included)"
                        } else {
                            ""
                        }
                    ),
                );
                if control.is_some() {
                    depth += 1;
                }
                Some((slot, *id))
            }
            None => None,
        };
        let body = st.step;
        let bound = match control {
            None => self.flow_steps(body, b, scope, depth + 1)?,
            Some(("repeat", s)) => {
                let n = st.repeat.as_ref().map_or(1, |r| *r.get_ref());
                if n == 0 || n > MAX_LOOPS {
                    return Err(
                        self.error(s, format!("`repeat`: expected 1 to {MAX_LOOPS} passes"))
                    );
                }
                b.line(depth, format!("repeat {n} times"));
                let inner = self.flow_loop(b, None, n, None, 0, |v, b| {
                    v.flow_steps(body, b, scope, depth + 1)
                })?;
                inner.times(n)
            }
            Some(("while", s)) => {
                let cond = st.while_.as_ref().expect("while");
                let Some(max) = max_loops("while")? else {
                    return Err(self.error(
                        s,
                        "`while` block: expected `max_loops`, the most passes (e.g. max_loops = 100); a loop without a bound could run for ever",
                    ));
                };
                let text = self.expression(cond, "`while`", scope, true)?;
                b.line(
                    depth,
                    format!("while {} (at most {max} passes)", cond.get_ref().trim()),
                );
                let bound_step = group_slot.map_or(0, |(_, id)| id as u32 + 1);
                let w = words("while");
                let inner = self.flow_loop(b, Some(text), max, None, bound_step, |v, b| {
                    v.flow_maybe(body, b, scope, depth + 1, &w)
                })?;
                inner.times(max)
            }
            Some(("during", s)) => {
                let d = st.during.as_ref().expect("during").get_ref().0;
                if d.is_zero() {
                    return Err(self.error(s, "`during`: expected a duration above 0"));
                }
                let max = max_loops("during")?;
                b.line(
                    depth,
                    format!(
                        "during {}{}",
                        crate::duration::format_duration(d),
                        max.map_or(String::new(), |m| format!(" (at most {m} passes)"))
                    ),
                );
                let bound_step = group_slot.map_or(0, |(_, id)| id as u32 + 1);
                let w = words("during");
                let inner =
                    self.flow_loop(b, None, max.unwrap_or(0), Some(d), bound_step, |v, b| {
                        v.flow_maybe(body, b, scope, depth + 1, &w)
                    })?;
                // A pass that began before the time was up runs to its end.
                Bound {
                    requests: max.and_then(|m| inner.times(m).requests),
                    time: d.saturating_add(inner.time),
                }
            }
            Some(("if", _)) => {
                let cond = st.if_.as_ref().expect("if");
                let text = self.expression(cond, "`if`", scope, true)?;
                b.line(depth, format!("if {}", cond.get_ref().trim()));
                let test = b.push(v1::op::Op::Unless(v1::Branch {
                    condition: text,
                    to: 0,
                }));
                let then = self.flow_maybe(body, b, scope, depth + 1, &words("if"))?;
                let otherwise = if st.else_.is_empty() {
                    let here = b.here();
                    set_to(&mut b.program[test], here);
                    Bound::default()
                } else {
                    let jump = b.push(v1::op::Op::Jump(0));
                    let here = b.here();
                    set_to(&mut b.program[test], here);
                    b.line(depth, "else".into());
                    let e = self.flow_maybe(st.else_, b, scope, depth + 1, &words("if"))?;
                    b.program[jump].op = Some(v1::op::Op::Jump(b.here()));
                    e
                };
                then.either(Bound {
                    requests: otherwise.requests.or(Some(0)),
                    ..otherwise
                })
            }
            Some(("for_each", s)) => {
                let list = st
                    .for_each
                    .as_ref()
                    .expect("for_each")
                    .get_ref()
                    .trim()
                    .to_string();
                let Some(item) = &st.as_ else {
                    return Err(self.error(
                        s,
                        format!("`for_each` block: expected `as`, the variable each value of `{list}` goes into"),
                    ));
                };
                let item_name = item.get_ref().trim().to_string();
                if item_name.is_empty()
                    || item_name.starts_with("__")
                    || !item_name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                {
                    return Err(self.error(
                        item.span(),
                        "`as`: expected a name of letters, digits, `_` and `-`",
                    ));
                }
                let passes = if scope.lists.contains(&list) {
                    None
                } else if scope.columns.contains(&list) {
                    let file = list.split('.').next().unwrap_or("");
                    match scope.data_rows.get(file) {
                        Some(&rows) => Some(rows),
                        None => {
                            return Err(self.error(
                                s,
                                format!("`for_each`: `{file}` is a `unique` data file: each agent holds only its own users' rows, so none can walk them all; expected `mode = \"sequential\"` or `\"random\"`"),
                            ));
                        }
                    }
                } else if scope.extracted.contains(&list) {
                    return Err(self.error(
                        s,
                        format!("`for_each`: `{list}` holds one value; expected an extraction with `match = \"all\"` (every match), or a data column `name.column`"),
                    ));
                } else if let Some(block) = scope.inside.get(&list) {
                    return Err(self.error(
                        s,
                        format!(
                            "`for_each`: `{list}` is set only inside {block}, which may not run"
                        ),
                    ));
                } else {
                    return Err(self.error(
                        s,
                        format!("`for_each`: no list `{list}`; expected an extraction with `match = \"all\"` in an earlier step, or a data column `name.column`"),
                    ));
                };
                b.line(
                    depth,
                    format!(
                        "for each {item_name} in {list}{}",
                        passes.map_or(" (every match)".to_string(), |n| format!(" ({n} rows)"))
                    ),
                );
                let slot = b.loops;
                b.loops += 1;
                b.push(v1::op::Op::LoopStart(v1::LoopStart { slot, during_us: 0 }));
                let test = b.push(v1::op::Op::LoopTest(v1::LoopTest {
                    slot,
                    list: list.clone(),
                    item: item_name.clone(),
                    ..Default::default()
                }));
                // The value is visible inside the loop only (unless it was
                // set before it).
                let was_set = !scope.extracted.insert(item_name.clone());
                let inner = self.flow_maybe(body, b, scope, depth + 1, &words("for_each"))?;
                if !was_set {
                    scope.extracted.remove(&item_name);
                }
                b.push(v1::op::Op::Jump(test as u32));
                let exit = b.here();
                if let Some(v1::op::Op::LoopTest(t)) = &mut b.program[test].op {
                    t.exit = exit;
                }
                let walked = inner.times(passes.unwrap_or(ASSUMED_MATCHES));
                Bound {
                    // A response decides how many matches there are.
                    requests: passes.and(walked.requests),
                    time: walked.time,
                }
            }
            Some(("once", s)) => {
                if !st.once.as_ref().is_some_and(|o| *o.get_ref()) {
                    return Err(self.error(s, "`once`: expected `once = true`"));
                }
                b.line(depth, "once (the user's first iteration only)".into());
                let test = b.push(v1::op::Op::Once(0));
                // What it sets stays set for the user's later iterations.
                let inner = self.flow_steps(body, b, scope, depth + 1)?;
                b.program[test].op = Some(v1::op::Op::Once(b.here()));
                inner
            }
            Some((k @ ("one_of" | "in_turn"), s)) => {
                let flag = if k == "one_of" {
                    &st.one_of
                } else {
                    &st.in_turn
                };
                if !flag.as_ref().is_some_and(|o| *o.get_ref()) {
                    return Err(self.error(s, format!("`{k}`: expected `{k} = true`")));
                }
                b.line(
                    depth,
                    if k == "one_of" {
                        "one of (at random, by weight)".into()
                    } else {
                        "in turn (one branch per pass)".into()
                    },
                );
                let choice = b.push(v1::op::Op::Jump(0));
                let slot = b.turns;
                if k == "in_turn" {
                    b.turns += 1;
                }
                let mut weights = Vec::new();
                let mut to = Vec::new();
                let mut jumps = Vec::new();
                let mut bound: Option<Bound> = None;
                let total: u64 = body
                    .iter()
                    .map(|c| u64::from(c.get_ref().weight.as_ref().map_or(1, |w| *w.get_ref())))
                    .sum();
                for child in body {
                    let w = match &child.get_ref().weight {
                        Some(w) if *w.get_ref() == 0 => {
                            return Err(self.error(w.span(), "step `weight`: expected 1 or more"));
                        }
                        Some(w) if k == "in_turn" => {
                            return Err(self.error(
                                w.span(),
                                "step `weight`: applies to the branches of a `one_of` block only",
                            ));
                        }
                        Some(w) => *w.get_ref(),
                        None => 1,
                    };
                    weights.push(w);
                    to.push(b.here());
                    if k == "one_of" {
                        b.line(
                            depth + 1,
                            format!(
                                "branch, weight {w} ({:.1}%)",
                                100.0 * f64::from(w) / total as f64
                            ),
                        );
                    } else {
                        b.line(depth + 1, "branch".into());
                    }
                    let mut child = child;
                    child.get_mut().weight = None;
                    let one = self.flow_maybe(vec![child], b, scope, depth + 2, &words(k))?;
                    bound = Some(bound.map_or(one, |acc| acc.either(one)));
                    jumps.push(b.push(v1::op::Op::Jump(0)));
                }
                let end = b.here();
                for j in jumps {
                    b.program[j].op = Some(v1::op::Op::Jump(end));
                }
                b.program[choice].op = Some(if k == "one_of" {
                    v1::op::Op::Pick(v1::Choice {
                        slot: 0,
                        weights,
                        to,
                    })
                } else {
                    v1::op::Op::Turn(v1::Choice {
                        slot,
                        weights: Vec::new(),
                        to,
                    })
                });
                bound.unwrap_or_default()
            }
            Some(("percent", s)) => {
                let p = *st.percent.as_ref().expect("percent").get_ref();
                if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
                    return Err(self.error(s, format!("`percent`: expected 0 to 100, found {p}")));
                }
                b.line(depth, format!("in {p}% of passes"));
                let slot = b.turns;
                b.turns += 1;
                let test = b.push(v1::op::Op::Percent(v1::Percent {
                    slot,
                    percent: p,
                    to: 0,
                }));
                let inner = self.flow_maybe(body, b, scope, depth + 1, &words("percent"))?;
                let end = b.here();
                if let Some(v1::op::Op::Percent(pc)) = &mut b.program[test].op {
                    pc.to = end;
                }
                inner
            }
            Some((other, s)) => {
                return Err(self.error(s, format!("`{other}`: unknown block")));
            }
        };
        if let Some((slot, _)) = group_slot {
            b.push(v1::op::Op::GroupEnd(slot));
        }
        Ok(bound)
    }

    /// A counted loop around `body`: start, test, body, jump back.
    #[allow(clippy::too_many_arguments)]
    fn flow_loop(
        &self,
        b: &mut Build<'_>,
        condition: Option<String>,
        max: u64,
        during: Option<Duration>,
        bound_step: u32,
        body: impl FnOnce(&Self, &mut Build<'_>) -> Result<Bound, PlanError>,
    ) -> Result<Bound, PlanError> {
        let slot = b.loops;
        b.loops += 1;
        b.push(v1::op::Op::LoopStart(v1::LoopStart {
            slot,
            during_us: during.map_or(0, crate::duration::micros),
        }));
        let test = b.push(v1::op::Op::LoopTest(v1::LoopTest {
            slot,
            max,
            condition: condition.unwrap_or_default(),
            during: during.is_some(),
            bound_step,
            ..Default::default()
        }));
        let inner = body(self, b)?;
        b.push(v1::op::Op::Jump(test as u32));
        let exit = b.here();
        if let Some(v1::op::Op::LoopTest(t)) = &mut b.program[test].op {
            t.exit = exit;
        }
        Ok(inner)
    }
}

fn set_to(op: &mut v1::Op, to: u32) {
    if let Some(v1::op::Op::Unless(b)) = &mut op.op {
        b.to = to;
    }
}
