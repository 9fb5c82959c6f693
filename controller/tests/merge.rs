//! Merge exactness: samples split across agents and intervals, serialized as
//! agents serialize them, decoded and merged by the controller, give exactly
//! the percentiles of one histogram fed every sample.

use std::time::Duration;

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use loadfleet_agent::recorder::Recorder;
use loadfleet_controller::stats::{Collector, LatencyMs, distribution};
use loadfleet_proto::v1;

/// A deterministic, heavy-tailed latency in microseconds (50 µs .. ~60 s).
fn sample(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let u = (*state >> 11) as f64 / (1u64 << 53) as f64;
    (50.0 * (1.0 / (1.0 - u * 0.99999)).powf(1.2)) as u64 + (*state % 50)
}

/// One agent's report of interval `seq`.
fn interval(seq: u64, steps: Vec<v1::StepInterval>) -> v1::Interval {
    v1::Interval {
        run_id: "r".into(),
        seq,
        active_users: 1,
        steps,
        elapsed_us: (seq + 1) * 1_000_000,
        dropped: 0,
        lateness: Vec::new(),
        started: 0,
        completed: 0,
        active_peak: 0,
        active_mean: 0.0,
        loop_lag_max_us: 0,
        cpu_us: 0,
        rss_bytes: 0,
        steal_permille: 0,
        connections: 0,
        cores: 0,
        vitals_span_us: 0,
        host: None,
    }
}

/// Step `step`'s histogram in a report.
fn step_of(step: u32, histogram: Vec<u8>, count: u64) -> v1::StepInterval {
    v1::StepInterval {
        metrics: Vec::new(),
        http2_responses: 0,
        loop_bound_hits: 0,
        step,
        histogram,
        count,
        errors: vec![],
        uncorrected: Vec::new(),
        failed: Vec::new(),
        exchanges: 0,
        retries: 0,
        bytes_received: 0,
        bytes_decoded: 0,
    }
}

#[test]
fn merged_percentiles_equal_one_histogram_of_all_samples() {
    let agents = ["a1", "a2", "a3", "a4", "a5"];
    let regions = ["eu", "eu", "us", "us", "ap"];
    let mut single = loadfleet_agent::recorder::new_histogram();
    let mut per_agent = vec![loadfleet_agent::recorder::new_histogram(); agents.len()];
    let mut collector = Collector::new(vec!["step".into()], Duration::from_secs(1));
    let mut serializer = V2DeflateSerializer::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut total = 0u64;
    for seq in 0..4u64 {
        for (i, agent) in agents.iter().enumerate() {
            // Each agent records its share in its own recorder, as the engine does.
            let mut rec = Recorder::new(1);
            let n = 5_000 + 1_000 * i as u64 + seq * 17;
            for _ in 0..n {
                let us = sample(&mut rng);
                rec.record_response(0, Duration::from_micros(us), 200);
                single.record(us.max(1)).unwrap();
                per_agent[i].record(us.max(1)).unwrap();
            }
            total += n;
            let step = rec.take().remove(0).expect("recorded");
            let mut bytes = Vec::new();
            serializer.serialize(&step.histogram, &mut bytes).unwrap();
            let iv = interval(seq, vec![step_of(0, bytes, n)]);
            collector
                .apply(agent, regions[i], &iv)
                .expect("valid report merges");
        }
    }
    collector.close_all();
    let merged = &collector.total.responses_histogram();
    assert_eq!(merged.len(), total);
    assert_eq!(single.len(), total);
    for q in [
        0.0, 0.1, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.99999, 1.0,
    ] {
        let (m, s) = (merged.value_at_quantile(q), single.value_at_quantile(q));
        assert_eq!(m, s, "quantile {q}: merged {m} µs, single {s} µs");
    }
    assert_eq!(merged.min(), single.min());
    assert_eq!(merged.max(), single.max());
    assert_eq!(merged.mean(), single.mean());
    assert_eq!(LatencyMs::of(merged), LatencyMs::of(&single));
    eprintln!(
        "{total} samples: p50 {} µs, p99 {} µs, p99.99 {} µs, max {} µs",
        single.value_at_quantile(0.5),
        single.value_at_quantile(0.99),
        single.value_at_quantile(0.9999),
        single.max()
    );
    // Each agent's own totals, as its Done carries them.
    for (i, agent) in agents.iter().enumerate() {
        let mut bytes = Vec::new();
        serializer.serialize(&per_agent[i], &mut bytes).unwrap();
        let totals = v1::Totals {
            histogram: bytes,
            count: per_agent[i].len(),
            uncorrected: Vec::new(),
            failed: Vec::new(),
            lateness: Vec::new(),
        };
        collector
            .apply_totals(agent, &totals)
            .expect("totals that agree with the reports are taken");
    }
    // Per agent, per region and per step, the same exactness.
    for (i, agent) in agents.iter().enumerate() {
        let got = collector.agents[*agent]
            .latency
            .as_ref()
            .expect("figures from the agent's totals");
        assert_eq!(collector.agents[*agent].requests(), per_agent[i].len());
        assert_eq!(Some(got.latency), LatencyMs::of(&per_agent[i]), "{agent}");
        assert_eq!(got.distribution, distribution(&per_agent[i]), "{agent}");
        assert!(got.distribution.len() > 20, "{:?}", got.distribution);
    }
    let mut eu_single = per_agent[0].clone();
    eu_single.add(&per_agent[1]).unwrap();
    assert_eq!(
        collector.regions["eu"]
            .responses_histogram()
            .value_at_quantile(0.99),
        eu_single.value_at_quantile(0.99)
    );
    let eu = &collector.regions["eu"].responses_histogram();
    assert_eq!(
        eu.len()
            + collector.regions["us"].responses_histogram().len()
            + collector.regions["ap"].responses_histogram().len(),
        total
    );
    assert_eq!(
        collector.steps[0]
            .responses_histogram()
            .value_at_quantile(0.999),
        single.value_at_quantile(0.999)
    );
    // Every interval of the timeline holds what the five agents sent for it:
    // one active user each, by region as well.
    assert_eq!(collector.timeline().count(), 4);
    for p in collector.timeline() {
        assert_eq!(p.active_users, 5);
        let by_region: Vec<(&str, u64)> = p
            .active_by_region
            .iter()
            .map(|(r, &n)| (r.as_str(), n))
            .collect();
        assert_eq!(by_region, [("ap", 1), ("eu", 2), ("us", 2)]);
    }
    assert_eq!(collector.timeline().map(|p| p.requests).sum::<u64>(), total);
}

#[test]
fn a_bad_report_is_dropped_whole() {
    let mut collector = Collector::new(vec!["a".into(), "b".into()], Duration::from_secs(1));
    let mut rec = Recorder::new(2);
    rec.record_response(0, Duration::from_millis(3), 200);
    let steps = rec.take();
    let mut good = Vec::new();
    V2DeflateSerializer::new()
        .serialize(&steps[0].as_ref().expect("recorded").histogram, &mut good)
        .unwrap();
    let report = |steps: Vec<v1::StepInterval>| v1::Interval {
        run_id: "r".into(),
        seq: 0,
        active_users: 1,
        steps,
        elapsed_us: 1_000_000,
        dropped: 0,
        lateness: Vec::new(),
        started: 0,
        completed: 0,
        active_peak: 0,
        active_mean: 0.0,
        loop_lag_max_us: 0,
        cpu_us: 0,
        rss_bytes: 0,
        steal_permille: 0,
        connections: 0,
        cores: 0,
        vitals_span_us: 0,
        host: None,
    };
    let good_step = v1::StepInterval {
        metrics: Vec::new(),
        http2_responses: 0,
        loop_bound_hits: 0,
        step: 0,
        histogram: good.clone(),
        count: 1,
        errors: vec![],
        uncorrected: Vec::new(),
        failed: Vec::new(),
        exchanges: 0,
        retries: 0,
        bytes_received: 0,
        bytes_decoded: 0,
    };
    let cases = [
        (
            vec![
                good_step.clone(),
                v1::StepInterval {
                    metrics: Vec::new(),
                    http2_responses: 0,
                    loop_bound_hits: 0,
                    step: 1,
                    histogram: b"not a histogram".to_vec(),
                    count: 1,
                    errors: vec![],
                    uncorrected: Vec::new(),
                    failed: Vec::new(),
                    exchanges: 0,
                    retries: 0,
                    bytes_received: 0,
                    bytes_decoded: 0,
                },
            ],
            "undecodable",
        ),
        (
            vec![
                good_step.clone(),
                v1::StepInterval {
                    metrics: Vec::new(),
                    http2_responses: 0,
                    loop_bound_hits: 0,
                    step: 7,
                    histogram: good.clone(),
                    count: 1,
                    errors: vec![],
                    uncorrected: Vec::new(),
                    failed: Vec::new(),
                    exchanges: 0,
                    retries: 0,
                    bytes_received: 0,
                    bytes_decoded: 0,
                },
            ],
            "unknown step",
        ),
        (
            vec![v1::StepInterval {
                metrics: Vec::new(),
                http2_responses: 0,
                loop_bound_hits: 0,
                step: 0,
                histogram: good.clone(),
                count: 5,
                errors: vec![],
                uncorrected: Vec::new(),
                failed: Vec::new(),
                exchanges: 0,
                retries: 0,
                bytes_received: 0,
                bytes_decoded: 0,
            }],
            "does not match",
        ),
        (
            vec![v1::StepInterval {
                metrics: Vec::new(),
                http2_responses: 0,
                loop_bound_hits: 0,
                step: 0,
                histogram: vec![0; 2 * 1024 * 1024],
                count: 1,
                errors: vec![],
                uncorrected: Vec::new(),
                failed: Vec::new(),
                exchanges: 0,
                retries: 0,
                bytes_received: 0,
                bytes_decoded: 0,
            }],
            "exceeds",
        ),
    ];
    for (steps, expected) in cases {
        let err = collector.apply("a1", "eu", &report(steps)).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    collector.close_all();
    assert_eq!(
        collector.total.requests(),
        0,
        "nothing of a bad report was applied"
    );
    assert_eq!(collector.timeline().count(), 0);
    assert!(collector.agents.is_empty(), "{:?}", collector.agents.keys());
    collector
        .apply("a1", "eu", &report(vec![good_step]))
        .unwrap();
    collector.close_all();
    assert_eq!(collector.total.requests(), 1);
    assert_eq!(collector.regions["eu"].requests(), 1);
}

/// An agent's totals describe its latencies only if they hold exactly the
/// responses its reports held here; otherwise its percentiles stay unknown
/// and nothing else changes.
#[test]
fn totals_that_disagree_with_the_reports_are_not_used() {
    let mut collector = Collector::new(vec!["a".into()], Duration::from_secs(1));
    let mut serializer = V2DeflateSerializer::new();
    let encode = |ms: &[u64], serializer: &mut V2DeflateSerializer| {
        let mut rec = Recorder::new(1);
        for &m in ms {
            rec.record_response(0, Duration::from_millis(m), 200);
        }
        let h = rec.take().remove(0).expect("recorded").histogram;
        let mut bytes = Vec::new();
        serializer.serialize(&h, &mut bytes).unwrap();
        (bytes, h.len())
    };
    for (agent, ms) in [("a1", [3u64, 4, 5]), ("a2", [30, 40, 50])] {
        let (bytes, count) = encode(&ms, &mut serializer);
        let iv = interval(0, vec![step_of(0, bytes, count)]);
        collector.apply(agent, "eu", &iv).unwrap();
    }
    collector.close_all();
    let totals = |histogram, count, lateness| v1::Totals {
        histogram,
        count,
        uncorrected: Vec::new(),
        failed: Vec::new(),
        lateness,
    };
    // a1 claims one response more than its reports held (say a report was
    // lost on the way): 4 against 3.
    let (bytes, count) = encode(&[3, 4, 5, 6], &mut serializer);
    let err = collector
        .apply_totals("a1", &totals(bytes, count, Vec::new()))
        .unwrap_err();
    assert!(err.to_string().contains("count 4 responses"), "{err}");
    assert!(err.to_string().contains("its reports here 3"), "{err}");
    assert!(collector.agents["a1"].latency.is_none());
    // a2's totals say 3 but hold 2.
    let (bytes, _) = encode(&[30, 40], &mut serializer);
    let err = collector
        .apply_totals("a2", &totals(bytes, 3, Vec::new()))
        .unwrap_err();
    assert!(err.to_string().contains("(2 in the histogram)"), "{err}");
    // Garbage is refused like a bad report.
    let err = collector
        .apply_totals("a2", &totals(b"HISTFAAA".to_vec(), 3, Vec::new()))
        .unwrap_err();
    assert!(err.to_string().contains("undecodable"), "{err}");
    assert!(collector.agents["a2"].latency.is_none());
    // Send lateness too must match what the reports held (here: none).
    let (bytes, count) = encode(&[3, 4, 5], &mut serializer);
    let (lateness, _) = encode(&[1], &mut serializer);
    let err = collector
        .apply_totals("a1", &totals(bytes, count, lateness))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("1 send-lateness samples, its reports here 0"),
        "{err}"
    );
    assert!(collector.agents["a1"].latency.is_none());
    // Counts and the region's exact percentiles never depended on them.
    assert_eq!(collector.agents["a1"].requests(), 3);
    assert_eq!(collector.regions["eu"].requests(), 6);
    assert_eq!(
        collector.regions["eu"].responses_histogram().max(),
        collector.regions["eu"]
            .responses_histogram()
            .highest_equivalent(50_000)
    );
}

/// A report whose interval is already closed still counts, exactly, in the
/// fleet's, its step's and its region's totals (only the timeline misses it).
#[test]
fn a_late_report_counts_in_its_region_and_step() {
    let mut collector = Collector::new(vec!["a".into(), "b".into()], Duration::from_secs(1));
    let mut serializer = V2DeflateSerializer::new();
    let mut report = |seq: u64, step: u32, ms: &[u64]| {
        let mut rec = Recorder::new(2);
        for &m in ms {
            rec.record_response(step as usize, Duration::from_millis(m), 200);
        }
        let h = rec
            .take()
            .remove(step as usize)
            .expect("recorded")
            .histogram;
        let mut bytes = Vec::new();
        serializer.serialize(&h, &mut bytes).unwrap();
        interval(seq, vec![step_of(step, bytes, h.len())])
    };
    collector.apply("a1", "eu", &report(0, 0, &[2, 3])).unwrap();
    collector.apply("a2", "us", &report(0, 1, &[20])).unwrap();
    collector.close_before(1);
    assert_eq!(collector.timeline().count(), 1);
    assert_eq!(collector.regions["us"].requests(), 1);
    // a2's report for the closed interval 0 arrives late, for step 0.
    collector
        .apply("a2", "us", &report(0, 0, &[40, 50]))
        .unwrap();
    collector.close_all();
    assert_eq!(collector.late_reports, 1);
    assert_eq!(collector.timeline().count(), 1, "the timeline misses it");
    assert_eq!(collector.timeline().next().unwrap().requests, 3);
    assert_eq!(collector.total.requests(), 5);
    assert_eq!(collector.steps[0].requests(), 4);
    assert_eq!(collector.regions["us"].requests(), 3);
    assert_eq!(collector.regions["eu"].requests(), 2);
    let us = &collector.regions["us"].responses_histogram();
    assert_eq!(us.max(), us.highest_equivalent(50_000));
    assert_eq!(us.min(), us.lowest_equivalent(20_000));
}

/// A V2 + DEFLATE histogram with a hand-written inner header.
fn crafted(payload_len: u32, digits: u32, low: u64, high: u64) -> Vec<u8> {
    use std::io::Write;
    let mut inner = Vec::new();
    inner.extend_from_slice(&(0x1c84_9303u32 | 0x10).to_be_bytes());
    inner.extend_from_slice(&payload_len.to_be_bytes());
    inner.extend_from_slice(&0u32.to_be_bytes());
    inner.extend_from_slice(&digits.to_be_bytes());
    inner.extend_from_slice(&low.to_be_bytes());
    inner.extend_from_slice(&high.to_be_bytes());
    inner.extend_from_slice(&1.0f64.to_be_bytes());
    inner.extend_from_slice(&[2, 0]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&inner).unwrap();
    let compressed = z.finish().unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&(0x1c84_9304u32 | 0x10).to_be_bytes());
    out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    out.extend_from_slice(&compressed);
    out
}

#[test]
fn hostile_headers_are_refused_before_anything_is_allocated() {
    let high = loadfleet_agent::recorder::HIGHEST_US;
    // Declares a 4 GiB payload: the decoder would allocate it.
    let mut decoder = loadfleet_controller::stats::Decoder::default();
    let e = decoder
        .decode(0, &crafted(0xFFFF_FFF0, 3, 1, high))
        .unwrap_err();
    assert!(e.to_string().contains("payload length differs"), "{e}");
    // Asks for a huge counter array (5 digits up to 2^62).
    let e = decoder.decode(0, &crafted(2, 5, 1, 1 << 62)).unwrap_err();
    assert!(e.to_string().contains("bounds differ"), "{e}");
    // Garbage after a valid cookie.
    let mut junk = crafted(2, 3, 1, high);
    junk.truncate(12);
    assert!(decoder.decode(0, &junk).is_err());
    // The well-formed header with loadfleet's bounds still decodes.
    let mut rec = Recorder::new(1);
    rec.record_response(0, Duration::from_millis(7), 200);
    let mut good = Vec::new();
    V2DeflateSerializer::new()
        .serialize(
            &rec.take()[0].as_ref().expect("recorded").histogram,
            &mut good,
        )
        .unwrap();
    assert_eq!(decoder.decode(0, &good).unwrap().count(), 1);
}
