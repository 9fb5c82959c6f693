//! Phases: a plan's `[[phase]]` loads run one after another (a warm-up that
//! logs every user in once, then the measured test), each as a run of its
//! own with its own run directory, so one phase's figures never mix with
//! another's. A phase directory holds one run directory per phase and
//! `phases.json`, `phases.txt` and `phases.html` listing them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::console::say;
use crate::exit::Exit;
use crate::plan::{self, Plan};
use crate::runner::{RunOutcome, RunSettings, run_and_report};

/// One phase of the run, as it went.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseRow {
    pub phase: String,
    /// Its run directory, under the phase directory; empty for a phase
    /// that did not run.
    pub run: String,
    /// `ran`, or why it did not (`not run: …`).
    pub state: String,
    #[serde(rename = "exit_code")]
    pub exit: Exit,
    pub users: Option<u64>,
    pub requests: u64,
    pub rps: f64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// `phases.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Phases {
    pub name: String,
    pub phases: Vec<PhaseRow>,
    /// The phase directory.
    #[serde(skip)]
    pub dir: PathBuf,
    /// The outcome of the phase asked for (a sweep's measured phase).
    #[serde(skip)]
    pub measured: Option<std::sync::Arc<RunOutcome>>,
}

/// Why the phases' table was not kept.
#[derive(Debug, thiserror::Error)]
pub enum PhasesError {
    /// Nothing was sent.
    #[error("cannot create the phase directory {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The phases ran (each has its run directory) but the table or page
    /// could not be written.
    #[error("cannot write the phases' table: {error}")]
    Write { phases: Box<Phases>, error: String },
}

impl Phases {
    /// The worst of the phases; a phase that did not run makes it at
    /// least 1: the plan asked for it.
    pub fn exit(&self) -> Exit {
        self.phases.iter().map(|p| p.exit).max().unwrap_or(Exit::Ok)
    }
}

impl PhasesError {
    pub fn exit(&self) -> Exit {
        match self {
            PhasesError::CreateDir { .. } => Exit::Usage,
            PhasesError::Write { phases, .. } => phases.exit().max(Exit::Fleet),
        }
    }
}

/// A directory name for a phase: its number and its name, kept to
/// letters, digits and `-`.
pub fn dir_name(i: usize, name: &str) -> String {
    let mut slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    let slug = slug.trim_matches('-');
    format!(
        "phase-{}-{}",
        i + 1,
        if slug.is_empty() { "run" } else { slug }
    )
}

/// Runs every phase of `plan` in order into one directory (default:
/// `runs/<stamp>-<plan>-phases/`). A phase whose fleet failed stops the
/// phases after it, as does an interrupt; those are listed as not run.
pub async fn run_phases(
    settings: &RunSettings,
    plan: &Plan,
    out: Option<PathBuf>,
    plan_file: &Path,
    measured: Option<usize>,
) -> Result<Phases, PhasesError> {
    let dir = out.unwrap_or_else(|| {
        let mut d = plan::default_out_dir(plan, time::OffsetDateTime::now_utc()).into_os_string();
        d.push("-phases");
        PathBuf::from(d)
    });
    if let Err(source) = std::fs::create_dir_all(&dir) {
        return Err(PhasesError::CreateDir { dir, source });
    }
    if let Ok(text) = std::fs::read(plan_file) {
        let _ = crate::atomic::write(dir.join("plan.toml"), text);
    }
    let mut phases = Phases {
        name: plan.name.clone(),
        phases: Vec::new(),
        dir,
        measured: None,
    };
    let total = plan.phases.len();
    let mut successive = crate::runner::Successive::default();
    let mut stop: Option<String> = None;
    for (i, ph) in plan.phases.iter().enumerate() {
        let Some(phase_plan) = plan.phase(i) else {
            break;
        };
        let users = Some(phase_plan.load.peak_users());
        if stop.is_none() && settings.interrupt.is_cancelled() {
            stop = Some("not run: interrupted".into());
        }
        if let Some(why) = &stop {
            phases.phases.push(PhaseRow {
                phase: ph.name.clone(),
                run: String::new(),
                state: why.clone(),
                exit: Exit::Errors,
                users,
                requests: 0,
                rps: 0.0,
                errors: 0,
                p50_ms: None,
                p95_ms: None,
                p99_ms: None,
            });
            continue;
        }
        let run = dir_name(i, &ph.name);
        eprintln!(
            "{}: phase {} of {total}: {} ({})",
            plan.name,
            i + 1,
            ph.name,
            phase_plan.load.describe()
        );
        let mut opts = successive.options(settings, phase_plan);
        opts.label = Some(format!("phase {} of {total}: {}", i + 1, ph.name));
        let outcome = run_and_report(opts, Some(phases.dir.join(&run)), None).await;
        successive.after(&outcome);
        let s = outcome.summary();
        let lat = s.and_then(|s| s.total.latency_ms);
        phases.phases.push(PhaseRow {
            phase: ph.name.clone(),
            run: run.clone(),
            state: "ran".into(),
            exit: Exit::of_run(&outcome),
            users,
            requests: s.map_or(0, |s| s.total.requests),
            rps: s.map_or(0.0, |s| s.total.rps),
            errors: s.map_or(0, |s| s.total.errors),
            p50_ms: lat.map(|l| l.p50),
            p95_ms: lat.map(|l| l.p95),
            p99_ms: lat.map(|l| l.p99),
        });
        if s.is_none() {
            stop = Some(format!(
                "not run: phase {} ({}) did not run either",
                i + 1,
                ph.name
            ));
        } else if matches!(outcome, RunOutcome::Ran { .. }) && settings.interrupt.is_cancelled() {
            stop = Some("not run: interrupted".into());
        }
        if measured == Some(i) {
            phases.measured = Some(std::sync::Arc::new(outcome));
        }
    }
    let json = serde_json::to_string_pretty(&phases).unwrap_or_default();
    let written = crate::atomic::write(phases.dir.join("phases.json"), json + "\n")
        .and_then(|()| crate::atomic::write(phases.dir.join("phases.txt"), render(&phases) + "\n"))
        .and_then(|()| crate::atomic::write(phases.dir.join("phases.html"), html(&phases)))
        .and_then(|()| {
            crate::output::index::write(
                &phases.dir,
                &format!("loadfleet phases: {}", phases.name),
                "phases.html",
            )
        })
        .map_err(|e| e.to_string());
    match written {
        Ok(()) => Ok(phases),
        Err(error) => Err(PhasesError::Write {
            phases: Box::new(phases),
            error,
        }),
    }
}

/// The phases' table: one row per phase, in order.
pub fn render(p: &Phases) -> String {
    let mut t = crate::console::new_table();
    t.set_header([
        "phase", "users", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "exit",
        "run",
    ]);
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for r in &p.phases {
        t.add_row([
            r.phase.clone(),
            r.users.map_or_else(|| "-".into(), |u| u.to_string()),
            r.requests.to_string(),
            r.errors.to_string(),
            format!("{:.1}", r.rps),
            ms(r.p50_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
            r.exit.code().to_string(),
            if r.run.is_empty() {
                r.state.clone()
            } else {
                r.run.clone()
            },
        ]);
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "{}: {} phases, one run each (each phase's figures are its own)\n{t}",
        p.name,
        p.phases.len()
    );
    let missed: Vec<&str> = p
        .phases
        .iter()
        .filter(|r| r.run.is_empty())
        .map(|r| r.phase.as_str())
        .collect();
    if !missed.is_empty() {
        let _ = write!(
            out,
            "\nNOT RUN: {} of the plan's phases: {}",
            missed.len(),
            missed.join(", ")
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `phases.html`: the table, each phase linking its own report.
fn html(p: &Phases) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    let mut rows = String::new();
    for r in &p.phases {
        let phase = if r.run.is_empty() {
            format!("{} <strong>({})</strong>", esc(&r.phase), esc(&r.state))
        } else {
            format!(
                "<a href=\"{}/report.html\">{}</a>",
                esc(&r.run),
                esc(&r.phase)
            )
        };
        let _ = writeln!(
            rows,
            "<tr><td>{phase}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.users.map_or_else(|| "-".into(), |u| u.to_string()),
            r.requests,
            r.errors,
            r.rps,
            ms(r.p50_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
            r.exit.code()
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{name}: phases</title>\n\
         <style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child{{text-align:left}}</style>\n\
         </head><body>\n<h1>{name}: {n} phases</h1>\n\
         <p>The phases ran one after another, each a run of its own: each phase's figures are its own (a warm-up's never mix with the test's). Each name opens that phase's report.</p>\n\
         <table><thead><tr><th>phase</th><th>users</th><th>requests</th><th>errors</th><th>req/s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>exit</th></tr></thead><tbody>\n{rows}</tbody></table>\n</body></html>\n",
        name = esc(&p.name),
        n = p.phases.len(),
    )
}

/// Prints the phases' table and where it is, or why it was not kept.
pub fn say_outcome(outcome: &Result<Phases, PhasesError>) {
    match outcome {
        Ok(p) => {
            say(&render(p));
            say(&format!(
                "phase directory: {} (phases.html links each phase's report)",
                p.dir.display()
            ));
        }
        Err(e @ PhasesError::CreateDir { .. }) => eprintln!("error: {e}"),
        Err(e @ PhasesError::Write { phases, .. }) => {
            say(&render(phases));
            eprintln!("error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_directories_are_numbered_and_plain() {
        assert_eq!(dir_name(0, "Warm-up site"), "phase-1-warm-up-site");
        assert_eq!(dir_name(1, "Moodle Test"), "phase-2-moodle-test");
        assert_eq!(dir_name(2, "§§"), "phase-3-run");
    }
}
