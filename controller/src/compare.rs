//! Run comparison: how the question that started this project (is shared
//! file storage or Redis the better application cache?) gets answered. Per step and overall: p50, p95, p99, req/s, error
//! rate and the mean of every number read from responses (`[[metric]]`:
//! the server's own DB reads, cache misses) of each run against the first, the change in percent, and a verdict
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
    /// A latency change smaller than this (milliseconds) is never a verdict.
    pub floor_ms: f64,
}

/// HdrHistogram with 3 significant digits: values within 0.1% of each other
/// may share a bucket, so a difference below twice that is no difference.
const RESOLUTION: f64 = 0.002;

/// Welch's t above which a difference is more than the runs' own
/// interval-to-interval variation explains (about 95% for a few dozen
/// intervals).
const T_NEEDED: f64 = 2.0;

/// Worse, better or within the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Worse,
    Better,
    Same,
    /// Too few samples to tell (a percentile of a short run).
    Inconclusive,
}

/// One metric of one step, baseline against another run.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    pub scope: String,
    /// `p50_ms`, `rps`, ... or, for a number read from responses,
    /// `metric.NAME mean`.
    pub metric: String,
    pub baseline: Option<f64>,
    pub other: Option<f64>,
    /// Percent change; `None` when either side is missing or the change is
    /// from or to (near) zero.
    pub change_pct: Option<f64>,
    pub verdict: Verdict,
    /// Why no verdict was given, when there is a reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A comparison of one run against the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub other: String,
    /// Load parameters that differ, said plainly: the runs may not be comparable.
    pub differences: Vec<String>,
    /// What the verdicts cannot know (one run per side), and either run's
    /// own warnings (a saturated generator, a plan that turned checks off).
    pub caveats: Vec<String>,
    pub deltas: Vec<Delta>,
}

/// What a comparison of one run with another cannot know.
pub const ONE_RUN_EACH: &str = "one run per side: run-to-run variation unknown, so a verdict may be noise; `loadfleet experiment` repeats runs and says how sure it is";

/// The caveats of comparing `a` with `b`: one run each, and each run's
/// warnings.
fn caveats(a: &Summary, b: &Summary) -> Vec<String> {
    let mut out = vec![ONE_RUN_EACH.to_string()];
    out.extend(a.warnings.iter().map(|w| format!("baseline: {w}")));
    out.extend(b.warnings.iter().map(|w| format!("this run: {w}")));
    out
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

/// The label of a response metric's delta (its exact mean is compared, as
/// Moodle's comparison tool compares a page's counts).
fn read_label(name: &str) -> String {
    format!("metric.{name} mean")
}

/// A measure's value in an entry, by the name `compare` gives it.
pub fn value(e: &Entry, metric: &str) -> Option<f64> {
    if let Some(name) = metric
        .strip_prefix("metric.")
        .and_then(|m| m.strip_suffix(" mean"))
    {
        return e.metrics.get(name).and_then(|m| m.stats.mean);
    }
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
        // Exact means of counts: only zero is too small for a percentage.
        m if m.starts_with("metric.") => 1e-9,
        _ => 0.05,
    }
}

/// The per-interval values of a metric over a run (its timeline), for the
/// variation test; `None` for metrics the timeline does not hold.
fn per_interval(s: &Summary, metric: &str) -> Option<Vec<f64>> {
    let values: Vec<f64> = s
        .timeline
        .iter()
        .filter(|p| p.length_s > 0.5 && p.requests > 0)
        .filter_map(|p| match metric {
            "p50_ms" => p.latency_ms.map(|l| l.p50),
            "p95_ms" => p.latency_ms.map(|l| l.p95),
            "p99_ms" => p.latency_ms.map(|l| l.p99),
            "rps" => Some(p.requests as f64 / p.length_s),
            _ => None,
        })
        .collect();
    (values.len() >= 3).then_some(values)
}

/// Both runs' per-interval values of a metric.
type Variation = (Vec<f64>, Vec<f64>);

/// A run's steps interval by interval, from its `requests.csv`: what the
/// variation test needs per step (the summary keeps only the run's own
/// timeline).
#[derive(Debug, Clone, Default)]
pub struct StepIntervals(std::collections::BTreeMap<String, Vec<StepRow>>);

#[derive(Debug, Clone, Copy)]
struct StepRow {
    length_s: f64,
    requests: u64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

impl StepIntervals {
    /// Reads `requests.csv` of a run directory; `None` when it has none (or
    /// it cannot be read): steps are then judged without the variation test.
    pub fn read(run_dir: &std::path::Path) -> Option<StepIntervals> {
        let mut r = csv::Reader::from_path(run_dir.join("requests.csv")).ok()?;
        let mut steps: std::collections::BTreeMap<String, Vec<StepRow>> = Default::default();
        for rec in r.records() {
            let rec = rec.ok()?;
            let num = |i: usize| rec.get(i).and_then(|v| v.parse::<f64>().ok());
            steps
                .entry(rec.get(0)?.to_string())
                .or_default()
                .push(StepRow {
                    length_s: num(2)?,
                    requests: rec.get(3)?.parse().ok()?,
                    p50: num(5),
                    p95: num(7),
                    p99: num(8),
                });
        }
        Some(StepIntervals(steps))
    }

    /// A step's per-interval values of a metric, like [`per_interval`].
    fn values(&self, step: &str, metric: &str) -> Option<Vec<f64>> {
        let values: Vec<f64> = self
            .0
            .get(step)?
            .iter()
            .filter(|r| r.length_s > 0.5 && r.requests > 0)
            .filter_map(|r| match metric {
                "p50_ms" => r.p50,
                "p95_ms" => r.p95,
                "p99_ms" => r.p99,
                "rps" => Some(r.requests as f64 / r.length_s),
                _ => None,
            })
            .collect();
        (values.len() >= 3).then_some(values)
    }
}

/// Welch's t of two samples' means.
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, var, n)
    };
    let ((ma, va, na), (mb, vb, nb)) = (stats(a), stats(b));
    let se = (va / na + vb / nb).sqrt();
    if se == 0.0 {
        return if ma == mb { 0.0 } else { f64::INFINITY };
    }
    (mb - ma).abs() / se
}

fn delta(
    scope: &str,
    metric: &str,
    a: Option<&Entry>,
    b: Option<&Entry>,
    limit: f64,
    (floor_ms, variation): (f64, Option<Variation>),
) -> Delta {
    let (x, y) = (
        a.and_then(|e| value(e, metric)),
        b.and_then(|e| value(e, metric)),
    );
    let mut d = Delta {
        scope: scope.to_string(),
        metric: metric.to_string(),
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
        d.verdict = Verdict::Inconclusive;
        d.note = Some("too few samples to judge this percentile".into());
        return d;
    }
    let is_latency = metric.ends_with("_ms");
    // The floor first, for every latency: 0.03 against 0.05 ms is no
    // change, however large in percent (or "from near zero").
    if is_latency && (y - x).abs() < floor_ms {
        if x != y {
            d.change_pct = Some(((y - x) / x.max(f64::MIN_POSITIVE) * 1000.0).round() / 10.0);
            d.note = Some(format!("under the {floor_ms} ms floor"));
        }
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
    if pct.abs() <= limit {
        return d;
    }
    // Past the threshold in percent; still no verdict when the difference is
    // below what can be told apart: the floor, the histogram's resolution,
    // or the runs' own variation from interval to interval.
    if is_latency && (y - x).abs() < floor_ms {
        d.note = Some(format!("under the {floor_ms} ms floor"));
        return d;
    }
    // A request phase is a latency in microseconds: the same floor.
    if metric.starts_with("metric.http_") && (y - x).abs() < floor_ms * 1000.0 {
        d.note = Some(format!("under the {floor_ms} ms floor"));
        return d;
    }
    if is_latency && (y - x).abs() <= x.max(y) * RESOLUTION {
        d.note = Some("within the histogram's resolution".into());
        return d;
    }
    if let Some((va, vb)) = &variation {
        let t = welch_t(va, vb);
        if t < T_NEEDED {
            d.note = Some(format!(
                "within the runs' interval-to-interval variation (Welch's t = {t:.1} < {T_NEEDED})"
            ));
            return d;
        }
    }
    {
        d.verdict = if (pct > 0.0) == higher_is_worse {
            Verdict::Worse
        } else {
            Verdict::Better
        };
    }
    d
}

/// Compares `other` against `baseline`, overall with the runs' timelines'
/// variation, by step without it.
pub fn compare(baseline: (&str, &Summary), other: (&str, &Summary), limits: Limits) -> Comparison {
    compare_with(baseline, other, limits, None)
}

/// Compares `other` against `baseline`; with both runs' step intervals
/// (their `requests.csv`), a step's verdict also needs its difference to
/// exceed the step's own interval-to-interval variation.
pub fn compare_with(
    baseline: (&str, &Summary),
    other: (&str, &Summary),
    limits: Limits,
    steps_by_interval: Option<(&StepIntervals, &StepIntervals)>,
) -> Comparison {
    let (a, b) = (baseline.1, other.1);
    let mut deltas = Vec::new();
    // Numbers read from responses, in either run.
    let mut reads: Vec<String> = a
        .total
        .metrics
        .keys()
        .chain(b.total.metrics.keys())
        .map(|n| read_label(n))
        .collect();
    reads.sort();
    reads.dedup();
    let metrics: Vec<&str> = METRICS
        .iter()
        .copied()
        .chain(reads.iter().map(String::as_str))
        .collect();
    for &metric in &metrics {
        let variation = per_interval(a, metric).zip(per_interval(b, metric));
        deltas.push(delta(
            "overall",
            metric,
            Some(&a.total),
            Some(&b.total),
            limits.overall,
            (limits.floor_ms, variation),
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
        for &metric in &metrics {
            let (x, y) = (a.requests.get(step), b.requests.get(step));
            if metric.starts_with("metric.")
                && x.and_then(|e| value(e, metric)).is_none()
                && y.and_then(|e| value(e, metric)).is_none()
            {
                continue;
            }
            deltas.push(delta(
                step,
                metric,
                a.requests.get(step),
                b.requests.get(step),
                limits.step,
                (
                    limits.floor_ms,
                    steps_by_interval
                        .and_then(|(x, y)| x.values(step, metric).zip(y.values(step, metric))),
                ),
            ));
        }
    }
    Comparison {
        baseline: baseline.0.to_string(),
        other: other.0.to_string(),
        differences: load_differences(a, b),
        caveats: caveats(a, b),
        deltas,
    }
}

/// Two series load by load, in one table: the overall figures of each
/// load of `b` against the same load of `a`.
pub fn render_series(
    a: &str,
    b: &str,
    parameter: &str,
    pairs: &[(f64, &Comparison)],
    limits: Limits,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{b} against {a} (baseline), {parameter} by {parameter}"
    );
    let mut t = crate::console::new_table();
    t.set_header([
        parameter, "metric", "baseline", "this run", "change", "verdict",
    ]);
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    let (mut worse, mut better) = (0, 0);
    for (value, c) in pairs {
        for d in c.deltas.iter().filter(|d| d.scope == "overall") {
            t.add_row([
                value.to_string(),
                d.metric.to_string(),
                num(d.baseline),
                num(d.other),
                d.change_pct
                    .map_or_else(|| "-".to_string(), |p| format!("{p:+.1}%")),
                verdict_text(d),
            ]);
        }
        worse += c.worse();
        better += c
            .deltas
            .iter()
            .filter(|d| d.verdict == Verdict::Better)
            .count();
    }
    let _ = writeln!(out, "{t}");
    let _ = write!(
        out,
        "overall figures above; with the steps: {worse} worse, {better} better (thresholds: {}% per step, {}% overall; --html shows every step)",
        limits.step, limits.overall
    );
    out
}

/// A delta's verdict in words, with why it is "same" when there is a reason.
fn verdict_text(d: &Delta) -> String {
    match (d.verdict, &d.note) {
        (Verdict::Worse, _) => "WORSE".to_string(),
        (Verdict::Better, _) => "better".to_string(),
        (Verdict::Same, Some(n)) => format!("same ({n})"),
        (Verdict::Same, None) => "same".to_string(),
        (Verdict::Inconclusive, Some(n)) => format!("inconclusive ({n})"),
        (Verdict::Inconclusive, None) => "inconclusive".to_string(),
    }
}

/// The side-by-side table of one comparison.
pub fn render(c: &Comparison, limits: Limits) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} (baseline) vs {}", c.baseline, c.other);
    for d in &c.differences {
        let _ = writeln!(out, "warning: the runs may not be comparable: {d}");
    }
    for caveat in &c.caveats {
        let _ = writeln!(out, "note: {caveat}");
    }
    let count = |v: Verdict| c.deltas.iter().filter(|d| d.verdict == v).count();
    let _ = writeln!(
        out,
        "{} worse, {} better, {} same, {} inconclusive",
        count(Verdict::Worse),
        count(Verdict::Better),
        count(Verdict::Same),
        count(Verdict::Inconclusive)
    );
    let mut t = crate::console::new_table();
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
            verdict_text(d),
        ]);
    }
    let _ = writeln!(out, "{t}");
    let _ = write!(
        out,
        "{} worse, {} better (thresholds: {}% per step, {}% overall; latency changes under {} ms, \
         within the histogram's resolution or, overall, within the runs' own variation are the same)",
        c.worse(),
        c.deltas
            .iter()
            .filter(|d| d.verdict == Verdict::Better)
            .count(),
        limits.step,
        limits.overall,
        limits.floor_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p50: f64, requests: u64) -> Entry {
        serde_json::from_value(serde_json::json!({
            "requests": requests, "errors": 0, "rps": 10.0, "errors_by_kind": {},
            "latency_ms": {"min": p50, "mean": p50, "p50": p50, "p90": p50, "p95": p50,
                           "p99": p50, "p99_9": p50, "max": p50},
            "distribution": []
        }))
        .unwrap()
    }

    fn p50(a: f64, b: f64, variation: Option<Variation>) -> Delta {
        delta(
            "overall",
            "p50_ms",
            Some(&entry(a, 5_000)),
            Some(&entry(b, 5_000)),
            4.0,
            (1.0, variation),
        )
    }

    fn with_reads(mean: Option<f64>) -> Entry {
        let mut e = entry(10.0, 100);
        if let Some(mean) = mean {
            e.metrics.insert(
                "db_reads".into(),
                serde_json::from_value(serde_json::json!({
                    "unit": "reads", "count": 100, "missing": 0, "mean": mean,
                    "sum": (mean * 100.0) as u64, "min": 0, "p50": 0, "p90": 0,
                    "p95": 0, "p99": 0, "max": 0
                }))
                .unwrap(),
            );
        }
        e
    }

    /// A metric's mean is judged like Moodle's comparison tool judges a
    /// page's counts: 2% per step and 4% overall, and from zero to any
    /// value is a change without a percentage.
    #[test]
    fn a_metric_mean_is_judged_by_the_step_and_overall_limits() {
        let label = read_label("db_reads");
        let d = |a: Option<f64>, b: Option<f64>, limit: f64| {
            delta(
                "s",
                &label,
                Some(&with_reads(a)),
                Some(&with_reads(b)),
                limit,
                (1.0, None),
            )
        };
        let step = d(Some(10.0), Some(10.3), 2.0);
        assert_eq!((step.verdict, step.change_pct), (Verdict::Worse, Some(3.0)));
        let overall = d(Some(10.0), Some(10.3), 4.0);
        assert_eq!(overall.verdict, Verdict::Same);
        assert_eq!(d(Some(10.0), Some(9.0), 2.0).verdict, Verdict::Better);
        assert_eq!(d(Some(0.0), Some(0.5), 2.0).verdict, Verdict::Worse);
        assert_eq!(d(Some(0.0), Some(0.0), 2.0).verdict, Verdict::Same);
        let one_side = d(None, Some(3.0), 2.0);
        assert_eq!((one_side.verdict, one_side.baseline), (Verdict::Same, None));
    }

    #[test]
    fn a_step_is_judged_against_its_own_variation_from_requests_csv() {
        let dir = tempfile::tempdir().unwrap();
        // A step whose p50 swings between 80 and 120 ms from second to
        // second (its name has a comma: the file quotes it).
        let write = |name: &str, mean: f64| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let mut csv = String::from(
                "step,interval_start_s,interval_length_s,requests,errors,p50_ms,p90_ms,p95_ms,p99_ms,max_ms\n",
            );
            for i in 0..10 {
                let p50 = mean + if i % 2 == 0 { 20.0 } else { -20.0 };
                csv.push_str(&format!(
                    "\"log in, then home\",{i}.000,1.000,500,0,{p50:.3},{p50:.3},{p50:.3},{p50:.3},{p50:.3}\n"
                ));
            }
            // The run's last sliver counts for nothing.
            csv.push_str(
                "\"log in, then home\",10.000,0.015,3,0,999.000,999.000,999.000,999.000,999.000\n",
            );
            std::fs::write(d.join("requests.csv"), csv).unwrap();
            StepIntervals::read(&d).unwrap()
        };
        let (a, b) = (write("a", 100.0), write("b", 110.0));
        let va = a.values("log in, then home", "p50_ms").unwrap();
        assert_eq!(va.len(), 10, "{va:?}");
        assert_eq!(a.values("log in, then home", "rps").unwrap()[0], 500.0);
        assert!(a.values("other", "p50_ms").is_none());
        let judge = |variation| {
            delta(
                "log in, then home",
                "p50_ms",
                Some(&entry(100.0, 5_000)),
                Some(&entry(110.0, 5_000)),
                2.0,
                (1.0, variation),
            )
        };
        assert_eq!(
            judge(None).verdict,
            Verdict::Worse,
            "10% slower, without the test"
        );
        let d = judge(
            a.values("log in, then home", "p50_ms")
                .zip(b.values("log in, then home", "p50_ms")),
        );
        assert_eq!(d.verdict, Verdict::Same, "{d:?}");
        assert!(d.note.as_deref().unwrap().contains("Welch's t"), "{d:?}");
        assert!(StepIntervals::read(&dir.path().join("none")).is_none());
    }

    #[test]
    fn no_verdict_below_the_floor_the_resolution_or_the_variation() {
        // 0.53 -> 0.47 ms is -11%, but 0.06 ms: under the 1 ms floor.
        let d = p50(0.53, 0.47, None);
        assert_eq!(d.verdict, Verdict::Same);
        assert_eq!(d.change_pct, Some(-11.3));
        assert!(d.note.as_deref().unwrap().contains("floor"), "{d:?}");
        // 0.03 -> 0.05 ms (a tour's status step on a busy machine) is
        // +67% and "from near zero", but 0.02 ms: the floor comes first.
        let d = p50(0.03, 0.05, None);
        assert_eq!(d.verdict, Verdict::Same, "{d:?}");
        assert!(d.note.as_deref().unwrap().contains("floor"), "{d:?}");
        // A p99 of 40 samples tells nothing: inconclusive, not same.
        let few = delta(
            "s",
            "p99_ms",
            Some(&entry(10.0, 40)),
            Some(&entry(30.0, 40)),
            4.0,
            (1.0, None),
        );
        assert_eq!(few.verdict, Verdict::Inconclusive, "{few:?}");
        // 100 -> 150 ms is a verdict.
        assert_eq!(p50(100.0, 150.0, None).verdict, Verdict::Worse);
        assert_eq!(p50(150.0, 100.0, None).verdict, Verdict::Better);
        // 2,000 -> 2,003 ms is 0.15%: with a 0.1% threshold still within
        // the histogram's resolution.
        let d = delta(
            "s",
            "p50_ms",
            Some(&entry(2000.0, 5_000)),
            Some(&entry(2003.0, 5_000)),
            0.1,
            (1.0, None),
        );
        assert_eq!(d.verdict, Verdict::Same, "{d:?}");
        // 100 -> 110 ms, but the intervals swing by about 20 ms: no verdict.
        let noisy = |mean: f64| {
            (0..10)
                .map(|i| mean + if i % 2 == 0 { 20.0 } else { -20.0 })
                .collect::<Vec<_>>()
        };
        let d = p50(100.0, 110.0, Some((noisy(100.0), noisy(110.0))));
        assert_eq!(d.verdict, Verdict::Same);
        assert!(d.note.as_deref().unwrap().contains("Welch"), "{d:?}");
        // The same 10 ms on steady intervals is a verdict.
        let steady = |mean: f64| (0..10).map(|i| mean + f64::from(i % 2)).collect::<Vec<_>>();
        assert_eq!(
            p50(100.0, 110.0, Some((steady(100.0), steady(110.0)))).verdict,
            Verdict::Worse
        );
    }
}
