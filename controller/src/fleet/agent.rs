//! The controller's view of one agent of a run: its state, its clock, and
//! the messages the controller sends it.

use std::time::Duration;

use loadfleet_proto::v1::{self, controller_message};
use tokio::time::Instant;

use crate::service::{ConnId, Outbound};

use super::micros;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum State {
    Attached,
    Ready,
    Running,
    Finished,
    Lost,
    Failed,
}

/// One agent of the run, as the owner task knows it.
pub(super) struct Agent {
    pub(super) conn: ConnId,
    pub(super) name: String,
    pub(super) region: String,
    pub(super) weight: u32,
    pub(super) peer: String,
    /// How it proved who it is (see [`crate::service::Event::Attached`]).
    pub(super) identity: crate::auth::Identity,
    /// What it will load, as it said: its `--allow-target` list, `any`,
    /// or `not reported` (an agent older than the field).
    pub(super) targets: String,
    /// How its open-model generator waits for arrivals, as it said (empty
    /// from an agent older than the field).
    pub(super) timing: String,
    pub(super) outbound: Outbound,
    pub(super) state: State,
    pub(super) next_seq: u64,
    pub(super) users: usize,
    pub(super) ended_at: Option<Duration>,
    pub(super) note: String,
    pub(super) clock: ClockSync,
    pub(super) start_lateness: Option<Duration>,
    pub(super) load_share: f64,
    /// Why the agent's time limit ended its users early (from its Done).
    pub(super) cut_short: Option<String>,
    /// Requests it left waiting for a response when it stopped at once.
    pub(super) abandoned: u64,
    /// Declared lost, it came back and handed over every report it made.
    pub(super) returned: bool,
    /// When the agent last sent anything.
    pub(super) last_heard: Instant,
    /// When its newest interval report arrived (the run's start before
    /// the first): a running agent whose reports stop is named as stale.
    pub(super) last_report_at: Instant,
    /// Its stream broke at this instant; it may resume within [`RESUME_GRACE`].
    pub(super) disconnected_at: Option<Instant>,
}

/// How long a running agent whose stream broke may take to resume it
/// (an agent whose process died never does; one behind a reset NAT
/// redials within a few hundred milliseconds).
pub(super) const RESUME_GRACE: Duration = Duration::from_secs(1);

/// What the pings told about one agent's clock.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ClockSync {
    /// Pongs received.
    pub(super) samples: u32,
    /// Nonce of the ping in flight and when it was sent.
    pub(super) in_flight: Option<(u64, Instant)>,
    /// Shortest round trip seen, and the offset measured with it:
    /// agent clock minus controller clock, in microseconds.
    pub(super) best: Option<(Duration, i64)>,
    /// The agent's wall clock minus the controller's, microseconds, from
    /// the ping of the shortest round trip (`None` from an older agent).
    pub(super) wall_offset_us: Option<i64>,
}

/// What an agent says it will load: `any`, its list, or `not reported`.
pub(super) fn targets_of(hello: &v1::Hello) -> String {
    if hello.allow_any_target {
        "any".into()
    } else if hello.allowed_targets.is_empty() {
        "not reported".into()
    } else {
        hello.allowed_targets.join(",")
    }
}

impl Agent {
    /// Who it is, for the audit log.
    pub(super) fn facts(&self) -> super::AgentFacts {
        super::AgentFacts {
            name: self.name.clone(),
            region: self.region.clone(),
            address: self.peer.clone(),
            identity: self.identity.to_string(),
            targets: self.targets.clone(),
        }
    }

    /// An agent that has just attached.
    pub(super) fn attached(
        conn: ConnId,
        hello: v1::Hello,
        peer: String,
        identity: crate::auth::Identity,
        outbound: Outbound,
    ) -> Agent {
        Agent {
            conn,
            targets: targets_of(&hello),
            timing: hello.timing,
            name: hello.name,
            region: hello.region,
            weight: hello.weight.clamp(1, 1000),
            peer,
            identity,
            outbound,
            state: State::Attached,
            next_seq: 0,
            users: 0,
            ended_at: None,
            note: String::new(),
            clock: ClockSync::default(),
            last_heard: Instant::now(),
            last_report_at: Instant::now(),
            disconnected_at: None,
            start_lateness: None,
            load_share: 0.0,
            cut_short: None,
            abandoned: 0,
            returned: false,
        }
    }

    pub(super) fn send(&self, body: controller_message::Body) {
        // A full or closed channel means the agent is gone or stuck; its
        // stream's end is reported separately, so nothing else to do here.
        let _ = self
            .outbound
            .try_send(Box::new(v1::ControllerMessage { body: Some(body) }));
    }

    /// Tells the agent to stop `run_id`: gracefully (users finish their
    /// step) or at once.
    pub(super) fn stop(&self, run_id: &str, graceful: bool) {
        self.send(controller_message::Body::Stop(v1::Stop {
            run_id: run_id.to_string(),
            graceful,
        }));
    }

    /// Renews the agent's lease (the dead-man switch), acknowledging the
    /// reports received so far.
    pub(super) fn renew(&self, run_id: &str, lease: Duration) {
        self.send(controller_message::Body::Lease(v1::Lease {
            run_id: run_id.to_string(),
            valid_for_us: micros(lease),
            next_seq: self.next_seq,
        }));
    }

    pub(super) fn is_running(&self) -> bool {
        matches!(self.state, State::Running)
    }
}
