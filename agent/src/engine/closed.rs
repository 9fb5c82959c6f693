//! The closed model: each user runs iterations one after another, paced
//! by its think time and throttle, until its bound.

use std::rc::Rc;
use std::time::Duration;

use super::iteration::{UserState, run_iteration};
use super::worker::Shared;
use crate::assignment::{Bound, UserSlot};
use crate::client::UserClient;

pub(super) async fn run_user(shared: Rc<Shared>, slot: UserSlot) {
    let assign = &shared.assign;
    // The user's own bound (its scenario's load), else the run's.
    let bound = slot.bound.unwrap_or(assign.bound);
    let deadline = match bound {
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
            if let Bound::Iterations(n) = bound
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
pub(super) async fn throttle(shared: &Shared, deadline: Option<tokio::time::Instant>) -> bool {
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
pub(super) async fn pause(
    shared: &Shared,
    pause: Duration,
    deadline: Option<tokio::time::Instant>,
) -> bool {
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
