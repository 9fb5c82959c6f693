//! Request timeouts without a timer operation per request.
//!
//! `tokio::time::timeout` gives every request a timer of its own: the timer
//! is entered into the runtime's timer wheel when the request first waits
//! and taken out again when it ends. A user's requests share one timeout, so
//! their deadlines only move forward. A user keeps one timer instead, and
//! each request only notes its own deadline. The timer is moved when it
//! fires before the request's deadline (at most once per timeout period,
//! not once per request) or when a deadline is earlier than the timer's.
//! When it fires between requests it wakes the user once, harmlessly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// A user's one request timer, created with the user (inside its task) and
/// kept pinned for the user's lifetime.
pub fn user_timer() -> Sleep {
    tokio::time::sleep_until(Instant::now())
}

/// Runs `fut` until `deadline`, on `timer`: `None` when the deadline passed
/// first. `fut` is polled before the timer is looked at, so a response that
/// is ready at the deadline counts.
pub fn within<'t, F: Future>(
    timer: Pin<&'t mut Sleep>,
    deadline: Instant,
    fut: F,
) -> Within<'t, F> {
    Within {
        fut,
        timer,
        deadline,
        checked: false,
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`within`].
    pub struct Within<'t, F> {
        #[pin]
        fut: F,
        timer: Pin<&'t mut Sleep>,
        deadline: Instant,
        checked: bool,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.checked {
            *this.checked = true;
            if this.timer.deadline() > *this.deadline {
                this.timer.as_mut().reset(*this.deadline);
            }
        }
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        // The timer may be set earlier than this request's deadline (an
        // earlier request's): move it on and wait again.
        while this.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= *this.deadline {
                return Poll::Ready(None);
            }
            this.timer.as_mut().reset(*this.deadline);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    /// Waits `d`, then is ready.
    async fn takes(d: Duration) -> u32 {
        tokio::time::sleep(d).await;
        7
    }

    #[test]
    fn a_request_ready_before_its_deadline_is_returned() {
        runtime().block_on(async {
            let mut timer = std::pin::pin!(user_timer());
            let deadline = Instant::now() + Duration::from_secs(5);
            let got = within(timer.as_mut(), deadline, takes(Duration::from_millis(20))).await;
            assert_eq!(got, Some(7));
        });
    }

    /// The timer still holds the first request's deadline when the second
    /// starts; it fires early for the second, which must run on to its own
    /// deadline, one timeout after it was sent.
    #[test]
    fn a_timer_left_at_an_earlier_deadline_is_moved_on() {
        runtime().block_on(async {
            let timeout = Duration::from_millis(300);
            let mut timer = std::pin::pin!(user_timer());
            let first = within(
                timer.as_mut(),
                Instant::now() + timeout,
                takes(Duration::from_millis(10)),
            )
            .await;
            assert_eq!(first, Some(7));
            tokio::time::sleep(Duration::from_millis(150)).await;
            let sent = Instant::now();
            let second = within(
                timer.as_mut(),
                sent + timeout,
                std::future::pending::<u32>(),
            )
            .await;
            let waited = sent.elapsed();
            assert_eq!(second, None);
            println!("timed out after {waited:?} (timeout {timeout:?})");
            assert!(
                waited >= timeout,
                "timed out after {waited:?}, before its {timeout:?} deadline"
            );
            assert!(
                waited < timeout + Duration::from_millis(200),
                "timed out late: {waited:?}"
            );
        });
    }

    /// A deadline earlier than the timer's (a shorter timeout than the last
    /// request's) moves the timer back.
    #[test]
    fn an_earlier_deadline_moves_the_timer_back() {
        runtime().block_on(async {
            let mut timer = std::pin::pin!(user_timer());
            let long = Instant::now() + Duration::from_secs(30);
            let first = within(timer.as_mut(), long, takes(Duration::from_millis(20))).await;
            assert_eq!(first, Some(7));
            assert_eq!(
                timer.deadline(),
                long,
                "the first request moved the timer to its deadline"
            );
            let sent = Instant::now();
            let short = Duration::from_millis(100);
            let second = within(timer.as_mut(), sent + short, std::future::pending::<u32>()).await;
            let waited = sent.elapsed();
            println!("timed out after {waited:?} (timeout {short:?})");
            assert_eq!(second, None);
            assert!(
                waited >= short && waited < Duration::from_secs(1),
                "waited {waited:?}"
            );
        });
    }

    /// Requests that finish quickly leave the timer alone: no timer
    /// operation per request.
    #[test]
    fn quick_requests_do_not_move_the_timer() {
        runtime().block_on(async {
            let mut timer = std::pin::pin!(user_timer());
            let timeout = Duration::from_secs(30);
            within(
                timer.as_mut(),
                Instant::now() + timeout,
                takes(Duration::from_millis(1)),
            )
            .await;
            let set = timer.deadline();
            for _ in 0..20 {
                let got = within(
                    timer.as_mut(),
                    Instant::now() + timeout,
                    takes(Duration::from_millis(1)),
                )
                .await;
                assert_eq!(got, Some(7));
            }
            assert_eq!(
                timer.deadline(),
                set,
                "20 requests later the timer is where the first put it"
            );
        });
    }
}
