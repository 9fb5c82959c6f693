//! TLS toward the target: one client configuration per run, verifying
//! servers against the Mozilla root store plus the plan's own CAs. A server
//! certificate that is itself one of the plan's CAs (a self-signed
//! certificate made with `openssl req -x509`, which marks it CA:TRUE) is
//! accepted for the names it holds, as curl does. `tls_verify = false`
//! accepts any certificate: the controller warns about it everywhere.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

/// What the client's TLS is built from: plain settings, read from the
/// assignment's target by its owner.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// Extra certificate authorities (PEM); may be empty.
    pub ca_pem: &'a str,
    /// Verify servers' certificates; false accepts any.
    pub verify: bool,
    /// Resume TLS sessions, as browsers do.
    pub resumption: bool,
    /// The protocols offered by ALPN, most wanted first.
    pub alpn: &'a [&'a [u8]],
}

/// TLS settings shared by every connection of a run (built once).
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
}

impl Tls {
    /// Verifies servers against the Mozilla root store (webpki-roots) plus
    /// the settings' certificate authorities; with `verify` false, accepts
    /// any server certificate. Sessions are resumed (one cache for the run,
    /// as a browser has) unless `resumption` is false.
    pub fn new(settings: Settings<'_>) -> Result<Tls, rustls::Error> {
        let (extra_ca_pem, verify) = (settings.ca_pem, settings.verify);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let pinned = parse_pem_certs(extra_ca_pem).map_err(rustls::Error::General)?;
        for cert in &pinned {
            roots.add(cert.clone())?;
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = Arc::new(Verifier {
            webpki,
            pinned,
            verify,
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = settings.alpn.iter().map(|p| p.to_vec()).collect();
        if !settings.resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
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

/// The Mozilla roots and the plan's CAs, with the two exceptions above.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    /// The plan's own certificates (`ca_file`).
    pinned: Vec<CertificateDer<'static>>,
    /// `tls_verify`: false accepts any certificate.
    verify: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.verify {
            return Ok(ServerCertVerified::assertion());
        }
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            // The server presents one of the plan's own certificates: it is
            // trusted as it is, for the names it holds.
            Err(e)
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)
                    .map_err(|_| e.clone())?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
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
