//! Cost of merging on the controller: one agent's interval report of 20
//! steps (decode V2+DEFLATE, check, add into its open interval's cells by
//! step and region; regions, steps and the total are summed when intervals
//! close).
//! 1,000 agents report once a second, so this number times 1,000 is the
//! controller's CPU share per second at that scale.
//!
//! `cargo bench -p loadfleet-controller --bench merge`

use std::time::{Duration, Instant};

use loadfleet_agent::recorder::Recorder;
use loadfleet_controller::stats::Collector;
use loadfleet_proto::v1;

fn main() {
    let steps = 20;
    let names: Vec<String> = (0..steps).map(|i| format!("step {i}")).collect();
    // One agent's second: 200 samples per step, 100 µs .. 100 ms.
    let mut rec = Recorder::new(steps);
    for i in 0..(200 * steps as u64) {
        rec.record_response(
            (i % steps as u64) as usize,
            Duration::from_micros(100 + (i * 7919) % 100_000),
            200,
        );
    }
    let mut ser = loadfleet_agent::histogram_codec::WireEncoder::default();
    let step_msgs: Vec<v1::StepInterval> = rec
        .take()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.as_ref()?)))
        .map(|(i, s)| {
            let mut b = Vec::new();
            ser.encode(&s.histogram, &mut b).unwrap();
            v1::StepInterval {
                metrics: Vec::new(),
                http2_responses: 0,
                loop_bound_hits: 0,
                step: i as u32,
                histogram: b,
                count: s.count(),
                errors: vec![],
                uncorrected: Vec::new(),
                failed: Vec::new(),
                exchanges: 0,
                retries: 0,
                bytes_received: 0,
                bytes_decoded: 0,
            }
        })
        .collect();
    let wire: usize = step_msgs.iter().map(|s| s.histogram.len()).sum();
    let mut c = Collector::new(names, Duration::from_secs(1));
    // The target scale, so per-interval work is shared as it would be.
    let agents = 1000;
    let names: Vec<(String, String)> = (0..agents)
        .map(|a| (format!("agent-{a}"), format!("region-{}", a % 3)))
        .collect();
    let report = |seq: u64| v1::Interval {
        run_id: "r".into(),
        seq,
        active_users: 10,
        steps: step_msgs.clone(),
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
    };
    // The first second allocates every agent's tally; time the steady state.
    let warm_up = 1u64;
    let seconds = 5u64;
    let mut t = Instant::now();
    for seq in 0..warm_up + seconds {
        if seq == warm_up {
            t = Instant::now();
        }
        for (agent, region) in &names {
            c.apply(agent, region, &report(seq)).unwrap();
        }
        c.close_before(seq);
    }
    c.close_all();
    let reports = agents as u64 * seconds;
    let per = t.elapsed().as_micros() as f64 / reports as f64;
    println!(
        "merge one agent-second ({steps} steps, 200 samples each, {wire} bytes of histograms): {per:.0} µs; \
         1,000 agents would use {:.0}% of one core",
        per * 1000.0 / 10_000.0
    );
}
