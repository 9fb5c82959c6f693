//! The gRPC face of the controller. Handlers only decode and forward: the
//! fleet's state belongs to one owner task (see [`crate::fleet`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use loadfleet_proto::v1::{self, agent_message, controller_message, fleet_server::Fleet};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Gate, Identity};

/// Largest message the controller accepts from an agent.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Identifies one attached stream.
pub type ConnId = u64;

/// Sends to one agent. Its messages are boxed: a tokio channel makes a
/// block of 32 slots up front, and a slot holding the message itself (with
/// room for a gRPC status) cost 6.5 KB per attached agent (heaptrack, see
/// bench/NOTES.md); boxed, a slot is a pointer.
pub type Outbound = mpsc::Sender<Box<v1::ControllerMessage>>;

/// What the service tells the owner.
#[derive(Debug)]
pub enum Event {
    Attached {
        conn: ConnId,
        hello: v1::Hello,
        peer: String,
        /// How the agent proved who it is.
        identity: Identity,
        outbound: Outbound,
    },
    Message {
        conn: ConnId,
        body: agent_message::Body,
    },
    Detached {
        conn: ConnId,
        reason: String,
    },
    /// An agent that tried to attach and was refused before it got in (a
    /// wrong token, a certificate that names another agent, a bad Hello).
    /// Sent when the owner's queue has room: a flood of refusals cannot
    /// block the service.
    Refused(Refusal),
}

/// One refused attempt to attach.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The address it came from.
    pub peer: String,
    /// The name its Hello claimed, when it sent one.
    pub name: Option<String>,
    /// Why it was refused, in words.
    pub reason: String,
}

/// Forwards every stream's messages to the owner.
pub struct FleetService {
    events: mpsc::Sender<Event>,
    next_conn: AtomicU64,
    /// What an agent must show to attach.
    gate: Gate,
}

impl FleetService {
    /// Only agents that pass `gate` attach.
    pub fn new(events: mpsc::Sender<Event>, gate: Gate) -> FleetService {
        FleetService {
            events,
            next_conn: AtomicU64::new(1),
            gate,
        }
    }

    /// Tells the owner about a refused attempt, if its queue has room.
    fn refused(&self, peer: &str, name: Option<String>, reason: &str) {
        let _ = self.events.try_send(Event::Refused(Refusal {
            peer: peer.to_string(),
            name,
            reason: reason.to_string(),
        }));
    }
}

type ControllerStream = Pin<Box<dyn Stream<Item = Result<v1::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Fleet for FleetService {
    type AttachStream = ControllerStream;

    async fn attach(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let authorized = self.gate.check_token(request.metadata());
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let certs = request.peer_certs();
        let mut inbound = request.into_inner();
        if let Err(status) = authorized {
            // Learn the name it claims, if its Hello is already here, so the
            // operator can tell which agent has the wrong token.
            let name = match tokio::time::timeout(
                std::time::Duration::from_millis(500),
                inbound.message(),
            )
            .await
            {
                Ok(Ok(Some(v1::AgentMessage {
                    body: Some(agent_message::Body::Hello(h)),
                }))) => Some(h.name.chars().take(128).collect()),
                _ => None,
            };
            self.refused(&peer, name, status.message());
            return Err(status);
        }
        let hello = match inbound.message().await? {
            Some(v1::AgentMessage {
                body: Some(agent_message::Body::Hello(h)),
            }) => h,
            _ => {
                let status = Status::invalid_argument("the first message must be Hello");
                self.refused(&peer, None, status.message());
                return Err(status);
            }
        };
        // Names, regions and timings reach the operator's terminal, the
        // summary and the report: printable text only.
        let printable = |s: &str| !s.chars().any(char::is_control);
        if hello.name.trim().is_empty() || hello.name.len() > 128 || !printable(&hello.name) {
            return Err(Status::invalid_argument(
                "agent name must be 1 to 128 bytes of printable text",
            ));
        }
        if hello.region.trim().is_empty() || hello.region.len() > 128 || !printable(&hello.region) {
            return Err(Status::invalid_argument(
                "agent region must be 1 to 128 bytes of printable text",
            ));
        }
        if hello.timing.len() > 64 || !printable(&hello.timing) {
            return Err(Status::invalid_argument(
                "agent timing must be at most 64 bytes of printable text",
            ));
        }
        if hello.observe_processes.len() > 64
            || hello
                .observe_processes
                .iter()
                .any(|n| n.is_empty() || n.len() > 64 || !printable(n))
        {
            return Err(Status::invalid_argument(
                "an observer names at most 64 processes, each 1 to 64 bytes of printable text",
            ));
        }
        let identity = match self.gate.identify(&certs, &hello.name) {
            Ok(identity) => identity,
            Err(status) => {
                self.refused(&peer, Some(hello.name.clone()), status.message());
                return Err(status);
            }
        };
        if hello.protocol != loadfleet_proto::PROTOCOL {
            // An agent of another release would misread what it does not
            // know (a second rate schedule, a multipart body) and do less
            // than asked, silently: refused before it is dealt anything.
            let status = Status::permission_denied(format!(
                "agent {} speaks fleet protocol revision {}, this controller revision {}: run the same loadfleet release on the controller and every agent",
                hello.name,
                hello.protocol,
                loadfleet_proto::PROTOCOL
            ));
            self.refused(&peer, Some(hello.name.clone()), status.message());
            return Err(status);
        }
        if hello.check_only {
            // `loadfleet-agent --check`: it would get in; nothing more.
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(Ok(v1::ControllerMessage {
                body: Some(controller_message::Body::Accepted(v1::Accepted {
                    identity: identity.to_string(),
                })),
            }));
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (outbound, rx) = mpsc::channel::<Box<v1::ControllerMessage>>(64);
        self.events
            .send(Event::Attached {
                conn,
                hello,
                peer,
                identity,
                outbound,
            })
            .await
            .map_err(|_| Status::unavailable("controller is shutting down"))?;
        let events = self.events.clone();
        tokio::spawn(async move {
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(v1::AgentMessage { body: Some(body) })) => {
                        if events.send(Event::Message { conn, body }).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(v1::AgentMessage { body: None })) => {}
                    Ok(None) => break "stream closed".to_string(),
                    Err(status) => break status.message().to_string(),
                }
            };
            let _ = events.send(Event::Detached { conn, reason }).await;
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|m| Ok(*m)),
        )))
    }
}
