//! Cost of recording one sample on the agent's hot path, and of closing an
//! interval (taking the records and serializing one step's histogram).
//!
//! `cargo bench -p loadfleet-agent --bench record`

use std::hint::black_box;
use std::time::{Duration, Instant};

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use loadfleet_agent::recorder::Recorder;

fn main() {
    serialize_cost();
    let mut rec = Recorder::new(20);
    let n: u64 = 20_000_000;
    // Latencies spread over 100 µs .. ~100 ms, steps round-robin.
    let samples: Vec<(usize, Duration)> = (0..4096u64)
        .map(|i| {
            (
                (i % 20) as usize,
                Duration::from_micros(100 + (i * 7919) % 100_000),
            )
        })
        .collect();
    let t = Instant::now();
    for i in 0..n {
        let (step, lat) = samples[(i & 4095) as usize];
        rec.record_response(black_box(step), black_box(lat), 200);
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("record_response: {per:.1} ns per sample ({n} samples, 20 steps)");

    let mut ser = loadfleet_agent::histogram_codec::WireEncoder::default();
    let rounds = 200;
    let mut bytes_total = 0;
    let t = Instant::now();
    for _ in 0..rounds {
        for (step, lat) in samples.iter().take(1000) {
            rec.record_response(*step, *lat, 200);
        }
        let steps = rec.take();
        let mut buf = Vec::new();
        let first = steps[0].as_ref().expect("step 0 was recorded");
        ser.encode(&first.histogram, &mut buf).unwrap();
        bytes_total += buf.len();
    }
    let per = t.elapsed().as_micros() as f64 / rounds as f64;
    println!(
        "close interval (take 20 steps + serialize one with 50 samples): {per:.0} µs; {} bytes per serialized step",
        bytes_total / rounds
    );
}

/// What the aggregator spends per interval at 10,000 requests a second in
/// the open model: three histograms (corrected, uncorrected, lateness) of
/// 10,000 samples each, serialized with and without DEFLATE.
fn serialize_cost() {
    use hdrhistogram::serialization::V2Serializer;
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for i in 0..10_000u64 {
        h.record(50 + (i * 7919) % 2_000).unwrap();
    }
    let rounds = 100;
    let mut deflate = V2DeflateSerializer::new();
    let mut plain = V2Serializer::new();
    let (mut d_bytes, mut p_bytes) = (0, 0);
    let t = Instant::now();
    for _ in 0..rounds {
        for _ in 0..3 {
            let mut buf = Vec::new();
            deflate.serialize(black_box(&h), &mut buf).unwrap();
            d_bytes = buf.len();
        }
    }
    let d = t.elapsed().as_micros() as f64 / rounds as f64;
    let t = Instant::now();
    for _ in 0..rounds {
        for _ in 0..3 {
            let mut buf = Vec::new();
            plain.serialize(black_box(&h), &mut buf).unwrap();
            p_bytes = buf.len();
        }
    }
    let p = t.elapsed().as_micros() as f64 / rounds as f64;
    let mut wire = loadfleet_agent::histogram_codec::WireEncoder::default();
    let mut w_bytes = 0;
    let t = Instant::now();
    for _ in 0..rounds {
        for _ in 0..3 {
            let mut buf = Vec::new();
            wire.encode(black_box(&h), &mut buf).unwrap();
            w_bytes = buf.len();
        }
    }
    let w = t.elapsed().as_micros() as f64 / rounds as f64;
    println!(
        "serialize 3 histograms of 10,000 samples: V2+DEFLATE {d:.0} µs ({d_bytes} bytes each), \
         V2 {p:.0} µs ({p_bytes} bytes each), WireEncoder (V2+DEFLATE, reused compressor) {w:.0} µs ({w_bytes} bytes each)"
    );
}
