//! Adds the workers' parts of each interval and serializes the histograms
//! into the wire's interval reports.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use loadfleet_proto::v1;
use tokio::sync::mpsc;

use super::WorkerPart;
use crate::assignment::Assignment;
use crate::recorder::StepRecord;

/// Adds the workers' parts of each interval and serializes the result.
pub(super) struct Aggregator {
    pub(super) assign: Arc<Assignment>,
    pub(super) out: mpsc::Sender<v1::Interval>,
    /// Per worker: highest seq received, and whether that one was its last.
    pub(super) progress: Vec<(Option<u64>, bool)>,
    /// Intervals still waiting for some worker, oldest first.
    pub(super) pending: std::collections::BTreeMap<u64, Pending>,
    pub(super) next_seq: u64,
    pub(super) serializer: crate::histogram_codec::WireEncoder,
    /// Every step of every interval sent so far, added together.
    pub(super) sent: StepRecord,
    /// Open model: the send lateness of every interval sent so far.
    pub(super) sent_lateness: Option<Histogram<u64>>,
    /// Where `sent` goes, serialized, once every interval is out.
    pub(super) totals: Arc<OnceLock<v1::Totals>>,
    /// The process's health, sampled as each interval goes out.
    pub(super) vitals: crate::vitals::Vitals,
    /// CPUs this process may use.
    pub(super) cores: u32,
}

pub(super) struct Pending {
    pub(super) steps: Vec<Option<StepRecord>>,
    pub(super) active: u32,
    pub(super) active_peak: u32,
    pub(super) active_mean: f64,
    pub(super) elapsed: Duration,
    pub(super) dropped: u64,
    pub(super) started: u64,
    pub(super) completed: u64,
    pub(super) lateness: Option<Histogram<u64>>,
    pub(super) lag_max_us: u64,
}

impl Aggregator {
    pub(super) fn new(
        assign: Arc<Assignment>,
        workers: usize,
        out: mpsc::Sender<v1::Interval>,
        totals: Arc<OnceLock<v1::Totals>>,
    ) -> Aggregator {
        Aggregator {
            sent: StepRecord::new(assign.has_open()),
            sent_lateness: assign.has_open().then(crate::recorder::new_histogram),
            totals,
            assign,
            out,
            progress: vec![(None, false); workers],
            pending: Default::default(),
            next_seq: 0,
            serializer: crate::histogram_codec::WireEncoder::default(),
            vitals: crate::vitals::Vitals::start(),
            cores: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        }
    }

    pub(super) fn run(mut self, mut parts: mpsc::Receiver<WorkerPart>) {
        while let Some(part) = parts.blocking_recv() {
            self.progress[part.worker] = (Some(part.seq), part.last);
            match self.pending.entry(part.seq) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Pending {
                        steps: part.steps,
                        active: part.active,
                        elapsed: part.elapsed,
                        dropped: part.dropped,
                        started: part.started,
                        completed: part.completed,
                        active_peak: part.active_peak,
                        active_mean: part.active_mean,
                        lateness: part.lateness,
                        lag_max_us: part.lag_max_us,
                    });
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let p = o.get_mut();
                    for (mine, theirs) in p.steps.iter_mut().zip(part.steps) {
                        match (mine.as_mut(), theirs) {
                            (Some(m), Some(t)) => m.add(&t),
                            (None, Some(t)) => *mine = Some(t),
                            (_, None) => {}
                        }
                    }
                    p.active += part.active;
                    p.elapsed = p.elapsed.max(part.elapsed);
                    p.dropped += part.dropped;
                    p.started += part.started;
                    p.completed += part.completed;
                    p.active_peak += part.active_peak;
                    p.active_mean += part.active_mean;
                    p.lag_max_us = p.lag_max_us.max(part.lag_max_us);
                    if let (Some(mine), Some(theirs)) = (&mut p.lateness, &part.lateness) {
                        mine.add(theirs).expect("same bounds");
                    }
                }
            }
            if !self.emit_complete() {
                return;
            }
        }
        // Every worker is gone: flush whatever is left, in order.
        let rest: Vec<u64> = self.pending.keys().copied().collect();
        for seq in rest {
            if !self.emit(seq) {
                return;
            }
        }
        self.set_totals();
    }

    /// Serializes `sent` for the agent's Done. Runs before `out` is dropped,
    /// so whoever sees the interval channel close finds the totals set.
    pub(super) fn set_totals(&mut self) {
        let mut totals = v1::Totals {
            count: self.sent.count(),
            ..Default::default()
        };
        let encoded = self
            .serializer
            .encode(&self.sent.histogram, &mut totals.histogram)
            .and_then(
                |()| match self.sent.failed.as_ref().filter(|h| !h.is_empty()) {
                    Some(h) => self.serializer.encode(h, &mut totals.failed),
                    None => Ok(()),
                },
            )
            .and_then(|()| match &self.sent.uncorrected {
                Some(h) => self.serializer.encode(h, &mut totals.uncorrected),
                None => Ok(()),
            })
            .and_then(|()| match &self.sent_lateness {
                Some(h) if !h.is_empty() => self.serializer.encode(h, &mut totals.lateness),
                _ => Ok(()),
            });
        match encoded {
            Ok(()) => {
                let _ = self.totals.set(totals);
            }
            Err(e) => tracing::error!(error = ?e, "cannot serialize the run's totals"),
        }
    }

    /// An interval is complete when every worker has either reported it or
    /// finished before it.
    pub(super) fn is_complete(&self, seq: u64) -> bool {
        self.progress
            .iter()
            .all(|&(last_seq, done)| matches!(last_seq, Some(s) if s >= seq || done))
    }

    pub(super) fn emit_complete(&mut self) -> bool {
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if !self.is_complete(seq) {
                break;
            }
            if !self.emit(seq) {
                return false;
            }
        }
        true
    }

    /// A step's metrics as they go on the wire; a metric whose histogram
    /// cannot be encoded is left out (and said).
    pub(super) fn encode_metrics(
        &mut self,
        rec: &crate::recorder::StepRecord,
    ) -> Vec<v1::MetricInterval> {
        let mut out = Vec::with_capacity(rec.metrics.len());
        for m in &rec.metrics {
            let mut histogram = Vec::new();
            if !m.histogram.is_empty()
                && let Err(e) = self.serializer.encode(&m.histogram, &mut histogram)
            {
                tracing::error!(error = ?e, "cannot serialize a metric's histogram");
                continue;
            }
            out.push(v1::MetricInterval {
                metric: m.id,
                histogram,
                missing: m.missing,
                sum: m.sum,
            });
        }
        out
    }

    pub(super) fn emit(&mut self, seq: u64) -> bool {
        let Some(p) = self.pending.remove(&seq) else {
            return true;
        };
        debug_assert!(seq >= self.next_seq);
        self.next_seq = seq + 1;
        let mut steps = Vec::new();
        for (id, rec) in p.steps.iter().enumerate() {
            let Some(rec) = rec.as_ref().filter(|r| !r.is_empty()) else {
                continue;
            };
            let mut bytes = Vec::new();
            if let Err(e) = self.serializer.encode(&rec.histogram, &mut bytes) {
                tracing::error!(error = ?e, "cannot serialize histogram");
                continue;
            }
            let mut uncorrected = Vec::new();
            if let Some(h) = &rec.uncorrected
                && let Err(e) = self.serializer.encode(h, &mut uncorrected)
            {
                tracing::error!(error = ?e, "cannot serialize histogram");
                continue;
            }
            let mut failed = Vec::new();
            if let Some(h) = rec.failed.as_ref().filter(|h| !h.is_empty())
                && let Err(e) = self.serializer.encode(h, &mut failed)
            {
                tracing::error!(error = ?e, "cannot serialize histogram");
                continue;
            }
            // A group's time spans requests already counted: the totals
            // hold each request once.
            if !self.assign.group_steps.get(id).copied().unwrap_or(false) {
                add_latencies(&mut self.sent, rec);
            }
            let mut step = v1::StepInterval {
                step: id as u32,
                histogram: bytes,
                uncorrected,
                failed,
                metrics: self.encode_metrics(rec),
                count: rec.count(),
                errors: rec
                    .errors
                    .iter()
                    .map(|e| v1::ErrorCount {
                        kind: e.kind.label().into_owned(),
                        count: e.count,
                        sample: e.sample.clone(),
                    })
                    .collect(),
                ..v1::StepInterval::default()
            };
            rec.counters.write_wire(&mut step);
            steps.push(step);
        }
        let mut lateness = Vec::new();
        if let Some(h) = &p.lateness
            && !h.is_empty()
        {
            match self.serializer.encode(h, &mut lateness) {
                Ok(()) => {
                    if let Some(sent) = &mut self.sent_lateness
                        && sent.add(h).is_err()
                    {
                        tracing::error!("histogram bounds differ; the run's totals are incomplete");
                    }
                }
                Err(e) => tracing::error!(error = ?e, "cannot serialize histogram"),
            }
        }
        let vitals = self.vitals.sample();
        let interval = v1::Interval {
            loop_lag_max_us: p.lag_max_us,
            cpu_us: vitals.cpu_us,
            vitals_span_us: vitals.span_us,
            rss_bytes: vitals.rss_bytes,
            steal_permille: vitals.steal_permille,
            connections: vitals.connections,
            cores: self.cores,
            run_id: self.assign.run_id.clone(),
            seq,
            active_users: p.active,
            steps,
            elapsed_us: u64::try_from(p.elapsed.as_micros()).unwrap_or(u64::MAX),
            dropped: p.dropped,
            started: p.started,
            completed: p.completed,
            active_peak: p.active_peak,
            active_mean: p.active_mean,
            lateness,
            host: None,
        };
        self.out.blocking_send(interval).is_ok()
    }
}

/// Adds `rec`'s latencies (not its errors) into `into`.
pub(super) fn add_latencies(into: &mut StepRecord, rec: &StepRecord) {
    let add = |mine: &mut Histogram<u64>, theirs: &Histogram<u64>| {
        if mine.add(theirs).is_err() {
            // Not reachable: every histogram has loadfleet's fixed bounds.
            tracing::error!("histogram bounds differ; the run's totals are incomplete");
        }
    };
    add(&mut into.histogram, &rec.histogram);
    if let (Some(mine), Some(theirs)) = (&mut into.uncorrected, &rec.uncorrected) {
        add(mine, theirs);
    }
    if let Some(theirs) = &rec.failed {
        add(
            into.failed
                .get_or_insert_with(crate::recorder::new_histogram),
            theirs,
        );
    }
}
