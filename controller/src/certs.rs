//! Certificates for mTLS between the controller and its agents: one CA of
//! your own, a controller certificate, and one certificate per agent. An
//! agent's certificate names it (`NAME.agent.loadfleet`), so an agent can
//! only attach under its own name.
//!
//! Certificates expire: the CA after [`CA_DAYS`], the others after
//! [`DEFAULT_DAYS`] (`--days`). `renew` issues a new pair and keeps the old
//! one as `NAME.previous.*`; `revoke` lists a certificate's SHA-256 in
//! `revoked.txt`, which the controller reads at start and refuses.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Agent names live under this DNS suffix in their certificates.
pub const AGENT_SUFFIX: &str = "agent.loadfleet";

/// Days an agent's or the controller's certificate is valid by default.
pub const DEFAULT_DAYS: u32 = 365;
/// Days the fleet CA is valid.
pub const CA_DAYS: u32 = 3650;
/// The list of revoked certificates in a certificate directory.
pub const REVOKED: &str = "revoked.txt";
/// `renew controller` renews the controller's certificate; no agent has this name.
pub const CONTROLLER: &str = "controller";

/// Valid from an hour ago (clocks differ) for `days` days.
fn valid_for(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

/// The SHA-256 of a certificate's DER bytes, as `revoked.txt` lists it.
pub fn fingerprint(der: &[u8]) -> String {
    crate::plan::sha256_hex(der)
}

/// The first certificate of a PEM text, as DER.
fn first_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| format!("no certificate in it ({e:?})"))
}

/// When a certificate (DER) stops being valid.
pub fn not_after(der: &[u8]) -> Option<time::OffsetDateTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()
}

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
        && name != CONTROLLER
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
    crate::atomic::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Creates `ca.pem`/`ca.key` and `controller.pem`/`controller.key` for the
/// controller's `hosts` (names or IP addresses agents dial). Refuses to
/// overwrite an existing CA.
pub fn init(dir: &Path, hosts: &[String], days: u32) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if dir.join("ca.key").exists() {
        return Err(format!(
            "{} already holds a CA; refusing to replace it",
            dir.display()
        ));
    }
    let bad = |e: rcgen::Error| format!("cannot make certificates: {e}");
    let ca_key = KeyPair::generate().map_err(bad)?;
    let mut ca = ca_params();
    valid_for(&mut ca, CA_DAYS);
    let ca = ca.self_signed(&ca_key).map_err(bad)?;
    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_public(&dir.join("ca.pem"), &ca.pem())?;
    controller(dir, hosts, days)
}

/// Issues `controller.pem`/`controller.key` for `hosts` with the CA in
/// `dir`, keeping a pair already there as `controller.previous.*`.
pub fn controller(dir: &Path, hosts: &[String], days: u32) -> Result<(), String> {
    let issuer_key = ca_key(dir)?;
    let bad = |e: rcgen::Error| format!("cannot make certificates: {e}");
    let mut p = CertificateParams::new(hosts.to_vec()).map_err(bad)?;
    p.distinguished_name
        .push(DnType::CommonName, "loadfleet controller");
    valid_for(&mut p, days);
    let key = KeyPair::generate().map_err(bad)?;
    let issuer = Issuer::new(ca_params(), &issuer_key);
    let cert = p.signed_by(&key, &issuer).map_err(bad)?;
    let (cert_path, key_path) = (dir.join("controller.pem"), dir.join("controller.key"));
    keep_previous(&cert_path, &key_path)?;
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok(())
}

/// The CA's key in `dir`.
fn ca_key(dir: &Path) -> Result<KeyPair, String> {
    let key_pem = std::fs::read_to_string(dir.join("ca.key")).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `loadfleet certs init` first)",
            dir.join("ca.key").display()
        )
    })?;
    KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", dir.join("ca.key").display()))
}

/// `X.pem`/`X.key` become `X.previous.pem`/`X.previous.key` (replacing an
/// older previous pair), so a new pair can be written.
fn keep_previous(cert: &Path, key: &Path) -> Result<(), String> {
    for (from, ext) in [(cert, "pem"), (key, "key")] {
        if from.exists() {
            let to = from.with_extension(format!("previous.{ext}"));
            std::fs::rename(from, &to)
                .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// The certificate and key files of agent `name` in `dir`.
pub fn agent_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let agents = dir.join("agents");
    (
        agents.join(format!("{name}.pem")),
        agents.join(format!("{name}.key")),
    )
}

/// Creates `agents/NAME.pem` and `agents/NAME.key`, signed by the CA in
/// `dir`, valid for `days`. Refuses to replace an existing pair (that is
/// [`renew`]).
pub fn agent(dir: &Path, name: &str, days: u32) -> Result<(PathBuf, PathBuf), String> {
    let (cert_path, _) = agent_files(dir, name);
    if cert_path.exists() {
        return Err(format!(
            "{} exists; `loadfleet certs renew {name} --dir {}` replaces it",
            cert_path.display(),
            dir.display()
        ));
    }
    issue_agent(dir, name, days)
}

/// Issues a new pair for agent `name`; the current one is kept as
/// `agents/NAME.previous.*` and stays valid until it expires or is revoked.
pub fn renew(dir: &Path, name: &str, days: u32) -> Result<(PathBuf, PathBuf), String> {
    let (cert_path, key_path) = agent_files(dir, name);
    if !cert_path.exists() {
        return Err(format!(
            "{} does not exist: `loadfleet certs agent {name} --dir {}` issues a first one",
            cert_path.display(),
            dir.display()
        ));
    }
    // Check before moving anything.
    if !valid_agent_name(name) {
        return Err(format!("agent name `{name}` cannot go in a certificate"));
    }
    ca_key(dir)?;
    keep_previous(&cert_path, &key_path)?;
    issue_agent(dir, name, days)
}

fn issue_agent(dir: &Path, name: &str, days: u32) -> Result<(PathBuf, PathBuf), String> {
    if !valid_agent_name(name) {
        return Err(format!(
            "agent name `{name}` cannot go in a certificate: use lowercase letters, digits and `-` (at most 63; not `{CONTROLLER}`)"
        ));
    }
    let ca_key = ca_key(dir)?;
    let bad = |e: rcgen::Error| format!("cannot make the certificate: {e}");
    let issuer = Issuer::new(ca_params(), &ca_key);
    let mut p = CertificateParams::new(vec![agent_dns_name(name)]).map_err(bad)?;
    p.distinguished_name.push(DnType::CommonName, name);
    valid_for(&mut p, days);
    let key = KeyPair::generate().map_err(bad)?;
    let cert = p.signed_by(&key, &issuer).map_err(bad)?;
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents)
        .map_err(|e| format!("cannot create {}: {e}", agents.display()))?;
    let (cert_path, key_path) = agent_files(dir, name);
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok((cert_path, key_path))
}

/// Lists agent `name`'s certificate (its `previous` one with `previous`)
/// in `dir/revoked.txt`; returns its fingerprint and whether it was
/// listed already.
pub fn revoke(dir: &Path, name: &str, previous: bool) -> Result<(String, bool), String> {
    let (mut cert_path, _) = agent_files(dir, name);
    if previous {
        cert_path = cert_path.with_extension("previous.pem");
    }
    let pem = std::fs::read_to_string(&cert_path)
        .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
    let der = first_der(&pem).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let fp = fingerprint(&der);
    let path = dir.join(REVOKED);
    let listed = read_revoked(&path)?;
    if listed.iter().any(|(f, _)| *f == fp) {
        return Ok((fp, true));
    }
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Certificates the controller refuses: sha256:FINGERPRINT NAME REVOKED_AT\n".into()
    });
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("sha256:{fp} {name} {now}\n"));
    write_public(&path, &text)?;
    Ok((fp, false))
}

/// The revoked list: (fingerprint, agent name) per line. A missing file is
/// an empty list; a malformed line is an error naming it.
pub fn read_revoked(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let fp = words
            .next()
            .and_then(|w| w.strip_prefix("sha256:"))
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        match (fp, words.next()) {
            (Some(fp), Some(name)) => out.push((fp.to_ascii_lowercase(), name.to_string())),
            _ => {
                return Err(format!(
                    "{}:{}: expected `sha256:<64 hex digits> NAME [DATE]`, found `{line}`",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    Ok(out)
}

/// The controller's TLS files, read from a directory made by [`init`].
#[derive(Debug, Clone)]
pub struct ControllerTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Revoked agent certificates: (SHA-256 of the DER, agent name).
    pub revoked: Vec<(String, String)>,
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
            revoked: read_revoked(&dir.join(REVOKED))?,
        })
    }

    /// Warnings for the CA or controller certificate expiring within 30
    /// days (or expired).
    pub fn expiry_warnings(&self) -> Vec<String> {
        let now = time::OffsetDateTime::now_utc();
        [
            ("the fleet CA (ca.pem)", &self.ca_pem),
            (
                "the controller certificate (controller.pem)",
                &self.cert_pem,
            ),
        ]
        .into_iter()
        .filter_map(|(what, pem)| {
            let end = not_after(&first_der(pem).ok()?)?;
            let left = end - now;
            let day = end.date();
            if left <= time::Duration::ZERO {
                Some(format!("{what} expired on {day}: agents will refuse it"))
            } else if left < time::Duration::days(30) {
                Some(format!(
                    "{what} expires on {day}, in {} days: `loadfleet certs renew` it",
                    left.whole_days()
                ))
            } else {
                None
            }
        })
        .collect()
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
        init(dir.path(), &["localhost".into(), "127.0.0.1".into()], 365).unwrap();
        assert!(
            init(dir.path(), &[], 365)
                .unwrap_err()
                .contains("refusing to replace")
        );
        let (cert, _) = agent(dir.path(), "eu-1", 365).unwrap();
        let pem = std::fs::read_to_string(cert).unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert!(cert_names_agent(&der, "eu-1"));
        assert!(
            !cert_names_agent(&der, "eu-2"),
            "a certificate names one agent only"
        );
        assert!(agent(dir.path(), "Bad Name", 365).is_err());
        assert!(agent(dir.path(), "controller", 365).is_err());
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
