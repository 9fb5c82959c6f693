//! How agents prove who they are to this controller, in one place: the
//! shared token (compared in constant time), mTLS (the server's TLS set-up,
//! the certificate that must name the agent it claims to be, revoked
//! certificates), the refusal to listen beyond loopback with neither, and
//! the typed [`Identity`] an attached agent gets.

use std::fmt;
use std::net::SocketAddr;

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::certs::ControllerTls;
use crate::outcome::FleetError;

/// How agents authenticate to this controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Client certificates from the fleet's CA.
    Mtls,
    /// A shared bearer token.
    Token,
    /// Neither: allowed on loopback only.
    None,
}

impl Mode {
    /// mTLS wins when both are set (the token is then checked too).
    pub fn of(token: bool, mtls: bool) -> Mode {
        match (mtls, token) {
            (true, _) => Mode::Mtls,
            (false, true) => Mode::Token,
            (false, false) => Mode::None,
        }
    }

    /// `mtls`, `token` or `none`, as the audit log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Mtls => "mtls",
            Mode::Token => "token",
            Mode::None => "none",
        }
    }
}

/// Who an attached agent proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Its certificate names it: `NAME.agent.loadfleet`.
    Mtls { name: String },
    /// It presented the fleet's token.
    Token,
    /// Nothing was asked of it (a loopback controller).
    None,
}

impl fmt::Display for Identity {
    /// `mtls:NAME.agent.loadfleet`, `token` or `none`: the text the
    /// summary, the audit log and `loadfleet agents` show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Mtls { name } => write!(f, "mtls:{name}.agent.loadfleet"),
            Identity::Token => f.write_str("token"),
            Identity::None => f.write_str("none"),
        }
    }
}

/// Refuses to listen beyond loopback without a token or mTLS: anyone who
/// could reach the port could aim the fleet.
pub fn check_listen(addr: SocketAddr, token: bool, mtls: bool) -> Result<(), FleetError> {
    if !addr.ip().is_loopback() && Mode::of(token, mtls) == Mode::None {
        return Err(FleetError::Insecure { addr });
    }
    Ok(())
}

/// The server's TLS: its certificate, and client certificates required
/// from the fleet's CA.
pub fn server_tls(tls: &ControllerTls) -> tonic::transport::ServerTlsConfig {
    tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &tls.cert_pem,
            &tls.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(&tls.ca_pem))
}

/// What an attaching agent must show, and the checks of what it showed.
#[derive(Debug, Clone)]
pub struct Gate {
    token: Option<String>,
    /// mTLS: an agent's certificate must name the agent it claims to be.
    mtls: bool,
    /// Revoked agent certificates (mTLS): SHA-256 of the DER, agent name.
    revoked: Vec<(String, String)>,
}

/// The certificates a TLS peer presented, as tonic hands them over.
pub type PeerCerts = Option<std::sync::Arc<Vec<tonic::transport::CertificateDer<'static>>>>;

impl Gate {
    pub fn new(token: Option<String>, tls: Option<&ControllerTls>) -> Gate {
        Gate {
            token,
            mtls: tls.is_some(),
            revoked: tls.map(|t| t.revoked.clone()).unwrap_or_default(),
        }
    }

    /// The bearer token, when one is required: `authorization: Bearer
    /// <token>`, compared in constant time.
    pub fn check_token(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong fleet token"))
        }
    }

    /// With mTLS, the agent's certificate must name `name` and not be
    /// revoked. Returns who the agent is.
    pub fn identify(&self, certs: &PeerCerts, name: &str) -> Result<Identity, Status> {
        let first = certs.as_ref().and_then(|c| c.first());
        if self.mtls && !first.is_some_and(|der| crate::certs::cert_names_agent(der, name)) {
            return Err(Status::permission_denied(format!(
                "agent name `{name}` does not match its certificate"
            )));
        }
        if let Some(der) = first {
            let fp = crate::certs::fingerprint(der.as_ref());
            if let Some((_, name)) = self.revoked.iter().find(|(f, _)| *f == fp) {
                return Err(Status::permission_denied(format!(
                    "the certificate of agent {name} was revoked (sha256:{fp}): \
                     `loadfleet certs renew {name}` issues a new one"
                )));
            }
        }
        Ok(match Mode::of(self.token.is_some(), self.mtls) {
            Mode::Mtls => Identity::Mtls {
                name: name.to_string(),
            },
            Mode::Token => Identity::Token,
            Mode::None => Identity::None,
        })
    }
}

/// Compares secrets without an early exit, so timing does not reveal how
/// much of a guess was right (only whether the lengths match).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn identities_read_as_the_outputs_write_them() {
        let mtls = Identity::Mtls { name: "a1".into() };
        assert_eq!(mtls.to_string(), "mtls:a1.agent.loadfleet");
        assert_eq!(Identity::Token.to_string(), "token");
        assert_eq!(Identity::None.to_string(), "none");
        assert_eq!(Mode::of(true, true).as_str(), "mtls");
        assert_eq!(Mode::of(true, false).as_str(), "token");
        assert_eq!(Mode::of(false, false).as_str(), "none");
    }

    #[test]
    fn only_loopback_listens_without_authentication() {
        let open: SocketAddr = "0.0.0.0:7700".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:7700".parse().unwrap();
        assert!(matches!(
            check_listen(open, false, false),
            Err(FleetError::Insecure { .. })
        ));
        assert!(check_listen(open, true, false).is_ok());
        assert!(check_listen(open, false, true).is_ok());
        assert!(check_listen(local, false, false).is_ok());
    }

    #[test]
    fn a_token_gate_asks_for_the_bearer_header() {
        let gate = Gate::new(Some("s3cret".into()), None);
        let mut md = MetadataMap::new();
        assert_eq!(
            gate.check_token(&md).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        md.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(gate.check_token(&md).is_ok());
        assert_eq!(gate.identify(&None, "a1").unwrap(), Identity::Token);
        let mtls = Gate {
            token: None,
            mtls: true,
            revoked: Vec::new(),
        };
        assert_eq!(
            mtls.identify(&None, "a1").unwrap_err().code(),
            tonic::Code::PermissionDenied,
            "mTLS without a certificate"
        );
    }
}
