//! The open model end to end: arrivals on schedule across a fleet, a server
//! stall visible in corrected latency only, dropped iterations counted.

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::{Config, Testbed};

/// Writes `DIR/p.toml`: one step, `GET /` on `bed`, with `load` as `[load]`.
fn open_plan(dir: &std::path::Path, bed: &Testbed, load: &str) -> std::path::PathBuf {
    write_plan(
        dir,
        "p.toml",
        &plan_toml(&bed.base_url(), load, &[("home", "/")]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_arrivals_follow_the_schedule_at_1000_per_second() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = open_plan(
        dir.path(),
        &bed,
        "rate = 1000\nduration = \"3s\"\nmax_users = 50",
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let _a1 = agent(&url, "eu", "a1", &[]);
    let _a2 = agent(&url, "us", "a2", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["load"]["model"], "open");
    assert_eq!(s["latency"]["measured_from"], "intended_send");
    assert_eq!(s["total"]["requests"], 3000, "1000/s for 3 s, fleet-wide");
    assert_eq!(bed.stats().served(), 3000);
    assert_eq!(s["dropped_iterations"], 0);
    assert_eq!(
        s["agents"]["a1"]["requests"], 1500,
        "arrivals split by weight"
    );
    assert_eq!(s["agents"]["a2"]["requests"], 1500);
    // Each agent's own figures come from the totals it sent when done: its
    // latencies both ways, and its send lateness, whose worst is at most
    // the fleet's and one of them is the fleet's.
    let mut worst = Vec::new();
    for a in ["a1", "a2"] {
        let agent = &s["agents"][a];
        assert!(
            agent["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
            "{agent}"
        );
        assert!(
            agent["latency_uncorrected_ms"]["p50"].as_f64().unwrap() > 0.0,
            "{agent}"
        );
        worst.push(agent["send_lateness_ms"]["max"].as_f64().unwrap());
    }
    let fleet_worst = s["send_lateness_ms"]["max"].as_f64().unwrap();
    assert_eq!(
        worst[0].max(worst[1]),
        fleet_worst,
        "agents {worst:?}, fleet {fleet_worst}"
    );
    let per_second: Vec<u64> = s["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["length_s"].as_f64().unwrap() >= 0.999)
        .map(|p| p["iterations_started"].as_u64().unwrap())
        .collect();
    eprintln!("iterations started per second: {per_second:?}");
    assert!(per_second.len() >= 2, "{per_second:?}");
    for n in &per_second[..3.min(per_second.len())] {
        assert!(
            (990..=1010).contains(n),
            "each second within 1% of 1000: {per_second:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_shows_in_corrected_p99_and_not_in_uncorrected() {
    // The run starts about a second after the target; it freezes 2.5 s in.
    let bed = testbed(Config {
        stall: Some((Duration::from_millis(2500), Duration::from_secs(1))),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = open_plan(
        dir.path(),
        &bed,
        "rate = 200\nduration = \"5s\"\nmax_users = 2",
    );
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["total"]["requests"], 1000);
    let corrected = s["total"]["latency_ms"]["p99"].as_f64().unwrap();
    let uncorrected = s["total"]["latency_uncorrected_ms"]["p99"]
        .as_f64()
        .unwrap();
    eprintln!("p99 corrected {corrected} ms, uncorrected {uncorrected} ms");
    assert!(
        corrected >= 500.0,
        "corrected p99 {corrected} ms shows the stall"
    );
    assert!(
        uncorrected < 100.0,
        "uncorrected p99 {uncorrected} ms stays low"
    );
    assert!(
        exit.stdout.contains("overall, uncorrected")
            && exit.stdout.contains("coordinated omission"),
        "{}",
        exit.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_users_drop_iterations_and_say_so() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(45),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = open_plan(
        dir.path(),
        &bed,
        "rate = 100\nduration = \"2s\"\nmax_users = 2\nmax_wait = \"0s\"",
    );
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    let ran = s["total"]["requests"].as_u64().unwrap();
    let dropped = s["dropped_iterations"].as_u64().unwrap();
    eprintln!("ran {ran}, dropped {dropped}");
    assert_eq!(
        ran + dropped,
        200,
        "every arrival ran or was counted as dropped"
    );
    assert!(
        dropped >= 100,
        "2 users of 45 ms cannot take 100/s: dropped {dropped}"
    );
    assert_eq!(s["agents"]["local"]["dropped_iterations"], dropped);
    assert!(
        exit.stdout
            .contains(&format!("dropped iterations: {dropped}")),
        "{}",
        exit.stdout
    );
}

/// Send lateness p50 of an agent (or the fleet, with `None`), in ms.
fn lateness_p50(s: &serde_json::Value, agent: Option<&str>) -> f64 {
    let entry = match agent {
        Some(a) => &s["agents"][a],
        None => s,
    };
    entry["send_lateness_ms"]["p50"].as_f64().unwrap()
}

/// `--frugal-timing` sleeps on tokio's millisecond timer, whose ticks make
/// arrivals leave up to ~2 ms late; the default polls the last 2 ms and
/// sends on the instant. Both start every arrival. One run, one agent of
/// each kind, so both see the same machine at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frugal_timing_leaves_on_the_millisecond_tick_and_precise_on_the_instant() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = open_plan(
        dir.path(),
        &bed,
        "rate = 500\nduration = \"2s\"\nmax_users = 20",
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let _precise = agent(&url, "eu", "precise", &[]);
    let _frugal = agent(&url, "eu", "frugal", &["--frugal-timing"]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["dropped_iterations"], 0);
    assert_eq!(s["agents"]["precise"]["requests"], 500);
    assert_eq!(s["agents"]["frugal"]["requests"], 500);
    let precise = lateness_p50(&s, Some("precise"));
    let frugal = lateness_p50(&s, Some("frugal"));
    eprintln!("send lateness p50: precise {precise} ms, frugal {frugal} ms");
    // Measured here: precise 0.14-0.28 ms (a debug build, sharing two cores
    // with the other tests), frugal 0.85-1.54 ms. tokio rounds a sleep up to
    // its next millisecond tick, and the reactor's wait up again, so frugal
    // arrivals leave about 1 ms late at the median; 0.5 ms is above
    // anything precise timing showed.
    assert!(
        frugal >= 0.5,
        "the millisecond timer rounds each wait up to its next tick: p50 {frugal} ms"
    );
    assert!(
        precise < frugal * 0.6,
        "precise p50 {precise} ms, frugal p50 {frugal} ms"
    );
}

/// `loadfleet run --frugal-timing` gives the in-process agent the same timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_agent_takes_frugal_timing_too() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = open_plan(
        dir.path(),
        &bed,
        "rate = 500\nduration = \"2s\"\nmax_users = 20",
    );
    let out = dir.path().join("run");
    let args = [
        "run",
        plan.to_str().unwrap(),
        "-q",
        "--frugal-timing",
        "--out",
        out.to_str().unwrap(),
    ];
    let exit = exited(Proc::spawn(&loadfleet(), &args), Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["total"]["requests"], 1000);
    let p50 = lateness_p50(&s, None);
    eprintln!("send lateness p50: {p50} ms");
    assert!(
        p50 >= 0.5,
        "millisecond ticks (precise timing stays under 0.3 ms): p50 {p50} ms"
    );
}
