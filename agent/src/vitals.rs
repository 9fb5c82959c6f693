//! The generator's own health, sampled once per interval: the process's CPU
//! time, its resident memory, the host's steal time and the connections it
//! holds. A saturated generator measures itself, not the server; the
//! controller uses these to say so. Linux (`/proc`); elsewhere the figures
//! are reported as unknown (zero CPU and memory).

use std::sync::atomic::{AtomicU64, Ordering};

/// Connections open in this process (every run's, every user's).
pub static OPEN_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on every Linux
/// architecture).
const USER_HZ: u64 = 100;

/// One interval's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// CPU time the process used since the previous sample…
    pub cpu_us: u64,
    /// …which was this long ago.
    pub span_us: u64,
    pub rss_bytes: u64,
    /// The host's steal time over the same span, in thousandths of its CPU
    /// time (a virtual machine's share taken by its neighbours).
    pub steal_permille: u32,
    pub connections: u64,
}

/// Keeps the previous readings, so each sample covers one interval.
#[derive(Debug, Default)]
pub struct Vitals {
    /// When the previous sample was taken.
    at: Option<std::time::Instant>,
    cpu_ticks: Option<u64>,
    /// (steal, all) ticks of the host's CPU line.
    host: Option<(u64, u64)>,
}

impl Vitals {
    /// Readings now, the first ones as a baseline.
    pub fn start() -> Vitals {
        let mut v = Vitals::default();
        let _ = v.sample();
        v
    }

    /// The figures since the previous call.
    pub fn sample(&mut self) -> Sample {
        let now = std::time::Instant::now();
        let mut s = Sample {
            connections: OPEN_CONNECTIONS.load(Ordering::Relaxed),
            span_us: self.at.map_or(0, |t| {
                u64::try_from(now.duration_since(t).as_micros()).unwrap_or(u64::MAX)
            }),
            ..Sample::default()
        };
        self.at = Some(now);
        if let Some(ticks) = read("/proc/self/stat").as_deref().and_then(process_ticks) {
            if let Some(prev) = self.cpu_ticks {
                s.cpu_us = ticks.saturating_sub(prev) * (1_000_000 / USER_HZ);
            }
            self.cpu_ticks = Some(ticks);
        }
        if let Some(kb) = read("/proc/self/status").as_deref().and_then(rss_kb) {
            s.rss_bytes = kb * 1024;
        }
        if let Some((steal, all)) = read("/proc/stat").as_deref().and_then(host_ticks) {
            if let Some((ps, pa)) = self.host {
                let (ds, da) = (steal.saturating_sub(ps), all.saturating_sub(pa));
                if let Some(p) = (ds * 1000).checked_div(da) {
                    s.steal_permille = u32::try_from(p).unwrap_or(1000);
                }
            }
            self.host = Some((steal, all));
        }
        s
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// utime + stime of `/proc/self/stat`.
fn process_ticks(stat: &str) -> Option<u64> {
    crate::observe::proc_stat(stat).map(|p| p.ticks)
}

fn rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// (steal, all) of the aggregate `cpu` line of `/proc/stat`.
fn host_ticks(stat: &str) -> Option<(u64, u64)> {
    crate::observe::cpu_ticks(stat).map(|c| (c.steal, c.all()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (lo) ad (x)) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 1 0 100 1000 50";
        assert_eq!(process_ticks(stat), Some(290));
        assert_eq!(rss_kb("Name:\tx\nVmRSS:\t   12345 kB\n"), Some(12345));
        assert_eq!(
            host_ticks("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n"),
            Some((35, 1000))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_interval_shows_its_cpu() {
        let mut v = Vitals::start();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let s = v.sample();
        // The process's CPU: other tests of this binary may run on the other
        // cores meanwhile, so at most every core for the whole span.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let most = (t.elapsed().as_micros() as u64 + 20_000) * cores;
        assert!(
            (150_000..=most).contains(&s.cpu_us),
            "300 ms of spinning: {} us of CPU (at most {most} on {cores} cores)",
            s.cpu_us
        );
        assert!(s.rss_bytes > 1 << 20, "{}", s.rss_bytes);
    }
}
