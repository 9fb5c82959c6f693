//! Watching a run while it goes: the controller publishes the merged
//! figures every interval to a live dashboard (`--dashboard`), to
//! `/metrics` (Prometheus text format, `--metrics-listen`) and to a
//! Prometheus remote-write receiver (`--prometheus-remote-write`). One
//! [`Live`] serves every run of a series or capacity search, so the page
//! and the scrape target stay put.

pub mod dashboard;
pub mod metrics;
pub mod remote_write;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

pub use dashboard::Snapshot;
use metrics::Family;

type Body = BoxBody<Bytes, Infallible>;

/// What the controller publishes while runs go on.
#[derive(Debug)]
pub struct Live {
    /// The newest `/metrics` text.
    text: Mutex<String>,
    /// The newest dashboard snapshot, and a counter its followers watch.
    snapshot: Mutex<Snapshot>,
    version: tokio::sync::watch::Sender<u64>,
    /// The final report of the newest run, once written.
    report: Mutex<Option<std::path::PathBuf>>,
    remote: Option<remote_write::Target>,
    /// Readers must present it (`Authorization: Bearer`, or `?token=` for
    /// the page), when set.
    token: Option<String>,
    /// The dashboard's Stop button: the same graceful stop as Ctrl-C.
    stop: CancellationToken,
    /// Pushes that failed, and the first reason (said once, counted).
    push_errors: Mutex<(u64, Option<String>)>,
}

impl Live {
    pub fn new(
        token: Option<String>,
        remote: Option<remote_write::Target>,
        stop: CancellationToken,
    ) -> Arc<Live> {
        Arc::new(Live {
            text: Mutex::new("# loadfleet: no run has started yet\n".into()),
            snapshot: Mutex::new(Snapshot {
                state: "waiting".into(),
                title: "waiting for a run".into(),
                ..Snapshot::default()
            }),
            version: tokio::sync::watch::channel(0).0,
            report: Mutex::new(None),
            remote,
            token,
            stop,
            push_errors: Mutex::new((0, None)),
        })
    }

    /// Serves the dashboard, `/events`, `/stop`, `/report` and `/metrics`
    /// on `addr` until the process ends; returns the bound address. Beyond
    /// loopback, only with a token.
    pub async fn serve(self: &Arc<Self>, addr: SocketAddr) -> Result<SocketAddr, String> {
        if !addr.ip().is_loopback() && self.token.is_none() {
            return Err(format!(
                "refusing to serve /metrics or the dashboard on {addr} without a token: set LOADFLEET_TOKEN (scrapers send it as a bearer token, browsers as ?token=), or listen on 127.0.0.1"
            ));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for /metrics: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let live = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let live = live.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let live = live.clone();
                        async move { Ok::<_, Infallible>(live.answer(&req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(bound)
    }

    fn answer(self: &Arc<Self>, req: &Request<Incoming>) -> Response<Body> {
        let reply = |status: StatusCode, kind: &'static str, text: String| {
            let mut r = Response::new(Full::new(Bytes::from(text)).boxed());
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(kind),
            );
            r
        };
        if let Some(token) = &self.token {
            let bearer = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let query = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
            });
            if bearer != Some(token.as_str()) && query.as_deref() != Some(token.as_str()) {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    "a token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)\n".into(),
                );
            }
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let text = self.text.lock().unwrap_or_else(|e| e.into_inner()).clone();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                )
            }
            (&Method::GET, "/") => {
                let s = self
                    .snapshot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    dashboard::page(&s, self.token.as_deref()),
                )
            }
            (&Method::GET, "/events") => self.events(),
            (&Method::GET, "/report") => {
                let path = self
                    .report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match path.map(std::fs::read_to_string) {
                    Some(Ok(html)) => reply(StatusCode::OK, "text/html; charset=utf-8", html),
                    _ => reply(
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        "no report yet\n".into(),
                    ),
                }
            }
            (&Method::POST, "/stop") => {
                // Only this page's own script: a custom header (which a
                // cross-site form cannot send, and a cross-site script only
                // after a preflight this server never answers), and no
                // foreign Origin.
                let ours = req
                    .headers()
                    .get("x-loadfleet")
                    .is_some_and(|v| v == "stop");
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let origin_ok = req
                    .headers()
                    .get(http::header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .is_none_or(|o| o == format!("http://{host}"));
                if !ours || !origin_ok {
                    return reply(
                        StatusCode::FORBIDDEN,
                        "text/plain",
                        "only the dashboard's Stop button stops a run\n".into(),
                    );
                }
                eprintln!("loadfleet: stop asked from the dashboard");
                self.stop.cancel();
                reply(StatusCode::ACCEPTED, "text/plain", "stopping\n".into())
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "the dashboard is at /, the metrics at /metrics\n".into(),
            ),
        }
    }

    /// Server-sent events: the snapshot now, then after every change.
    fn events(self: &Arc<Self>) -> Response<Body> {
        use tokio_stream::StreamExt as _;
        let live = self.clone();
        let stream =
            tokio_stream::wrappers::WatchStream::new(self.version.subscribe()).map(move |_| {
                let s = live
                    .snapshot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let json = serde_json::to_string(&s).unwrap_or_default();
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: {json}\n\n"))))
            });
        let mut r = Response::new(StreamBody::new(stream).boxed());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        r
    }

    /// The dashboard's newest snapshot.
    pub fn show(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        self.version.send_modify(|v| *v += 1);
    }

    /// The run has ended (`status`), and its report is at `report`.
    pub fn ended(&self, status: &str, report: Option<std::path::PathBuf>) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = report.clone();
        let mut s = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.state = "ended".into();
        s.status = Some(status.to_string());
        s.report_file = report.as_ref().map(|p| p.display().to_string());
        s.report = report.map(|_| "/report".to_string());
        for a in &mut s.agents {
            a.stale_s = None;
        }
        self.show(s);
    }

    /// The newest figures: kept for `/metrics`, and pushed to the
    /// remote-write receiver (in the background; a slow receiver never
    /// holds the run up).
    pub fn publish(self: &Arc<Self>, families: &[Family]) {
        *self.text.lock().unwrap_or_else(|e| e.into_inner()) = metrics::text(families);
        if self.remote.is_some() {
            let body = remote_write::body(families, now_ms());
            let live = self.clone();
            tokio::spawn(async move { live.push(body).await });
        }
    }

    /// The run's final figures, pushed before the run's outcome is told.
    pub async fn publish_final(self: &Arc<Self>, families: &[Family]) {
        *self.text.lock().unwrap_or_else(|e| e.into_inner()) = metrics::text(families);
        if self.remote.is_some() {
            self.push(remote_write::body(families, now_ms())).await;
        }
    }

    async fn push(&self, body: Vec<u8>) {
        let Some(target) = &self.remote else { return };
        if let Err(e) = target.push(body).await {
            let mut errors = self.push_errors.lock().unwrap_or_else(|e| e.into_inner());
            if errors.1.is_none() {
                eprintln!(
                    "warning: Prometheus remote write failed: {e} (the run goes on; later failures are counted)"
                );
                errors.1 = Some(e);
            }
            errors.0 += 1;
        }
    }

    /// Pushes that failed so far, and the first reason.
    pub fn push_failures(&self) -> (u64, Option<String>) {
        self.push_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
