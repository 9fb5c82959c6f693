//! One virtual user's HTTP client: its connections, kept alive across
//! requests like a browser's, its cookies, and redirects.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Uri};
use tokio::net::TcpStream;

use crate::assignment::{Address, BodySpec, Keep, Origin, Step, Target};
use crate::cookies::CookieJar;
use crate::failure::{ErrorKind, Failure};
use crate::h1::{Conn, Stream};
use crate::template::Template;
use crate::tls::Tls;

/// The `User-Agent` requests carry unless a step sets its own.
pub const USER_AGENT: &str = concat!("loadfleet/", env!("CARGO_PKG_VERSION"));

/// One request, rendered from its step for one user.
pub struct Prepared<'a> {
    pub method: Method,
    /// `None`: the target's origin.
    pub origin: Option<Origin>,
    /// Origin-form request target.
    pub uri: Uri,
    /// The step's fixed headers.
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// Headers rendered from templates.
    pub rendered: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
}

/// Renders a step's request from a user's variables. A step without
/// variables or query parameters builds nothing: its URI is shared.
pub fn prepare<'a>(
    step: &'a Step,
    vars: &[String],
    target: &Target,
) -> Result<Prepared<'a>, String> {
    let (origin, uri) = match &step.address {
        Address::Static(uri) => (None, uri.clone()),
        Address::Path(t) => {
            let mut path = t.render(vars);
            append_query(&mut path, &step.query, vars);
            // Never quote the rendered text: it may hold a password.
            let uri = target.request_uri(&path).map_err(|_| {
                "the rendered path is not a valid request target (values with spaces or \
                 symbols belong in `query`, which encodes them)"
                    .to_string()
            })?;
            (None, uri)
        }
        Address::Url(t) => {
            let mut url = t.render(vars);
            append_query(&mut url, &step.query, vars);
            let (origin, uri) = url
                .parse::<Uri>()
                .map_err(|e| e.to_string())
                .and_then(|u| Origin::split(&u))
                .map_err(|_| {
                    "the rendered url is not an absolute http:// or https:// URL".to_string()
                })?;
            (Some(origin), uri)
        }
    };
    let mut rendered = Vec::with_capacity(step.header_templates.len());
    for (name, t) in &step.header_templates {
        let value = HeaderValue::try_from(t.render(vars))
            .map_err(|_| format!("header `{name}`: the value is not a valid header value"))?;
        rendered.push((name.clone(), value));
    }
    let (body, content_type) = match &step.body {
        BodySpec::None => (Bytes::new(), None),
        BodySpec::Form(fields) => {
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                form.append_pair(&k.render(vars), &v.render(vars));
            }
            (
                Bytes::from(form.finish()),
                Some(HeaderValue::from_static(
                    "application/x-www-form-urlencoded",
                )),
            )
        }
        BodySpec::Json(t) => (
            Bytes::from(t.render(vars)),
            Some(HeaderValue::from_static("application/json")),
        ),
        BodySpec::Raw(t) => (Bytes::from(t.render(vars)), None),
    };
    Ok(Prepared {
        method: step.method.clone(),
        origin: origin.filter(|o| *o != target.origin()),
        uri,
        headers: &step.headers,
        rendered,
        body,
        content_type,
    })
}

fn append_query(out: &mut String, query: &[(Template, Template)], vars: &[String]) {
    if query.is_empty() {
        return;
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        q.append_pair(&k.render(vars), &v.render(vars));
    }
    out.push(if out.contains('?') { '&' } else { '?' });
    out.push_str(&q.finish());
}

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

/// Keeps as much of a body's next bytes as the limit leaves room for;
/// `cut` turns true once something did not fit.
#[inline]
fn keep_part(kept: &mut Vec<u8>, data: &[u8], limit: usize, cut: &mut bool) {
    let room = limit.saturating_sub(kept.len());
    *cut |= data.len() > room;
    kept.extend_from_slice(&data[..data.len().min(room)]);
}

/// Decodes a kept body that came compressed (in `kept`, using `decoded`
/// as room) and counts its decoded bytes; returns why it could not be
/// decoded, if so. `cut` says whether the decoded text was cut at `limit`.
fn decode_kept(
    decoder: &mut crate::encoding::BodyDecoder,
    coding: crate::encoding::Coding,
    kept: &mut Vec<u8>,
    decoded: &mut Vec<u8>,
    limit: usize,
    cut: &mut bool,
    decoded_bytes: &mut u64,
) -> Option<String> {
    if coding != crate::encoding::Coding::Identity {
        match decoder.decode(coding, kept, decoded, limit) {
            Ok(more) => {
                std::mem::swap(kept, decoded);
                *cut = more;
            }
            // Cut on the wire, its end could not be decoded: what was is kept.
            Err(_) if *cut => std::mem::swap(kept, decoded),
            Err(e) => return Some(e),
        }
    }
    *decoded_bytes += kept.len() as u64;
    None
}

fn add(slot: &mut Option<u64>, since: Instant) {
    *slot = Some(slot.unwrap_or(0) + since.elapsed().as_micros() as u64);
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
    h2: Option<crate::h2link::Link>,
    /// HTTP/2 connections to other origins that offered it (a browser keeps
    /// one per origin).
    others_h2: Vec<(Origin, crate::h2link::Link)>,
}

type Header = (HeaderName, HeaderValue);

/// A request body up to this size is written together with its head.
const SMALL_BODY: usize = 4 << 10;

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
        // Borrowed, not moved in: the request stays where the caller keeps
        // it instead of being copied into this future's state.
        let Prepared {
            method,
            origin,
            uri,
            headers,
            rendered,
            body,
            content_type,
        } = req;
        let mut hop = 0;
        loop {
            // HTTP/2 is decided once per connection to the target, and its
            // requests go through a boxed future: an HTTP/1.1 request's
            // state (the hot path) stays as small as it was.
            let to_target = origin.is_none();
            if to_target && self.h2.is_none() && self.conn.is_none() && self.may_h2() {
                Box::pin(self.open_target()).await?;
            }
            let other_h2 = match origin.as_ref() {
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
                Box::pin(self.exchange(
                    method,
                    origin.as_ref(),
                    uri,
                    (headers, rendered),
                    body,
                    content_type.as_ref(),
                    keep,
                ))
                .await
            } else {
                self.exchange_h1(
                    method,
                    origin.as_ref(),
                    uri,
                    (headers, rendered),
                    body,
                    content_type.as_ref(),
                    keep,
                )
                .await
            };
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    self.reset();
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
            let current = origin.as_ref().unwrap_or(&self.main);
            let (next_origin, next_uri) = resolve(&self.location, current, uri)
                .map_err(|e| Failure::new(ErrorKind::Redirect, format!("bad Location: {e}")))?;
            *origin = (next_origin != self.main).then_some(next_origin);
            *uri = next_uri;
            if reply.status == 303 || (matches!(reply.status, 301 | 302) && *method == Method::POST)
            {
                if *method != Method::HEAD {
                    *method = Method::GET;
                }
                *body = Bytes::new();
                *content_type = None;
            }
        }
    }

    /// Whether the target may speak HTTP/2 on the next connection.
    fn may_h2(&self) -> bool {
        use loadfleet_proto::v1::HttpVersion;
        match self.target.version {
            HttpVersion::Http2 | HttpVersion::H2c => true,
            HttpVersion::Auto => self.main.https,
            HttpVersion::Http1 => false,
        }
    }

    /// Opens the user's connection to the target when it may speak
    /// HTTP/2: an HTTP/2 connection when the server takes it (by ALPN over
    /// TLS; always for h2c), else a kept HTTP/1.1 connection.
    async fn open_target(&mut self) -> Result<(), Failure> {
        use loadfleet_proto::v1::HttpVersion;
        let h2_only = matches!(self.target.version, HttpVersion::Http2 | HttpVersion::H2c);
        self.connecting = true;
        let stream = Box::pin(connect(
            &self.policy,
            &mut self.tls,
            &self.target,
            &self.main,
            &mut self.phases,
        ))
        .await?;
        let offered = match &stream {
            Stream::Tls(t) => t.get_ref().1.alpn_protocol() == Some(&b"h2"[..]),
            Stream::Plain(_) => h2_only,
        };
        if offered {
            self.h2 = Some(crate::h2link::Link::handshake(stream).await?);
        } else if h2_only {
            self.connecting = false;
            return Err(Failure::new(
                ErrorKind::Protocol,
                format!(
                    "{} did not offer HTTP/2 (ALPN h2), which `[http] version = \"2\"` asks for",
                    self.main.host
                ),
            ));
        } else {
            self.conn = Some(Conn::new(stream));
        }
        self.connecting = false;
        Ok(())
    }

    /// Opens a connection to another origin over TLS: HTTP/2 when it offers
    /// it, else a kept HTTP/1.1 connection (at most four of each kept).
    async fn open_other(&mut self, o: &Origin) -> Result<(), Failure> {
        self.connecting = true;
        let stream = Box::pin(connect(
            &self.policy,
            &mut self.tls,
            &self.target,
            o,
            &mut self.phases,
        ))
        .await?;
        let offered =
            matches!(&stream, Stream::Tls(t) if t.get_ref().1.alpn_protocol() == Some(&b"h2"[..]));
        if offered {
            let link = crate::h2link::Link::handshake(stream).await?;
            if self.others_h2.len() >= MAX_OTHER_ORIGINS {
                self.others_h2.remove(0);
            }
            self.others_h2.push((o.clone(), link));
        } else {
            if self.others.len() >= MAX_OTHER_ORIGINS {
                self.others.remove(0);
            }
            self.others.push((o.clone(), Conn::new(stream)));
        }
        self.connecting = false;
        Ok(())
    }

    /// One request over the HTTP/2 connection to its origin (the target's
    /// when `origin` is `None`); a connection the server has closed is
    /// opened again first, and the request goes over HTTP/1.1 if the
    /// server no longer offers HTTP/2.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        method: &Method,
        origin: Option<&Origin>,
        uri: &Uri,
        (headers, rendered): (&[Header], &[Header]),
        body: &[u8],
        content_type: Option<&HeaderValue>,
        keep: Keep,
    ) -> Result<Reply, Failure> {
        let ready = match origin {
            None => match self.h2.as_mut() {
                Some(link) => link.ready().await,
                None => false,
            },
            Some(o) => match self.others_h2.iter_mut().find(|(k, _)| k == o) {
                Some((_, link)) => link.ready().await,
                None => false,
            },
        };
        if !ready {
            match origin {
                None => {
                    self.h2 = None;
                    self.open_target().await?;
                }
                Some(o) => {
                    self.others_h2.retain(|(k, _)| k != o);
                    self.open_other(o).await?;
                }
            }
            let h2 = match origin {
                None => self.h2.is_some(),
                Some(o) => self.others_h2.iter().any(|(k, _)| k == o),
            };
            if !h2 {
                return self
                    .exchange_h1(
                        method,
                        origin,
                        uri,
                        (headers, rendered),
                        body,
                        content_type,
                        keep,
                    )
                    .await;
            }
        }
        let reply = self
            .exchange_h2(
                method,
                origin,
                uri,
                (headers, rendered),
                body,
                content_type,
                keep,
            )
            .await;
        if reply.is_err() || self.target.connections == loadfleet_proto::v1::Connections::PerRequest
        {
            match origin {
                None => self.h2 = None,
                Some(o) => self.others_h2.retain(|(k, _)| k != o),
            }
        }
        reply
    }

    /// One request and its response as a stream of the user's HTTP/2
    /// connection to the target.
    #[allow(clippy::too_many_arguments)]
    async fn exchange_h2(
        &mut self,
        method: &Method,
        origin: Option<&Origin>,
        uri: &Uri,
        (headers, rendered): (&[Header], &[Header]),
        body: &[u8],
        content_type: Option<&HeaderValue>,
        keep: Keep,
    ) -> Result<Reply, Failure> {
        let UserClient {
            target,
            main,
            cookies,
            body: kept,
            cookie_line,
            location,
            exchanges,
            received,
            decoded_bytes,
            decoder,
            decoded,
            phases,
            h2,
            others_h2,
            ..
        } = self;
        let (main, link) = match origin {
            None => (&*main, h2.as_mut()),
            Some(o) => (
                o,
                others_h2
                    .iter_mut()
                    .find(|(k, _)| k == o)
                    .map(|(_, link)| link),
            ),
        };
        let Some(link) = link else {
            return Err(Failure::new(ErrorKind::Protocol, "no HTTP/2 connection"));
        };
        *exchanges += 1;
        let timed = target.phase_metrics.is_some();
        cookie_line.clear();
        if !cookies.is_empty() {
            cookies.header_for(
                &main.host,
                uri.path(),
                main.https,
                SystemTime::now(),
                cookie_line,
            );
        }
        let scheme = if main.https { "https" } else { "http" };
        let authority = main.authority.to_str().unwrap_or(&main.host);
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(format!(
                "{scheme}://{authority}{}",
                uri.path_and_query().map_or("/", |p| p.as_str())
            ))
            .version(http::Version::HTTP_2);
        let (mut has_encoding, mut has_agent, mut has_type) = (false, false, false);
        for (name, value) in headers.iter().chain(rendered) {
            // Connection-specific headers do not exist in HTTP/2, and the
            // host is the request's :authority.
            if [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, HOST].contains(name)
                || ["keep-alive", "upgrade", "proxy-connection", "te"].contains(&name.as_str())
            {
                continue;
            }
            has_encoding |= *name == http::header::ACCEPT_ENCODING;
            has_agent |= *name == http::header::USER_AGENT;
            has_type |= *name == CONTENT_TYPE;
            request = request.header(name, value);
        }
        if !has_encoding {
            request = request.header(http::header::ACCEPT_ENCODING, "gzip, deflate, br, zstd");
        }
        if !has_agent {
            request = request.header(http::header::USER_AGENT, USER_AGENT);
        }
        if !has_type && let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        if !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            request = request.header(CONTENT_LENGTH, body.len());
        }
        if !cookie_line.is_empty() {
            request = request.header(http::header::COOKIE, cookie_line.as_str());
        }
        let request = request
            .body(())
            .map_err(|e| Failure::new(ErrorKind::Request, format!("HTTP/2 request: {e}")))?;
        let sending = timed.then(Instant::now);
        let pending = link.start(request, body).await?;
        let sent = sending.map(|t| {
            let now = Instant::now();
            phases.send += micros(t, now);
            now
        });
        let (head, mut recv) = crate::h2link::response(pending).await?;
        let headed = sent.map(|t| {
            let now = Instant::now();
            phases.wait += micros(t, now);
            now
        });
        location.clear();
        let mut kept_headers = http::HeaderMap::new();
        let mut coding = crate::encoding::Coding::Identity;
        let now = SystemTime::now();
        // The head's size as HTTP/1.1 would spell it (HPACK's compressed
        // frames are not what a reader of the figures compares).
        let mut head_bytes = 15u64;
        for (name, value) in &head.headers {
            head_bytes += (name.as_str().len() + value.len() + 4) as u64;
            if *name == http::header::SET_COOKIE {
                if let Ok(v) = value.to_str() {
                    cookies.store(v, &main.host, uri.path(), now);
                }
            } else if *name == http::header::LOCATION {
                location.push_str(&String::from_utf8_lossy(value.as_bytes()));
            } else if *name == http::header::CONTENT_ENCODING {
                coding = crate::encoding::Coding::of(value.as_bytes());
            }
            if keep.headers {
                kept_headers.append(name.clone(), value.clone());
            }
        }
        if keep.body {
            kept.clear();
        }
        let limit = target.body_limit;
        let mut cut = false;
        let body_bytes = crate::h2link::read_body(&mut recv, |data| {
            if keep.body {
                keep_part(kept, data, limit, &mut cut);
            }
        })
        .await?;
        if let Some(t) = headed {
            phases.receive += micros(t, Instant::now());
        }
        *received += head_bytes + body_bytes;
        let undecodable = if keep.body {
            decode_kept(
                decoder,
                coding,
                kept,
                decoded,
                limit,
                &mut cut,
                decoded_bytes,
            )
        } else {
            None
        };
        Ok(Reply {
            status: head.status.as_u16(),
            headers: kept_headers,
            undecodable,
            truncated: (keep.body && cut).then_some(limit),
            http2: true,
        })
    }

    /// One request and its response on a kept or new connection. When a
    /// kept connection turns out closed (the write fails, or it ends before
    /// any byte of a response), the request is sent once more on a new
    /// connection, whatever its method, as browsers do: the server's idle
    /// timeout raced it. Counted in `retries`.
    #[allow(clippy::too_many_arguments)]
    async fn exchange_h1(
        &mut self,
        method: &Method,
        origin: Option<&Origin>,
        uri: &Uri,
        (headers, rendered): (&[Header], &[Header]),
        body: &[u8],
        content_type: Option<&HeaderValue>,
        keep: Keep,
    ) -> Result<Reply, Failure> {
        let UserClient {
            target,
            main,
            policy,
            tls,
            conn: main_conn,
            others,
            cookies,
            body: kept,
            cookie_line,
            out,
            location,
            connecting,
            exchanges,
            retries,
            received,
            decoded_bytes,
            decoder,
            decoded,
            phases,
            h2: _,
            others_h2: _,
        } = self;
        let timed = target.phase_metrics.is_some();
        *exchanges += 1;
        let o = origin.unwrap_or(main);
        cookie_line.clear();
        if !cookies.is_empty() {
            cookies.header_for(&o.host, uri.path(), o.https, SystemTime::now(), cookie_line);
        }
        let closing = write_head(
            out,
            (method, uri, o),
            headers.iter().chain(rendered),
            content_type,
            body.len(),
            cookie_line,
            target.connections == loadfleet_proto::v1::Connections::PerRequest,
        );
        // A small body goes out with the head, in one write.
        let body = if body.len() <= SMALL_BODY {
            out.extend_from_slice(body);
            &[][..]
        } else {
            body
        };
        let slot = match origin {
            None => main_conn.take(),
            Some(o) => others
                .iter()
                .position(|(k, _)| k == o)
                .map(|i| others.remove(i).1),
        };
        // A kept connection is tried first, once.
        let mut slot = slot.and_then(|mut c| (!c.is_stale()).then_some(c));
        let (mut conn, head, kept_headers, coding, headed) = loop {
            let reused = slot.is_some();
            let mut conn = match slot.take() {
                Some(c) => c,
                // Boxed: a connect (and a TLS handshake) is rare, and its
                // kilobyte of state would otherwise be in every user's task.
                None => {
                    *connecting = true;
                    let stream = Box::pin(connect(policy, tls, target, o, phases)).await?;
                    *connecting = false;
                    Conn::new(stream)
                }
            };
            let retry = reused;
            let sending = timed.then(Instant::now);
            if let Err(f) = conn.send(out, body).await {
                if retry {
                    *exchanges += 1;
                    *retries += 1;
                    continue;
                }
                return Err(f);
            }
            let sent = sending.map(|t| {
                let now = Instant::now();
                phases.send += micros(t, now);
                now
            });
            location.clear();
            let mut kept_headers = http::HeaderMap::new();
            let mut now = None;
            let mut coding = crate::encoding::Coding::Identity;
            let mut idle_timeout = None;
            let read = conn
                .read_head(*method == Method::HEAD, |name, value| {
                    if name.eq_ignore_ascii_case("set-cookie") {
                        if let Ok(v) = std::str::from_utf8(value) {
                            let now = *now.get_or_insert_with(SystemTime::now);
                            cookies.store(v, &o.host, uri.path(), now);
                        }
                    } else if name.eq_ignore_ascii_case("location") {
                        location.push_str(&String::from_utf8_lossy(value));
                    } else if name.eq_ignore_ascii_case("content-encoding") {
                        coding = crate::encoding::Coding::of(value);
                    } else if name.eq_ignore_ascii_case("keep-alive") {
                        idle_timeout = keep_alive_timeout(value);
                    }
                    if keep.headers
                        && let (Ok(n), Ok(v)) = (
                            HeaderName::from_bytes(name.as_bytes()),
                            HeaderValue::from_bytes(value),
                        )
                    {
                        kept_headers.append(n, v);
                    }
                })
                .await;
            let headed = sent.map(|t| {
                let now = Instant::now();
                phases.wait += micros(t, now);
                now
            });
            match read {
                Ok(head) => {
                    conn.idle_from_now(idle_timeout);
                    break (conn, head, kept_headers, coding, headed);
                }
                Err((_, true)) if retry => {
                    *exchanges += 1;
                    *retries += 1;
                    continue;
                }
                Err((f, _)) => return Err(f),
            }
        };
        if keep.body {
            kept.clear();
        }
        let limit = target.body_limit;
        let mut cut = false;
        conn.read_body(head.framing, |data| {
            if keep.body {
                keep_part(kept, data, limit, &mut cut);
            }
        })
        .await?;
        if let Some(t) = headed {
            phases.receive += micros(t, Instant::now());
        }
        *received += conn.take_received();
        let undecodable = if keep.body {
            decode_kept(
                decoder,
                coding,
                kept,
                decoded,
                limit,
                &mut cut,
                decoded_bytes,
            )
        } else {
            None
        };
        if head.keep_alive && !closing {
            match origin {
                None => *main_conn = Some(conn),
                Some(o) => {
                    if others.len() >= MAX_OTHER_ORIGINS {
                        others.remove(0);
                    }
                    others.push((o.clone(), conn));
                }
            }
        }
        Ok(Reply {
            status: head.status,
            headers: kept_headers,
            undecodable,
            truncated: (keep.body && cut).then_some(limit),
            http2: false,
        })
    }
}

/// Writes a request head into `out`; true when it asks the server to close
/// the connection after the response (the step's `Connection: close`, or
/// `close`: a new connection for every request). `Host` comes from the
/// origin unless the step sets it; `Content-Length` always from the body.
fn write_head<'h>(
    out: &mut Vec<u8>,
    (method, uri, origin): (&Method, &Uri, &Origin),
    headers: impl Iterator<Item = &'h (HeaderName, HeaderValue)> + Clone,
    content_type: Option<&HeaderValue>,
    body_len: usize,
    cookie: &str,
    close: bool,
) -> bool {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    let mut has_encoding = false;
    let mut has_agent = false;
    let mut has_type = false;
    let mut has_connection = false;
    let mut closing = false;
    for (name, value) in headers {
        if *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING {
            continue;
        }
        has_host |= *name == HOST;
        has_encoding |= *name == http::header::ACCEPT_ENCODING;
        has_agent |= *name == http::header::USER_AGENT;
        has_type |= *name == CONTENT_TYPE;
        if *name == CONNECTION {
            has_connection = true;
            closing |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        put_header(out, name.as_str(), value.as_bytes());
    }
    if !has_host {
        put_header(out, "host", origin.authority.as_bytes());
    }
    // As browsers do (a step's own headers win): servers and CDNs then
    // compress as they would for real visitors; kept bodies are decoded.
    if !has_encoding {
        put_header(out, "accept-encoding", b"gzip, deflate, br, zstd");
    }
    if !has_agent {
        put_header(out, "user-agent", USER_AGENT.as_bytes());
    }
    if !has_type && let Some(ct) = content_type {
        put_header(out, "content-type", ct.as_bytes());
    }
    if body_len > 0 || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        let mut digits = [0u8; 20];
        put_header(out, "content-length", decimal(body_len as u64, &mut digits));
    }
    if !cookie.is_empty() {
        put_header(out, "cookie", cookie.as_bytes());
    }
    if close {
        if !has_connection {
            put_header(out, "connection", b"close");
        }
        closing = true;
    }
    out.extend_from_slice(b"\r\n");
    closing
}

/// `timeout=N` of a `Keep-Alive` response header: how long the server keeps
/// an idle connection open.
fn keep_alive_timeout(value: &[u8]) -> Option<Duration> {
    value.split(|&b| b == b',').find_map(|param| {
        let (k, v) = std::str::from_utf8(param).ok()?.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let secs: u32 = v.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(u64::from(secs)))
    })
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Opens a connection to `o` (TLS for https), checking the address dialed
/// against the agent's policy.
async fn connect(
    policy: &crate::policy::Policy,
    tls: &mut Option<Tls>,
    target: &Target,
    o: &Origin,
    phases: &mut Phases,
) -> Result<Stream, Failure> {
    let limit = target.connect_timeout;
    tokio::time::timeout(limit, open(policy, tls, target, o, phases))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::new(
                ErrorKind::ConnectTimeout,
                format!("no connection to {}:{} within {limit:?}", o.host, o.port),
            ))
        })
}

/// Resolves, checks against the policy, connects and (for https) shakes
/// hands.
async fn open(
    policy: &crate::policy::Policy,
    tls: &mut Option<Tls>,
    target: &Target,
    o: &Origin,
    phases: &mut Phases,
) -> Result<Stream, Failure> {
    // A connect is rare: its phases are timed whether or not they are kept.
    let began = Instant::now();
    let addr = match o.host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, o.port),
        Err(_) => {
            let found = tokio::net::lookup_host((o.host.as_str(), o.port))
                .await
                .map_err(|e| Failure::new(ErrorKind::Dns, format!("resolving {}: {e}", o.host)))?
                .next()
                .ok_or_else(|| {
                    Failure::new(ErrorKind::Dns, format!("{} has no address", o.host))
                })?;
            add(&mut phases.dns, began);
            found
        }
    };
    // Checked on the address actually dialed, so DNS cannot slip past it.
    if !policy.address_allowed(&o.host, addr.ip()) {
        return Err(Failure::new(
            ErrorKind::Blocked,
            format!(
                "{} resolved to {}, outside this agent's --allow-target list",
                o.host,
                addr.ip()
            ),
        ));
    }
    let connecting = Instant::now();
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        Failure::new(
            ErrorKind::Connect,
            format!("connecting to {}:{}: {e}", o.host, o.port),
        )
    })?;
    add(&mut phases.connect, connecting);
    let _ = stream.set_nodelay(true);
    if !o.https {
        return Ok(Stream::Plain(stream));
    }
    if tls.is_none() {
        *tls = Some(
            Tls::new(target.tls_settings())
                .map_err(|e| Failure::new(ErrorKind::Tls, e.to_string()))?,
        );
    }
    let tls = tls.as_ref().expect("set above");
    let name = rustls::pki_types::ServerName::try_from(o.host.clone())
        .map_err(|e| Failure::new(ErrorKind::Tls, format!("server name {}: {e}", o.host)))?;
    let shaking = Instant::now();
    let stream = tls.connect(name, stream).await.map_err(|e| {
        Failure::new(
            ErrorKind::Tls,
            format!("TLS handshake with {}: {e}", o.host),
        )
    })?;
    add(&mut phases.tls, shaking);
    Ok(Stream::Tls(Box::new(stream)))
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
