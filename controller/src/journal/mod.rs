//! The run's journal: what a run measured, on disk as it is measured, so a
//! controller killed mid-run (SIGKILL, a crash, power loss) loses at most
//! the last second. `journal.json` holds what the summary needs of the plan
//! and the fleet, written when load starts; `journal.bin` gets every agent
//! report the controller applies, appended and flushed to disk at most once
//! a second. After a normal end the outputs are complete and the journal is
//! removed. Otherwise `loadfleet report RUN_DIR` replays it through the
//! same merge as a live run and writes the outputs with status
//! `incomplete`, saying what is missing.
//!
//! `journal.bin` records: a little-endian `u32` length of the rest, a kind
//! byte (1: an agent's interval report, 2: its Done), the agent's name and
//! region (each a `u16` length and UTF-8), then the protobuf message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loadfleet_proto::v1;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::facts::RunFacts;

mod replay;

/// Names the layout of `journal.json` and `journal.bin`.
pub const SCHEMA: &str = "loadfleet.journal/1";
pub(crate) const HEADER: &str = "journal.json";
pub(crate) const RECORDS: &str = "journal.bin";
pub(crate) const INTERVAL_REPORT: u8 = 1;
pub(crate) const DONE: u8 = 2;
/// How often the records are flushed to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// What a summary needs besides the reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub schema: String,
    pub run_id: String,
    /// RFC 3339.
    pub started_at: String,
    pub facts: RunFacts,
    pub step_names: Vec<String>,
    /// By step: whether it is a group (older journals have none).
    #[serde(default)]
    pub groups: Vec<bool>,
    /// The metrics read from responses (older journals lack them).
    #[serde(default)]
    pub metrics: Vec<crate::stats::MetricSpec>,
    pub interval_s: f64,
    pub seed: u64,
    pub agents: Vec<JournalAgent>,
    /// The schedule's length, when it has one.
    pub scheduled_s: Option<f64>,
}

/// An agent of the run, as it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalAgent {
    pub name: String,
    pub region: String,
    pub address: String,
    pub identity: String,
    /// What it will load, as it said (older journals lack it).
    #[serde(default)]
    pub targets: String,
    /// Its open-model timing, as it said (older journals lack it).
    #[serde(default)]
    pub timing: String,
    pub users: usize,
    pub load_share: f64,
}

/// Appends records to `journal.bin`, flushing at most once a second. A
/// write error (a full disk) turns it off with one warning: the run goes
/// on, its outputs are still written at the end.
#[derive(Debug)]
pub struct Writer {
    file: Option<std::fs::File>,
    path: PathBuf,
    pending: Vec<u8>,
    last_sync: Instant,
}

impl Writer {
    /// Writes the header and opens the records file in `dir`.
    pub fn start(dir: &Path, header: &Header) -> Writer {
        let path = dir.join(RECORDS);
        let opened = serde_json::to_vec_pretty(header)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::atomic::write(dir.join(HEADER), json))
            .and_then(|()| std::fs::File::create(&path));
        let file = match opened {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(
                    "cannot keep the run's journal in {}: {e}; the results are written at the end only",
                    dir.display()
                );
                None
            }
        };
        Writer {
            file,
            path,
            pending: Vec::new(),
            last_sync: Instant::now(),
        }
    }

    /// An interval report the controller applied.
    pub fn interval(&mut self, agent: &str, region: &str, iv: &v1::Interval) {
        self.record(INTERVAL_REPORT, agent, region, iv);
    }

    /// An agent's Done.
    pub fn done(&mut self, agent: &str, region: &str, done: &v1::Done) {
        self.record(DONE, agent, region, done);
    }

    fn record(&mut self, kind: u8, agent: &str, region: &str, msg: &impl Message) {
        if self.file.is_none() {
            return;
        }
        let (a, r) = (short(agent), short(region));
        let len = 1 + 2 + a.len() + 2 + r.len() + msg.encoded_len();
        self.pending.reserve(4 + len);
        self.pending
            .extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        self.pending.push(kind);
        for s in [a, r] {
            self.pending
                .extend_from_slice(&(s.len() as u16).to_le_bytes());
            self.pending.extend_from_slice(s);
        }
        let _ = msg.encode(&mut self.pending);
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.flush();
        }
    }

    /// Writes what is pending and flushes it to disk.
    pub fn flush(&mut self) {
        self.last_sync = Instant::now();
        let Some(f) = &mut self.file else { return };
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = f.write_all(&self.pending).and_then(|()| f.sync_data()) {
            tracing::warn!(
                "cannot append to the run's journal {}: {e}; from here on the results are written at the end only",
                self.path.display()
            );
            self.file = None;
        }
        self.pending.clear();
    }
}

/// Removes a finished run's journal (its outputs are complete).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(RECORDS));
    let _ = std::fs::remove_file(dir.join(HEADER));
    // A controller that died mid-run left its interval records' file too.
    let _ = std::fs::remove_file(dir.join(crate::stats::spill::SPILL_FILE));
}

/// Whether `dir` holds a journal.
pub fn exists(dir: &Path) -> bool {
    dir.join(HEADER).is_file()
}

/// At most `u16::MAX` bytes of `s` (names are at most 128).
fn short(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(u16::MAX as usize)]
}

pub use replay::{ReplayError, Replayed, replay};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RunStatus;

    #[test]
    fn a_torn_tail_is_skipped_and_whole_records_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let header = Header {
            schema: SCHEMA.into(),
            run_id: "r".into(),
            started_at: "2026-12-01T10:00:00Z".into(),
            facts: RunFacts {
                name: "p".into(),
                target: "http://127.0.0.1:1".into(),
                load: serde_json::from_value(serde_json::json!({
                    "model": "closed", "description": "1 user", "duration_s": null
                }))
                .unwrap(),
                open_model: false,
                iterations_planned: None,
                warnings: Vec::new(),
                scenarios: Vec::new(),
                ranges_ms: (800.0, 1200.0),
            },
            step_names: vec!["a".into()],
            groups: Vec::new(),
            metrics: Vec::new(),
            interval_s: 1.0,
            seed: 7,
            agents: Vec::new(),
            scheduled_s: None,
        };
        let mut w = Writer::start(dir.path(), &header);
        for seq in 0..3 {
            w.interval(
                "agent-1",
                "eu",
                &v1::Interval {
                    run_id: "r".into(),
                    seq,
                    elapsed_us: (seq + 1) * 1_000_000,
                    ..Default::default()
                },
            );
        }
        w.flush();
        // A record cut in the middle, as a crash mid-write leaves it.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(RECORDS))
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        let r = replay(dir.path()).unwrap();
        assert_eq!(r.result.collector.elapsed, Duration::from_secs(3));
        assert_eq!(r.result.status, RunStatus::Incomplete);
        assert_eq!(r.result.seed, 7);
        assert!(
            r.missing.iter().any(|m| m.contains("cut short")),
            "{:?}",
            r.missing
        );
    }
}
