//! One request and its response as a stream of the user's HTTP/2
//! connection to its origin, opened again when the server has closed it.

use std::time::{Instant, SystemTime};

use http::Method;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};

use super::response::{HeadReader, KeptBody};
use super::{Prepared, Reply, USER_AGENT, UserClient, micros};
use crate::assignment::Keep;
use crate::failure::{ErrorKind, Failure};

impl UserClient {
    /// One request over the HTTP/2 connection to its origin (the target's
    /// when the request has no origin of its own); a connection the server
    /// has closed is opened again first, and the request goes over HTTP/1.1
    /// if the server no longer offers HTTP/2. A request the server did not
    /// process (it refused the stream: RFC 9113, 8.7) is sent once more
    /// and counted in `retries`, not in the errors.
    pub(super) async fn exchange(
        &mut self,
        req: &Prepared<'_>,
        keep: Keep,
    ) -> Result<Reply, Failure> {
        let origin = req.origin.as_ref();
        let mut resent = false;
        loop {
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
                    return self.exchange_h1(req, keep).await;
                }
            }
            let reply = self.exchange_h2(req, keep).await;
            let resend = !resent && reply.as_ref().is_err_and(|f| f.unprocessed);
            let broken = reply.as_ref().is_err_and(|f| !f.stream_only);
            if broken || self.target.connections == loadfleet_proto::v1::Connections::PerRequest {
                match origin {
                    None => self.h2 = None,
                    Some(o) => self.others_h2.retain(|(k, _)| k != o),
                }
            }
            if resend {
                resent = true;
                self.retries += 1;
                continue;
            }
            return reply;
        }
    }

    /// One request and its response as a stream of an HTTP/2 connection.
    async fn exchange_h2(&mut self, req: &Prepared<'_>, keep: Keep) -> Result<Reply, Failure> {
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
        let (method, uri, body) = (&req.method, &req.uri, &req.body[..]);
        let (main, link) = match &req.origin {
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
        for (name, value) in req.headers.iter().chain(&req.rendered) {
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
        if !has_type && let Some(ct) = &req.content_type {
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
        // Counted once the stream is open: a request the connection would
        // not take (it was shutting down) never reached the server.
        *exchanges += 1;
        let sent = sending.map(|t| {
            let now = Instant::now();
            phases.send += micros(t, now);
            now
        });
        let (head, mut recv) = super::h2link::response(pending).await?;
        let headed = sent.map(|t| {
            let now = Instant::now();
            phases.wait += micros(t, now);
            now
        });
        let mut reader = HeadReader::new(cookies, location, (&main.host, uri.path()), keep.headers);
        // The head's size as HTTP/1.1 would spell it (HPACK's compressed
        // frames are not what a reader of the figures compares).
        let mut head_bytes = 15u64;
        for (name, value) in &head.headers {
            head_bytes += (name.as_str().len() + value.len() + 4) as u64;
            reader.header(name.as_str(), value.as_bytes());
        }
        let (mut kept_headers, coding) = (reader.kept, reader.coding);
        let mut kept_body = KeptBody::new(kept, target.body_limit, keep.body);
        let declared = head
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut body_bytes = 0u64;
        let read = super::h2link::read_body(&mut recv, &mut body_bytes, declared, |data| {
            kept_body.part(data)
        })
        .await;
        // What arrived counts, even from a body cut part-way.
        *received += head_bytes + body_bytes;
        read?;
        // Trailers are headers the checks see too (a gRPC status).
        if keep.headers
            && let Some(trailers) = super::h2link::trailers(&mut recv).await?
        {
            for (name, value) in &trailers {
                kept_headers.append(name.clone(), value.clone());
            }
        }
        if let Some(t) = headed {
            phases.receive += micros(t, Instant::now());
        }
        let (undecodable, truncated) = kept_body.finish(decoder, coding, decoded, decoded_bytes);
        Ok(Reply {
            status: head.status.as_u16(),
            headers: kept_headers,
            undecodable,
            truncated,
            http2: true,
        })
    }
}
