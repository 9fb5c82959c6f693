//! An agent that sends an undecodable histogram: its report is logged and
//! dropped, the run goes on, and the real agent's numbers are intact.

use std::time::Duration;

use crate::support::*;
use loadfleet_proto::v1::{self, agent_message, controller_message, fleet_client::FleetClient};
use loadfleet_testbed::Config;
use tokio_stream::wrappers::ReceiverStream;

fn msg(body: agent_message::Body) -> v1::AgentMessage {
    v1::AgentMessage { body: Some(body) }
}

/// Speaks the protocol by hand and sends garbage where a histogram belongs.
async fn rogue(url: String) {
    let mut client = FleetClient::connect(url).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(msg(agent_message::Body::Hello(hand_hello(
        "rogue", "nowhere",
    ))))
    .await
    .unwrap();
    let mut inbound = client
        .attach(ReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    let mut run_id = String::new();
    while let Ok(Some(m)) = inbound.message().await {
        match m.body {
            Some(controller_message::Body::Assign(a)) => {
                run_id = a.run_id.clone();
                tx.send(msg(agent_message::Body::Ready(v1::Ready {
                    run_id: run_id.clone(),
                })))
                .await
                .unwrap();
            }
            Some(controller_message::Body::Ping(p)) => {
                let pong = v1::Pong {
                    nonce: p.nonce,
                    agent_clock_us: 1_000_000,
                    agent_wall_us: 0,
                };
                tx.send(msg(agent_message::Body::Pong(pong))).await.unwrap();
            }
            Some(controller_message::Body::Start(_)) => {
                let bad = v1::Interval {
                    run_id: run_id.clone(),
                    seq: 0,
                    active_users: 1,
                    steps: vec![v1::StepInterval {
                        metrics: Vec::new(),
                        http2_responses: 0,
                        loop_bound_hits: 0,
                        step: 0,
                        histogram: b"HISTFAAA garbage".to_vec(),
                        count: 1_000_000,
                        errors: vec![],
                        uncorrected: Vec::new(),
                        failed: Vec::new(),
                        exchanges: 0,
                        retries: 0,
                        bytes_received: 0,
                        bytes_decoded: 0,
                    }],
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
                tx.send(msg(agent_message::Body::Interval(bad)))
                    .await
                    .unwrap();
                tx.send(msg(agent_message::Body::Done(v1::Done {
                    run_id: run_id.clone(),
                    last_seq: 0,
                    start_lateness_us: 0,
                    totals: None,
                    cut_short: String::new(),
                    abandoned: 0,
                })))
                .await
                .unwrap();
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_histogram_is_dropped_and_the_run_goes_on() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = 4\niterations = 25",
        &[("home", "/")],
    );
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let rogue_task = tokio::spawn(rogue(url.clone()));
    let _agent = agent(&url, "eu", "real", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), rogue_task).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(
        exit.stderr.contains("dropped a report from agent rogue")
            || exit.stdout.contains("dropped"),
        "{}",
        exit.stderr
    );
    let s = summary(&out);
    assert_eq!(s["dropped_reports"], 1);
    assert_eq!(
        s["total"]["requests"],
        bed.stats().served(),
        "only real samples counted"
    );
    assert_eq!(
        s["agents"]["real"]["requests"], 50,
        "the real agent ran its 2 users x 25"
    );
    assert_eq!(s["agents"]["rogue"]["requests"], 0);
}

/// A Hello whose words the controller would print and write is checked
/// first: a timing longer than 64 bytes, or a name, region or timing
/// holding a control character (which could rewrite the operator's
/// terminal), is refused with why, and the run still waits for a real agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_unprintable_or_long_words_is_refused() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = 1\niterations = 2",
        &[("home", "/")],
    );
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 1);
    let odd = |name: &str, region: &str, timing: &str| v1::Hello {
        timing: timing.into(),
        ..hand_hello(name, region)
    };
    let timing = "agent timing must be at most 64 bytes of printable text";
    for (hello, says) in [
        (odd("odd", "r", &"x".repeat(65)), timing),
        (odd("odd", "r", "timer\u{1b}[2J"), timing),
        (
            odd("odd\u{1b}]0;owned\u{7}", "r", ""),
            "agent name must be 1 to 128 bytes of printable text",
        ),
        (
            odd("odd", "r\n", ""),
            "agent region must be 1 to 128 bytes of printable text",
        ),
    ] {
        let mut client = FleetClient::connect(url.clone()).await.expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let shown = format!("{:?} {:?} {:?}", hello.name, hello.region, hello.timing);
        tx.send(msg(agent_message::Body::Hello(hello)))
            .await
            .unwrap();
        let refused = match client.attach(ReceiverStream::new(rx)).await {
            Err(status) => status,
            Ok(resp) => resp
                .into_inner()
                .message()
                .await
                .expect_err("a refusal, not a message"),
        };
        eprintln!("{shown}: {refused}");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains(says), "{shown}: {refused}");
    }
    let _agent = agent(&url, "eu", "real", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(summary(&out)["total"]["requests"], 2);
}

/// An agent of another loadfleet release (another protocol revision, or
/// none: before revisions) is refused before it is dealt anything, since
/// it would misread what it does not know and do less than asked; the
/// refusal says both revisions, and the run waits for a real agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_protocol_revision_is_refused() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = plan_toml(
        &bed.base_url(),
        "users = 1\niterations = 2",
        &[("home", "/")],
    );
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    // Not quiet: the operator's terminal must say who was refused and why.
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let url = format!("http://{}", ctl.listen_addr());
    for revision in [0, loadfleet_proto::PROTOCOL + 1] {
        let mut client = FleetClient::connect(url.clone()).await.expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let hello = v1::Hello {
            protocol: revision,
            ..hand_hello("old", "eu")
        };
        tx.send(msg(agent_message::Body::Hello(hello)))
            .await
            .unwrap();
        let refused = match client.attach(ReceiverStream::new(rx)).await {
            Err(status) => status,
            Ok(resp) => resp
                .into_inner()
                .message()
                .await
                .expect_err("a refusal, not a message"),
        };
        eprintln!("revision {revision}: {refused}");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains(&format!(
                "agent old speaks fleet protocol revision {revision}, this controller revision {}",
                loadfleet_proto::PROTOCOL
            )),
            "{refused}"
        );
    }
    let _agent = agent(&url, "eu", "real", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let told = format!("{}{}", exit.stdout, exit.stderr);
    assert!(
        told.contains("speaks fleet protocol revision 0"),
        "the operator is told: {told}"
    );
    assert_eq!(
        summary(&out)["total"]["requests"],
        2,
        "only the real agent ran"
    );
}
