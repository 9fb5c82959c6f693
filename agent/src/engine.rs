//! The load engine: runs an agent's virtual users on one single-threaded
//! runtime per worker thread and turns their recordings into interval reports.
//!
//! Each worker owns its users and its [`Recorder`]; a sample never leaves the
//! thread until the interval ends. Once per interval each worker hands its
//! records to the aggregator, which adds the workers' histograms per step and
//! serializes them (HdrHistogram V2 + DEFLATE) into a wire [`v1::Interval`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use loadfleet_proto::v1;
use tokio::sync::{Notify, mpsc};
use tokio::task::LocalSet;
use tokio_util::sync::CancellationToken;

use crate::assignment::{Assignment, Bound, UserSlot};
use crate::client::{Tls, UserClient};
use crate::recorder::{ErrorKind, Recorder, StepRecord};

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
}

impl Engine {
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
    steps: Vec<StepRecord>,
    active: u32,
    elapsed: Duration,
    last: bool,
}

/// Starts the agent's users on `workers` threads. The schedule's zero is
/// `start_at`; every offset in the assignment is relative to it.
pub fn start(
    assign: Arc<Assignment>,
    start_at: Instant,
    workers: usize,
) -> Result<Engine, EngineError> {
    let workers = workers.clamp(1, assign.users.len().max(1));
    let tls = if assign.target.scheme == http::uri::Scheme::HTTPS {
        Some(Tls::new(&assign.target.ca_pem)?)
    } else {
        None
    };
    let stop = StopHandle::default();
    let (part_tx, part_rx) = mpsc::channel(workers * 4);
    let (out_tx, out_rx) = mpsc::channel(64);
    let mut threads = Vec::with_capacity(workers + 1);
    let start_lateness_us = Arc::new(AtomicU64::new(0));
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
            assign: assign.clone(),
            users,
            start_at,
            stop: stop.clone(),
            tls: tls.clone(),
            parts: part_tx.clone(),
            start_lateness_us: start_lateness_us.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("loadfleet-worker-{w}"))
                .spawn(move || worker.run())?,
        );
    }
    drop(part_tx);
    let aggregator = Aggregator::new(assign, workers, out_tx);
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
    })
}

// === impl Worker ===

struct Worker {
    id: usize,
    assign: Arc<Assignment>,
    users: Vec<UserSlot>,
    start_at: Instant,
    stop: StopHandle,
    tls: Option<Tls>,
    parts: mpsc::Sender<WorkerPart>,
    start_lateness_us: Arc<AtomicU64>,
}

/// State shared by the users of one worker thread (never across threads).
struct Shared {
    assign: Arc<Assignment>,
    target: Arc<crate::assignment::Target>,
    tls: Option<Tls>,
    start_at: tokio::time::Instant,
    recorder: RefCell<Recorder>,
    active: Cell<u32>,
    remaining: Cell<usize>,
    all_done: Notify,
    graceful: CancellationToken,
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
            target: Arc::new(self.assign.target.clone()),
            tls: self.tls.clone(),
            start_at,
            recorder: RefCell::new(Recorder::new(self.assign.step_names.len())),
            active: Cell::new(0),
            remaining: Cell::new(self.users.len()),
            all_done: Notify::new(),
            graceful: self.stop.graceful.clone(),
            assign: self.assign.clone(),
        });
        if self.users.is_empty() {
            shared.all_done.notify_one();
        }
        for slot in &self.users {
            tokio::task::spawn_local(run_user(shared.clone(), *slot));
        }
        // Users are spawned and asleep; wake at the schedule's zero with them
        // and note how late that was.
        tokio::select! {
            _ = tokio::time::sleep_until(start_at) => {}
            _ = self.stop.hard.cancelled() => {}
        }
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
                    tracing::warn!("run reached its hard time limit; stopping all load");
                    true
                }
            };
            let elapsed = if finished {
                tokio::time::Instant::now().saturating_duration_since(start_at)
            } else {
                boundary - start_at
            };
            let part = WorkerPart {
                worker: self.id,
                seq,
                steps: shared.recorder.borrow_mut().take(),
                active: if finished { 0 } else { shared.active.get() },
                elapsed,
                last: finished,
            };
            if self.parts.send(part).await.is_err() || finished {
                break;
            }
            seq += 1;
        }
        // Leaving drops every user task still running: in-flight requests are abandoned.
    }
}

async fn run_user(shared: Rc<Shared>, slot: UserSlot) {
    let assign = &shared.assign;
    let deadline = match assign.bound {
        Bound::Duration(d) => Some(shared.start_at + d),
        Bound::Iterations(_) => None,
    };
    let past_deadline = || deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
    tokio::select! {
        _ = tokio::time::sleep_until(shared.start_at + slot.start_offset) => {}
        _ = shared.graceful.cancelled() => {}
    }
    if !shared.graceful.is_cancelled() && !past_deadline() {
        shared.active.set(shared.active.get() + 1);
        let scenario = &assign.scenarios[slot.scenario];
        let mut client = UserClient::new(shared.target.clone(), shared.tls.clone());
        let timeout = shared.target.timeout;
        let mut iteration: u64 = 0;
        'iterations: loop {
            if let Bound::Iterations(n) = assign.bound
                && iteration >= n
            {
                break;
            }
            for step in &scenario.steps {
                if shared.graceful.is_cancelled() || past_deadline() {
                    break 'iterations;
                }
                let sent = Instant::now();
                let outcome = tokio::time::timeout(timeout, client.send(step)).await;
                let latency = sent.elapsed();
                let mut rec = shared.recorder.borrow_mut();
                match outcome {
                    Ok(Ok(status)) => rec.record_response(step.id, latency, status),
                    Ok(Err((kind, msg))) => rec.record_failure(step.id, kind, || msg),
                    Err(_) => {
                        client.reset();
                        rec.record_failure(step.id, ErrorKind::Timeout, || {
                            format!("no complete response within {timeout:?}")
                        });
                    }
                }
            }
            iteration += 1;
        }
        shared.active.set(shared.active.get() - 1);
    }
    let left = shared.remaining.get() - 1;
    shared.remaining.set(left);
    if left == 0 {
        shared.all_done.notify_one();
    }
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
    serializer: V2DeflateSerializer,
}

struct Pending {
    steps: Vec<StepRecord>,
    active: u32,
    elapsed: Duration,
}

impl Aggregator {
    fn new(assign: Arc<Assignment>, workers: usize, out: mpsc::Sender<v1::Interval>) -> Aggregator {
        Aggregator {
            assign,
            out,
            progress: vec![(None, false); workers],
            pending: Default::default(),
            next_seq: 0,
            serializer: V2DeflateSerializer::new(),
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
                    });
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let p = o.get_mut();
                    for (mine, theirs) in p.steps.iter_mut().zip(&part.steps) {
                        mine.add(theirs);
                    }
                    p.active += part.active;
                    p.elapsed = p.elapsed.max(part.elapsed);
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

    fn emit(&mut self, seq: u64) -> bool {
        let Some(p) = self.pending.remove(&seq) else {
            return true;
        };
        debug_assert!(seq >= self.next_seq);
        self.next_seq = seq + 1;
        let mut steps = Vec::new();
        for (id, rec) in p.steps.iter().enumerate() {
            if rec.is_empty() {
                continue;
            }
            let mut bytes = Vec::new();
            if let Err(e) = self.serializer.serialize(&rec.histogram, &mut bytes) {
                tracing::error!(error = ?e, "cannot serialize histogram");
                continue;
            }
            steps.push(v1::StepInterval {
                step: id as u32,
                histogram: bytes,
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
        let interval = v1::Interval {
            run_id: self.assign.run_id.clone(),
            seq,
            active_users: p.active,
            steps,
            elapsed_us: u64::try_from(p.elapsed.as_micros()).unwrap_or(u64::MAX),
        };
        self.out.blocking_send(interval).is_ok()
    }
}
