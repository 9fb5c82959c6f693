//! One plan, run and kept: the settings every run shares, and
//! [`run_and_report`], which runs a plan, prints its table, writes its run
//! directory and returns a typed [`RunOutcome`] (the command line maps it
//! to an exit code; sweeps and capacity searches read its summary).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::console::say;
use crate::fleet::{self, FleetError, LocalAgent, RunOptions};
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
    pub local_agents: Vec<LocalAgent>,
    pub wait_for_agents: Duration,
    pub progress: ProgressMode,
    pub interrupt: CancellationToken,
    pub hard_interrupt: CancellationToken,
    pub audit_log: Option<PathBuf>,
}

impl RunSettings {
    /// Options to run `plan` with these settings.
    pub fn options(&self, plan: Plan) -> RunOptions {
        RunOptions {
            plan,
            listen: self.listen,
            expect_agents: self.expect_agents,
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
        written: Result<RunFiles, String>,
    },
    /// The run directory could not be made, so nothing was sent.
    NoRunDirectory { dir: PathBuf, error: String },
    /// The fleet could not run the plan (never attached, all lost, refused).
    NotRun(FleetError),
}

impl RunOutcome {
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
    // Fail before sending anything if the results could not be kept.
    if let Err(e) = std::fs::create_dir_all(&out) {
        let error = format!("cannot create run directory {}: {e}", out.display());
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
        crate::audit::PlanFacts::of(&opts.plan, opts.token.is_some(), opts.tls.is_some());
    let began = time::OffsetDateTime::now_utc();
    let outcome = fleet::execute(opts).await;
    crate::audit::append(&audit_path, &audit_plan, began, &out, &outcome);
    match outcome {
        Ok(result) => {
            let summary = Summary::of(&result);
            say(output::table::render(&summary).trim_end());
            if let Some(p) = plan_file {
                let _ = std::fs::copy(p, out.join("plan.toml"));
            }
            let written = match output::write_run_dir(&result, &summary, &out) {
                Ok(files) => {
                    say(&format!(
                        "run directory: {}\n  summary: {}\n  histograms: {}\n  report: {}",
                        files.dir.display(),
                        files.summary.display(),
                        files.hlog.display(),
                        files.report.display()
                    ));
                    Ok(files)
                }
                Err(e) => {
                    let error = format!("cannot write results to {}: {e}", out.display());
                    eprintln!("error: {error}");
                    Err(error)
                }
            };
            if written.is_ok() {
                for a in result
                    .agents
                    .iter()
                    .filter(|a| a.end != fleet::AgentEnd::Finished)
                {
                    eprintln!(
                        "warning: agent {} ({}) did not finish: {:?} {}",
                        a.name, a.region, a.end, a.note
                    );
                }
            }
            RunOutcome::Ran {
                summary: Box::new(summary),
                written,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            // Nothing ran: leave no empty run directory behind.
            let _ = std::fs::remove_dir(&out);
            RunOutcome::NotRun(e)
        }
    }
}
