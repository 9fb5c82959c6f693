//! The open model: arrivals at the schedule's instants, each handed to an
//! idle user of the worker, or counted as dropped.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;

use super::iteration::{UserState, run_iteration};
use super::timing::{COALESCE_MAX, Timing};
use super::worker::Shared;
use crate::arrivals::OwnArrivals;
use crate::assignment::OpenLoad;
use crate::client::UserClient;

/// How early polling timing stops sleeping: tokio's timer wheel has
/// millisecond ticks and the park timeout rounds up again, so a sleep can
/// end up to ~2 ms after its deadline.
pub(super) const TIMER_MARGIN: Duration = Duration::from_millis(2);

/// Arrivals waiting for a free user, shared by one worker's open-model users.
pub(super) struct OpenQueue {
    pub(super) jobs: RefCell<VecDeque<(tokio::time::Instant, usize, u64)>>,
    pub(super) idle: Cell<u32>,
    pub(super) more: Notify,
    pub(super) generating: Cell<bool>,
}

/// One worker's part of one rate schedule: which schedule, which of the
/// agent's arrivals (the m-th when `m mod workers == worker`) and how many
/// of its users.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenShare {
    pub(super) schedule: usize,
    pub(super) worker: u64,
    pub(super) workers: u64,
    pub(super) users: u32,
}

impl OpenShare {
    /// Worker `worker` of `workers`' share of schedule `k`: a schedule with
    /// fewer users than the agent has workers is run by its first workers
    /// only (each with at least one user), so no arrival waits on a worker
    /// without users. `None` for a worker outside it.
    pub(super) fn of(
        open: &OpenLoad,
        k: usize,
        worker: usize,
        workers: usize,
    ) -> Option<OpenShare> {
        let n = (workers as u32).min(open.max_users).max(1);
        let w = worker as u32;
        if w >= n {
            return None;
        }
        Some(OpenShare {
            schedule: k,
            worker: u64::from(w),
            workers: u64::from(n),
            users: open.max_users / n + u32::from(w < open.max_users % n),
        })
    }
}

/// Starts this worker's share of a rate schedule: its users (its part of
/// `max_users`) and the arrival generator feeding them. The caller counts
/// them in `remaining`.
pub(super) fn start_open(shared: &Rc<Shared>, share: OpenShare, timing: Timing) {
    let queue = Rc::new(OpenQueue {
        jobs: RefCell::new(VecDeque::with_capacity(share.users as usize * 4 + 16)),
        idle: Cell::new(0),
        more: Notify::new(),
        generating: Cell::new(true),
    });
    for u in 0..share.users {
        // Distinct among the worker's users of every schedule.
        let seed = share.worker << 32 | (share.schedule as u64) << 24 | u64::from(u);
        tokio::task::spawn_local(open_user(
            shared.clone(),
            queue.clone(),
            share.schedule,
            seed,
        ));
    }
    tokio::task::spawn_local(generate(shared.clone(), queue, share, timing));
}

pub(super) async fn generate(
    shared: Rc<Shared>,
    queue: Rc<OpenQueue>,
    share: OpenShare,
    timing: Timing,
) {
    let open = &shared.assign.open[share.schedule];
    let mut own = OwnArrivals::new(&open.schedule, open.period, &open.positions)
        .enumerate()
        .filter(|(m, _)| *m as u64 % share.workers == share.worker)
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

pub(super) async fn open_user(
    shared: Rc<Shared>,
    queue: Rc<OpenQueue>,
    schedule: usize,
    seed: u64,
) {
    let open = &shared.assign.open[schedule];
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
