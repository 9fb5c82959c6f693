//! A one-shot high-resolution timer for the open model's generator.
//!
//! tokio's timer wheel has millisecond ticks, and the reactor's wait rounds
//! up again, so a tokio sleep ends up to about 2 ms after its deadline. On
//! Linux an [`Alarm`] is a `timerfd` registered with the worker's reactor:
//! the kernel wakes the worker at the deadline itself (timerfd is exempt from
//! timer slack), and the worker sleeps in the same `epoll_wait` as its
//! sockets, so a wake-up for an arrival also reads any responses that came
//! in. Elsewhere, or when the kernel refuses a timerfd, it falls back to
//! tokio's timer and says so.

use tokio::time::Instant;

/// Where an [`Alarm`] gets its wake-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A kernel timer to the deadline (Linux timerfd).
    Kernel,
    /// tokio's millisecond timer.
    Tokio,
}

pub struct Alarm {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Alarm {
    /// A new alarm on the current runtime's reactor. Never fails: without a
    /// kernel timer it uses tokio's ([`Alarm::source`] tells which, and the
    /// reason is logged once per alarm).
    pub fn new() -> Alarm {
        #[cfg(target_os = "linux")]
        {
            match linux::timerfd() {
                Ok(fd) => Alarm { fd: Some(fd) },
                Err(e) => {
                    tracing::warn!(
                        "no high-resolution timer ({e}): arrivals wait on the millisecond \
                         timer and may leave up to ~2 ms late (reported as send lateness)"
                    );
                    Alarm { fd: None }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        Alarm {}
    }

    pub fn source(&self) -> Source {
        #[cfg(target_os = "linux")]
        if self.fd.is_some() {
            return Source::Kernel;
        }
        Source::Tokio
    }

    /// Sleeps until `at`; returns at once when it has passed.
    pub async fn sleep_until(&mut self, at: Instant) {
        let now = Instant::now();
        if at <= now {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            match linux::wait(fd, at - now).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        "the high-resolution timer failed ({e}): arrivals now wait on the \
                         millisecond timer and may leave up to ~2 ms late"
                    );
                    self.fd = None;
                }
            }
        }
        tokio::time::sleep_until(at).await;
    }
}

impl Default for Alarm {
    fn default() -> Alarm {
        Alarm::new()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    pub(super) fn timerfd() -> io::Result<AsyncFd<OwnedFd>> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        register(fd)
    }

    // tokio deprecated its safe constructors because a type's `as_raw_fd`
    // could change while registered; an `OwnedFd` owns one descriptor for its
    // whole life, so the safe one is sound here and the crate stays free of
    // `unsafe`.
    #[expect(
        deprecated,
        reason = "sound for OwnedFd; the replacement is an unsafe fn"
    )]
    fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
        AsyncFd::with_interest(fd, Interest::READABLE)
    }

    /// Arms the timer `after` from now (relative, so no conversion between
    /// `Instant` and the kernel's clock is needed) and waits for it.
    pub(super) async fn wait(fd: &AsyncFd<OwnedFd>, after: Duration) -> io::Result<()> {
        // A zero it_value would disarm the timer instead of firing it.
        let after = after.max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(after.subsec_nanos()),
            },
        };
        timerfd_settime(fd, TimerfdTimerFlags::empty(), &spec)?;
        loop {
            let mut ready = fd.readable().await?;
            let mut expirations = [0u8; 8];
            match ready.try_io(|fd| Ok(rustix::io::read(fd, &mut expirations)?)) {
                Ok(Ok(_)) => {
                    // Read, and one-shot: the timer is neither readable nor
                    // armed until the next wait arms it, and that arming's
                    // expiry is a new edge for the reactor.
                    ready.clear_ready();
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
                // Readiness left over from before this arming: try_io has
                // cleared it; wait for the real expiry.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A kernel alarm wakes within a fraction of tokio's millisecond tick:
    /// 200 sleeps of 300 µs each, every one on time or late by less than a
    /// millisecond at the median (tokio's timer would add about 1 ms to each).
    #[test]
    fn wakes_at_the_deadline_not_on_the_next_tick() {
        runtime().block_on(async {
            let mut alarm = Alarm::new();
            assert_eq!(alarm.source(), Source::Kernel);
            let mut late = Vec::new();
            for _ in 0..200 {
                let at = Instant::now() + Duration::from_micros(300);
                alarm.sleep_until(at).await;
                let now = Instant::now();
                assert!(now >= at, "woke {:?} early", at - now);
                late.push(now - at);
            }
            late.sort();
            eprintln!(
                "alarm lateness p50 {:?}, p90 {:?}, max {:?}",
                late[100], late[180], late[199]
            );
            assert!(
                late[100] < Duration::from_micros(500),
                "p50 {:?}",
                late[100]
            );
        });
    }

    /// An expiry nobody waited for (the wait was cancelled) does not end the
    /// next wait early: arming again resets the timer's count.
    #[test]
    fn a_cancelled_wait_leaves_nothing_behind() {
        runtime().block_on(async {
            let mut alarm = Alarm::new();
            let soon = Instant::now() + Duration::from_millis(30);
            let cancelled = tokio::time::timeout(Duration::ZERO, alarm.sleep_until(soon)).await;
            assert!(cancelled.is_err(), "the timeout should win");
            // The timer was armed (the wait was polled once); let it expire
            // unread.
            std::thread::sleep(Duration::from_millis(40));
            let start = Instant::now();
            alarm.sleep_until(start + Duration::from_millis(20)).await;
            let slept = start.elapsed();
            eprintln!("slept {slept:?} for a 20 ms wait after a stale expiry");
            assert!(slept >= Duration::from_millis(20), "slept only {slept:?}");
        });
    }

    #[test]
    fn a_past_deadline_returns_at_once() {
        runtime().block_on(async {
            let mut alarm = Alarm::new();
            let start = Instant::now();
            alarm.sleep_until(start - Duration::from_millis(5)).await;
            alarm.sleep_until(start).await;
            assert!(start.elapsed() < Duration::from_millis(1));
        });
    }
}
