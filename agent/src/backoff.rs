//! Reconnect delays: exponential, capped, with jitter so a fleet that lost its
//! controller does not reconnect in lock-step.

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is half the
/// exponential step plus a random part of up to the other half.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// Delays start near `base` and never exceed `cap`.
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// The un-jittered delay of attempt `n` (0-based): `base * 2^n`, capped.
    pub fn step(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, in `[step/2, step]`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let r = if jitter_ns == 0 {
            0
        } else {
            self.next_random() % (jitter_ns + 1)
        };
        half + Duration::from_nanos(r)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    // xorshift64: plenty for spreading reconnects, no dependency needed.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(3), 7);
        let steps: Vec<u128> = (0..8).map(|n| b.step(n).as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
        assert_eq!(
            b.step(1000),
            Duration::from_secs(3),
            "huge attempt counts do not overflow"
        );
    }

    #[test]
    fn jitter_stays_in_upper_half_and_varies() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(3), 42);
        let mut seen = std::collections::HashSet::new();
        for n in 0..50 {
            let step = b.step(n);
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "attempt {n}: {d:?} not in [{:?}, {step:?}]",
                step / 2
            );
            seen.insert(d);
        }
        assert!(seen.len() > 40, "only {} distinct delays", seen.len());
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
