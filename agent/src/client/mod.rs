//! One virtual user's HTTP client: its connections, kept alive across
//! requests like a browser's, its cookies, and redirects.
//!
//! Its parts: [`prepare`] (a step's request for one user), `connect`
//! (keeping connections), `exchange_h1` and `exchange_h2` (a request and
//! its response over each protocol, beside [`h1`] and [`h2link`], the
//! connections themselves), and `response` (what is taken from a
//! response, whichever protocol brought it).

mod connect;
mod exchange_h1;
mod exchange_h2;
pub mod h1;
pub mod h2link;
pub mod prepare;
mod response;

pub use prepare::{Prepared, prepare};

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http::Uri;
use http::uri::PathAndQuery;

use crate::assignment::{Keep, Origin, Step, Target};
use crate::cookies::CookieJar;
use crate::failure::{ErrorKind, Failure};
use crate::tls::Tls;
use connect::connect;
use h1::Conn;

/// The `User-Agent` requests carry unless a step sets its own.
pub const USER_AGENT: &str = concat!("loadfleet/", env!("CARGO_PKG_VERSION"));

/// What one request cost, beyond its latency (see [`UserClient::take_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub exchanges: u32,
    pub retries: u32,
    pub received: u64,
    pub decoded: u64,
}

/// Where a request's time went, microseconds, summed over its attempts and
/// redirect hops. DNS, connect and TLS are `None` for a request that opened
/// no connection (or resolved no name), so they are not averaged in.
/// Wait runs from the request's last byte written to its response head
/// read; receive from there to the body's last byte.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    pub dns: Option<u64>,
    pub connect: Option<u64>,
    pub tls: Option<u64>,
    pub send: u64,
    pub wait: u64,
    pub receive: u64,
}

fn micros(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}

/// A response: its status, and its headers when they were asked for; the
/// body (when kept) is [`UserClient::body`].
pub struct Reply {
    pub status: u16,
    /// Empty unless the request asked to keep headers.
    pub headers: http::HeaderMap,
    /// A kept body that came in a coding that could not be decoded, and why:
    /// its checks cannot read it.
    pub undecodable: Option<String>,
    /// The kept body was cut at this many bytes (`[http] body_limit`):
    /// checks and extractions saw only that much.
    pub truncated: Option<usize>,
    /// The response came over HTTP/2.
    pub http2: bool,
}

/// One virtual user's connections and cookies, kept alive across requests
/// like a browser's: one connection to the target, a few to other origins
/// (absolute URLs, redirects), reopened (and the connect time counted) when
/// a server closes them. The user's own task writes each request and reads
/// its response: there is no connection task.
pub struct UserClient {
    target: Arc<Target>,
    main: Origin,
    policy: Arc<crate::policy::Policy>,
    tls: Option<Tls>,
    conn: Option<Conn>,
    others: Vec<(Origin, Conn)>,
    /// The user's cookie jar.
    pub cookies: CookieJar,
    body: Vec<u8>,
    cookie_line: String,
    /// The request head being sent.
    out: Vec<u8>,
    /// The `Location` of the last response; empty when it had none.
    location: String,
    /// A new connection is being opened for the request in flight.
    connecting: bool,
    /// Decodes compressed bodies that are kept (made at the first one).
    decoder: crate::encoding::BodyDecoder,
    /// The decoded body, swapped with `body` once decoded.
    decoded: Vec<u8>,
    /// HTTP exchanges begun since [`UserClient::take_counts`]: one per
    /// request, one more per redirect followed.
    exchanges: u32,
    /// Attempts resent on a new connection since [`UserClient::take_counts`].
    retries: u32,
    /// Response bytes read, and kept bodies' bytes after decoding, since
    /// [`UserClient::take_counts`].
    received: u64,
    decoded_bytes: u64,
    /// The request in flight's phases, when they are timed.
    phases: Phases,
    /// The user's HTTP/2 connection to the target, when it speaks HTTP/2.
    h2: Option<h2link::Link>,
    /// HTTP/2 connections to other origins that offered it (a browser keeps
    /// one per origin).
    others_h2: Vec<(Origin, h2link::Link)>,
}

/// Connections kept to origins other than the target.
const MAX_OTHER_ORIGINS: usize = 4;

impl UserClient {
    pub fn new(
        target: Arc<Target>,
        tls: Option<Tls>,
        policy: Arc<crate::policy::Policy>,
    ) -> UserClient {
        UserClient {
            main: target.origin(),
            target,
            policy,
            tls,
            conn: None,
            others: Vec::new(),
            cookies: CookieJar::default(),
            body: Vec::new(),
            cookie_line: String::new(),
            out: Vec::new(),
            location: String::new(),
            connecting: false,
            exchanges: 0,
            retries: 0,
            received: 0,
            decoded_bytes: 0,
            phases: Phases::default(),
            h2: None,
            others_h2: Vec::new(),
            decoder: Default::default(),
            decoded: Vec::new(),
        }
    }

    /// Forgets the connections, so the next request opens new ones.
    pub fn reset(&mut self) {
        self.conn = None;
        self.h2 = None;
        self.others_h2.clear();
        self.others.clear();
        self.connecting = false;
    }

    /// What the last request cost since the previous call: its HTTP
    /// exchanges (redirect hops and resent attempts included, so a step's
    /// count reconciles with the server's log), the attempts resent, the
    /// response bytes read and the kept bodies' decoded bytes.
    pub fn take_counts(&mut self) -> Counts {
        Counts {
            exchanges: std::mem::take(&mut self.exchanges),
            retries: std::mem::take(&mut self.retries),
            received: std::mem::take(&mut self.received),
            decoded: std::mem::take(&mut self.decoded_bytes),
        }
    }

    /// Where the last request's time went (timed only with `[http] phases`).
    pub fn take_phases(&mut self) -> Phases {
        std::mem::take(&mut self.phases)
    }

    /// Whether the last request was still opening its connection when it
    /// was abandoned (its timeout ran out): a connect timeout, not a
    /// response timeout.
    pub fn was_connecting(&self) -> bool {
        self.connecting
    }

    /// The body of the last response, when it was kept.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Bytes of read buffer held by this user's open connections.
    pub fn buffered(&self) -> usize {
        self.conn
            .iter()
            .chain(self.others.iter().map(|(_, c)| c))
            .map(Conn::buffer_len)
            .sum()
    }

    /// Sends a plain step (no variables) and reads the whole response.
    pub async fn send(&mut self, step: &Step) -> Result<Reply, Failure> {
        let mut req =
            prepare(step, &[], &self.target).map_err(|e| Failure::new(ErrorKind::Request, e))?;
        self.execute(&mut req, step.max_redirects, step.keep())
            .await
    }

    /// Sends a prepared request, following up to `max_redirects` redirects
    /// (303, and 301/302 after a POST, continue as GET without a body), and
    /// reads the whole final response, keeping what `keep` asks for.
    /// The caller bounds it with the target's timeout.
    pub async fn execute(
        &mut self,
        req: &mut Prepared<'_>,
        max_redirects: u32,
        keep: Keep,
    ) -> Result<Reply, Failure> {
        // A request that failed left its phases: they are not this one's.
        if self.target.phase_metrics.is_some() {
            self.phases = Phases::default();
        }
        let mut hop = 0;
        loop {
            // HTTP/2 is decided once per connection to the target, and its
            // requests go through a boxed future: an HTTP/1.1 request's
            // state (the hot path) stays as small as it was. The request is
            // borrowed, not moved in, so it is not copied into the futures.
            let to_target = req.origin.is_none();
            if to_target && self.h2.is_none() && self.conn.is_none() && self.may_h2() {
                Box::pin(self.open_target()).await?;
            }
            let other_h2 = match req.origin.as_ref() {
                None => false,
                Some(o) => {
                    let known = self.others_h2.iter().any(|(k, _)| k == o);
                    if !known
                        && o.https
                        && self.target.version != loadfleet_proto::v1::HttpVersion::Http1
                        && !self.others.iter().any(|(k, _)| k == o)
                    {
                        Box::pin(self.open_other(o)).await?;
                        self.others_h2.iter().any(|(k, _)| k == o)
                    } else {
                        known
                    }
                }
            };
            let reply = if (to_target && self.h2.is_some()) || other_h2 {
                Box::pin(self.exchange(req, keep)).await
            } else {
                self.exchange_h1(req, keep).await
            };
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    // A reset HTTP/2 stream leaves its connection working.
                    if !e.stream_only {
                        self.reset();
                    }
                    return Err(e);
                }
            };
            if max_redirects == 0 || !(300..400).contains(&reply.status) || self.location.is_empty()
            {
                return Ok(reply);
            }
            if hop == max_redirects {
                return Err(Failure::new(
                    ErrorKind::Redirect,
                    format!("more than {max_redirects} redirects"),
                ));
            }
            hop += 1;
            let current = req.origin.as_ref().unwrap_or(&self.main);
            let (next_origin, next_uri) = resolve(&self.location, current, &req.uri)
                .map_err(|e| Failure::new(ErrorKind::Redirect, format!("bad Location: {e}")))?;
            req.origin = (next_origin != self.main).then_some(next_origin);
            req.uri = next_uri;
            if reply.status == 303
                || (matches!(reply.status, 301 | 302) && req.method == Method::POST)
            {
                if req.method != Method::HEAD {
                    req.method = Method::GET;
                }
                req.body = Bytes::new();
                req.content_type = None;
            }
        }
    }
}

/// Where a `Location` header points, from the request that got it.
fn resolve(location: &str, origin: &Origin, uri: &Uri) -> Result<(Origin, Uri), String> {
    let loc = location.trim();
    if loc.starts_with("http://") || loc.starts_with("https://") {
        let abs: Uri = loc.parse().map_err(|e| format!("`{loc}`: {e}"))?;
        return Origin::split(&abs);
    }
    if let Some(rest) = loc.strip_prefix("//") {
        let scheme = if origin.https { "https" } else { "http" };
        let abs: Uri = format!("{scheme}://{rest}")
            .parse()
            .map_err(|e| format!("`{loc}`: {e}"))?;
        return Origin::split(&abs);
    }
    let path = if loc.starts_with('/') {
        loc.to_string()
    } else {
        // Relative to the directory of the current path.
        let base = uri.path();
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{loc}", if dir.is_empty() { "/" } else { dir })
    };
    let pq: PathAndQuery = path.parse().map_err(|e| format!("`{loc}`: {e}"))?;
    Ok((origin.clone(), Uri::from(pq)))
}
