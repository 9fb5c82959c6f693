//! What a run's outputs need of every closed interval (the interval
//! histograms of `latency.hlog`, the rows of `requests.csv`), written to a
//! file in the run directory as intervals close instead of kept in memory,
//! so the controller's memory does not grow with the run's length. The
//! outputs read it back once, record by record. A write that fails (a full
//! disk) turns the file off with one warning; the records are then kept in
//! memory, so nothing is lost.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{LatencyMs, LoggedInterval, StepIntervalRow};

/// The spill file's name in the run directory (removed once the outputs
/// are written).
pub const SPILL_FILE: &str = ".intervals.part";

const LOGGED: u8 = 1;
const ROW: u8 = 2;
/// The largest record a reader accepts (an encoded histogram is a few KiB).
const MAX_RECORD: u32 = 16 << 20;

#[derive(Debug)]
pub struct Spill {
    path: PathBuf,
    /// Unbuffered: a record is on disk or with the caller, never in between.
    out: Option<File>,
    /// Bytes of whole records in the file.
    good: u64,
}

/// One record read back.
#[derive(Debug)]
pub enum Record {
    Logged(LoggedInterval),
    Row(StepIntervalRow),
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Spill {
    pub fn create(path: &Path) -> std::io::Result<Spill> {
        let file = File::create(path)?;
        Ok(Spill {
            path: path.to_path_buf(),
            out: Some(file),
            good: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records still go to the file.
    pub fn is_on(&self) -> bool {
        self.out.is_some()
    }

    /// Writes a batch of records (made with [`encode_logged`] and
    /// [`encode_row`]) in one write; false when the file is off or the
    /// write failed, and then none of the batch is in the file: the caller
    /// keeps it.
    pub fn write_batch(&mut self, bytes: &[u8]) -> bool {
        let Some(out) = self.out.as_mut() else {
            return false;
        };
        match out.write_all(bytes) {
            Ok(()) => {
                self.good += bytes.len() as u64;
                true
            }
            Err(e) => {
                // Whatever part of the batch got in is cut off again, so the
                // file holds whole records only.
                let cut = out.set_len(self.good);
                tracing::warn!(
                    "cannot write {} ({e}); interval records stay in memory for the rest of the run{}",
                    self.path.display(),
                    cut.err()
                        .map(|e| format!(" (and the file could not be cut back: {e})"))
                        .unwrap_or_default()
                );
                self.out = None;
                false
            }
        }
    }

    /// Reads every record back, in the order written, calling `f` on each.
    pub fn read(&self, mut f: impl FnMut(Record)) -> std::io::Result<()> {
        let mut r = BufReader::new(File::open(&self.path)?.take(self.good));
        let mut kind = [0u8; 1];
        loop {
            match r.read_exact(&mut kind) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let u64_ = |r: &mut BufReader<std::io::Take<File>>| -> std::io::Result<u64> {
                let mut x = [0u8; 8];
                r.read_exact(&mut x)?;
                Ok(u64::from_le_bytes(x))
            };
            let u32_ = |r: &mut BufReader<std::io::Take<File>>| -> std::io::Result<u32> {
                let mut x = [0u8; 4];
                r.read_exact(&mut x)?;
                Ok(u32::from_le_bytes(x))
            };
            match kind[0] {
                LOGGED => {
                    let start = Duration::from_nanos(u64_(&mut r)?);
                    let length = Duration::from_nanos(u64_(&mut r)?);
                    let step = u32_(&mut r)?;
                    let len = u32_(&mut r)?;
                    if len > MAX_RECORD {
                        return Err(bad("a record longer than 16 MiB"));
                    }
                    let mut bytes = vec![0u8; len as usize];
                    r.read_exact(&mut bytes)?;
                    f(Record::Logged(LoggedInterval {
                        start,
                        length,
                        step: (step != u32::MAX).then_some(step as usize),
                        bytes,
                    }));
                }
                ROW => {
                    let step = u32_(&mut r)? as usize;
                    let start_s = f64::from_bits(u64_(&mut r)?);
                    let length_s = f64::from_bits(u64_(&mut r)?);
                    let requests = u64_(&mut r)?;
                    let errors = u64_(&mut r)?;
                    r.read_exact(&mut kind)?;
                    let latency_ms = if kind[0] == 1 {
                        let mut v = [0f64; 8];
                        for x in &mut v {
                            *x = f64::from_bits(u64_(&mut r)?);
                        }
                        Some(LatencyMs {
                            min: v[0],
                            mean: v[1],
                            p50: v[2],
                            p90: v[3],
                            p95: v[4],
                            p99: v[5],
                            p99_9: v[6],
                            max: v[7],
                        })
                    } else {
                        None
                    };
                    f(Record::Row(StepIntervalRow {
                        step,
                        start_s,
                        length_s,
                        requests,
                        errors,
                        latency_ms,
                    }));
                }
                _ => return Err(bad("an unknown record")),
            }
        }
    }

    /// Removes the file.
    pub fn remove(&mut self) {
        self.out = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Appends an interval histogram's record to `b`.
pub fn encode_logged(li: &LoggedInterval, b: &mut Vec<u8>) {
    b.push(LOGGED);
    b.extend_from_slice(&(li.start.as_nanos() as u64).to_le_bytes());
    b.extend_from_slice(&(li.length.as_nanos() as u64).to_le_bytes());
    b.extend_from_slice(&li.step.map_or(u32::MAX, |s| s as u32).to_le_bytes());
    b.extend_from_slice(&(li.bytes.len() as u32).to_le_bytes());
    b.extend_from_slice(&li.bytes);
}

/// Appends a step's row's record to `b`.
pub fn encode_row(r: &StepIntervalRow, b: &mut Vec<u8>) {
    b.push(ROW);
    b.extend_from_slice(&(r.step as u32).to_le_bytes());
    for v in [r.start_s, r.length_s] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&r.requests.to_le_bytes());
    b.extend_from_slice(&r.errors.to_le_bytes());
    match &r.latency_ms {
        None => b.push(0),
        Some(l) => {
            b.push(1);
            for v in [l.min, l.mean, l.p50, l.p90, l.p95, l.p99, l.p99_9, l.max] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk: the write fails, the file turns off, and nothing of
    /// the batch counts as written (the caller keeps it).
    #[test]
    fn a_failed_write_leaves_the_batch_with_the_caller() {
        let mut s = Spill {
            path: "/dev/full".into(),
            out: Some(File::options().write(true).open("/dev/full").unwrap()),
            good: 0,
        };
        let mut batch = Vec::new();
        encode_row(
            &StepIntervalRow {
                step: 0,
                start_s: 0.0,
                length_s: 1.0,
                requests: 1,
                errors: 0,
                latency_ms: None,
            },
            &mut batch,
        );
        assert!(!s.write_batch(&batch));
        assert!(!s.is_on() && !s.write_batch(&batch));
        let mut n = 0;
        s.read(|_| n += 1).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn records_come_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::create(&dir.path().join(SPILL_FILE)).unwrap();
        let li = LoggedInterval {
            start: Duration::from_millis(1500),
            length: Duration::from_millis(999),
            step: Some(3),
            bytes: vec![1, 2, 3, 250],
        };
        let all = LoggedInterval {
            step: None,
            ..li.clone()
        };
        let row = StepIntervalRow {
            step: 3,
            start_s: 1.5,
            length_s: 0.999,
            requests: 42,
            errors: 1,
            latency_ms: Some(LatencyMs {
                min: 0.1,
                mean: 0.5,
                p50: 0.4,
                p90: 0.9,
                p95: 1.0,
                p99: 2.0,
                p99_9: 3.0,
                max: 4.0,
            }),
        };
        let empty = StepIntervalRow {
            latency_ms: None,
            ..row.clone()
        };
        let mut batch = Vec::new();
        encode_logged(&li, &mut batch);
        encode_logged(&all, &mut batch);
        encode_row(&row, &mut batch);
        encode_row(&empty, &mut batch);
        assert!(s.write_batch(&batch));
        let mut back = Vec::new();
        s.read(|r| back.push(r)).unwrap();
        assert_eq!(back.len(), 4);
        match (&back[0], &back[1], &back[2], &back[3]) {
            (Record::Logged(a), Record::Logged(b), Record::Row(c), Record::Row(d)) => {
                assert_eq!(
                    (a.start, a.length, a.step, &a.bytes),
                    (li.start, li.length, Some(3), &li.bytes)
                );
                assert_eq!(b.step, None);
                assert_eq!(
                    (c.requests, c.errors, c.latency_ms),
                    (42, 1, row.latency_ms)
                );
                assert_eq!(d.latency_ms, None);
            }
            other => panic!("{other:?}"),
        }
        s.remove();
        assert!(!dir.path().join(SPILL_FILE).exists());
    }
}
