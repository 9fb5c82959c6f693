//! Run comparison: the question that started this project (shared file
//! storage or Redis?). Per step and overall: p50, p95, p99, req/s and error
//! rate of each run against the first, the change in percent, and a verdict
//! when a change passes a threshold (2% per step, 4% overall by default, as
//! Moodle's own performance-comparison tool does).

use std::fmt::Write as _;

use serde::Serialize;

use crate::summary::{Entry, Summary};

/// How big a change must be to count.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Percent, per step.
    pub step: f64,
    /// Percent, all steps together.
    pub overall: f64,
}

/// Worse, better or within the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Worse,
    Better,
    Same,
}

/// One metric of one step, baseline against another run.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    pub scope: String,
    pub metric: &'static str,
    pub baseline: Option<f64>,
    pub other: Option<f64>,
    /// Percent change; `None` when either side is missing or the change is
    /// from or to (near) zero.
    pub change_pct: Option<f64>,
    pub verdict: Verdict,
    /// Why no verdict was given, when there is a reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// A comparison of one run against the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub other: String,
    /// Load parameters that differ, said plainly: the runs may not be comparable.
    pub differences: Vec<String>,
    pub deltas: Vec<Delta>,
}

impl Comparison {
    pub fn worse(&self) -> usize {
        self.deltas
            .iter()
            .filter(|d| d.verdict == Verdict::Worse)
            .count()
    }
}

/// Load parameters of two runs that differ.
pub fn load_differences(a: &Summary, b: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    let (la, lb) = (&a.load, &b.load);
    let mut check = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name} differs: {x} vs {y}"));
        }
    };
    check("load model", la.model.clone(), lb.model.clone());
    check("users", fmt_opt(la.users), fmt_opt(lb.users));
    check("ramp-up (s)", fmt_opt(la.ramp_up_s), fmt_opt(lb.ramp_up_s));
    check("iterations", fmt_opt(la.iterations), fmt_opt(lb.iterations));
    check(
        "duration (s)",
        fmt_opt(la.duration_s),
        fmt_opt(lb.duration_s),
    );
    check("max users", fmt_opt(la.max_users), fmt_opt(lb.max_users));
    let stages = |l: &crate::facts::LoadSummary| {
        let rates = l.rate_stages.as_ref().map(|v| {
            v.iter()
                .map(|s| format!("{}→{}/{}s", s.from, s.to, s.duration_s))
                .collect::<Vec<_>>()
                .join(",")
        });
        let users = l.user_stages.as_ref().map(|v| {
            v.iter()
                .map(|s| format!("{}→{}/{}s", s.from, s.to, s.duration_s))
                .collect::<Vec<_>>()
                .join(",")
        });
        format!("{}{}", rates.unwrap_or_default(), users.unwrap_or_default())
    };
    check("stages", stages(la), stages(lb));
    if a.latency.measured_from != b.latency.measured_from {
        out.push(format!(
            "latency is measured differently: from {} vs from {}",
            a.latency.measured_from, b.latency.measured_from
        ));
    }
    out
}

fn fmt_opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Latency metrics: higher is worse. Near-zero values are too small to
/// compare in percent.
const METRICS: [&str; 5] = ["p50_ms", "p95_ms", "p99_ms", "rps", "error_rate_pct"];

fn value(e: &Entry, metric: &str) -> Option<f64> {
    match metric {
        "p50_ms" => e.latency_ms.map(|l| l.p50),
        "p95_ms" => e.latency_ms.map(|l| l.p95),
        "p99_ms" => e.latency_ms.map(|l| l.p99),
        "rps" => Some(e.rps),
        "error_rate_pct" => (e.requests > 0).then(|| e.errors as f64 * 100.0 / e.requests as f64),
        _ => None,
    }
}

/// Below these, a change in percent means nothing (from 0 to 0.01 ms is "infinitely worse").
fn tiny(metric: &str) -> f64 {
    match metric {
        "rps" => 0.1,
        "error_rate_pct" => 0.1,
        _ => 0.05,
    }
}

fn delta(
    scope: &str,
    metric: &'static str,
    a: Option<&Entry>,
    b: Option<&Entry>,
    limit: f64,
) -> Delta {
    let (x, y) = (
        a.and_then(|e| value(e, metric)),
        b.and_then(|e| value(e, metric)),
    );
    let mut d = Delta {
        scope: scope.to_string(),
        metric,
        baseline: x,
        other: y,
        change_pct: None,
        verdict: Verdict::Same,
        note: None,
    };
    let (Some(x), Some(y)) = (x, y) else { return d };
    // A percentile says little with few samples (a p99 of 40 samples is the
    // maximum): judge pNN only with at least 10 / (1 - q) samples per run.
    let needed = match metric {
        "p50_ms" => 20,
        "p95_ms" => 200,
        "p99_ms" => 1000,
        _ => 0,
    };
    let samples = a.map_or(0, |e| e.requests).min(b.map_or(0, |e| e.requests));
    if samples < needed {
        d.change_pct = Some(((y - x) / x.max(f64::MIN_POSITIVE) * 1000.0).round() / 10.0);
        d.note = Some("too few samples to judge this percentile");
        return d;
    }
    let t = tiny(metric);
    if x.abs() < t && y.abs() < t {
        return d;
    }
    // Errors appearing from none (or vanishing) are a verdict without a percentage.
    let higher_is_worse = metric != "rps";
    if x.abs() < t || y.abs() < t {
        let up = y > x;
        d.verdict = if up == higher_is_worse {
            Verdict::Worse
        } else {
            Verdict::Better
        };
        return d;
    }
    let pct = (y - x) / x * 100.0;
    d.change_pct = Some((pct * 10.0).round() / 10.0);
    if pct.abs() > limit {
        d.verdict = if (pct > 0.0) == higher_is_worse {
            Verdict::Worse
        } else {
            Verdict::Better
        };
    }
    d
}

/// Compares `other` against `baseline`.
pub fn compare(baseline: (&str, &Summary), other: (&str, &Summary), limits: Limits) -> Comparison {
    let (a, b) = (baseline.1, other.1);
    let mut deltas = Vec::new();
    for metric in METRICS {
        deltas.push(delta(
            "overall",
            metric,
            Some(&a.total),
            Some(&b.total),
            limits.overall,
        ));
    }
    // The baseline's journey order, then steps only the other run has.
    let mut steps: Vec<&String> = a.steps().into_iter().map(|(n, _)| n).collect();
    for (n, _) in b.steps() {
        if !steps.contains(&n) {
            steps.push(n);
        }
    }
    for step in steps {
        for metric in METRICS {
            deltas.push(delta(
                step,
                metric,
                a.requests.get(step),
                b.requests.get(step),
                limits.step,
            ));
        }
    }
    Comparison {
        baseline: baseline.0.to_string(),
        other: other.0.to_string(),
        differences: load_differences(a, b),
        deltas,
    }
}

/// The side-by-side table of one comparison.
pub fn render(c: &Comparison, limits: Limits) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} (baseline) vs {}", c.baseline, c.other);
    for d in &c.differences {
        let _ = writeln!(out, "warning: the runs may not be comparable: {d}");
    }
    let mut t = crate::output::table::new_table();
    t.set_header([
        "scope", "metric", "baseline", "this run", "change", "verdict",
    ]);
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for d in &c.deltas {
        t.add_row([
            d.scope.clone(),
            d.metric.to_string(),
            num(d.baseline),
            num(d.other),
            d.change_pct
                .map_or_else(|| "-".to_string(), |p| format!("{p:+.1}%")),
            match (d.verdict, d.note) {
                (Verdict::Worse, _) => "WORSE",
                (Verdict::Better, _) => "better",
                (Verdict::Same, Some(_)) => "(too few samples)",
                (Verdict::Same, None) => "",
            }
            .to_string(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    let _ = write!(
        out,
        "{} worse, {} better (thresholds: {}% per step, {}% overall)",
        c.worse(),
        c.deltas
            .iter()
            .filter(|d| d.verdict == Verdict::Better)
            .count(),
        limits.step,
        limits.overall
    );
    out
}
