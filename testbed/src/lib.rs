//! A real HTTP/1.1 server to aim loadfleet at in tests and demos.
//!
//! It binds a given address (port 0 for tests), answers every request after
//! a per-path latency, and counts what it served: in total, by path, and the
//! arrival time of the first request on every connection (a virtual user
//! keeps one keep-alive connection, so this is when each user arrived).
//!
//! Special paths: `/status/<code>` answers with that status; `/close` answers
//! and closes the connection; `/echo` answers with a JSON account of the
//! request (method, path, query, cookies, content type, body); `/redirect/N`
//! redirects N times before landing on `/echo`; `/upload` keeps the first
//! 16 request bodies it gets, with their content type, for a test to read; `/gzip/...` answers like any
//! page but always gzip-compressed (`Content-Encoding: gzip`), as a CDN
//! would. With [`Config::moodle`], the
//! Moodle paths (`/`, `/login/`, `/course/`, `/mod/`, `/user/`) are a
//! Moodle-like site with sessions (see [`moodle`]).
#![forbid(unsafe_code)]

pub mod moodle;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the test target behaves.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Latency added before answering, by path prefix; the longest matching prefix wins.
    pub latencies: Vec<(String, Duration)>,
    /// Latency for paths no prefix matches.
    pub default_latency: Duration,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
    /// A stall: (from, length) after the server's start. Requests that arrive
    /// during it are held until it ends, as a server freezing for a garbage
    /// collection or a lock would.
    pub stall: Option<(Duration, Duration)>,
    /// At most this many requests are served at once; the others queue
    /// (first come, first served), so latency rises past this concurrency.
    pub concurrency: Option<usize>,
    /// Serve a Moodle-like site on the Moodle paths.
    pub moodle: Option<moodle::MoodleConfig>,
    /// Say `Keep-Alive: timeout=N` on every response, and count the
    /// requests that arrive on a connection idle for longer than that
    /// ([`Stats::late_reuses`]): a server such as nginx would have closed it.
    pub keep_alive_timeout: Option<Duration>,
    /// Read the second request of every connection and close the connection
    /// without answering, as a server does whose idle timeout fires just as
    /// a request arrives ([`Stats::abandoned`]).
    pub abandon_reused: bool,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Errors setting up the server.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad TLS identity: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] moodle::StoreError),
}

/// A self-signed certificate for `names` (host names or IP addresses); the
/// certificate is its own CA, so clients trust it by adding `cert_pem`.
pub fn self_signed(names: &[&str]) -> Result<TlsIdentity, TestbedError> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TestbedError::Tls(e.to_string()))?;
    Ok(TlsIdentity {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    })
}

fn acceptor(id: &TlsIdentity) -> Result<tokio_rustls::TlsAcceptor, TestbedError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: &dyn std::fmt::Display| TestbedError::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Config {
    fn latency_for(&self, path: &str) -> Duration {
        self.latencies
            .iter()
            .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.default_latency, |(_, d)| *d)
    }
}

/// Parses `PREFIX=DURATION` (for example `/slow=200ms`).
pub fn parse_latency(s: &str) -> Result<(String, Duration), String> {
    let (prefix, d) = s
        .split_once('=')
        .ok_or_else(|| format!("expected PREFIX=DURATION such as /slow=200ms, got `{s}`"))?;
    if !prefix.starts_with('/') {
        return Err(format!("path prefix must start with `/`, got `{prefix}`"));
    }
    Ok((prefix.to_string(), parse_millis(d)?))
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a duration such as 200ms or 1s, got `{s}`"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "expected a duration such as 200ms or 1s, got `{s}`"
        )),
    }
}

/// What the server has served so far.
#[derive(Debug, Default)]
pub struct Stats {
    served: AtomicU64,
    abandoned: AtomicU64,
    late_reuses: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_resumed: AtomicU64,
    by_path: Mutex<HashMap<String, u64>>,
    first_requests: Mutex<Vec<Duration>>,
    started: Mutex<Option<Instant>>,
    uploads: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Stats {
    /// Responses served, of any status.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// Requests read and left unanswered, their connection closed
    /// ([`Config::abandon_reused`]).
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed, and how many of them resumed a session.
    pub fn tls_handshakes(&self) -> (u64, u64) {
        (
            self.tls_handshakes.load(Ordering::SeqCst),
            self.tls_resumed.load(Ordering::SeqCst),
        )
    }

    /// Requests that came on a connection idle for longer than the
    /// `Keep-Alive: timeout` this server announced.
    pub fn late_reuses(&self) -> u64 {
        self.late_reuses.load(Ordering::SeqCst)
    }

    /// Responses served for one path (without the query).
    pub fn served_path(&self, path: &str) -> u64 {
        let map = self.by_path.lock().unwrap_or_else(|e| e.into_inner());
        map.get(path).copied().unwrap_or(0)
    }

    /// Responses served per path (without the query), sorted by path.
    pub fn paths(&self) -> std::collections::BTreeMap<String, u64> {
        let map = self.by_path.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The first 16 bodies sent to `/upload`, each with its content type.
    pub fn uploads(&self) -> Vec<(String, Vec<u8>)> {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Arrival times of the first request on each connection, from the server's
    /// start, sorted.
    pub fn first_request_times(&self) -> Vec<Duration> {
        let mut v = self
            .first_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort();
        v
    }
}

/// A running test target. Dropping it stops the server.
pub struct Testbed {
    scheme: &'static str,
    addr: SocketAddr,
    stats: Arc<Stats>,
    site: Option<Arc<moodle::Site>>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Testbed {
    /// Binds `addr` (use port 0 for any free port) and serves until dropped.
    pub async fn start(addr: SocketAddr, config: Config) -> Result<Testbed, TestbedError> {
        let tls = config.tls.as_ref().map(acceptor).transpose()?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        *stats.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let (shutdown, rx) = watch::channel(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let site = match config.moodle.clone() {
            Some(m) => Some(Arc::new(moodle::Site::open(m).await?)),
            None => None,
        };
        let task = tokio::spawn(serve(
            listener,
            tls,
            Arc::new(config),
            stats.clone(),
            site.clone(),
            rx,
        ));
        Ok(Testbed {
            scheme,
            addr,
            stats,
            site,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (or `https://ADDR`) of this server.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// What was served so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What the Moodle-like site saw (when [`Config::moodle`] is set).
    pub fn moodle(&self) -> Option<&moodle::MoodleStats> {
        self.site.as_ref().map(|s| &s.stats)
    }

    /// A shared handle on the counters, usable after the server is moved.
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: Arc<Config>,
    stats: Arc<Stats>,
    site: Option<Arc<moodle::Site>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = config
        .concurrency
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (config, stats, shutdown, tls, slots, site) = (
            config.clone(),
            stats.clone(),
            shutdown.clone(),
            tls.clone(),
            slots.clone(),
            site.clone(),
        );
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, config, stats, slots, site, shutdown).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        stats.tls_handshakes.fetch_add(1, Ordering::SeqCst);
                        if s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                            stats.tls_resumed.fetch_add(1, Ordering::SeqCst);
                        }
                        serve_connection(s, config, stats, slots, site, shutdown).await
                    }
                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                },
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    config: Arc<Config>,
    stats: Arc<Stats>,
    slots: Option<Arc<tokio::sync::Semaphore>>,
    site: Option<Arc<moodle::Site>>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Requests so far on this connection, and when its last response went out.
    let seen = Arc::new(AtomicU64::new(0));
    let last_response = Arc::new(Mutex::new(None::<Instant>));
    let service = service_fn(move |req| {
        let config = config.clone();
        let stats = stats.clone();
        let first = first.clone();
        let slots = slots.clone();
        let site = site.clone();
        let seen = seen.clone();
        let last_response = last_response.clone();
        async move {
            let nth = seen.fetch_add(1, Ordering::SeqCst) + 1;
            if config.abandon_reused && nth == 2 {
                stats.abandoned.fetch_add(1, Ordering::SeqCst);
                // An error from the service: hyper closes the connection
                // without writing a response.
                return Err(std::io::Error::other("abandoned a reused connection"));
            }
            if let Some(timeout) = config.keep_alive_timeout {
                let idle = last_response
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .map(|t| t.elapsed());
                if idle.is_some_and(|idle| idle > timeout) {
                    stats.late_reuses.fetch_add(1, Ordering::SeqCst);
                }
            }
            // Queue for a slot when the server is at its concurrency limit.
            let _slot = match &slots {
                Some(s) => s.clone().acquire_owned().await.ok(),
                None => None,
            };
            let mut response = handle(req, &config, &stats, site.as_deref(), &first).await;
            if let Some(timeout) = config.keep_alive_timeout {
                if let Ok(v) = format!("timeout={}", timeout.as_secs()).parse() {
                    response.headers_mut().insert("keep-alive", v);
                }
                *last_response.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            Ok::<_, std::io::Error>(response)
        }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {}
    }
}

/// Most of a request body the testbed reads.
const MAX_REQUEST_BODY: usize = 1 << 20;

async fn handle(
    req: Request<Incoming>,
    config: &Config,
    stats: &Stats,
    site: Option<&moodle::Site>,
    first: &std::sync::atomic::AtomicBool,
) -> Response<Full<Bytes>> {
    if first.swap(false, Ordering::SeqCst) {
        let started = stats.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t0) = *started {
            stats
                .first_requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(t0.elapsed());
        }
    }
    let t0 = *stats.started.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some((from, length)), Some(t0)) = (config.stall, t0) {
        let now = t0.elapsed();
        if now >= from && now < from + length {
            tokio::time::sleep(from + length - now).await;
        }
    }
    let path = req.uri().path().to_string();
    let latency = config.latency_for(&path);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = if let Some(site) = site.filter(|_| moodle::is_moodle_path(&path)) {
        let (parts, body) = req.into_parts();
        let query = decode_pairs(parts.uri.query().unwrap_or("").as_bytes());
        let form = decode_pairs(&read_body(body).await);
        site.handle(
            &parts.method,
            &path,
            &query,
            &form,
            moodle::cookie_of(&parts.headers),
        )
        .await
    } else if path == "/echo" {
        echo(req).await
    } else if path == "/upload" {
        let (parts, body) = req.into_parts();
        let body = read_body(body).await;
        let answer = format!("{} bytes", body.len());
        let kind = parts
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut kept = stats.uploads.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < 16 {
            kept.push((kind, body.to_vec()));
        }
        Response::new(Full::new(Bytes::from(answer)))
    } else if let Some(n) = path.strip_prefix("/redirect/") {
        let n: u32 = n.parse().unwrap_or(0);
        let to = if n <= 1 {
            "/echo".to_string()
        } else {
            // Relative to /redirect/, as a browser resolves it.
            (n - 1).to_string()
        };
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::FOUND;
        if let Ok(v) = hyper::header::HeaderValue::from_str(&to) {
            r.headers_mut().insert(hyper::header::LOCATION, v);
        }
        r
    } else {
        plain(&req, &path)
    };
    stats.served.fetch_add(1, Ordering::SeqCst);
    *stats
        .by_path
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path)
        .or_default() += 1;
    resp
}

async fn read_body(body: Incoming) -> Vec<u8> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, MAX_REQUEST_BODY);
    match limited.collect().await {
        Ok(c) => c.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    }
}

fn decode_pairs(bytes: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// A JSON account of the request, for tests of what a client sent.
async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let query: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let body = read_body(body).await;
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": query,
        "cookie": header("cookie"),
        "content_type": header("content-type"),
        "x_token": header("x-token"),
        "accept_encoding": header("accept-encoding"),
        "user_agent": header("user-agent"),
        "referer": header("referer"),
        "body": String::from_utf8_lossy(&body),
        "token": "tok-12345",
        "items": [{"id": 7}, {"id": 8}],
    });
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        "x-request-id",
        hyper::header::HeaderValue::from_static("req-42"),
    );
    if parts
        .uri
        .query()
        .is_some_and(|q| q.contains("set_cookie=1"))
    {
        r.headers_mut().insert(
            hyper::header::SET_COOKIE,
            hyper::header::HeaderValue::from_static("visit=1; Path=/"),
        );
    }
    r
}

/// `data` in content coding `coding` (gzip, br or zstd).
fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        "br" => {
            let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
            let _ = w.write_all(data);
            w.into_inner()
        }
        "zstd" => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
        _ => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = gz.write_all(data);
            gz.finish().unwrap_or_default()
        }
    }
}

fn plain(req: &Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/") {
        status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
    }
    let mut body = format!(
        "<!doctype html><html><body><h1>loadfleet testbed</h1><p>{} {}</p>",
        req.method(),
        path
    );
    // `/pad/N` anywhere in the path: N bytes of filler before the page's
    // last paragraph, "end of page" (at most 64 MiB).
    if let Some(n) = path
        .split("/pad/")
        .nth(1)
        .and_then(|rest| rest.split('/').next()?.parse::<usize>().ok())
    {
        body.push_str(&"x".repeat(n.min(64 << 20)));
    }
    body.push_str("<p>end of page</p></body></html>\n");
    // `/gzip/...`, `/br/...`, `/zstd/...`: the page in that content coding,
    // whatever the request accepts.
    let coding = ["gzip", "br", "zstd"].into_iter().find(|c| {
        path.strip_prefix('/')
            .and_then(|p| p.strip_prefix(c))
            .is_some_and(|r| r.starts_with('/'))
    });
    let body = match coding {
        Some(c) => Bytes::from(compress(c, body.as_bytes())),
        None => Bytes::from(body),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Some(c) = coding {
        resp.headers_mut().insert(
            hyper::header::CONTENT_ENCODING,
            hyper::header::HeaderValue::from_static(c),
        );
    }
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if path == "/close" {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let c = Config {
            latencies: vec![
                ("/a".into(), Duration::from_millis(5)),
                ("/a/b".into(), Duration::from_millis(7)),
            ],
            default_latency: Duration::from_millis(1),
            ..Config::default()
        };
        assert_eq!(c.latency_for("/a/b/c"), Duration::from_millis(7));
        assert_eq!(c.latency_for("/a/x"), Duration::from_millis(5));
        assert_eq!(c.latency_for("/z"), Duration::from_millis(1));
    }

    #[test]
    fn latency_flag_grammar() {
        assert_eq!(
            parse_latency("/slow=200ms").unwrap(),
            ("/slow".to_string(), Duration::from_millis(200))
        );
        assert_eq!(parse_latency("/s=2s").unwrap().1, Duration::from_secs(2));
        assert!(parse_latency("slow=200ms").is_err());
        assert!(parse_latency("/slow=200").is_err());
        assert!(parse_latency("/slow").is_err());
    }
}
