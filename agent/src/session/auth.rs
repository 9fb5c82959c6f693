//! How this agent proves who it is to its controller: the shared fleet
//! token, sent as `authorization: Bearer <token>` on every stream it opens,
//! or its certificate (mTLS), checked by the controller against the fleet's
//! CA and the name the agent claims.

use tonic::metadata::MetadataValue;

/// mTLS material of an agent.
#[derive(Debug, Clone)]
pub struct AgentTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl AgentTls {
    /// Checks that each part holds what it should, naming the part that
    /// does not: `ca` and `cert` certificates, `key` a private key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        for (part, pem) in [("ca", &self.ca_pem), ("cert", &self.cert_pem)] {
            match crate::tls::parse_pem_certs(pem) {
                Ok(certs) if !certs.is_empty() => {}
                Ok(_) => return Err((part, "no certificate in it".into())),
                Err(e) => return Err((part, e)),
            }
        }
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map(drop)
            .map_err(|e| ("key", format!("no private key in it ({e})")))
    }

    /// The controller's endpoint with this agent's certificate, verifying
    /// the controller against the fleet's CA; the address must be https.
    pub(super) fn endpoint(
        &self,
        endpoint: tonic::transport::Endpoint,
        controller: &str,
    ) -> Result<tonic::transport::Endpoint, String> {
        if !controller.starts_with("https://") {
            return Err(format!(
                "with certificates the controller address must be https://, got {controller}"
            ));
        }
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ));
        endpoint.tls_config(config).map_err(|e| e.to_string())
    }
}

/// The token's header on a request; `None` when the token is not valid
/// header text.
pub(super) fn bearer<T>(request: &mut tonic::Request<T>, token: &str) -> Option<()> {
    let value: MetadataValue<_> = format!("Bearer {token}").parse().ok()?;
    request.metadata_mut().insert("authorization", value);
    Some(())
}
