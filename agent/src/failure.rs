//! Why a request failed: the kind every report counts by, and the failure
//! an exchange returns. Shared by the transport ([`crate::client::h1`],
//! [`crate::client`]) and the metrics ([`crate::recorder`]), which depend on
//! it and not on each other.

use std::borrow::Cow;
use std::io;

/// Why a request counts as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A response with status >= 400 (its latency is still recorded).
    Status(u16),
    /// The name of the target did not resolve.
    Dns,
    /// The TCP connection could not be opened (refused, unreachable).
    Connect,
    /// No complete response within the target's timeout.
    Timeout,
    /// No connection (TCP connect and TLS handshake) within the target's
    /// `connect_timeout`, or the request timeout ran out while connecting.
    ConnectTimeout,
    /// The connection was reset or closed mid-request.
    Reset,
    /// The TLS handshake failed.
    Tls,
    /// The response was not valid HTTP.
    Protocol,
    /// Any other I/O failure.
    Io,
    /// The agent's own --allow-target list refused the resolved address.
    Blocked,
    /// A response failed one of its step's checks.
    Check,
    /// A kept body came in a content coding that could not be decoded, so
    /// its checks and extractions could not read it.
    Decode,
    /// An extraction found nothing and had no default.
    Extract,
    /// Too many redirects, or a `Location` that is not a URL.
    Redirect,
    /// The request could not be built (a variable's value made it invalid).
    Request,
    /// A step of a group (transaction) failed: the group failed with it.
    Group,
    /// A step's `set` had no value (arithmetic on a variable that holds no
    /// integer).
    Set,
}

impl ErrorKind {
    /// The label used on the wire and in reports: `http_503`, `timeout`, ...
    pub fn label(self) -> Cow<'static, str> {
        match self {
            ErrorKind::Status(code) => Cow::Owned(format!("http_{code}")),
            ErrorKind::Dns => Cow::Borrowed("dns"),
            ErrorKind::Connect => Cow::Borrowed("connect"),
            ErrorKind::Timeout => Cow::Borrowed("timeout"),
            ErrorKind::ConnectTimeout => Cow::Borrowed("connect_timeout"),
            ErrorKind::Reset => Cow::Borrowed("reset"),
            ErrorKind::Tls => Cow::Borrowed("tls"),
            ErrorKind::Protocol => Cow::Borrowed("protocol"),
            ErrorKind::Io => Cow::Borrowed("io"),
            ErrorKind::Blocked => Cow::Borrowed("blocked"),
            ErrorKind::Check => Cow::Borrowed("check"),
            ErrorKind::Decode => Cow::Borrowed("decode"),
            ErrorKind::Extract => Cow::Borrowed("extract"),
            ErrorKind::Redirect => Cow::Borrowed("redirect"),
            ErrorKind::Request => Cow::Borrowed("request"),
            ErrorKind::Group => Cow::Borrowed("group"),
            ErrorKind::Set => Cow::Borrowed("set"),
        }
    }
}

/// A failed exchange: its kind and what happened, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    /// Only one HTTP/2 stream ended (the server reset it): its connection
    /// carries on and is kept.
    pub stream_only: bool,
    /// The server did not process the request (HTTP/2 REFUSED_STREAM): it
    /// is safe to send again.
    pub unprocessed: bool,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            stream_only: false,
            unprocessed: false,
        }
    }

    /// Classifies an I/O error of an exchange: a connection the server
    /// reset or closed is `reset`, anything else `io`.
    pub fn io(e: io::Error) -> Failure {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => ErrorKind::Reset,
            _ => ErrorKind::Io,
        };
        Failure::new(kind, e.to_string())
    }
}
