//! The engine against a real HTTP server (the testbed) on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use loadfleet_agent::arrivals::{RateSchedule, RateStage};
use loadfleet_agent::assignment::{Assignment, Bound, OpenLoad, Scenario, Step, Target, UserSlot};
use loadfleet_agent::engine;
use loadfleet_proto::v1;
use loadfleet_testbed::{Config, Testbed};

fn assignment(
    base: &str,
    paths: &[&str],
    users: u64,
    bound: Bound,
    timeout: Duration,
) -> Assignment {
    let target = Target::parse(base, timeout).unwrap();
    let steps = paths
        .iter()
        .enumerate()
        .map(|(i, p)| Step::fixed(i, http::Method::GET, target.request_uri(p).unwrap()))
        .collect();
    Assignment {
        run_id: "test".into(),
        scenarios: vec![Scenario::new("s", steps)],
        users: (0..users)
            .map(|k| UserSlot {
                index: k,
                start_offset: Duration::ZERO,
                scenario: 0,
                stop_offset: None,
                bound: None,
            })
            .collect(),
        bound,
        interval: Duration::from_millis(200),
        step_names: paths.iter().map(|p| p.to_string()).collect(),
        metric_names: Vec::new(),
        max_run: Duration::from_secs(30),
        graceful_stop: Duration::from_secs(30),
        target,
        open: Vec::new(),
        vars: Default::default(),
        data: vec![],
        fleet_users: users,
        clear_cookies_each_iteration: false,
        throttle_per_s: None,
        seed: 1,
        lists: Default::default(),
        builtins: Vec::new(),
        list_items: Vec::new(),
        group_steps: vec![false; paths.len()],
        agent_name: "test".into(),
        region: "local".into(),
        user_slots: Default::default(),
    }
}

/// An open-model assignment: `rate` arrivals per second for `secs`.
fn open_assignment(
    base: &str,
    rate: f64,
    secs: u64,
    max_users: u32,
    max_wait: Duration,
) -> Assignment {
    let mut a = assignment(
        base,
        &["/"],
        0,
        Bound::Duration(Duration::from_secs(secs)),
        Duration::from_secs(10),
    );
    a.users.clear();
    a.open = vec![OpenLoad {
        schedule: RateSchedule::new(vec![RateStage {
            from: rate,
            to: rate,
            duration: Duration::from_secs(secs),
        }]),
        period: 1,
        positions: vec![0],
        max_users,
        max_wait,
        scenario_cycle: vec![0],
    }];
    a
}

fn dropped(intervals: &[v1::Interval]) -> u64 {
    intervals.iter().map(|i| i.dropped).sum()
}

fn uncorrected_total(intervals: &[v1::Interval]) -> Histogram<u64> {
    let mut h = loadfleet_agent::recorder::new_histogram();
    for s in intervals.iter().flat_map(|i| &i.steps) {
        let part: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &s.uncorrected[..])
            .unwrap();
        h.add(&part).unwrap();
    }
    h
}

#[tokio::test]
async fn open_model_starts_every_arrival_on_schedule() {
    let bed = bed(Config::default()).await;
    let a = open_assignment(&bed.base_url(), 200.0, 2, 10, Duration::from_secs(5));
    let started = Instant::now();
    let intervals = run(a, 2).await;
    let (count, corrected, errors) = step_total(&intervals, 0);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(count, 400, "200/s for 2 s");
    assert_eq!(dropped(&intervals), 0);
    assert_eq!(bed.stats().served(), 400);
    // The schedule is 2 s; beyond it there is only the last arrivals'
    // response (the test target answers in well under 1 ms) and the final
    // interval's report. 600 ms covers a worker that gets half a core while
    // another process is busy on the other.
    assert!(
        started.elapsed() < Duration::from_millis(2600),
        "took {:?}",
        started.elapsed()
    );
    let uncorrected = uncorrected_total(&intervals);
    assert_eq!(uncorrected.len(), 400);
    assert!(corrected.value_at_quantile(0.5) >= uncorrected.value_at_quantile(0.5));
}

/// Two rate schedules (a scenario each) beside closed users: every
/// schedule's arrivals run, one with a single user on a two-worker engine
/// (the second worker has none of its users and must not take its arrivals).
#[tokio::test]
async fn rate_schedules_run_beside_closed_users() {
    let bed = bed(Config::default()).await;
    let base = bed.base_url();
    let target = Target::parse(&base, Duration::from_secs(5)).unwrap();
    let mut a = assignment(
        &base,
        &["/closed", "/fast", "/slow"],
        2,
        Bound::Iterations(5),
        Duration::from_secs(5),
    );
    let step = |id: usize, path: &str| {
        Step::fixed(id, http::Method::GET, target.request_uri(path).unwrap())
    };
    a.scenarios = vec![
        Scenario::new("closed", vec![step(0, "/closed")]),
        Scenario::new("fast", vec![step(1, "/fast")]),
        Scenario::new("slow", vec![step(2, "/slow")]),
    ];
    let schedule = |rate: f64, lead: u64| {
        let mut stages = Vec::new();
        if lead > 0 {
            // A scenario's start: a stage without arrivals.
            stages.push(RateStage {
                from: 0.0,
                to: 0.0,
                duration: Duration::from_millis(lead),
            });
        }
        stages.push(RateStage {
            from: rate,
            to: rate,
            duration: Duration::from_secs(1),
        });
        RateSchedule::new(stages)
    };
    a.open = vec![
        OpenLoad {
            schedule: schedule(100.0, 0),
            period: 1,
            positions: vec![0],
            max_users: 4,
            max_wait: Duration::from_secs(5),
            scenario_cycle: vec![1],
        },
        OpenLoad {
            schedule: schedule(30.0, 500),
            period: 1,
            positions: vec![0],
            max_users: 1,
            max_wait: Duration::from_secs(5),
            scenario_cycle: vec![2],
        },
    ];
    let started = Instant::now();
    let intervals = run(a, 2).await;
    let stats = bed.stats();
    let (closed, fast, slow) = (
        stats.served_path("/closed"),
        stats.served_path("/fast"),
        stats.served_path("/slow"),
    );
    println!(
        "closed {closed}, fast {fast}, slow {slow} in {:?}",
        started.elapsed()
    );
    assert_eq!(closed, 10, "2 users x 5 iterations");
    assert_eq!(fast, 100, "100/s for 1 s");
    assert_eq!(slow, 30, "30/s for 1 s, from 0.5 s");
    assert_eq!(dropped(&intervals), 0);
    // Every step's uncorrected histogram holds each of its responses, the
    // closed users' too (their time from the send is their only time).
    let uncorrected: u64 = intervals
        .iter()
        .flat_map(|i| &i.steps)
        .map(|s| {
            let h: Histogram<u64> = Deserializer::new()
                .deserialize(&mut &s.uncorrected[..])
                .unwrap();
            assert_eq!(h.len(), s.count, "step {}", s.step);
            h.len()
        })
        .sum();
    assert_eq!(uncorrected, 140);
    // The later schedule ends 1.5 s in: its last arrival is due by then.
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn open_model_drops_arrivals_when_no_user_is_free() {
    let bed = bed(Config {
        default_latency: Duration::from_millis(45),
        ..Config::default()
    })
    .await;
    // One user busy ~45 ms per iteration, arrivals every 10 ms, no waiting.
    let a = open_assignment(&bed.base_url(), 100.0, 1, 1, Duration::ZERO);
    let intervals = run(a, 1).await;
    let (count, _, _) = step_total(&intervals, 0);
    let dropped = dropped(&intervals);
    eprintln!("ran {count}, dropped {dropped}");
    assert_eq!(
        count + dropped,
        100,
        "every arrival is either run or counted as dropped"
    );
    assert!(
        (15..=25).contains(&count),
        "about one in five runs: {count}"
    );
    assert_eq!(bed.stats().served(), count);
}

#[tokio::test]
async fn server_stall_shows_in_corrected_latency_only() {
    // 200 arrivals/s for 4 s on two users; the server freezes for 1 s.
    let bed = bed(Config {
        stall: Some((Duration::from_millis(1500), Duration::from_secs(1))),
        ..Config::default()
    })
    .await;
    let a = open_assignment(&bed.base_url(), 200.0, 4, 2, Duration::from_secs(5));
    let intervals = run(a, 1).await;
    let (count, corrected, _) = step_total(&intervals, 0);
    let uncorrected = uncorrected_total(&intervals);
    assert_eq!(count, 800);
    assert_eq!(dropped(&intervals), 0);
    let (c99, u99) = (
        corrected.value_at_quantile(0.99),
        uncorrected.value_at_quantile(0.99),
    );
    eprintln!(
        "p99 corrected {} ms, uncorrected {} ms",
        c99 / 1000,
        u99 / 1000
    );
    assert!(c99 >= 500_000, "corrected p99 {c99} µs shows the 1 s stall");
    assert!(
        u99 < 100_000,
        "uncorrected p99 {u99} µs stays low: only 2 requests were in flight during the stall"
    );
    assert!(
        uncorrected.max() >= 900_000,
        "the two requests caught in the stall took ~1 s"
    );
}

fn config(workers: usize) -> engine::EngineConfig {
    engine::EngineConfig {
        workers,
        timing: engine::Timing::default(),
        ..Default::default()
    }
}

/// Runs the engine to the end and returns its intervals.
async fn run(a: Assignment, workers: usize) -> Vec<v1::Interval> {
    let mut e = engine::start(
        Arc::new(a),
        Instant::now() + Duration::from_millis(20),
        config(workers),
    )
    .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(i)) = tokio::time::timeout_at(deadline, e.intervals.recv()).await {
        out.push(i);
    }
    out
}

fn step_total(intervals: &[v1::Interval], step: u32) -> (u64, Histogram<u64>, Vec<(String, u64)>) {
    let mut h = loadfleet_agent::recorder::new_histogram();
    let mut count = 0;
    let mut errors: Vec<(String, u64)> = Vec::new();
    for s in intervals
        .iter()
        .flat_map(|i| &i.steps)
        .filter(|s| s.step == step)
    {
        let part: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &s.histogram[..])
            .unwrap();
        assert_eq!(part.len(), s.count, "count field matches the histogram");
        h.add(&part).unwrap();
        count += s.count;
        for e in &s.errors {
            match errors.iter_mut().find(|(k, _)| *k == e.kind) {
                Some((_, c)) => *c += e.count,
                None => errors.push((e.kind.clone(), e.count)),
            }
        }
    }
    (count, h, errors)
}

async fn bed(config: Config) -> Testbed {
    Testbed::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .unwrap()
}

#[tokio::test]
async fn counts_every_response_the_server_served() {
    let bed = bed(Config {
        latencies: vec![("/slow".into(), Duration::from_millis(20))],
        ..Config::default()
    })
    .await;
    let a = assignment(
        &bed.base_url(),
        &["/", "/slow"],
        6,
        Bound::Iterations(5),
        Duration::from_secs(5),
    );
    let intervals = run(a, 2).await;
    let (home, _, home_err) = step_total(&intervals, 0);
    let (slow, slow_h, _) = step_total(&intervals, 1);
    assert_eq!(home, 30, "6 users x 5 iterations");
    assert_eq!(slow, 30);
    assert!(home_err.is_empty(), "{home_err:?}");
    assert_eq!(bed.stats().served(), 60);
    assert!(
        slow_h.min() >= 20_000,
        "a 20 ms path takes at least 20 ms, got {} µs",
        slow_h.min()
    );
    // Intervals arrive in order, once each, and the last one ends the run.
    let seqs: Vec<u64> = intervals.iter().map(|i| i.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(intervals.last().unwrap().active_users, 0);
}

#[tokio::test]
async fn each_user_keeps_one_connection() {
    let bed = bed(Config::default()).await;
    let a = assignment(
        &bed.base_url(),
        &["/"],
        4,
        Bound::Iterations(10),
        Duration::from_secs(5),
    );
    run(a, 1).await;
    assert_eq!(bed.stats().served(), 40);
    assert_eq!(
        bed.stats().first_request_times().len(),
        4,
        "4 users, 4 keep-alive connections"
    );
}

#[tokio::test]
async fn reconnects_when_the_server_closes_and_counts_no_error() {
    let bed = bed(Config::default()).await;
    let a = assignment(
        &bed.base_url(),
        &["/close"],
        2,
        Bound::Iterations(5),
        Duration::from_secs(5),
    );
    let intervals = run(a, 1).await;
    let (count, _, errors) = step_total(&intervals, 0);
    assert_eq!(count, 10);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        bed.stats().first_request_times().len(),
        10,
        "a new connection for every request"
    );
}

#[tokio::test]
async fn statuses_and_timeouts_are_errors_by_kind() {
    let bed = bed(Config {
        latencies: vec![("/hang".into(), Duration::from_secs(5))],
        ..Config::default()
    })
    .await;
    let a = assignment(
        &bed.base_url(),
        &["/status/503", "/hang"],
        2,
        Bound::Iterations(2),
        Duration::from_millis(150),
    );
    let started = Instant::now();
    let intervals = run(a, 1).await;
    // Each user's two iterations hold one 150 ms timeout each (/hang
    // answers after 5 s): 300 ms of waiting per user, both users at once.
    // 3 s is ten times that, so only a request that ignored its timeout
    // (and waited the 5 s) fails it.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeouts bound the run"
    );
    let (c503, h503, e503) = step_total(&intervals, 0);
    assert_eq!(c503, 4, "a 503 is a response: its latency is recorded");
    assert_eq!(h503.len(), 4);
    assert_eq!(e503, vec![("http_503".to_string(), 4)]);
    let (chang, _, ehang) = step_total(&intervals, 1);
    assert_eq!(chang, 0, "timed-out requests have no latency sample");
    assert_eq!(ehang, vec![("timeout".to_string(), 4)]);
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = assignment(
        &format!("http://127.0.0.1:{port}"),
        &["/"],
        2,
        Bound::Iterations(3),
        Duration::from_secs(2),
    );
    let intervals = run(a, 1).await;
    let (count, _, errors) = step_total(&intervals, 0);
    assert_eq!(count, 0);
    assert_eq!(errors, vec![("connect".to_string(), 6)]);
}

#[tokio::test]
async fn duration_bound_stops_by_itself() {
    let bed = bed(Config {
        default_latency: Duration::from_millis(5),
        ..Config::default()
    })
    .await;
    let a = assignment(
        &bed.base_url(),
        &["/"],
        3,
        Bound::Duration(Duration::from_millis(600)),
        Duration::from_secs(5),
    );
    let started = Instant::now();
    let intervals = run(a, 2).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let (count, _, _) = step_total(&intervals, 0);
    assert!(count > 30, "3 users for 0.6 s at ~5 ms each sent {count}");
    assert_eq!(count, bed.stats().served());
}

#[tokio::test]
async fn ramp_down_stops_users_between_iterations_within_graceful_stop() {
    let bed = bed(Config {
        latencies: vec![("/slow".into(), Duration::from_millis(300))],
        ..Config::default()
    })
    .await;
    // Two steps of ~0 and 300 ms per iteration; the run would last 10 s.
    let mut a = assignment(
        &bed.base_url(),
        &["/", "/slow"],
        2,
        Bound::Duration(Duration::from_secs(10)),
        Duration::from_secs(5),
    );
    // User 0 is stopped by a ramp-down at 0.5 s: it finishes its iteration.
    a.users[0].stop_offset = Some(Duration::from_millis(500));
    // User 1 is stopped at 0.5 s with no grace: its iteration is abandoned.
    a.users[1].stop_offset = Some(Duration::from_millis(500));
    a.graceful_stop = Duration::from_secs(30);
    let graceful = run(a.clone(), 1).await;
    let (home, _, _) = step_total(&graceful, 0);
    let (slow, _, _) = step_total(&graceful, 1);
    assert_eq!(
        home, slow,
        "every iteration that started also finished: {home} vs {slow}"
    );
    assert_eq!(
        home, 4,
        "two iterations of ~0.3 s each before 0.5 s, per user"
    );

    a.graceful_stop = Duration::ZERO;
    let before = bed.stats().served();
    let cut = run(a, 1).await;
    let (home, _, _) = step_total(&cut, 0);
    let (slow, _, _) = step_total(&cut, 1);
    assert_eq!(bed.stats().served() - before, home + slow);
    assert_eq!(
        home,
        slow + 2,
        "each user's second iteration was cut in its slow step"
    );
}

#[tokio::test]
async fn hard_stop_abandons_in_flight_requests() {
    let bed = bed(Config {
        default_latency: Duration::from_secs(10),
        ..Config::default()
    })
    .await;
    let a = assignment(
        &bed.base_url(),
        &["/"],
        2,
        Bound::Iterations(1),
        Duration::from_secs(20),
    );
    let mut e = engine::start(Arc::new(a), Instant::now(), config(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = Instant::now();
    e.stop.hard();
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), e.intervals.recv()).await {
    }
    // A hard stop abandons in-flight requests at once (the target answers
    // after 10 s); 1 s is the engine's threads joining, with room for a
    // busy machine, and far below the 10 s a missed stop would take.
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "stopped in {:?}",
        stopped.elapsed()
    );
    assert_eq!(bed.stats().served(), 0);
}

/// Users check the controller's lease before each request: once it has
/// run out, nothing more is sent, even before the session notices (a
/// process frozen past its lease may wake its workers first). Without the
/// check these users would go on for 1,000 iterations each.
#[tokio::test]
async fn no_request_goes_out_once_the_lease_has_run_out() {
    let bed = bed(Config {
        default_latency: Duration::from_millis(5),
        ..Config::default()
    })
    .await;
    let a = assignment(
        &bed.base_url(),
        &["/"],
        2,
        Bound::Iterations(1000),
        Duration::from_secs(5),
    );
    let began = Instant::now();
    let mut e = engine::start(Arc::new(a), began + Duration::from_millis(20), config(1)).unwrap();
    // The lease runs out 300 ms in; nobody renews it.
    e.stop.lease_until(began + Duration::from_millis(300));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, e.intervals.recv()).await {}
    let served = bed.stats().served();
    let took = began.elapsed();
    println!("{served} requests served; the engine ended after {took:?}");
    // Two users, 5 ms a request, for 280 ms: at most about 112 requests
    // (the one in flight as the lease ran out finishes).
    assert!(served > 0 && served <= 130, "{served} requests served");
    assert!(took < Duration::from_secs(3), "ended after {took:?}");
    assert_eq!(bed.stats().served(), served, "nothing more after the end");
}
