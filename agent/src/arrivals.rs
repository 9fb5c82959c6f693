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

impl RateSchedule {
    /// The rate at `t` s from the start, and just before it (the two differ
    /// at a stage's boundary when a stage jumps); zero outside the schedule.
    fn rates_at(&self, t: f64) -> (f64, f64) {
        let (mut before, mut at) = (0.0f64, 0.0f64);
        for (stage, &(start, _)) in self.stages.iter().zip(&self.starts) {
            let d = stage.duration.as_secs_f64();
            let end = start + d;
            let rate = |x: f64| stage.from + (stage.to - stage.from) * ((x - start) / d);
            if t > start && t <= end {
                before = rate(t);
            }
            if t >= start && t < end {
                at = rate(t);
            }
        }
        (before, at)
    }
}

/// The highest rate of several schedules run at once, each scaled by a
/// share (an agent's part of the fleet's arrivals): rates are linear between
/// stage boundaries, so the sum peaks at one of them.
pub fn peak_of_sum(schedules: &[(&RateSchedule, f64)]) -> f64 {
    let mut instants: Vec<f64> = Vec::new();
    for (s, _) in schedules {
        instants.extend(s.starts.iter().map(|&(start, _)| start));
        instants.push(s.duration.as_secs_f64());
    }
    instants
        .into_iter()
        .map(|t| {
            let (before, at) = schedules.iter().fold((0.0, 0.0), |(b, a), (s, share)| {
                let (sb, sa) = s.rates_at(t);
                (b + sb * share, a + sa * share)
            });
            f64::max(before, at)
        })
        .fold(0.0, f64::max)
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

    #[test]
    fn the_peak_of_schedules_run_at_once_is_at_the_busiest_instant() {
        // 10/s for 10 s, and 0/s for 10 s then 20/s: never both at once.
        let a = RateSchedule::new(vec![stage(10.0, 10.0, 10)]);
        let b = RateSchedule::new(vec![stage(0.0, 0.0, 10), stage(20.0, 20.0, 5)]);
        assert_eq!(peak_of_sum(&[(&a, 1.0), (&b, 1.0)]), 20.0);
        // Overlapping ramps: 0→10 over 10 s and 10→0 over 10 s sum to 10
        // everywhere; with a 5 s hold of 10 first, 10 + 10 at 5 s.
        let up = RateSchedule::new(vec![stage(0.0, 10.0, 10)]);
        let down = RateSchedule::new(vec![stage(10.0, 0.0, 10)]);
        assert!((peak_of_sum(&[(&up, 1.0), (&down, 1.0)]) - 10.0).abs() < 1e-9);
        let late = RateSchedule::new(vec![stage(0.0, 0.0, 5), stage(10.0, 10.0, 5)]);
        assert_eq!(peak_of_sum(&[(&up, 1.0), (&late, 0.5)]), 15.0);
        assert_eq!(peak_of_sum(&[]), 0.0);
    }
}
