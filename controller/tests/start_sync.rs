//! Synchronized start: the controller measures each agent's clock offset
//! and round trip with pings, and tells each agent the common start on its
//! own clock, so an agent behind a slow link starts with the others, not
//! half a round trip late. Measured at the target.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, tcp};
use tokio::time::Instant;

/// A TCP proxy on loopback that delays every byte by `delay` in each direction.
async fn delay_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, delay));
            tokio::spawn(pipe(sr, cw, delay));
        }
    });
    addr
}

async fn pipe(mut from: tcp::OwnedReadHalf, mut to: tcp::OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at + delay).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_behind_a_slow_link_starts_with_the_others() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // Two users, no ramp: user 0 goes to agent "direct", user 1 to agent "far".
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 1",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let controller: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let one_way = Duration::from_millis(100);
    let proxy = delay_proxy(controller, one_way).await;
    let _direct = agent(&url, "near", "direct", &[]);
    let _far = agent(&format!("http://{proxy}"), "away", "far", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);

    let s = summary(&out);
    let rtt = |a: &str| s["agents"][a]["clock_rtt_ms"].as_f64().unwrap();
    let skew = |a: &str| s["agents"][a]["start_skew_ms"].as_f64().unwrap();
    eprintln!(
        "rtt direct {} ms, far {} ms; skew direct {} ms, far {} ms",
        rtt("direct"),
        rtt("far"),
        skew("direct"),
        skew("far")
    );
    assert!(
        rtt("direct") < 5.0,
        "loopback round trip {} ms",
        rtt("direct")
    );
    assert!(
        (200.0..300.0).contains(&rtt("far")),
        "delayed round trip {} ms",
        rtt("far")
    );
    assert!(
        skew("direct") < 5.0,
        "start skew on loopback must be under 5 ms: {} ms",
        skew("direct")
    );
    assert!(
        skew("far") < 5.0,
        "the far agent woke on time by its own clock: {} ms",
        skew("far")
    );

    // At the target: both users' first requests arrive together, although
    // the far agent heard about the start 100 ms after the near one.
    let arrivals = bed.stats().first_request_times();
    assert_eq!(arrivals.len(), 2);
    let apart = arrivals[1] - arrivals[0];
    eprintln!("first requests {apart:?} apart at the target");
    assert!(
        apart < Duration::from_millis(15),
        "the start was corrected for half the round trip: {apart:?} apart, uncorrected would be ~{one_way:?}"
    );
}

/// An agent whose wall clock is two hours ahead (libfaketime, which moves
/// its monotonic clock too) starts with the others, and the summary and the
/// terminal say how far off its clock is; an agent in step reads a few
/// milliseconds at most (half the loopback round trip, and the time
/// between the controller's two clock readings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_clock_is_hours_off_is_named_with_its_offset() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 3",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let ahead = Proc::spawn(
        std::path::Path::new("faketime"),
        &[
            "-f",
            "+2h",
            agent_bin().to_str().unwrap(),
            "--controller",
            &url,
            "--name",
            "ahead",
            "--once",
            "--allow-target",
            "127.0.0.0/8",
        ],
    );
    let in_step = agent(&url, "r", "in-step", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    exited(ahead, Duration::from_secs(20)).await;
    exited(in_step, Duration::from_secs(20)).await;
    let s = summary(&out);
    assert_eq!(s["total"]["requests"], 6);
    assert_eq!(bed.stats().served(), 6);
    let off = |a: &str| s["agents"][a]["clock_offset_ms"].as_f64().unwrap();
    println!("ahead {} ms, in step {} ms", off("ahead"), off("in-step"));
    assert!(
        (off("ahead") - 7_200_000.0).abs() < 1_000.0,
        "two hours ahead: {} ms",
        off("ahead")
    );
    assert!(off("in-step").abs() < 50.0, "{} ms", off("in-step"));
    assert!(
        exit.stdout
            .contains("NOTE: agent ahead's wall clock is 7200.0 s ahead of the controller's")
            || exit
                .stdout
                .contains("NOTE: agent ahead's wall clock is 7199.9 s ahead"),
        "{}",
        exit.stdout
    );
}
