//! The load engine: runs an agent's virtual users on one single-threaded
//! runtime per worker thread and turns their recordings into interval reports.
//!
//! Each worker owns its users and its [`Recorder`]; a sample never leaves the
//! thread until the interval ends. Once per interval each worker hands its
//! records to the aggregator, which adds the workers' histograms per step and
//! serializes them (HdrHistogram V2 + DEFLATE) into a wire [`v1::Interval`].

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use loadfleet_proto::v1;
use tokio::sync::{Notify, mpsc};
use tokio::task::LocalSet;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use std::collections::VecDeque;

use crate::arrivals::OwnArrivals;
use crate::assignment::{Assignment, Bound, OnError, OpenLoad, Scenario, Step, UserSlot};
use crate::client::{Reply, UserClient, prepare};
use crate::deadline;
use crate::failure::ErrorKind;
use crate::journey::Verdict;
use crate::recorder::{Recorder, StepRecord};
use crate::rng::Rng;
use crate::tls::Tls;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot start worker thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Ways to stop a running engine early.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    graceful: CancellationToken,
    hard: CancellationToken,
}

impl StopHandle {
    /// Users finish the step they are in, then stop.
    pub fn graceful(&self) {
        self.graceful.cancel();
    }

    /// All load stops at once; in-flight requests are abandoned.
    pub fn hard(&self) {
        self.hard.cancel();
    }
}

/// A running engine: interval reports arrive on `intervals` in sequence
/// order; the channel closes after the last one.
pub struct Engine {
    pub intervals: mpsc::Receiver<v1::Interval>,
    pub stop: StopHandle,
    threads: Vec<std::thread::JoinHandle<()>>,
    start_lateness_us: Arc<AtomicU64>,
    totals: Arc<OnceLock<v1::Totals>>,
    cut_short: Arc<OnceLock<String>>,
}

impl Engine {
    /// Waits for every thread; an error names a worker that panicked, whose
    /// load stopped early (its results so far were still reported).
    pub fn finish(mut self) -> Result<(), String> {
        let mut failure = Ok(());
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("worker").to_string();
            if t.join().is_err() {
                failure = Err(format!("{name} crashed; its load stopped early"));
            }
        }
        failure
    }

    /// Everything reported, all steps together: set once the last interval
    /// has been sent on `intervals` (before the channel closes).
    pub fn totals(&self) -> Option<v1::Totals> {
        self.totals.get().cloned()
    }

    /// Why the run's hard time limit ended users before they finished;
    /// `None` when every user finished.
    pub fn cut_short(&self) -> Option<String> {
        self.cut_short.get().cloned()
    }

    /// How late the slowest worker woke after the schedule's zero.
    pub fn start_lateness(&self) -> Duration {
        Duration::from_micros(self.start_lateness_us.load(Ordering::Relaxed))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.hard();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What one worker recorded in one interval.
struct WorkerPart {
    worker: usize,
    seq: u64,
    steps: Vec<Option<StepRecord>>,
    active: u32,
    elapsed: Duration,
    last: bool,
    dropped: u64,
    started: u64,
    completed: u64,
    active_peak: u32,
    active_mean: f64,
    lateness: Option<Histogram<u64>>,
    /// How late this worker's event loop woke for its timers, at worst.
    lag_max_us: u64,
}

/// How often a worker checks how late its event loop wakes.
const LAG_TICK: Duration = Duration::from_millis(100);

/// Measures the worker's event-loop lag: a timer every [`LAG_TICK`], and
/// how late it fires. A generator that cannot keep up shows it here first.
async fn watch_lag(shared: Rc<Shared>) {
    let mut tick = tokio::time::interval(LAG_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tick.tick().await;
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        shared.lag_max_us.set(shared.lag_max_us.get().max(us));
    }
}

/// How the open model's generator waits for each arrival's instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Sleep on a high-resolution kernel timer to the instant itself
    /// ([`crate::alarm`]). Arrivals due within `window` of the earliest one
    /// waiting share one wake-up, taken at the last one's instant, so a
    /// worker wakes at most about 1/window times a second for its arrivals;
    /// the others leave up to `window` late (reported as send lateness).
    /// With a zero window every arrival has a wake-up of its own. An idle
    /// agent stays idle.
    Timer { window: Duration },
    /// Sleep on tokio's millisecond timer to 2 ms before the instant, then
    /// yield until it: arrivals leave within microseconds, at the cost of
    /// polling while the worker would otherwise be idle (a whole core at
    /// 500 arrivals/s per worker and above).
    Poll,
}

impl Timing {
    /// In words, as the summary shows it: "timer, 0.75 ms window", "timer,
    /// no window" or "poll".
    pub fn describe(self) -> String {
        match self {
            Timing::Timer { window } if window.is_zero() => "timer, no window".into(),
            Timing::Timer { window } => {
                let us = window.as_micros();
                let ms = if us % 1000 == 0 {
                    format!("{}", us / 1000)
                } else {
                    format!("{:.3}", us as f64 / 1000.0)
                        .trim_end_matches('0')
                        .to_string()
                };
                format!("timer, {ms} ms window")
            }
            Timing::Poll => "poll".into(),
        }
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing::Timer {
            window: DEFAULT_WINDOW,
        }
    }
}

/// The timing modes by name, as `--timing` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingMode {
    Timer,
    Poll,
}

impl TimingMode {
    pub const NAMES: [&'static str; 2] = ["timer", "poll"];

    pub fn name(self) -> &'static str {
        match self {
            TimingMode::Timer => "timer",
            TimingMode::Poll => "poll",
        }
    }

    /// The timing this mode names; `window` is used by `timer` only.
    pub fn with_window(self, window: Duration) -> Timing {
        match self {
            TimingMode::Timer => Timing::Timer { window },
            TimingMode::Poll => Timing::Poll,
        }
    }
}

impl std::str::FromStr for TimingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<TimingMode, String> {
        match s {
            "timer" => Ok(TimingMode::Timer),
            "poll" => Ok(TimingMode::Poll),
            _ => Err(format!(
                "unknown timing {s:?}: expected one of {}",
                TimingMode::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for TimingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// [`Timing::Timer`]'s default window.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(750);

/// The longest window `--timing-window` takes.
pub const MAX_WINDOW: Duration = Duration::from_secs(1);

/// Parses a timer window: an integer with `us` or `ms` (`500us`, `2ms`), or
/// `0`, at most [`MAX_WINDOW`].
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let expected = || format!("expected a window such as \"500us\" or \"2ms\", found {s:?}");
    let d = if t == "0" {
        Duration::ZERO
    } else if let Some(n) = t.strip_suffix("us").or_else(|| t.strip_suffix("µs")) {
        Duration::from_micros(n.parse().map_err(|_| expected())?)
    } else if let Some(n) = t.strip_suffix("ms") {
        Duration::from_millis(n.parse().map_err(|_| expected())?)
    } else {
        return Err(expected());
    };
    if d > MAX_WINDOW {
        return Err(format!(
            "a timer window of {s} is longer than the 1 s allowed"
        ));
    }
    Ok(d)
}

/// At most this many arrivals share one wake-up.
const COALESCE_MAX: usize = 64;

/// How an agent runs its engine.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Worker threads (one single-threaded runtime each).
    pub workers: usize,
    pub timing: Timing,
    /// The agent's own limits, checked again at every connect.
    pub policy: Arc<crate::policy::Policy>,
}

/// Starts the agent's users on worker threads. The schedule's zero is
/// `start_at`; every offset in the assignment is relative to it.
pub fn start(
    assign: Arc<Assignment>,
    start_at: Instant,
    config: EngineConfig,
) -> Result<Engine, EngineError> {
    let EngineConfig {
        workers,
        timing,
        policy,
    } = config;
    let units = match &assign.open {
        Some(open) => open.max_users as usize,
        None => assign.users.len(),
    };
    let workers = workers.clamp(1, units.max(1));
    let tls = if assign.target.scheme == http::uri::Scheme::HTTPS {
        Some(Tls::new(assign.target.tls_settings())?)
    } else {
        None
    };
    let stop = StopHandle::default();
    let (part_tx, part_rx) = mpsc::channel(workers * 4);
    let (out_tx, out_rx) = mpsc::channel(64);
    let mut threads = Vec::with_capacity(workers + 1);
    let start_lateness_us = Arc::new(AtomicU64::new(0));
    let cut_short = Arc::new(OnceLock::new());
    for w in 0..workers {
        let users: Vec<UserSlot> = assign
            .users
            .iter()
            .skip(w)
            .step_by(workers)
            .copied()
            .collect();
        let worker = Worker {
            id: w,
            workers,
            timing,
            policy: policy.clone(),
            assign: assign.clone(),
            users,
            start_at,
            stop: stop.clone(),
            tls: tls.clone(),
            parts: part_tx.clone(),
            start_lateness_us: start_lateness_us.clone(),
            cut_short: cut_short.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("loadfleet-worker-{w}"))
                .spawn(move || worker.run())?,
        );
    }
    drop(part_tx);
    let totals = Arc::new(OnceLock::new());
    let aggregator = Aggregator::new(assign, workers, out_tx, totals.clone());
    threads.push(
        std::thread::Builder::new()
            .name("loadfleet-aggregator".into())
            .spawn(move || aggregator.run(part_rx))?,
    );
    Ok(Engine {
        intervals: out_rx,
        stop,
        threads,
        start_lateness_us,
        totals,
        cut_short,
    })
}

// === impl Worker ===

struct Worker {
    id: usize,
    workers: usize,
    timing: Timing,
    policy: Arc<crate::policy::Policy>,
    assign: Arc<Assignment>,
    users: Vec<UserSlot>,
    start_at: Instant,
    stop: StopHandle,
    tls: Option<Tls>,
    parts: mpsc::Sender<WorkerPart>,
    start_lateness_us: Arc<AtomicU64>,
    /// Set by the first worker whose hard time limit ends its users.
    cut_short: Arc<OnceLock<String>>,
}

/// State shared by the users of one worker thread (never across threads).
struct Shared {
    policy: Arc<crate::policy::Policy>,
    assign: Arc<Assignment>,
    target: Arc<crate::assignment::Target>,
    tls: Option<Tls>,
    start_at: tokio::time::Instant,
    recorder: RefCell<Recorder>,
    active: Cell<u32>,
    remaining: Cell<usize>,
    all_done: Notify,
    graceful: CancellationToken,
    /// Open model: arrivals dropped in the current interval.
    dropped: Cell<u64>,
    /// Iterations started in the current interval.
    started: Cell<u64>,
    /// Iterations that ran to their end in the current interval.
    completed: Cell<u64>,
    /// The most users active at once in the current interval.
    active_peak: Cell<u32>,
    /// User-seconds of activity in the current interval, up to `active_changed`.
    active_area: Cell<f64>,
    /// When `active` last changed (or the interval began).
    active_changed: Cell<tokio::time::Instant>,
    /// The worst event-loop lag of the current interval, µs.
    lag_max_us: Cell<u64>,
    /// `[load] throttle`: this worker's spacing between requests, and the
    /// next free slot.
    throttle: Option<(Duration, Cell<tokio::time::Instant>)>,
}

impl Shared {
    /// A user became active (a closed-model user started; an open-model
    /// arrival began its iteration).
    fn user_started(&self) {
        self.account_activity();
        let n = self.active.get() + 1;
        self.active.set(n);
        self.active_peak.set(self.active_peak.get().max(n));
    }

    /// A user stopped being active.
    fn user_stopped(&self) {
        self.account_activity();
        self.active.set(self.active.get().saturating_sub(1));
    }

    /// Adds the activity since the last change to the interval's area.
    fn account_activity(&self) {
        let now = tokio::time::Instant::now();
        let since = now.saturating_duration_since(self.active_changed.get());
        self.active_area
            .set(self.active_area.get() + f64::from(self.active.get()) * since.as_secs_f64());
        self.active_changed.set(now);
    }

    /// The interval's peak and time-weighted mean of active users, ending
    /// at `end` after `length`; starts the next interval's.
    fn take_activity(&self, end: tokio::time::Instant, length: Duration) -> (u32, f64) {
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
    fn finished_one(&self) {
        let left = self.remaining.get().saturating_sub(1);
        self.remaining.set(left);
        if left == 0 {
            self.all_done.notify_one();
        }
    }
}

impl Worker {
    fn run(self) {
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

    async fn drive(self) {
        let start_at = tokio::time::Instant::from_std(self.start_at);
        let shared = Rc::new(Shared {
            policy: self.policy.clone(),
            target: Arc::new(self.assign.target.clone()),
            tls: self.tls.clone(),
            start_at,
            recorder: RefCell::new(Recorder::with_model(
                self.assign.step_names.len(),
                self.assign.open.is_some(),
            )),
            dropped: Cell::new(0),
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
                .filter(|_| !self.users.is_empty() && self.assign.open.is_none())
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
            assign: self.assign.clone(),
        });
        match &self.assign.open {
            Some(open) => start_open(&shared, open, self.id, self.workers, self.timing),
            None => {
                if self.users.is_empty() {
                    shared.all_done.notify_one();
                }
                for slot in &self.users {
                    tokio::task::spawn_local(run_user(shared.clone(), *slot));
                }
            }
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

/// One virtual user's own state: its variables and its random numbers.
struct UserState {
    vars: Vec<String>,
    rng: Rng,
    /// The user's one request timer (see [`deadline`]).
    timer: Pin<Box<Sleep>>,
}

impl UserState {
    fn new(assign: &Assignment, seed: u64) -> UserState {
        UserState {
            vars: vec![String::new(); assign.vars.len()],
            rng: Rng::for_user(assign.seed, seed),
            timer: Box::pin(deadline::user_timer()),
        }
    }

    /// Fresh variables for a new visitor (the open model's arrivals).
    fn forget(&mut self) {
        for v in &mut self.vars {
            v.clear();
        }
    }
}

async fn run_user(shared: Rc<Shared>, slot: UserSlot) {
    let assign = &shared.assign;
    let deadline = match assign.bound {
        Bound::Duration(d) => Some(shared.start_at + d),
        Bound::Iterations(_) => None,
    };
    tokio::select! {
        _ = tokio::time::sleep_until(shared.start_at + slot.start_offset) => {}
        _ = shared.graceful.cancelled() => {}
    }
    let past_deadline = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
    if !shared.graceful.is_cancelled() && !past_deadline {
        shared.user_started();
        let scenario = &assign.scenarios[slot.scenario];
        let mut client = UserClient::new(
            shared.target.clone(),
            shared.tls.clone(),
            shared.policy.clone(),
        );
        let mut user = UserState::new(assign, slot.index);
        let stop_at = slot.stop_offset.map(|s| shared.start_at + s);
        let mut iteration: u64 = 0;
        loop {
            if let Bound::Iterations(n) = assign.bound
                && iteration >= n
            {
                break;
            }
            // A ramp-down stops the user between iterations...
            if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                break;
            }
            // Pinned where it is made: awaiting it by value would copy the
            // whole iteration future (about 2 KB) once per iteration.
            let it = std::pin::pin!(run_iteration(
                &shared,
                &mut client,
                &mut user,
                scenario,
                (slot.index, iteration),
                None,
                deadline,
            ));
            let go_on = match stop_at {
                // ...or abandons its iteration `graceful_stop` after the stop.
                Some(t) => tokio::select! {
                    go_on = it => go_on,
                    _ = tokio::time::sleep_until(t + assign.graceful_stop) => false,
                },
                None => it.await,
            };
            if !go_on {
                break;
            }
            iteration += 1;
        }
        shared.user_stopped();
    }
    shared.finished_one();
}

/// Waits for the worker's next request slot under `[load] throttle` (slots
/// are handed out in turn, one per spacing, never in a burst); false when
/// the user must stop first. The wait is not part of any latency.
async fn throttle(shared: &Shared, deadline: Option<tokio::time::Instant>) -> bool {
    let Some((spacing, next)) = &shared.throttle else {
        return true;
    };
    let now = tokio::time::Instant::now();
    let slot = next.get().max(now);
    next.set(slot + *spacing);
    if slot <= now {
        return true;
    }
    pause(shared, slot - now, deadline).await
}

/// Sleeps `pause` (think time, pacing); false when the user must stop first.
async fn pause(shared: &Shared, pause: Duration, deadline: Option<tokio::time::Instant>) -> bool {
    if pause.is_zero() {
        return true;
    }
    let until = tokio::time::Instant::now() + pause;
    let (until, stops) = match deadline {
        Some(d) if d <= until => (d, true),
        _ => (until, false),
    };
    tokio::select! {
        _ = tokio::time::sleep_until(until) => !stops,
        _ = shared.graceful.cancelled() => false,
    }
}

/// Runs one iteration of `scenario`; false when the user must stop (graceful
/// stop, deadline, or a failed step of a `stop_user` scenario). `key` is the
/// user's fleet-wide index and its iteration, which pick its data rows.
/// With `intended` (the open model's scheduled start), each step is also
/// measured from its intended send time: the iteration's lateness is added
/// to every step's latency, so a stall that delayed the iteration shows in
/// the percentiles (coordinated-omission correction).
async fn run_iteration(
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
enum Fault {
    Status(u16),
    Other(ErrorKind, String),
}

/// Checks a response and, when it passes, runs the step's extractions.
fn judge(step: &Step, reply: &Reply, body: &[u8], user: &mut UserState) -> Option<Fault> {
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

// === open model ===

/// How early polling timing stops sleeping: tokio's timer wheel has
/// millisecond ticks and the park timeout rounds up again, so a sleep can
/// end up to ~2 ms after its deadline.
const TIMER_MARGIN: Duration = Duration::from_millis(2);

/// Arrivals waiting for a free user, shared by one worker's open-model users.
struct OpenQueue {
    jobs: RefCell<VecDeque<(tokio::time::Instant, usize, u64)>>,
    idle: Cell<u32>,
    more: Notify,
    generating: Cell<bool>,
}

/// Starts this worker's share of the open model: its users (its part of
/// `max_users`) and the arrival generator feeding them.
fn start_open(shared: &Rc<Shared>, open: &OpenLoad, worker: usize, workers: usize, timing: Timing) {
    let w = worker as u32;
    let n = workers as u32;
    let users = open.max_users / n + u32::from(w < open.max_users % n);
    let queue = Rc::new(OpenQueue {
        jobs: RefCell::new(VecDeque::with_capacity(users as usize * 4 + 16)),
        idle: Cell::new(0),
        more: Notify::new(),
        generating: Cell::new(true),
    });
    shared.remaining.set(users as usize + 1);
    for u in 0..users {
        let seed = (worker as u64) << 32 | u64::from(u);
        tokio::task::spawn_local(open_user(shared.clone(), queue.clone(), seed));
    }
    tokio::task::spawn_local(generate(shared.clone(), queue, worker, workers, timing));
}

async fn generate(
    shared: Rc<Shared>,
    queue: Rc<OpenQueue>,
    worker: usize,
    workers: usize,
    timing: Timing,
) {
    let open = shared.assign.open.as_ref().expect("open model");
    let workers = workers as u64;
    let mut own = OwnArrivals::new(&open.schedule, open.period, &open.positions)
        .enumerate()
        .filter(|(m, _)| *m as u64 % workers == worker as u64)
        .map(|(m, (arrival, due))| (m as u64, arrival, shared.start_at + due))
        .peekable();
    // Made on first use, on this worker's reactor.
    let mut alarm: Option<crate::alarm::Alarm> = None;
    // The arrivals sharing the next wake-up: (index, arrival, instant).
    let mut batch: Vec<(u64, u64, tokio::time::Instant)> = Vec::with_capacity(COALESCE_MAX);
    'arrivals: while let Some(first) = own.next() {
        batch.clear();
        batch.push(first);
        let wake = match timing {
            Timing::Timer { window } => {
                // Every arrival due within the window of the first leaves at
                // the last one's instant: one wake-up instead of several.
                let until = first.2 + window;
                while batch.len() < COALESCE_MAX {
                    match own.next_if(|next| next.2 <= until) {
                        Some(next) => batch.push(next),
                        None => break,
                    }
                }
                let wake = batch.last().map_or(first.2, |b| b.2);
                let alarm = alarm.get_or_insert_with(crate::alarm::Alarm::new);
                tokio::select! {
                    _ = alarm.sleep_until(wake) => {}
                    _ = shared.graceful.cancelled() => break 'arrivals,
                }
                wake
            }
            Timing::Poll => {
                let at = first.2;
                // tokio's timer fires on millisecond ticks, up to ~2 ms late:
                // sleep to just before the instant, then yield (other tasks
                // keep running) until it arrives.
                tokio::select! {
                    _ = tokio::time::sleep_until(at.checked_sub(TIMER_MARGIN).unwrap_or(at)) => {}
                    _ = shared.graceful.cancelled() => break 'arrivals,
                }
                while tokio::time::Instant::now() < at && !shared.graceful.is_cancelled() {
                    tokio::task::yield_now().await;
                }
                at
            }
        };
        if shared.graceful.is_cancelled() {
            break;
        }
        debug_assert!(batch.iter().all(|b| b.2 <= wake));
        for &(m, arrival, at) in &batch {
            // With no wait allowed, an arrival needs an idle user that no
            // job already queued (earlier in this batch) has claimed: idle
            // users only take their jobs once this task yields.
            if open.max_wait.is_zero() && queue.jobs.borrow().len() >= queue.idle.get() as usize {
                shared.dropped.set(shared.dropped.get() + 1);
                continue;
            }
            let scenario = open.scenario_cycle[(m % open.scenario_cycle.len() as u64) as usize];
            queue.jobs.borrow_mut().push_back((at, scenario, arrival));
            queue.more.notify_one();
        }
        batch.clear();
    }
    // Arrivals of a wake-up the stop came before, whose instant had already
    // come (they waited for a later one's), were due and never run.
    let now = tokio::time::Instant::now();
    let unsent = batch.iter().filter(|b| b.2 <= now).count() as u64;
    // Arrivals still waiting when the load stops were never run: dropped, not lost.
    if shared.graceful.is_cancelled() {
        let left = queue.jobs.borrow_mut().drain(..).count() as u64;
        shared.dropped.set(shared.dropped.get() + left + unsent);
    }
    queue.generating.set(false);
    queue.more.notify_waiters();
    shared.finished_one();
}

async fn open_user(shared: Rc<Shared>, queue: Rc<OpenQueue>, seed: u64) {
    let open = shared.assign.open.as_ref().expect("open model");
    let mut client = UserClient::new(
        shared.target.clone(),
        shared.tls.clone(),
        shared.policy.clone(),
    );
    let mut user = UserState::new(&shared.assign, seed);
    loop {
        let job = loop {
            if let Some(job) = queue.jobs.borrow_mut().pop_front() {
                break Some(job);
            }
            if !queue.generating.get() {
                break None;
            }
            // Single-threaded: nothing runs between the checks above and
            // registering here, so no wake-up is missed.
            queue.idle.set(queue.idle.get() + 1);
            queue.more.notified().await;
            queue.idle.set(queue.idle.get() - 1);
        };
        let Some((intended, scenario, arrival)) = job else {
            break;
        };
        if tokio::time::Instant::now().saturating_duration_since(intended) > open.max_wait
            && !open.max_wait.is_zero()
        {
            shared.dropped.set(shared.dropped.get() + 1);
            continue;
        }
        shared.user_started();
        shared
            .recorder
            .borrow_mut()
            .record_lateness(tokio::time::Instant::now().saturating_duration_since(intended));
        // Each arrival is a new visitor: no cookies or variables carried over.
        client.cookies.clear();
        user.forget();
        // Pinned where it is made, as in the closed model.
        let go_on = std::pin::pin!(run_iteration(
            &shared,
            &mut client,
            &mut user,
            &shared.assign.scenarios[scenario],
            (arrival, 0),
            Some(intended),
            None,
        ))
        .await;
        shared.user_stopped();
        if !go_on {
            break;
        }
    }
    shared.finished_one();
}

// === impl Aggregator ===

/// Adds the workers' parts of each interval and serializes the result.
struct Aggregator {
    assign: Arc<Assignment>,
    out: mpsc::Sender<v1::Interval>,
    /// Per worker: highest seq received, and whether that one was its last.
    progress: Vec<(Option<u64>, bool)>,
    /// Intervals still waiting for some worker, oldest first.
    pending: std::collections::BTreeMap<u64, Pending>,
    next_seq: u64,
    serializer: crate::histogram_codec::WireEncoder,
    /// Every step of every interval sent so far, added together.
    sent: StepRecord,
    /// Open model: the send lateness of every interval sent so far.
    sent_lateness: Option<Histogram<u64>>,
    /// Where `sent` goes, serialized, once every interval is out.
    totals: Arc<OnceLock<v1::Totals>>,
    /// The process's health, sampled as each interval goes out.
    vitals: crate::vitals::Vitals,
    /// CPUs this process may use.
    cores: u32,
}

struct Pending {
    steps: Vec<Option<StepRecord>>,
    active: u32,
    active_peak: u32,
    active_mean: f64,
    elapsed: Duration,
    dropped: u64,
    started: u64,
    completed: u64,
    lateness: Option<Histogram<u64>>,
    lag_max_us: u64,
}

impl Aggregator {
    fn new(
        assign: Arc<Assignment>,
        workers: usize,
        out: mpsc::Sender<v1::Interval>,
        totals: Arc<OnceLock<v1::Totals>>,
    ) -> Aggregator {
        Aggregator {
            sent: StepRecord::new(assign.open.is_some()),
            sent_lateness: assign.open.is_some().then(crate::recorder::new_histogram),
            totals,
            assign,
            out,
            progress: vec![(None, false); workers],
            pending: Default::default(),
            next_seq: 0,
            serializer: crate::histogram_codec::WireEncoder::default(),
            vitals: crate::vitals::Vitals::start(),
            cores: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        }
    }

    fn run(mut self, mut parts: mpsc::Receiver<WorkerPart>) {
        while let Some(part) = parts.blocking_recv() {
            self.progress[part.worker] = (Some(part.seq), part.last);
            match self.pending.entry(part.seq) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Pending {
                        steps: part.steps,
                        active: part.active,
                        elapsed: part.elapsed,
                        dropped: part.dropped,
                        started: part.started,
                        completed: part.completed,
                        active_peak: part.active_peak,
                        active_mean: part.active_mean,
                        lateness: part.lateness,
                        lag_max_us: part.lag_max_us,
                    });
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let p = o.get_mut();
                    for (mine, theirs) in p.steps.iter_mut().zip(part.steps) {
                        match (mine.as_mut(), theirs) {
                            (Some(m), Some(t)) => m.add(&t),
                            (None, Some(t)) => *mine = Some(t),
                            (_, None) => {}
                        }
                    }
                    p.active += part.active;
                    p.elapsed = p.elapsed.max(part.elapsed);
                    p.dropped += part.dropped;
                    p.started += part.started;
                    p.completed += part.completed;
                    p.active_peak += part.active_peak;
                    p.active_mean += part.active_mean;
                    p.lag_max_us = p.lag_max_us.max(part.lag_max_us);
                    if let (Some(mine), Some(theirs)) = (&mut p.lateness, &part.lateness) {
                        mine.add(theirs).expect("same bounds");
                    }
                }
            }
            if !self.emit_complete() {
                return;
            }
        }
        // Every worker is gone: flush whatever is left, in order.
        let rest: Vec<u64> = self.pending.keys().copied().collect();
        for seq in rest {
            if !self.emit(seq) {
                return;
            }
        }
        self.set_totals();
    }

    /// Serializes `sent` for the agent's Done. Runs before `out` is dropped,
    /// so whoever sees the interval channel close finds the totals set.
    fn set_totals(&mut self) {
        let mut totals = v1::Totals {
            count: self.sent.count(),
            ..Default::default()
        };
        let encoded = self
            .serializer
            .encode(&self.sent.histogram, &mut totals.histogram)
            .and_then(
                |()| match self.sent.failed.as_ref().filter(|h| !h.is_empty()) {
                    Some(h) => self.serializer.encode(h, &mut totals.failed),
                    None => Ok(()),
                },
            )
            .and_then(|()| match &self.sent.uncorrected {
                Some(h) => self.serializer.encode(h, &mut totals.uncorrected),
                None => Ok(()),
            })
            .and_then(|()| match &self.sent_lateness {
                Some(h) if !h.is_empty() => self.serializer.encode(h, &mut totals.lateness),
                _ => Ok(()),
            });
        match encoded {
            Ok(()) => {
                let _ = self.totals.set(totals);
            }
            Err(e) => tracing::error!(error = ?e, "cannot serialize the run's totals"),
        }
    }

    /// An interval is complete when every worker has either reported it or
    /// finished before it.
    fn is_complete(&self, seq: u64) -> bool {
        self.progress
            .iter()
            .all(|&(last_seq, done)| matches!(last_seq, Some(s) if s >= seq || done))
    }

    fn emit_complete(&mut self) -> bool {
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if !self.is_complete(seq) {
                break;
            }
            if !self.emit(seq) {
                return false;
            }
        }
        true
    }

    /// A step's metrics as they go on the wire; a metric whose histogram
    /// cannot be encoded is left out (and said).
    fn encode_metrics(&mut self, rec: &crate::recorder::StepRecord) -> Vec<v1::MetricInterval> {
        let mut out = Vec::with_capacity(rec.metrics.len());
        for m in &rec.metrics {
            let mut histogram = Vec::new();
            if !m.histogram.is_empty()
                && let Err(e) = self.serializer.encode(&m.histogram, &mut histogram)
            {
                tracing::error!(error = ?e, "cannot serialize a metric's histogram");
                continue;
            }
            out.push(v1::MetricInterval {
                metric: m.id,
                histogram,
                missing: m.missing,
                sum: m.sum,
            });
        }
        out
    }

    fn emit(&mut self, seq: u64) -> bool {
        let Some(p) = self.pending.remove(&seq) else {
            return true;
        };
        debug_assert!(seq >= self.next_seq);
        self.next_seq = seq + 1;
        let mut steps = Vec::new();
        for (id, rec) in p.steps.iter().enumerate() {
            let Some(rec) = rec.as_ref().filter(|r| !r.is_empty()) else {
                continue;
            };
            let mut bytes = Vec::new();
            if let Err(e) = self.serializer.encode(&rec.histogram, &mut bytes) {
                tracing::error!(error = ?e, "cannot serialize histogram");
                continue;
            }
            let mut uncorrected = Vec::new();
            if let Some(h) = &rec.uncorrected
                && let Err(e) = self.serializer.encode(h, &mut uncorrected)
            {
                tracing::error!(error = ?e, "cannot serialize histogram");
                continue;
            }
            let mut failed = Vec::new();
            if let Some(h) = rec.failed.as_ref().filter(|h| !h.is_empty())
                && let Err(e) = self.serializer.encode(h, &mut failed)
            {
                tracing::error!(error = ?e, "cannot serialize histogram");
                continue;
            }
            add_latencies(&mut self.sent, rec);
            steps.push(v1::StepInterval {
                step: id as u32,
                histogram: bytes,
                uncorrected,
                failed,
                exchanges: rec.exchanges,
                retries: rec.retries,
                bytes_received: rec.bytes_received,
                bytes_decoded: rec.bytes_decoded,
                metrics: self.encode_metrics(rec),
                http2_responses: rec.http2_responses,
                count: rec.count(),
                errors: rec
                    .errors
                    .iter()
                    .map(|e| v1::ErrorCount {
                        kind: e.kind.label().into_owned(),
                        count: e.count,
                        sample: e.sample.clone(),
                    })
                    .collect(),
            });
        }
        let mut lateness = Vec::new();
        if let Some(h) = &p.lateness
            && !h.is_empty()
        {
            match self.serializer.encode(h, &mut lateness) {
                Ok(()) => {
                    if let Some(sent) = &mut self.sent_lateness
                        && sent.add(h).is_err()
                    {
                        tracing::error!("histogram bounds differ; the run's totals are incomplete");
                    }
                }
                Err(e) => tracing::error!(error = ?e, "cannot serialize histogram"),
            }
        }
        let vitals = self.vitals.sample();
        let interval = v1::Interval {
            loop_lag_max_us: p.lag_max_us,
            cpu_us: vitals.cpu_us,
            vitals_span_us: vitals.span_us,
            rss_bytes: vitals.rss_bytes,
            steal_permille: vitals.steal_permille,
            connections: vitals.connections,
            cores: self.cores,
            run_id: self.assign.run_id.clone(),
            seq,
            active_users: p.active,
            steps,
            elapsed_us: u64::try_from(p.elapsed.as_micros()).unwrap_or(u64::MAX),
            dropped: p.dropped,
            started: p.started,
            completed: p.completed,
            active_peak: p.active_peak,
            active_mean: p.active_mean,
            lateness,
        };
        self.out.blocking_send(interval).is_ok()
    }
}

/// Adds `rec`'s latencies (not its errors) into `into`.
fn add_latencies(into: &mut StepRecord, rec: &StepRecord) {
    let add = |mine: &mut Histogram<u64>, theirs: &Histogram<u64>| {
        if mine.add(theirs).is_err() {
            // Not reachable: every histogram has loadfleet's fixed bounds.
            tracing::error!("histogram bounds differ; the run's totals are incomplete");
        }
    };
    add(&mut into.histogram, &rec.histogram);
    if let (Some(mine), Some(theirs)) = (&mut into.uncorrected, &rec.uncorrected) {
        add(mine, theirs);
    }
    if let Some(theirs) = &rec.failed {
        add(
            into.failed
                .get_or_insert_with(crate::recorder::new_histogram),
            theirs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_windows_parse_with_their_unit() {
        assert_eq!(parse_window("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_window("500µs"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_window(" 2ms "), Ok(Duration::from_millis(2)));
        assert_eq!(parse_window("0"), Ok(Duration::ZERO));
        assert_eq!(parse_window("1000ms"), Ok(MAX_WINDOW));
        for bad in ["", "500", "0.5ms", "-1ms", "2s", "ms"] {
            let e = parse_window(bad).unwrap_err();
            assert!(e.contains("expected a window such as"), "{bad:?}: {e}");
        }
        let e = parse_window("1001ms").unwrap_err();
        assert!(e.contains("longer than the 1 s allowed"), "{e}");
    }

    #[test]
    fn timing_modes_by_name() {
        assert_eq!("timer".parse(), Ok(TimingMode::Timer));
        assert_eq!("poll".parse(), Ok(TimingMode::Poll));
        let e = "tick".parse::<TimingMode>().unwrap_err();
        assert_eq!(e, "unknown timing \"tick\": expected one of timer, poll");
        assert_eq!(
            TimingMode::Timer.with_window(Duration::from_millis(2)),
            Timing::Timer {
                window: Duration::from_millis(2)
            }
        );
        assert_eq!(
            Timing::default(),
            TimingMode::Timer.with_window(DEFAULT_WINDOW)
        );
    }

    #[test]
    fn timings_in_words() {
        let timer = |us| Timing::Timer {
            window: Duration::from_micros(us),
        };
        assert_eq!(Timing::default().describe(), "timer, 0.75 ms window");
        assert_eq!(timer(0).describe(), "timer, no window");
        assert_eq!(timer(1).describe(), "timer, 0.001 ms window");
        assert_eq!(timer(1500).describe(), "timer, 1.5 ms window");
        assert_eq!(timer(20_000).describe(), "timer, 20 ms window");
        assert_eq!(Timing::Poll.describe(), "poll");
    }
}
