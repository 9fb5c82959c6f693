//! An experiment's design: its arms, how often each runs, and the order of
//! the runs, interleaved so that drift and neighbours hit every arm alike.

use std::time::Duration;

/// One configuration of the system under test.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Arm {
    pub name: String,
    /// A shell command (run with `sh -c` on the controller's machine) that
    /// puts the system in this configuration.
    pub setup: String,
}

/// The order of the arms within each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Block b runs the arms rotated by b (two arms: AB, BA, AB, BA…), so
    /// each arm runs first as often as the others.
    Balanced,
    /// Each block in its own random order, from this seed.
    Random(u64),
}

impl Order {
    pub fn describe(self) -> &'static str {
        match self {
            Order::Balanced => "balanced (arms rotated block by block: AB BA AB…)",
            Order::Random(_) => "random blocks",
        }
    }

    pub fn seed(self) -> Option<u64> {
        match self {
            Order::Balanced => None,
            Order::Random(s) => Some(s),
        }
    }
}

/// How an experiment runs.
#[derive(Debug, Clone)]
pub struct Design {
    /// Two or more; the first is the baseline every other is compared with.
    pub arms: Vec<Arm>,
    /// Measured runs of each arm at each load.
    pub runs: usize,
    /// A run before every measured one, at its load, not measured.
    pub warm_up: Option<Duration>,
    /// A pause after each set-up, before the warm-up.
    pub settle: Duration,
    /// Longest a set-up command may take.
    pub setup_timeout: Duration,
    pub order: Order,
    /// An interval within ± this (percent; for the error rate, percentage
    /// points divided by 5) reads "same".
    pub margin_pct: f64,
    /// Runs flagged by the generators' health stay in the statistics.
    pub keep_flagged: bool,
}

impl Design {
    /// Checks what a person could get wrong; the message says what.
    pub fn check(&self) -> Result<(), String> {
        if self.arms.len() < 2 {
            return Err(format!(
                "an experiment compares two or more arms (--arm NAME='SETUP COMMAND'); {} given",
                self.arms.len()
            ));
        }
        for (i, a) in self.arms.iter().enumerate() {
            let ok = !a.name.is_empty()
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(format!(
                    "arm name `{}`: expected letters, digits, `-` or `_` (it names run directories)",
                    a.name
                ));
            }
            if self.arms[..i].iter().any(|b| b.name == a.name) {
                return Err(format!("arm `{}` is named twice", a.name));
            }
            if a.setup.trim().is_empty() {
                return Err(format!("arm `{}`: its set-up command is empty", a.name));
            }
        }
        if self.runs < 2 {
            return Err(format!(
                "--runs {}: an interval needs at least 2 runs of each arm",
                self.runs
            ));
        }
        if !(self.margin_pct > 0.0 && self.margin_pct <= 100.0) {
            return Err(format!(
                "--margin {}: expected a percentage above 0, at most 100",
                self.margin_pct
            ));
        }
        Ok(())
    }
}

/// One run of the experiment: which block, load and arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub block: usize,
    pub load: usize,
    pub arm: usize,
}

/// Every run in the order it runs: block by block; in each, load by load;
/// at each load, every arm once, in the block's order.
pub fn schedule(design: &Design, loads: usize) -> Vec<Planned> {
    let k = design.arms.len();
    let mut rng = match design.order {
        Order::Random(seed) => seed ^ 0x9e37_79b9_7f4a_7c15,
        Order::Balanced => 0,
    };
    let mut out = Vec::with_capacity(design.runs * loads * k);
    for block in 0..design.runs {
        for load in 0..loads {
            let mut arms: Vec<usize> = (0..k).collect();
            match design.order {
                Order::Balanced => arms.rotate_left((block + load) % k),
                Order::Random(_) => {
                    // Fisher-Yates with splitmix64.
                    for i in (1..k).rev() {
                        let j = (splitmix(&mut rng) % (i as u64 + 1)) as usize;
                        arms.swap(i, j);
                    }
                }
            }
            out.extend(arms.into_iter().map(|arm| Planned { block, load, arm }));
        }
    }
    out
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn design(arms: usize, runs: usize, order: Order) -> Design {
        Design {
            arms: (0..arms)
                .map(|i| Arm {
                    name: format!("a{i}"),
                    setup: "true".into(),
                })
                .collect(),
            runs,
            warm_up: None,
            settle: Duration::ZERO,
            setup_timeout: Duration::from_secs(1),
            order,
            margin_pct: 5.0,
            keep_flagged: false,
        }
    }

    #[test]
    fn two_arms_alternate_abba() {
        let order: Vec<usize> = schedule(&design(2, 4, Order::Balanced), 1)
            .iter()
            .map(|p| p.arm)
            .collect();
        assert_eq!(order, [0, 1, 1, 0, 0, 1, 1, 0]);
    }

    #[test]
    fn every_arm_leads_equally_and_each_block_holds_each_arm_once() {
        let runs = schedule(&design(3, 3, Order::Balanced), 2);
        assert_eq!(runs.len(), 18);
        let mut firsts = [0; 3];
        for chunk in runs.chunks(3) {
            let mut arms: Vec<usize> = chunk.iter().map(|p| p.arm).collect();
            firsts[arms[0]] += 1;
            arms.sort();
            assert_eq!(arms, [0, 1, 2]);
            assert!(
                chunk
                    .iter()
                    .all(|p| p.load == chunk[0].load && p.block == chunk[0].block)
            );
        }
        assert_eq!(firsts, [2, 2, 2]);
    }

    #[test]
    fn random_blocks_repeat_with_their_seed() {
        let a = schedule(&design(3, 5, Order::Random(7)), 1);
        let b = schedule(&design(3, 5, Order::Random(7)), 1);
        let c = schedule(&design(3, 5, Order::Random(8)), 1);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_design_says_what_is_wrong() {
        assert!(
            design(1, 4, Order::Balanced)
                .check()
                .unwrap_err()
                .contains("two or more arms")
        );
        assert!(
            design(2, 1, Order::Balanced)
                .check()
                .unwrap_err()
                .contains("at least 2 runs")
        );
        let mut d = design(2, 2, Order::Balanced);
        d.arms[1].name = "a0".into();
        assert!(d.check().unwrap_err().contains("named twice"));
        d.arms[1].name = "a b".into();
        assert!(d.check().unwrap_err().contains("letters, digits"));
        assert!(design(2, 2, Order::Balanced).check().is_ok());
    }
}
