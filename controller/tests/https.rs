//! HTTPS targets: certificates are verified (Mozilla roots plus the plan's
//! `ca_file`, shipped to agents in the assignment).

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::{Config, self_signed};

fn plan(base: &str, ca: Option<&str>) -> String {
    let text = plan_toml(base, "users = 2\niterations = 10", &[("home", "/")]);
    match ca {
        Some(f) => text.replace(
            "timeout = \"5s\"\n",
            &format!("timeout = \"5s\"\nca_file = \"{f}\"\n"),
        ),
        None => text,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_target_with_the_plans_ca_is_verified_and_loaded() {
    let id = self_signed(&["127.0.0.1", "localhost"]).unwrap();
    let bed = testbed(Config {
        tls: Some(id.clone()),
        ..Config::default()
    })
    .await;
    assert!(bed.base_url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &id.cert_pem).unwrap();

    // Trusted through ca_file: every request succeeds.
    let good = write_plan(
        dir.path(),
        "good.toml",
        &plan(&bed.base_url(), Some("ca.pem")),
    );
    let out = dir.path().join("good");
    let exit = run_plan(&good, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["total"]["requests"], 20);
    assert_eq!(bed.stats().served(), 20);
    assert_eq!(
        bed.stats().first_request_times().len(),
        2,
        "one TLS connection per user, kept alive"
    );

    // Not trusted: the handshake fails, errors of kind tls, nothing served.
    let untrusted = write_plan(dir.path(), "untrusted.toml", &plan(&bed.base_url(), None));
    let out = dir.path().join("untrusted");
    let exit = run_plan(&untrusted, &out).await;
    assert_eq!(exit.code, 1);
    let s = summary(&out);
    assert_eq!(s["total"]["errors_by_kind"]["tls"], 20, "{}", s["errors"]);
    assert_eq!(
        bed.stats().served(),
        20,
        "no request got through an unverified handshake"
    );

    // A ca_file that is not PEM is a plan error with its position.
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let bad = write_plan(
        dir.path(),
        "bad.toml",
        &plan(&bed.base_url(), Some("junk.pem")),
    );
    let exit = run(
        &loadfleet(),
        &["validate", bad.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(exit.code, 2);
    assert!(
        exit.stderr
            .contains("bad.toml:4:11: `target.ca_file`: expected PEM certificates"),
        "{}",
        exit.stderr
    );
}

/// A self-signed certificate made the usual way (`openssl req -x509`, which
/// marks it CA:TRUE) is trusted through `ca_file` for the names it holds,
/// as curl trusts it; `tls_verify = false` loads any certificate and says
/// so in the terminal, the summary and the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openssl_self_signed_certificate_and_tls_verify_off() {
    let dir = tempfile::tempdir().unwrap();
    // A certificate and key the way openssl makes them for `san`.
    let openssl_cert = |file: &str, san: &str| {
        let (cert, key) = (
            dir.path().join(format!("{file}.pem")),
            dir.path().join(format!("{file}.key")),
        );
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=loadfleet test",
                "-addext",
                &format!("subjectAltName={san}"),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let text = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
            "openssl marks it a CA, which is what made it fail before"
        );
        loadfleet_testbed::TlsIdentity {
            cert_pem: std::fs::read_to_string(&cert).unwrap(),
            key_pem: std::fs::read_to_string(&key).unwrap(),
        }
    };
    let bed = testbed(Config {
        tls: Some(openssl_cert("cert", "IP:127.0.0.1")),
        ..Config::default()
    })
    .await;
    let trusted = write_plan(
        dir.path(),
        "trusted.toml",
        &plan(&bed.base_url(), Some("cert.pem")),
    );
    let out = dir.path().join("trusted");
    let exit = run_plan(&trusted, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(summary(&out)["total"]["requests"], 20);
    assert_eq!(bed.stats().served(), 20);

    // A server whose own certificate is in ca_file but names another host
    // is still refused: trusted for the names it holds, no others.
    let elsewhere = testbed(Config {
        tls: Some(openssl_cert("elsewhere", "DNS:elsewhere.example")),
        ..Config::default()
    })
    .await;
    let wrong = write_plan(
        dir.path(),
        "wrong.toml",
        &plan(&elsewhere.base_url(), Some("elsewhere.pem")),
    );
    let out = dir.path().join("wrong");
    let exit = run_plan(&wrong, &out).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["total"]["errors_by_kind"]["tls"], 20, "{}", s["errors"]);
    assert_eq!(elsewhere.stats().served(), 0, "nothing got through");

    // tls_verify = false: loaded without ca_file, and said everywhere.
    let text = plan(&bed.base_url(), None).replace(
        "timeout = \"5s\"\n",
        "timeout = \"5s\"\ntls_verify = false\n",
    );
    let off = write_plan(dir.path(), "off.toml", &text);
    let out = dir.path().join("off");
    let exit = run_plan(&off, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(bed.stats().served(), 40);
    let warning = "target.tls_verify = false: servers' certificates were not checked";
    assert!(
        exit.stderr.contains(&format!("WARNING: {warning}")),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stdout.contains(&format!("WARNING: {warning}")),
        "{}",
        exit.stdout
    );
    let s = summary(&out);
    assert!(
        s["warnings"][0].as_str().unwrap().starts_with(warning),
        "{}",
        s["warnings"]
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("tls_verify = false"), "the report says it");
}

/// `[http] connections` and `tls_resumption`, counted by the server: a new
/// connection per request, per iteration or per user, and TLS sessions
/// resumed (as browsers do) unless turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_request_iteration_or_user_and_tls_resumption() {
    let id = self_signed(&["127.0.0.1"]).unwrap();
    let bed = testbed(Config {
        tls: Some(id.clone()),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &id.cert_pem).unwrap();
    // TLS handshakes (all, resumed) the server saw during one run of the
    // plan with this `[http]` section.
    let connections = async |name: &str, http: &str| {
        let text = plan_toml(
            &bed.base_url(),
            "users = 2\niterations = 5",
            &[("a", "/a"), ("b", "/b")],
        )
        .replace(
            "timeout = \"5s\"\n",
            "timeout = \"5s\"\nca_file = \"ca.pem\"\n",
        ) + &format!("[http]\n{http}\n");
        let plan = write_plan(dir.path(), &format!("{name}.toml"), &text);
        let out = dir.path().join(name);
        let (all, resumed) = bed.stats().tls_handshakes();
        let exit = run_plan(&plan, &out).await;
        assert_eq!(exit.code, 0, "{name}: {}", exit.stderr);
        assert_eq!(summary(&out)["total"]["requests"], 20, "{name}");
        let (all_after, resumed_after) = bed.stats().tls_handshakes();
        (all_after - all, resumed_after - resumed)
    };
    let (n, r) = connections("per-request", "connections = \"per_request\"").await;
    eprintln!("per_request: {n} TLS handshakes, {r} resumed");
    assert_eq!(n, 20, "one connection per request");
    assert!(r >= 18, "all but each user's first resumed: {r}");
    let (n, r) = connections(
        "no-resumption",
        "connections = \"per_request\"\ntls_resumption = false",
    )
    .await;
    eprintln!("per_request, tls_resumption = false: {n} TLS handshakes, {r} resumed");
    assert_eq!((n, r), (20, 0), "every handshake in full");
    let (n, _) = connections("per-iteration", "connections = \"per_iteration\"").await;
    assert_eq!(n, 10, "2 users x 5 iterations");
    let (n, _) = connections("per-user", "connections = \"per_user\"").await;
    assert_eq!(n, 2, "one kept-alive connection per user");
}
