//! Sweeps: one plan run once per value of `users` (or `rate`), one after
//! another, into one series directory with a run per value and a table of
//! value against req/s, percentiles and errors — the "20, 30, 40 users"
//! experiment people otherwise do by hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::console::say;
use crate::exit::Exit;
use crate::plan::{self, Plan, Sweep};
use crate::runner::{RunOutcome, RunSettings, run_and_report};

/// One run of a series.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesRow {
    pub value: f64,
    pub run: String,
    /// How this run alone would have exited (`exit_code` in `series.json`).
    #[serde(rename = "exit_code")]
    pub exit: Exit,
    pub requests: u64,
    pub rps: f64,
    pub errors: u64,
    pub dropped_iterations: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Each number read from responses (`[[metric]]`) over all steps:
    /// its exact mean, with its unit.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metric_means: std::collections::BTreeMap<String, (Option<f64>, String)>,
}

/// `series.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    /// `users` or `rate`.
    pub parameter: &'static str,
    pub runs: Vec<SeriesRow>,
    /// Stopped (Ctrl-C) before every value ran.
    #[serde(skip)]
    pub interrupted: bool,
    /// The series directory.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Why a sweep kept nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// Nothing was sent.
    #[error("cannot create series directory {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The runs happened (each has its own run directory) but the series
    /// table or page could not be written.
    #[error("cannot write the series table: {error}")]
    Write { series: Box<Series>, error: String },
}

impl Series {
    /// How the sweep exits: the worst of its runs; an interrupted series is
    /// at least 1.
    pub fn exit(&self) -> Exit {
        let worst = self.runs.iter().map(|r| r.exit).max().unwrap_or(Exit::Ok);
        if self.interrupted {
            worst.max(Exit::Errors)
        } else {
            worst
        }
    }
}

impl SeriesError {
    /// How a sweep that kept nothing, or not everything, exits.
    pub fn exit(&self) -> Exit {
        match self {
            SeriesError::CreateDir { .. } => Exit::Usage,
            SeriesError::Write { .. } => Exit::Fleet,
        }
    }
}

/// Prints a sweep's table and where it is, or why it was not kept.
pub fn say_outcome(outcome: &Result<Series, SeriesError>) {
    match outcome {
        Ok(series) => {
            say(&render(series));
            say(&format!("series directory: {}", series.dir.display()));
        }
        Err(e @ SeriesError::CreateDir { .. }) => eprintln!("error: {e}"),
        Err(e @ SeriesError::Write { series, .. }) => {
            say(&render(series));
            eprintln!("error: {e}");
        }
    }
}

/// Runs the sweep and writes `series.json`, `series.txt` and `series.html`
/// into its directory (default: `runs/<stamp>-<plan>-series/`).
pub async fn run_series(
    settings: &RunSettings,
    plan: &Plan,
    sweep: &Sweep,
    out: Option<PathBuf>,
    plan_file: &Path,
) -> Result<Series, SeriesError> {
    let dir = out.unwrap_or_else(|| {
        let mut d = plan::default_out_dir(plan, time::OffsetDateTime::now_utc()).into_os_string();
        d.push("-series");
        PathBuf::from(d)
    });
    if let Err(source) = std::fs::create_dir_all(&dir) {
        return Err(SeriesError::CreateDir { dir, source });
    }
    if let Ok(text) = std::fs::read(plan_file) {
        let _ = crate::atomic::write(dir.join("plan.toml"), text);
    }
    let param = plan.load.level_name();
    let mut series = Series {
        name: plan.name.clone(),
        parameter: param,
        runs: Vec::new(),
        interrupted: false,
        dir,
    };
    let mut successive = crate::runner::Successive::default();
    for (i, &value) in sweep.values.iter().enumerate() {
        if settings.interrupt.is_cancelled() {
            eprintln!(
                "series interrupted; {} of {} runs done",
                i,
                sweep.values.len()
            );
            series.interrupted = true;
            break;
        }
        if i > 0 && !sweep.cooldown.is_zero() {
            eprintln!("cooling down for {:?}", sweep.cooldown);
            tokio::select! {
                _ = tokio::time::sleep(sweep.cooldown) => {}
                _ = settings.interrupt.cancelled() => continue,
            }
        }
        let name = format!("{param}-{value}");
        eprintln!(
            "series {}: run {} of {}: {param} = {value}",
            plan.name,
            i + 1,
            sweep.values.len()
        );
        let at = plan.at(value);
        if let Some(measured) = sweep.phase {
            // Every phase at this value (the warm-up first), each a run of
            // its own; the row is the swept phase's.
            let done = crate::phases::run_phases(
                settings,
                &at,
                Some(series.dir.join(&name)),
                plan_file,
                Some(measured),
            )
            .await;
            let phases = match done {
                Ok(p) => p,
                Err(crate::phases::PhasesError::Write { phases, .. }) => *phases,
                Err(e) => {
                    eprintln!("series {}: {name}: {e}", plan.name);
                    break;
                }
            };
            crate::phases::say_outcome(&Ok(phases.clone()));
            let run = format!(
                "{name}/{}",
                crate::phases::dir_name(measured, &at.phases[measured].name)
            );
            match &phases.measured {
                Some(outcome) => {
                    series.runs.push(row(value, run, outcome));
                    if outcome.summary().is_none() {
                        break;
                    }
                }
                None => break,
            }
            continue;
        }
        let mut opts = successive.options(settings, at);
        opts.label = Some(format!("run {} of {}: {name}", i + 1, sweep.values.len()));
        let outcome = run_and_report(opts, Some(series.dir.join(&name)), None).await;
        successive.after(&outcome);
        series.runs.push(row(value, name, &outcome));
        if outcome.summary().is_none() {
            // The fleet failed; later values would fail the same way.
            break;
        }
    }
    let written = html(&series)
        .map_err(|e| format!("cannot render the series report: {e}"))
        .and_then(|page| {
            let json = serde_json::to_string_pretty(&series).unwrap_or_default();
            crate::atomic::write(series.dir.join("series.json"), json + "\n")
                .and_then(|()| {
                    crate::atomic::write(series.dir.join("series.txt"), render(&series) + "\n")
                })
                .and_then(|()| crate::atomic::write(series.dir.join("series.html"), page))
                .and_then(|()| {
                    crate::output::index::write(
                        &series.dir,
                        &format!("loadfleet series: {}", series.name),
                        "series.html",
                    )
                })
                .map_err(|e| e.to_string())
        });
    match written {
        Ok(()) => Ok(series),
        Err(error) => Err(SeriesError::Write {
            series: Box::new(series),
            error,
        }),
    }
}

fn row(value: f64, run: String, outcome: &RunOutcome) -> SeriesRow {
    let s = outcome.summary();
    let lat = s.and_then(|s| s.total.latency_ms);
    SeriesRow {
        value,
        run,
        exit: Exit::of_run(outcome),
        requests: s.map_or(0, |s| s.total.requests),
        rps: s.map_or(0.0, |s| s.total.rps),
        errors: s.map_or(0, |s| s.total.errors),
        dropped_iterations: s.map_or(0, |s| s.dropped_iterations),
        p50_ms: lat.map(|l| l.p50),
        p90_ms: lat.map(|l| l.p90),
        p95_ms: lat.map(|l| l.p95),
        p99_ms: lat.map(|l| l.p99),
        max_ms: lat.map(|l| l.max),
        metric_means: s
            .map(|s| {
                s.total
                    .metrics
                    .iter()
                    .map(|(name, m)| (name.clone(), (m.stats.mean, m.unit.clone())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The names (with units) of the metrics any run of the series read.
fn metric_names(s: &Series) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = Vec::new();
    for r in &s.runs {
        for (n, (_, unit)) in &r.metric_means {
            if !names.iter().any(|(m, _)| m == n) {
                names.push((n.clone(), unit.clone()));
            }
        }
    }
    names.sort();
    names
}

/// Each metric's mean per load, beside the latency table; empty when the
/// plan reads none.
fn metric_rows(s: &Series) -> (Vec<String>, Vec<(f64, Vec<String>)>) {
    let names = metric_names(s);
    let header = names
        .iter()
        .map(|(n, u)| {
            if u.is_empty() {
                format!("{n} mean")
            } else {
                format!("{n} mean ({u})")
            }
        })
        .collect();
    let rows = s
        .runs
        .iter()
        .map(|r| {
            (
                r.value,
                names
                    .iter()
                    .map(|(n, _)| {
                        r.metric_means
                            .get(n)
                            .and_then(|(m, _)| *m)
                            .map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
                    })
                    .collect(),
            )
        })
        .collect();
    (header, rows)
}

/// The series table: one row per value.
pub fn render(s: &Series) -> String {
    let mut t = crate::console::new_table();
    t.set_header([
        s.parameter,
        "req/s",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "requests",
        "errors",
        "dropped",
        "exit",
    ]);
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for r in &s.runs {
        t.add_row([
            r.value.to_string(),
            format!("{:.1}", r.rps),
            ms(r.p50_ms),
            ms(r.p90_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
            r.requests.to_string(),
            r.errors.to_string(),
            r.dropped_iterations.to_string(),
            r.exit.code().to_string(),
        ]);
    }
    let mut out = String::new();
    let _ = write!(out, "series {} ({} per run)\n{t}", s.name, s.parameter);
    let (header, rows) = metric_rows(s);
    if !header.is_empty() {
        let mut m = crate::console::new_table();
        m.set_header(std::iter::once(s.parameter.to_string()).chain(header));
        for (value, cells) in rows {
            m.add_row(std::iter::once(value.to_string()).chain(cells));
        }
        let _ = write!(out, "\nnumbers read from responses, over all steps:\n{m}");
    }
    out
}

#[derive(askama::Template)]
#[template(path = "series.html")]
struct SeriesPage<'a> {
    s: &'a Series,
    /// Each metric's mean per load: the header, then one row per value.
    metric_header: Vec<String>,
    metric_rows: Vec<(f64, Vec<String>)>,
    latency_chart: String,
    rps_chart: String,
}

fn ms(v: &Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// `series.html`: the table, and latency and req/s against the load.
pub fn html(s: &Series) -> Result<String, askama::Error> {
    use crate::output::svg::{Series as Line, xy_chart};
    use askama::Template;
    let pts = |f: fn(&SeriesRow) -> Option<f64>| -> Vec<(f64, f64)> {
        s.runs
            .iter()
            .filter_map(|r| f(r).map(|v| (r.value, v)))
            .collect()
    };
    let unit = if s.parameter == "users" {
        " users"
    } else {
        "/s"
    };
    let latency_chart = xy_chart(
        &format!("Latency against {}", s.parameter),
        unit,
        "milliseconds",
        crate::output::svg::Values::Real,
        &[
            Line {
                name: "p50",
                color: "#1f77b4",
                points: pts(|r| r.p50_ms),
            },
            Line {
                name: "p90",
                color: "#9467bd",
                points: pts(|r| r.p90_ms),
            },
            Line {
                name: "p95",
                color: "#2ca02c",
                points: pts(|r| r.p95_ms),
            },
            Line {
                name: "p99",
                color: "#ff7f0e",
                points: pts(|r| r.p99_ms),
            },
        ],
    );
    let rps_chart = xy_chart(
        &format!("Requests per second against {}", s.parameter),
        unit,
        "req/s",
        crate::output::svg::Values::Real,
        &[Line {
            name: "req/s",
            color: "#1f77b4",
            points: pts(|r| Some(r.rps)),
        }],
    );
    let (metric_header, metric_rows) = metric_rows(s);
    SeriesPage {
        s,
        metric_header,
        metric_rows,
        latency_chart,
        rps_chart,
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: f64, exit: Exit) -> SeriesRow {
        SeriesRow {
            value,
            run: format!("users-{value}"),
            exit,
            requests: 0,
            rps: 0.0,
            errors: 0,
            dropped_iterations: 0,
            p50_ms: None,
            p90_ms: None,
            p95_ms: None,
            p99_ms: None,
            max_ms: None,
            metric_means: Default::default(),
        }
    }

    #[test]
    fn a_series_exits_with_its_worst_run_and_at_least_1_when_interrupted() {
        let mut s = Series {
            name: "s".into(),
            parameter: "users",
            runs: vec![row(1.0, Exit::Ok), row(2.0, Exit::Ok)],
            interrupted: false,
            dir: PathBuf::new(),
        };
        assert_eq!(s.exit(), Exit::Ok);
        s.interrupted = true;
        assert_eq!(s.exit(), Exit::Errors, "an interrupted series is not 0");
        s.runs.push(row(3.0, Exit::Fleet));
        assert_eq!(s.exit(), Exit::Fleet, "the worst run wins");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["runs"][2]["exit_code"], 3,
            "series.json keeps the number"
        );
        assert!(json.get("interrupted").is_none() && json.get("dir").is_none());
    }
}
