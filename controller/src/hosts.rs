//! The observed hosts of a run (`loadfleet-agent --observe` on the system
//! under test): their samples as received, what they add up to over the
//! run, and whether a host was disturbed while it was measured (another
//! process's CPU, or a hypervisor's steal, above a bound).
//!
//! Figures of "all CPUs" are shares of the host's whole CPU time (cores x
//! wall time); figures "of a core" are CPU time over wall time (a process
//! using two cores fully reads 200%).

use serde::{Deserialize, Serialize};

use loadfleet_proto::v1;

/// When a host counts as disturbed: means over the run above these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Other processes' CPU, in percent of one core (`--max-other-cpu`).
    pub other_cpu_core_pct: f64,
    /// Steal, in percent of the host's CPU time (`--max-steal`).
    pub steal_pct: f64,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            other_cpu_core_pct: 50.0,
            steal_pct: 5.0,
        }
    }
}

/// One observer's samples, as the run received them.
#[derive(Debug, Clone, Default)]
pub struct HostReport {
    pub name: String,
    pub region: String,
    pub address: String,
    /// The process names it reports apart.
    pub processes: Vec<String>,
    /// (seconds from the run's start at the sample's end, the sample).
    pub samples: Vec<(f64, v1::HostVitals)>,
    /// How its observation ended, when not as asked (lost, left).
    pub note: String,
}

/// A mean and the largest interval's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanMax {
    pub mean: f64,
    pub max: f64,
}

/// A named process's share over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSummary {
    pub name: String,
    /// The most processes of that name seen at once.
    pub count_max: u32,
    pub cpu_core_pct: MeanMax,
    pub rss_max_bytes: u64,
}

/// One interval of a host, for charts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostPoint {
    pub t_s: f64,
    pub busy_pct: f64,
    pub steal_pct: f64,
    pub others_core_pct: f64,
    /// The named processes' CPU, in the order of `processes`.
    pub processes_core_pct: Vec<f64>,
}

/// What one observed host did over the run (summary.json `hosts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    pub name: String,
    pub region: String,
    pub address: String,
    pub cores: u32,
    pub intervals: u64,
    /// Seconds of the run its samples cover.
    pub observed_s: f64,
    /// user + system, in percent of all its CPUs.
    pub cpu_busy_pct: MeanMax,
    pub cpu_user_pct: f64,
    pub cpu_system_pct: f64,
    pub iowait_pct: MeanMax,
    pub steal_pct: MeanMax,
    pub load1_max: f64,
    pub mem_total_bytes: u64,
    /// Total less available, at its highest.
    pub mem_used_max_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub processes: Vec<ProcessSummary>,
    /// loadfleet's own processes on the host, in percent of a core.
    pub loadfleet_cpu_core_pct: MeanMax,
    /// Every other process's CPU (and the kernel's), in percent of a core.
    pub others_cpu_core_pct: MeanMax,
    /// The other process that used the most CPU over the run, and its mean
    /// in percent of a core.
    pub top_other: Option<(String, f64)>,
    /// Why the host counts as disturbed; empty when it was quiet.
    pub disturbed: Vec<String>,
    /// How its observation ended, when not as asked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    pub timeline: Vec<HostPoint>,
}

/// A counter's sum over the samples (saturating: the figures come from
/// another process).
fn total(samples: &[(f64, v1::HostVitals)], of: impl Fn(&v1::HostVitals) -> u64) -> u64 {
    samples
        .iter()
        .fold(0u64, |t, (_, v)| t.saturating_add(of(v)))
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Sums a figure over the samples, as a time-weighted mean and the largest
/// interval's value, `of(sample)` giving (part, whole) in microseconds.
fn mean_max(
    samples: &[(f64, v1::HostVitals)],
    of: impl Fn(&v1::HostVitals) -> (u64, u64),
) -> MeanMax {
    let (mut part, mut whole, mut max) = (0u64, 0u64, 0f64);
    for (_, v) in samples {
        let (p, w) = of(v);
        part = part.saturating_add(p);
        whole = whole.saturating_add(w);
        // A sample of under a tenth of a second (the last, partial one) is
        // too short to hold the maximum.
        if v.span_us >= 100_000 {
            max = max.max(pct(p, w));
        }
    }
    MeanMax {
        mean: pct(part, whole),
        max,
    }
}

impl HostSummary {
    /// What `r` adds up to over a run of `run_s` seconds, judged by `bounds`.
    pub fn of(r: &HostReport, run_s: f64, bounds: Bounds) -> HostSummary {
        let s = &r.samples;
        let all = |v: &v1::HostVitals| u64::from(v.cores).saturating_mul(v.span_us);
        let mut out = HostSummary {
            name: r.name.clone(),
            region: r.region.clone(),
            address: r.address.clone(),
            note: r.note.clone(),
            cores: s.iter().map(|(_, v)| v.cores).max().unwrap_or(0),
            intervals: s.len() as u64,
            observed_s: s.iter().map(|(_, v)| v.span_us as f64 / 1e6).sum(),
            cpu_busy_pct: mean_max(s, |v| (v.user_us.saturating_add(v.system_us), all(v))),
            cpu_user_pct: mean_max(s, |v| (v.user_us, all(v))).mean,
            cpu_system_pct: mean_max(s, |v| (v.system_us, all(v))).mean,
            iowait_pct: mean_max(s, |v| (v.iowait_us, all(v))),
            steal_pct: mean_max(s, |v| (v.steal_us, all(v))),
            load1_max: s.iter().map(|(_, v)| v.load1).fold(0.0, f64::max),
            mem_total_bytes: s.iter().map(|(_, v)| v.mem_total_bytes).max().unwrap_or(0),
            mem_used_max_bytes: s
                .iter()
                .map(|(_, v)| v.mem_total_bytes.saturating_sub(v.mem_available_bytes))
                .max()
                .unwrap_or(0),
            disk_read_bytes: total(s, |v| v.disk_read_bytes),
            disk_write_bytes: total(s, |v| v.disk_write_bytes),
            net_rx_bytes: total(s, |v| v.net_rx_bytes),
            net_tx_bytes: total(s, |v| v.net_tx_bytes),
            loadfleet_cpu_core_pct: mean_max(s, |v| (v.loadfleet_cpu_us, v.span_us)),
            others_cpu_core_pct: mean_max(s, |v| (v.others_cpu_us, v.span_us)),
            ..HostSummary::default()
        };
        let span = total(s, |v| v.span_us);
        out.processes = r
            .processes
            .iter()
            .map(|name| {
                let of = |v: &v1::HostVitals| v.processes.iter().find(|p| &p.name == name).cloned();
                ProcessSummary {
                    name: name.clone(),
                    count_max: s
                        .iter()
                        .filter_map(|(_, v)| of(v))
                        .map(|p| p.count)
                        .max()
                        .unwrap_or(0),
                    cpu_core_pct: mean_max(s, |v| (of(v).map_or(0, |p| p.cpu_us), v.span_us)),
                    rss_max_bytes: s
                        .iter()
                        .filter_map(|(_, v)| of(v))
                        .map(|p| p.rss_bytes)
                        .max()
                        .unwrap_or(0),
                }
            })
            .collect();
        let mut top: std::collections::BTreeMap<&str, u64> = Default::default();
        for (_, v) in s {
            if !v.top_other.is_empty() {
                let e = top.entry(v.top_other.as_str()).or_default();
                *e = e.saturating_add(v.top_other_cpu_us);
            }
        }
        out.top_other = top
            .into_iter()
            .max_by_key(|(_, us)| *us)
            .map(|(n, us)| (n.to_string(), pct(us, span)));
        out.timeline = s
            .iter()
            .map(|(t, v)| HostPoint {
                t_s: *t,
                busy_pct: pct(v.user_us.saturating_add(v.system_us), all(v)),
                steal_pct: pct(v.steal_us, all(v)),
                others_core_pct: pct(v.others_cpu_us, v.span_us),
                processes_core_pct: r
                    .processes
                    .iter()
                    .map(|n| {
                        pct(
                            v.processes
                                .iter()
                                .find(|p| &p.name == n)
                                .map_or(0, |p| p.cpu_us),
                            v.span_us,
                        )
                    })
                    .collect(),
            })
            .collect();
        out.disturbed = out.judge(run_s, bounds);
        out
    }

    fn judge(&self, run_s: f64, b: Bounds) -> Vec<String> {
        let mut why = Vec::new();
        if self.intervals == 0 {
            why.push(format!(
                "host {}: its observer sent no sample{}",
                self.name,
                if self.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", self.note)
                }
            ));
            return why;
        }
        if self.cores == 0 {
            why.push(format!(
                "host {}: its observer cannot read the host's figures (not Linux?)",
                self.name
            ));
        }
        // One interval's slack: the first sample starts with the load, the
        // last ends with the observer's stop.
        if self.observed_s + 1.5 < run_s {
            why.push(format!(
                "host {} was observed for only {:.1} s of the run's {:.1} s{}",
                self.name,
                self.observed_s,
                run_s,
                if self.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", self.note)
                }
            ));
        }
        if self.steal_pct.mean > b.steal_pct {
            why.push(format!(
                "host {}: its hypervisor took {:.1}% of its CPU time as steal (max {:.1}% in an interval; bound {}%, --max-steal): its neighbours on the physical machine slowed it",
                self.name, self.steal_pct.mean, self.steal_pct.max, b.steal_pct
            ));
        }
        if self.others_cpu_core_pct.mean > b.other_cpu_core_pct {
            why.push(format!(
                "host {}: other processes used {:.0}% of a core on average (max {:.0}%){} beside the system under test (bound {}%, --max-other-cpu)",
                self.name,
                self.others_cpu_core_pct.mean,
                self.others_cpu_core_pct.max,
                self.top_other
                    .as_ref()
                    .map(|(n, p)| format!("; the busiest, {n}, {p:.0}%"))
                    .unwrap_or_default(),
                b.other_cpu_core_pct
            ));
        }
        why
    }

    /// The host in a few lines, for the terminal.
    pub fn describe(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let mb = |b: u64| b as f64 / 1e6;
        let mut out = format!(
            "target host {} (region {}, {} CPUs, observed {:.1} s): CPU busy {:.1}% mean, {:.1}% max (user {:.1}%, system {:.1}%); iowait {:.1}%; steal {:.1}%; load average up to {:.2}; memory used up to {:.2} of {:.2} GiB; disks {:.1} MB read, {:.1} MB written; network {:.1} MB in, {:.1} MB out (loopback not counted)\n",
            self.name,
            self.region,
            self.cores,
            self.observed_s,
            self.cpu_busy_pct.mean,
            self.cpu_busy_pct.max,
            self.cpu_user_pct,
            self.cpu_system_pct,
            self.iowait_pct.mean,
            self.steal_pct.mean,
            self.load1_max,
            gib(self.mem_used_max_bytes),
            gib(self.mem_total_bytes),
            mb(self.disk_read_bytes),
            mb(self.disk_write_bytes),
            mb(self.net_rx_bytes),
            mb(self.net_tx_bytes),
        );
        for p in &self.processes {
            out.push_str(&format!(
                "  {}: {:.0}% of a core mean, {:.0}% max; up to {} process(es), {:.0} MiB resident\n",
                p.name,
                p.cpu_core_pct.mean,
                p.cpu_core_pct.max,
                p.count_max,
                p.rss_max_bytes as f64 / (1u64 << 20) as f64
            ));
        }
        if self.loadfleet_cpu_core_pct.mean >= 1.0 {
            out.push_str(&format!(
                "  loadfleet on this host: {:.0}% of a core mean (its agents and controller are part of the test)\n",
                self.loadfleet_cpu_core_pct.mean
            ));
        }
        out.push_str(&format!(
            "  others: {:.0}% of a core mean, {:.0}% max{}\n",
            self.others_cpu_core_pct.mean,
            self.others_cpu_core_pct.max,
            self.top_other
                .as_ref()
                .map(|(n, p)| format!("; the busiest: {n}, {p:.0}%"))
                .unwrap_or_default()
        ));
        for d in &self.disturbed {
            out.push_str(&format!("  DISTURBED: {d}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(busy_us: u64, others_us: u64, steal_us: u64) -> v1::HostVitals {
        v1::HostVitals {
            span_us: 1_000_000,
            cores: 2,
            user_us: busy_us,
            idle_us: 2_000_000 - busy_us - steal_us,
            steal_us,
            others_cpu_us: others_us,
            top_other: "yes".into(),
            top_other_cpu_us: others_us,
            mem_total_bytes: 4 << 30,
            mem_available_bytes: 3 << 30,
            processes: vec![v1::ProcessVitals {
                name: "nginx".into(),
                count: 3,
                cpu_us: busy_us - others_us,
                rss_bytes: 30 << 20,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_busy_neighbour_and_steal_are_named_with_their_figures() {
        let r = HostReport {
            name: "db".into(),
            processes: vec!["nginx".into()],
            samples: vec![
                (1.0, sample(500_000, 100_000, 0)),
                (2.0, sample(1_500_000, 1_000_000, 200_000)),
                (3.0, sample(1_500_000, 1_000_000, 200_000)),
            ],
            ..Default::default()
        };
        let h = HostSummary::of(&r, 3.0, Bounds::default());
        // 3.5 s of busy CPU over 3 s x 2 cores: 58.3%.
        assert!((h.cpu_busy_pct.mean - 58.33).abs() < 0.01, "{h:?}");
        assert_eq!(h.cpu_busy_pct.max, 75.0);
        // Others: 2.1 s of CPU over 3 s: 70% of a core, above 50.
        assert!((h.others_cpu_core_pct.mean - 70.0).abs() < 1e-9);
        assert!((h.steal_pct.mean - 6.67).abs() < 0.01);
        assert_eq!(h.processes[0].count_max, 3);
        assert!((h.processes[0].cpu_core_pct.mean - 46.67).abs() < 0.01);
        assert_eq!(h.mem_used_max_bytes, 1 << 30);
        assert_eq!(h.disturbed.len(), 2, "{:?}", h.disturbed);
        assert!(
            h.disturbed[1].contains("the busiest, yes, 70%"),
            "{}",
            h.disturbed[1]
        );
        // A quiet host under looser bounds is not disturbed…
        let loose = Bounds {
            other_cpu_core_pct: 80.0,
            steal_pct: 10.0,
        };
        assert!(HostSummary::of(&r, 3.0, loose).disturbed.is_empty());
        // …unless it was observed for only part of the run.
        let short = HostSummary::of(&r, 10.0, loose);
        assert!(short.disturbed[0].contains("observed for only 3.0 s of the run's 10.0 s"));
    }
}
