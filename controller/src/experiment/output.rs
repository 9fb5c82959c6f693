//! What an experiment leaves: `experiment.json` (schema:
//! docs/experiment.schema.json), `experiment.txt` (as printed) and
//! `experiment.html`, answering first: the verdict per load in words, then
//! each difference with its interval, then every run with its report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::design::{Arm, Design, Planned};
use super::stats::{self, Better, Difference, Judging, Scale, Verdict};
use crate::exit::Exit;
use crate::plan::Plan;
use crate::runner::RunOutcome;
use crate::summary::Entry;

/// The method, as the outputs state it.
pub const METHOD: &str = "paired t-interval (95%) on the per-block differences between each arm and the baseline, in percent of the baseline's mean (percentage points for the error rate); blocks run every arm once in an alternating order, so drift between blocks cancels in each pair";

/// The measures compared, with how each reads: name, unit, which way is
/// better, the words for a rise and a fall.
const MEASURES: [(&str, &str, Better, &str, &str); 6] = [
    ("p50_ms", "ms", Better::Lower, "slower", "faster"),
    ("p95_ms", "ms", Better::Lower, "slower", "faster"),
    ("p99_ms", "ms", Better::Lower, "slower", "faster"),
    ("mean_ms", "ms", Better::Lower, "slower", "faster"),
    ("error_rate_pct", "%", Better::Lower, "higher", "lower"),
    ("rps", "req/s", Better::Higher, "higher", "lower"),
];

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// 1-based, in the order the runs ran.
    pub seq: usize,
    /// 1-based block (repetition).
    pub block: usize,
    pub arm: String,
    /// Users or arrivals per second (a sweep's value); `null` for the
    /// plan's own load.
    pub load: Option<f64>,
    /// Its run directory, under `runs/`.
    pub run: String,
    #[serde(rename = "exit_code")]
    pub exit: Exit,
    /// Why it may not be compared (a saturated generator, a degraded or
    /// truncated run); empty for most runs.
    pub flagged: Vec<String>,
    /// Whether it is in the statistics.
    pub used: bool,
    /// Each measure's value (`null`: not measured, e.g. no response).
    pub values: BTreeMap<String, Option<f64>>,
    #[serde(skip)]
    load_index: usize,
}

/// One comparison of an arm with the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub arm: String,
    pub baseline: String,
    #[serde(flatten)]
    pub difference: Difference,
}

/// One measure at one load.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    pub unit: String,
    /// `lower` or `higher`.
    pub better: &'static str,
    /// `relative` (percent of the baseline's mean) or `points`.
    pub scale: Scale,
    /// Each arm's values, run by run in block order (`null` where a run is
    /// missing, left out, or measured nothing).
    pub arms: BTreeMap<String, Vec<Option<f64>>>,
    /// The second arm against the first (the baseline).
    pub difference_pct: Option<f64>,
    pub ci_low_pct: Option<f64>,
    pub ci_high_pct: Option<f64>,
    pub verdict: Verdict,
    /// Every arm after the first against the first.
    pub comparisons: Vec<Comparison>,
}

/// Every measure at one load.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub load: Option<f64>,
    /// "users 20", or "the plan's load".
    pub label: String,
    pub measures: BTreeMap<String, Measure>,
}

/// An experiment as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub schema: &'static str,
    pub name: String,
    pub started_at: String,
    pub arms: Vec<Arm>,
    pub runs_per_arm: usize,
    /// `balanced` or `random`.
    pub order: &'static str,
    /// The random order's seed.
    pub seed: Option<u64>,
    pub warm_up_s: Option<f64>,
    pub settle_s: f64,
    pub margin_pct: f64,
    pub confidence: f64,
    pub method: &'static str,
    /// `users` or `rate`: what the loads count.
    pub parameter: &'static str,
    pub runs: Vec<RunRecord>,
    pub loads: Vec<LoadResult>,
    /// Runs left out of the statistics, and why.
    pub left_out: Vec<String>,
    /// Why the experiment ended before its last run.
    pub stopped: Option<String>,
    pub exit_code: u8,
    #[serde(skip)]
    pub dir: PathBuf,
    #[serde(skip)]
    pub setup_failed: bool,
    #[serde(skip)]
    pub fleet_failed: bool,
    #[serde(skip)]
    load_values: Vec<Option<f64>>,
    #[serde(skip)]
    metrics: Vec<String>,
    #[serde(skip)]
    plan: Plan,
}

impl Experiment {
    pub fn new(plan: &Plan, design: &Design, loads: &[Option<f64>], dir: PathBuf) -> Experiment {
        Experiment {
            schema: "loadfleet.experiment/1",
            name: plan.name.clone(),
            started_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            arms: design.arms.clone(),
            runs_per_arm: design.runs,
            order: match design.order {
                super::Order::Balanced => "balanced",
                super::Order::Random(_) => "random",
            },
            seed: design.order.seed(),
            warm_up_s: design.warm_up.map(|d| d.as_secs_f64()),
            settle_s: design.settle.as_secs_f64(),
            margin_pct: design.margin_pct,
            confidence: 0.95,
            method: METHOD,
            parameter: plan.load.level_name(),
            runs: Vec::new(),
            loads: Vec::new(),
            left_out: Vec::new(),
            stopped: None,
            exit_code: 0,
            dir,
            setup_failed: false,
            fleet_failed: false,
            load_values: loads.to_vec(),
            metrics: plan.metrics.iter().map(|m| m.name.clone()).collect(),
            plan: plan.clone(),
        }
    }

    /// Keeps one measured run.
    pub fn record(
        &mut self,
        i: usize,
        p: &Planned,
        arm: &Arm,
        load: Option<f64>,
        label: &str,
        outcome: &RunOutcome,
    ) {
        let mut values = BTreeMap::new();
        let names = MEASURES
            .iter()
            .map(|m| m.0.to_string())
            .chain(self.metrics.iter().map(|m| format!("metric.{m} mean")));
        for name in names {
            let v = outcome.summary().and_then(|s| value(&s.total, &name));
            values.insert(name, v);
        }
        self.runs.push(RunRecord {
            seq: i + 1,
            block: p.block + 1,
            arm: arm.name.clone(),
            load,
            run: label.to_string(),
            exit: Exit::of_run(outcome),
            flagged: super::flags(outcome),
            used: false,
            values,
            load_index: p.load,
        });
    }

    /// The statistics of every load, from the runs kept.
    pub fn analyse(&mut self, design: &Design) {
        for r in &mut self.runs {
            r.used = r.flagged.is_empty() || design.keep_flagged;
            if !r.flagged.is_empty() {
                self.left_out.push(format!(
                    "run {} ({}): {}; {}",
                    r.seq,
                    r.run,
                    r.flagged.join("; "),
                    if r.used {
                        "kept in the statistics (--keep-flagged)"
                    } else {
                        "left out of the statistics (--keep-flagged keeps it)"
                    }
                ));
            }
        }
        if design.keep_flagged {
            self.left_out.clear();
        }
        let baseline = design.arms[0].name.clone();
        let names: Vec<String> = MEASURES
            .iter()
            .map(|m| m.0.to_string())
            .chain(self.metrics.iter().map(|m| format!("metric.{m} mean")))
            .collect();
        self.loads.clear();
        self.exit_code = self.exit().code();
        if self.setup_failed || self.fleet_failed {
            // Nothing is compared across a failed run.
            return;
        }
        for (li, &load) in self.load_values.iter().enumerate() {
            let mut measures = BTreeMap::new();
            for name in &names {
                let (unit, better, up, down) = match MEASURES.iter().find(|m| m.0 == name) {
                    Some(m) => (m.1.to_string(), m.2, m.3, m.4),
                    None => {
                        let metric = name
                            .strip_prefix("metric.")
                            .and_then(|m| m.strip_suffix(" mean"))
                            .unwrap_or(name);
                        let unit = self
                            .plan
                            .metrics
                            .iter()
                            .find(|m| m.name == metric)
                            .map(|m| m.unit.clone())
                            .unwrap_or_default();
                        (unit, Better::Lower, "higher", "lower")
                    }
                };
                let scale = if name == "error_rate_pct" {
                    Scale::Points
                } else {
                    Scale::Relative
                };
                // Each arm's value per block (None: missing or left out).
                let mut arms = BTreeMap::new();
                for arm in &design.arms {
                    let mut v = vec![None; design.runs];
                    for r in self
                        .runs
                        .iter()
                        .filter(|r| r.load_index == li && r.arm == arm.name && r.used)
                    {
                        v[r.block - 1] = r.values.get(name).copied().flatten();
                    }
                    arms.insert(arm.name.clone(), v);
                }
                let base = &arms[&baseline];
                let comparisons: Vec<Comparison> = design.arms[1..]
                    .iter()
                    .map(|arm| {
                        let pairs: Vec<(f64, f64)> = base
                            .iter()
                            .zip(&arms[&arm.name])
                            .filter_map(|(a, b)| a.zip(*b))
                            .collect();
                        let what = short(name);
                        Comparison {
                            arm: arm.name.clone(),
                            baseline: baseline.clone(),
                            difference: stats::difference(
                                &pairs,
                                Judging {
                                    baseline: &baseline,
                                    arm: &arm.name,
                                    what: &what,
                                    up,
                                    down,
                                    better,
                                    scale,
                                    // An error rate's margin is in points:
                                    // a fifth of the relative one (1 point
                                    // for the default 5%).
                                    margin: match scale {
                                        Scale::Relative => design.margin_pct,
                                        Scale::Points => design.margin_pct / 5.0,
                                    },
                                },
                            ),
                        }
                    })
                    .collect();
                let first = &comparisons[0].difference;
                measures.insert(
                    name.clone(),
                    Measure {
                        unit,
                        better: match better {
                            Better::Lower => "lower",
                            Better::Higher => "higher",
                        },
                        scale,
                        arms,
                        difference_pct: first.difference_pct,
                        ci_low_pct: first.ci_low_pct,
                        ci_high_pct: first.ci_high_pct,
                        verdict: first.verdict,
                        comparisons,
                    },
                );
            }
            self.loads.push(LoadResult {
                load,
                label: super::load_words(&self.plan, load),
                measures,
            });
        }
        self.exit_code = self.exit().code();
    }

    /// The measures in the order they are shown.
    fn ordered<'a>(&self, l: &'a LoadResult) -> Vec<(&'a String, &'a Measure)> {
        let mut out: Vec<(&String, &Measure)> = Vec::new();
        for (name, ..) in MEASURES {
            if let Some((k, m)) = l.measures.get_key_value(name) {
                out.push((k, m));
            }
        }
        out.extend(l.measures.iter().filter(|(k, _)| k.starts_with("metric.")));
        out
    }
}

/// "p50", "requests/s", "metric time_ms": a measure in words.
fn short(name: &str) -> String {
    match name {
        "p50_ms" => "p50".into(),
        "p95_ms" => "p95".into(),
        "p99_ms" => "p99".into(),
        "mean_ms" => "mean latency".into(),
        "error_rate_pct" => "error rate".into(),
        "rps" => "requests/s".into(),
        other => other
            .strip_prefix("metric.")
            .and_then(|m| m.strip_suffix(" mean"))
            .map_or_else(|| other.to_string(), |m| format!("{m} (mean)")),
    }
}

/// A measure's value in a run's totals, named as `compare` names it.
fn value(e: &Entry, name: &str) -> Option<f64> {
    match name {
        "mean_ms" => e.latency_ms.map(|l| l.mean),
        other => crate::compare::value(e, other),
    }
}

/// `experiment.txt`: the verdicts per load, then the runs.
pub fn render(ex: &Experiment) -> String {
    let mut out = String::new();
    let baseline = &ex.arms[0].name;
    let others: Vec<&str> = ex.arms[1..].iter().map(|a| a.name.as_str()).collect();
    out.push_str(&format!(
        "Experiment {}: {} against {baseline} (the baseline); {} runs per arm, {} order{}\n",
        ex.name,
        others.join(", "),
        ex.runs_per_arm,
        ex.order,
        ex.seed.map_or_else(String::new, |s| format!(" (seed {s})"))
    ));
    out.push_str(&format!(
        "Each difference is a 95% interval from the runs ({}); an interval within ±{}% ({} percentage points for the error rate) reads \"same\".\n",
        "paired by block",
        ex.margin_pct,
        ex.margin_pct / 5.0
    ));
    if let Some(why) = &ex.stopped {
        out.push_str(&format!("STOPPED: {why}\n"));
    }
    if ex.loads.is_empty() {
        out.push_str("No verdict: nothing is compared across a failed set-up or run.\n");
    }
    for l in &ex.loads {
        out.push_str(&format!("\nAt {}:\n", l.label));
        for (_, m) in ex.ordered(l) {
            for c in &m.comparisons {
                out.push_str(&format!("  {}\n", c.difference.words));
            }
        }
    }
    let mut t = crate::console::new_table();
    let mut header = vec![
        "run".to_string(),
        "arm".into(),
        "load".into(),
        "block".into(),
    ];
    header.extend(["p50 ms", "p95 ms", "p99 ms", "req/s", "errors %"].map(String::from));
    header.extend(["exit".to_string(), "in statistics".into()]);
    t.set_header(header);
    for r in &ex.runs {
        let v = |n: &str| {
            r.values
                .get(n)
                .copied()
                .flatten()
                .map_or_else(|| "-".into(), |v| format!("{v:.2}"))
        };
        t.add_row(vec![
            r.run.clone(),
            r.arm.clone(),
            r.load.map_or_else(|| "-".into(), |l| l.to_string()),
            r.block.to_string(),
            v("p50_ms"),
            v("p95_ms"),
            v("p99_ms"),
            v("rps"),
            v("error_rate_pct"),
            r.exit.code().to_string(),
            if r.used {
                "yes".into()
            } else {
                "no (flagged)".into()
            },
        ]);
    }
    out.push_str(&format!("\nRuns, in the order they ran:\n{t}\n"));
    for line in &ex.left_out {
        out.push_str(&format!("NOTE: {line}\n"));
    }
    out
}

/// Writes `experiment.json`, `experiment.txt` and `experiment.html`.
pub fn write(ex: &Experiment) -> Result<(), String> {
    let json = serde_json::to_string_pretty(ex).map_err(|e| e.to_string())?;
    let page = html(ex).map_err(|e| format!("cannot render experiment.html: {e}"))?;
    crate::atomic::write(ex.dir.join("experiment.json"), json + "\n")
        .and_then(|()| crate::atomic::write(ex.dir.join("experiment.txt"), render(ex)))
        .and_then(|()| crate::atomic::write(ex.dir.join("experiment.html"), page))
        .and_then(|()| {
            crate::output::index::write(
                &ex.dir,
                &format!("loadfleet experiment: {}", ex.name),
                "experiment.html",
            )
        })
        .map_err(|e| e.to_string())
}

#[derive(askama::Template)]
#[template(path = "experiment.html")]
struct Page<'a> {
    ex: &'a Experiment,
    text_verdicts: Vec<(String, Vec<(Verdict, String)>)>,
    charts: Vec<(String, String)>,
}

/// `experiment.html`.
pub fn html(ex: &Experiment) -> Result<String, askama::Error> {
    use askama::Template;
    let mut text_verdicts = Vec::new();
    let mut charts = Vec::new();
    for l in &ex.loads {
        let mut lines = Vec::new();
        let mut rows = Vec::new();
        for (name, m) in ex.ordered(l) {
            for c in &m.comparisons {
                lines.push((c.difference.verdict, c.difference.words.clone()));
                let label = if ex.arms.len() > 2 {
                    format!("{} · {}", short(name), c.arm)
                } else {
                    short(name)
                };
                rows.push((label, m.scale, c.difference.clone()));
            }
        }
        text_verdicts.push((l.label.clone(), lines));
        charts.push((l.label.clone(), interval_chart(&rows, ex.margin_pct)));
    }
    Page {
        ex,
        text_verdicts,
        charts,
    }
    .render()
}

/// Each difference as a point on its interval, against 0 and the margin.
fn interval_chart(rows: &[(String, Scale, Difference)], margin: f64) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let reach = rows
        .iter()
        .flat_map(|(_, _, d)| [d.ci_low_pct, d.ci_high_pct])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(margin * 2.0, |a, v| a.max(v.abs()))
        .min(1000.0);
    let (left, width, row_h) = (170.0, 420.0, 26.0);
    let height = 30.0 + row_h * rows.len() as f64;
    let x = |v: f64| left + (v.clamp(-reach, reach) + reach) / (2.0 * reach) * width;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {height}" width="100%" role="img" aria-label="differences with their 95% intervals"><rect x="{ml}" y="4" width="{mw}" height="{bh}" fill="#e8f5e9"/><line x1="{z}" y1="4" x2="{z}" y2="{bh4}" stroke="#444" stroke-dasharray="3 3"/><text x="{ml}" y="{th}" font-size="11" text-anchor="middle">-{m}%</text><text x="{mr}" y="{th}" font-size="11" text-anchor="middle">+{m}%</text><text x="{l0}" y="{th}" font-size="11" text-anchor="start">{lo}</text><text x="{r0}" y="{th}" font-size="11" text-anchor="end">{hi}</text>"##,
        w = left + width + 190.0,
        ml = x(-margin),
        mw = x(margin) - x(-margin),
        bh = row_h * rows.len() as f64,
        bh4 = 4.0 + row_h * rows.len() as f64,
        z = x(0.0),
        th = height - 8.0,
        m = margin,
        mr = x(margin),
        l0 = left,
        r0 = left + width,
        lo = format_args!("-{reach:.0}%"),
        hi = format_args!("+{reach:.0}%"),
    );
    for (i, (label, scale, d)) in rows.iter().enumerate() {
        let y = 4.0 + row_h * i as f64 + row_h / 2.0;
        let unit = if *scale == Scale::Points { " pt" } else { "%" };
        svg.push_str(&format!(
            r##"<text x="{tx}" y="{ty}" font-size="12" text-anchor="end">{label}</text>"##,
            tx = left - 8.0,
            ty = y + 4.0,
            label = esc(label)
        ));
        if let (Some(lo), Some(hi), Some(mid)) = (d.ci_low_pct, d.ci_high_pct, d.difference_pct) {
            let color = match d.verdict {
                Verdict::Better => "#2ca02c",
                Verdict::Worse => "#d62728",
                Verdict::Same => "#1f77b4",
                Verdict::Inconclusive => "#7f7f7f",
            };
            svg.push_str(&format!(
                r##"<g><title>{t}</title><line x1="{a}" y1="{y}" x2="{b}" y2="{y}" stroke="{color}" stroke-width="3"/><circle cx="{c}" cy="{y}" r="4.5" fill="{color}"/><text x="{tx}" y="{ty}" font-size="11">{mid:+.1}{unit} [{lo:+.1}, {hi:+.1}]</text></g>"##,
                t = esc(&d.words),
                a = x(lo),
                b = x(hi),
                c = x(mid),
                tx = left + width + 4.0,
                ty = y + 4.0,
            ));
        } else {
            svg.push_str(&format!(
                r##"<text x="{tx}" y="{ty}" font-size="11" fill="#7f7f7f">{w}</text>"##,
                tx = left + 4.0,
                ty = y + 4.0,
                w = esc(&d.words)
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

impl RunRecord {
    /// A measure's value as shown: `1.23`, or `-`.
    fn shown(&self, name: &str) -> String {
        self.values
            .get(name)
            .copied()
            .flatten()
            .map_or_else(|| "-".into(), |v| format!("{v:.2}"))
    }
}

/// A verdict's CSS class.
fn class(v: &Verdict) -> &'static str {
    match v {
        Verdict::Better => "better",
        Verdict::Worse => "worse",
        Verdict::Same => "same",
        Verdict::Inconclusive => "inconclusive",
    }
}
