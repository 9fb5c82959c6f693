//! One iteration of a journey for one user: its steps in order, each
//! request judged by the step's checks, its extractions kept.

use std::pin::Pin;
use std::time::Instant;

use loadfleet_proto::v1;
use tokio::time::Sleep;

use super::closed::{pause, throttle};
use super::worker::Shared;
use std::time::Duration;

use crate::assignment::{Assignment, OnError, Scenario, Step};
use crate::builtin::{Builtin, Context};
use crate::client::{Reply, UserClient, prepare};
use crate::deadline;
use crate::expr::Expr;
use crate::failure::ErrorKind;
use crate::journey::Verdict;
use crate::program::{ListRef, Op};
use crate::rng::Rng;

/// One virtual user's own state: its variables and its random numbers,
/// and what its scenario's program keeps between instructions.
pub(super) struct UserState {
    pub(super) vars: Vec<String>,
    pub(super) rng: Rng,
    /// The user's one request timer (see [`deadline`]).
    pub(super) timer: Pin<Box<Sleep>>,
    /// The last response's status (0 before any, or after a failure
    /// without a response): what conditions read as `status`.
    pub(super) status: u16,
    /// `${__counter}` and `${__fleet_counter}`.
    counter: u64,
    /// Lists of extractions with `match = "all"`.
    pub(super) lists: Vec<Vec<String>>,
    loops: Vec<LoopState>,
    groups: Vec<GroupState>,
    /// The groups begun and not ended, innermost last.
    open_groups: Vec<usize>,
    turns: Vec<u64>,
    /// Where a `set` computes its value before it is swapped in.
    scratch: String,
}

#[derive(Clone, Copy, Default)]
struct LoopState {
    passes: u64,
    until: Option<Instant>,
}

/// A group's time so far: from its first request's send to its last
/// response, less the think time in between.
#[derive(Clone, Copy)]
struct GroupState {
    /// The group's row.
    step: usize,
    include_think: bool,
    begun: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    think: Duration,
    think_at_last: Duration,
    /// The step id of the first of its requests that failed.
    failed: Option<usize>,
}

impl GroupState {
    fn new(step: usize, include_think: bool, now: Instant) -> GroupState {
        GroupState {
            step,
            include_think,
            begun: now,
            first: None,
            last: None,
            think: Duration::ZERO,
            think_at_last: Duration::ZERO,
            failed: None,
        }
    }
}

impl UserState {
    pub(super) fn new(assign: &Assignment, seed: u64) -> UserState {
        let slots = &assign.user_slots;
        let now = Instant::now();
        UserState {
            vars: vec![String::new(); assign.vars.len()],
            rng: Rng::for_user(assign.seed, seed),
            timer: Box::pin(deadline::user_timer()),
            status: 0,
            counter: 0,
            lists: vec![Vec::new(); assign.lists.len()],
            loops: vec![LoopState::default(); slots.loops],
            groups: vec![GroupState::new(0, false, now); slots.groups],
            open_groups: Vec::with_capacity(slots.group_depth),
            turns: vec![0; slots.turns],
            scratch: String::new(),
        }
    }

    /// Fresh variables for a new visitor (the open model's arrivals).
    pub(super) fn forget(&mut self) {
        for v in &mut self.vars {
            v.clear();
        }
        for l in &mut self.lists {
            l.clear();
        }
        self.turns.fill(0);
        self.counter = 0;
        self.status = 0;
    }

    /// Fills the built-ins at `slots` (per-use ones: a new value each time).
    fn refresh(&mut self, assign: &Assignment, slots: &[usize], key: (u64, u64)) {
        for &slot in slots {
            if let (Some(Some(b)), Some(out)) = (assign.builtins.get(slot), self.vars.get_mut(slot))
            {
                b.write(
                    out,
                    &mut Context {
                        user: key.0,
                        iteration: key.1,
                        agent: &assign.agent_name,
                        region: &assign.region,
                        fleet_users: assign.fleet_users,
                        counter: &mut self.counter,
                        rng: &mut self.rng,
                    },
                );
            }
        }
    }

    /// Evaluates `expression` into variable `slot`.
    /// False when the expression had no value (the variable is left
    /// empty).
    fn set(&mut self, slot: usize, expression: &Expr) -> bool {
        let valued = expression.value(&self.vars, self.status, &mut self.scratch);
        if let Some(v) = self.vars.get_mut(slot) {
            std::mem::swap(v, &mut self.scratch);
        }
        valued
    }

    /// Think time `d` passed inside every open group.
    fn thought(&mut self, d: Duration) {
        for &g in &self.open_groups {
            self.groups[g].think += d;
        }
    }

    /// A request of step `id` went out at `sent` and ended at `ended`.
    fn in_groups(&mut self, id: usize, sent: Instant, ended: Instant, failed: bool) {
        for &g in &self.open_groups {
            let st = &mut self.groups[g];
            st.first.get_or_insert(sent);
            st.last = Some(ended);
            st.think_at_last = st.think;
            if failed && st.failed.is_none() {
                st.failed = Some(id);
            }
        }
    }
}

/// Non-request instructions run before the user yields to the others (a
/// loop whose requests are all skipped by a condition must not hold the
/// worker's thread).
const OPS_BEFORE_YIELD: u32 = 1024;

/// Runs one iteration of `scenario`; false when the user must stop (graceful
/// stop, deadline, or a failed step of a `stop_user` scenario). `key` is the
/// user's fleet-wide index and its iteration, which pick its data rows.
/// With `intended` (the open model's scheduled start), each step is also
/// measured from its intended send time: the iteration's lateness is added
/// to every step's latency, so a stall that delayed the iteration shows in
/// the percentiles (coordinated-omission correction).
pub(super) async fn run_iteration(
    shared: &Shared,
    client: &mut UserClient,
    user: &mut UserState,
    scenario: &Scenario,
    key: (u64, u64),
    intended: Option<tokio::time::Instant>,
    deadline: Option<tokio::time::Instant>,
) -> bool {
    let assign = &shared.assign;
    // Read the clock only when something needs it (it is read twice per
    // request anyway).
    let began = (intended.is_some() || !scenario.pacing.is_zero()).then(tokio::time::Instant::now);
    shared.started.set(shared.started.get() + 1);
    if assign.clear_cookies_each_iteration {
        client.cookies.clear();
    }
    if shared.target.connections == v1::Connections::PerIteration {
        // A new visitor: no connection of the last iteration is reused.
        client.reset();
    }
    for data in &assign.data {
        if let Some(row) = data.row(key.0, key.1, assign.fleet_users, &mut user.rng) {
            for (&slot, value) in data.slots.iter().zip(row) {
                user.vars[slot].clone_from(value);
            }
        }
    }
    for (slot, b) in assign.builtins.iter().enumerate() {
        if b.as_ref().is_some_and(Builtin::per_iteration) {
            user.refresh(assign, &[slot], key);
        }
    }
    user.open_groups.clear();
    let lateness = intended
        .zip(began)
        .map(|(t, began)| began.saturating_duration_since(t));
    let ops = &scenario.program.ops;
    let mut pc = 0;
    let mut spun = 0u32;
    while let Some(op) = ops.get(pc) {
        pc += 1;
        match op {
            Op::Request(i) => {
                spun = 0;
                let step = &scenario.steps[*i];
                if shared.graceful.is_cancelled()
                    || deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
                {
                    return false;
                }
                if !throttle(shared, deadline).await {
                    return false;
                }
                if !step.fresh.is_empty() {
                    user.refresh(assign, &step.fresh, key);
                }
                // `None`: the lease has run out (see `send`): this user stops.
                let Some(failed) = send(shared, client, user, step, key, lateness).await else {
                    return false;
                };
                if failed {
                    match scenario.on_error {
                        OnError::Continue => {}
                        OnError::NextIteration => {
                            fail_open_groups(shared, user, lateness);
                            break;
                        }
                        OnError::StopUser => {
                            fail_open_groups(shared, user, lateness);
                            return false;
                        }
                    }
                }
                if let Some(think) = &step.think {
                    let d = think.sample(&mut user.rng);
                    if !pause(shared, d, deadline).await {
                        return false;
                    }
                    user.thought(d);
                }
                continue;
            }
            Op::GroupBegin {
                slot,
                step,
                include_think,
            } => {
                user.groups[*slot] = GroupState::new(*step, *include_think, Instant::now());
                // Begun again without its end (only a malformed program
                // does that): one entry, so the list stays bounded.
                user.open_groups.retain(|&g| g != *slot);
                user.open_groups.push(*slot);
            }
            Op::GroupEnd(slot) => end_group(shared, user, *slot, lateness),
            Op::Jump(to) => {
                pc = *to;
                if shared.graceful.is_cancelled() {
                    return false;
                }
            }
            Op::Unless {
                condition,
                fresh,
                to,
            } => {
                user.refresh(assign, fresh, key);
                if !condition.holds(&user.vars, user.status) {
                    pc = *to;
                }
            }
            Op::LoopStart { slot, during } => {
                user.loops[*slot] = LoopState {
                    passes: 0,
                    until: during.map(|d| Instant::now() + d),
                };
            }
            Op::LoopTest(l) => {
                let state = user.loops[l.slot];
                let more = if let Some((list, item)) = l.list {
                    let value = match list {
                        ListRef::Extracted(s) => user.lists[s].get(state.passes as usize),
                        ListRef::Column { data, column } => assign.data[data]
                            .rows
                            .get(state.passes as usize)
                            .and_then(|r| r.get(column)),
                    };
                    match value {
                        Some(v) => {
                            user.vars[item].clone_from(v);
                            true
                        }
                        None => false,
                    }
                } else if l.during {
                    state.until.is_some_and(|u| Instant::now() < u)
                } else if let Some(c) = &l.condition {
                    user.refresh(assign, &l.fresh, key);
                    c.holds(&user.vars, user.status)
                } else {
                    true
                };
                if !more {
                    pc = l.exit;
                } else if state.passes >= l.max {
                    if let Some(step) = l.bound_step {
                        shared.recorder.borrow_mut().record_bound_hit(step);
                    }
                    pc = l.exit;
                } else {
                    user.loops[l.slot].passes += 1;
                }
            }
            Op::Set {
                slot,
                expression,
                fresh,
            } => {
                user.refresh(assign, fresh, key);
                // A step of only `set`s has no row to count a miss in: the
                // variable is left empty (docs/plan.md says so).
                let _ = user.set(*slot, expression);
            }
            Op::Once(to) => {
                if key.1 > 0 {
                    pc = *to;
                }
            }
            Op::Pick { cumulative, to } => {
                let total = cumulative.last().copied().unwrap_or(1).max(1);
                let r = user.rng.next_u64() % total;
                let i = cumulative.partition_point(|&c| c <= r);
                pc = to[i.min(to.len() - 1)];
            }
            Op::Turn { slot, to } => {
                let n = user.turns[*slot];
                user.turns[*slot] = n + 1;
                pc = to[(n % to.len() as u64) as usize];
            }
            Op::Pause(think) => {
                spun = 0;
                let d = think.sample(&mut user.rng);
                if !pause(shared, d, deadline).await {
                    return false;
                }
                user.thought(d);
            }
            Op::Percent { slot, percent, to } => {
                // Exactly `percent` of passes, spread evenly: pass n runs
                // when it raises floor(n * percent / 100).
                let n = user.turns[*slot];
                user.turns[*slot] = n + 1;
                let before = (n as f64 * percent / 100.0).floor();
                let after = ((n + 1) as f64 * percent / 100.0).floor();
                if after <= before {
                    pc = *to;
                }
            }
        }
        spun += 1;
        if spun >= OPS_BEFORE_YIELD {
            spun = 0;
            tokio::task::yield_now().await;
            if shared.graceful.is_cancelled()
                || deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
            {
                return false;
            }
        }
    }
    // Every step ran (or a failure sent it on to the next iteration).
    shared.completed.set(shared.completed.get() + 1);
    // Pacing: an iteration lasts at least this long.
    match began {
        Some(began) if !scenario.pacing.is_zero() => {
            let spent = tokio::time::Instant::now().saturating_duration_since(began);
            pause(shared, scenario.pacing.saturating_sub(spent), deadline).await
        }
        _ => true,
    }
}

/// The group begun in `slot` ends: its time, and its failure when one of
/// its requests failed. A group none of whose requests ran records nothing.
fn end_group(shared: &Shared, user: &mut UserState, slot: usize, lateness: Option<Duration>) {
    if let Some(pos) = user.open_groups.iter().rposition(|&g| g == slot) {
        user.open_groups.truncate(pos);
    }
    let g = user.groups[slot];
    let (Some(first), Some(last)) = (g.first, g.last) else {
        return;
    };
    let spent = if g.include_think {
        g.begun.elapsed()
    } else {
        last.saturating_duration_since(first)
            .saturating_sub(g.think_at_last)
    };
    let mut rec = shared.recorder.borrow_mut();
    match lateness {
        Some(late) => rec.record_latency(g.step, spent + late, Some(spent)),
        // A closed user beside rate schedules: its uncorrected time is its
        // time (kept only when the recorder keeps uncorrected times).
        None => rec.record_latency(g.step, spent, Some(spent)),
    }
    if let Some(id) = g.failed {
        rec.record_failure(g.step, ErrorKind::Group, || {
            format!("its step `{}` failed", shared.assign.step_names[id])
        });
    }
}

/// A failed request ended the iteration (`on_error`): every open group
/// ends with it, failed, timed up to that request's end.
fn fail_open_groups(shared: &Shared, user: &mut UserState, lateness: Option<Duration>) {
    while let Some(&slot) = user.open_groups.last() {
        end_group(shared, user, slot, lateness);
    }
}

/// Sends one request of `step` and records it; `Some(true)` when it
/// failed, `None` when the controller's lease has run out: a process frozen
/// past its lease may wake its users before its session has seen that, so
/// each checks before it sends (against the send instant it takes anyway).
async fn send(
    shared: &Shared,
    client: &mut UserClient,
    user: &mut UserState,
    step: &Step,
    key: (u64, u64),
    lateness: Option<Duration>,
) -> Option<bool> {
    let timeout = shared.target.timeout;
    // Matched by reference: the request is kept once in this future's
    // state, not also in a moved-out copy.
    let mut prepared = prepare(step, &user.vars, &shared.target);
    let sent = Instant::now();
    if !shared.lease.holds(sent) {
        return None;
    }
    let failed = match &mut prepared {
        Err(msg) => {
            let mut rec = shared.recorder.borrow_mut();
            rec.record_failure(step.id, ErrorKind::Request, || std::mem::take(msg));
            user.status = 0;
            true
        }
        Ok(req) => {
            // Counted while it waits: a stop at once drops this future, and
            // the worker reports what was left waiting.
            shared.in_flight.set(shared.in_flight.get() + 1);
            let outcome = deadline::within(
                user.timer.as_mut(),
                tokio::time::Instant::from_std(sent) + timeout,
                client.execute(req, step.max_redirects, step.keep()),
            )
            .await;
            shared
                .in_flight
                .set(shared.in_flight.get().saturating_sub(1));
            let latency = sent.elapsed();
            let counts = client.take_counts();
            shared
                .recorder
                .borrow_mut()
                .record_exchanges(step.id, counts);
            match outcome {
                Some(Ok(reply)) => {
                    user.status = reply.status;
                    let mut failure = judge(&shared.assign, step, &reply, client.body(), user);
                    // `set`s run after every response, as JMeter's
                    // post-processors do, on what its extractions left; one
                    // without a value fails the step (never silently empty).
                    for (slot, expression, fresh) in step.set.iter() {
                        user.refresh(&shared.assign, fresh, key);
                        if !user.set(*slot, expression) && failure.is_none() {
                            failure = Some(Fault::Other(
                                ErrorKind::Set,
                                format!(
                                    "`{}` = `{}` has no value (a variable in it holds no integer, or a division by zero)",
                                    shared.assign.vars.name(*slot),
                                    expression.source()
                                ),
                            ));
                        }
                    }
                    let mut rec = shared.recorder.borrow_mut();
                    match lateness {
                        Some(late) => rec.record_latency(step.id, latency + late, Some(latency)),
                        None => rec.record_latency(step.id, latency, Some(latency)),
                    }
                    if reply.http2 {
                        rec.record_http2(step.id);
                    }
                    for m in step.metrics.iter() {
                        let sample = m.read(&reply.headers, client.body(), &mut user.rng);
                        rec.record_metric(step.id, m.id, sample);
                    }
                    if let Some(ids) = shared.target.phase_metrics {
                        let p = client.take_phases();
                        let timed = [
                            p.dns,
                            p.connect,
                            p.tls,
                            Some(p.send),
                            Some(p.wait),
                            Some(p.receive),
                        ];
                        // A request that opened no connection has no
                        // connect time: not a missing one.
                        for (id, v) in ids.into_iter().zip(timed) {
                            if v.is_some() {
                                rec.record_metric(step.id, id, v);
                            }
                        }
                    }
                    match failure {
                        None => false,
                        Some(Fault::Status(code)) => {
                            rec.record_failure(step.id, ErrorKind::Status(code), || {
                                format!("HTTP status {code}")
                            });
                            true
                        }
                        Some(Fault::Other(kind, msg)) => {
                            rec.record_failure(step.id, kind, || msg);
                            true
                        }
                    }
                }
                Some(Err(failure)) => {
                    user.status = 0;
                    let mut rec = shared.recorder.borrow_mut();
                    match failure.kind {
                        // Never sent: no time to a failure.
                        ErrorKind::Blocked | ErrorKind::Request => {
                            rec.record_failure(step.id, failure.kind, || failure.message)
                        }
                        kind => rec.record_failure_after(
                            step.id,
                            kind,
                            latency + lateness.unwrap_or_default(),
                            || failure.message,
                        ),
                    }
                    true
                }
                None => {
                    user.status = 0;
                    let connecting = client.was_connecting();
                    client.reset();
                    let (kind, what) = if connecting {
                        (ErrorKind::ConnectTimeout, "no connection")
                    } else {
                        (ErrorKind::Timeout, "no complete response")
                    };
                    shared.recorder.borrow_mut().record_failure_after(
                        step.id,
                        kind,
                        latency + lateness.unwrap_or_default(),
                        || format!("{what} within {timeout:?}"),
                    );
                    true
                }
            }
        }
    };
    if !user.open_groups.is_empty() {
        user.in_groups(step.id, sent, Instant::now(), failed);
    }
    Some(failed)
}

/// Why a response failed its step.
pub(super) enum Fault {
    Status(u16),
    Other(ErrorKind, String),
}

/// Checks a response and, when it passes, runs the step's extractions.
pub(super) fn judge(
    assign: &Assignment,
    step: &Step,
    reply: &Reply,
    body: &[u8],
    user: &mut UserState,
) -> Option<Fault> {
    if let Some(why) = &reply.undecodable {
        return Some(Fault::Other(ErrorKind::Decode, why.clone()));
    }
    // Said when a check or extraction fails on a body cut at the limit.
    let cut = |mut msg: String| {
        if let Some(n) = reply.truncated {
            msg.push_str(&format!(
                " (the body was truncated at {n} bytes: only that much was checked; `[http] body_limit` raises it)"
            ));
        }
        msg
    };
    match step
        .check
        .judge(reply.status, &reply.headers, body, &user.vars)
    {
        Verdict::Pass => {}
        Verdict::Status(code) => return Some(Fault::Status(code)),
        Verdict::Check(msg) => return Some(Fault::Other(ErrorKind::Check, cut(msg))),
    }
    for ex in step.extract.iter() {
        if let Some((list, count)) = ex.all {
            // Every match, however many (none is no failure: a `for_each`
            // over it runs no pass).
            let n = ex.apply_all(&reply.headers, body, &mut user.lists[list]);
            let out = &mut user.vars[count];
            out.clear();
            let _ = std::fmt::Write::write_fmt(out, format_args!("{n}"));
            // `<name>_K` the plan reads, as JMeter sets them (empty past
            // the last match).
            for &(k, slot) in assign.list_items.get(list).map_or(&[][..], Vec::as_slice) {
                match user.lists[list].get(k - 1) {
                    Some(v) => user.vars[slot].clone_from(v),
                    None => user.vars[slot].clear(),
                }
            }
            continue;
        }
        match ex.apply(&reply.headers, body, &mut user.rng) {
            Some(v) => user.vars[ex.slot] = v,
            None => {
                return Some(Fault::Other(
                    ErrorKind::Extract,
                    cut(format!(
                        "`{}`: nothing matched and no default is set",
                        ex.name
                    )),
                ));
            }
        }
    }
    None
}
