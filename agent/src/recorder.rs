//! Recording on the hot path: one histogram per step, owned by one worker
//! thread, so a sample is a plain `record()` with no lock, atomic or channel.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::counters::StepCounters;
use crate::failure::ErrorKind;

/// Lowest latency the histograms distinguish, in microseconds.
pub const LOWEST_US: u64 = 1;
/// Highest latency the histograms hold (one hour), in microseconds; longer
/// samples are clamped to it.
pub const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept for every value.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// A histogram with loadfleet's precision (microseconds), which starts
/// small (2,048 counters, values to 2 ms: 16 KiB) and grows as larger values
/// arrive, to loadfleet's range at most (23,552 counters, 184 KiB). A plan
/// of a thousand steps holds thousands of histograms; most never see a
/// value above a few hundred milliseconds. Record into it with
/// [`record_us`], which clamps to the range; values and counters mean the
/// same at every size, so histograms of any sizes add exactly.
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(LOWEST_US, 2 * LOWEST_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid");
    h.auto(true);
    h
}

/// A histogram with loadfleet's whole range allocated up front.
pub fn full_range_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records `n` samples of `us` microseconds; a value beyond an hour counts
/// as an hour (callers raise zero latencies to [`LOWEST_US`] themselves).
/// Grows `h` when the value is beyond its counters: a few times per
/// histogram at most, never per request once it has grown.
#[inline]
pub fn record_us(h: &mut Histogram<u64>, us: u64, n: u64) {
    let v = us.min(HIGHEST_US);
    if h.record_n(v, n).is_err() {
        // Not reachable with loadfleet's bounds (the counters always fit
        // in memory); clamp rather than lose the sample.
        h.saturating_record_n(v, n);
    }
}

/// Errors of one kind in one interval, with one example message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorTally {
    pub kind: ErrorKind,
    pub count: u64,
    pub sample: String,
}

/// What one step recorded in one interval.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// Latencies of completed responses (any status), microseconds. In the
    /// open model, measured from each request's intended send time.
    pub histogram: Histogram<u64>,
    /// Open model only: the same responses measured from the actual send.
    pub uncorrected: Option<Histogram<u64>>,
    /// Time from send to failure of requests that got no response
    /// (timeout, reset, connect, ...), measured like `histogram`; made at
    /// the interval's first such failure, so a healthy run carries none.
    pub failed: Option<Histogram<u64>>,
    /// Errors by kind; a handful of entries at most, so a linear search is fastest.
    pub errors: Vec<ErrorTally>,
    /// Exchanges, retries, bytes and HTTP/2 responses (see
    /// [`StepCounters`]).
    pub counters: StepCounters,
    /// The step's metrics that had a sample or a miss in the interval; a
    /// handful at most, found by a linear search.
    pub metrics: Vec<MetricRecord>,
}

/// One metric of one step in one interval.
#[derive(Debug, Clone)]
pub struct MetricRecord {
    /// Index into the assignment's metric names.
    pub id: u32,
    /// The samples (values as the plan scaled them), clamped like latencies.
    pub histogram: Histogram<u64>,
    /// Responses without the value.
    pub missing: u64,
    /// The exact sum of the samples (saturating).
    pub sum: u64,
}

impl MetricRecord {
    fn new(id: u32) -> MetricRecord {
        MetricRecord {
            id,
            histogram: new_histogram(),
            missing: 0,
            sum: 0,
        }
    }
}

impl StepRecord {
    pub(crate) fn new(open: bool) -> StepRecord {
        StepRecord {
            histogram: new_histogram(),
            uncorrected: open.then(new_histogram),
            failed: None,
            errors: Vec::new(),
            counters: StepCounters::default(),
            metrics: Vec::new(),
        }
    }

    /// Completed responses (any status).
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
            && self.errors.is_empty()
            && self.counters.exchanges == 0
            && self.counters.bytes_received == 0
            && self.counters.loop_bound_hits == 0
    }

    /// Adds another record of the same step into this one.
    pub fn add(&mut self, other: &StepRecord) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share loadfleet's fixed bounds");
        if let (Some(mine), Some(theirs)) = (&mut self.uncorrected, &other.uncorrected) {
            mine.add(theirs)
                .expect("histograms share loadfleet's fixed bounds");
        }
        if let Some(theirs) = &other.failed {
            self.failed
                .get_or_insert_with(new_histogram)
                .add(theirs)
                .expect("histograms share loadfleet's fixed bounds");
        }
        for e in &other.errors {
            self.tally(e.kind, e.count, || e.sample.clone());
        }
        self.counters.add(&other.counters);
        for theirs in &other.metrics {
            let mine = self.metric(theirs.id);
            mine.histogram
                .add(&theirs.histogram)
                .expect("histograms share loadfleet's fixed bounds");
            mine.missing += theirs.missing;
            mine.sum = mine.sum.saturating_add(theirs.sum);
        }
    }

    /// The record of metric `id`, made at its first sample or miss in the
    /// interval.
    #[inline]
    fn metric(&mut self, id: u32) -> &mut MetricRecord {
        match self.metrics.iter().position(|m| m.id == id) {
            Some(i) => &mut self.metrics[i],
            None => {
                self.metrics.push(MetricRecord::new(id));
                self.metrics.last_mut().expect("just pushed")
            }
        }
    }

    fn tally(&mut self, kind: ErrorKind, count: u64, sample: impl FnOnce() -> String) {
        match self.errors.iter_mut().find(|t| t.kind == kind) {
            Some(t) => t.count += count,
            None => self.errors.push(ErrorTally {
                kind,
                count,
                sample: sample(),
            }),
        }
    }
}

/// Makes a step's record: once per step per interval at most, so kept out
/// of line from the recording itself.
#[cold]
#[inline(never)]
fn make(slot: &mut Option<StepRecord>, open: bool) {
    *slot = Some(StepRecord::new(open));
}

/// One worker's recordings for the current interval: an entry per step
/// that has been requested lately, none for the others. A plan of a
/// thousand steps walked by one user holds a record for the few steps it
/// is in, not a thousand.
#[derive(Debug)]
pub struct Recorder {
    steps: Vec<Option<StepRecord>>,
    /// Which steps had something recorded in the interval before this one.
    was_busy: Vec<bool>,
    open: bool,
    /// Open model: send lateness of each iteration (actual minus intended).
    lateness: Option<Histogram<u64>>,
}

impl Recorder {
    /// A recorder for `step_count` steps of the closed model.
    pub fn new(step_count: usize) -> Recorder {
        Recorder::with_model(step_count, false)
    }

    /// A recorder that also keeps uncorrected latencies when `open`.
    pub fn with_model(step_count: usize, open: bool) -> Recorder {
        Recorder {
            steps: (0..step_count).map(|_| None).collect(),
            was_busy: vec![false; step_count],
            open,
            lateness: open.then(new_histogram),
        }
    }

    /// The record of `step`, made at its first sample unless the step is in
    /// steady use (busy in the last two intervals), whose record [`take`]
    /// makes at the interval's end, off the requests' path. A journey that
    /// walks through a thousand steps holds records only for the steps it
    /// is in, and makes each once.
    ///
    /// [`take`]: Recorder::take
    #[inline]
    fn step(&mut self, step: usize) -> Option<&mut StepRecord> {
        let open = self.open;
        let slot = self.steps.get_mut(step)?;
        if slot.is_none() {
            make(slot, open);
        }
        slot.as_mut()
    }

    /// Records a completed response's latency; with `uncorrected` (the open
    /// model), `latency` is measured from the intended send time and
    /// `uncorrected` from the actual send.
    #[inline]
    pub fn record_latency(
        &mut self,
        step: usize,
        latency: Duration,
        uncorrected: Option<Duration>,
    ) {
        let Some(rec) = self.step(step) else {
            return;
        };
        let us = |d: Duration| {
            u64::try_from(d.as_micros())
                .unwrap_or(u64::MAX)
                .max(LOWEST_US)
        };
        record_us(&mut rec.histogram, us(latency), 1);
        if let (Some(h), Some(u)) = (rec.uncorrected.as_mut(), uncorrected) {
            record_us(h, us(u), 1);
        }
    }

    /// Records a completed response; statuses >= 400 also count as errors.
    #[inline]
    pub fn record_response(&mut self, step: usize, latency: Duration, status: u16) {
        self.record_latency(step, latency, None);
        if status >= 400 {
            self.record_failure(step, ErrorKind::Status(status), || {
                format!("HTTP status {status}")
            });
        }
    }

    /// Records a completed response of the open model: `corrected` from the
    /// request's intended send time, `uncorrected` from its actual send.
    #[inline]
    pub fn record_open(
        &mut self,
        step: usize,
        corrected: Duration,
        uncorrected: Duration,
        status: u16,
    ) {
        self.record_latency(step, corrected, Some(uncorrected));
        if status >= 400 {
            self.record_failure(step, ErrorKind::Status(status), || {
                format!("HTTP status {status}")
            });
        }
    }

    /// Open model: records how late an iteration started.
    #[inline]
    pub fn record_lateness(&mut self, late: Duration) {
        if let Some(h) = &mut self.lateness {
            record_us(h, u64::try_from(late.as_micros()).unwrap_or(u64::MAX), 1);
        }
    }

    /// Takes this interval's lateness histogram (open model).
    pub fn take_lateness(&mut self) -> Option<Histogram<u64>> {
        let fresh = self.lateness.as_ref().map(|_| new_histogram());
        std::mem::replace(&mut self.lateness, fresh)
    }

    /// Records a request that got no response; `message` is built only for
    /// the first error of its kind in an interval.
    pub fn record_failure(
        &mut self,
        step: usize,
        kind: ErrorKind,
        message: impl FnOnce() -> String,
    ) {
        if let Some(rec) = self.step(step) {
            rec.tally(kind, 1, message);
        }
    }

    /// Counts the HTTP exchanges of one request of `step` (1, plus one per
    /// redirect followed or attempt resent) and its resent attempts.
    #[inline]
    pub fn record_exchanges(&mut self, step: usize, c: crate::client::Counts) {
        if let Some(rec) = self.step(step) {
            rec.counters.exchanges += u64::from(c.exchanges);
            rec.counters.retries += u64::from(c.retries);
            rec.counters.bytes_received += c.received;
            rec.counters.bytes_decoded += c.decoded;
        }
    }

    /// Counts a loop under group `step` that ended at its bound of passes
    /// while its condition still held.
    pub fn record_bound_hit(&mut self, step: usize) {
        if let Some(rec) = self.step(step) {
            rec.counters.loop_bound_hits += 1;
        }
    }

    /// Counts a response of `step` that came over HTTP/2.
    #[inline]
    pub fn record_http2(&mut self, step: usize) {
        if let Some(rec) = self.step(step) {
            rec.counters.http2_responses += 1;
        }
    }

    /// Records metric `id` of a response of `step`: its sample, or `None`
    /// when the response did not carry the value.
    #[inline]
    pub fn record_metric(&mut self, step: usize, id: u32, sample: Option<u64>) {
        if let Some(rec) = self.step(step) {
            let m = rec.metric(id);
            match sample {
                Some(v) => {
                    let v = v.min(HIGHEST_US);
                    record_us(&mut m.histogram, v, 1);
                    m.sum = m.sum.saturating_add(v);
                }
                None => m.missing += 1,
            }
        }
    }

    /// Records a request that was sent and got no response, `elapsed` after
    /// it was sent (plus, in the open model, its iteration's lateness).
    pub fn record_failure_after(
        &mut self,
        step: usize,
        kind: ErrorKind,
        elapsed: Duration,
        message: impl FnOnce() -> String,
    ) {
        if let Some(rec) = self.step(step) {
            rec.tally(kind, 1, message);
            record_us(
                rec.failed.get_or_insert_with(new_histogram),
                u64::try_from(elapsed.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(LOWEST_US),
                1,
            );
        }
    }

    /// Takes this interval's records (`None` for a step with no record) and
    /// starts empty ones for the steps in steady use: something recorded in
    /// this interval and the one before. Called once per interval, never
    /// per request.
    pub fn take(&mut self) -> Vec<Option<StepRecord>> {
        let open = self.open;
        let fresh = self
            .steps
            .iter()
            .zip(&mut self.was_busy)
            .map(|(slot, was_busy)| {
                let busy = slot.as_ref().is_some_and(|r| !r.is_empty());
                let steady = busy && *was_busy;
                *was_busy = busy;
                steady.then(|| StepRecord::new(open))
            })
            .collect();
        std::mem::replace(&mut self.steps, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_samples_misses_and_an_exact_sum_per_step() {
        let mut a = Recorder::new(2);
        a.record_response(0, Duration::from_micros(900), 200);
        a.record_metric(0, 3, Some(0));
        a.record_metric(0, 3, Some(45));
        a.record_metric(0, 3, None);
        a.record_metric(1, 0, Some(5_000_000));
        let mut b = Recorder::new(2);
        b.record_metric(0, 3, Some(7));
        b.record_metric(0, 1, None);
        let mut steps: Vec<Option<StepRecord>> = a.take();
        let theirs = b.take();
        steps[0].as_mut().unwrap().add(theirs[0].as_ref().unwrap());
        let s0 = steps[0].as_ref().unwrap();
        let m3 = s0.metrics.iter().find(|m| m.id == 3).unwrap();
        assert_eq!(
            (m3.histogram.len(), m3.missing, m3.sum, m3.histogram.min()),
            (3, 1, 52, 0)
        );
        let m1 = s0.metrics.iter().find(|m| m.id == 1).unwrap();
        assert_eq!((m1.histogram.len(), m1.missing), (0, 1));
        let s1 = steps[1].as_ref().unwrap();
        assert_eq!(s1.metrics[0].sum, 5_000_000);
        assert_eq!(
            s1.metrics[0].histogram.max(),
            s1.metrics[0].histogram.highest_equivalent(5_000_000)
        );
    }

    #[test]
    fn records_statuses_and_failures() {
        let mut r = Recorder::new(2);
        r.record_response(0, Duration::from_micros(1500), 200);
        r.record_response(0, Duration::from_micros(2500), 503);
        r.record_response(1, Duration::ZERO, 404);
        r.record_failure(1, ErrorKind::Timeout, || "timed out".into());
        r.record_failure(1, ErrorKind::Timeout, || {
            unreachable!("sample kept from the first")
        });
        r.record_response(7, Duration::from_micros(1), 200); // unknown step: ignored
        let steps: Vec<StepRecord> = r.take().into_iter().map(Option::unwrap).collect();
        assert_eq!(steps[0].count(), 2);
        assert_eq!(
            steps[0].histogram.max(),
            steps[0].histogram.highest_equivalent(2500)
        );
        assert_eq!(steps[0].errors.len(), 1);
        assert_eq!(steps[0].errors[0].kind.label(), "http_503");
        assert_eq!(steps[1].count(), 1);
        assert_eq!(
            steps[1].histogram.min(),
            1,
            "zero latency is recorded as 1 µs"
        );
        let timeout = steps[1]
            .errors
            .iter()
            .find(|e| e.kind == ErrorKind::Timeout)
            .unwrap();
        assert_eq!((timeout.count, timeout.sample.as_str()), (2, "timed out"));
        assert!(
            r.take().iter().all(Option::is_none),
            "a step busy in one interval only gets no record made for the next"
        );
        // Busy two intervals running: the next record is made by take.
        r.record_response(1, Duration::from_micros(10), 200);
        let _ = r.take();
        r.record_response(1, Duration::from_micros(10), 200);
        let _ = r.take();
        let made = r.take();
        assert!(
            made[1].as_ref().is_some_and(StepRecord::is_empty),
            "{made:?}"
        );
        assert!(made[0].is_none());
    }

    #[test]
    fn open_model_keeps_both_latencies() {
        let mut r = Recorder::with_model(1, true);
        r.record_open(0, Duration::from_millis(900), Duration::from_millis(2), 200);
        let steps: Vec<StepRecord> = r.take().into_iter().map(Option::unwrap).collect();
        let corrected = &steps[0].histogram;
        let uncorrected = steps[0].uncorrected.as_ref().unwrap();
        assert_eq!((corrected.len(), uncorrected.len()), (1, 1));
        assert_eq!(corrected.max(), corrected.highest_equivalent(900_000));
        assert_eq!(uncorrected.max(), uncorrected.highest_equivalent(2_000));
        let mut closed = Recorder::new(1);
        closed.record_response(0, Duration::from_millis(1), 200);
        assert!(closed.take()[0].as_ref().unwrap().uncorrected.is_none());
    }

    #[test]
    fn clamps_beyond_one_hour() {
        let mut r = Recorder::new(1);
        r.record_response(0, Duration::from_secs(7200), 200);
        let steps: Vec<StepRecord> = r.take().into_iter().map(Option::unwrap).collect();
        assert_eq!(steps[0].count(), 1);
        assert!(steps[0].histogram.max() >= HIGHEST_US);
    }
}
