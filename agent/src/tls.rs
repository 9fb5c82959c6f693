//! TLS toward the target: one client configuration per run, verifying
//! servers against the Mozilla root store plus the plan's own CAs.

use std::sync::Arc;

use tokio::net::TcpStream;

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

    /// The TLS handshake over `stream` with the server named `name`.
    pub async fn connect(
        &self,
        name: rustls::pki_types::ServerName<'static>,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(name, stream).await
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
