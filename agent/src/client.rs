//! One virtual user's HTTP connection: kept alive across requests like a
//! browser's, reopened (and the connect time counted) when the server closes it.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::assignment::{Step, Target};
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

/// The connection of one virtual user.
pub struct UserClient {
    target: Arc<Target>,
    policy: Arc<crate::policy::Policy>,
    tls: Option<Tls>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl UserClient {
    pub fn new(
        target: Arc<Target>,
        tls: Option<Tls>,
        policy: Arc<crate::policy::Policy>,
    ) -> UserClient {
        UserClient {
            target,
            policy,
            tls,
            sender: None,
        }
    }

    /// Forgets the connection, so the next request opens a new one.
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Sends one step's request and reads the whole body. Returns the status.
    /// The caller bounds it with the target's timeout.
    pub async fn send(&mut self, step: &Step) -> Result<u16, Failure> {
        let result = self.send_inner(step).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn send_inner(&mut self, step: &Step) -> Result<u16, Failure> {
        let mut sender = match self.sender.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                // The server closed the kept-alive connection: open a new one (timed).
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = step.method.clone();
        *req.uri_mut() = step.uri.clone();
        let headers = req.headers_mut();
        headers.insert(HOST, self.target.authority.clone());
        for (name, value) in &step.headers {
            headers.insert(name.clone(), value.clone());
        }
        let resp = sender.send_request(req).await.map_err(classify_hyper)?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(classify_hyper)?;
        }
        self.sender = Some(sender);
        Ok(status)
    }

    async fn connect(&mut self) -> Result<SendRequest<Empty<Bytes>>, Failure> {
        let t = &self.target;
        let addr = match t.host.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, t.port),
            Err(_) => tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .map_err(|e| (ErrorKind::Dns, format!("resolving {}: {e}", t.host)))?
                .next()
                .ok_or_else(|| (ErrorKind::Dns, format!("{} has no address", t.host)))?,
        };
        // Checked on the address actually dialed, so DNS cannot slip past it.
        if !self.policy.address_allowed(&t.host, addr.ip()) {
            return Err((
                ErrorKind::Blocked,
                format!(
                    "{} resolved to {}, outside this agent's --allow-target list",
                    t.host,
                    addr.ip()
                ),
            ));
        }
        let stream = TcpStream::connect(addr).await.map_err(|e| {
            (
                ErrorKind::Connect,
                format!("connecting to {}:{}: {e}", t.host, t.port),
            )
        })?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => handshake(stream).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| (ErrorKind::Tls, format!("server name {}: {e}", t.host)))?;
                let stream = tls.connector.connect(name, stream).await.map_err(|e| {
                    (
                        ErrorKind::Tls,
                        format!("TLS handshake with {}: {e}", t.host),
                    )
                })?;
                handshake(stream).await
            }
        }
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Empty<Bytes>>, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
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
