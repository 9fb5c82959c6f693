//! The load engine: runs an agent's virtual users on one single-threaded
//! runtime per worker thread and turns their recordings into interval reports.
//!
//! Each worker owns its users and its
//! [`Recorder`](crate::recorder::Recorder); a sample never leaves the
//! thread until the interval ends. Once per interval each worker hands its
//! records to the aggregator, which adds the workers' histograms per step and
//! serializes them (HdrHistogram V2 + DEFLATE) into a wire [`v1::Interval`].
//!
//! Its parts: `timing` (how the open model waits for an instant),
//! `worker` (a thread, its runtime and the state its users share),
//! `closed` and `open` (the two load models' users), `iteration`
//! (one pass through a journey) and `aggregate` (intervals for the wire).

mod aggregate;
mod closed;
mod iteration;
mod open;
mod timing;
mod worker;

pub use timing::{DEFAULT_WINDOW, MAX_WINDOW, Timing, TimingMode, parse_window};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use loadfleet_proto::v1;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::assignment::{Assignment, UserSlot};
use crate::recorder::StepRecord;
use crate::tls::Tls;
use aggregate::Aggregator;
use worker::Worker;

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
    lease: Arc<LeaseClock>,
}

/// Until when the controller's lease lets the users send: checked by every
/// user before each request (one atomic load), so that a process frozen
/// past its lease sends nothing when it wakes, whichever thread wakes first.
#[derive(Debug)]
pub struct LeaseClock {
    origin: std::time::Instant,
    /// Microseconds after `origin`; `u64::MAX`: no lease (an engine run
    /// without a controller).
    until_us: AtomicU64,
}

impl Default for LeaseClock {
    fn default() -> LeaseClock {
        LeaseClock {
            origin: std::time::Instant::now(),
            until_us: AtomicU64::new(u64::MAX),
        }
    }
}

impl LeaseClock {
    /// Whether the lease still holds at `now`.
    #[inline]
    pub fn holds(&self, now: std::time::Instant) -> bool {
        // Seconds and microseconds apart: no 128-bit arithmetic per request.
        let d = now.saturating_duration_since(self.origin);
        let at = d
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(d.subsec_micros()));
        at <= self.until_us.load(Ordering::Relaxed)
    }
}

impl StopHandle {
    /// The lease now runs until `until` (each renewal moves it).
    pub fn lease_until(&self, until: std::time::Instant) {
        let us = u64::try_from(
            until
                .saturating_duration_since(self.lease.origin)
                .as_micros(),
        )
        .unwrap_or(u64::MAX);
        self.lease.until_us.store(us, Ordering::Relaxed);
    }

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
    abandoned: Arc<AtomicU64>,
}

impl Engine {
    /// Requests left waiting for a response when the load stopped at once
    /// (complete once the intervals have ended).
    pub fn abandoned(&self) -> Arc<AtomicU64> {
        self.abandoned.clone()
    }

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
    let units = assign.most_users();
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
    let abandoned = Arc::new(AtomicU64::new(0));
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
            abandoned: abandoned.clone(),
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
        abandoned,
    })
}
