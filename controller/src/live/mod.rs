//! Watching a run while it goes: the controller publishes the merged
//! figures every interval to `/metrics` (Prometheus text format, on
//! `--metrics-listen`) and pushes them to a Prometheus remote-write
//! receiver (`--prometheus-remote-write`). One [`Live`] serves every run
//! of a series or capacity search, so a scrape target stays put.

pub mod metrics;
pub mod remote_write;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

use metrics::Family;

/// What the controller publishes while runs go on.
#[derive(Debug)]
pub struct Live {
    /// The newest `/metrics` text.
    text: Mutex<String>,
    remote: Option<remote_write::Target>,
    /// Scrapers must present it (`Authorization: Bearer`), when set.
    token: Option<String>,
    /// Pushes that failed, and the first reason (said once, counted).
    push_errors: Mutex<(u64, Option<String>)>,
}

impl Live {
    pub fn new(token: Option<String>, remote: Option<remote_write::Target>) -> Arc<Live> {
        Arc::new(Live {
            text: Mutex::new("# loadfleet: no run has started yet\n".into()),
            remote,
            token,
            push_errors: Mutex::new((0, None)),
        })
    }

    /// Serves `/metrics` on `addr` until the process ends; returns the bound
    /// address. Beyond loopback, only with a token (scrapers send it as a
    /// bearer token).
    pub async fn serve_metrics(self: &Arc<Self>, addr: SocketAddr) -> Result<SocketAddr, String> {
        if !addr.ip().is_loopback() && self.token.is_none() {
            return Err(format!(
                "refusing to serve /metrics on {addr} without a token: set LOADFLEET_TOKEN (scrapers send it as a bearer token), or listen on 127.0.0.1"
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

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, text: String| {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            *r.status_mut() = status;
            r
        };
        if let Some(token) = &self.token {
            let given = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(token.as_str()) {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required\n".into(),
                );
            }
        }
        match req.uri().path() {
            "/metrics" => {
                let text = self.text.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut r = reply(StatusCode::OK, text);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            _ => reply(StatusCode::NOT_FOUND, "see /metrics\n".into()),
        }
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
