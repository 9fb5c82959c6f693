//! One plan, run and kept: the settings every run shares, and
//! [`run_and_report`], which runs a plan, prints its table, writes its run
//! directory and returns a typed [`RunOutcome`] (the command line maps it
//! to an exit code; sweeps and capacity searches read its summary).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::console::say;
use crate::fleet::{self, LocalAgent, RunOptions};
use crate::outcome::{FleetError, StartNote};
use crate::output::{self, RunFiles};
use crate::plan::{self, Plan};
use crate::progress::ProgressMode;
use crate::summary::Summary;

/// How to run plans: everything but the plan itself.
pub struct RunSettings {
    pub token: Option<String>,
    pub tls: Option<crate::certs::ControllerTls>,
    pub lease: Duration,
    pub listen: SocketAddr,
    pub expect_agents: usize,
    /// Observers to wait for (`--expect-observers`).
    pub expect_observers: usize,
    /// When an observed host counts as disturbed.
    pub host_bounds: crate::hosts::Bounds,
    pub local_agents: Vec<LocalAgent>,
    pub wait_for_agents: Duration,
    pub progress: ProgressMode,
    pub interrupt: CancellationToken,
    pub hard_interrupt: CancellationToken,
    pub audit_log: Option<PathBuf>,
    /// Who runs it, for the audit log (`--operator`); default the OS user.
    pub operator: Option<String>,
    /// `/metrics` and remote write, when asked for (one for every run).
    pub live: Option<std::sync::Arc<crate::live::Live>>,
}

impl RunSettings {
    /// Options to run `plan` with these settings.
    pub fn options(&self, plan: Plan) -> RunOptions {
        RunOptions {
            plan,
            listen: self.listen,
            expect_agents: self.expect_agents,
            expect_observers: self.expect_observers,
            host_bounds: self.host_bounds,
            local_agents: self.local_agents.clone(),
            wait_for_agents: self.wait_for_agents,
            start_delay: Duration::from_millis(250),
            progress: self.progress,
            interrupt: self.interrupt.clone(),
            hard_interrupt: self.hard_interrupt.clone(),
            on_listening: None,
            token: self.token.clone(),
            tls: self.tls.clone(),
            lease: self.lease,
            audit_log: self.audit_log.clone(),
            operator: self.operator.clone(),
            previous_agents: Vec::new(),
            live: self.live.clone(),
            label: None,
            on_start: None,
            journal: None,
        }
    }
}

/// What one run of a series (or capacity search) hands the next: the
/// address it listened on, so agents find a `--listen HOST:0` controller
/// again, and its agents, so one that does not come back is named.
#[derive(Debug, Default)]
pub struct Successive {
    listen: Option<SocketAddr>,
    agents: Vec<(String, String)>,
    bound: Option<tokio::sync::oneshot::Receiver<SocketAddr>>,
}

impl Successive {
    /// Options for the next run of `plan`.
    pub fn options(&mut self, settings: &RunSettings, plan: Plan) -> RunOptions {
        let mut opts = settings.options(plan);
        opts.previous_agents = std::mem::take(&mut self.agents);
        match self.listen {
            Some(addr) => opts.listen = addr,
            None => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                opts.on_listening = Some(tx);
                self.bound = Some(rx);
            }
        }
        opts
    }

    /// Takes note of how the run went.
    pub fn after(&mut self, outcome: &RunOutcome) {
        self.agents = outcome.agents();
        if let Some(mut rx) = self.bound.take()
            && let Ok(addr) = rx.try_recv()
        {
            self.listen = Some(addr);
        }
    }
}

/// How one run ended, as far as the caller needs to know.
#[derive(Debug)]
pub enum RunOutcome {
    /// The plan ran; its summary says how (`summary.status`). `written`
    /// says whether the run directory holds its outputs.
    Ran {
        summary: Box<Summary>,
        written: Result<RunFiles, Unsaved>,
    },
    /// The run directory could not be made or written, or its disk has too
    /// little room, so nothing was sent.
    NoRunDirectory { dir: PathBuf, error: String },
    /// The fleet could not run the plan (never attached, all lost, refused).
    NotRun(FleetError),
}

/// Outputs that could not be written where they were asked for.
#[derive(Debug)]
pub struct Unsaved {
    /// What went wrong with the run directory.
    pub error: String,
    /// Where they were written instead, if anywhere.
    pub fallback: Option<Box<RunFiles>>,
}

/// The least free space a run directory must have before load is sent:
/// the outputs of a short run are a few hundred KB; longer runs add to it
/// (see [`room_needed`]).
pub const MIN_FREE_BYTES: u64 = 8 << 20;

/// A generous estimate of a run's outputs: `latency.hlog` holds a few
/// hundred bytes per step per interval and region, the rest is smaller. A
/// step has a line only in the seconds it was requested, so a plan bounded
/// by iterations needs no more lines than it has requests, however long
/// its hard time limit.
pub fn room_needed(plan: &Plan) -> u64 {
    let secs = plan
        .scheduled_duration()
        .unwrap_or(plan.max_run())
        .as_secs()
        .max(1);
    let steps = plan.step_names.len().max(1) as u64;
    let mut cells = secs.saturating_mul(steps);
    if let Some(requests) = plan.requests_bound() {
        cells = cells.min(requests.max(1));
    }
    MIN_FREE_BYTES + cells.saturating_mul(4 << 10)
}

/// Before any load is sent: the run directory takes a file, and its disk
/// has room for the outputs.
fn preflight(dir: &Path, plan: &Plan) -> Result<(), String> {
    let probe = dir.join(".loadfleet-write-probe");
    crate::atomic::write(&probe, b"probe")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("cannot write to the run directory {}: {e}", dir.display()))?;
    let need = room_needed(plan);
    if let Ok(st) = rustix::fs::statvfs(dir) {
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < need {
            return Err(format!(
                "the run directory {} has {} free; this run's outputs need up to {} \
                 (free some space or give --out on another disk)",
                dir.display(),
                mib(free),
                mib(need)
            ));
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Writes the run directory; when that fails, writes the same files under
/// the system's temporary directory and says where.
fn keep(
    result: &crate::outcome::RunResult,
    summary: &Summary,
    out: &Path,
    plan_file: Option<&Path>,
) -> Result<RunFiles, Unsaved> {
    let write = |dir: &Path| -> std::io::Result<RunFiles> {
        let files = output::write_run_dir(result, summary, dir)?;
        if let Some(p) = plan_file {
            crate::atomic::write(dir.join("plan.toml"), std::fs::read(p)?)?;
        }
        Ok(files)
    };
    let error = match write(out) {
        Ok(files) => return Ok(files),
        Err(e) => format!("cannot write results to {}: {e}", out.display()),
    };
    let elsewhere = std::env::temp_dir().join(format!("loadfleet-{}", result.run_id));
    let fallback = match write(&elsewhere) {
        Ok(files) => {
            eprintln!(
                "error: {error}; the results were written to {} instead",
                elsewhere.display()
            );
            Some(Box::new(files))
        }
        Err(e) => {
            eprintln!(
                "error: {error}; writing them to {} failed too ({e}): they are lost",
                elsewhere.display()
            );
            None
        }
    };
    Err(Unsaved { error, fallback })
}

impl RunOutcome {
    /// The run's agents (name, region), when it ran: the next run of a
    /// series names those that do not come back.
    pub fn agents(&self) -> Vec<(String, String)> {
        self.summary()
            .map(|s| {
                s.agents
                    .iter()
                    .map(|(n, a)| (n.clone(), a.region.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The run's summary, when it ran.
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            RunOutcome::Ran { summary, .. } => Some(summary),
            _ => None,
        }
    }
}

/// Runs, prints the table, writes the run directory (default: under
/// `runs/`), appends to the audit log and says what happened.
pub async fn run_and_report(
    opts: RunOptions,
    out: Option<PathBuf>,
    plan_file: Option<&Path>,
) -> RunOutcome {
    let out =
        out.unwrap_or_else(|| plan::default_out_dir(&opts.plan, time::OffsetDateTime::now_utc()));
    for w in opts.plan.warnings() {
        eprintln!("WARNING: {w}");
    }
    // Fail before sending anything if the results could not be kept.
    if let Err(error) = std::fs::create_dir_all(&out)
        .map_err(|e| format!("cannot create run directory {}: {e}", out.display()))
        .and_then(|()| preflight(&out, &opts.plan))
    {
        eprintln!("error: {error}");
        return RunOutcome::NoRunDirectory { dir: out, error };
    }
    let audit_path = opts.audit_log.clone().unwrap_or_else(|| {
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("audit.jsonl")
    });
    let audit_plan =
        crate::audit::PlanFacts::of(&opts.plan, opts.token.is_some(), opts.tls.is_some())
            .by(opts.operator.as_deref());
    let began = time::OffsetDateTime::now_utc();
    let mut opts = opts;
    // A line as load starts, so a controller killed mid-run still leaves a
    // record that load was sent, by whom and at what.
    opts.on_start = Some(fleet::OnStart(Box::new({
        let (path, facts, dir) = (audit_path.clone(), audit_plan.clone(), out.clone());
        move |note: &StartNote| crate::audit::append_started(&path, &facts, &dir, note)
    })));
    opts.journal = Some(out.clone());
    let live = opts.live.clone();
    let outcome = fleet::execute(opts).await;
    if let Some((failed, Some(why))) = live.as_ref().map(|l| l.push_failures()) {
        eprintln!(
            "warning: {failed} Prometheus remote write(s) failed so far ({why}): those intervals are missing there, not here"
        );
    }
    match outcome {
        Ok(result) => {
            let summary = Summary::of(&result);
            say(output::table::render(&summary).trim_end());
            let written = keep(&result, &summary, &out, plan_file);
            // Read back into the outputs (or, with both attempts failed,
            // nowhere to keep it): the interval records' file is done.
            result.collector.remove_spill();
            if matches!(
                &written,
                Ok(_)
                    | Err(Unsaved {
                        fallback: Some(_),
                        ..
                    })
            ) {
                // The outputs are whole (here or in the fallback the
                // message names): the journal has done its work.
                crate::journal::remove(&out);
            }
            let unsaved = written.as_ref().err().map(|u| u.error.as_str());
            crate::audit::append(&audit_path, &audit_plan, began, &out, &Ok(&result), unsaved);
            if let Some(live) = &live {
                let report = match &written {
                    Ok(files) => Some(files.report.clone()),
                    Err(Unsaved {
                        fallback: Some(files),
                        ..
                    }) => Some(files.report.clone()),
                    Err(_) => None,
                };
                live.ended(&summary.status_word(), report);
            }
            match &written {
                Ok(files) => {
                    say(&format!(
                        "run directory: {}\n  summary: {}\n  histograms: {}\n  report: {}",
                        files.dir.display(),
                        files.summary.display(),
                        files.hlog.display(),
                        files.report.display()
                    ));
                    for gap in &summary.gaps {
                        eprintln!("warning: {gap}");
                    }
                }
                Err(Unsaved {
                    fallback: Some(files),
                    ..
                }) => say(&format!(
                    "results (not in the run directory): {}",
                    files.dir.display()
                )),
                Err(_) => {}
            }
            RunOutcome::Ran {
                summary: Box::new(summary),
                written,
            }
        }
        Err(e) => {
            crate::audit::append(&audit_path, &audit_plan, began, &out, &Err(&e), None);
            if let Some(live) = &live {
                live.ended(&format!("not run: {e}"), None);
            }
            eprintln!("error: {e}");
            // Nothing ran: leave no empty run directory behind.
            let _ = std::fs::remove_dir(&out);
            RunOutcome::NotRun(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(load: &str, steps: usize) -> Plan {
        let mut text = format!(
            "[target]\nbase_url = \"http://127.0.0.1:1\"\n[load]\n{load}\n[[scenario]]\nname = \"s\"\n"
        );
        for i in 0..steps {
            text.push_str(&format!(
                "[[scenario.step]]\nname = \"s{i}\"\npath = \"/\"\n"
            ));
        }
        crate::plan::parse("p.toml", &text, "p").unwrap()
    }

    #[test]
    fn room_for_a_long_plan_run_once_is_its_requests_not_its_time_limit() {
        // 1,000 steps, each with a 30 s timeout: the hard limit is 30,005 s,
        // but one user running once sends 1,000 requests.
        let once = room_needed(&plan("users = 1\niterations = 1", 1000));
        assert_eq!(once, MIN_FREE_BYTES + 1000 * 4096, "{once}");
        // The same plan for an hour may fill a line per step every second.
        let hour = room_needed(&plan("users = 1\nduration = \"1h\"", 1000));
        assert_eq!(hour, MIN_FREE_BYTES + 3600 * 1000 * 4096, "{hour}");
        // Many iterations: the time limit is the smaller bound.
        let many = room_needed(&plan("users = 100\niterations = 1000000", 2));
        assert!(many < MIN_FREE_BYTES + 100 * 1_000_000 * 2 * 4096, "{many}");
    }
}
