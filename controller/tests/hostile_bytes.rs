//! Bytes no agent would send: a message that is not protobuf, one larger
//! than the controller's limit, a stream that does not start with Hello, a
//! name too long to be a name. Each is refused with a gRPC error, the
//! controller does not crash, and the real agent that attaches after them
//! runs the plan.

use std::time::Duration;

use crate::support::*;
use bytes::{Buf, BufMut};
use loadfleet_proto::v1::{self, agent_message};
use loadfleet_testbed::Config;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A codec that sends and receives raw bytes, to put anything on the wire.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// Opens an Attach stream, sends `first` as its first message, and returns
/// the controller's answer.
async fn attach_with(url: &str, first: Vec<u8>) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let stream = tokio_stream::iter(vec![first]);
    let path = http::uri::PathAndQuery::from_static("/loadfleet.v1.Fleet/Attach");
    let mut inbound = grpc
        .streaming(tonic::Request::new(stream), path, Raw)
        .await?
        .into_inner();
    // Accepted: the controller would now talk; see what it says first.
    match tokio::time::timeout(Duration::from_secs(3), inbound.message()).await {
        Ok(Err(status)) => Err(status),
        _ => Ok(()),
    }
}

fn hello(name: &str) -> Vec<u8> {
    v1::AgentMessage {
        body: Some(agent_message::Body::Hello(hand_hello(name, "r"))),
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_refused_and_the_run_goes_on() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "p.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 5",
            &[("home", "/")],
        ),
    );
    let out = dir.path().join("run");
    let (ctl, url) = fleet_controller(&plan, &out, 1);

    let interval_first = v1::AgentMessage {
        body: Some(agent_message::Body::Interval(v1::Interval::default())),
    }
    .encode_to_vec();
    let cases: Vec<(&str, Vec<u8>, tonic::Code)> = vec![
        (
            "not protobuf",
            b"\xff\xff\xff\xff garbage".to_vec(),
            tonic::Code::Internal,
        ),
        (
            "larger than the 16 MiB limit",
            hello(&"x".repeat(17 << 20)),
            tonic::Code::OutOfRange,
        ),
        (
            "no Hello first",
            interval_first,
            tonic::Code::InvalidArgument,
        ),
        (
            "a 10 KB name",
            hello(&"n".repeat(10_000)),
            tonic::Code::InvalidArgument,
        ),
        ("an empty message", Vec::new(), tonic::Code::InvalidArgument),
    ];
    for (what, bytes, code) in cases {
        let size = bytes.len();
        let answer = attach_with(&url, bytes).await;
        eprintln!("{what} ({size} bytes): {answer:?}");
        let status = answer.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
    }

    // The controller is still there, still waiting for its agent.
    let real = agent(&url, "eu", "real", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let _ = exited(real, Duration::from_secs(20)).await;
    let s = summary(&out);
    assert_eq!(s["total"]["requests"], 10);
    assert_eq!(bed.stats().served(), 10);
    assert_eq!(
        s["agents"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["real"]
    );
}
