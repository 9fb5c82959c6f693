//! One worker thread: its single-threaded runtime, its users, and the state
//! they share; it hands its recordings to the aggregator every interval.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio::task::LocalSet;
use tokio_util::sync::CancellationToken;

use super::closed::run_user;
use super::open::{OpenShare, start_open};
use super::timing::Timing;
use super::{StopHandle, WorkerPart};
use crate::assignment::{Assignment, UserSlot};
use crate::recorder::Recorder;
use crate::tls::Tls;

/// How often a worker checks how late its event loop wakes.
pub(super) const LAG_TICK: Duration = Duration::from_millis(100);

/// Measures the worker's event-loop lag: a timer every [`LAG_TICK`], and
/// how late it fires. A generator that cannot keep up shows it here first.
pub(super) async fn watch_lag(shared: Rc<Shared>) {
    let mut tick = tokio::time::interval(LAG_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tick.tick().await;
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        shared.lag_max_us.set(shared.lag_max_us.get().max(us));
    }
}

pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) workers: usize,
    pub(super) timing: Timing,
    pub(super) policy: Arc<crate::policy::Policy>,
    pub(super) assign: Arc<Assignment>,
    pub(super) users: Vec<UserSlot>,
    pub(super) start_at: Instant,
    pub(super) stop: StopHandle,
    pub(super) tls: Option<Tls>,
    pub(super) parts: mpsc::Sender<WorkerPart>,
    pub(super) start_lateness_us: Arc<AtomicU64>,
    /// Set by the first worker whose hard time limit ends its users.
    pub(super) cut_short: Arc<OnceLock<String>>,
    /// Requests in flight when the worker stopped at once, every worker's.
    pub(super) abandoned: Arc<AtomicU64>,
}

/// State shared by the users of one worker thread (never across threads).
pub(super) struct Shared {
    pub(super) policy: Arc<crate::policy::Policy>,
    pub(super) assign: Arc<Assignment>,
    pub(super) target: Arc<crate::assignment::Target>,
    pub(super) tls: Option<Tls>,
    pub(super) start_at: tokio::time::Instant,
    pub(super) recorder: RefCell<Recorder>,
    pub(super) active: Cell<u32>,
    pub(super) remaining: Cell<usize>,
    pub(super) all_done: Notify,
    pub(super) graceful: CancellationToken,
    /// The controller's lease: no request goes out once it has run out.
    pub(super) lease: Arc<super::LeaseClock>,
    /// Open model: arrivals dropped in the current interval.
    pub(super) dropped: Cell<u64>,
    /// Iterations started in the current interval.
    pub(super) started: Cell<u64>,
    /// Iterations that ran to their end in the current interval.
    pub(super) completed: Cell<u64>,
    /// The most users active at once in the current interval.
    pub(super) active_peak: Cell<u32>,
    /// User-seconds of activity in the current interval, up to `active_changed`.
    pub(super) active_area: Cell<f64>,
    /// When `active` last changed (or the interval began).
    pub(super) active_changed: Cell<tokio::time::Instant>,
    /// The worst event-loop lag of the current interval, µs.
    pub(super) lag_max_us: Cell<u64>,
    /// `[load] throttle`: this worker's spacing between requests, and the
    /// next free slot.
    pub(super) throttle: Option<(Duration, Cell<tokio::time::Instant>)>,
    /// Requests sent and waiting for their response now.
    pub(super) in_flight: Cell<u64>,
}

impl Shared {
    /// A user became active (a closed-model user started; an open-model
    /// arrival began its iteration).
    pub(super) fn user_started(&self) {
        self.account_activity();
        let n = self.active.get() + 1;
        self.active.set(n);
        self.active_peak.set(self.active_peak.get().max(n));
    }

    /// A user stopped being active.
    pub(super) fn user_stopped(&self) {
        self.account_activity();
        self.active.set(self.active.get().saturating_sub(1));
    }

    /// Adds the activity since the last change to the interval's area.
    pub(super) fn account_activity(&self) {
        let now = tokio::time::Instant::now();
        let since = now.saturating_duration_since(self.active_changed.get());
        self.active_area
            .set(self.active_area.get() + f64::from(self.active.get()) * since.as_secs_f64());
        self.active_changed.set(now);
    }

    /// The interval's peak and time-weighted mean of active users, ending
    /// at `end` after `length`; starts the next interval's.
    pub(super) fn take_activity(&self, end: tokio::time::Instant, length: Duration) -> (u32, f64) {
        let since = end.saturating_duration_since(self.active_changed.get());
        let active = self.active.get();
        let area = self.active_area.get() + f64::from(active) * since.as_secs_f64();
        let peak = self.active_peak.get().max(active);
        self.active_area.set(0.0);
        self.active_changed.set(end);
        self.active_peak.set(active);
        (peak, area / length.as_secs_f64().max(1e-6))
    }

    /// A user (or the open model's generator) is done.
    pub(super) fn finished_one(&self) {
        let left = self.remaining.get().saturating_sub(1);
        self.remaining.set(left);
        if left == 0 {
            self.all_done.notify_one();
        }
    }
}

impl Worker {
    pub(super) fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot build worker runtime");
                return;
            }
        };
        let local = LocalSet::new();
        local.block_on(&rt, self.drive());
    }

    pub(super) async fn drive(self) {
        let start_at = tokio::time::Instant::from_std(self.start_at);
        let shared = Rc::new(Shared {
            policy: self.policy.clone(),
            target: Arc::new(self.assign.target.clone()),
            tls: self.tls.clone(),
            start_at,
            recorder: RefCell::new(Recorder::with_model(
                self.assign.step_names.len(),
                self.assign.has_open(),
            )),
            dropped: Cell::new(0),
            in_flight: Cell::new(0),
            started: Cell::new(0),
            completed: Cell::new(0),
            active_peak: Cell::new(0),
            active_area: Cell::new(0.0),
            active_changed: Cell::new(start_at),
            lag_max_us: Cell::new(0),
            // This worker's share of the agent's cap: its share of the users.
            throttle: self
                .assign
                .throttle_per_s
                .filter(|_| !self.users.is_empty() && !self.assign.has_open())
                .map(|rate| {
                    let share =
                        rate * self.users.len() as f64 / self.assign.users.len().max(1) as f64;
                    (
                        Duration::from_secs_f64(1.0 / share.max(1e-6)),
                        Cell::new(start_at),
                    )
                }),
            active: Cell::new(0),
            remaining: Cell::new(self.users.len()),
            all_done: Notify::new(),
            graceful: self.stop.graceful.clone(),
            lease: self.stop.lease.clone(),
            assign: self.assign.clone(),
        });
        // Closed users, and each rate schedule's users and generator.
        let shares: Vec<Option<OpenShare>> = (0..self.assign.open.len())
            .map(|k| OpenShare::of(&self.assign.open[k], k, self.id, self.workers))
            .collect();
        let tasks = self.users.len()
            + shares
                .iter()
                .flatten()
                .map(|s| s.users as usize + 1)
                .sum::<usize>();
        shared.remaining.set(tasks);
        if tasks == 0 {
            shared.all_done.notify_one();
        }
        for slot in &self.users {
            tokio::task::spawn_local(run_user(shared.clone(), *slot));
        }
        for share in shares.into_iter().flatten() {
            start_open(&shared, share, self.timing);
        }
        // Users are spawned and asleep; wake at the schedule's zero with them
        // and note how late that was.
        tokio::select! {
            _ = tokio::time::sleep_until(start_at) => {}
            _ = self.stop.hard.cancelled() => {}
        }
        tokio::task::spawn_local(watch_lag(shared.clone()));
        let late = tokio::time::Instant::now().saturating_duration_since(start_at);
        self.start_lateness_us.fetch_max(
            u64::try_from(late.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let interval = self.assign.interval;
        let hard_deadline = start_at + self.assign.max_run;
        let mut seq: u64 = 0;
        loop {
            let boundary =
                start_at + interval.saturating_mul(u32::try_from(seq + 1).unwrap_or(u32::MAX));
            let finished = tokio::select! {
                _ = tokio::time::sleep_until(boundary) => false,
                _ = shared.all_done.notified() => true,
                _ = self.stop.hard.cancelled() => true,
                _ = tokio::time::sleep_until(hard_deadline) => {
                    let running = shared.active.get();
                    tracing::warn!(users = running, "run reached its hard time limit; stopping all load");
                    let _ = self.cut_short.set(format!(
                        "its time limit of {:.1} s passed with {running} user(s) still running",
                        self.assign.max_run.as_secs_f64()
                    ));
                    true
                }
            };
            let elapsed = if finished {
                tokio::time::Instant::now().saturating_duration_since(start_at)
            } else {
                boundary - start_at
            };
            let interval_start =
                start_at + interval.saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX));
            let (active_peak, active_mean) = shared.take_activity(
                start_at + elapsed,
                (start_at + elapsed).saturating_duration_since(interval_start),
            );
            if finished {
                // Users still waiting for a response are dropped with the
                // worker (a stop at once, the time limit): say how many.
                self.abandoned
                    .fetch_add(shared.in_flight.get(), Ordering::Relaxed);
            }
            let (steps, lateness) = {
                let mut rec = shared.recorder.borrow_mut();
                (rec.take(), rec.take_lateness())
            };
            let part = WorkerPart {
                worker: self.id,
                seq,
                steps,
                active: if finished { 0 } else { shared.active.get() },
                elapsed,
                last: finished,
                dropped: shared.dropped.replace(0),
                started: shared.started.replace(0),
                completed: shared.completed.replace(0),
                active_peak,
                active_mean,
                lateness,
                lag_max_us: shared.lag_max_us.replace(0),
            };
            if self.parts.send(part).await.is_err() || finished {
                break;
            }
            seq += 1;
        }
        // Leaving drops every user task still running: in-flight requests are abandoned.
    }
}
