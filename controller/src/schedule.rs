//! Dealing the schedule: compute the single-machine schedule first, then deal
//! its users to agents in order, by weight. Each agent receives the global
//! offsets of its own users, so the fleet's merged ramp is the single-machine
//! ramp by construction, whatever the number of agents.

use std::time::Duration;

/// One user of the fleet-wide schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub index: u64,
    pub start_offset: Duration,
    pub scenario: u32,
    /// When a ramp-down stops this user; `None` for the end of the run.
    pub stop_offset: Option<Duration>,
    /// Its scenario's own load: the user's iterations (0: the run's
    /// bound), or its end from the run's start.
    pub iterations: u64,
    pub end: Option<Duration>,
}

/// Smooth weighted round-robin: over any window of `sum(weights)` picks each
/// index `i` is chosen exactly `weights[i]` times, spread out rather than in
/// runs (the nginx algorithm). Deterministic.
#[derive(Debug, Clone)]
pub struct SmoothRoundRobin {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl SmoothRoundRobin {
    /// `weights` must be non-empty; zero weights are never picked.
    pub fn new(weights: &[u32]) -> SmoothRoundRobin {
        let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w)).collect();
        SmoothRoundRobin {
            total: weights.iter().sum(),
            current: vec![0; weights.len()],
            weights,
        }
    }

    /// The next index.
    pub fn pick(&mut self) -> usize {
        let mut best = 0;
        for i in 0..self.weights.len() {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        best
    }
}

/// The closed-model schedule of one machine: user `k` of `n` starts at
/// `k * ramp_up / n`; its scenario is dealt by scenario weight.
pub fn closed_slots(users: u64, ramp_up: Duration, scenario_weights: &[u32]) -> Vec<Slot> {
    let ramp_us = ramp_up.as_micros();
    let mut scenarios = SmoothRoundRobin::new(scenario_weights);
    (0..users)
        .map(|k| {
            let offset_us = ramp_us * u128::from(k) / u128::from(users.max(1));
            Slot {
                index: k,
                start_offset: Duration::from_micros(u64::try_from(offset_us).unwrap_or(u64::MAX)),
                scenario: scenarios.pick() as u32,
                stop_offset: None,
                iterations: 0,
                end: None,
            }
        })
        .collect()
}

/// One scenario's own load, as the schedule needs it.
#[derive(Debug, Clone, Copy)]
pub struct ScenarioUsers {
    pub scenario: u32,
    pub users: u64,
    pub ramp_up: Duration,
    /// When its first user starts, from the run's start.
    pub start: Duration,
    /// Iterations per user (0: bounded by `end`).
    pub iterations: u64,
    pub end: Option<Duration>,
}

/// The schedule of loads per scenario, one after another in the fleet's
/// user numbers: scenario `s`'s user `k` of `n` starts at
/// `start + k * ramp_up / n`, with its scenario's bound.
pub fn scenario_slots(loads: &[ScenarioUsers]) -> Vec<Slot> {
    let mut slots = Vec::new();
    let mut index = 0u64;
    for l in loads {
        let ramp_us = l.ramp_up.as_micros();
        for k in 0..l.users {
            let offset_us = ramp_us * u128::from(k) / u128::from(l.users.max(1));
            slots.push(Slot {
                index,
                start_offset: l.start
                    + Duration::from_micros(u64::try_from(offset_us).unwrap_or(u64::MAX)),
                scenario: l.scenario,
                stop_offset: None,
                iterations: l.iterations,
                end: l.end,
            });
            index += 1;
        }
    }
    slots
}

/// The closed-model schedule of `stages` of `(users, duration)`, each ramping
/// linearly from the previous level (from 0). Ramping up from `a` to `b` over
/// `d` starts user `k` (a <= k < b) at `(k - a) * d / (b - a)` into the
/// stage, as `ramp_up` does; ramping down stops the highest users first,
/// user `k` (b <= k < a) at `(a - k) * d / (a - b)`. A user stopped and
/// needed again later gets a new slot with the same index.
pub fn staged_slots(stages: &[(u64, Duration)], scenario_weights: &[u32]) -> Vec<Slot> {
    let mut slots: Vec<Slot> = Vec::new();
    // Per user index: its open slot, if running.
    let mut open: Vec<Option<usize>> = Vec::new();
    let mut scenarios = SmoothRoundRobin::new(scenario_weights);
    let mut user_scenario: Vec<u32> = Vec::new();
    let (mut t, mut level) = (Duration::ZERO, 0u64);
    let at = |t: Duration, d: Duration, num: u64, den: u64| {
        t + Duration::from_micros(
            u64::try_from(d.as_micros() * u128::from(num) / u128::from(den.max(1)))
                .unwrap_or(u64::MAX),
        )
    };
    for &(target, d) in stages {
        if target > level {
            for k in level..target {
                let idx = k as usize;
                if open.len() <= idx {
                    open.resize(idx + 1, None);
                    user_scenario.push(scenarios.pick() as u32);
                }
                open[idx] = Some(slots.len());
                slots.push(Slot {
                    index: k,
                    start_offset: at(t, d, k - level, target - level),
                    scenario: user_scenario[idx],
                    stop_offset: None,
                    iterations: 0,
                    end: None,
                });
            }
        } else if target < level {
            for k in target..level {
                if let Some(i) = open[k as usize].take() {
                    slots[i].stop_offset = Some(at(t, d, level - k, level - target));
                }
            }
        }
        t += d;
        level = target;
    }
    // The end of the last stage stops everyone still running, gracefully too.
    for i in open.into_iter().flatten() {
        slots[i].stop_offset = Some(t);
    }
    slots.sort_by_key(|s| (s.start_offset, s.index));
    slots
}

/// Deals slots to agents by weight: `result[a]` holds agent `a`'s slots in
/// schedule order. One weighted round-robin runs over the users grouped by
/// scenario, so each agent gets its exact share of users overall and of every
/// scenario (the same mix in every region), and consecutive users of a
/// scenario land on different agents, so no agent's share clumps in time.
pub fn deal(slots: &[Slot], agent_weights: &[u32]) -> Vec<Vec<Slot>> {
    let mut out = vec![Vec::new(); agent_weights.len()];
    if agent_weights.is_empty() {
        return out;
    }
    let mut order: Vec<&Slot> = slots.iter().collect();
    order.sort_by_key(|s| s.scenario);
    let mut rr = SmoothRoundRobin::new(agent_weights);
    for s in order {
        out[rr.pick()].push(*s);
    }
    for share in &mut out {
        share.sort_by_key(|s| s.index);
    }
    out
}

/// One period of the weighted round-robin over agents: for each agent, the
/// positions (mod `sum(weights)`) of the fleet-wide arrivals it runs.
pub fn arrival_positions(agent_weights: &[u32]) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); agent_weights.len()];
    let period: u32 = agent_weights.iter().sum();
    let mut rr = SmoothRoundRobin::new(agent_weights);
    for pos in 0..period {
        out[rr.pick()].push(pos);
    }
    out
}

/// Splits `count` units across agents by weight, exactly.
pub fn split_count(count: u64, agent_weights: &[u32]) -> Vec<u32> {
    let mut out = vec![0u32; agent_weights.len()];
    if agent_weights.is_empty() {
        return out;
    }
    let mut rr = SmoothRoundRobin::new(agent_weights);
    for _ in 0..count {
        let i = rr.pick();
        out[i] = out[i].saturating_add(1);
    }
    out
}

/// One cycle of scenario indices in weighted round-robin order.
pub fn cycle(weights: &[u32]) -> Vec<u32> {
    let mut rr = SmoothRoundRobin::new(weights);
    (0..weights.iter().sum::<u32>())
        .map(|_| rr.pick() as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_offsets_are_k_times_ramp_over_n() {
        let slots = closed_slots(4, Duration::from_secs(2), &[1]);
        let offsets: Vec<u128> = slots.iter().map(|s| s.start_offset.as_millis()).collect();
        assert_eq!(offsets, [0, 500, 1000, 1500]);
        assert!(
            closed_slots(3, Duration::ZERO, &[1])
                .iter()
                .all(|s| s.start_offset.is_zero())
        );
    }

    #[test]
    fn scenario_mix_is_exact_and_spread() {
        let slots = closed_slots(10, Duration::ZERO, &[3, 1, 1]);
        let picks: Vec<u32> = slots.iter().map(|s| s.scenario).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 6);
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 2);
        assert_eq!(picks.iter().filter(|&&p| p == 2).count(), 2);
        assert_eq!(&picks[..5], &[0, 1, 0, 2, 0], "spread, not in runs");
    }

    #[test]
    fn dealing_interleaves_by_weight() {
        let slots = closed_slots(10, Duration::from_secs(5), &[1]);
        let dealt = deal(&slots, &[1, 1]);
        let idx: Vec<Vec<u64>> = dealt
            .iter()
            .map(|v| v.iter().map(|s| s.index).collect())
            .collect();
        assert_eq!(idx, [vec![0, 2, 4, 6, 8], vec![1, 3, 5, 7, 9]]);
        // Agents keep the global offsets: the merged ramp is the single-machine one.
        let mut merged: Vec<Slot> = dealt.concat();
        merged.sort_by_key(|s| s.index);
        assert_eq!(merged, slots);

        let dealt = deal(&closed_slots(9, Duration::ZERO, &[1]), &[2, 1]);
        assert_eq!((dealt[0].len(), dealt[1].len()), (6, 3));
        assert!(deal(&slots, &[]).is_empty());
    }

    #[test]
    fn stages_start_and_stop_users_linearly() {
        let s = |u, secs| (u, Duration::from_secs(secs));
        let slots = staged_slots(&[s(4, 4), s(4, 10), s(0, 4)], &[1]);
        let starts: Vec<u64> = slots.iter().map(|x| x.start_offset.as_secs()).collect();
        assert_eq!(
            starts,
            [0, 1, 2, 3],
            "up like ramp_up: user k at k * 4 s / 4"
        );
        let stops: Vec<u64> = slots
            .iter()
            .map(|x| x.stop_offset.unwrap().as_secs())
            .collect();
        assert_eq!(
            stops,
            [18, 17, 16, 15],
            "down from the highest user: user 3 at 14 + 1 s"
        );
        // Up, down, up again: a stopped user comes back as a new slot.
        let slots = staged_slots(&[s(2, 2), s(1, 2), s(2, 2)], &[1]);
        let shape: Vec<(u64, u64, Option<u64>)> = slots
            .iter()
            .map(|x| {
                (
                    x.index,
                    x.start_offset.as_secs(),
                    x.stop_offset.map(|d| d.as_secs()),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [(0, 0, Some(6)), (1, 1, Some(4)), (1, 4, Some(6))],
            "the end stops everyone"
        );
    }

    #[test]
    fn open_model_shares() {
        assert_eq!(arrival_positions(&[1, 1]), [vec![0], vec![1]]);
        assert_eq!(arrival_positions(&[2, 1]), [vec![0, 2], vec![1]]);
        assert_eq!(split_count(10, &[1, 1, 1]), [4, 3, 3]);
        assert_eq!(split_count(9, &[2, 1]), [6, 3]);
        assert_eq!(cycle(&[3, 1]), [0, 0, 1, 0]);
    }

    #[test]
    fn every_agent_gets_the_scenario_mix() {
        let slots = closed_slots(16, Duration::from_secs(8), &[3, 1]);
        let dealt = deal(&slots, &[1, 1]);
        for share in &dealt {
            let browse = share.iter().filter(|s| s.scenario == 0).count();
            let search = share.iter().filter(|s| s.scenario == 1).count();
            assert_eq!((browse, search), (6, 2), "each agent runs the 3:1 mix");
        }
        // 9 + 3 users on two agents: 6 each, not 7 and 5.
        let dealt = deal(&closed_slots(12, Duration::ZERO, &[3, 1]), &[1, 1]);
        assert_eq!((dealt[0].len(), dealt[1].len()), (6, 6));
    }
}
