//! The observed host's vitals, read from `/proc` once per interval: CPU by
//! kind, load average, memory, disk and network bytes, the named
//! processes, loadfleet's own processes, and everyone else's CPU.
//!
//! Everything is a difference between two readings, so a sample covers
//! exactly the time since the previous one. Linux only: elsewhere every
//! figure reads zero and `cores` is 0, which the controller shows as
//! unknown.

use std::collections::HashMap;
use std::time::Instant;

use loadfleet_proto::v1;

/// Ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on every Linux
/// architecture).
const USER_HZ: u64 = 100;
const US_PER_TICK: u64 = 1_000_000 / USER_HZ;

/// Most processes read per sample: a host with more is read in part, and
/// what was not read counts as others' CPU (from the host's totals).
const MAX_PROCESSES: usize = 20_000;

/// Reads the host where it runs.
pub struct HostSampler {
    root: std::path::PathBuf,
    names: Vec<String>,
    at: Instant,
    cpu: Option<CpuTicks>,
    disk: Option<(u64, u64)>,
    net: Option<(u64, u64)>,
    /// CPU ticks of every process at the previous reading, by pid (with the
    /// process's start time, so a reused pid is not mistaken for the old one).
    procs: HashMap<u32, (u64, u64)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuTicks {
    pub(crate) user: u64,
    pub(crate) system: u64,
    pub(crate) idle: u64,
    pub(crate) iowait: u64,
    pub(crate) steal: u64,
    pub(crate) cores: u32,
}

impl CpuTicks {
    fn busy(&self) -> u64 {
        self.user + self.system
    }

    /// Every tick of the line: busy, idle, iowait and steal.
    pub(crate) fn all(&self) -> u64 {
        self.busy() + self.idle + self.iowait + self.steal
    }
}

/// One process as `/proc/PID/stat` tells it.
#[derive(Debug, PartialEq)]
pub(crate) struct ProcStat<'a> {
    comm: &'a str,
    pub(crate) ticks: u64,
    start: u64,
    rss_pages: u64,
}

impl HostSampler {
    /// A sampler reading `/proc`, reporting `names` apart; its first
    /// readings are the baseline of the first sample.
    pub fn new(names: Vec<String>) -> HostSampler {
        HostSampler::at_root("/proc".into(), names)
    }

    fn at_root(root: std::path::PathBuf, names: Vec<String>) -> HostSampler {
        let mut s = HostSampler {
            root,
            names,
            at: Instant::now(),
            cpu: None,
            disk: None,
            net: None,
            procs: HashMap::new(),
        };
        let _ = s.sample();
        s
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(rel)).ok()
    }

    /// The vitals since the previous call.
    pub fn sample(&mut self) -> v1::HostVitals {
        let now = Instant::now();
        let span_us = u64::try_from(now.duration_since(self.at).as_micros()).unwrap_or(u64::MAX);
        self.at = now;
        let mut v = v1::HostVitals {
            span_us,
            ..Default::default()
        };
        let cpu = self.read("stat").as_deref().and_then(cpu_ticks);
        let mut host_busy_us = 0;
        if let Some(c) = cpu {
            v.cores = c.cores;
            if let Some(p) = self.cpu {
                let d = |a: u64, b: u64| a.saturating_sub(b) * US_PER_TICK;
                v.user_us = d(c.user, p.user);
                v.system_us = d(c.system, p.system);
                v.idle_us = d(c.idle, p.idle);
                v.iowait_us = d(c.iowait, p.iowait);
                v.steal_us = d(c.steal, p.steal);
                host_busy_us = d(c.busy(), p.busy());
            }
        }
        let first = self.cpu.is_none();
        self.cpu = cpu;
        if let Some(l) = self.read("loadavg") {
            v.load1 = l
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0.0);
        }
        if let Some(m) = self.read("meminfo") {
            v.mem_total_bytes = meminfo_kb(&m, "MemTotal:") * 1024;
            v.mem_available_bytes = meminfo_kb(&m, "MemAvailable:") * 1024;
        }
        if let Some(d) = self
            .read("diskstats")
            .map(|t| disk_bytes(&t, &whole_disks()))
        {
            if let Some(p) = self.disk {
                v.disk_read_bytes = d.0.saturating_sub(p.0);
                v.disk_write_bytes = d.1.saturating_sub(p.1);
            }
            self.disk = Some(d);
        }
        if let Some(n) = self.read("net/dev").as_deref().map(net_bytes) {
            if let Some(p) = self.net {
                v.net_rx_bytes = n.0.saturating_sub(p.0);
                v.net_tx_bytes = n.1.saturating_sub(p.1);
            }
            self.net = Some(n);
        }
        self.processes(&mut v, first, host_busy_us);
        v
    }

    /// Reads every process: the named ones' CPU and memory, loadfleet's
    /// own, and the busiest other; the rest of the host's busy time is
    /// others' CPU.
    fn processes(&mut self, v: &mut v1::HostVitals, first: bool, host_busy_us: u64) {
        let page = 4096;
        let mut named: Vec<v1::ProcessVitals> = self
            .names
            .iter()
            .map(|n| v1::ProcessVitals {
                name: n.clone(),
                ..Default::default()
            })
            .collect();
        let mut others: HashMap<String, u64> = HashMap::new();
        let mut seen = HashMap::with_capacity(self.procs.len());
        let mut loadfleet_us = 0;
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in dir.flatten().take(MAX_PROCESSES) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue; // it exited meanwhile
            };
            let Some(p) = proc_stat(&text) else { continue };
            // Ticks since the previous reading; a process new since then
            // used all of its ticks in this interval.
            let used = match self.procs.get(&pid) {
                Some(&(start, ticks)) if start == p.start => p.ticks.saturating_sub(ticks),
                _ if first => 0,
                _ => p.ticks,
            } * US_PER_TICK;
            seen.insert(pid, (p.start, p.ticks));
            if let Some(n) = named.iter_mut().find(|n| n.name == p.comm) {
                n.count += 1;
                n.cpu_us += used;
                n.rss_bytes += p.rss_pages * page;
            } else if p.comm.starts_with("loadfleet") {
                loadfleet_us += used;
            } else if used > 0 {
                *others.entry(p.comm.to_string()).or_default() += used;
            }
        }
        self.procs = seen;
        let named_us: u64 = named.iter().map(|n| n.cpu_us).sum();
        v.loadfleet_cpu_us = loadfleet_us;
        v.others_cpu_us = host_busy_us.saturating_sub(named_us + loadfleet_us);
        if let Some((name, us)) = others.into_iter().max_by_key(|(n, us)| (*us, n.clone())) {
            v.top_other = name;
            v.top_other_cpu_us = us;
        }
        v.processes = named;
    }
}

/// The aggregate `cpu` line of `/proc/stat`, and how many `cpuN` lines.
pub(crate) fn cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    Some(CpuTicks {
        user: at(0) + at(1),
        system: at(2) + at(5) + at(6),
        idle: at(3),
        iowait: at(4),
        steal: at(7),
        cores: u32::try_from(
            stat.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count(),
        )
        .unwrap_or(u32::MAX),
    })
}

/// A process's name, CPU ticks (user + system), start time and resident
/// pages from its `stat` line. The name (field 2) may hold spaces and
/// parentheses: the fields are counted from its closing parenthesis.
pub(crate) fn proc_stat(stat: &str) -> Option<ProcStat<'_>> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name the state is field 3 (index 0): utime 14, stime 15,
    // starttime 22, rss 24.
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
    Some(ProcStat {
        comm,
        ticks: num(11)? + num(12)?,
        start: num(19)?,
        rss_pages: num(21)?,
    })
}

fn meminfo_kb(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The host's whole disks (`/sys/block`), without loop and RAM devices:
/// partitions would count their disk's bytes twice.
fn whole_disks() -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes read and written by `disks` (`/proc/diskstats`: sectors of 512
/// bytes in fields 6 and 10).
fn disk_bytes(diskstats: &str, disks: &[String]) -> (u64, u64) {
    let mut out = (0, 0);
    for l in diskstats.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(name), Some(r), Some(w)) = (f.get(2), f.get(5), f.get(9)) else {
            continue;
        };
        if disks.iter().any(|d| d == name) {
            out.0 += r.parse::<u64>().unwrap_or(0) * 512;
            out.1 += w.parse::<u64>().unwrap_or(0) * 512;
        }
    }
    out
}

/// Bytes received and sent by every interface but loopback (`/proc/net/dev`).
fn net_bytes(dev: &str) -> (u64, u64) {
    let mut out = (0, 0);
    for l in dev.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        out.0 += f.first().copied().unwrap_or(0);
        out.1 += f.get(8).copied().unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  100 20 50 800 10 3 2 35 0 0\ncpu0 1 2 3\ncpu1 4 5 6\nintr 5\n";
        assert_eq!(
            cpu_ticks(stat),
            Some(CpuTicks {
                user: 120,
                system: 55,
                idle: 800,
                iowait: 10,
                steal: 35,
                cores: 2
            })
        );
        let p = "4242 (php-fpm: pool (www)) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 1 0 777 1000 50";
        assert_eq!(
            proc_stat(p),
            Some(ProcStat {
                comm: "php-fpm: pool (www)",
                ticks: 290,
                start: 777,
                rss_pages: 50
            })
        );
        let dev = "Inter-|   Receive\n face |bytes packets\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 1000 5 0 0 0 0 0 0 2000 6 0 0 0 0 0 0\n";
        assert_eq!(net_bytes(dev), (1000, 2000));
        let disk = "   8       0 sda 10 0 40 0 20 0 80 0 0 0 0\n   8       1 sda1 10 0 40 0 20 0 80 0 0 0 0\n";
        assert_eq!(disk_bytes(disk, &["sda".into()]), (40 * 512, 80 * 512));
        assert_eq!(
            meminfo_kb(
                "MemTotal:  2048 kB\nMemAvailable: 1024 kB\n",
                "MemAvailable:"
            ),
            1024
        );
    }

    /// A process of this test, named and spinning, is counted under its name.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_named_busy_process_is_counted() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        let mut s = HostSampler::new(vec!["sh".into()]);
        std::thread::sleep(std::time::Duration::from_millis(600));
        let v = s.sample();
        let _ = child.kill();
        let _ = child.wait();
        let sh = &v.processes[0];
        assert!(sh.count >= 1, "{v:?}");
        // 600 ms of a spinning shell: at least 300 ms of CPU even with the
        // other core busy (it is always runnable; ticks are 10 ms).
        assert!(
            sh.cpu_us >= 300_000,
            "sh used {} us in {} us",
            sh.cpu_us,
            v.span_us
        );
        assert!(v.cores >= 1 && v.mem_total_bytes > 0 && v.mem_available_bytes > 0);
        let all = (v.user_us + v.system_us + v.idle_us + v.iowait_us + v.steal_us) as f64;
        let expected = (u64::from(v.cores) * v.span_us) as f64;
        // The CPU times add up to the cores times the span, within the
        // 10 ms tick of each core at each end.
        assert!(
            (all - expected).abs() <= 0.05 * expected + 40_000.0,
            "CPU times {all} us over {} cores x {} us",
            v.cores,
            v.span_us
        );
    }
}
