//! `summary.json`: its types, its schema name, and reading it back. Every
//! output (table, report, comparison, series) is made from a [`Summary`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use loadfleet_agent::counters::StepCounters;

use crate::facts::LoadSummary;
use crate::outcome::{AgentEnd, RunResult, RunStatus};
use crate::stats::{
    AgentTally, ErrorAgg, IntervalPoint, LatencyMs, MetricSpec, MetricStats, Tally, distribution,
};

/// Identifies the layout of `summary.json`.
pub const SUMMARY_SCHEMA: &str = "loadfleet.summary/1";

/// Results of one slice of the run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Entry {
    pub requests: u64,
    /// Exchanges the target saw (one per request, one more per redirect
    /// followed), retries, bytes read and decoded, and responses over
    /// HTTP/2: each a key of its own in the JSON.
    #[serde(flatten)]
    pub counters: StepCounters,
    pub errors: u64,
    pub rps: f64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Every request's time to its outcome: responses (any status) and
    /// requests that got none (a timeout counts its timeout, a reset the
    /// time until the reset). `null` when nothing was measured. In the open
    /// model, measured from each request's intended send time (see
    /// `latency` in the summary).
    pub latency_ms: Option<LatencyMs>,
    /// The responses alone.
    #[serde(default)]
    pub latency_responses_ms: Option<LatencyMs>,
    /// The requests that got no response alone (time to the failure);
    /// `null` when there were none.
    #[serde(default)]
    pub latency_failures_ms: Option<LatencyMs>,
    /// Open model only: the same responses measured from the actual send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_uncorrected_ms: Option<LatencyMs>,
    /// The percentile distribution, as HdrHistogram iterates it (5 ticks per
    /// half distance to 100%): `[percentile, latency ms]` pairs, for charts
    /// on a 1/(1-p) axis and for comparing runs.
    #[serde(default)]
    pub distribution: Vec<(f64, f64)>,
    /// Numbers read from responses (`[[metric]]`), by name: count, missing,
    /// mean, sum, min, percentiles and max, in the metric's unit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, MetricEntry>,
    /// Requests by response time (the run's and each step's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
}

/// Requests by time to their response, as Gatling's bar: under `bounds_ms[0]`,
/// between the bounds, at or over `bounds_ms[1]` (responses of any status),
/// and no response at all; the four add up to the requests.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Ranges {
    pub bounds_ms: (f64, f64),
    pub under: u64,
    pub between: u64,
    pub over: u64,
    pub no_response: u64,
}

impl Ranges {
    fn of(t: &Tally, (lo, hi): (f64, f64)) -> Ranges {
        let [under, between, over, no_response] = t.ranges(lo, hi);
        Ranges {
            bounds_ms: (lo, hi),
            under,
            between,
            over,
            no_response,
        }
    }
}

/// A metric's figures in one slice of the run.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricEntry {
    /// The plan's unit for the metric, after its scale; empty when it gave none.
    #[serde(default)]
    pub unit: String,
    #[serde(flatten)]
    pub stats: MetricStats,
}

/// The metrics of a tally, by name.
fn metric_entries(t: &Tally, specs: &[MetricSpec]) -> BTreeMap<String, MetricEntry> {
    t.metrics
        .iter()
        .filter_map(|(id, m)| {
            let spec = specs.get(*id as usize)?;
            let mut stats = m.stats();
            stats.mean = stats.mean.map(round3);
            Some((
                spec.name.clone(),
                MetricEntry {
                    unit: spec.unit.clone(),
                    stats,
                },
            ))
        })
        .collect()
}

impl Entry {
    fn of(t: &Tally, duration_s: f64, metrics: &[MetricSpec]) -> Entry {
        Entry {
            metrics: metric_entries(t, metrics),
            requests: t.requests(),
            counters: t.counters,
            errors: t.error_count(),
            rps: round3(t.requests() as f64 / duration_s.max(0.001)),
            errors_by_kind: t.errors.iter().map(|(k, v)| (k.clone(), v.count)).collect(),
            latency_ms: t.latency().map(round_latency),
            latency_responses_ms: t.latency_responses().map(round_latency),
            latency_failures_ms: t.latency_failures().map(round_latency),
            latency_uncorrected_ms: t.latency_uncorrected().map(round_latency),
            distribution: distribution(&t.all()),
            ranges: None,
        }
    }

    fn of_agent(a: &AgentTally, duration_s: f64) -> Entry {
        Entry {
            requests: a.requests(),
            counters: a.counters,
            errors: a.error_count(),
            rps: round3(a.requests() as f64 / duration_s.max(0.001)),
            errors_by_kind: a.errors.iter().map(|(k, v)| (k.clone(), v.count)).collect(),
            latency_ms: a.latency.as_ref().map(|l| round_latency(l.latency)),
            latency_responses_ms: a
                .latency
                .as_ref()
                .and_then(|l| l.responses)
                .map(round_latency),
            latency_failures_ms: a
                .latency
                .as_ref()
                .and_then(|l| l.failures)
                .map(round_latency),
            latency_uncorrected_ms: a
                .latency
                .as_ref()
                .and_then(|l| l.uncorrected)
                .map(round_latency),
            distribution: a
                .latency
                .as_ref()
                .map(|l| l.distribution.clone())
                .unwrap_or_default(),
            metrics: BTreeMap::new(),
            ranges: None,
        }
    }
}

/// One agent's results and how its part ended.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AgentEntry {
    pub region: String,
    /// Where the agent connected from, as the controller saw it.
    pub address: String,
    pub users: usize,
    pub end: AgentEnd,
    pub ended_at_s: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Shortest round trip of the clock-sync pings.
    pub clock_rtt_ms: Option<f64>,
    /// The agent's wall clock minus the controller's, measured with that
    /// ping (off by at most half its round trip). Reported only: the
    /// schedule is aligned on monotonic clocks, whatever this says.
    #[serde(default)]
    pub clock_offset_ms: Option<f64>,
    /// Requests it left waiting for a response when the load stopped at
    /// once (a second interrupt, the hard time limit): in no figure.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub abandoned: u64,
    /// Declared lost (silent past its lease), it came back and handed over
    /// every report it made: late, but nothing it measured is missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub returned: bool,
    /// How late this agent began its schedule after the common start instant,
    /// as translated to its own clock. The translation itself is exact on a
    /// symmetric link and off by at most half of `clock_rtt_ms` otherwise.
    pub start_skew_ms: Option<f64>,
    pub dropped_iterations: u64,
    /// The agent's planned share of the load (of the arrivals in the open
    /// model, of the users in the closed one), 0 to 1.
    #[serde(default)]
    pub load_share: f64,
    /// Open model: this agent's send lateness.
    pub send_lateness_ms: Option<LatencyMs>,
    /// How its open-model generator waited for arrivals (`--timing`):
    /// "timer, 0.75 ms window", "timer, no window" or "poll"; absent for an
    /// agent that did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<String>,
    /// Seconds from the start that the reports received from it cover;
    /// `null` when none arrived. For an agent that did not finish, what it
    /// sent after this is not counted anywhere (its `rps` is over this span).
    #[serde(default)]
    pub reported_until_s: Option<f64>,
    /// The generator's own health over the run (CPU, event-loop lag,
    /// memory, connections, host steal); `null` for an agent that sent no
    /// such figures.
    #[serde(default)]
    pub health: Option<crate::stats::Health>,
    #[serde(flatten)]
    pub results: Entry,
}

impl AgentEntry {
    /// For an agent declared lost that came back with every report: what
    /// happened (nothing it measured is missing, but its part stopped).
    pub fn returned_line(&self, name: &str) -> Option<String> {
        if !self.returned {
            return None;
        }
        let at = self
            .ended_at_s
            .map_or_else(String::new, |t| format!(" at {t:.1} s"));
        let why = if self.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.note.split("; ").next().unwrap_or_default())
        };
        Some(format!(
            "agent {name} (region {}) went silent{at}{why} and came back: every report it made arrived (late) and is counted; its load stopped when its lease ran out (a lost agent gets no renewal), so it sent less than its share",
            self.region
        ))
    }

    /// For an agent lost or failed during the run: when, why, and the part
    /// of its load that is not counted. `None` for one that finished (or
    /// whose end is unknown: a rebuilt run says so in `missing`).
    pub fn gap(&self, name: &str) -> Option<String> {
        let what = match self.end {
            AgentEnd::Lost => "was lost",
            AgentEnd::Failed => "failed",
            AgentEnd::Finished | AgentEnd::Unknown => return None,
        };
        let at = self
            .ended_at_s
            .map_or_else(String::new, |t| format!(" at {t:.1} s"));
        let why = if self.note.is_empty() {
            String::new()
        } else {
            // The first clause of the note: the cause.
            format!(" ({})", self.note.split("; ").next().unwrap_or_default())
        };
        if self.returned {
            // Nothing it measured is missing: said among the warnings.
            return None;
        }
        let counted = match self.reported_until_s {
            Some(t) => format!(
                "its reports cover the run up to {t:.1} s: requests it sent after that are not counted"
            ),
            None => "it sent no report: none of its requests are counted".into(),
        };
        Some(format!(
            "agent {name} (region {}) {what}{at}{why}; {counted}",
            self.region
        ))
    }
}

/// How latency was measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LatencyInfo {
    pub unit: String,
    pub measured_from: String,
    pub coordinated_omission_corrected: bool,
}

/// Everything `summary.json` holds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    pub schema: String,
    pub name: String,
    pub run_id: String,
    pub status: RunStatus,
    pub started_at: String,
    pub duration_s: f64,
    pub target: String,
    pub load: LoadSummary,
    pub latency: LatencyInfo,
    /// Open model: arrivals dropped because no user was free in time.
    pub dropped_iterations: u64,
    /// Open model: how late iterations' first requests went out after their
    /// intended instant (the generator's own accuracy); `null` in the closed model.
    pub send_lateness_ms: Option<LatencyMs>,
    /// Every threshold rule with what was observed; empty without `[thresholds]`.
    pub thresholds: Vec<crate::thresholds::Outcome>,
    /// `null` without thresholds.
    pub thresholds_passed: Option<bool>,
    /// The rule that stopped the run early, with `abort_on_fail`.
    pub aborted_by: Option<String>,
    /// Iterations the plan asked for and iterations that ran to their end.
    #[serde(default)]
    pub iterations: IterationCount,
    /// Why a time limit ended users before they finished (status
    /// `truncated`); empty when none did.
    #[serde(default)]
    pub cut_short: Vec<String>,
    /// The seed of every user's random numbers: `seed = N` in the plan
    /// replays this run's think times and random data rows.
    #[serde(default)]
    pub seed: u64,
    /// What this summary lacks (a run rebuilt from its journal, status
    /// `incomplete`); empty for a run that ended normally.
    #[serde(default)]
    pub missing: Vec<String>,
    /// For each agent lost or failed during the run: when, and what of its
    /// load is not counted (see [`AgentEntry::gap`]). Empty when every agent
    /// finished.
    #[serde(default)]
    pub gaps: Vec<String>,
    /// What the plan turned off that changes what the figures mean
    /// (`target.tls_verify = false`); empty for most runs.
    #[serde(default)]
    pub warnings: Vec<String>,
    pub total: Entry,
    pub requests: BTreeMap<String, Entry>,
    /// The steps in journey order (the plan's scenarios, each step by
    /// step); `requests` is keyed by name. Empty in older summaries.
    #[serde(default)]
    pub step_order: Vec<String>,
    /// The rows of `requests` that are groups (transactions), left out of
    /// `total`, `regions` and `agents`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub regions: BTreeMap<String, Entry>,
    /// Per scenario, with more than one: its steps' figures added together
    /// (histograms merged exactly; groups left out). A step another
    /// scenario also sends is one row, counted in each (said in `notes`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scenarios: BTreeMap<String, Entry>,
    pub agents: BTreeMap<String, AgentEntry>,
    pub errors: BTreeMap<String, ErrorAgg>,
    pub timeline: Vec<IntervalPoint>,
    pub late_reports: u64,
    pub dropped_reports: u64,
    /// The observed hosts of the system under test (`loadfleet-agent
    /// --observe`); empty without observers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<crate::hosts::HostSummary>,
}

/// Each scenario's figures (when the plan has more than one), and a line
/// for each step that several scenarios send: its one row counts in each.
fn scenario_entries(r: &RunResult, d: f64) -> (BTreeMap<String, Entry>, Vec<String>) {
    let c = &r.collector;
    let list = &r.facts.scenarios;
    if list.len() < 2 {
        return (BTreeMap::new(), Vec::new());
    }
    let entries = list
        .iter()
        .map(|(name, ids)| {
            let t = crate::stats::Tally::of_steps(&c.steps, ids);
            (name.clone(), Entry::of(&t, d, &c.metrics))
        })
        .collect();
    let mut shared = Vec::new();
    for (id, step) in c.step_names.iter().enumerate() {
        let by: Vec<&str> = list
            .iter()
            .filter(|(_, ids)| ids.contains(&id))
            .map(|(n, _)| n.as_str())
            .collect();
        if by.len() > 1 {
            shared.push(format!(
                "step \"{step}\" is sent by scenarios {}: one row, whose requests count in each of their figures",
                by.join(", ")
            ));
        }
    }
    (entries, shared)
}

/// A warning for each generator that was saturated during measured
/// intervals: what it measured then includes its own delay.
fn saturation_warnings(agents: &[(String, crate::stats::Health)]) -> Vec<String> {
    agents
        .iter()
        .filter(|(_, h)| h.saturated_intervals > 0)
        .map(|(name, h)| {
            format!(
                "agent {name}'s generator was saturated in {} of {} intervals (CPU up to {:.0}% of its {} CPU(s), event loop up to {:.0} ms late): latencies measured then include its own delay; the report marks those intervals",
                h.saturated_intervals,
                h.intervals,
                h.cpu_pct_max,
                h.cores,
                h.loop_lag_ms_max
            )
        })
        .collect()
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

/// Iterations planned and run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IterationCount {
    /// Users × `iterations` (closed model with `iterations`); `null` when
    /// the run is bounded by time.
    pub planned: Option<u64>,
    /// Iterations whose every step ran (a failure that sends the user on to
    /// its next iteration counts as run).
    pub completed: u64,
    /// Iterations begun: those beyond `completed` were cut (by the run's
    /// end, a stop or a user that stopped), their requests counted.
    #[serde(default)]
    pub started: u64,
}

impl Summary {
    /// Summarizes a finished run.
    pub fn of(r: &RunResult) -> Summary {
        let c = &r.collector;
        let open = r.facts.open_model;
        let d = r.duration.as_secs_f64();
        let (scenarios, shared) = scenario_entries(r, d);
        let hosts: Vec<crate::hosts::HostSummary> = r
            .hosts
            .iter()
            .map(|h| crate::hosts::HostSummary::of(h, d, r.host_bounds))
            .collect();
        let mut agents = BTreeMap::new();
        for a in &r.agents {
            // An agent that did not finish sent load for as long as its
            // reports cover, not for the whole run.
            let span = match a.end {
                AgentEnd::Finished => d,
                _ => a.reported_until_s.unwrap_or(d),
            };
            let results = c
                .agents
                .get(&a.name)
                .map(|t| Entry::of_agent(t, span))
                .unwrap_or_else(|| Entry::of_agent(&AgentTally::default(), span));
            let mut note = a.note.clone();
            if a.end != AgentEnd::Finished && results.latency_ms.is_none() && results.requests > 0 {
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str(
                    "its own latency percentiles are unknown: its totals never arrived \
                     (its reports count in its region and the fleet's figures)",
                );
            }
            agents.insert(
                a.name.clone(),
                AgentEntry {
                    region: a.region.clone(),
                    address: a.peer.clone(),
                    users: a.users,
                    end: a.end.clone(),
                    ended_at_s: a.ended_at_s.map(round3),
                    note,
                    clock_rtt_ms: a.clock_rtt.map(|d| round3(d.as_secs_f64() * 1000.0)),
                    clock_offset_ms: a.clock_offset_us.map(|us| round3(us as f64 / 1000.0)),
                    abandoned: a.abandoned,
                    returned: a.returned,
                    start_skew_ms: a.start_lateness.map(|l| round3(l.as_secs_f64() * 1000.0)),
                    dropped_iterations: c.agent_dropped.get(&a.name).copied().unwrap_or(0),
                    load_share: round3(a.load_share),
                    send_lateness_ms: c
                        .agents
                        .get(&a.name)
                        .and_then(|t| t.send_lateness)
                        .map(round_latency),
                    timing: Some(a.timing.clone()).filter(|t| !t.is_empty()),
                    reported_until_s: a.reported_until_s.map(round3),
                    health: c
                        .agents
                        .get(&a.name)
                        .map(|t| t.health.clone())
                        .filter(|h| h.intervals > 0)
                        .map(|mut h| {
                            h.cpu_pct_max = round3(h.cpu_pct_max);
                            h.cpu_pct_mean = round3(h.cpu_pct_mean);
                            h.loop_lag_ms_max = round3(h.loop_lag_ms_max);
                            h.rss_mb_max = round3(h.rss_mb_max);
                            h.steal_pct_max = round3(h.steal_pct_max);
                            h
                        }),
                    results,
                },
            );
        }
        let gaps = agents
            .iter()
            .filter_map(|(name, a): (&String, &AgentEntry)| a.gap(name))
            .collect();
        let agents_for_warnings: Vec<(String, crate::stats::Health)> = agents
            .iter()
            .filter_map(|(n, a)| a.health.clone().map(|h| (n.clone(), h)))
            .collect();
        let mut regions: BTreeMap<String, Entry> = c
            .regions
            .iter()
            .map(|(k, t)| (k.clone(), Entry::of(t, d, &c.metrics)))
            .collect();
        for a in &r.agents {
            regions
                .entry(a.region.clone())
                .or_insert_with(|| Entry::of(&Tally::default(), d, &[]));
        }
        Summary {
            schema: SUMMARY_SCHEMA.into(),
            name: r.facts.name.clone(),
            run_id: r.run_id.clone(),
            status: r.status,
            started_at: r
                .started_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            duration_s: round3(d),
            target: r.facts.target.clone(),
            load: r.facts.load.clone(),
            latency: if r.facts.load.model == "mixed" {
                // Each scenario's as its model measures it.
                LatencyInfo {
                    unit: "ms".into(),
                    measured_from: "mixed".into(),
                    coordinated_omission_corrected: false,
                }
            } else if open {
                LatencyInfo {
                    unit: "ms".into(),
                    measured_from: "intended_send".into(),
                    coordinated_omission_corrected: true,
                }
            } else {
                LatencyInfo {
                    unit: "ms".into(),
                    measured_from: "send".into(),
                    coordinated_omission_corrected: false,
                }
            },
            dropped_iterations: c.dropped,
            send_lateness_ms: LatencyMs::of(&c.lateness).map(round_latency),
            thresholds: r.thresholds.clone(),
            thresholds_passed: (!r.thresholds.is_empty())
                .then(|| r.thresholds.iter().all(|o| o.passed)),
            aborted_by: r.aborted_by.as_ref().map(ToString::to_string),
            iterations: IterationCount {
                planned: r.facts.iterations_planned,
                completed: c.iterations_completed,
                started: c.iterations_started,
            },
            cut_short: r.cut_short.clone(),
            seed: r.seed,
            missing: Vec::new(),
            gaps,
            warnings: r
                .facts
                .warnings
                .iter()
                .cloned()
                .chain(saturation_warnings(&agents_for_warnings))
                .chain(shared)
                .chain(agents.iter().filter_map(|(n, a)| a.returned_line(n)))
                .chain(r.agents.iter().filter(|a| a.abandoned > 0).map(|a| {
                    format!(
                        "agent {}: {} request(s) were waiting for a response when the load stopped at once: they are in no figure (the target may have served them)",
                        a.name, a.abandoned
                    )
                }))
                .chain(hosts.iter().flat_map(|h| {
                    h.disturbed
                        .iter()
                        .map(|d| format!("the system under test was disturbed: {d}"))
                }))
                .collect(),
            total: Entry {
                ranges: Some(Ranges::of(&c.total, r.facts.ranges_ms)),
                ..Entry::of(&c.total, d, &c.metrics)
            },
            requests: c
                .step_names
                .iter()
                .zip(&c.steps)
                .map(|(n, t)| {
                    let e = Entry {
                        ranges: Some(Ranges::of(t, r.facts.ranges_ms)),
                        ..Entry::of(t, d, &c.metrics)
                    };
                    (n.clone(), e)
                })
                .collect(),
            step_order: c.step_names.clone(),
            groups: c
                .step_names
                .iter()
                .zip(&c.groups)
                .filter(|(_, g)| **g)
                .map(|(n, _)| n.clone())
                .collect(),
            regions,
            scenarios,
            agents,
            errors: c.total.errors.clone(),
            timeline: c.timeline().cloned().collect(),
            late_reports: c.late_reports,
            dropped_reports: c.dropped_reports,
            hosts,
        }
    }
}

impl Summary {
    /// How the run ended, in the summary's words (`completed with errors`).
    pub fn status_word(&self) -> String {
        serde_json::to_value(self.status)
            .ok()
            .and_then(|v| v.as_str().map(|t| t.replace('_', " ")))
            .unwrap_or_default()
    }

    /// The regions' rows' names: a region with an agent lost or failed
    /// during the run is marked, e.g. `us (a2 lost: not all counted)`.
    pub fn region_labels(&self) -> Vec<(String, &Entry)> {
        self.regions
            .iter()
            .map(|(region, e)| {
                let gone: Vec<String> = self
                    .agents
                    .iter()
                    .filter(|(_, a)| &a.region == region)
                    .filter(|(_, a)| !a.returned)
                    .filter_map(|(name, a)| match a.end {
                        AgentEnd::Lost => Some(format!("{name} lost")),
                        AgentEnd::Failed => Some(format!("{name} failed")),
                        _ => None,
                    })
                    .collect();
                let label = if gone.is_empty() {
                    region.clone()
                } else {
                    format!("{region} ({}: not all counted)", gone.join(", "))
                };
                (label, e)
            })
            .collect()
    }

    /// The steps with their results, in journey order; steps the order
    /// does not name (an older summary has none) follow by name.
    pub fn steps(&self) -> Vec<(&String, &Entry)> {
        let mut out: Vec<(&String, &Entry)> = self
            .step_order
            .iter()
            .filter_map(|n| self.requests.get_key_value(n))
            .collect();
        for (n, e) in &self.requests {
            if !self.step_order.contains(n) {
                out.push((n, e));
            }
        }
        out
    }
}

/// Which latency the numbers are, in words, for every output.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An agent's wall-clock offset in words: "in step (+0.4 ms)", "7200.0 s
/// ahead", "3.2 s behind".
pub fn clock_offset_words(ms: f64) -> String {
    if ms.abs() < 1000.0 {
        format!("in step with the controller's ({ms:+.1} ms)")
    } else if ms > 0.0 {
        format!("{:.1} s ahead of the controller's", ms / 1000.0)
    } else {
        format!("{:.1} s behind the controller's", -ms / 1000.0)
    }
}

pub fn latency_note(s: &Summary) -> &'static str {
    if s.latency.coordinated_omission_corrected {
        "latency in ms, measured from each request's intended send time (corrected for coordinated omission); the uncorrected row measures from the actual send"
    } else {
        "latency in ms, measured from when each request was sent (closed model: not corrected for coordinated omission)"
    }
}

/// Reads a run directory's `summary.json`.
pub fn read_summary(dir: &Path) -> Result<Summary, String> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a loadfleet summary: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if summary.schema != SUMMARY_SCHEMA {
        return Err(format!(
            "{}: schema {:?}, expected {SUMMARY_SCHEMA:?}",
            path.display(),
            summary.schema
        ));
    }
    Ok(summary)
}

/// Responses an entry's requests got: its requests less those that ended
/// without one (a timeout, a refused or reset connection...).
pub fn responses(e: &Entry) -> u64 {
    e.requests.saturating_sub(
        e.errors_by_kind
            .iter()
            .filter(|(k, _)| !crate::stats::came_with_response(k))
            .map(|(_, n)| n)
            .sum::<u64>(),
    )
}
