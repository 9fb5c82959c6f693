//! One request and its response over HTTP/1.1, on the user's kept
//! connection to its origin or a new one; the request head is written by
//! hand into the user's one buffer.

use std::time::Instant;

use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Uri};

use super::h1::Conn;
use super::response::{HeadReader, KeptBody};
use super::{MAX_OTHER_ORIGINS, Prepared, Reply, USER_AGENT, UserClient, connect, micros};
use crate::assignment::{Keep, Origin};
use crate::failure::Failure;

/// A request body up to this size is written together with its head.
const SMALL_BODY: usize = 4 << 10;

impl UserClient {
    /// One request and its response on a kept or new connection. When a
    /// kept connection turns out closed (the write fails, or it ends before
    /// any byte of a response), the request is sent once more on a new
    /// connection, whatever its method, as browsers do: the server's idle
    /// timeout raced it. Counted in `retries`.
    pub(super) async fn exchange_h1(
        &mut self,
        req: &Prepared<'_>,
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
        let (method, uri) = (&req.method, &req.uri);
        let timed = target.phase_metrics.is_some();
        *exchanges += 1;
        let o = req.origin.as_ref().unwrap_or(main);
        cookie_line.clear();
        if !cookies.is_empty() {
            cookies.header_for(
                &o.host,
                uri.path(),
                o.https,
                std::time::SystemTime::now(),
                cookie_line,
            );
        }
        let closing = write_head(
            out,
            (method, uri, o),
            req.headers.iter().chain(&req.rendered),
            req.content_type.as_ref(),
            req.body.len(),
            cookie_line,
            target.connections == loadfleet_proto::v1::Connections::PerRequest,
        );
        // A small body goes out with the head, in one write.
        let body = if req.body.len() <= SMALL_BODY {
            out.extend_from_slice(&req.body);
            &[][..]
        } else {
            &req.body[..]
        };
        let slot = match &req.origin {
            None => main_conn.take(),
            Some(o) => others
                .iter()
                .position(|(k, _)| k == o)
                .map(|i| others.remove(i).1),
        };
        // A kept connection is tried first, once.
        let mut slot = slot.and_then(|mut c| (!c.is_stale()).then_some(c));
        let (mut conn, head, mut kept_headers, coding, headed) = loop {
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
            let mut reader =
                HeadReader::new(cookies, location, (&o.host, uri.path()), keep.headers);
            let read = conn
                .read_head(*method == Method::HEAD, |name, value| {
                    reader.header(name, value)
                })
                .await;
            let headed = sent.map(|t| {
                let now = Instant::now();
                phases.wait += micros(t, now);
                now
            });
            match read {
                Ok(head) => {
                    conn.idle_from_now(reader.idle_timeout);
                    break (conn, head, reader.kept, reader.coding, headed);
                }
                Err((_, true)) if retry => {
                    *exchanges += 1;
                    *retries += 1;
                    continue;
                }
                Err((f, _)) => return Err(f),
            }
        };
        let mut body = KeptBody::new(kept, target.body_limit, keep.body);
        conn.read_body(head.framing, |data| body.part(data)).await?;
        // Trailers (after a chunked body) are headers the checks see too,
        // as a gRPC-style status is.
        if keep.headers && !conn.trailers().is_empty() {
            for line in conn.trailers().split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(colon) = line.iter().position(|&b| b == b':')
                    && let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(&line[..colon]),
                        http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
                    )
                {
                    kept_headers.append(name, value);
                }
            }
        }
        if let Some(t) = headed {
            phases.receive += micros(t, Instant::now());
        }
        *received += conn.take_received();
        let (undecodable, truncated) = body.finish(decoder, coding, decoded, decoded_bytes);
        if head.keep_alive && !closing {
            match &req.origin {
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
            truncated,
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
