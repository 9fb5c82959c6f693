//! The agent's random numbers: a small, fast generator per user (think
//! times, random data rows, `match_no = 0` extraction). Not for secrets.

/// A small, fast generator (SplitMix64), seeded per user: think times and
/// random picks differ between users yet replay the same for a given seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// User `user`'s generator in a run seeded with `run`: independent
    /// streams for every user, the same ones again for the same run seed.
    pub fn for_user(run: u64, user: u64) -> Rng {
        let mut mix = Rng::new(run);
        Rng::new(mix.next_u64() ^ user)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_seed_replays_and_another_differs() {
        let draw = |run, user| {
            let mut r = Rng::for_user(run, user);
            (0..4).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42, 3), draw(42, 3), "same run seed, same user");
        assert_ne!(draw(42, 3), draw(43, 3), "another run seed");
        assert_ne!(draw(42, 3), draw(42, 4), "another user");
    }
}
