//! Capacity search: how much load can this system take? Raise the load in
//! steps (doubling) until an SLO breaks, then bisect between the last good
//! and the first bad step. Each step is a full run with the SLOs as
//! thresholds that stop it early (after a third of the step) when broken.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::plan::{self, Plan};
use crate::runner::{RunSettings, run_and_report};
use crate::thresholds::{Thresholds, parse_rule};

/// What the operator asked of a search (the command line's options).
#[derive(Debug, Clone)]
pub struct SearchSpec {
    /// Service-level objectives, e.g. "p95 < 2s" or "errors < 1%".
    pub slos: Vec<String>,
    /// How long each step holds its load.
    pub step_duration: Duration,
    /// Most steps (runs) the search may take.
    pub max_steps: u32,
    /// Highest load to try; default 1,024 times the plan's.
    pub max_load: Option<f64>,
}

/// Why a search kept nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// Nothing was sent.
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// A step could not run (the fleet failed); the search stopped there.
    #[error("step {step} could not run; the search stopped")]
    StepNotRun { step: String },
    /// The steps ran (each has its run directory) but the capacity report
    /// could not be written.
    #[error("cannot write the capacity report: {error}")]
    Write { report: Box<Report>, error: String },
}

/// A configured search.
#[derive(Debug, Clone)]
pub struct Search {
    slos: Thresholds,
    step: Duration,
    max_steps: u32,
    max_load: f64,
    start: f64,
    users: bool,
}

/// One step of the search.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub load: f64,
    pub run: String,
    pub passed: bool,
    pub requests: u64,
    pub rps: f64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The SLO that failed first, if any.
    pub failed: Option<String>,
}

/// `capacity.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub parameter: &'static str,
    pub slos: Vec<String>,
    /// The highest load that met every SLO; `null` if none did.
    pub capacity: Option<f64>,
    /// The lowest load that broke an SLO; `null` if none did.
    pub first_failure: Option<f64>,
    pub steps: Vec<StepRow>,
    /// The capacity directory.
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Search {
    /// Checks the arguments against the plan; nothing is sent yet.
    pub fn new(plan: &Plan, args: &SearchSpec) -> Result<Search, String> {
        if plan.sweep.is_some() {
            return Err(
                "capacity search takes a plan with one `users` or `rate`, not a list".into(),
            );
        }
        let mut rules = Vec::new();
        for s in &args.slos {
            rules.push(parse_rule(s, None).map_err(|e| format!("--slo: {e}"))?);
        }
        let start = plan.load.constant_level()?;
        let users = !plan.load.is_open();
        if args.step_duration < Duration::from_secs(1) {
            return Err("--step-duration must be at least 1s".into());
        }
        if args.max_steps == 0 {
            return Err("--max-steps must be at least 1".into());
        }
        let max_load = args.max_load.unwrap_or(start * 1024.0);
        if max_load.is_nan() || max_load < start {
            return Err(format!(
                "--max-load {max_load} is below the plan's starting load {start}"
            ));
        }
        Ok(Search {
            slos: Thresholds {
                rules,
                abort_on_fail: true,
                grace: args.step_duration / 3,
            },
            step: args.step_duration,
            max_steps: args.max_steps,
            max_load,
            start,
            users,
        })
    }

    fn parameter(&self) -> &'static str {
        if self.users { "users" } else { "rate" }
    }

    /// The plan of one step: the load held for the step's duration.
    fn step_plan(&self, plan: &Plan, load: f64) -> Plan {
        let mut p = plan.clone();
        p.thresholds = self.slos.clone();
        p.load = plan.load.held_at(load, self.step, self.step / 3);
        p
    }

    /// The next load to try, or `None` when the search is done.
    pub fn next(&self, good: Option<f64>, bad: Option<f64>, last: f64) -> Option<f64> {
        let round = |x: f64| {
            if self.users {
                x.round()
            } else {
                (x * 100.0).round() / 100.0
            }
        };
        let next = match (good, bad) {
            (_, None) if last >= self.max_load => return None,
            (_, None) => round((last * 2.0).min(self.max_load)),
            (None, Some(b)) => round(b / 2.0),
            (Some(g), Some(b)) => {
                let close = if self.users {
                    b - g <= 1.0
                } else {
                    (b - g) / g < 0.05
                };
                if close {
                    return None;
                }
                round((g + b) / 2.0)
            }
        };
        let tried = |x: f64| good == Some(x) || bad == Some(x);
        (next >= if self.users { 1.0 } else { 0.01 } && !tried(next)).then_some(next)
    }

    /// Runs the search and writes `capacity.json` and `capacity.txt` into
    /// its directory (default: `runs/<stamp>-<plan>-capacity/`).
    pub async fn run(
        &self,
        settings: &RunSettings,
        plan: &Plan,
        out: Option<PathBuf>,
    ) -> Result<Report, CapacityError> {
        let dir = out.unwrap_or_else(|| {
            let mut d =
                plan::default_out_dir(plan, time::OffsetDateTime::now_utc()).into_os_string();
            d.push("-capacity");
            PathBuf::from(d)
        });
        if let Err(source) = std::fs::create_dir_all(&dir) {
            return Err(CapacityError::CreateDir { dir, source });
        }
        let param = self.parameter();
        let mut report = Report {
            name: plan.name.clone(),
            parameter: param,
            slos: self.slos.rules.iter().map(|r| r.text.clone()).collect(),
            capacity: None,
            first_failure: None,
            steps: Vec::new(),
            dir,
        };
        let mut load = self.start;
        let mut successive = crate::runner::Successive::default();
        for n in 1..=self.max_steps {
            if settings.interrupt.is_cancelled() {
                break;
            }
            let name = format!("step-{n}-{param}-{load}");
            eprintln!(
                "capacity {}: step {n} of at most {}: {param} = {load}",
                plan.name, self.max_steps
            );
            let mut opts = successive.options(settings, self.step_plan(plan, load));
            opts.label = Some(format!("capacity step {n}: {param} = {load}"));
            let outcome = run_and_report(opts, Some(report.dir.join(&name)), None).await;
            successive.after(&outcome);
            let Some(s) = outcome.summary() else {
                return Err(CapacityError::StepNotRun { step: name });
            };
            let passed = s.thresholds_passed == Some(true);
            let lat = s.total.latency_ms;
            report.steps.push(StepRow {
                load,
                run: name,
                passed,
                requests: s.total.requests,
                rps: s.total.rps,
                errors: s.total.errors,
                p50_ms: lat.map(|l| l.p50),
                p95_ms: lat.map(|l| l.p95),
                p99_ms: lat.map(|l| l.p99),
                failed: s
                    .thresholds
                    .iter()
                    .find(|o| !o.passed)
                    .map(|o| o.rule.clone()),
            });
            if passed {
                report.capacity = Some(report.capacity.map_or(load, |c: f64| c.max(load)));
            } else {
                report.first_failure =
                    Some(report.first_failure.map_or(load, |f: f64| f.min(load)));
            }
            // A target that fails most requests has said enough: stop cleanly.
            if s.total.requests > 0
                && s.total.errors * 2 > s.total.requests
                && report.capacity.is_some()
            {
                eprintln!("the target is failing hard at {param} = {load}; stopping the search");
                break;
            }
            match self.next(report.capacity, report.first_failure, load) {
                Some(next) => load = next,
                None => break,
            }
        }
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        match crate::atomic::write(report.dir.join("capacity.json"), json + "\n")
            .and_then(|()| {
                crate::atomic::write(report.dir.join("capacity.txt"), render(&report) + "\n")
            })
            .and_then(|()| {
                let page = html(&report).map_err(std::io::Error::other)?;
                crate::atomic::write(report.dir.join("capacity.html"), page)
            })
            .and_then(|()| {
                crate::output::index::write(
                    &report.dir,
                    &format!("loadfleet capacity: {}", report.name),
                    "capacity.html",
                )
            }) {
            Ok(()) => Ok(report),
            Err(e) => Err(CapacityError::Write {
                report: Box::new(report),
                error: e.to_string(),
            }),
        }
    }
}

/// The search's answer in words.
fn answer(r: &Report) -> String {
    match (r.capacity, r.first_failure) {
        (Some(c), Some(f)) => format!(
            "highest {} that met every SLO: {c} (first failure at {f})",
            r.parameter
        ),
        (Some(c), None) => format!(
            "highest {} that met every SLO: {c} (no step broke an SLO; raise --max-load or --max-steps to look further)",
            r.parameter
        ),
        (None, _) => format!(
            "no {} met every SLO, down to the lowest step tried",
            r.parameter
        ),
    }
}

#[derive(askama::Template)]
#[template(path = "capacity.html")]
struct CapacityPage<'a> {
    r: &'a Report,
    answer: String,
    latency_chart: String,
    errors_chart: String,
    rps_chart: String,
}

fn ms(v: &Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

/// `capacity.html`: the answer first, then latency, errors and req/s
/// against the load with the capacity and the first failure marked, then
/// every step with its report.
pub fn html(r: &Report) -> Result<String, askama::Error> {
    use crate::output::svg::{Series as Line, Values, xy_chart};
    use askama::Template;
    let mut steps: Vec<&StepRow> = r.steps.iter().collect();
    steps.sort_by(|a, b| a.load.total_cmp(&b.load));
    let pts = |f: &dyn Fn(&StepRow) -> Option<f64>| -> Vec<(f64, f64)> {
        steps
            .iter()
            .filter_map(|s| f(s).map(|v| (s.load, v)))
            .collect()
    };
    let unit = if r.parameter == "users" {
        " users"
    } else {
        "/s"
    };
    // A vertical line at a load, as high as the chart's highest value.
    let marker =
        |at: Option<f64>, top: f64| at.map(|x| vec![(x, 0.0), (x, top)]).unwrap_or_default();
    let top_ms = steps
        .iter()
        .filter_map(|s| s.p99_ms.or(s.p95_ms))
        .fold(0.0, f64::max);
    let cap = format!(
        "capacity ({})",
        r.capacity.map_or("none".into(), |c| c.to_string())
    );
    let fail = format!(
        "first failure ({})",
        r.first_failure.map_or("none".into(), |c| c.to_string())
    );
    let latency_chart = xy_chart(
        &format!("Latency against {}", r.parameter),
        unit,
        "milliseconds",
        Values::Real,
        &[
            Line {
                name: "p50",
                color: "#1f77b4",
                points: pts(&|s| s.p50_ms),
            },
            Line {
                name: "p95",
                color: "#2ca02c",
                points: pts(&|s| s.p95_ms),
            },
            Line {
                name: "p99",
                color: "#ff7f0e",
                points: pts(&|s| s.p99_ms),
            },
            Line {
                name: &cap,
                color: "#2a7d2a",
                points: marker(r.capacity, top_ms),
            },
            Line {
                name: &fail,
                color: "#b3261e",
                points: marker(r.first_failure, top_ms),
            },
        ],
    );
    let err_pct = |s: &StepRow| {
        Some(if s.requests == 0 {
            0.0
        } else {
            s.errors as f64 * 100.0 / s.requests as f64
        })
    };
    let top_err = steps
        .iter()
        .filter_map(|s| err_pct(s))
        .fold(0.0, f64::max)
        .max(1.0);
    let errors_chart = xy_chart(
        &format!("Errors against {}", r.parameter),
        unit,
        "% of requests",
        Values::Real,
        &[
            Line {
                name: "errors %",
                color: "#d62728",
                points: pts(&err_pct),
            },
            Line {
                name: &cap,
                color: "#2a7d2a",
                points: marker(r.capacity, top_err),
            },
            Line {
                name: &fail,
                color: "#b3261e",
                points: marker(r.first_failure, top_err),
            },
        ],
    );
    let rps_chart = xy_chart(
        &format!("Requests per second against {}", r.parameter),
        unit,
        "req/s",
        Values::Real,
        &[Line {
            name: "req/s",
            color: "#1f77b4",
            points: pts(&|s| Some(s.rps)),
        }],
    );
    CapacityPage {
        r,
        answer: answer(r),
        latency_chart,
        errors_chart,
        rps_chart,
    }
    .render()
}

/// The evidence table and the answer.
pub fn render(r: &Report) -> String {
    let mut t = crate::console::new_table();
    t.set_header([
        r.parameter,
        "SLOs",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "requests",
        "errors",
        "failed",
    ]);
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for s in &r.steps {
        t.add_row([
            s.load.to_string(),
            if s.passed { "met" } else { "broken" }.to_string(),
            format!("{:.1}", s.rps),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            s.requests.to_string(),
            s.errors.to_string(),
            s.failed.clone().unwrap_or_default(),
        ]);
    }
    let answer = answer(r);
    format!(
        "capacity search for {} with SLOs {}\n{t}\n{answer}",
        r.name,
        r.slos.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(users: bool, max_load: f64) -> Search {
        Search {
            slos: Thresholds::default(),
            step: Duration::from_secs(1),
            max_steps: 10,
            max_load,
            start: 1.0,
            users,
        }
    }

    #[test]
    fn doubles_then_bisects() {
        let s = search(true, 100.0);
        assert_eq!(s.next(Some(1.0), None, 1.0), Some(2.0));
        assert_eq!(s.next(Some(8.0), None, 8.0), Some(16.0));
        assert_eq!(
            s.next(Some(64.0), None, 64.0),
            Some(100.0),
            "capped at --max-load"
        );
        assert_eq!(s.next(Some(100.0), None, 100.0), None);
        assert_eq!(s.next(Some(8.0), Some(16.0), 16.0), Some(12.0));
        assert_eq!(s.next(Some(10.0), Some(12.0), 12.0), Some(11.0));
        assert_eq!(
            s.next(Some(10.0), Some(11.0), 11.0),
            None,
            "within one user"
        );
        assert_eq!(
            s.next(None, Some(4.0), 4.0),
            Some(2.0),
            "the first step failed: go lower"
        );
        assert_eq!(s.next(None, Some(1.0), 1.0), None);
        let r = search(false, 1e6);
        assert_eq!(
            r.next(Some(100.0), Some(104.0), 104.0),
            None,
            "rates stop within 5%"
        );
        assert_eq!(r.next(Some(100.0), Some(200.0), 200.0), Some(150.0));
    }
}
