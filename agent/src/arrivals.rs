//! The open model's arrival schedule: a piecewise-linear rate, the instant
//! of every fleet-wide arrival computed in closed form, and the subset dealt
//! to one agent. Every agent computes the same instants from the same
//! stages, so the fleet's merged arrivals are the single-machine schedule.

use std::time::Duration;

/// Arrivals per second ramping linearly from `from` to `to` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateStage {
    pub from: f64,
    pub to: f64,
    pub duration: Duration,
}

/// The fleet-wide schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSchedule {
    stages: Vec<RateStage>,
    /// Per stage: its start (s) and the arrivals before it.
    starts: Vec<(f64, f64)>,
    total_arrivals: f64,
    duration: Duration,
}

impl RateSchedule {
    /// Stages must have finite, non-negative rates.
    pub fn new(stages: Vec<RateStage>) -> RateSchedule {
        let mut starts = Vec::with_capacity(stages.len());
        let (mut t, mut n) = (0.0, 0.0);
        for s in &stages {
            starts.push((t, n));
            let d = s.duration.as_secs_f64();
            t += d;
            n += (s.from + s.to) / 2.0 * d;
        }
        RateSchedule {
            duration: stages.iter().map(|s| s.duration).sum(),
            stages,
            starts,
            total_arrivals: n,
        }
    }

    /// Arrivals in the whole schedule (arrival `i` exists for `i < count`).
    pub fn count(&self) -> u64 {
        // The tiny epsilon keeps 200/s x 5 s at 1000 despite float rounding.
        (self.total_arrivals - 1e-9).ceil().max(0.0) as u64
    }

    /// The highest rate of any stage.
    pub fn peak(&self) -> Option<f64> {
        self.stages
            .iter()
            .map(|s| s.from.max(s.to))
            .reduce(f64::max)
    }

    /// Length of the schedule.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// When fleet-wide arrival `i` is due, from the start; `None` past the end.
    pub fn time_of(&self, i: u64) -> Option<Duration> {
        if i >= self.count() {
            return None;
        }
        let k = i as f64;
        // The last stage whose arrivals-before is <= k.
        let s = self
            .starts
            .partition_point(|&(_, before)| before <= k)
            .saturating_sub(1);
        let (start, before) = self.starts[s];
        let stage = self.stages[s];
        let d = stage.duration.as_secs_f64();
        let k = k - before;
        let (r0, r1) = (stage.from, stage.to);
        let tau = if (r1 - r0).abs() < 1e-12 {
            if r0 <= 0.0 { d } else { k / r0 }
        } else {
            // k = r0*tau + (r1 - r0)*tau^2 / (2d)
            let a = (r1 - r0) / (2.0 * d);
            let disc = (r0 * r0 + 4.0 * a * k).max(0.0);
            (-r0 + disc.sqrt()) / (2.0 * a)
        };
        let t = (start + tau.clamp(0.0, d)).max(0.0);
        Some(Duration::from_secs_f64(t))
    }
}

/// The arrivals dealt to one agent: fleet-wide arrival `i` is this agent's
/// when `i mod period` is one of `positions` (sorted).
#[derive(Debug, Clone)]
pub struct OwnArrivals<'a> {
    schedule: &'a RateSchedule,
    period: u64,
    positions: &'a [u32],
    cycle: u64,
    next: usize,
}

impl<'a> OwnArrivals<'a> {
    pub fn new(schedule: &'a RateSchedule, period: u32, positions: &'a [u32]) -> OwnArrivals<'a> {
        OwnArrivals {
            schedule,
            period: u64::from(period.max(1)),
            positions,
            cycle: 0,
            next: 0,
        }
    }
}

impl Iterator for OwnArrivals<'_> {
    /// (fleet-wide index, due time from the start)
    type Item = (u64, Duration);

    fn next(&mut self) -> Option<(u64, Duration)> {
        if self.positions.is_empty() {
            return None;
        }
        if self.next == self.positions.len() {
            self.next = 0;
            self.cycle += 1;
        }
        let i = self.cycle * self.period + u64::from(self.positions[self.next]);
        self.next += 1;
        self.schedule.time_of(i).map(|t| (i, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(from: f64, to: f64, secs: u64) -> RateStage {
        RateStage {
            from,
            to,
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn constant_rate_is_evenly_spaced() {
        let s = RateSchedule::new(vec![stage(200.0, 200.0, 5)]);
        assert_eq!(s.count(), 1000);
        assert_eq!(s.time_of(0), Some(Duration::ZERO));
        assert_eq!(s.time_of(1), Some(Duration::from_millis(5)));
        assert_eq!(s.time_of(999), Some(Duration::from_millis(4995)));
        assert_eq!(s.time_of(1000), None);
    }

    #[test]
    fn linear_ramp_follows_the_integral() {
        // 0 -> 100/s over 10 s: 500 arrivals; N(t) = 5 t^2, so arrival k at sqrt(k/5).
        let s = RateSchedule::new(vec![stage(0.0, 100.0, 10)]);
        assert_eq!(s.count(), 500);
        for k in [1u64, 20, 125, 499] {
            let t = s.time_of(k).unwrap().as_secs_f64();
            assert!(
                (t - (k as f64 / 5.0).sqrt()).abs() < 1e-6,
                "arrival {k} at {t}"
            );
        }
        // Ramp, hold, ramp down: counts add up per stage.
        let s = RateSchedule::new(vec![
            stage(0.0, 100.0, 10),
            stage(100.0, 100.0, 10),
            stage(100.0, 0.0, 10),
        ]);
        assert_eq!(s.count(), 2000);
        assert_eq!(s.time_of(500), Some(Duration::from_secs(10)));
        assert_eq!(s.time_of(1500), Some(Duration::from_secs(20)));
        let last = s.time_of(1999).unwrap().as_secs_f64();
        assert!(last < 30.0 && last > 29.0, "{last}");
        assert_eq!(s.duration(), Duration::from_secs(30));
    }

    #[test]
    fn per_second_counts_match_the_rate() {
        let s = RateSchedule::new(vec![stage(1000.0, 1000.0, 3)]);
        let mut per_second = [0u32; 3];
        for i in 0..s.count() {
            per_second[s.time_of(i).unwrap().as_secs() as usize] += 1;
        }
        assert_eq!(per_second, [1000, 1000, 1000]);
    }

    #[test]
    fn agents_split_the_arrivals_exactly() {
        let s = RateSchedule::new(vec![stage(100.0, 100.0, 2)]);
        // Weights 2:1 give period 3; SWRR picks a, b, a.
        let a: Vec<u64> = OwnArrivals::new(&s, 3, &[0, 2]).map(|(i, _)| i).collect();
        let b: Vec<u64> = OwnArrivals::new(&s, 3, &[1]).map(|(i, _)| i).collect();
        assert_eq!(a.len() + b.len(), 200);
        assert_eq!((a.len(), b.len()), (133, 67));
        let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
        all.sort();
        assert_eq!(
            all,
            (0..200).collect::<Vec<_>>(),
            "together they are the single-machine schedule"
        );
        assert_eq!(OwnArrivals::new(&s, 3, &[]).count(), 0);
    }
}
