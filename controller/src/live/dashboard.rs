//! The live dashboard: what the page shows, made from the merged figures
//! each interval, and the page itself. The page is complete without
//! scripts (the server renders the newest snapshot into it); its own few
//! lines of script then follow the run through server-sent events.

use serde::Serialize;

use crate::stats::Collector;

/// Intervals of history the page keeps.
pub const HISTORY: usize = 600;

/// Everything the page shows, at one moment.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    /// The plan's name (and a series' or capacity search's current run).
    pub title: String,
    pub run_id: String,
    /// `waiting` (for agents), `running`, `stopping` or `ended`.
    pub state: String,
    pub elapsed_s: f64,
    pub scheduled_s: Option<f64>,
    pub requests: u64,
    pub errors: u64,
    /// The newest closed interval.
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub active_users: u64,
    pub errors_by_kind: Vec<(String, u64)>,
    pub timeline: Vec<Point>,
    pub regions: Vec<RegionRow>,
    pub agents: Vec<AgentRow>,
    pub thresholds: Vec<crate::thresholds::Outcome>,
    /// Open model: send lateness p99 so far.
    pub lateness_p99_ms: Option<f64>,
    /// The numbers read from responses (`[[metric]]`), every one the plan
    /// names, all steps together.
    pub metrics: Vec<MetricRow>,
    /// How the run ended (its status), once it has.
    pub status: Option<String>,
    /// Where the final report is served, once written.
    pub report: Option<String>,
    /// The report's path on the controller's disk.
    pub report_file: Option<String>,
    /// The observed hosts of the system under test, their newest sample.
    pub hosts: Vec<HostRow>,
    /// Per step (the first [`STEP_ROWS`] in plan order), the run so far.
    pub steps: Vec<StepRow>,
    /// Steps past [`STEP_ROWS`], not shown.
    pub steps_hidden: usize,
    /// What the tiles' req/s and percentiles cover: "the newest second",
    /// or "the whole run" once it has ended.
    pub tiles: String,
}

/// Most steps the page lists (each row's percentiles are computed every
/// second from its histogram).
pub const STEP_ROWS: usize = 100;

/// One step's figures over the run so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepRow {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// An observed host's newest interval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostRow {
    pub name: String,
    /// user + system, % of all its CPUs.
    pub busy_pct: f64,
    pub steal_pct: f64,
    pub load1: f64,
    /// Named processes' CPU, in words ("php-fpm 61%").
    pub processes: String,
    /// Others' CPU, % of a core, and the busiest other process.
    pub others_core_pct: f64,
    pub top_other: String,
}

impl HostRow {
    /// The row of `name`'s newest sample.
    pub fn of(name: &str, v: &loadfleet_proto::v1::HostVitals) -> HostRow {
        let all = (u64::from(v.cores).saturating_mul(v.span_us)).max(1) as f64;
        let core = v.span_us.max(1) as f64;
        HostRow {
            name: name.to_string(),
            busy_pct: round(v.user_us.saturating_add(v.system_us) as f64 * 100.0 / all),
            steal_pct: round(v.steal_us as f64 * 100.0 / all),
            load1: round(v.load1),
            processes: v
                .processes
                .iter()
                .map(|p| format!("{} {:.0}%", p.name, p.cpu_us as f64 * 100.0 / core))
                .collect::<Vec<_>>()
                .join(", "),
            others_core_pct: round(v.others_cpu_us as f64 * 100.0 / core),
            top_other: v.top_other.clone(),
        }
    }
}

/// One interval of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t: f64,
    pub rps: f64,
    pub errors_per_s: f64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub active: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionRow {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub p95_ms: Option<f64>,
    pub active: u64,
}

/// One `[[metric]]`: over the run so far, and in the newest interval.
#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    pub name: String,
    pub unit: String,
    /// Responses that carried it, and those that did not.
    pub count: u64,
    pub missing: u64,
    /// Exact means (the sum over the count).
    pub mean: Option<f64>,
    pub newest_mean: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub name: String,
    pub region: String,
    pub state: String,
    pub requests: u64,
    /// Seconds since its newest report, when it is late.
    pub stale_s: Option<f64>,
    /// Its generator's CPU (% of its CPUs) and event-loop lag (ms) in its
    /// newest interval.
    pub cpu_pct: Option<f64>,
    pub lag_ms: Option<f64>,
}

impl Snapshot {
    /// The run has ended: the tiles show the whole run (the newest
    /// interval is the last, often a fraction of a second).
    pub fn whole_run(&mut self, c: &Collector) {
        let l = c.total.latency();
        self.rps = round(c.total.requests() as f64 / c.elapsed.as_secs_f64().max(0.001));
        self.p50_ms = l.map(|l| round(l.p50));
        self.p95_ms = l.map(|l| round(l.p95));
        self.p99_ms = l.map(|l| round(l.p99));
        self.active_users = 0;
        self.tiles = "the whole run".into();
    }

    /// The figures of `c` (closed intervals) for the page.
    pub fn of(c: &Collector) -> Snapshot {
        let last = c.newest.as_ref();
        let newest_first: Vec<&crate::stats::IntervalPoint> =
            c.timeline().rev().take(HISTORY).collect();
        let mut points: Vec<&crate::stats::IntervalPoint> =
            newest_first.into_iter().rev().collect();
        // The run's last interval is often a sliver (the milliseconds after
        // the last full second): as a point of its own its rate would drop
        // or spike at the end of every chart, so it joins the one before it
        // (its requests over their joint length; the percentiles and users
        // of the whole run hold its samples).
        let full = points.iter().map(|p| p.length_s).fold(0.0, f64::max);
        let sliver = match points.as_slice() {
            [.., _, last] if last.length_s < full / 2.0 => points.pop(),
            _ => None,
        };
        let mut timeline: Vec<Point> = points
            .into_iter()
            .map(|p| Point {
                t: round(p.start_s + p.length_s),
                rps: round(p.requests as f64 / p.length_s.max(0.001)),
                errors_per_s: round(p.errors as f64 / p.length_s.max(0.001)),
                p50: p.latency_ms.map(|l| round(l.p50)),
                p95: p.latency_ms.map(|l| round(l.p95)),
                p99: p.latency_ms.map(|l| round(l.p99)),
                active: p.active_peak,
            })
            .collect();
        if let (Some(s), Some(prev)) = (sliver, c.timeline().rev().nth(1))
            && let Some(last) = timeline.last_mut()
        {
            let length = (prev.length_s + s.length_s).max(0.001);
            last.t = round(s.start_s + s.length_s);
            last.rps = round((prev.requests + s.requests) as f64 / length);
            last.errors_per_s = round((prev.errors + s.errors) as f64 / length);
            last.active = last.active.max(s.active_peak);
        }
        let mut errors_by_kind: Vec<(String, u64)> = c
            .total
            .errors
            .iter()
            .map(|(k, e)| (k.clone(), e.count))
            .collect();
        errors_by_kind.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let secs = c.elapsed.as_secs_f64().max(0.001);
        let steps: Vec<StepRow> = c
            .step_names
            .iter()
            .zip(&c.steps)
            .take(STEP_ROWS)
            .map(|(name, t)| {
                let l = t.latency();
                StepRow {
                    name: name.clone(),
                    requests: t.requests(),
                    errors: t.error_count(),
                    rps: round(t.requests() as f64 / secs),
                    p50_ms: l.map(|l| round(l.p50)),
                    p95_ms: l.map(|l| round(l.p95)),
                    p99_ms: l.map(|l| round(l.p99)),
                }
            })
            .collect();
        Snapshot {
            tiles: "the newest second".into(),
            steps_hidden: c.step_names.len().saturating_sub(STEP_ROWS),
            steps,
            elapsed_s: round(c.elapsed.as_secs_f64()),
            requests: c.total.requests(),
            errors: c.total.error_count(),
            rps: last.map_or(0.0, |p| round(p.requests as f64 / p.length_s.max(0.001))),
            p50_ms: last.and_then(|p| p.latency_ms).map(|l| round(l.p50)),
            p95_ms: last.and_then(|p| p.latency_ms).map(|l| round(l.p95)),
            p99_ms: last.and_then(|p| p.latency_ms).map(|l| round(l.p99)),
            active_users: last.map_or(0, |p| p.active_users),
            errors_by_kind,
            timeline,
            regions: c
                .regions
                .iter()
                .map(|(name, t)| RegionRow {
                    name: name.clone(),
                    requests: t.requests(),
                    errors: t.error_count(),
                    p95_ms: t.latency().map(|l| round(l.p95)),
                    // The newest interval's peak (users between iterations
                    // at its end were active in it).
                    active: last
                        .map(|p| {
                            let end = p.active_by_region.get(name).copied().unwrap_or(0);
                            p.peak_by_region.get(name).copied().unwrap_or(0).max(end)
                        })
                        .unwrap_or(0),
                })
                .collect(),
            lateness_p99_ms: crate::stats::LatencyMs::of(&c.lateness).map(|l| round(l.p99)),
            metrics: c
                .metrics
                .iter()
                .enumerate()
                .map(|(id, spec)| {
                    let stats = c.total.metrics.get(&(id as u32)).map(|m| m.stats());
                    MetricRow {
                        name: spec.name.clone(),
                        unit: spec.unit.clone(),
                        count: stats.as_ref().map_or(0, |m| m.count),
                        missing: stats.as_ref().map_or(0, |m| m.missing),
                        mean: stats.and_then(|m| m.mean).map(round),
                        newest_mean: last
                            .and_then(|p| p.metric_means.get(&spec.name))
                            .copied()
                            .map(round),
                    }
                })
                .collect(),
            ..Snapshot::default()
        }
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn fmt_opt(v: &Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

#[derive(askama::Template)]
#[template(path = "dashboard.html")]
struct Page<'a> {
    s: &'a Snapshot,
    /// The snapshot as JSON, for the script to start from.
    json: String,
    /// `?token=...` for the page's own requests, when the server needs one.
    query: String,
}

/// The page, with `s` already in it.
pub fn page(s: &Snapshot, token: Option<&str>) -> String {
    use askama::Template;
    let json = serde_json::to_string(s)
        .unwrap_or_default()
        // Inside <script>: never end the element early.
        .replace("</", "<\\/");
    let query = token.map_or_else(String::new, |t| {
        format!(
            "?token={}",
            form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
        )
    });
    Page { s, json, query }
        .render()
        .unwrap_or_else(|e| format!("cannot render the dashboard: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page opened before the run (no number read yet) holds the
    /// metrics table, hidden, for its script to fill and show.
    #[test]
    fn a_page_opened_before_the_run_can_show_its_metrics() {
        let html = page(&Snapshot::default(), None);
        assert!(
            html.contains("<div id=\"metrics-section\" hidden>"),
            "{html}"
        );
        assert!(html.contains("id=\"metrics-body\""));
        assert!(html.contains("$('metrics-section').hidden = s.metrics.length === 0;"));
        for chart in ["latency", "throughput", "users"] {
            assert!(html.contains(&format!("<svg id=\"{chart}\"")), "{chart}");
        }
    }
}
