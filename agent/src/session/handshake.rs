//! Opening a stream to the controller (Hello, with the fleet token) and
//! taking an assignment from it: validated, checked against this agent's
//! limits, and acknowledged with Ready.

use std::sync::Arc;

use loadfleet_proto::v1::{self, agent_message, controller_message, fleet_client::FleetClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::assignment::Assignment;

use super::{AgentOptions, Attach, AttachError, MAX_MESSAGE_BYTES, MAX_UNACKED, farewell, msg};

/// An open stream to the controller.
pub(super) struct Stream {
    pub(super) tx: mpsc::Sender<v1::AgentMessage>,
    pub(super) inbound: tonic::Streaming<v1::ControllerMessage>,
}

/// Why a stream could not be opened.
#[derive(Debug)]
pub(super) enum OpenError {
    /// The dial failed.
    Connect(tonic::transport::Error),
    /// Our own side of the stream closed before the Hello went out.
    Closed,
    /// The fleet token cannot be sent as header text.
    BadToken,
    /// The controller refused the stream (authentication, or any status).
    Status(tonic::Status),
}

/// What a Hello asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intent<'a> {
    /// A run (a fresh attach).
    Attach,
    /// To carry on with this run after a broken stream.
    Resume(&'a str),
    /// Only whether this agent would be accepted (`--check`).
    Check,
}

/// Dials the controller and says Hello with `intent`.
pub(super) async fn open(
    endpoint: &tonic::transport::Endpoint,
    opts: &AgentOptions,
    intent: Intent<'_>,
) -> Result<Stream, OpenError> {
    let channel = endpoint.connect().await.map_err(OpenError::Connect)?;
    let mut client = FleetClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<v1::AgentMessage>(MAX_UNACKED + 16);
    let hello = v1::Hello {
        name: opts.name.clone(),
        region: opts.region.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        weight: opts.weight,
        resume_run_id: match intent {
            Intent::Resume(run_id) => run_id.to_string(),
            Intent::Attach | Intent::Check => String::new(),
        },
        check_only: intent == Intent::Check,
        allowed_targets: opts.policy.describe(),
        allow_any_target: !opts.policy.restricts(),
        timing: opts.timing.describe(),
        observer: opts.observe.is_some(),
        observe_processes: opts.observe.clone().unwrap_or_default(),
        protocol: loadfleet_proto::PROTOCOL,
    };
    tx.send(msg(agent_message::Body::Hello(hello)))
        .await
        .map_err(|_| OpenError::Closed)?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &opts.token {
        super::auth::bearer(&mut request, token).ok_or(OpenError::BadToken)?;
    }
    let inbound = client
        .attach(request)
        .await
        .map_err(OpenError::Status)?
        .into_inner();
    Ok(Stream { tx, inbound })
}

/// What waiting for an assignment came to.
pub(super) enum Taken {
    /// A valid assignment this agent may run; Ready has been sent.
    Assigned {
        run_id: String,
        assignment: Arc<Assignment>,
    },
    /// No run to go on with (none offered, or it could not be run and the
    /// controller was told why).
    Ended(Attach),
}

/// Waits for an assignment, validates it, checks it against this agent's
/// limits, and acknowledges it.
pub(super) async fn take_assignment(
    stream: &mut Stream,
    opts: &AgentOptions,
) -> Result<Taken, AttachError> {
    let assign = match stream.inbound.message().await? {
        None => return Ok(Taken::Ended(Attach::Idle)),
        Some(m) => match m.body {
            Some(controller_message::Body::Assign(a)) => a,
            Some(controller_message::Body::Reject(r)) => {
                return Err(AttachError::Rejected(r.reason));
            }
            Some(controller_message::Body::Stop(_)) => return Ok(Taken::Ended(Attach::Idle)),
            other => {
                return Err(AttachError::Protocol(format!(
                    "expected Assign, got {other:?}"
                )));
            }
        },
    };
    let run_id = assign.run_id.clone();
    let assignment = match Assignment::try_from(assign) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::error!(error = %e, "cannot run assignment");
            let failed = v1::Failed {
                run_id,
                reason: e.to_string(),
            };
            farewell(stream, msg(agent_message::Body::Failed(failed))).await;
            return Ok(Taken::Ended(Attach::RunEnded));
        }
    };
    if let Err(reason) = opts.policy.check(&assignment) {
        tracing::error!(%reason, "refused the assignment");
        let failed = v1::Failed {
            run_id,
            reason: reason.clone(),
        };
        farewell(stream, msg(agent_message::Body::Failed(failed))).await;
        return Err(AttachError::Refused(reason));
    }
    tracing::info!(run_id = %run_id, users = assignment.users.len(), "assigned");
    stream
        .tx
        .send(msg(agent_message::Body::Ready(v1::Ready {
            run_id: run_id.clone(),
        })))
        .await
        .map_err(|_| AttachError::Gone)?;
    Ok(Taken::Assigned { run_id, assignment })
}
