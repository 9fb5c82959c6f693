//! The percentile tables printed at the end of a run.

use comfy_table::{CellAlignment, Table};

use crate::console::{bytes, new_table};

use crate::summary::{Entry, Summary};

const HEADER: [&str; 11] = [
    "", "requests", "errors", "req/s", "mean", "p50", "p90", "p95", "p99", "p99.9", "max",
];

fn row(label: &str, e: &Entry) -> Vec<String> {
    let mut r = vec![
        label.to_string(),
        e.requests.to_string(),
        e.errors.to_string(),
        format!("{:.1}", e.rps),
    ];
    match &e.latency_ms {
        Some(l) => r.extend(
            [l.mean, l.p50, l.p90, l.p95, l.p99, l.p99_9, l.max].map(|v| format!("{v:.2}")),
        ),
        None => r.extend(std::iter::repeat_n("-".to_string(), 7)),
    }
    r
}

fn table<'a>(title: &str, rows: impl IntoIterator<Item = (&'a String, &'a Entry)>) -> Table {
    let mut t = new_table();
    let mut header = HEADER.map(String::from).to_vec();
    header[0] = title.to_string();
    t.set_header(header);
    for (name, e) in rows {
        t.add_row(row(name, e));
    }
    for i in 1..HEADER.len() {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Numbers read from responses, per step and over all steps: count,
/// missing, mean, p50, p95 and max in each metric's unit; `None` when the
/// plan reads none.
fn metrics_table(s: &Summary) -> Option<Table> {
    if s.total.metrics.is_empty() {
        return None;
    }
    let mut t = new_table();
    t.set_header([
        "step", "metric", "count", "missing", "mean", "p50", "p95", "max",
    ]);
    let num = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let all = "all steps".to_string();
    for (step, e) in s.steps().into_iter().chain([(&all, &s.total)]) {
        // A step none of whose responses carried any metric (a POST
        // answered by a redirect, say) is one row that says so, not a
        // MISSING per metric.
        let never =
            step != &all && !e.metrics.is_empty() && e.metrics.values().all(|m| m.stats.count == 0);
        if never {
            let missing = e
                .metrics
                .values()
                .map(|m| m.stats.missing)
                .max()
                .unwrap_or(0);
            t.add_row([
                step.clone(),
                format!("none of its {missing} responses carried any of them"),
                "0".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        for (name, m) in &e.metrics {
            let label = if m.unit.is_empty() {
                name.clone()
            } else {
                format!("{name} ({})", m.unit)
            };
            t.add_row([
                step.clone(),
                label,
                m.stats.count.to_string(),
                if m.stats.missing > 0 {
                    format!("{} MISSING", m.stats.missing)
                } else {
                    "0".to_string()
                },
                m.stats
                    .mean
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.2}")),
                num(m.stats.p50),
                num(m.stats.p95),
                num(m.stats.max),
            ]);
        }
    }
    for i in 2..8 {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    Some(t)
}

/// The tables: overall, by step, by region. Latencies in milliseconds.
/// How the agents' generators waited for arrivals, after the send
/// lateness it explains: "; timing: timer, 0.75 ms window", or per agent
/// when they differ. Empty when no agent said.
fn timings(s: &Summary) -> String {
    let said: Vec<(&String, &String)> = s
        .agents
        .iter()
        .filter_map(|(name, a)| a.timing.as_ref().map(|t| (name, t)))
        .collect();
    match said.first() {
        None => String::new(),
        Some((_, t)) if said.iter().all(|(_, u)| u == t) => format!("; timing: {t}"),
        Some(_) => {
            let each: Vec<String> = said.iter().map(|(n, t)| format!("{n} {t}")).collect();
            format!("; timing: {}", each.join(", "))
        }
    }
}

pub fn render(s: &Summary) -> String {
    let overall = "overall".to_string();
    let mut out = String::new();
    out.push_str(&format!(
        "{} — {} in {:.1}s, status {}; {}\n{}\n",
        s.name,
        s.target,
        s.duration_s,
        serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        crate::summary::latency_note(s),
        s.load.description,
    ));
    out.push_str(&format!(
        "seed {} (`seed = {}` in the plan replays its random choices)\n",
        s.seed, s.seed
    ));
    match s.iterations.planned {
        Some(planned) if s.iterations.completed < planned => out.push_str(&format!(
            "iterations: {} of {planned} planned ran to their end\n",
            s.iterations.completed
        )),
        Some(planned) => out.push_str(&format!("iterations: all {planned} planned ran\n")),
        // Bounded by time: how many ran to their end, and the ones the end
        // cut (their requests are in the figures).
        None if s.iterations.started > s.iterations.completed => out.push_str(&format!(
            "iterations: {} ran to their end; {} more were cut by the run's end or a stop (their requests are counted)\n",
            s.iterations.completed,
            s.iterations.started - s.iterations.completed
        )),
        None => {}
    }
    if s.total.counters.bytes_received > 0 {
        out.push_str(&format!(
            "received {} from the target ({}/s){}\n",
            bytes(s.total.counters.bytes_received),
            bytes((s.total.counters.bytes_received as f64 / s.duration_s.max(0.001)) as u64),
            if s.total.counters.bytes_decoded > 0 {
                format!(
                    "; checks and extractions read {} of decoded bodies",
                    bytes(s.total.counters.bytes_decoded)
                )
            } else {
                String::new()
            }
        ));
    }
    for w in &s.warnings {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    for (name, a) in &s.agents {
        if let Some(off) = a.clock_offset_ms.filter(|o| o.abs() >= 1000.0) {
            out.push_str(&format!(
                "NOTE: agent {name}'s wall clock is {} (times in its own logs are off by as much; the run's timing uses monotonic clocks and is unaffected)\n",
                crate::summary::clock_offset_words(off)
            ));
        }
    }
    for what in &s.missing {
        out.push_str(&format!("MISSING: {what}\n"));
    }
    for why in &s.cut_short {
        out.push_str(&format!("CUT SHORT: {why}\n"));
    }
    for gap in &s.gaps {
        out.push_str(&format!("NOT ALL COUNTED: {gap}\n"));
    }
    if s.dropped_iterations > 0 {
        out.push_str(&format!(
            "dropped iterations: {} (no user was free within max_wait)\n",
            s.dropped_iterations
        ));
    }
    if let Some(l) = s.send_lateness_ms {
        out.push_str(&format!(
            "send lateness (actual minus intended start): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms{}\n",
            l.p50,
            l.p99,
            l.max,
            timings(s)
        ));
    }
    let mut overall_rows = vec![(overall.clone(), s.total.clone())];
    if let Some(u) = s.total.latency_uncorrected_ms {
        let mut e = s.total.clone();
        e.latency_ms = Some(u);
        overall_rows[0].0 = "overall, corrected".into();
        overall_rows.push(("overall, uncorrected".into(), e));
    }
    out.push_str(&table("all steps", overall_rows.iter().map(|(n, e)| (n, e))).to_string());
    out.push('\n');
    if let Some(r) = &s.total.ranges {
        let total = (r.under + r.between + r.over + r.no_response).max(1) as f64;
        let pct = |n: u64| n as f64 * 100.0 / total;
        out.push_str(&format!(
            "requests by time to their response: under {lo} ms {:.1}% ({}), {lo} to {hi} ms {:.1}% ({}), {hi} ms or more {:.1}% ({}), no response {:.1}% ({})\n",
            pct(r.under),
            r.under,
            pct(r.between),
            r.between,
            pct(r.over),
            r.over,
            pct(r.no_response),
            r.no_response,
            lo = r.bounds_ms.0,
            hi = r.bounds_ms.1,
        ));
    }
    if let Some(f) = s.total.latency_failures_ms {
        let part = |l: Option<crate::stats::LatencyMs>| {
            l.map_or_else(
                || "-".to_string(),
                |l| format!("p50 {:.1}, p95 {:.1}, p99 {:.1} ms", l.p50, l.p95, l.p99),
            )
        };
        out.push_str(&format!(
            "latency covers every request, failures included; responses only: {}; \
             requests without a response (time to the failure): {}\n",
            part(s.total.latency_responses_ms),
            part(Some(f))
        ));
    }
    let (groups, steps): (Vec<_>, Vec<_>) = s
        .steps()
        .into_iter()
        .partition(|(n, _)| s.groups.contains(n));
    out.push_str(&table("step", steps).to_string());
    out.push('\n');
    if !groups.is_empty() {
        out.push_str(&table("group", groups.iter().copied()).to_string());
        out.push('\n');
        out.push_str(
            "a group's time runs from its first request's send to its last response, less think time; groups are not in the totals\n",
        );
        for (name, e) in &groups {
            if e.counters.loop_bound_hits > 0 {
                out.push_str(&format!(
                    "group {name}: its loop stopped at its `max_loops` bound {} times while its condition still held: those passes ran fewer times than the condition asked\n",
                    e.counters.loop_bound_hits
                ));
            }
        }
    }
    for (name, e) in s.steps() {
        if e.counters.retries > 0 {
            out.push_str(&format!(
                "step {name}: {} of {} requests were sent a second time on a new connection: \
                 the kept-alive one closed before any response (the server's idle timeout raced them)\n",
                e.counters.retries, e.requests
            ));
        }
        let responses = crate::summary::responses(e);
        if e.counters.http2_responses > 0 {
            out.push_str(&format!(
                "step {name}: {} responses over HTTP/2, {} over HTTP/1.1\n",
                e.counters.http2_responses,
                responses.saturating_sub(e.counters.http2_responses)
            ));
        }
        if e.counters.exchanges > e.requests + e.counters.retries {
            out.push_str(&format!(
                "step {name}: {} requests made {} HTTP exchanges (redirects followed)\n",
                e.requests, e.counters.exchanges
            ));
        }
    }
    if let Some(t) = metrics_table(s) {
        out.push_str(&t.to_string());
        out.push('\n');
    }
    if !s.scenarios.is_empty() {
        out.push_str(&table("scenario", s.scenarios.iter()).to_string());
        out.push('\n');
    }
    let regions = s.region_labels();
    out.push_str(&table("region", regions.iter().map(|(n, e)| (n, *e))).to_string());
    out.push('\n');
    for h in &s.hosts {
        out.push_str(&h.describe());
    }
    if !s.thresholds.is_empty() {
        let mut t = new_table();
        t.set_header(["threshold", "scope", "observed", "result"]);
        for o in &s.thresholds {
            t.add_row([
                o.rule.clone(),
                o.scope.clone(),
                o.observed.map_or_else(
                    || "-".to_string(),
                    |v| format!("{v} {}", o.unit).trim_end().to_string(),
                ),
                if o.passed { "pass" } else { "FAIL" }.to_string(),
            ]);
        }
        out.push_str(&t.to_string());
        out.push('\n');
        if let Some(rule) = &s.aborted_by {
            out.push_str(&format!(
                "the run was stopped early: threshold {rule} failed\n"
            ));
        }
    }
    if !s.errors.is_empty() {
        let mut t = new_table();
        t.set_header(["error", "count", "example"]);
        for (kind, e) in &s.errors {
            t.add_row([kind.clone(), e.count.to_string(), e.sample.clone()]);
        }
        out.push_str(&t.to_string());
        out.push('\n');
    }
    out
}
