//! `loadfleet experiment`: the same plan against two or more configurations
//! of the system under test (arms), each put in place by a set-up command,
//! repeated in interleaved blocks, with a confidence interval for each
//! difference and a verdict that follows from it.
//!
//! Parts: `design` (the arms, the order of the runs), `setup` (a command,
//! with a timeout and its output kept), [`stats`] (the interval and the
//! verdict), `output` (`experiment.json`, `.txt`, `.html`). The runs are
//! ordinary runs, each with its own run directory.

mod design;
mod output;
mod setup;
pub mod stats;

pub use design::{Arm, Design, Order, Planned, schedule};
pub use output::{Experiment, LoadResult, Measure, RunRecord, render};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::exit::Exit;
use crate::plan::Plan;
use crate::runner::{RunOutcome, RunSettings, Successive, run_and_report};

/// Why an experiment stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("cannot create the experiment directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the experiment's results: {0}")]
    Write(String),
}

/// A set-up done in this process instead of a command (`loadfleet demo`
/// restarts its built-in test site): given the arm's index, it puts the
/// system in that arm's configuration and returns what it did, in words
/// (kept as the set-up's log), or why it could not.
pub type SetupFn = dyn Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
    + Send
    + Sync;

/// Runs the experiment: every block, every load, every arm (set-up, settle,
/// warm-up, measured run), then the statistics and the outputs.
pub async fn run_experiment(
    settings: &RunSettings,
    plan: &Plan,
    design: &Design,
    out: Option<PathBuf>,
    plan_file: &Path,
) -> Result<Experiment, ExperimentError> {
    run_experiment_with(settings, plan, design, out, plan_file, None).await
}

/// [`run_experiment`], with the arms' set-ups done by `setup` in this
/// process rather than by their commands.
pub async fn run_experiment_with(
    settings: &RunSettings,
    plan: &Plan,
    design: &Design,
    out: Option<PathBuf>,
    plan_file: &Path,
    setup: Option<&SetupFn>,
) -> Result<Experiment, ExperimentError> {
    let dir = out.unwrap_or_else(|| {
        let mut d =
            crate::plan::default_out_dir(plan, time::OffsetDateTime::now_utc()).into_os_string();
        d.push("-experiment");
        PathBuf::from(d)
    });
    for d in [dir.clone(), dir.join("setup"), dir.join("runs")] {
        if let Err(source) = std::fs::create_dir_all(&d) {
            return Err(ExperimentError::CreateDir { dir: d, source });
        }
    }
    if let Ok(text) = std::fs::read(plan_file) {
        let _ = crate::atomic::write(dir.join("plan.toml"), text);
    }
    let loads: Vec<Option<f64>> = match &plan.sweep {
        Some(s) => s.values.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let planned = schedule(design, loads.len());
    let mut ex = Experiment::new(plan, design, &loads, dir.clone());
    let mut successive = Successive::default();
    let started = Instant::now();
    eprintln!(
        "experiment {}: {} arms × {} load(s) × {} runs = {} runs, in {} order{}",
        plan.name,
        design.arms.len(),
        loads.len(),
        design.runs,
        planned.len(),
        design.order.describe(),
        design
            .order
            .seed()
            .map_or_else(String::new, |s| format!(" (seed {s})"))
    );
    for (i, p) in planned.iter().enumerate() {
        if settings.interrupt.is_cancelled() {
            ex.stopped = Some(format!("interrupted after {i} of {} runs", planned.len()));
            break;
        }
        let arm = &design.arms[p.arm];
        let load = loads[p.load];
        let label = run_label(plan, p, arm, load);
        let left = match i {
            0 => String::new(),
            _ => {
                let per_run = started.elapsed() / i as u32;
                format!(
                    "; about {} left",
                    crate::duration::format_duration(round_s(per_run * (planned.len() - i) as u32))
                )
            }
        };
        eprintln!(
            "experiment: run {} of {}: arm {}, {}, repetition {} of {}{left}",
            i + 1,
            planned.len(),
            arm.name,
            load_words(plan, load),
            p.block + 1,
            design.runs
        );
        // Set-up: the system in this arm's configuration.
        let log = dir
            .join("setup")
            .join(format!("{:03}-{}.log", i + 1, arm.name));
        let done = match setup {
            None => setup::run(&arm.setup, design.setup_timeout, &log, &settings.interrupt).await,
            Some(f) => {
                let r = f(p.arm).await;
                let text = match &r {
                    Ok(t) | Err(t) => t.clone(),
                };
                let _ = crate::atomic::write(&log, format!("{text}\n"));
                r.map(|_| ()).map_err(|e| setup::SetupFailure {
                    how: "the built-in set-up failed".into(),
                    output_tail: e,
                })
            }
        };
        if let Err(failure) = done {
            eprintln!(
                "error: the set-up of arm {} failed ({}); its output ({}):\n{}",
                arm.name,
                failure.how,
                log.display(),
                failure.output_tail
            );
            ex.stopped = Some(format!(
                "the set-up of arm {} failed before run {} ({}); nothing after it ran",
                arm.name,
                i + 1,
                failure.how
            ));
            ex.setup_failed = true;
            break;
        }
        if !design.settle.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(design.settle) => {}
                _ = settings.interrupt.cancelled() => continue,
            }
        }
        let run_plan = match load {
            Some(v) => plan.at(v),
            None => plan.clone(),
        };
        if let Some(w) = design.warm_up {
            let mut warm = run_plan.clone();
            warm.load = warm.load.warm_up(w);
            warm.thresholds = Default::default();
            let mut opts = successive.options(settings, warm);
            opts.label = Some(format!("warm-up before {label}"));
            let warm_dir = dir.join("runs").join(format!("{label}-warmup"));
            let outcome = run_and_report(opts, Some(warm_dir), None).await;
            successive.after(&outcome);
            if outcome.summary().is_none() {
                ex.stopped = Some(format!("the warm-up before run {} did not run", i + 1));
                ex.fleet_failed = true;
                break;
            }
        }
        let mut opts = successive.options(settings, run_plan);
        opts.label = Some(format!("run {} of {}: {label}", i + 1, planned.len()));
        let run_dir = dir.join("runs").join(&label);
        let outcome = run_and_report(opts, Some(run_dir), None).await;
        successive.after(&outcome);
        let ran = outcome.summary().is_some();
        ex.record(i, p, arm, load, &label, &outcome);
        if !ran {
            ex.stopped = Some(format!(
                "run {} ({label}) did not happen; nothing after it ran",
                i + 1
            ));
            ex.fleet_failed = true;
            break;
        }
    }
    ex.analyse(design);
    let written = output::write(&ex);
    match written {
        Ok(()) => Ok(ex),
        Err(e) => {
            // The words are still said; only the files are missing.
            crate::console::say(&output::render(&ex));
            Err(ExperimentError::Write(e))
        }
    }
}

fn round_s(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

/// `users-20-r2-redis`: the run directory's name.
fn run_label(plan: &Plan, p: &Planned, arm: &Arm, load: Option<f64>) -> String {
    match load {
        Some(v) => format!(
            "{}-{v}-r{}-{}",
            plan.load.level_name(),
            p.block + 1,
            arm.name
        ),
        None => format!("r{}-{}", p.block + 1, arm.name),
    }
}

/// "users 20", or "the plan's load".
pub fn load_words(plan: &Plan, load: Option<f64>) -> String {
    match load {
        Some(v) => format!("{} {v}", plan.load.level_name()),
        None => "the plan's load".into(),
    }
}

impl Experiment {
    /// The process's exit: 0 when every run ran as planned; 1 when runs had
    /// errors or were left out of the statistics, or it was interrupted; 3
    /// when a set-up command failed or a run could not happen.
    pub fn exit(&self) -> Exit {
        if self.setup_failed || self.fleet_failed {
            return Exit::Fleet;
        }
        let worst = self.runs.iter().map(|r| r.exit).max().unwrap_or(Exit::Ok);
        if self.stopped.is_some() || !self.left_out.is_empty() {
            worst.max(Exit::Errors)
        } else {
            worst
        }
    }
}

/// Whether `outcome`'s run may be compared, and if not, why.
fn flags(outcome: &RunOutcome) -> Vec<String> {
    let Some(s) = outcome.summary() else {
        return vec!["the run did not happen".into()];
    };
    let mut out = Vec::new();
    use crate::outcome::RunStatus;
    match s.status {
        RunStatus::Completed | RunStatus::CompletedWithErrors | RunStatus::ThresholdsFailed => {}
        other => out.push(format!(
            "its status is {}",
            serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        )),
    }
    for (name, a) in &s.agents {
        if let Some(h) = &a.health
            && h.saturated_intervals > 0
        {
            out.push(format!(
                "agent {name}'s generator was saturated in {} of {} intervals",
                h.saturated_intervals, h.intervals
            ));
        }
    }
    // The system under test's own host, as its observers saw it.
    out.extend(s.hosts.iter().flat_map(|h| h.disturbed.iter().cloned()));
    out
}
