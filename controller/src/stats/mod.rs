//! Exact merging: agents' serialized histograms are decoded and added with
//! HdrHistogram addition, so a merged percentile equals the percentile of one
//! histogram fed every sample.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use loadfleet_agent::counters::StepCounters;
use loadfleet_agent::recorder::new_histogram;
use loadfleet_proto::v1;
use serde::Serialize;

/// Why an agent's interval report was dropped.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A histogram that is too large, undecodable or of other bounds.
    #[error(transparent)]
    Histogram(#[from] CodecError),
    #[error("step {step}: count {claimed} does not match the histogram's {actual} samples")]
    Count {
        step: u32,
        claimed: u64,
        actual: u64,
    },
    #[error("step {step}: {timed} timed failures, but only {failures} requests without a response")]
    FailedCount {
        step: u32,
        timed: u64,
        failures: u64,
    },
    #[error("unknown step {step} (the plan has {steps})")]
    UnknownStep { step: u32, steps: usize },
    #[error("unknown metric {metric} (the plan has {metrics})")]
    UnknownMetric { metric: u32, metrics: usize },
}

/// Why an agent's own totals were not used for its latency figures.
#[derive(Debug, thiserror::Error)]
pub enum TotalsError {
    #[error("{0}")]
    Report(#[from] ReportError),
    #[error(
        "its own totals count {claimed} responses ({actual} in the histogram), \
         its reports here {received}: its latency percentiles are not shown"
    )]
    Disagree {
        claimed: u64,
        actual: u64,
        received: u64,
    },
    #[error(
        "its own totals hold {actual} send-lateness samples, its reports here {received}: \
         its send lateness is not shown"
    )]
    LatenessDisagrees { actual: u64, received: u64 },
    #[error(
        "its own totals hold {actual} timed failures, its reports here {received}: \
         its latency percentiles are not shown"
    )]
    FailuresDisagree { actual: u64, received: u64 },
}

pub use loadfleet_agent::histogram_codec::{CodecError, Decoder, MAX_HISTOGRAM_BYTES, Sparse};

mod hist;
pub use hist::Hist;
pub mod spill;

/// Errors of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorAgg {
    pub count: u64,
    pub sample: String,
}

/// Results of some slice of the run (a step, a region, an agent, everything).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Latencies of completed responses (any status), microseconds; sparse
    /// while few buckets are in use (a plan of a thousand steps has a tally
    /// per step, region and open interval, most of them nearly empty).
    histogram: Hist,
    /// Requests that got no response (connect, timeout, reset, ...).
    pub transport_errors: u64,
    pub errors: BTreeMap<String, ErrorAgg>,
    /// Open model: latencies from the actual send (the main histogram is
    /// then measured from the intended send).
    uncorrected: Option<Hist>,
    /// Time from send to failure of requests that got no response
    /// (timeout, reset, connect, ...); `None` while there were none.
    failed: Option<Hist>,
    /// Exchanges, retries, bytes and HTTP/2 responses.
    pub counters: StepCounters,
    /// Numbers read from responses, by metric id.
    pub metrics: BTreeMap<u32, MetricTally>,
}

/// A metric of the plan: one name, one unit and scale wherever it is read.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricSpec {
    pub name: String,
    /// Empty when the plan gives none.
    pub unit: String,
    pub scale: f64,
}

/// One metric's samples in some slice of the run.
#[derive(Debug, Clone, Default)]
pub struct MetricTally {
    hist: Hist,
    /// Responses that did not carry the value.
    pub missing: u64,
    /// The exact sum of the samples.
    pub sum: u64,
}

/// A metric's figures, in the plan's unit (after its scale).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MetricStats {
    /// Responses that carried the value.
    pub count: u64,
    /// Responses that did not.
    pub missing: u64,
    /// Exact: the sum of the samples over `count`.
    pub mean: Option<f64>,
    pub sum: u64,
    pub min: Option<u64>,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

impl MetricTally {
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn histogram(&self) -> std::borrow::Cow<'_, Histogram<u64>> {
        self.hist.histogram()
    }

    fn add(&mut self, other: &MetricTally) {
        self.hist.add(&other.hist);
        self.missing += other.missing;
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Count, missing, exact mean and sum, and percentiles (HdrHistogram's
    /// three significant digits: a value is exact below 2,048).
    pub fn stats(&self) -> MetricStats {
        let h = self.hist.histogram();
        let n = h.len();
        let at = |q: f64| (n > 0).then(|| h.value_at_quantile(q));
        MetricStats {
            count: n,
            missing: self.missing,
            mean: (n > 0).then(|| self.sum as f64 / n as f64),
            sum: self.sum,
            min: (n > 0).then(|| h.min()),
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            max: (n > 0).then(|| h.max()),
        }
    }
}

impl Tally {
    /// Requests sent: responses plus requests that got none.
    pub fn requests(&self) -> u64 {
        self.responses() + self.transport_errors
    }

    /// Completed responses (any status).
    pub fn responses(&self) -> u64 {
        self.histogram.len()
    }

    /// Failed responses (a status >= 400, a failed check or extraction) plus
    /// requests that got no response.
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }

    fn add(&mut self, d: &DecodedStep<'_>) {
        self.histogram.add_sparse(&d.responses);
        if let Some(u) = &d.uncorrected {
            self.uncorrected.get_or_insert_default().add_sparse(u);
        }
        if let Some(f) = &d.failed {
            self.failed.get_or_insert_default().add_sparse(f);
        }
        self.transport_errors += count_errors(&mut self.errors, d.errors);
        self.counters.add(&d.counters);
        for m in &d.metrics {
            let t = self.metrics.entry(m.id).or_default();
            if let Some(h) = &m.samples {
                t.hist.add_sparse(h);
            }
            t.missing += m.missing;
            t.sum = t.sum.saturating_add(m.sum);
        }
    }

    /// The steps `ids` of `steps` added together: exact, as the total is.
    pub fn of_steps(steps: &[Tally], ids: &[usize]) -> Tally {
        let mut t = Tally::default();
        for s in ids.iter().filter_map(|&i| steps.get(i)) {
            t.merge(s);
        }
        t
    }

    /// Adds another tally into this one.
    fn merge(&mut self, other: &Tally) {
        self.histogram.add(&other.histogram);
        if let Some(u) = &other.uncorrected {
            self.uncorrected.get_or_insert_default().add(u);
        }
        if let Some(f) = &other.failed {
            self.failed.get_or_insert_default().add(f);
        }
        self.transport_errors += other.transport_errors;
        self.counters.add(&other.counters);
        for (id, m) in &other.metrics {
            self.metrics.entry(*id).or_default().add(m);
        }
        for (kind, e) in &other.errors {
            let agg = self.errors.entry(kind.clone()).or_default();
            agg.count += e.count;
            if agg.sample.is_empty() {
                agg.sample.clone_from(&e.sample);
            }
        }
    }

    /// Every request's time to its outcome: the responses, and the
    /// requests that failed without one (a timeout took its timeout).
    pub fn all(&self) -> std::borrow::Cow<'_, Histogram<u64>> {
        match &self.failed {
            Some(f) if !f.is_empty() => {
                let mut all = self.histogram.clone();
                all.add(f);
                std::borrow::Cow::Owned(all.histogram().into_owned())
            }
            _ => self.histogram.histogram(),
        }
    }

    /// Latency percentiles in milliseconds over every request, responses
    /// and failures alike; `None` when nothing was measured.
    pub fn latency(&self) -> Option<LatencyMs> {
        LatencyMs::of(&self.all())
    }

    /// Requests by time to their response: under `lo_ms`, from `lo_ms` to
    /// under `hi_ms`, and `hi_ms` or more (responses of any status); and
    /// those that got no response. Exact up to the histogram's resolution
    /// at the bounds (3 significant digits).
    pub fn ranges(&self, lo_ms: f64, hi_ms: f64) -> [u64; 4] {
        let h = self.histogram.histogram();
        let lo = (lo_ms * 1000.0) as u64;
        let hi = (hi_ms * 1000.0) as u64;
        let mut out = [0u64; 4];
        for v in h.iter_recorded() {
            let at = v.value_iterated_to();
            let i = if at < lo {
                0
            } else if at < hi {
                1
            } else {
                2
            };
            out[i] += v.count_at_value();
        }
        out[3] = self.transport_errors;
        out
    }

    /// The responses' latencies, as one histogram.
    pub fn responses_histogram(&self) -> std::borrow::Cow<'_, Histogram<u64>> {
        self.histogram.histogram()
    }

    /// Latency percentiles of the responses alone.
    pub fn latency_responses(&self) -> Option<LatencyMs> {
        LatencyMs::of(&self.histogram.histogram())
    }

    /// Time-to-failure percentiles of the requests that got no response.
    pub fn latency_failures(&self) -> Option<LatencyMs> {
        self.failed
            .as_ref()
            .and_then(|f| LatencyMs::of(&f.histogram()))
    }

    /// Open model: latency percentiles from the actual send.
    pub fn latency_uncorrected(&self) -> Option<LatencyMs> {
        self.uncorrected
            .as_ref()
            .and_then(|u| LatencyMs::of(&u.histogram()))
    }
}

/// One step of one report, decoded and checked.
struct DecodedStep<'a> {
    step: usize,
    responses: Sparse,
    uncorrected: Option<Sparse>,
    failed: Option<Sparse>,
    errors: &'a [v1::ErrorCount],
    counters: StepCounters,
    metrics: Vec<DecodedMetric>,
}

struct DecodedMetric {
    id: u32,
    samples: Option<Sparse>,
    missing: u64,
    sum: u64,
}

/// Adds reported errors by kind; returns how many got no response.
fn count_errors(into: &mut BTreeMap<String, ErrorAgg>, errors: &[v1::ErrorCount]) -> u64 {
    let mut transport = 0;
    for e in errors {
        if !came_with_response(&e.kind) {
            transport += e.count;
        }
        let agg = match into.get_mut(&e.kind) {
            Some(agg) => agg,
            None => into.entry(e.kind.clone()).or_default(),
        };
        agg.count += e.count;
        if agg.sample.is_empty() {
            agg.sample = e.sample.chars().take(300).collect();
        }
    }
    transport
}

/// One agent's results. Its counts are added from its reports as they
/// arrive; its latency figures come from the totals the agent sends when
/// it is done (see [`Collector::apply_totals`]). Adding every report into a
/// histogram per agent as well made the controller touch 1,000 cold
/// histograms every second at 1,000 agents.
#[derive(Debug, Clone, Default)]
pub struct AgentTally {
    /// Completed responses in the reports received.
    pub responses: u64,
    /// Requests that got no response.
    pub transport_errors: u64,
    pub errors: BTreeMap<String, ErrorAgg>,
    /// From the agent's own totals, when they agree with `responses`;
    /// `None` for an agent lost before it sent them (or with no response).
    pub latency: Option<AgentLatency>,
    /// Open model: send-lateness samples in the reports received.
    pub lateness_samples: u64,
    /// Timed failures (requests without a response) in the reports received.
    pub failed_samples: u64,
    /// Exchanges, retries, bytes and HTTP/2 responses in the reports
    /// received.
    pub counters: StepCounters,
    /// Open model: its send lateness, from its totals when they agree with
    /// `lateness_samples`.
    pub send_lateness: Option<LatencyMs>,
    /// The generator's own health, from its reports.
    pub health: Health,
}

/// A generator is saturated in an interval when its process used this
/// share of the CPUs it may use…
pub const SATURATED_CPU_PCT: f64 = 90.0;
/// …or its event loops woke this late for a timer: what it measured then
/// includes its own delay.
pub const SATURATED_LAG_MS: f64 = 50.0;

/// One generator's health over the run, from its interval reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    /// Intervals reported with health figures.
    pub intervals: u64,
    /// Process CPU as a share of the CPUs it may use, in %.
    pub cpu_pct_max: f64,
    pub cpu_pct_mean: f64,
    /// CPUs the process may use.
    pub cores: u32,
    /// How late its event loops woke for their timers, at worst.
    pub loop_lag_ms_max: f64,
    pub rss_mb_max: f64,
    pub connections_max: u64,
    /// The host's steal time, at worst, in %.
    pub steal_pct_max: f64,
    /// Intervals in which it was saturated (see [`SATURATED_CPU_PCT`]).
    pub saturated_intervals: u64,
    /// The newest interval's CPU % and event-loop lag (ms), for the dashboard.
    #[serde(skip)]
    pub last: (f64, f64),
}

impl Health {
    /// Adds one interval; true when the generator was saturated in it.
    fn add(&mut self, iv: &v1::Interval, length: Duration) -> bool {
        if iv.cores == 0 {
            // An agent older than these figures.
            return false;
        }
        // Over the span the agent's CPU reading covers (an older agent: the
        // interval's length).
        let span = if iv.vitals_span_us > 0 {
            iv.vitals_span_us as f64
        } else {
            length.as_micros() as f64
        };
        if span < 100_000.0 {
            // Too short a span to say anything about CPU (the run's last
            // sliver); its lag still counts.
            let lag_ms = iv.loop_lag_max_us as f64 / 1000.0;
            self.loop_lag_ms_max = self.loop_lag_ms_max.max(lag_ms);
            let saturated = lag_ms >= SATURATED_LAG_MS;
            self.saturated_intervals += u64::from(saturated);
            return saturated;
        }
        let cpu_pct = iv.cpu_us as f64 * 100.0 / (span * f64::from(iv.cores));
        let lag_ms = iv.loop_lag_max_us as f64 / 1000.0;
        let n = self.intervals as f64;
        self.cpu_pct_mean = (self.cpu_pct_mean * n + cpu_pct) / (n + 1.0);
        self.intervals += 1;
        self.cores = iv.cores;
        self.cpu_pct_max = self.cpu_pct_max.max(cpu_pct);
        self.last = (cpu_pct, lag_ms);
        self.loop_lag_ms_max = self.loop_lag_ms_max.max(lag_ms);
        self.rss_mb_max = self.rss_mb_max.max(iv.rss_bytes as f64 / (1 << 20) as f64);
        self.connections_max = self.connections_max.max(iv.connections);
        self.steal_pct_max = self.steal_pct_max.max(f64::from(iv.steal_permille) / 10.0);
        let saturated = cpu_pct >= SATURATED_CPU_PCT || lag_ms >= SATURATED_LAG_MS;
        self.saturated_intervals += u64::from(saturated);
        saturated
    }
}

/// An agent's latency figures, computed from its totals when they arrive
/// (so the controller keeps no histogram per agent).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLatency {
    /// Every request's time to its outcome, failures included.
    pub latency: LatencyMs,
    /// The responses alone.
    pub responses: Option<LatencyMs>,
    /// The requests that got no response alone.
    pub failures: Option<LatencyMs>,
    /// Open model: measured from the actual send.
    pub uncorrected: Option<LatencyMs>,
    pub distribution: Vec<(f64, f64)>,
}

impl AgentTally {
    /// Requests sent: responses plus requests that got none.
    pub fn requests(&self) -> u64 {
        self.responses + self.transport_errors
    }

    /// Failed responses plus requests that got no response.
    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }
}

/// The percentile distribution of a histogram: `[percentile, ms]` pairs.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    percentile_points(h)
        .into_iter()
        .map(|(p, us)| (p, us as f64 / 1000.0))
        .collect()
}

/// The percentiles HdrHistogram's reports list (five per halving of the
/// distance to 100%: 0, 10, … 50, 55, … 75, 77.5, …), each with the value
/// at exactly that percentile, as [`LatencyMs`] computes its own; then
/// 100% (the maximum). The general quantile iterator steps in floating point
/// and drifts from the exact values (its 90.0 was 1,571.8 ms where p90 was
/// 1,513.5 on 150 samples), and stops where its sum of counts ends.
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    if h.is_empty() {
        return out;
    }
    let max = h.max();
    'levels: for level in 0..48 {
        let half = 0.5f64.powi(level);
        let start = 100.0 * (1.0 - half);
        let step = 100.0 * half / 10.0;
        for j in 0..5 {
            // Four decimals, as shown; the value is the one at what is shown.
            let p = ((start + step * f64::from(j)) * 1e4).round() / 1e4;
            if p >= 100.0 {
                break 'levels;
            }
            if out.last().is_some_and(|&(last, _)| p <= last) {
                continue;
            }
            let v = h.value_at_quantile(p / 100.0);
            out.push((p, v));
            if v >= max && p >= 99.9 {
                break 'levels;
            }
        }
    }
    out.push((100.0, max));
    out
}

/// Latency figures of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencyMs {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl LatencyMs {
    pub fn of(h: &Histogram<u64>) -> Option<LatencyMs> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencyMs {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// One finished interval of the whole fleet, for progress and charts.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct IntervalPoint {
    pub seq: u64,
    /// Start of the interval, seconds from the run's start.
    pub start_s: f64,
    pub length_s: f64,
    pub requests: u64,
    pub errors: u64,
    /// Users active at the end of the interval.
    pub active_users: u64,
    /// The most users active at once during the interval (the sum of each
    /// agent's peak, so an upper bound when agents peak at different times).
    #[serde(default)]
    pub active_peak: u64,
    /// Users active on average over the interval (time-weighted).
    #[serde(default)]
    pub active_mean: f64,
    /// Active users per region at the end of the interval.
    #[serde(default)]
    pub active_by_region: BTreeMap<String, u64>,
    /// The most users active at once per region during the interval.
    #[serde(default)]
    pub peak_by_region: BTreeMap<String, u64>,
    /// Open model: arrivals dropped in this interval.
    pub dropped: u64,
    /// Agents whose generator was saturated in this interval: what they
    /// measured then includes their own delay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Vec<String>,
    /// Iterations started in this interval, by when they actually started.
    #[serde(default)]
    pub iterations_started: u64,
    pub latency_ms: Option<LatencyMs>,
    /// Numbers read from responses: each metric's exact mean over the
    /// interval's responses that carried it, all steps together.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metric_means: BTreeMap<String, f64>,
}

/// One step in one interval, for `requests.csv`.
#[derive(Debug, Clone)]
pub struct StepIntervalRow {
    pub step: usize,
    pub start_s: f64,
    pub length_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub latency_ms: Option<LatencyMs>,
}

/// An interval histogram as it goes into `latency.hlog`.
#[derive(Debug, Clone)]
pub struct LoggedInterval {
    pub start: Duration,
    pub length: Duration,
    /// `None` for all steps together.
    pub step: Option<usize>,
    /// V2 + DEFLATE bytes.
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct OpenInterval {
    dropped: u64,
    started: u64,
    /// By step, then region (an index into `Collector::region_names`).
    cells: BTreeMap<(usize, usize), Tally>,
    /// Active users by agent (an index into `Collector::agent_region`).
    /// By agent: users active at the interval's end, its peak and its mean.
    active: BTreeMap<usize, (u32, u32, f64)>,
    /// Agents (by index) saturated in this interval.
    saturated: std::collections::BTreeSet<usize>,
    end: Duration,
}

/// The most points the timeline holds: a run's first 68 minutes at one
/// point a second; longer runs have points of 2, 4, 8... seconds.
pub const TIMELINE_CAP: usize = 4096;

/// Beside each timeline point, what merging it with its neighbour needs:
/// its latencies (responses and failures) and each metric's sum and count.
#[derive(Debug, Clone)]
struct PointAux {
    hist: Hist,
    metrics: BTreeMap<String, (u64, u64)>,
}

/// Two adjacent timeline points as one, exactly: counts added, latency
/// percentiles and metric means from the added histograms and sums, users
/// at the end from the later one, peaks the larger, the mean weighted by
/// time.
fn merge_points(
    a: IntervalPoint,
    mut a_aux: PointAux,
    b: IntervalPoint,
    b_aux: PointAux,
) -> (IntervalPoint, PointAux) {
    a_aux.hist.add(&b_aux.hist);
    for (name, (sum, count)) in b_aux.metrics {
        let m = a_aux.metrics.entry(name).or_default();
        m.0 = m.0.saturating_add(sum);
        m.1 += count;
    }
    let length_s = (b.start_s + b.length_s).max(a.start_s + a.length_s) - a.start_s;
    let mut peak_by_region = a.peak_by_region;
    for (region, peak) in b.peak_by_region {
        let p = peak_by_region.entry(region).or_insert(0);
        *p = (*p).max(peak);
    }
    let mut suspect = a.suspect;
    suspect.extend(b.suspect);
    suspect.sort();
    suspect.dedup();
    let point = IntervalPoint {
        seq: a.seq,
        start_s: a.start_s,
        length_s,
        requests: a.requests + b.requests,
        errors: a.errors + b.errors,
        active_users: b.active_users,
        active_peak: a.active_peak.max(b.active_peak),
        active_mean: if length_s > 0.0 {
            (a.active_mean * a.length_s + b.active_mean * b.length_s) / length_s
        } else {
            b.active_mean
        },
        active_by_region: b.active_by_region,
        peak_by_region,
        dropped: a.dropped + b.dropped,
        suspect,
        iterations_started: a.iterations_started + b.iterations_started,
        latency_ms: LatencyMs::of(&a_aux.hist.histogram()),
        metric_means: a_aux
            .metrics
            .iter()
            .filter(|(_, (_, count))| *count > 0)
            .map(|(name, (sum, count))| {
                let mean = *sum as f64 / *count as f64;
                (name.clone(), (mean * 1000.0).round() / 1000.0)
            })
            .collect(),
    };
    (point, a_aux)
}

/// Everything merged so far: cumulative tallies and the finished timeline.
#[derive(Debug)]
pub struct Collector {
    pub step_names: Vec<String>,
    /// By step: whether it is a group (a transaction), whose time spans
    /// requests counted in their own steps: left out of the total, the
    /// regions' and the agents' figures, so each request counts once.
    pub groups: Vec<bool>,
    /// The metrics read from responses, by id.
    pub metrics: Vec<MetricSpec>,
    pub interval: Duration,
    /// Everything in closed intervals (and late reports): during a run it
    /// lags the newest reports by the intervals still open.
    pub total: Tally,
    /// Per step, like `total`.
    pub steps: Vec<Tally>,
    /// Per region, like `total`.
    pub regions: BTreeMap<String, Tally>,
    pub agents: BTreeMap<String, AgentTally>,
    /// The run over time: a point per interval, until [`TIMELINE_CAP`]
    /// points; then adjacent points are merged in pairs (exactly: their
    /// histograms are added again), so each covers 2, 4, 8... intervals and
    /// memory stays bounded however long the run. Read it through
    /// [`Collector::timeline`], which adds the point still filling.
    timeline: Vec<IntervalPoint>,
    /// What merging a timeline point again needs, beside each point.
    timeline_aux: Vec<PointAux>,
    /// Intervals merged so far into the point being filled (when a point
    /// covers more than one).
    pending: Option<(IntervalPoint, PointAux, u64)>,
    /// Intervals per timeline point: 1, then doubling each time the
    /// timeline reaches its cap.
    pub timeline_factor: u64,
    timeline_cap: usize,
    /// The newest closed interval, whatever the timeline's resolution: what
    /// the progress line, the dashboard and `/metrics` show as "now".
    pub newest: Option<IntervalPoint>,
    /// Interval histograms and step rows kept in memory: those of a run
    /// without a spill file, or after its file failed. Read both through
    /// [`Collector::for_each_logged`] and [`Collector::for_each_row`].
    logged: Vec<LoggedInterval>,
    step_rows: Vec<StepIntervalRow>,
    /// Where closed intervals' records go instead of memory.
    spill: Option<std::sync::Mutex<spill::Spill>>,
    /// Reports that arrived after their interval was closed (counted in the
    /// totals, missing from the timeline).
    pub late_reports: u64,
    /// Reports dropped as undecodable.
    pub dropped_reports: u64,
    /// Open model: arrivals dropped because no user was free in time.
    pub dropped: u64,
    /// Iterations that ran to their end, all agents together.
    pub iterations_completed: u64,
    /// Iterations started, all agents together.
    pub iterations_started: u64,
    pub agent_dropped: BTreeMap<String, u64>,
    /// Open model: send lateness of iterations (actual minus intended), µs.
    pub lateness: Histogram<u64>,
    /// The fleet's worst generator health so far: CPU %, event-loop lag ms.
    pub worst_health: (f64, f64),
    /// End of the latest interval, from the run's start.
    pub elapsed: Duration,
    open: BTreeMap<u64, OpenInterval>,
    closed_before: u64,
    /// Each agent's region, as first reported.
    /// Each agent's index, in the order first seen.
    agent_ids: BTreeMap<String, usize>,
    /// By agent index: its region's index.
    agent_region: Vec<usize>,
    /// Regions in the order first seen.
    region_names: Vec<String>,
    decoder: Decoder,
}

impl Collector {
    /// Writes closed intervals' histograms and rows to a file in `dir`
    /// ([`spill::SPILL_FILE`]) instead of keeping them; when the file
    /// cannot be made, they are kept in memory (and that is said).
    pub fn spill_to(&mut self, dir: &std::path::Path) {
        match spill::Spill::create(&dir.join(spill::SPILL_FILE)) {
            Ok(s) => self.spill = Some(std::sync::Mutex::new(s)),
            Err(e) => tracing::warn!(
                "cannot create {}: {e}; interval records stay in memory",
                dir.join(spill::SPILL_FILE).display()
            ),
        }
    }

    /// Removes the spill file (once the outputs are written).
    pub fn remove_spill(&self) {
        if let Some(s) = &self.spill {
            s.lock().unwrap_or_else(|e| e.into_inner()).remove();
        }
    }

    /// Every closed interval's histograms, in the order they closed: those
    /// in the spill file, then those in memory.
    pub fn for_each_logged(
        &self,
        mut f: impl FnMut(&LoggedInterval) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut result = Ok(());
        if let Some(s) = &self.spill {
            s.lock().unwrap_or_else(|e| e.into_inner()).read(|r| {
                if let (spill::Record::Logged(li), Ok(())) = (&r, &result) {
                    result = f(li);
                }
            })?;
        }
        result?;
        for li in &self.logged {
            f(li)?;
        }
        Ok(())
    }

    /// Every step's row of every closed interval, in the order they closed.
    pub fn for_each_row(&self, mut f: impl FnMut(&StepIntervalRow)) -> std::io::Result<()> {
        if let Some(s) = &self.spill {
            s.lock().unwrap_or_else(|e| e.into_inner()).read(|r| {
                if let spill::Record::Row(row) = &r {
                    f(row);
                }
            })?;
        }
        let mut rows: Vec<_> = self.step_rows.iter().collect();
        rows.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.step.cmp(&b.step)));
        for r in rows {
            f(r);
        }
        Ok(())
    }

    /// A collector whose steps marked true are groups.
    pub fn with_groups(mut self, groups: &[bool]) -> Collector {
        for (mine, &g) in self.groups.iter_mut().zip(groups) {
            *mine = g;
        }
        self
    }

    fn is_group(&self, step: usize) -> bool {
        self.groups.get(step).copied().unwrap_or(false)
    }

    /// A collector that also takes the plan's metrics.
    pub fn with_metrics(mut self, metrics: Vec<MetricSpec>) -> Collector {
        self.metrics = metrics;
        self
    }

    pub fn new(step_names: Vec<String>, interval: Duration) -> Collector {
        Collector {
            steps: vec![Tally::default(); step_names.len()],
            groups: vec![false; step_names.len()],
            step_names,
            metrics: Vec::new(),
            interval,
            total: Tally::default(),
            regions: BTreeMap::new(),
            agents: BTreeMap::new(),
            timeline: Vec::new(),
            timeline_aux: Vec::new(),
            pending: None,
            timeline_factor: 1,
            timeline_cap: TIMELINE_CAP,
            newest: None,
            logged: Vec::new(),
            step_rows: Vec::new(),
            spill: None,
            late_reports: 0,
            dropped_reports: 0,
            dropped: 0,
            iterations_completed: 0,
            iterations_started: 0,
            agent_dropped: BTreeMap::new(),
            lateness: new_histogram(),
            worst_health: (0.0, 0.0),
            elapsed: Duration::ZERO,
            open: BTreeMap::new(),
            closed_before: 0,
            agent_ids: BTreeMap::new(),
            agent_region: Vec::new(),
            region_names: Vec::new(),
            decoder: Decoder::default(),
        }
    }

    /// Merges one interval report. A report with any bad histogram is
    /// dropped whole, so nothing is half-applied.
    ///
    /// A report's histograms are added once, into its open interval's cell
    /// for the step and the agent's region. Regions, steps and the grand
    /// total are summed from the cells when the interval closes, so the
    /// work per report does not grow with the number of views of the data,
    /// and the cells are few enough to stay in the cache. The agent's own
    /// figures are counted here without its histograms, which come with
    /// its totals at the end.
    pub fn apply(
        &mut self,
        agent: &str,
        region: &str,
        iv: &v1::Interval,
    ) -> Result<(), ReportError> {
        let mut decoded = Vec::with_capacity(iv.steps.len());
        for s in &iv.steps {
            let idx = s.step as usize;
            if idx >= self.steps.len() {
                return Err(ReportError::UnknownStep {
                    step: s.step,
                    steps: self.steps.len(),
                });
            }
            let h = self.decoder.decode(s.step, &s.histogram)?;
            if h.count() != s.count {
                return Err(ReportError::Count {
                    step: s.step,
                    claimed: s.count,
                    actual: h.count(),
                });
            }
            let uncorrected = if s.uncorrected.is_empty() {
                None
            } else {
                let u = self.decoder.decode(s.step, &s.uncorrected)?;
                if u.count() != s.count {
                    return Err(ReportError::Count {
                        step: s.step,
                        claimed: s.count,
                        actual: u.count(),
                    });
                }
                Some(u)
            };
            let failed = if s.failed.is_empty() {
                None
            } else {
                let f = self.decoder.decode(s.step, &s.failed)?;
                let without_response: u64 = s
                    .errors
                    .iter()
                    .filter(|e| !came_with_response(&e.kind))
                    .map(|e| e.count)
                    .sum();
                if f.count() > without_response {
                    return Err(ReportError::FailedCount {
                        step: s.step,
                        timed: f.count(),
                        failures: without_response,
                    });
                }
                Some(f)
            };
            let mut metrics = Vec::with_capacity(s.metrics.len());
            for m in &s.metrics {
                if m.metric as usize >= self.metrics.len() {
                    return Err(ReportError::UnknownMetric {
                        metric: m.metric,
                        metrics: self.metrics.len(),
                    });
                }
                let samples = if m.histogram.is_empty() {
                    None
                } else {
                    Some(self.decoder.decode(s.step, &m.histogram)?)
                };
                metrics.push(DecodedMetric {
                    id: m.metric,
                    samples,
                    missing: m.missing,
                    sum: m.sum,
                });
            }
            if s.http2_responses > s.count {
                return Err(ReportError::Count {
                    step: s.step,
                    claimed: s.count,
                    actual: s.http2_responses,
                });
            }
            decoded.push(DecodedStep {
                metrics,
                counters: StepCounters::of_wire(s),
                step: idx,
                responses: h,
                uncorrected,
                failed,
                errors: &s.errors,
            });
        }
        let lateness = if iv.lateness.is_empty() {
            None
        } else {
            Some(self.decoder.decode(u32::MAX, &iv.lateness)?)
        };
        // Everything decoded: from here on nothing fails, so nothing is half-applied.
        // An agent's reports all count in the region it first named.
        let aid = match self.agent_ids.get(agent) {
            Some(&aid) => aid,
            None => {
                let rid = match self.region_names.iter().position(|r| r == region) {
                    Some(rid) => rid,
                    None => {
                        self.region_names.push(region.to_string());
                        self.regions.insert(region.to_string(), Tally::default());
                        self.region_names.len() - 1
                    }
                };
                self.agents.insert(agent.to_string(), AgentTally::default());
                self.agent_ids
                    .insert(agent.to_string(), self.agent_region.len());
                self.agent_region.push(rid);
                self.agent_region.len() - 1
            }
        };
        let rid = self.agent_region[aid];
        let region = self.region_names[rid].as_str();
        let end = Duration::from_micros(iv.elapsed_us);
        self.elapsed = self.elapsed.max(end);
        let mut open = if iv.seq >= self.closed_before {
            let o = self.open.entry(iv.seq).or_insert_with(|| OpenInterval {
                dropped: 0,
                started: 0,
                cells: BTreeMap::new(),
                active: BTreeMap::new(),
                saturated: Default::default(),
                end,
            });
            o.end = o.end.max(end);
            o.active
                .insert(aid, (iv.active_users, iv.active_peak, iv.active_mean));
            Some(o)
        } else {
            self.late_reports += 1;
            None
        };
        if let Some(l) = &lateness {
            l.add_to(&mut self.lateness);
        }
        self.dropped += iv.dropped;
        self.iterations_completed += iv.completed;
        self.iterations_started += iv.started;
        if iv.dropped > 0 {
            *self.agent_dropped.entry(agent.to_string()).or_default() += iv.dropped;
        }
        if let Some(o) = open.as_deref_mut() {
            o.dropped += iv.dropped;
            o.started += iv.started;
        }
        let start = self
            .interval
            .saturating_mul(u32::try_from(iv.seq).unwrap_or(u32::MAX));
        let length = end.saturating_sub(start).min(self.interval);
        if let Some(t) = self.agents.get_mut(agent) {
            if t.health.add(iv, length)
                && let Some(o) = open.as_deref_mut()
            {
                o.saturated.insert(aid);
            }
            self.worst_health = (
                self.worst_health.0.max(t.health.cpu_pct_max),
                self.worst_health.1.max(t.health.loop_lag_ms_max),
            );
        }
        let groups = std::mem::take(&mut self.groups);
        if let Some(t) = self.agents.get_mut(agent) {
            t.lateness_samples += lateness.as_ref().map_or(0, Sparse::count);
            for d in decoded
                .iter()
                .filter(|d| !groups.get(d.step).copied().unwrap_or(false))
            {
                t.responses += d.responses.count();
                t.failed_samples += d.failed.as_ref().map_or(0, Sparse::count);
                t.counters.add(&d.counters);
                t.transport_errors += count_errors(&mut t.errors, d.errors);
            }
        }
        for d in &decoded {
            match open.as_deref_mut() {
                Some(o) => o.cells.entry((d.step, rid)).or_default().add(d),
                // Its interval is closed: straight into the cumulative tallies.
                None => {
                    self.steps[d.step].add(d);
                    if !groups.get(d.step).copied().unwrap_or(false) {
                        self.total.add(d);
                        if let Some(t) = self.regions.get_mut(region) {
                            t.add(d);
                        }
                    }
                }
            }
        }
        self.groups = groups;
        Ok(())
    }

    /// The timeline point of interval `s`, from its merged total.
    fn point(&self, s: u64, o: &OpenInterval, total: &Tally) -> IntervalPoint {
        let start = self
            .interval
            .saturating_mul(u32::try_from(s).unwrap_or(u32::MAX));
        let length = o
            .end
            .saturating_sub(start)
            .min(self.interval)
            .max(Duration::from_millis(1));
        let by_region = |f: fn(&(u32, u32, f64)) -> u64| {
            let mut by_region: BTreeMap<String, u64> = BTreeMap::new();
            for (&aid, a) in &o.active {
                let name = &self.region_names[self.agent_region[aid]];
                *by_region.entry(name.clone()).or_default() += f(a);
            }
            by_region
        };
        IntervalPoint {
            seq: s,
            start_s: start.as_secs_f64(),
            length_s: length.as_secs_f64(),
            requests: total.requests(),
            errors: total.error_count(),
            active_users: o.active.values().map(|a| u64::from(a.0)).sum(),
            active_peak: o.active.values().map(|a| u64::from(a.1.max(a.0))).sum(),
            active_mean: (o.active.values().map(|a| a.2).sum::<f64>() * 10.0).round() / 10.0,
            active_by_region: by_region(|a| u64::from(a.0)),
            peak_by_region: by_region(|a| u64::from(a.1.max(a.0))),
            dropped: o.dropped,
            suspect: o
                .saturated
                .iter()
                .filter_map(|aid| {
                    self.agent_ids
                        .iter()
                        .find(|(_, id)| *id == aid)
                        .map(|(name, _)| name.clone())
                })
                .collect(),
            iterations_started: o.started,
            latency_ms: total.latency(),
            metric_means: total
                .metrics
                .iter()
                .filter(|(_, m)| m.count() > 0)
                .filter_map(|(id, m)| {
                    let name = self.metrics.get(*id as usize)?.name.clone();
                    let mean = m.sum as f64 / m.count() as f64;
                    Some((name, (mean * 1000.0).round() / 1000.0))
                })
                .collect(),
        }
    }

    /// A look at interval `seq` while it is still open (some agent has not
    /// reported it yet): what the reports received so far hold. For the
    /// progress line only; the timeline gets the closed interval.
    pub fn preview(&self, seq: u64) -> Option<IntervalPoint> {
        let o = self.open.get(&seq)?;
        let mut total = Tally::default();
        for (&(step, _), t) in &o.cells {
            if !self.is_group(step) {
                total.merge(t);
            }
        }
        Some(self.point(seq, o, &total))
    }

    /// Closes every interval before `seq`: computes its timeline point and
    /// keeps its serialized histograms for the interval log.
    pub fn close_before(&mut self, seq: u64) {
        let mut serializer = loadfleet_agent::histogram_codec::WireEncoder::default();
        while let Some((&s, _)) = self.open.first_key_value() {
            if s >= seq {
                break;
            }
            let mut o = self.open.remove(&s).expect("key just seen");
            // Each cell into its region, and the regions of a step into
            // the step's tally of this interval.
            let mut steps: BTreeMap<usize, Tally> = BTreeMap::new();
            for ((idx, rid), t) in std::mem::take(&mut o.cells) {
                if !self.is_group(idx)
                    && let Some(r) = self.regions.get_mut(&self.region_names[rid])
                {
                    r.merge(&t);
                }
                match steps.entry(idx) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(t);
                    }
                    std::collections::btree_map::Entry::Occupied(mut step) => {
                        step.get_mut().merge(&t)
                    }
                }
            }
            let mut total = Tally::default();
            for (idx, t) in &steps {
                if !self.is_group(*idx) {
                    total.merge(t);
                }
                self.steps[*idx].merge(t);
            }
            self.total.merge(&total);
            let point = self.point(s, &o, &total);
            let (start, length) = (
                Duration::from_secs_f64(point.start_s),
                Duration::from_secs_f64(point.length_s),
            );
            let aux = PointAux {
                hist: {
                    let mut h = total.histogram.clone();
                    if let Some(f) = &total.failed {
                        h.add(f);
                    }
                    h
                },
                metrics: total
                    .metrics
                    .iter()
                    .filter_map(|(id, m)| {
                        let name = self.metrics.get(*id as usize)?.name.clone();
                        Some((name, (m.sum, m.count())))
                    })
                    .collect(),
            };
            self.push_point(point, aux);
            // The interval's records: one batch to the spill file, or (with
            // no file, or after it failed) into memory.
            let mut logged = Vec::with_capacity(steps.len() + 1);
            let mut rows = Vec::with_capacity(steps.len());
            let mut log = |step: Option<usize>, h: &Histogram<u64>| {
                let mut bytes = Vec::new();
                if serializer.encode(h, &mut bytes).is_ok() {
                    logged.push(LoggedInterval {
                        start,
                        length,
                        step,
                        bytes,
                    });
                }
            };
            log(None, &total.all());
            for (idx, t) in &steps {
                log(Some(*idx), &t.all());
                rows.push(StepIntervalRow {
                    step: *idx,
                    start_s: start.as_secs_f64(),
                    length_s: length.as_secs_f64(),
                    requests: t.requests(),
                    errors: t.error_count(),
                    latency_ms: t.latency(),
                });
            }
            let spilled = self.spill.as_ref().is_some_and(|s| {
                let mut batch = Vec::new();
                for li in &logged {
                    spill::encode_logged(li, &mut batch);
                }
                for r in &rows {
                    spill::encode_row(r, &mut batch);
                }
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_batch(&batch)
            });
            if !spilled {
                self.logged.extend(logged);
                self.step_rows.extend(rows);
            }
        }
        self.closed_before = self.closed_before.max(seq);
    }

    /// Closes every interval still open.
    pub fn close_all(&mut self) {
        self.close_before(u64::MAX);
    }

    /// The timeline: its points, then the one still filling (when points
    /// cover several intervals and the newest have not filled one yet).
    pub fn timeline(&self) -> impl DoubleEndedIterator<Item = &IntervalPoint> {
        self.timeline
            .iter()
            .chain(self.pending.as_ref().map(|(p, _, _)| p))
    }

    /// A smaller cap than [`TIMELINE_CAP`], for tests (even, at least 2).
    #[cfg(test)]
    fn with_timeline_cap(mut self, cap: usize) -> Collector {
        assert!(cap >= 2 && cap.is_multiple_of(2));
        self.timeline_cap = cap;
        self
    }

    /// Adds a closed interval's point to the timeline, into the point
    /// being filled when points cover several intervals, and halves the
    /// timeline when it reaches its cap.
    fn push_point(&mut self, point: IntervalPoint, aux: PointAux) {
        self.newest = Some(point.clone());
        let (point, aux) = match self.pending.take() {
            None if self.timeline_factor == 1 => (point, aux),
            None => {
                self.pending = Some((point, aux, 1));
                return;
            }
            Some((p, a, n)) => {
                let (p, a) = merge_points(p, a, point, aux);
                if n + 1 < self.timeline_factor {
                    self.pending = Some((p, a, n + 1));
                    return;
                }
                (p, a)
            }
        };
        self.timeline.push(point);
        self.timeline_aux.push(aux);
        if self.timeline.len() >= self.timeline_cap {
            let points = std::mem::take(&mut self.timeline);
            let auxes = std::mem::take(&mut self.timeline_aux);
            let mut pairs = points.into_iter().zip(auxes);
            while let Some((p, a)) = pairs.next() {
                let (p, a) = match pairs.next() {
                    Some((q, b)) => merge_points(p, a, q, b),
                    None => (p, a),
                };
                self.timeline.push(p);
                self.timeline_aux.push(a);
            }
            self.timeline_factor *= 2;
        }
    }

    /// Takes an agent's own totals (from its Done) as its latency
    /// histograms, if they hold exactly the responses its reports here
    /// held; otherwise its percentiles stay unknown. Reports keep their
    /// place in every other figure either way.
    pub fn apply_totals(&mut self, agent: &str, totals: &v1::Totals) -> Result<(), TotalsError> {
        let received = self.agents.get(agent).map_or(0, |a| a.responses);
        let h = self
            .decoder
            .decode(u32::MAX, &totals.histogram)
            .map_err(ReportError::from)?;
        let u = if totals.uncorrected.is_empty() {
            None
        } else {
            Some(
                self.decoder
                    .decode(u32::MAX, &totals.uncorrected)
                    .map_err(ReportError::from)?,
            )
        };
        let lateness = if totals.lateness.is_empty() {
            None
        } else {
            Some(
                self.decoder
                    .decode(u32::MAX, &totals.lateness)
                    .map_err(ReportError::from)?,
            )
        };
        let failed = if totals.failed.is_empty() {
            None
        } else {
            Some(
                self.decoder
                    .decode(u32::MAX, &totals.failed)
                    .map_err(ReportError::from)?,
            )
        };
        let failed_received = self.agents.get(agent).map_or(0, |a| a.failed_samples);
        if failed.as_ref().map_or(0, Sparse::count) != failed_received {
            return Err(TotalsError::FailuresDisagree {
                actual: failed.as_ref().map_or(0, Sparse::count),
                received: failed_received,
            });
        }
        let lateness_received = self.agents.get(agent).map_or(0, |a| a.lateness_samples);
        if lateness.as_ref().map_or(0, Sparse::count) != lateness_received {
            return Err(TotalsError::LatenessDisagrees {
                actual: lateness.as_ref().map_or(0, Sparse::count),
                received: lateness_received,
            });
        }
        for actual in std::iter::once(h.count()).chain(u.as_ref().map(Sparse::count)) {
            if actual != totals.count || actual != received {
                return Err(TotalsError::Disagree {
                    claimed: totals.count,
                    actual,
                    received,
                });
            }
        }
        let Some(a) = self.agents.get_mut(agent) else {
            // Nothing reported: nothing to describe.
            return Ok(());
        };
        let mut histogram = new_histogram();
        h.add_to(&mut histogram);
        let responses = LatencyMs::of(&histogram);
        let failures = failed.map(|f| {
            let mut fh = new_histogram();
            f.add_to(&mut fh);
            f.add_to(&mut histogram);
            fh
        });
        a.latency = LatencyMs::of(&histogram).map(|latency| AgentLatency {
            latency,
            responses,
            failures: failures.as_ref().and_then(LatencyMs::of),
            uncorrected: u.and_then(|u| {
                let mut histogram = new_histogram();
                u.add_to(&mut histogram);
                LatencyMs::of(&histogram)
            }),
            distribution: distribution(&histogram),
        });
        a.send_lateness = lateness.and_then(|l| {
            let mut histogram = new_histogram();
            l.add_to(&mut histogram);
            LatencyMs::of(&histogram)
        });
        Ok(())
    }

    /// The newest interval seen, open or closed.
    pub fn newest_seq(&self) -> Option<u64> {
        self.open.last_key_value().map(|(&s, _)| s)
    }
}

/// Whether errors of this kind were counted with a response (whose latency
/// is in the histogram): a status, a failed check, a failed extraction.
pub fn came_with_response(kind: &str) -> bool {
    kind.starts_with("http_")
        || kind == "check"
        || kind == "extract"
        || kind == "decode"
        // A group's failure: its time is recorded like a response's.
        || kind == "group"
        // A `set` after a response that had no value.
        || kind == "set"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One agent-second of `n` responses of step 0.
    fn report(seq: u64, n: u64) -> v1::Interval {
        let mut h = new_histogram();
        for i in 0..n {
            h.record(1_000 + i * 10).unwrap();
        }
        let mut bytes = Vec::new();
        loadfleet_agent::histogram_codec::WireEncoder::default()
            .encode(&h, &mut bytes)
            .unwrap();
        v1::Interval {
            run_id: "r".into(),
            seq,
            steps: vec![v1::StepInterval {
                step: 0,
                histogram: bytes,
                count: n,
                ..Default::default()
            }],
            elapsed_us: (seq + 1) * 1_000_000,
            ..Default::default()
        }
    }

    /// With a spill file, closed intervals leave nothing in memory, and
    /// read back whole and in order.
    #[test]
    fn closed_intervals_go_to_the_spill_file_not_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collector::new(vec!["a".into()], Duration::from_secs(1));
        c.spill_to(dir.path());
        for seq in 0..300 {
            c.apply("agent", "eu", &report(seq, 20)).unwrap();
            c.close_before(seq);
        }
        c.close_all();
        assert!(c.logged.is_empty() && c.step_rows.is_empty());
        let size = std::fs::metadata(dir.path().join(spill::SPILL_FILE))
            .unwrap()
            .len();
        println!("300 intervals: {size} bytes on disk, 0 in memory");
        let (mut logged, mut last) = (0, Duration::ZERO);
        c.for_each_logged(|li| {
            assert!(li.start >= last, "in order");
            last = li.start;
            logged += 1;
            Ok(())
        })
        .unwrap();
        let mut rows = 0u64;
        let mut requests = 0;
        c.for_each_row(|r| {
            rows += 1;
            requests += r.requests;
        })
        .unwrap();
        // An all-steps histogram and one per step, each interval.
        assert_eq!((logged, rows, requests), (600, 300, 300 * 20));
        c.remove_spill();
        assert!(!dir.path().join(spill::SPILL_FILE).exists());
    }

    /// A long run's timeline stays within its cap: adjacent points merge in
    /// pairs, exactly. 37 intervals of different latencies and a metric,
    /// with a cap of 8: the points cover 8 intervals each (the last one
    /// still filling), and every point's counts, percentiles and metric
    /// mean are those of a histogram of its intervals' samples.
    #[test]
    fn a_long_timeline_merges_its_points_exactly() {
        let mut c = Collector::new(vec!["a".into()], Duration::from_secs(1))
            .with_metrics(vec![MetricSpec {
                name: "m".into(),
                unit: String::new(),
                scale: 1.0,
            }])
            .with_timeline_cap(8);
        let samples = |seq: u64| -> Vec<u64> {
            (0..5 + seq % 7)
                .map(|i| 1_000 + seq * 300 + i * 10)
                .collect()
        };
        for seq in 0..37 {
            let mut r = report(seq, 0);
            let mut h = new_histogram();
            let mut m = new_histogram();
            for v in samples(seq) {
                h.record(v).unwrap();
                m.record(seq).unwrap();
            }
            let enc = |h: &Histogram<u64>| {
                let mut bytes = Vec::new();
                loadfleet_agent::histogram_codec::WireEncoder::default()
                    .encode(h, &mut bytes)
                    .unwrap();
                bytes
            };
            r.steps[0].histogram = enc(&h);
            r.steps[0].count = h.len();
            r.steps[0].metrics = vec![v1::MetricInterval {
                metric: 0,
                histogram: enc(&m),
                missing: 0,
                sum: seq * h.len(),
            }];
            r.active_users = seq as u32;
            c.apply("agent", "eu", &r).unwrap();
            c.close_before(seq);
        }
        c.close_all();
        let points: Vec<&IntervalPoint> = c.timeline().collect();
        println!(
            "37 intervals, cap 8: {} points of {:?} s",
            points.len(),
            points.iter().map(|p| p.length_s).collect::<Vec<_>>()
        );
        assert_eq!(c.timeline_factor, 8);
        // 32 intervals in 4 points of 8, then the last 5 still filling.
        assert_eq!(points.len(), 5);
        let mut first = 0;
        for p in &points {
            let n = p.length_s.round() as u64;
            let seqs = first..first + n;
            assert_eq!(p.start_s, first as f64, "contiguous");
            let mut h = new_histogram();
            let (mut sum, mut count) = (0u64, 0u64);
            for seq in seqs.clone() {
                for v in samples(seq) {
                    h.record(v).unwrap();
                    sum += seq;
                    count += 1;
                }
            }
            assert_eq!(p.requests, h.len(), "intervals {seqs:?}");
            assert_eq!(p.latency_ms, LatencyMs::of(&h), "intervals {seqs:?}");
            let mean = ((sum as f64 / count as f64) * 1000.0).round() / 1000.0;
            assert_eq!(p.metric_means.get("m"), Some(&mean), "intervals {seqs:?}");
            assert_eq!(p.active_users, seqs.end - 1, "users at the point's end");
            first = seqs.end;
        }
        assert_eq!(first, 37, "every interval in one point");
        assert_eq!(c.newest.as_ref().map(|p| p.seq), Some(36));
        assert_eq!(c.newest.as_ref().map(|p| p.length_s), Some(1.0));
    }

    /// Each point of the distribution is the histogram's value at exactly
    /// that percentile, so the table's p90 and the distribution's 90.0 are
    /// the same number.
    #[test]
    fn the_distribution_agrees_with_the_percentiles() {
        for n in [7u64, 150, 10_000] {
            let mut h = new_histogram();
            for i in 0..n {
                h.record(1_000 + (i * i * 7_919) % 3_000_000).unwrap();
            }
            let d = distribution(&h);
            let l = LatencyMs::of(&h).unwrap();
            for (p, ms) in &d {
                let exact = h.value_at_quantile(p / 100.0) as f64 / 1000.0;
                assert_eq!(*ms, exact, "{n} samples: the value at {p}%");
            }
            let at = |p: f64| d.iter().find(|(q, _)| *q == p).map(|(_, ms)| *ms);
            assert_eq!(at(50.0), Some(l.p50), "{n} samples");
            assert_eq!(at(90.0), Some(l.p90), "{n} samples");
            assert_eq!(d.last(), Some(&(100.0, l.max)), "{n} samples");
            assert!(d.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        }
    }
}
