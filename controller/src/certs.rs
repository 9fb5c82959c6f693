//! Certificates for mTLS between the controller and its agents: one CA of
//! your own, a controller certificate, and one certificate per agent. An
//! agent's certificate names it (`NAME.agent.loadfleet`), so an agent can
//! only attach under its own name.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Agent names live under this DNS suffix in their certificates.
pub const AGENT_SUFFIX: &str = "agent.loadfleet";

/// The DNS name an agent's certificate carries.
pub fn agent_dns_name(name: &str) -> String {
    format!("{name}.{AGENT_SUFFIX}")
}

/// Whether `name` can be put in a certificate (one DNS label).
pub fn valid_agent_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "loadfleet fleet CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_public(path: &Path, text: &str) -> Result<(), String> {
    crate::output::atomic::write(path, text)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Creates `ca.pem`/`ca.key` and `controller.pem`/`controller.key` for the
/// controller's `hosts` (names or IP addresses agents dial). Refuses to
/// overwrite an existing CA.
pub fn init(dir: &Path, hosts: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if dir.join("ca.key").exists() {
        return Err(format!(
            "{} already holds a CA; refusing to replace it",
            dir.display()
        ));
    }
    let bad = |e: rcgen::Error| format!("cannot make certificates: {e}");
    let ca_key = KeyPair::generate().map_err(bad)?;
    let ca = ca_params().self_signed(&ca_key).map_err(bad)?;
    let mut p = CertificateParams::new(hosts.to_vec()).map_err(bad)?;
    p.distinguished_name
        .push(DnType::CommonName, "loadfleet controller");
    let key = KeyPair::generate().map_err(bad)?;
    let issuer = Issuer::new(ca_params(), &ca_key);
    let cert = p.signed_by(&key, &issuer).map_err(bad)?;
    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_public(&dir.join("ca.pem"), &ca.pem())?;
    write_private(&dir.join("controller.key"), &key.serialize_pem())?;
    write_public(&dir.join("controller.pem"), &cert.pem())?;
    Ok(())
}

/// Creates `agents/NAME.pem` and `agents/NAME.key`, signed by the CA in `dir`.
pub fn agent(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    if !valid_agent_name(name) {
        return Err(format!(
            "agent name `{name}` cannot go in a certificate: use lowercase letters, digits and `-` (at most 63)"
        ));
    }
    let key_pem = std::fs::read_to_string(dir.join("ca.key")).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `loadfleet certs init` first)",
            dir.join("ca.key").display()
        )
    })?;
    let bad = |e: rcgen::Error| format!("cannot make the certificate: {e}");
    let ca_key = KeyPair::from_pem(&key_pem).map_err(bad)?;
    let issuer = Issuer::new(ca_params(), &ca_key);
    let mut p = CertificateParams::new(vec![agent_dns_name(name)]).map_err(bad)?;
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().map_err(bad)?;
    let cert = p.signed_by(&key, &issuer).map_err(bad)?;
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents)
        .map_err(|e| format!("cannot create {}: {e}", agents.display()))?;
    let (cert_path, key_path) = (
        agents.join(format!("{name}.pem")),
        agents.join(format!("{name}.key")),
    );
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok((cert_path, key_path))
}

/// The controller's TLS files, read from a directory made by [`init`].
#[derive(Debug, Clone)]
pub struct ControllerTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ControllerTls {
    pub fn load(dir: &Path) -> Result<ControllerTls, String> {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map_err(|e| format!("cannot read {}: {e}", dir.join(f).display()))
        };
        Ok(ControllerTls {
            ca_pem: read("ca.pem")?,
            cert_pem: read("controller.pem")?,
            key_pem: read("controller.key")?,
        })
    }
}

/// Checks that a client certificate (DER) names agent `name`.
pub fn cert_names_agent(der: &rustls::pki_types::CertificateDer<'_>, name: &str) -> bool {
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(der) else {
        return false;
    };
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(agent_dns_name(name)) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &server_name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_certificates_that_name_their_agent() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(
            init(dir.path(), &[])
                .unwrap_err()
                .contains("refusing to replace")
        );
        let (cert, _) = agent(dir.path(), "eu-1").unwrap();
        let pem = std::fs::read_to_string(cert).unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert!(cert_names_agent(&der, "eu-1"));
        assert!(
            !cert_names_agent(&der, "eu-2"),
            "a certificate names one agent only"
        );
        assert!(agent(dir.path(), "Bad Name").is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "private keys are readable by their owner only"
        );
    }
}
