//! Replaying a journal: the run as far as it was measured, through the
//! same merge as a live run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use loadfleet_proto::v1;
use prost::Message;

use super::{DONE, HEADER, Header, INTERVAL_REPORT, RECORDS, SCHEMA};
use crate::outcome::{AgentEnd, AgentReport, RunResult, RunStatus};
use crate::stats::Collector;

/// Why a journal could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a loadfleet journal: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// A replayed journal: the run as far as it was measured, and what is
/// missing from it.
#[derive(Debug)]
pub struct Replayed {
    pub result: RunResult,
    pub missing: Vec<String>,
}

/// Replays `dir`'s journal through a fresh collector.
pub fn replay(dir: &Path) -> Result<Replayed, ReplayError> {
    let header_path = dir.join(HEADER);
    let text = std::fs::read_to_string(&header_path).map_err(|source| ReplayError::Read {
        path: header_path.clone(),
        source,
    })?;
    let header: Header = serde_json::from_str(&text).map_err(|e| ReplayError::Invalid {
        path: header_path.clone(),
        reason: e.to_string(),
    })?;
    if header.schema != SCHEMA {
        return Err(ReplayError::Invalid {
            path: header_path,
            reason: format!("schema {:?}, expected {SCHEMA:?}", header.schema),
        });
    }
    let records_path = dir.join(RECORDS);
    let mut bytes = Vec::new();
    if let Err(source) =
        std::fs::File::open(&records_path).and_then(|mut f| f.read_to_end(&mut bytes))
    {
        return Err(ReplayError::Read {
            path: records_path,
            source,
        });
    }
    let interval = Duration::from_secs_f64(header.interval_s.max(0.001));
    let mut collector = Collector::new(header.step_names.clone(), interval)
        .with_metrics(header.metrics.clone())
        .with_groups(&header.groups);
    let mut done: Vec<String> = Vec::new();
    // Each agent's newest interval in the journal.
    let mut reported: std::collections::BTreeMap<String, u64> = Default::default();
    let mut missing = Vec::new();
    let mut at = 0usize;
    let mut torn = false;
    while at < bytes.len() {
        let Some(record) = next_record(&bytes, &mut at) else {
            torn = true;
            break;
        };
        match record.kind {
            INTERVAL_REPORT => match v1::Interval::decode(record.body) {
                Ok(iv) => {
                    let newest = reported.entry(record.agent.to_string()).or_default();
                    *newest = (*newest).max(iv.seq + 1);
                    if let Err(e) = collector.apply(record.agent, record.region, &iv) {
                        collector.dropped_reports += 1;
                        tracing::warn!("a journaled report of {} was refused: {e}", record.agent);
                    }
                }
                Err(_) => torn = true,
            },
            DONE => match v1::Done::decode(record.body) {
                Ok(d) => {
                    if let Some(t) = &d.totals {
                        let _ = collector.apply_totals(record.agent, t);
                    }
                    done.push(record.agent.to_string());
                }
                Err(_) => torn = true,
            },
            _ => torn = true,
        }
    }
    collector.close_all();
    let measured = collector.elapsed;
    match header.scheduled_s {
        Some(s) => missing.push(format!(
            "the controller stopped after {:.1} s of a {s:.1} s schedule: nothing after that was measured",
            measured.as_secs_f64()
        )),
        None => missing.push(format!(
            "the controller stopped after {:.1} s: nothing after that was measured",
            measured.as_secs_f64()
        )),
    }
    missing.push(
        "reports the controller had not flushed to disk yet (at most its last second) are not in it"
            .into(),
    );
    if torn {
        missing.push("the journal's last record was cut short and was skipped".into());
    }
    missing.push("thresholds were not evaluated".into());
    let agents = header
        .agents
        .iter()
        .map(|a| {
            let finished = done.contains(&a.name);
            AgentReport {
                name: a.name.clone(),
                region: a.region.clone(),
                peer: a.address.clone(),
                identity: a.identity.clone(),
                targets: a.targets.clone(),
                timing: a.timing.clone(),
                users: a.users,
                end: if finished {
                    AgentEnd::Finished
                } else {
                    AgentEnd::Unknown
                },
                ended_at_s: None,
                note: if finished {
                    String::new()
                } else {
                    "how its part ended is unknown: the controller stopped first".into()
                },
                clock_rtt: None,
                clock_offset_us: None,
                abandoned: 0,
                returned: false,
                start_lateness: None,
                load_share: a.load_share,
                reported_until_s: reported
                    .get(&a.name)
                    .map(|&n| (n as f64 * interval.as_secs_f64()).min(measured.as_secs_f64())),
            }
        })
        .collect();
    let started_at = time::OffsetDateTime::parse(
        &header.started_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Ok(Replayed {
        result: RunResult {
            run_id: header.run_id,
            facts: header.facts,
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            started_at,
            duration: measured,
            collector,
            agents,
            status: RunStatus::Incomplete,
            thresholds: Vec::new(),
            aborted_by: None,
            cut_short: Vec::new(),
            seed: header.seed,
            // Observers' samples are not journaled: a rebuilt run has no
            // `hosts` section.
            hosts: Vec::new(),
            host_bounds: crate::hosts::Bounds::default(),
        },
        missing,
    })
}

struct Record<'a> {
    kind: u8,
    agent: &'a str,
    region: &'a str,
    body: &'a [u8],
}

/// The record at `*at`, or `None` for a torn or malformed tail.
fn next_record<'a>(bytes: &'a [u8], at: &mut usize) -> Option<Record<'a>> {
    let take = |at: &mut usize, n: usize| -> Option<&'a [u8]> {
        let s = bytes.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(s)
    };
    let len = u32::from_le_bytes(take(at, 4)?.try_into().ok()?) as usize;
    let record = take(at, len)?;
    let mut r = 0usize;
    let field = |r: &mut usize, n: usize| -> Option<&'a [u8]> {
        let s = record.get(*r..r.checked_add(n)?)?;
        *r += n;
        Some(s)
    };
    let kind = *field(&mut r, 1)?.first()?;
    let text = |r: &mut usize| -> Option<&'a str> {
        let n = u16::from_le_bytes(field(r, 2)?.try_into().ok()?) as usize;
        std::str::from_utf8(field(r, n)?).ok()
    };
    let agent = text(&mut r)?;
    let region = text(&mut r)?;
    Some(Record {
        kind,
        agent,
        region,
        body: record.get(r..)?,
    })
}
