//! HTTP/2 toward the target: one connection per virtual user (as a browser
//! keeps one per origin), its frames driven by a task of the user's worker,
//! each request a stream on it. Negotiated by ALPN over TLS, or spoken with
//! prior knowledge over plain TCP (h2c).
//!
//! HTTP/2 goes through the `h2` crate, which allocates per request (a
//! request head, a stream's state): the HTTP/1.1 path keeps its own
//! allocation-free client.

use std::future::poll_fn;

use bytes::Bytes;
use h2::client::SendRequest;

use crate::client::h1::Stream;
use crate::failure::{ErrorKind, Failure};

/// A user's HTTP/2 connection.
pub struct Link {
    send: SendRequest<Bytes>,
}

fn failure(what: &str, e: h2::Error) -> Failure {
    // A stream the server reset is a reset, named by its code; it ends
    // that stream, not the connection.
    if e.is_reset()
        && e.is_remote()
        && let Some(reason) = e.reason()
    {
        return Failure {
            stream_only: true,
            // Refused: the server did not process it (RFC 9113, 8.7).
            unprocessed: reason == h2::Reason::REFUSED_STREAM,
            ..Failure::new(
                ErrorKind::Reset,
                format!("HTTP/2 {what}: stream reset by the server: {reason:?}"),
            )
        };
    }
    // A graceful shutdown (GOAWAY with NO_ERROR) that came before the
    // server took this stream: not processed (RFC 9113, 6.8), so it is
    // safe to send again, on a new connection.
    if e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR) {
        return Failure {
            unprocessed: true,
            ..Failure::new(
                ErrorKind::Protocol,
                format!(
                    "HTTP/2 {what}: the server closed the connection gracefully (GOAWAY NO_ERROR) before it took this request"
                ),
            )
        };
    }
    // The client's library ended the connection itself: the server broke
    // the protocol. A push, with push turned off, is the common case.
    if e.is_go_away() && !e.is_remote() && e.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
        return Failure::new(
            ErrorKind::Protocol,
            format!(
                "HTTP/2 {what}: the client closed the connection (GOAWAY PROTOCOL_ERROR): the server broke the protocol, with a push although the client turned push off (SETTINGS_ENABLE_PUSH = 0) or another frame out of place"
            ),
        );
    }
    let kind = if e.is_io() {
        ErrorKind::Reset
    } else {
        ErrorKind::Protocol
    };
    Failure::new(kind, format!("HTTP/2 {what}: {e}"))
}

impl Link {
    /// The HTTP/2 preface and settings over `stream`; the connection's
    /// frames are then driven by a task on this worker until it closes.
    pub async fn handshake(stream: Stream) -> Result<Link, Failure> {
        let (send, connection) = h2::client::Builder::new()
            // No server push, as browsers and h2load: pushed streams would
            // be bytes nobody asked for, outside every step's figures.
            .enable_push(false)
            // The head's limit is HTTP/1.1's (64 KiB): a larger one is
            // refused, and said so (`response`).
            .max_header_list_size(super::h1::MAX_HEAD as u32)
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| failure("handshake", e))?;
        tokio::task::spawn_local(async move {
            let _ = connection.await;
        });
        Ok(Link { send })
    }

    /// Whether the connection can take another stream (false once it closed).
    pub async fn ready(&mut self) -> bool {
        poll_fn(|cx| self.send.poll_ready(cx)).await.is_ok()
    }

    /// Sends one request (its body, if any, as DATA frames within the
    /// stream's flow-control window); the response is the returned future's.
    pub async fn start(
        &mut self,
        request: http::Request<()>,
        body: &[u8],
    ) -> Result<h2::client::ResponseFuture, Failure> {
        let (response, mut out) = self
            .send
            .send_request(request, body.is_empty())
            .map_err(|e| failure("request", e))?;
        let mut rest = body;
        while !rest.is_empty() {
            out.reserve_capacity(rest.len());
            let room = match poll_fn(|cx| out.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(failure("request body", e)),
                None => {
                    return Err(Failure::new(
                        ErrorKind::Reset,
                        "HTTP/2 stream closed while sending the body",
                    ));
                }
            };
            let n = room.min(rest.len());
            let (now, later) = rest.split_at(n);
            out.send_data(Bytes::copy_from_slice(now), later.is_empty())
                .map_err(|e| failure("request body", e))?;
            rest = later;
        }
        Ok(response)
    }
}

/// The response head of a request [`Link::start`] sent.
pub async fn response(
    response: h2::client::ResponseFuture,
) -> Result<(http::response::Parts, h2::RecvStream), Failure> {
    let response = response.await.map_err(|e| {
        if refused_here(&e) {
            // h2 resets the stream itself, with one code for several
            // faults of the head: name them rather than "unspecific".
            return Failure {
                // A reset of this stream alone: the connection goes on.
                stream_only: true,
                ..Failure::new(
                ErrorKind::Protocol,
                format!(
                    "HTTP/2 response: its head was refused: a header block larger than {} KiB (the client's SETTINGS_MAX_HEADER_LIST_SIZE, HTTP/1.1's limit too), malformed header fields, or an end of the response where its content-length promised a body",
                    super::h1::MAX_HEAD >> 10
                ),
            )
            };
        }
        failure("response", e)
    })?;
    Ok(response.into_parts())
}

/// A stream the client's HTTP/2 library reset itself (PROTOCOL_ERROR): it
/// found the response malformed.
fn refused_here(e: &h2::Error) -> bool {
    e.is_reset() && !e.is_remote() && e.reason() == Some(h2::Reason::PROTOCOL_ERROR)
}

/// Reads a response body to its end, handing each chunk to `on_data` and
/// giving its flow-control window back as it goes; `read` counts the bytes
/// as they arrive (so a body cut part-way still counts what came).
/// `declared` is the head's content-length, to name a body that does not
/// match it.
pub async fn read_body(
    body: &mut h2::RecvStream,
    read: &mut u64,
    declared: Option<u64>,
    mut on_data: impl FnMut(&[u8]),
) -> Result<(), Failure> {
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| match declared.filter(|_| refused_here(&e)) {
            // h2 checks DATA against content-length (RFC 9113, 8.1.1).
            Some(n) => Failure {
                stream_only: true,
                ..Failure::new(
                    ErrorKind::Protocol,
                    format!(
                        "HTTP/2 response body: its length does not match its content-length ({n} bytes declared, {} arrived before the stream was reset)",
                        *read
                    ),
                )
            },
            None => failure("response body", e),
        })?;
        *read += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
        on_data(&chunk);
    }
    Ok(())
}

/// The response's trailers, once its body was read (`None` without).
pub async fn trailers(body: &mut h2::RecvStream) -> Result<Option<http::HeaderMap>, Failure> {
    body.trailers()
        .await
        .map_err(|e| failure("response trailers", e))
}
