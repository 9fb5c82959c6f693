//! The audit log: JSON lines appended to a file that outlives run
//! directories, saying who ran what against which target, when, and how it
//! ended. A load test is traffic aimed at somebody's server; this is the
//! record of who aimed it. A run writes a `started` line as load begins and
//! its final line at the end (same `run_id`), so a controller killed
//! mid-run still leaves a record; a run that never started writes one
//! line.

use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::outcome::{FleetError, RunResult};
use crate::plan::Plan;

/// What the audit line says about the plan, taken before the run.
#[derive(Debug, Clone, Serialize)]
pub struct PlanFacts {
    pub plan: String,
    pub plan_sha256: String,
    pub target: String,
    pub load: String,
    /// How agents had to prove who they are: `mtls`, `token` or `none`.
    pub agent_auth: &'static str,
    /// Who ran it: `--operator`, else the OS user.
    pub operator: String,
    /// The OS user this controller runs as, from its uid (not `$USER`,
    /// which any process can set or unset).
    pub os_user: String,
}

impl PlanFacts {
    pub fn of(plan: &Plan, token: bool, mtls: bool) -> PlanFacts {
        PlanFacts {
            plan: plan.name.clone(),
            plan_sha256: plan.sha256.clone(),
            target: plan.target.base_url.clone(),
            load: plan.load.describe(),
            agent_auth: crate::auth::Mode::of(token, mtls).as_str(),
            operator: os_user(),
            os_user: os_user(),
        }
    }

    /// With the operator given by `--operator`, if any.
    pub fn by(mut self, operator: Option<&str>) -> PlanFacts {
        if let Some(o) = operator.map(str::trim).filter(|o| !o.is_empty()) {
            self.operator = o.to_string();
        }
        self
    }
}

#[derive(Serialize)]
struct Line<'a> {
    schema: &'static str,
    #[serde(flatten)]
    plan: &'a PlanFacts,
    run_id: Option<&'a str>,
    started_at: String,
    /// `null` on a run's `started` line.
    ended_at: Option<String>,
    run_dir: String,
    status: String,
    error: Option<String>,
    requests: Option<u64>,
    agents: Vec<AgentLine<'a>>,
}

#[derive(Serialize)]
struct AgentLine<'a> {
    name: &'a str,
    region: &'a str,
    address: &'a str,
    identity: &'a str,
    /// What it will load: its `--allow-target` list, `any` or `not reported`.
    targets: &'a str,
    /// `running` on a `started` line; `finished`, `lost`, `failed` or
    /// `unknown` at the end; for a run that did not start, `refused` or
    /// `left` (the agent that stopped it) or `attached`.
    end: &'static str,
}

impl<'a> AgentLine<'a> {
    fn of(a: &'a crate::outcome::AgentFacts, end: &'static str) -> AgentLine<'a> {
        AgentLine {
            name: &a.name,
            region: &a.region,
            address: &a.address,
            identity: &a.identity,
            targets: &a.targets,
            end,
        }
    }
}

/// The OS user of this process: the name of its uid in /etc/passwd, else
/// `uid N`.
fn os_user() -> String {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective uid.
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Appends the run's line; a failure to write is reported, never fatal.
/// `unsaved` says why the run's outputs are not in its run directory.
pub fn append(
    path: &Path,
    plan: &PlanFacts,
    began: time::OffsetDateTime,
    run_dir: &Path,
    outcome: &Result<&RunResult, &FleetError>,
    unsaved: Option<&str>,
) {
    let line = match outcome {
        Ok(r) => Line {
            schema: "loadfleet.audit/1",
            plan,
            run_id: Some(&r.run_id),
            started_at: rfc3339(r.started_at),
            ended_at: Some(rfc3339(time::OffsetDateTime::now_utc())),
            run_dir: run_dir.display().to_string(),
            status: serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            error: unsaved.map(|e| format!("results not saved in the run directory: {e}")),
            requests: Some(r.collector.total.requests()),
            agents: r
                .agents
                .iter()
                .map(|a| AgentLine {
                    name: &a.name,
                    region: &a.region,
                    address: &a.peer,
                    identity: &a.identity,
                    targets: &a.targets,
                    end: match a.end {
                        crate::outcome::AgentEnd::Finished => "finished",
                        crate::outcome::AgentEnd::Lost => "lost",
                        crate::outcome::AgentEnd::Failed => "failed",
                        crate::outcome::AgentEnd::Unknown => "unknown",
                    },
                })
                .collect(),
        },
        Err(e) => Line {
            schema: "loadfleet.audit/1",
            plan,
            run_id: None,
            started_at: rfc3339(began),
            ended_at: Some(rfc3339(time::OffsetDateTime::now_utc())),
            run_dir: run_dir.display().to_string(),
            status: "not_run".into(),
            error: Some(e.to_string()),
            requests: None,
            agents: e
                .attached()
                .iter()
                .map(|a| {
                    let end = match e.stopped_by() {
                        Some((name, how)) if name == a.name => how,
                        _ => "attached",
                    };
                    AgentLine::of(a, end)
                })
                .collect(),
        },
    };
    write_line(path, &line);
}

/// The `started` line: load is about to be sent.
pub fn append_started(
    path: &Path,
    plan: &PlanFacts,
    run_dir: &Path,
    note: &crate::outcome::StartNote,
) {
    let line = Line {
        schema: "loadfleet.audit/1",
        plan,
        run_id: Some(&note.run_id),
        started_at: rfc3339(note.started_at),
        ended_at: None,
        run_dir: run_dir.display().to_string(),
        status: "started".into(),
        error: None,
        requests: None,
        agents: note
            .agents
            .iter()
            .map(|a| AgentLine::of(a, "running"))
            .collect(),
    };
    write_line(path, &line);
}

/// Appends one line; a failure to write is reported, never fatal.
fn write_line(path: &Path, line: &Line<'_>) {
    let text = match serde_json::to_string(line) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warning: cannot write the audit line: {e}");
            return;
        }
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        // One write per line (O_APPEND keeps concurrent writers' lines
        // whole), flushed to disk: the record must outlive a crash.
        .and_then(|mut f| {
            f.write_all(format!("{text}\n").as_bytes())?;
            f.sync_data()
        });
    if let Err(e) = written {
        eprintln!(
            "warning: cannot append to the audit log {}: {e}",
            path.display()
        );
    }
}
