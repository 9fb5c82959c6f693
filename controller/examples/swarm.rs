//! A swarm of simulated agents, for measuring what a large fleet costs the
//! controller (`bench/controller_cost.sh`). Each simulated agent is a real
//! gRPC stream doing what `loadfleet-agent` does on the wire: Hello, Ready,
//! clock pongs, then one interval report per second with every step's
//! histogram, then Done. It sends no HTTP load: the histograms are recorded
//! once from made-up latencies and sent every second.
//!
//! `cargo run --release --example swarm -- CONTROLLER_URL AGENTS PREFIX SAMPLES_PER_STEP`
//!
//! Prints the gRPC bytes it sent per agent per second (protobuf messages plus
//! gRPC's 5-byte frame header; HTTP/2 and TCP framing not included).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use loadfleet_agent::histogram_codec::WireEncoder;
use loadfleet_agent::recorder::Recorder;
use loadfleet_proto::v1::{self, agent_message, controller_message, fleet_client::FleetClient};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct Counters {
    bytes: AtomicU64,
    reports: AtomicU64,
    /// Dials that failed and were tried again.
    redials: AtomicU64,
    /// The latest any agent of this process got its assignment, in
    /// microseconds from the process's start.
    assigned_by_us: AtomicU64,
    began: Instant,
}

fn msg(body: agent_message::Body) -> v1::AgentMessage {
    v1::AgentMessage { body: Some(body) }
}

/// One agent's report of one second: `samples` latencies per step between
/// 100 µs and 100 ms, each step's histogram encoded as agents encode it;
/// and all steps' latencies together, for the agent's totals.
fn step_reports(steps: usize, samples: u64, salt: u64) -> (Vec<v1::StepInterval>, Histogram<u64>) {
    let mut rec = Recorder::new(steps);
    for i in 0..samples * steps as u64 {
        let x = i.wrapping_mul(7919).wrapping_add(salt * 104_729);
        rec.record_response(
            (i % steps as u64) as usize,
            Duration::from_micros(100 + x % 100_000),
            200,
        );
    }
    let mut enc = WireEncoder::default();
    let recorded = rec.take();
    let mut all = loadfleet_agent::recorder::new_histogram();
    for s in recorded.iter().flatten() {
        all.add(&s.histogram).expect("same bounds");
    }
    let reports = recorded
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.as_ref()?)))
        .map(|(i, s)| {
            let mut histogram = Vec::new();
            enc.encode(&s.histogram, &mut histogram)
                .expect("encoding a fresh histogram");
            v1::StepInterval {
                metrics: Vec::new(),
                http2_responses: 0,
                step: i as u32,
                histogram,
                count: s.count(),
                errors: Vec::new(),
                uncorrected: Vec::new(),
                failed: Vec::new(),
                exchanges: 0,
                retries: 0,
                bytes_received: 0,
                bytes_decoded: 0,
                loop_bound_hits: 0,
            }
        })
        .collect();
    (reports, all)
}

/// What an agent that sent `one_second` `seconds` times recorded in all.
fn totals(one_second: &Histogram<u64>, seconds: u64) -> v1::Totals {
    let mut all = loadfleet_agent::recorder::new_histogram();
    for _ in 0..seconds {
        all.add(one_second).expect("same bounds");
    }
    let mut histogram = Vec::new();
    WireEncoder::default()
        .encode(&all, &mut histogram)
        .expect("encoding a histogram");
    v1::Totals {
        histogram,
        count: all.len(),
        uncorrected: Vec::new(),
        failed: Vec::new(),
        lateness: Vec::new(),
    }
}

type Link = (
    mpsc::Sender<v1::AgentMessage>,
    tonic::Streaming<v1::ControllerMessage>,
);

/// Dials and says Hello; the stream is open when this returns.
async fn attach(url: &str, name: &str, counters: &Counters) -> Result<Link, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = FleetClient::new(channel);
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(16);
    let hello = msg(agent_message::Body::Hello(v1::Hello {
        name: name.to_string(),
        region: format!("region-{}", name.len() % 3),
        version: "swarm".into(),
        weight: 1,
        resume_run_id: String::new(),
        check_only: false,
        allowed_targets: Vec::new(),
        allow_any_target: true,
        timing: String::new(),
        observer: false,
        observe_processes: Vec::new(),
        protocol: loadfleet_proto::PROTOCOL,
    }));
    counters
        .bytes
        .fetch_add(hello.encoded_len() as u64 + 5, Ordering::Relaxed);
    tx.send(hello)
        .await
        .map_err(|_| "stream closed".to_string())?;
    let inbound = client
        .attach(ReceiverStream::new(rx))
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    Ok((tx, inbound))
}

async fn agent(
    url: String,
    name: String,
    samples: u64,
    counters: Arc<Counters>,
) -> Result<(), String> {
    // A thousand dials at once can be refused or reset: try again, as
    // agents do, with a growing pause.
    let mut attempt = 0u64;
    let (tx, mut inbound) = loop {
        match attach(&url, &name, &counters).await {
            Ok(link) => break link,
            Err(e) if attempt >= 30 => return Err(e),
            Err(_) => {
                counters.redials.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt.min(5))).await;
            }
        }
    };
    let send = |m: v1::AgentMessage| {
        let tx = tx.clone();
        let counters = counters.clone();
        async move {
            counters
                .bytes
                .fetch_add(m.encoded_len() as u64 + 5, Ordering::Relaxed);
            tx.send(m).await.map_err(|_| "stream closed".to_string())
        }
    };
    let clock = Instant::now();
    // The run's id, one second's reports, all their latencies, and how many seconds.
    type Run = (String, Vec<v1::StepInterval>, Histogram<u64>, u64);
    let mut run: Option<Run> = None;
    let start = loop {
        let m = inbound
            .message()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("controller closed the stream")?;
        match m.body {
            Some(controller_message::Body::Assign(a)) => {
                counters.assigned_by_us.fetch_max(
                    counters.began.elapsed().as_micros() as u64,
                    Ordering::Relaxed,
                );
                let (steps, one_second) =
                    step_reports(a.step_names.len(), samples, name.len() as u64);
                send(msg(agent_message::Body::Ready(v1::Ready {
                    run_id: a.run_id.clone(),
                })))
                .await?;
                // Seconds of reports: the run's duration, like a real agent.
                let seconds = a.duration_us.div_ceil(1_000_000).max(1);
                run = Some((a.run_id, steps, one_second, seconds));
            }
            Some(controller_message::Body::Ping(p)) => {
                send(msg(agent_message::Body::Pong(v1::Pong {
                    nonce: p.nonce,
                    agent_clock_us: clock.elapsed().as_micros() as u64,
                    agent_wall_us: 0,
                })))
                .await?;
            }
            Some(controller_message::Body::Start(s)) => {
                break if s.start_at_us > 0 {
                    clock + Duration::from_micros(s.start_at_us)
                } else {
                    Instant::now() + Duration::from_micros(s.start_in_us)
                };
            }
            Some(controller_message::Body::Reject(r)) => return Err(r.reason),
            _ => {}
        }
    };
    let (run_id, steps, one_second, seconds) = run.ok_or("started without an assignment")?;
    // How late this agent starts its load, as a real agent measures it: the
    // moment it wakes for the start, against the start it was given.
    tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
    let start_lateness_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut seq = 0u64;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    while seq < seconds {
        tokio::select! {
            _ = tick.tick() => {
                send(msg(agent_message::Body::Interval(v1::Interval {
                    run_id: run_id.clone(),
                    seq,
                    active_users: 1,
                    steps: steps.clone(),
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
                }))).await?;
                counters.reports.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            m = inbound.message() => match m.map_err(|e| e.to_string())? {
                Some(v1::ControllerMessage { body: Some(controller_message::Body::Stop(_)) }) | None => break,
                _ => {}
            },
        }
    }
    send(msg(agent_message::Body::Done(v1::Done {
        run_id,
        last_seq: seq.saturating_sub(1),
        start_lateness_us,
        totals: Some(totals(&one_second, seq)),
        cut_short: String::new(),
        abandoned: 0,
    })))
    .await?;
    // Let the controller close the stream.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = inbound.message().await {}
    })
    .await;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: swarm CONTROLLER_URL AGENTS PREFIX SAMPLES_PER_STEP";
    let [_, url, agents, prefix, samples] = &args[..] else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(agents), Ok(samples)) = (agents.parse::<usize>(), samples.parse::<u64>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let counters = Arc::new(Counters {
        bytes: AtomicU64::new(0),
        reports: AtomicU64::new(0),
        redials: AtomicU64::new(0),
        assigned_by_us: AtomicU64::new(0),
        began: Instant::now(),
    });
    let mut tasks = Vec::new();
    for i in 0..agents {
        tasks.push(tokio::spawn(agent(
            url.clone(),
            format!("{prefix}-{i}"),
            samples,
            counters.clone(),
        )));
    }
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("swarm agent failed: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("swarm agent panicked: {e}");
            }
        }
    }
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let reports = counters.reports.load(Ordering::Relaxed);
    println!(
        "swarm {prefix}: {agents} agents, {failed} failed, {reports} reports, {bytes} bytes sent, {:.0} bytes per agent-second; all assigned {:.1} s after the swarm began, {} dials tried again",
        bytes as f64 / reports.max(1) as f64,
        counters.assigned_by_us.load(Ordering::Relaxed) as f64 / 1e6,
        counters.redials.load(Ordering::Relaxed),
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
