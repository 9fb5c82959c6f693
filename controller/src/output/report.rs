//! `report.html`: one self-contained file (no scripts, fonts or styles from
//! elsewhere) with the run's header, tables and charts. Built with askama,
//! which escapes every value by default.

use askama::Template;

use super::svg::{
    Band, Series, Size, Values, colors, line_chart, line_chart_marked, percentile_chart,
};
use crate::summary::{Entry, Summary};

struct Row<'a> {
    name: String,
    extra: String,
    e: &'a Entry,
    /// What the latency cells say when there are no figures.
    blank: &'static str,
}

impl<'a> Row<'a> {
    fn new(name: &str, e: &'a Entry) -> Row<'a> {
        Row {
            name: name.to_string(),
            extra: String::new(),
            e,
            blank: "no responses",
        }
    }
}

#[derive(Template)]
#[template(path = "report.html")]
struct Report<'a> {
    s: &'a Summary,
    status: String,
    /// When the run started, to the second (the summary keeps nanoseconds).
    started: String,
    load: String,
    steps: Vec<Row<'a>>,
    regions: Vec<Row<'a>>,
    /// Per scenario (with more than one).
    scenarios: Vec<Row<'a>>,
    agents: Vec<Row<'a>>,
    latency_chart: String,
    throughput_chart: String,
    users_chart: String,
    distribution_chart: String,
    /// Names of the distribution's series, for the toggles.
    distribution_series: Vec<(String, String)>,
    /// One small distribution chart per step, when there are too many
    /// steps for one chart.
    step_charts: Vec<String>,
    /// The verdict at the top: its words, and `good` or `bad`.
    verdict: (String, &'static str),
    /// Where it is slowest, for the first screen: the step (and, with more
    /// than one, the region) with the highest p95.
    slowest: Vec<String>,
    /// Errors as a percentage of requests.
    error_pct: f64,
    /// The most frequent error kinds, at most three.
    top_errors: Vec<(&'a str, u64)>,
    /// (step, error kind, count)
    step_errors: Vec<(&'a str, &'a str, u64)>,
    plan_vs_achieved: Vec<RegionLoad>,
    planned_unit: &'static str,
    region_users_chart: String,
    latency_note: &'static str,
    /// (step or "all steps", metric, unit, figures)
    metric_rows: Vec<(String, String, String, crate::stats::MetricStats)>,
    /// Each metric's mean per interval.
    metric_charts: Vec<String>,
    /// Request phases (`[http] phases`), per step: (step, total µs per
    /// request, [(phase, µs per request, % of the widest bar, colour)]).
    phase_rows: Vec<PhaseRow>,
    /// The request phases' colours, for the legend under their table.
    phase_legend: Vec<(&'static str, &'static str)>,
    /// Each request phase's mean per interval.
    phase_chart: String,
    /// The observed hosts of the system under test.
    hosts: Vec<HostView>,
    /// The run's requests by response time, as a bar with its legend.
    total_ranges: String,
    /// Each step's, by name.
    step_ranges: Vec<(String, String)>,
}

/// A response-time ranges bar (HTML: numbers only, no text from the plan)
/// and its legend; empty without requests.
fn ranges_bar(r: &crate::summary::Ranges) -> String {
    let total = r.under + r.between + r.over + r.no_response;
    if total == 0 {
        return String::new();
    }
    let ms = |v: f64| {
        if v >= 1000.0 && v.fract() == 0.0 {
            format!("{},{:03}", v as u64 / 1000, v as u64 % 1000)
        } else {
            format!("{v}")
        }
    };
    let (lo, hi) = (ms(r.bounds_ms.0), ms(r.bounds_ms.1));
    let parts = [
        (r.under, "#2a7d2a", format!("under {lo} ms")),
        (r.between, "#e0a100", format!("{lo} to {hi} ms")),
        (r.over, "#d9480f", format!("{hi} ms or more")),
        (r.no_response, "#b3261e", "no response".to_string()),
    ];
    let pct = |n: u64| n as f64 * 100.0 / total as f64;
    let mut bar = String::from("<div class=\"rbar\">");
    let mut legend = String::from("<div class=\"rlegend\">");
    for (i, (n, color, label)) in parts.iter().enumerate() {
        if *n > 0 {
            bar.push_str(&format!(
                "<span style=\"width:{:.3}%;background:{color}\" title=\"{label}: {n} ({:.1}%)\"></span>",
                pct(*n),
                pct(*n)
            ));
        }
        legend.push_str(&format!(
            "{}<span style=\"color:{color}\">■</span> {label} <b>{:.1}%</b> ({n})",
            if i > 0 { " · " } else { "" },
            pct(*n)
        ));
    }
    bar.push_str("</div>");
    legend.push_str("</div>");
    format!("{bar}{legend}")
}

/// One observed host: its figures in lines, why it was disturbed, its charts.
struct HostView {
    name: String,
    lines: Vec<String>,
    disturbed: Vec<String>,
    charts: Vec<String>,
}

fn host_views(s: &Summary) -> Vec<HostView> {
    let colors = super::svg::colors(8);
    s.hosts
        .iter()
        .map(|h| {
            let mut lines: Vec<String> = h
                .describe()
                .lines()
                .filter(|l| !l.trim_start().starts_with("DISTURBED:"))
                .map(|l| l.trim().to_string())
                .collect();
            if let Some(first) = lines.first_mut() {
                *first = first.trim_start_matches("target host ").to_string();
            }
            let cpu = line_chart(
                &format!("{}: CPU, % of all its CPUs", h.name),
                "%",
                Values::Real,
                &[
                    Series {
                        name: "busy (user + system)",
                        color: "#1f77b4",
                        points: h.timeline.iter().map(|p| (p.t_s, p.busy_pct)).collect(),
                    },
                    Series {
                        name: "steal",
                        color: "#d62728",
                        points: h.timeline.iter().map(|p| (p.t_s, p.steal_pct)).collect(),
                    },
                ],
            );
            let mut series: Vec<Series<'_>> = h
                .processes
                .iter()
                .enumerate()
                .map(|(i, p)| Series {
                    name: &p.name,
                    color: &colors[i % colors.len()],
                    points: h
                        .timeline
                        .iter()
                        .map(|t| (t.t_s, t.processes_core_pct.get(i).copied().unwrap_or(0.0)))
                        .collect(),
                })
                .collect();
            series.push(Series {
                name: "others",
                color: "#7f7f7f",
                points: h
                    .timeline
                    .iter()
                    .map(|p| (p.t_s, p.others_core_pct))
                    .collect(),
            });
            let procs = line_chart(
                &format!("{}: processes, % of a core", h.name),
                "% of a core",
                Values::Real,
                &series,
            );
            HostView {
                name: h.name.clone(),
                lines,
                disturbed: h.disturbed.clone(),
                charts: vec![cpu, procs],
            }
        })
        .collect()
}

struct PhaseRow {
    step: String,
    total_us: f64,
    parts: Vec<(&'static str, f64, f64, &'static str)>,
}

/// The request phases: metric, label, colour.
const PHASES: [(&str, &str, &str); 6] = [
    ("http_dns", "DNS", "#9467bd"),
    ("http_connect", "connect", "#8c564b"),
    ("http_tls", "TLS", "#e377c2"),
    ("http_send", "send", "#2ca02c"),
    ("http_wait", "wait", "#ff7f0e"),
    ("http_receive", "receive", "#1f77b4"),
];

/// Each request phase's mean per interval (of the requests that had it),
/// one line each; empty without `[http] phases`.
fn phase_chart(s: &Summary) -> String {
    if !s.total.metrics.contains_key("http_wait") {
        return String::new();
    }
    let series: Vec<Series<'_>> = PHASES
        .iter()
        .filter(|(key, _, _)| s.total.metrics.contains_key(*key))
        .map(|(key, label, color)| Series {
            name: label,
            color,
            points: s
                .timeline
                .iter()
                .filter_map(|p| {
                    p.metric_means
                        .get(*key)
                        .map(|v| (p.start_s + p.length_s, *v))
                })
                .collect(),
        })
        .collect();
    line_chart(
        "Request phases over time (mean of the requests that had each)",
        "µs",
        Values::Real,
        &series,
    )
}

/// The request phases, stacked per step: each phase's time per request of
/// the step (its sum over the step's requests, so connect time counts only
/// where a connection was opened and the bar adds up to the time a request
/// took on the wire). Each bar spans its step's own time, so a fast step's
/// proportions read as well as a slow one's; the total column compares
/// steps.
fn phase_rows(s: &Summary) -> Vec<PhaseRow> {
    if !s.total.metrics.contains_key("http_wait") {
        return Vec::new();
    }
    let mut rows: Vec<PhaseRow> = s
        .steps()
        .into_iter()
        .filter(|(_, e)| e.requests > 0)
        .map(|(step, e)| {
            let parts: Vec<(&'static str, f64, f64, &'static str)> = PHASES
                .iter()
                .map(|(key, label, color)| {
                    let us = e
                        .metrics
                        .get(*key)
                        .map_or(0.0, |m| m.stats.sum as f64 / e.requests as f64);
                    (*label, us, 0.0, *color)
                })
                .collect();
            PhaseRow {
                step: step.clone(),
                total_us: parts.iter().map(|p| p.1).sum(),
                parts,
            }
        })
        .collect();
    for r in &mut rows {
        let total = r.total_us.max(1e-9);
        for p in &mut r.parts {
            p.2 = p.1 * 100.0 / total;
        }
    }
    rows
}

fn fmt_num(v: &Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn fmt_int(v: &Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The metrics table's rows: each step's, then all steps'.
fn metric_rows(s: &Summary) -> Vec<(String, String, String, crate::stats::MetricStats)> {
    let all = "all steps".to_string();
    s.steps()
        .into_iter()
        .chain([(&all, &s.total)])
        .flat_map(|(step, e)| {
            e.metrics
                .iter()
                .map(move |(n, m)| (step.clone(), n.clone(), m.unit.clone(), m.stats.clone()))
        })
        .collect()
}

/// One small chart per metric: its mean per interval over the run.
fn metric_charts(s: &Summary) -> Vec<String> {
    s.total
        .metrics
        .iter()
        .map(|(name, m)| {
            let unit = if m.unit.is_empty() { "value" } else { &m.unit };
            line_chart(
                &format!("{name}: mean per interval"),
                unit,
                Values::Real,
                &[Series {
                    name,
                    color: "#1f77b4",
                    points: s
                        .timeline
                        .iter()
                        .filter_map(|p| {
                            p.metric_means
                                .get(name)
                                .map(|v| (p.start_s + p.length_s, *v))
                        })
                        .collect(),
                }],
            )
        })
        .collect()
}

/// `2026-12-01T10:09:41.123456789Z` as `2026-12-01 10:09:41 UTC`.
fn to_the_second(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..19)) {
        (Some(date), Some(time)) if rfc3339.ends_with('Z') => format!("{date} {time} UTC"),
        _ => rfc3339.to_string(),
    }
}

/// One region's planned and achieved load.
struct RegionLoad {
    region: String,
    agents: usize,
    share_pct: f64,
    planned: f64,
    peak_users: u64,
    rps: f64,
    requests_pct: f64,
}

fn region_loads(s: &Summary) -> (Vec<RegionLoad>, &'static str) {
    let open = s.load.model == "open";
    let peak_rate = s.load.rate_stages.as_ref().map_or(0.0, |st| {
        st.iter().map(|x| x.from.max(x.to)).fold(0.0, f64::max)
    });
    let rows = s
        .regions
        .iter()
        .map(|(region, e)| {
            let agents: Vec<_> = s.agents.values().filter(|a| &a.region == region).collect();
            let share: f64 = agents.iter().map(|a| a.load_share).sum();
            let planned = if open {
                share * peak_rate
            } else {
                agents.iter().map(|a| a.users as f64).sum()
            };
            RegionLoad {
                region: region.clone(),
                agents: agents.len(),
                share_pct: share * 100.0,
                planned,
                peak_users: s
                    .timeline
                    .iter()
                    .map(|p| {
                        let end = p.active_by_region.get(region).copied().unwrap_or(0);
                        p.peak_by_region.get(region).copied().unwrap_or(0).max(end)
                    })
                    .max()
                    .unwrap_or(0),
                rps: e.rps,
                requests_pct: e.requests as f64 * 100.0 / s.total.requests.max(1) as f64,
            }
        })
        .collect();
    (
        rows,
        if open {
            "planned peak arrivals/s"
        } else {
            "planned users"
        },
    )
}

fn fmt_ms(v: &f64) -> String {
    format!("{v:.2}")
}

#[derive(Template)]
#[template(path = "compare.html")]
struct ComparisonReport<'a> {
    runs: Vec<(&'a str, &'a Summary, String)>,
    distributions: String,
    comparisons: &'a [crate::compare::Comparison],
    limits: crate::compare::Limits,
}

fn fmt_opt(v: &Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

fn fmt_pct(v: &Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:+.1}%"))
}

/// One comparison report: the delta tables, and each run's latency over
/// time side by side.
pub fn render_comparison(
    runs: &[(&str, &Summary)],
    comparisons: &[crate::compare::Comparison],
    limits: crate::compare::Limits,
) -> Result<String, askama::Error> {
    // One y scale for the charts side by side: the highest p99 of any
    // run's interval, so that equal heights mean equal latencies.
    let shared = runs
        .iter()
        .flat_map(|(_, s)| s.timeline.iter())
        .filter_map(|p| p.latency_ms.as_ref().map(|l| l.p99))
        .fold(0.0, f64::max);
    let runs = runs
        .iter()
        .map(|(name, s)| {
            let chart = latency_over_time(
                &format!("Latency over time: {name}"),
                &s.timeline,
                &[
                    ("p50", "#1f77b4", |l| l.p50),
                    ("p95", "#2ca02c", |l| l.p95),
                    ("p99", "#ff7f0e", |l| l.p99),
                ],
                Some(shared),
            );
            (*name, *s, chart)
        })
        .collect::<Vec<_>>();
    let palette = colors(runs.len());
    let overlaid: Vec<Series<'_>> = runs
        .iter()
        .zip(&palette)
        .map(|((name, s, _), color)| Series {
            name,
            color,
            points: s.total.distribution.clone(),
        })
        .collect();
    let distributions = percentile_chart(
        "Percentile distributions, overlaid (all steps)",
        Size::Full,
        &overlaid,
    );
    ComparisonReport {
        runs,
        distributions,
        comparisons,
        limits,
    }
    .render()
}

/// Latency figures over time, one line each: (name, color, which figure).
type LatencyLine = (
    &'static str,
    &'static str,
    fn(&crate::stats::LatencyMs) -> f64,
);

fn latency_over_time(
    title: &str,
    timeline: &[crate::stats::IntervalPoint],
    lines: &[LatencyLine],
    y_max: Option<f64>,
) -> String {
    let series: Vec<Series<'_>> = lines
        .iter()
        .map(|&(name, color, f)| Series {
            name,
            color,
            points: timeline
                .iter()
                .filter_map(|p| {
                    p.latency_ms
                        .as_ref()
                        .map(|l| (p.start_s + p.length_s, f(l)))
                })
                .collect(),
        })
        .collect();
    let bands: Vec<Band> = timeline
        .iter()
        .filter(|p| !p.suspect.is_empty())
        .map(|p| Band {
            from: p.start_s,
            to: p.start_s + p.length_s,
            why: format!("suspect: generator saturated ({})", p.suspect.join(", ")),
        })
        .collect();
    line_chart_marked(title, "ms", Values::Real, &series, &bands, y_max)
}

/// A count per interval as a rate over each interval's real length. The
/// run's last interval is often a sliver (the 15 ms after the last full
/// second) holding the responses still in flight: counted over its own
/// length it would draw a spike, so a final interval shorter than half the
/// others is merged into the one before it.
fn rates(
    timeline: &[crate::stats::IntervalPoint],
    count: fn(&crate::stats::IntervalPoint) -> u64,
) -> Vec<(f64, f64)> {
    let full = timeline.iter().map(|p| p.length_s).fold(0.0, f64::max);
    let mut points: Vec<(f64, u64, f64)> = Vec::with_capacity(timeline.len());
    for (i, p) in timeline.iter().enumerate() {
        let last = i + 1 == timeline.len();
        match points.last_mut() {
            Some(prev) if last && p.length_s < full / 2.0 => {
                prev.0 = p.start_s + p.length_s;
                prev.1 += count(p);
                prev.2 += p.length_s;
            }
            _ => points.push((p.start_s + p.length_s, count(p), p.length_s)),
        }
    }
    points
        .into_iter()
        .map(|(end, n, length)| (end, n as f64 / length.max(0.001)))
        .collect()
}

/// What the run received from the target, for the header.
fn received(s: &Summary) -> String {
    use crate::console::bytes;
    let mut t = format!(
        "{} from the target ({}/s)",
        bytes(s.total.counters.bytes_received),
        bytes((s.total.counters.bytes_received as f64 / s.duration_s.max(0.001)) as u64)
    );
    if s.total.counters.bytes_decoded > 0 {
        t.push_str(&format!(
            "; checks read {} of decoded bodies",
            bytes(s.total.counters.bytes_decoded)
        ));
    }
    t
}

/// How a run ended, in the summary's words (for the templates).
fn status_word(s: &Summary) -> String {
    s.status_word()
}

/// The verdict at the top of the report: thresholds decide when there are
/// any; otherwise how the run ended.
fn verdict(s: &Summary) -> (String, &'static str) {
    let status = status_word(s);
    let failed = s.thresholds.iter().filter(|o| !o.passed).count();
    match s.thresholds_passed {
        Some(true) if s.gaps.is_empty() && s.cut_short.is_empty() => (
            format!(
                "PASSED: all {} thresholds met ({status})",
                s.thresholds.len()
            ),
            "good",
        ),
        Some(false) => {
            // Each broken rule with what it saw, so the first screen says
            // what failed and by how much.
            let broken: Vec<String> = s
                .thresholds
                .iter()
                .filter(|o| !o.passed)
                .map(|o| {
                    let seen = o.observed.map_or_else(
                        || "nothing measured".to_string(),
                        |v| format!("{v} {}", o.unit).trim_end().to_string(),
                    );
                    format!("{} ({}: {seen})", o.rule, o.scope)
                })
                .collect();
            (
                format!(
                    "FAILED: {failed} of {} thresholds not met: {} ({status})",
                    s.thresholds.len(),
                    broken.join("; ")
                ),
                "bad",
            )
        }
        _ if s.status == crate::outcome::RunStatus::Completed => (status, "good"),
        _ => (status, "bad"),
    }
}

/// The slowest step, and region when there are several, by p95.
fn slowest(s: &Summary) -> Vec<String> {
    let worst = |rows: Vec<(&String, &crate::summary::Entry)>| {
        rows.into_iter()
            .filter_map(|(n, e)| e.latency_ms.map(|l| (n.clone(), l.p95)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let mut out = Vec::new();
    let steps: Vec<_> = s
        .steps()
        .into_iter()
        .filter(|(n, _)| !s.groups.contains(n))
        .collect();
    if steps.len() > 1
        && let Some((n, p95)) = worst(steps)
    {
        out.push(format!("slowest step {n}: p95 {p95:.1} ms"));
    }
    if s.regions.len() > 1
        && let Some((n, p95)) = worst(s.regions.iter().collect())
    {
        out.push(format!("slowest region {n}: p95 {p95:.1} ms"));
    }
    out
}

/// Region, users, how it ended, start skew, dropped iterations, send
/// lateness and health of an agent.
fn agent_note(a: &crate::summary::AgentEntry) -> String {
    let mut note = format!(
        "{} · {} users · {}",
        a.region,
        a.users,
        format!("{:?}", a.end).to_lowercase()
    );
    if let Some(skew) = a.start_skew_ms {
        note.push_str(&format!(" · start skew {skew:.3} ms"));
    }
    if let Some(rtt) = a.clock_rtt_ms {
        note.push_str(&format!(" · clock rtt {rtt:.3} ms"));
    }
    if let Some(off) = a.clock_offset_ms {
        note.push_str(&format!(
            " · wall clock {}",
            crate::summary::clock_offset_words(off)
        ));
    }
    if a.dropped_iterations > 0 {
        note.push_str(&format!(" · {} dropped iterations", a.dropped_iterations));
    }
    // Open model: how late its arrivals left, and the timing that explains it.
    if let Some(l) = a.send_lateness_ms {
        note.push_str(&format!(" · send lateness p99 {:.3} ms", l.p99));
        if let Some(t) = &a.timing {
            note.push_str(&format!(" (timing: {t})"));
        }
    }
    if let Some(h) = &a.health {
        note.push_str(&format!(
            " · CPU up to {:.0}% of {} (mean {:.0}%) · event loop up to {:.1} ms late · {:.0} MB",
            h.cpu_pct_max, h.cores, h.cpu_pct_mean, h.loop_lag_ms_max, h.rss_mb_max
        ));
        if h.saturated_intervals > 0 {
            note.push_str(&format!(
                " · SATURATED in {} intervals",
                h.saturated_intervals
            ));
        }
    }
    if a.end != crate::outcome::AgentEnd::Finished {
        match a.reported_until_s {
            Some(t) => note.push_str(&format!(" · reports cover 0–{t:.1} s")),
            None => note.push_str(" · no report arrived"),
        }
    }
    if !a.note.is_empty() {
        note.push_str(" · ");
        note.push_str(&a.note);
    }
    note
}

/// The timeline as the report's charts draw it: the run's last interval,
/// when it is a sliver (shorter than half the others: the milliseconds
/// after the last full interval, holding the responses still in flight),
/// joins the one before it, so that no chart drops or spikes at its end.
/// Counts add up over the joint length, the peak is the higher and the
/// mean users are weighted by length; the percentiles are the earlier
/// interval's (the sliver's few samples are in the whole run's figures).
fn folded(timeline: &[crate::stats::IntervalPoint]) -> Vec<crate::stats::IntervalPoint> {
    let mut out = timeline.to_vec();
    let full = timeline.iter().map(|p| p.length_s).fold(0.0, f64::max);
    if out.len() >= 2 && out[out.len() - 1].length_s < full / 2.0 {
        let last = out.pop().expect("two points");
        let prev = out.last_mut().expect("one point");
        let length = prev.length_s + last.length_s;
        prev.active_mean = (prev.active_mean * prev.length_s + last.active_mean * last.length_s)
            / length.max(1e-9);
        prev.length_s = length;
        prev.requests += last.requests;
        prev.errors += last.errors;
        prev.dropped += last.dropped;
        prev.iterations_started += last.iterations_started;
        prev.active_peak = prev.active_peak.max(last.active_peak);
        prev.active_users = last.active_users;
        for (r, n) in last.peak_by_region {
            let e = prev.peak_by_region.entry(r).or_default();
            *e = (*e).max(n);
        }
        for why in last.suspect {
            if !prev.suspect.contains(&why) {
                prev.suspect.push(why);
            }
        }
    }
    out
}

/// Renders the report of a run.
pub fn render(s: &Summary) -> Result<String, askama::Error> {
    let timeline = folded(&s.timeline);
    // A run longer than the timeline's cap has points of several seconds.
    let point_s = s
        .timeline
        .iter()
        .map(|p| p.length_s)
        .fold(0.0f64, f64::max)
        .round()
        .max(1.0);
    let latency_title = format!("Latency over time (per {point_s:.0} s interval)");
    let latency_chart = latency_over_time(
        &latency_title,
        &timeline,
        &[
            ("p50", "#1f77b4", |l| l.p50),
            ("p90", "#2ca02c", |l| l.p90),
            ("p95", "#9467bd", |l| l.p95),
            ("p99", "#ff7f0e", |l| l.p99),
            ("max", "#d62728", |l| l.max),
        ],
        None,
    );
    let per_s = |f: fn(&crate::stats::IntervalPoint) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .map(|p| (p.start_s + p.length_s, f(p)))
            .collect()
    };
    let users_chart = line_chart(
        "Active users over time",
        "users",
        Values::Counts,
        &[
            Series {
                name: "mean",
                color: "#1f77b4",
                points: per_s(|p| p.active_mean),
            },
            Series {
                name: "peak",
                color: "#ff7f0e",
                points: per_s(|p| p.active_peak.max(p.active_users) as f64),
            },
        ],
    );
    // The whole run and its regions in one chart; the steps beside it when
    // the total stays readable (at most eight curves), else one small chart
    // per step, each with the whole run in grey for reference.
    let regions: Vec<(String, &Entry)> = s
        .regions
        .iter()
        .map(|(n, e)| (format!("region {n}"), e))
        .collect();
    let steps: Vec<(String, &Entry)> = s
        .steps()
        .into_iter()
        .map(|(n, e)| (format!("step {n}"), e))
        .collect();
    let together = 1 + regions.len() + steps.len() <= 8;
    let main: Vec<&(String, &Entry)> = if together {
        regions.iter().chain(&steps).collect()
    } else {
        regions.iter().collect()
    };
    let palette = colors(main.len() + 1);
    // A curve identical to the whole run's (one region, one step) would
    // hide under it: its legend says so and it is not drawn.
    let labels: Vec<String> = main
        .iter()
        .map(|(name, e)| {
            if e.distribution == s.total.distribution {
                format!("{name}: same as overall")
            } else {
                name.clone()
            }
        })
        .collect();
    let mut dist = vec![Series {
        name: "overall",
        color: &palette[0],
        points: s.total.distribution.clone(),
    }];
    for (((_, e), color), label) in main
        .iter()
        .map(|x| (&x.0, x.1))
        .zip(&palette[1..])
        .zip(&labels)
    {
        dist.push(Series {
            name: label,
            color,
            points: if e.distribution == s.total.distribution {
                Vec::new()
            } else {
                e.distribution.clone()
            },
        });
    }
    let names = dist
        .iter()
        .map(|d| (d.name.to_string(), d.color.to_string()))
        .collect();
    let distribution_chart = percentile_chart(
        "Percentile distribution of the whole run",
        Size::Full,
        &dist,
    );
    let step_charts = if together {
        Vec::new()
    } else {
        steps
            .iter()
            .map(|(name, e)| {
                percentile_chart(
                    name,
                    Size::Small,
                    &[
                        Series {
                            name: "whole run",
                            color: "#bbbbbb",
                            points: s.total.distribution.clone(),
                        },
                        Series {
                            name,
                            color: "#1f77b4",
                            points: e.distribution.clone(),
                        },
                    ],
                )
            })
            .collect()
    };
    let (plan_vs_achieved, planned_unit) = region_loads(s);
    let region_palette = colors(s.regions.len());
    let region_series: Vec<Series<'_>> = s
        .regions
        .keys()
        .zip(&region_palette)
        .map(|(r, color)| Series {
            name: r,
            color,
            points: s
                .timeline
                .iter()
                .map(|p| {
                    // The interval's peak, as the overall users chart: a
                    // region whose users are between iterations at the
                    // interval's end still had them active in it.
                    let end = p.active_by_region.get(r).copied().unwrap_or(0);
                    (
                        p.start_s + p.length_s,
                        p.peak_by_region.get(r).copied().unwrap_or(0).max(end) as f64,
                    )
                })
                .collect(),
        })
        .collect();
    let region_users_chart = line_chart(
        "Active users by region over time",
        "users",
        Values::Counts,
        &region_series,
    );
    let step_errors = s
        .steps()
        .into_iter()
        .flat_map(|(step, e)| {
            e.errors_by_kind
                .iter()
                .map(move |(k, n)| (step.as_str(), k.as_str(), *n))
        })
        .collect();
    let throughput_chart = line_chart(
        "Requests and errors over time",
        "per second",
        Values::Real,
        &[
            Series {
                name: "req/s",
                color: "#1f77b4",
                points: rates(&timeline, |p| p.requests),
            },
            Series {
                name: "errors/s",
                color: "#d62728",
                points: rates(&timeline, |p| p.errors),
            },
        ],
    );
    let load = s.load.description.clone();
    Report {
        s,
        started: to_the_second(&s.started_at),
        status: serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        load,
        steps: s
            .steps()
            .into_iter()
            .map(|(n, e)| {
                let mut row = Row::new(n, e);
                let mut extra = Vec::new();
                if s.groups.contains(n) {
                    extra.push(
                        "group: from its first request's send to its last response; not in the totals"
                            .to_string(),
                    );
                }
                if e.counters.loop_bound_hits > 0 {
                    extra.push(format!(
                        "its loop stopped at its max_loops bound {} times while its condition still held",
                        e.counters.loop_bound_hits
                    ));
                }
                if e.counters.http2_responses > 0 {
                    extra.push(format!(
                        "{} of {} responses over HTTP/2",
                        e.counters.http2_responses,
                        crate::summary::responses(e)
                    ));
                }
                row.extra = extra.join("; ");
                row
            })
            .collect(),
        regions: s
            .region_labels()
            .into_iter()
            .map(|(n, e)| Row::new(&n, e))
            .collect(),
        scenarios: s.scenarios.iter().map(|(n, e)| Row::new(n, e)).collect(),
        agents: s
            .agents
            .iter()
            .map(|(n, a)| Row {
                extra: agent_note(a),
                blank: if a.results.requests > 0 {
                    "percentiles unknown: its totals never arrived (its requests count above)"
                } else {
                    "no responses"
                },
                ..Row::new(n, &a.results)
            })
            .collect(),
        latency_chart,
        throughput_chart,
        users_chart,
        distribution_chart,
        distribution_series: names,
        step_charts,
        verdict: verdict(s),
        slowest: slowest(s),
        error_pct: s.total.errors as f64 * 100.0 / s.total.requests.max(1) as f64,
        top_errors: {
            let mut e: Vec<(&str, u64)> = s
                .errors
                .iter()
                .map(|(k, e)| (k.as_str(), e.count))
                .collect();
            e.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            e.truncate(3);
            e
        },
        step_errors,
        plan_vs_achieved,
        planned_unit,
        region_users_chart,
        latency_note: crate::summary::latency_note(s),
        metric_rows: metric_rows(s),
        metric_charts: metric_charts(s),
        phase_rows: phase_rows(s),
        phase_legend: PHASES.iter().map(|(_, label, color)| (*label, *color)).collect(),
        phase_chart: phase_chart(s),
        hosts: host_views(s),
        total_ranges: s.total.ranges.as_ref().map(ranges_bar).unwrap_or_default(),
        step_ranges: s
            .steps()
            .into_iter()
            .filter(|(n, _)| !s.groups.contains(n))
            .filter_map(|(n, e)| {
                let bar = e.ranges.as_ref().map(ranges_bar)?;
                (!bar.is_empty()).then(|| (n.clone(), bar))
            })
            .collect(),
    }
    .render()
}

#[cfg(test)]
mod rate_tests {
    use crate::stats::IntervalPoint;

    fn point(seq: u64, length_s: f64, requests: u64) -> IntervalPoint {
        IntervalPoint {
            seq,
            start_s: seq as f64,
            length_s,
            requests,
            errors: 0,
            active_users: 0,
            active_peak: 0,
            active_mean: 0.0,
            active_by_region: Default::default(),
            peak_by_region: Default::default(),
            dropped: 0,
            suspect: Vec::new(),
            iterations_started: 0,
            latency_ms: None,
            metric_means: Default::default(),
        }
    }

    #[test]
    fn a_sliver_at_the_end_joins_the_interval_before_it() {
        let mut a = point(0, 1.0, 155);
        a.active_mean = 4.0;
        a.active_peak = 4;
        let mut b = point(1, 1.0, 150);
        b.active_mean = 4.0;
        b.active_peak = 4;
        // The last 20 ms: users stopping, a few responses still in flight.
        let mut c = point(2, 0.02, 8);
        c.active_mean = 1.0;
        c.active_peak = 4;
        let f = super::folded(&[a, b, c]);
        assert_eq!(f.len(), 2);
        assert_eq!((f[1].requests, f[1].active_peak), (158, 4));
        assert!((f[1].length_s - 1.02).abs() < 1e-9);
        // Mean users weighted by length: (4 x 1.0 + 1 x 0.02) / 1.02.
        assert!(
            (f[1].active_mean - 4.02 / 1.02).abs() < 1e-9,
            "{}",
            f[1].active_mean
        );
        // A last interval of half the others or more stays.
        let f = super::folded(&[point(0, 1.0, 10), point(1, 0.6, 6)]);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn a_sliver_at_the_end_draws_no_spike() {
        // 155 req/s, then 8 responses in the last 15 ms: 533 req/s alone.
        let timeline = [point(0, 1.0, 155), point(1, 1.0, 155), point(2, 0.015, 8)];
        let r = super::rates(&timeline, |p| p.requests);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0], (1.0, 155.0));
        assert!((r[1].0 - 2.015).abs() < 1e-9, "{r:?}");
        assert!((r[1].1 - 163.0 / 1.015).abs() < 1e-9, "{r:?}");
        // A short interval that is not the last stays (it is real).
        let timeline = [point(0, 0.2, 30), point(1, 1.0, 155)];
        assert_eq!(super::rates(&timeline, |p| p.requests).len(), 2);
        // A last interval of half a second or more is its own point.
        let timeline = [point(0, 1.0, 155), point(1, 0.6, 90)];
        assert_eq!(super::rates(&timeline, |p| p.requests)[1], (1.6, 150.0));
    }
}

#[cfg(test)]
mod started_tests {
    #[test]
    fn the_start_reads_to_the_second() {
        assert_eq!(
            super::to_the_second("2026-12-01T10:09:41.123456789Z"),
            "2026-12-01 10:09:41 UTC"
        );
        assert_eq!(super::to_the_second("not a time"), "not a time");
    }
}
