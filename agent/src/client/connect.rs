//! Keeping connections: opening the user's connection to an origin (DNS,
//! the agent's policy on the address dialed, TCP, TLS), and deciding
//! between HTTP/2 and HTTP/1.1 on it.

use std::time::Instant;

use tokio::net::TcpStream;

use super::h1::{Conn, Stream};
use super::{MAX_OTHER_ORIGINS, Phases, UserClient};
use crate::assignment::{Origin, Target};
use crate::failure::{ErrorKind, Failure};
use crate::tls::Tls;

impl UserClient {
    /// Whether the target may speak HTTP/2 on the next connection.
    pub(super) fn may_h2(&self) -> bool {
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
    pub(super) async fn open_target(&mut self) -> Result<(), Failure> {
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
            self.h2 = Some(super::h2link::Link::handshake(stream).await?);
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
    pub(super) async fn open_other(&mut self, o: &Origin) -> Result<(), Failure> {
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
            let link = super::h2link::Link::handshake(stream).await?;
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
}

/// Opens a connection to `o` (TLS for https), checking the address dialed
/// against the agent's policy.
pub(super) async fn connect(
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

fn add(slot: &mut Option<u64>, since: Instant) {
    *slot = Some(slot.unwrap_or(0) + since.elapsed().as_micros() as u64);
}
