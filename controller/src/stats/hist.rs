//! A latency histogram that costs what it holds. A dense HdrHistogram with
//! loadfleet's precision is 16 KiB at the least; a plan of a thousand steps
//! has a tally per step, per region and per open interval, most of them
//! holding a handful of buckets. [`Hist`] keeps the buckets in use as a
//! sorted list until they are as many as the smallest dense histogram has
//! room for, and only then becomes dense. Both forms hold the same buckets,
//! so percentiles, merges and the interval log are exactly those of a
//! histogram fed every sample.

use std::borrow::Cow;

use hdrhistogram::Histogram;
use loadfleet_agent::histogram_codec::Sparse;
use loadfleet_agent::recorder::new_histogram;

/// Buckets at which a histogram turns dense: 1,024 buckets of 16 bytes
/// each are the 16 KiB of the smallest dense histogram.
const DENSE_AT: usize = 1024;

/// `dest += src` for two histograms with loadfleet's precision (which
/// cannot fail; if it did, every bucket is added one by one, saturating).
fn add_histogram(dest: &mut Histogram<u64>, src: &Histogram<u64>) {
    if dest.add(src).is_err() {
        Sparse::of(src).add_to(dest);
    }
}

/// Latencies in microseconds, sparse while few buckets are in use.
#[derive(Debug, Clone)]
pub enum Hist {
    Sparse(Sparse),
    Dense(Histogram<u64>),
}

impl Default for Hist {
    fn default() -> Self {
        Hist::Sparse(Sparse::default())
    }
}

impl Hist {
    /// Samples held.
    pub fn len(&self) -> u64 {
        match self {
            Hist::Sparse(s) => s.count(),
            Hist::Dense(h) => h.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds buckets as they came off the wire.
    pub fn add_sparse(&mut self, theirs: &Sparse) {
        match self {
            Hist::Dense(h) => theirs.add_to(h),
            Hist::Sparse(mine) if mine.buckets() + theirs.buckets() <= DENSE_AT => {
                mine.merge(theirs);
            }
            Hist::Sparse(_) => theirs.add_to(self.dense()),
        }
    }

    /// Adds another histogram into this one.
    pub fn add(&mut self, other: &Hist) {
        match other {
            Hist::Sparse(s) => self.add_sparse(s),
            Hist::Dense(theirs) => add_histogram(self.dense(), theirs),
        }
    }

    /// Turns this histogram dense (if it is not yet) and returns it.
    fn dense(&mut self) -> &mut Histogram<u64> {
        if let Hist::Sparse(s) = self {
            let mut h = new_histogram();
            s.add_to(&mut h);
            *self = Hist::Dense(h);
        }
        match self {
            Hist::Dense(h) => h,
            Hist::Sparse(_) => unreachable!("made dense just above"),
        }
    }

    /// The histogram, dense (made for the occasion when it is sparse:
    /// outputs and percentiles, never per report).
    pub fn histogram(&self) -> Cow<'_, Histogram<u64>> {
        match self {
            Hist::Dense(h) => Cow::Borrowed(h),
            Hist::Sparse(s) => {
                let mut h = new_histogram();
                s.add_to(&mut h);
                Cow::Owned(h)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse_of(values: impl IntoIterator<Item = u64>) -> Sparse {
        let mut h = new_histogram();
        for v in values {
            h.record(v).unwrap();
        }
        Sparse::of(&h)
    }

    /// Sparse and dense forms, merged in any order, hold exactly the
    /// buckets of one histogram fed every sample.
    #[test]
    fn sparse_then_dense_is_exact() {
        let mut fed = new_histogram();
        let mut hist = Hist::default();
        let mut dense_seen = false;
        for round in 0..40u64 {
            // Each round adds 60 distinct buckets; by round 17 the list
            // passes 1,024 and turns dense.
            let values: Vec<u64> = (0..60).map(|i| 3_000 + round * 61 * 7 + i * 7).collect();
            for &v in &values {
                fed.record(v).unwrap();
                fed.record(v).unwrap();
            }
            hist.add_sparse(&sparse_of(values.iter().copied()));
            let mut other = Hist::default();
            other.add_sparse(&sparse_of(values.iter().copied()));
            hist.add(&other);
            dense_seen |= matches!(hist, Hist::Dense(_));
            assert_eq!(hist.len(), fed.len(), "round {round}");
        }
        assert!(dense_seen, "turns dense past {DENSE_AT} buckets");
        assert_eq!(Sparse::of(&hist.histogram()), Sparse::of(&fed));
        assert_eq!(
            hist.histogram().value_at_quantile(0.99),
            fed.value_at_quantile(0.99)
        );
        // Few buckets stay sparse, and read back the same.
        let mut few = Hist::default();
        few.add_sparse(&sparse_of([250, 250, 1_000_000]));
        few.add_sparse(&sparse_of([250, 40]));
        assert!(
            matches!(few, Hist::Sparse(ref s) if s.buckets() == 3),
            "{few:?}"
        );
        assert_eq!(few.len(), 5);
        assert_eq!(
            few.histogram().max(),
            few.histogram().highest_equivalent(1_000_000)
        );
        // A dense histogram added into a sparse one.
        let mut into = Hist::default();
        into.add_sparse(&sparse_of([5]));
        into.add(&Hist::Dense(fed.clone()));
        assert_eq!(into.len(), fed.len() + 1);
    }
}
