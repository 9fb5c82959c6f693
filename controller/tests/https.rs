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
