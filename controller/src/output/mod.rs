//! What a run leaves behind: the terminal table, `summary.json`,
//! `latency.hlog` and `report.html`, all from one [`Summary`].

pub mod hlog;
pub mod report;
pub mod svg;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fleet::{AgentEnd, RunResult, RunStatus};
use crate::plan::{LoadModel, RunBound};
use crate::stats::{ErrorAgg, IntervalPoint, LatencyMs, Tally};

/// Identifies the layout of `summary.json`.
pub const SUMMARY_SCHEMA: &str = "loadfleet.summary/1";

/// Results of one slice of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// `null` when no response completed.
    pub latency_ms: Option<LatencyMs>,
}

impl Entry {
    fn of(t: &Tally, duration_s: f64) -> Entry {
        Entry {
            requests: t.requests(),
            errors: t.error_count(),
            rps: round3(t.requests() as f64 / duration_s.max(0.001)),
            errors_by_kind: t.errors.iter().map(|(k, v)| (k.clone(), v.count)).collect(),
            latency_ms: t.latency().map(round_latency),
        }
    }
}

/// One agent's results and how its part ended.
#[derive(Debug, Clone, Serialize)]
pub struct AgentEntry {
    pub region: String,
    /// Where the agent connected from, as the controller saw it.
    pub address: String,
    pub users: usize,
    pub end: AgentEnd,
    pub ended_at_s: Option<f64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Shortest round trip of the clock-sync pings.
    pub clock_rtt_ms: Option<f64>,
    /// How late this agent began its schedule after the common start instant,
    /// as translated to its own clock. The translation itself is exact on a
    /// symmetric link and off by at most half of `clock_rtt_ms` otherwise.
    pub start_skew_ms: Option<f64>,
    #[serde(flatten)]
    pub results: Entry,
}

/// The load model as run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub model: &'static str,
    pub users: u64,
    pub ramp_up_s: f64,
    pub iterations: Option<u64>,
    pub duration_s: Option<f64>,
}

/// How latency was measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyInfo {
    pub unit: &'static str,
    pub measured_from: &'static str,
    pub coordinated_omission_corrected: bool,
}

/// Everything `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema: &'static str,
    pub name: String,
    pub run_id: String,
    pub status: RunStatus,
    pub started_at: String,
    pub duration_s: f64,
    pub target: String,
    pub load: LoadSummary,
    pub latency: LatencyInfo,
    pub total: Entry,
    pub requests: BTreeMap<String, Entry>,
    pub regions: BTreeMap<String, Entry>,
    pub agents: BTreeMap<String, AgentEntry>,
    pub errors: BTreeMap<String, ErrorAgg>,
    pub timeline: Vec<IntervalPoint>,
    pub late_reports: u64,
    pub dropped_reports: u64,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round_latency(l: LatencyMs) -> LatencyMs {
    LatencyMs {
        min: round3(l.min),
        mean: round3(l.mean),
        p50: round3(l.p50),
        p90: round3(l.p90),
        p95: round3(l.p95),
        p99: round3(l.p99),
        p99_9: round3(l.p99_9),
        max: round3(l.max),
    }
}

impl Summary {
    /// Summarizes a finished run.
    pub fn of(r: &RunResult) -> Summary {
        let c = &r.collector;
        let d = r.duration.as_secs_f64();
        let LoadModel::Closed {
            users,
            ramp_up,
            bound,
        } = r.plan.load;
        let mut agents = BTreeMap::new();
        for a in &r.agents {
            let results = c
                .agents
                .get(&a.name)
                .map(|t| Entry::of(t, d))
                .unwrap_or_else(|| Entry::of(&Tally::default(), d));
            agents.insert(
                a.name.clone(),
                AgentEntry {
                    region: a.region.clone(),
                    address: a.peer.clone(),
                    users: a.users,
                    end: a.end.clone(),
                    ended_at_s: a.ended_at_s.map(round3),
                    note: a.note.clone(),
                    clock_rtt_ms: a.clock_rtt.map(|d| round3(d.as_secs_f64() * 1000.0)),
                    start_skew_ms: a.start_lateness.map(|l| round3(l.as_secs_f64() * 1000.0)),
                    results,
                },
            );
        }
        let mut regions: BTreeMap<String, Entry> = c
            .regions
            .iter()
            .map(|(k, t)| (k.clone(), Entry::of(t, d)))
            .collect();
        for a in &r.agents {
            regions
                .entry(a.region.clone())
                .or_insert_with(|| Entry::of(&Tally::default(), d));
        }
        Summary {
            schema: SUMMARY_SCHEMA,
            name: r.plan.name.clone(),
            run_id: r.run_id.clone(),
            status: r.status,
            started_at: r
                .started_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            duration_s: round3(d),
            target: r.plan.target.base_url.clone(),
            load: LoadSummary {
                model: "closed",
                users,
                ramp_up_s: ramp_up.as_secs_f64(),
                iterations: match bound {
                    RunBound::Iterations(n) => Some(n),
                    RunBound::Duration(_) => None,
                },
                duration_s: match bound {
                    RunBound::Duration(x) => Some(x.as_secs_f64()),
                    RunBound::Iterations(_) => None,
                },
            },
            latency: LatencyInfo {
                unit: "ms",
                measured_from: "send",
                coordinated_omission_corrected: false,
            },
            total: Entry::of(&c.total, d),
            requests: c
                .step_names
                .iter()
                .zip(&c.steps)
                .map(|(n, t)| (n.clone(), Entry::of(t, d)))
                .collect(),
            regions,
            agents,
            errors: c.total.errors.clone(),
            timeline: c.timeline.clone(),
            late_reports: c.late_reports,
            dropped_reports: c.dropped_reports,
        }
    }
}

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub dir: PathBuf,
    pub summary: PathBuf,
    pub hlog: PathBuf,
    pub report: PathBuf,
}

/// Writes `summary.json`, `latency.hlog` and `report.html` into `dir`.
pub fn write_run_dir(r: &RunResult, summary: &Summary, dir: &Path) -> std::io::Result<RunFiles> {
    std::fs::create_dir_all(dir)?;
    let files = RunFiles {
        dir: dir.to_path_buf(),
        summary: dir.join("summary.json"),
        hlog: dir.join("latency.hlog"),
        report: dir.join("report.html"),
    };
    let json = serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?;
    std::fs::write(&files.summary, json + "\n")?;
    let mut log = Vec::new();
    hlog::write(&mut log, r)?;
    std::fs::write(&files.hlog, log)?;
    std::fs::write(
        &files.report,
        report::render(summary).map_err(std::io::Error::other)?,
    )?;
    Ok(files)
}
