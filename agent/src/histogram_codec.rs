//! The histogram wire codec, both halves side by side: agents send each
//! histogram as HdrHistogram's V2 + DEFLATE encoding ([`WireEncoder`]), and
//! the controller decodes it straight into its non-zero buckets
//! ([`Decoder`] → [`Sparse`]) and adds them. Percentiles never travel, so
//! merged percentiles are exact.
//!
//! Both halves reuse their buffers and (de)compressor from one histogram to
//! the next. The general decoder builds a whole histogram (23,552 zeroed
//! counters) per step per agent per second and then has to scan it again to
//! find the few hundred buckets in use; at 1,000 agents × 20 steps that was
//! most of the controller's CPU. This decoder inflates into one reused
//! buffer and walks the run-length encoded counters once, yielding `(bucket
//! value, count)` pairs that add into any histogram with loadfleet's bounds
//! exactly as `Histogram::add` would.

use std::sync::OnceLock;

use flate2::{Decompress, FlushDecompress, Status};
use hdrhistogram::Histogram;

#[cfg(test)]
use crate::recorder::new_histogram;
use crate::recorder::{HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS, full_range_histogram, record_us};

/// Largest serialized histogram a controller accepts from an agent.
pub const MAX_HISTOGRAM_BYTES: usize = 1024 * 1024;

/// Why a histogram from the wire was refused; `step` names it (`u32::MAX`
/// for a run's totals or send lateness).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("step {step}: histogram of {len} bytes exceeds the {MAX_HISTOGRAM_BYTES}-byte limit")]
    TooLarge { step: u32, len: usize },
    #[error("step {step}: undecodable histogram: {reason}")]
    Undecodable { step: u32, reason: String },
    #[error("step {step}: histogram bounds differ from loadfleet's (1 µs..1 h at most, 3 digits)")]
    Bounds { step: u32 },
}

// === the agent's half: encoding ===

/// HdrHistogram's V2 + DEFLATE encoding, as agents send it, with the
/// plain-encoding buffer and the compressor reused from one histogram to the
/// next. Building a fresh compressor per histogram (as the general
/// serializer does) cost more than everything else the agent does once a
/// second, on the same core as the virtual users.
pub struct WireEncoder {
    plain_serializer: hdrhistogram::serialization::V2Serializer,
    plain: Vec<u8>,
    deflate: flate2::Compress,
}

impl Default for WireEncoder {
    fn default() -> Self {
        WireEncoder {
            plain_serializer: hdrhistogram::serialization::V2Serializer::new(),
            plain: Vec::new(),
            deflate: flate2::Compress::new(flate2::Compression::default(), true),
        }
    }
}

impl std::fmt::Debug for WireEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireEncoder")
    }
}

impl WireEncoder {
    /// Appends the encoding of `h` to `out`: cookie, length, zlib stream.
    pub fn encode(&mut self, h: &Histogram<u64>, out: &mut Vec<u8>) -> Result<(), String> {
        use hdrhistogram::serialization::Serializer;
        self.plain.clear();
        self.plain_serializer
            .serialize(h, &mut self.plain)
            .map_err(|e| format!("{e:?}"))?;
        // The header names the highest value the histogram can hold, which
        // for a histogram that grows is however far it has grown. The wire
        // always names loadfleet's range: the counters mean the same at
        // every size, and the payload holds them only up to the largest
        // value recorded, so the bytes are those of the full-range histogram.
        if let Some(highest) = self.plain.get_mut(HIGHEST_AT..HIGHEST_AT + 8) {
            highest.copy_from_slice(&HIGHEST_US.to_be_bytes());
        }
        let start = out.len();
        out.extend_from_slice(&V2_COMPRESSED_COOKIE.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        let body = out.len();
        // A zlib stream is at most a little larger than its input.
        out.reserve(self.plain.len() + self.plain.len() / 1000 + 64);
        self.deflate.reset();
        let status = self
            .deflate
            .compress_vec(&self.plain, out, flate2::FlushCompress::Finish)
            .map_err(|e| e.to_string())?;
        if status != flate2::Status::StreamEnd {
            out.truncate(start);
            return Err("compressed histogram did not fit its buffer".into());
        }
        let len = u32::try_from(out.len() - body).map_err(|_| "histogram too large".to_string())?;
        out[body - 4..body].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

// === the controller's half: decoding ===

/// HdrHistogram's V2 cookies (the compressed one wraps the plain one).
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;
const HEADER_BYTES: usize = 40;
/// Where the V2 header holds the highest trackable value (8 bytes).
const HIGHEST_AT: usize = 24;
/// The largest payload a histogram with loadfleet's bounds can have: every
/// counter (23,552 of them) as a 9-byte LEB128 number, with room to spare.
const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The value each counter index stands for (its highest equivalent value),
/// for loadfleet's bounds. Recording a bucket's value lands in that bucket.
fn bucket_values() -> &'static [u64] {
    static VALUES: OnceLock<Vec<u64>> = OnceLock::new();
    VALUES.get_or_init(|| {
        full_range_histogram()
            .iter_all()
            .map(|v| v.value_iterated_to())
            .collect()
    })
}

/// The highest value a histogram with loadfleet's precision names when it
/// has grown to hold an hour: the top of the bucket an hour falls in.
fn top_bucket_value() -> u64 {
    bucket_values().last().copied().unwrap_or(HIGHEST_US)
}

/// The non-zero buckets of one histogram, in index order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sparse {
    buckets: Vec<(u64, u64)>,
    count: u64,
}

impl Sparse {
    /// The buckets of an in-memory histogram.
    pub fn of(h: &Histogram<u64>) -> Sparse {
        Sparse {
            buckets: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            count: h.len(),
        }
    }

    /// Samples in all buckets.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Buckets in use.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Adds `other`'s buckets into these (a merge of two sorted lists; a
    /// bucket in both adds its counts, saturating).
    pub fn merge(&mut self, other: &Sparse) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.clone_from(other);
            return;
        }
        let (mine, theirs) = (&self.buckets, &other.buckets);
        let mut merged = Vec::with_capacity(mine.len() + theirs.len());
        let (mut i, mut j) = (0, 0);
        while i < mine.len() && j < theirs.len() {
            let (x, y) = (mine[i], theirs[j]);
            if x.0 == y.0 {
                merged.push((x.0, x.1.saturating_add(y.1)));
                i += 1;
                j += 1;
            } else if x.0 < y.0 {
                merged.push(x);
                i += 1;
            } else {
                merged.push(y);
                j += 1;
            }
        }
        merged.extend_from_slice(&mine[i..]);
        merged.extend_from_slice(&theirs[j..]);
        self.buckets = merged;
        self.count = self.count.saturating_add(other.count);
    }

    /// Adds every bucket into `dest`, which has loadfleet's precision
    /// (and grows to hold them).
    pub fn add_to(&self, dest: &mut Histogram<u64>) {
        for &(value, count) in &self.buckets {
            record_us(dest, value, count);
        }
    }
}

/// Decodes V2 + DEFLATE histograms with loadfleet's bounds, reusing its
/// inflater and buffer from one histogram to the next.
pub struct Decoder {
    inflater: Decompress,
    buf: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflater: Decompress::new(true),
            buf: vec![0; HEADER_BYTES + MAX_PAYLOAD_BYTES],
        }
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn long(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

impl Decoder {
    /// Decodes one histogram; `step` names it in errors.
    pub fn decode(&mut self, step: u32, bytes: &[u8]) -> Result<Sparse, CodecError> {
        let bad = |reason: &str| CodecError::Undecodable {
            step,
            reason: reason.to_string(),
        };
        if bytes.len() > MAX_HISTOGRAM_BYTES {
            return Err(CodecError::TooLarge {
                step,
                len: bytes.len(),
            });
        }
        if bytes.len() < 8 || word(bytes, 0) != V2_COMPRESSED_COOKIE {
            return Err(bad("not an HdrHistogram V2 + DEFLATE histogram"));
        }
        let compressed_len = word(bytes, 4) as usize;
        let compressed = bytes
            .get(8..8 + compressed_len)
            .ok_or_else(|| bad("shorter than its declared length"))?;
        let plain = self.inflate(compressed).map_err(|e| bad(&e))?;
        let head = plain
            .get(..HEADER_BYTES)
            .ok_or_else(|| bad("shorter than a V2 header"))?;
        if word(head, 0) != V2_COOKIE {
            return Err(bad("wrong inner cookie"));
        }
        let payload_len = word(head, 4) as usize;
        if word(head, 8) != 0 {
            return Err(bad("a normalizing index offset (unsupported)"));
        }
        // A histogram that grows names however far it has grown; its
        // counters mean the same as the full range's up to there.
        if word(head, 12) != u32::from(SIGNIFICANT_DIGITS)
            || long(head, 16) != LOWEST_US
            || !(2 * LOWEST_US..=top_bucket_value()).contains(&long(head, HIGHEST_AT))
        {
            return Err(CodecError::Bounds { step });
        }
        if f64::from_bits(long(head, 32)) != 1.0 {
            return Err(bad("an integer-to-double ratio other than 1 (unsupported)"));
        }
        let payload = plain
            .get(HEADER_BYTES..)
            .filter(|p| p.len() == payload_len)
            .ok_or_else(|| bad("payload length differs from its header"))?;
        decode_counts(payload).map_err(bad)
    }

    /// Inflates a zlib stream into the reused buffer; refuses anything larger
    /// than a loadfleet histogram can be.
    fn inflate(&mut self, input: &[u8]) -> Result<&[u8], String> {
        self.inflater.reset(true);
        match self
            .inflater
            .decompress(input, &mut self.buf, FlushDecompress::Finish)
        {
            Ok(Status::StreamEnd) => {}
            Ok(_) if self.inflater.total_out() as usize == self.buf.len() => {
                return Err("inflates to more than any loadfleet histogram".into());
            }
            Ok(_) => return Err("truncated DEFLATE stream".into()),
            Err(e) => return Err(format!("cannot inflate: {e}")),
        }
        let out = self.inflater.total_out() as usize;
        Ok(&self.buf[..out])
    }
}

/// Reads one ZigZag LEB128 number (HdrHistogram's variant: at most 9 bytes,
/// the ninth contributing all 8 bits).
fn read_varint(p: &[u8], at: &mut usize) -> Result<i64, &'static str> {
    let mut value = 0u64;
    for i in 0..9 {
        let b = *p.get(*at).ok_or("a counter is cut off")?;
        *at += 1;
        if i == 8 {
            value |= u64::from(b) << 56;
            break;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

fn decode_counts(payload: &[u8]) -> Result<Sparse, &'static str> {
    let values = bucket_values();
    // Every non-zero counter takes at least one byte: sized once, no regrowth.
    let mut sparse = Sparse {
        buckets: Vec::with_capacity(payload.len().min(values.len())),
        count: 0,
    };
    let mut index = 0usize;
    let mut at = 0usize;
    while at < payload.len() {
        let n = read_varint(payload, &mut at)?;
        if n < 0 {
            let zeros = usize::try_from(n.unsigned_abs()).map_err(|_| "a run of zeros too long")?;
            index = index.checked_add(zeros).ok_or("a run of zeros too long")?;
            continue;
        }
        if n > 0 {
            let value = *values
                .get(index)
                .ok_or("more counters than its bounds have")?;
            let count = n as u64;
            sparse.count = sparse
                .count
                .checked_add(count)
                .ok_or("total count overflows")?;
            sparse.buckets.push((value, count));
        }
        index += 1;
    }
    Ok(sparse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

    /// What the agent sends, the controller reads back bucket for bucket,
    /// from an empty histogram to one spanning every magnitude.
    #[test]
    fn round_trip_from_encoder_to_decoder() {
        let mut enc = WireEncoder::default();
        let mut dec = Decoder::default();
        let mut wide = new_histogram();
        let mut x = 1u64;
        while x < HIGHEST_US {
            wide.record_n(x, x % 1000 + 1).unwrap();
            x = x * 3 / 2 + 1;
        }
        let mut few = new_histogram();
        few.record(250).unwrap();
        for (name, h) in [("empty", new_histogram()), ("one", few), ("wide", wide)] {
            let mut bytes = Vec::new();
            enc.encode(&h, &mut bytes).unwrap();
            let back = dec.decode(0, &bytes).unwrap();
            assert_eq!(back, Sparse::of(&h), "{name}");
            assert_eq!(back.count(), h.len(), "{name}");
            let mut rebuilt = new_histogram();
            back.add_to(&mut rebuilt);
            assert_eq!(
                Sparse::of(&rebuilt),
                Sparse::of(&h),
                "{name}: adding the buckets rebuilds it"
            );
        }
    }

    #[test]
    fn encodes_what_the_standard_decoder_reads_back() {
        let mut enc = WireEncoder::default();
        for n in [0u64, 1, 300, 20_000] {
            let mut h = new_histogram();
            for i in 0..n {
                h.record(1 + (i * 7919) % 5_000_000).unwrap();
            }
            let mut out = vec![9, 9];
            enc.encode(&h, &mut out).unwrap();
            assert_eq!(&out[..2], &[9, 9], "appends");
            let back: Histogram<u64> = Deserializer::new().deserialize(&mut &out[2..]).unwrap();
            assert_eq!(Sparse::of(&back), Sparse::of(&h), "{n} samples");
            assert_eq!(back.high(), HIGHEST_US, "the wire names loadfleet's range");
            assert_eq!(back.len(), n);
        }
    }

    fn encode(h: &Histogram<u64>) -> Vec<u8> {
        let mut b = Vec::new();
        V2DeflateSerializer::new().serialize(h, &mut b).unwrap();
        b
    }

    #[test]
    fn one_bucket_value_per_counter() {
        assert_eq!(
            bucket_values().len(),
            full_range_histogram().distinct_values()
        );
    }

    #[test]
    fn decodes_the_same_buckets_as_the_general_decoder() {
        let mut h = new_histogram();
        // From the lowest to the highest trackable value, with long runs of
        // zeros between and large counts.
        let mut x = 1u64;
        while x < HIGHEST_US {
            h.record_n(x, x % 1000 + 1).unwrap();
            x = x * 3 / 2 + 1;
        }
        h.record_n(HIGHEST_US, u64::from(u32::MAX) * 7).unwrap();
        let bytes = encode(&h);
        let general: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
        let mut d = Decoder::default();
        let mine = d.decode(0, &bytes).unwrap();
        assert_eq!(mine, Sparse::of(&general));
        assert_eq!(mine.count(), h.len());
        // Reused decoder, different input.
        let mut small = new_histogram();
        small.record(250).unwrap();
        let again = d.decode(0, &encode(&small)).unwrap();
        assert_eq!(again.buckets, vec![(250, 1)]);
        let mut rebuilt = new_histogram();
        mine.add_to(&mut rebuilt);
        assert_eq!(Sparse::of(&rebuilt), Sparse::of(&h));
    }

    #[test]
    fn refuses_what_is_not_a_loadfleet_histogram() {
        let mut d = Decoder::default();
        let mut h = new_histogram();
        h.record(10).unwrap();
        let good = encode(&h);
        for (bytes, expect) in [
            (vec![1, 2, 3], "not an HdrHistogram"),
            (good[..good.len() - 3].to_vec(), "shorter than its declared"),
            (
                {
                    let mut b = good.clone();
                    let n = b.len();
                    b[n - 6] ^= 0xff;
                    b
                },
                "",
            ),
        ] {
            let e = d.decode(3, &bytes).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
            assert!(e.starts_with("step 3"), "{e}");
        }
        let other = Histogram::<u64>::new_with_bounds(1, 1000, 2).unwrap();
        assert!(matches!(
            d.decode(1, &encode(&other)),
            Err(CodecError::Bounds { step: 1 })
        ));
        // Still decodes good input afterwards.
        assert_eq!(d.decode(0, &good).unwrap().count(), 1);
    }
}
