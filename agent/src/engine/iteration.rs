//! One iteration of a journey for one user: its steps in order, each
//! request judged by the step's checks, its extractions kept.

use std::pin::Pin;
use std::time::Instant;

use loadfleet_proto::v1;
use tokio::time::Sleep;

use super::closed::{pause, throttle};
use super::worker::Shared;
use crate::assignment::{Assignment, OnError, Scenario, Step};
use crate::client::{Reply, UserClient, prepare};
use crate::deadline;
use crate::failure::ErrorKind;
use crate::journey::Verdict;
use crate::rng::Rng;

/// One virtual user's own state: its variables and its random numbers.
pub(super) struct UserState {
    pub(super) vars: Vec<String>,
    pub(super) rng: Rng,
    /// The user's one request timer (see [`deadline`]).
    pub(super) timer: Pin<Box<Sleep>>,
}

impl UserState {
    pub(super) fn new(assign: &Assignment, seed: u64) -> UserState {
        UserState {
            vars: vec![String::new(); assign.vars.len()],
            rng: Rng::for_user(assign.seed, seed),
            timer: Box::pin(deadline::user_timer()),
        }
    }

    /// Fresh variables for a new visitor (the open model's arrivals).
    pub(super) fn forget(&mut self) {
        for v in &mut self.vars {
            v.clear();
        }
    }
}

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
    let timeout = shared.target.timeout;
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
    let lateness = intended
        .zip(began)
        .map(|(t, began)| began.saturating_duration_since(t));
    for step in &scenario.steps {
        if shared.graceful.is_cancelled()
            || deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            return false;
        }
        if !throttle(shared, deadline).await {
            return false;
        }
        // Matched by reference: the request is kept once in this future's
        // state, not also in a moved-out copy.
        let mut prepared = prepare(step, &user.vars, &shared.target);
        let failed = match &mut prepared {
            Err(msg) => {
                let mut rec = shared.recorder.borrow_mut();
                rec.record_failure(step.id, ErrorKind::Request, || std::mem::take(msg));
                true
            }
            Ok(req) => {
                let sent = Instant::now();
                let outcome = deadline::within(
                    user.timer.as_mut(),
                    tokio::time::Instant::from_std(sent) + timeout,
                    client.execute(req, step.max_redirects, step.keep()),
                )
                .await;
                let latency = sent.elapsed();
                let counts = client.take_counts();
                shared
                    .recorder
                    .borrow_mut()
                    .record_exchanges(step.id, counts);
                match outcome {
                    Some(Ok(reply)) => {
                        let failure = judge(step, &reply, client.body(), user);
                        let mut rec = shared.recorder.borrow_mut();
                        match lateness {
                            Some(late) => {
                                rec.record_latency(step.id, latency + late, Some(latency))
                            }
                            None => rec.record_latency(step.id, latency, None),
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
        if failed {
            match scenario.on_error {
                OnError::Continue => {}
                OnError::NextIteration => break,
                OnError::StopUser => return false,
            }
        }
        if let Some(think) = &step.think
            && !pause(shared, think.sample(&mut user.rng), deadline).await
        {
            return false;
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

/// Why a response failed its step.
pub(super) enum Fault {
    Status(u16),
    Other(ErrorKind, String),
}

/// Checks a response and, when it passes, runs the step's extractions.
pub(super) fn judge(
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
