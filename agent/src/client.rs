//! One virtual user's HTTP client: its connections, kept alive across
//! requests like a browser's, its cookies, and redirects.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::assignment::{Address, BodySpec, Origin, Step, Target};
use crate::journey::{CookieJar, Template};
use crate::recorder::ErrorKind;

/// TLS settings shared by every connection of a run (built once).
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
}

impl Tls {
    /// Verifies servers against the Mozilla root store (webpki-roots) plus
    /// the certificate authorities in `extra_ca_pem` (may be empty).
    pub fn new(extra_ca_pem: &str) -> Result<Tls, rustls::Error> {
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in parse_pem_certs(extra_ca_pem).map_err(rustls::Error::General)? {
            roots.add(cert)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

/// Parses PEM certificates; an empty string is no certificate.
pub fn parse_pem_certs(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    if pem.trim().is_empty() {
        return Ok(Vec::new());
    }
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found in the PEM text".into());
    }
    Ok(certs)
}

/// A failed request: its kind and what happened.
pub type Failure = (ErrorKind, String);

/// Most of a response body kept for checks and extraction; the rest is
/// read and dropped.
pub const MAX_KEPT_BODY: usize = 8 << 20;

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

/// A response: status and headers; the body (when kept) is
/// [`UserClient::body`].
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
}

type Sender = SendRequest<Full<Bytes>>;

/// One virtual user's connections and cookies, kept alive across requests
/// like a browser's: one connection to the target, a few to other origins
/// (absolute URLs, redirects), reopened (and the connect time counted) when
/// a server closes them.
pub struct UserClient {
    target: Arc<Target>,
    main: Origin,
    policy: Arc<crate::policy::Policy>,
    tls: Option<Tls>,
    sender: Option<Sender>,
    others: Vec<(Origin, Sender)>,
    /// The user's cookie jar.
    pub cookies: CookieJar,
    body: Vec<u8>,
    cookie_line: String,
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
            sender: None,
            others: Vec::new(),
            cookies: CookieJar::default(),
            body: Vec::new(),
            cookie_line: String::new(),
        }
    }

    /// Forgets the connections, so the next request opens new ones.
    pub fn reset(&mut self) {
        self.sender = None;
        self.others.clear();
    }

    /// The body of the last response, when it was kept.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Sends a plain step (no variables) and reads the whole response.
    pub async fn send(&mut self, step: &Step) -> Result<Reply, Failure> {
        let req = prepare(step, &[], &self.target).map_err(|e| (ErrorKind::Request, e))?;
        self.execute(req, step.max_redirects, step.needs_body())
            .await
    }

    /// Sends a prepared request, following up to `max_redirects` redirects
    /// (303, and 301/302 after a POST, continue as GET without a body), and
    /// reads the whole final response, keeping its body when `keep_body`.
    /// The caller bounds it with the target's timeout.
    pub async fn execute(
        &mut self,
        req: Prepared<'_>,
        max_redirects: u32,
        keep_body: bool,
    ) -> Result<Reply, Failure> {
        let Prepared {
            mut method,
            mut origin,
            mut uri,
            headers,
            rendered,
            mut body,
            mut content_type,
        } = req;
        let mut hop = 0;
        loop {
            let reply = self
                .exchange(
                    &method,
                    origin.as_ref(),
                    &uri,
                    headers,
                    &rendered,
                    body.clone(),
                    content_type.as_ref(),
                    keep_body,
                )
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            };
            if max_redirects == 0 || !(300..400).contains(&reply.status) {
                return Ok(reply);
            }
            let Some(location) = reply.headers.get(LOCATION) else {
                return Ok(reply);
            };
            if hop == max_redirects {
                return Err((
                    ErrorKind::Redirect,
                    format!("more than {max_redirects} redirects"),
                ));
            }
            hop += 1;
            let current = origin.as_ref().unwrap_or(&self.main);
            let (next_origin, next_uri) = resolve(location, current, &uri)
                .map_err(|e| (ErrorKind::Redirect, format!("bad Location: {e}")))?;
            origin = (next_origin != self.main).then_some(next_origin);
            uri = next_uri;
            if reply.status == 303 || (matches!(reply.status, 301 | 302) && method == Method::POST)
            {
                if method != Method::HEAD {
                    method = Method::GET;
                }
                body = Bytes::new();
                content_type = None;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        method: &Method,
        origin: Option<&Origin>,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        rendered: &[(HeaderName, HeaderValue)],
        body: Bytes,
        content_type: Option<&HeaderValue>,
        keep_body: bool,
    ) -> Result<Reply, Failure> {
        let mut sender = self.sender_for(origin).await?;
        let o = origin.unwrap_or(&self.main);
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        h.insert(HOST, o.authority.clone());
        for (name, value) in headers.iter().chain(rendered) {
            h.insert(name.clone(), value.clone());
        }
        if let Some(ct) = content_type
            && !h.contains_key(CONTENT_TYPE)
        {
            h.insert(CONTENT_TYPE, ct.clone());
        }
        if !self.cookies.is_empty() {
            self.cookie_line.clear();
            let now = SystemTime::now();
            if self
                .cookies
                .header_for(&o.host, uri.path(), o.https, now, &mut self.cookie_line)
                && let Ok(v) = HeaderValue::from_str(&self.cookie_line)
            {
                h.insert(COOKIE, v);
            }
        }
        let resp = sender.send_request(req).await.map_err(classify_hyper)?;
        let (parts, mut incoming) = resp.into_parts();
        if parts.headers.contains_key(SET_COOKIE) {
            let now = SystemTime::now();
            for v in parts.headers.get_all(SET_COOKIE) {
                if let Ok(v) = v.to_str() {
                    self.cookies.store(v, &o.host, uri.path(), now);
                }
            }
        }
        if keep_body {
            self.body.clear();
        }
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(classify_hyper)?;
            if keep_body && let Some(data) = frame.data_ref() {
                let room = MAX_KEPT_BODY.saturating_sub(self.body.len());
                self.body.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        match origin {
            None => self.sender = Some(sender),
            Some(o) => {
                if self.others.len() >= MAX_OTHER_ORIGINS {
                    self.others.remove(0);
                }
                self.others.push((o.clone(), sender));
            }
        }
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
        })
    }

    /// A ready connection to `origin` (`None`: the target), opened if needed.
    async fn sender_for(&mut self, origin: Option<&Origin>) -> Result<Sender, Failure> {
        let kept = match origin {
            None => self.sender.take(),
            Some(o) => self
                .others
                .iter()
                .position(|(k, _)| k == o)
                .map(|i| self.others.remove(i).1),
        };
        if let Some(mut s) = kept
            && s.ready().await.is_ok()
        {
            return Ok(s);
        }
        // None kept, or the server closed it: open a new one (timed).
        let o = origin.cloned().unwrap_or_else(|| self.main.clone());
        self.connect(&o).await
    }

    async fn connect(&mut self, o: &Origin) -> Result<Sender, Failure> {
        let addr = match o.host.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, o.port),
            Err(_) => tokio::net::lookup_host((o.host.as_str(), o.port))
                .await
                .map_err(|e| (ErrorKind::Dns, format!("resolving {}: {e}", o.host)))?
                .next()
                .ok_or_else(|| (ErrorKind::Dns, format!("{} has no address", o.host)))?,
        };
        // Checked on the address actually dialed, so DNS cannot slip past it.
        if !self.policy.address_allowed(&o.host, addr.ip()) {
            return Err((
                ErrorKind::Blocked,
                format!(
                    "{} resolved to {}, outside this agent's --allow-target list",
                    o.host,
                    addr.ip()
                ),
            ));
        }
        let stream = TcpStream::connect(addr).await.map_err(|e| {
            (
                ErrorKind::Connect,
                format!("connecting to {}:{}: {e}", o.host, o.port),
            )
        })?;
        let _ = stream.set_nodelay(true);
        if !o.https {
            return handshake(stream).await;
        }
        if self.tls.is_none() {
            self.tls =
                Some(Tls::new(&self.target.ca_pem).map_err(|e| (ErrorKind::Tls, e.to_string()))?);
        }
        let tls = self.tls.as_ref().expect("set above");
        let name = rustls::pki_types::ServerName::try_from(o.host.clone())
            .map_err(|e| (ErrorKind::Tls, format!("server name {}: {e}", o.host)))?;
        let stream = tls.connector.connect(name, stream).await.map_err(|e| {
            (
                ErrorKind::Tls,
                format!("TLS handshake with {}: {e}", o.host),
            )
        })?;
        handshake(stream).await
    }
}

/// Where a `Location` header points, from the request that got it.
fn resolve(location: &HeaderValue, origin: &Origin, uri: &Uri) -> Result<(Origin, Uri), String> {
    let loc = location
        .to_str()
        .map_err(|_| "not printable text".to_string())?
        .trim();
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

async fn handshake<S>(stream: S) -> Result<Sender, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(classify_hyper)?;
    // The connection task ends when the user drops its sender or the peer closes.
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn classify_hyper(e: hyper::Error) -> Failure {
    use std::error::Error as _;
    let kind = if e.is_parse() || e.is_parse_status() || e.is_user() {
        ErrorKind::Protocol
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        ErrorKind::Reset
    } else {
        match e
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(|io| io.kind())
        {
            Some(
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof,
            ) => ErrorKind::Reset,
            _ => ErrorKind::Io,
        }
    };
    (kind, e.to_string())
}
