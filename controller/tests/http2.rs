//! HTTP/2 against a real HTTP/2 server: nginx (Debian's, `listen … http2`)
//! in front of the test target, over TLS (negotiated by ALPN) and over
//! plain TCP with prior knowledge (h2c). nginx's access log says, request
//! by request, which protocol it spoke (`$server_protocol`); the summary
//! says how many responses came over HTTP/2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::moodle::MoodleConfig;
use loadfleet_testbed::{Config, self_signed};

/// nginx with an HTTP/2 TLS server and an h2c server, both proxying to
/// `upstream` over HTTP/1.1; killed on drop.
struct Nginx {
    child: Child,
    tls_port: u16,
    /// A second HTTP/2 TLS server: another origin.
    other_port: u16,
    h2c_port: u16,
    log: PathBuf,
    cert: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, upstream: &str) -> Nginx {
        let id = self_signed(&["127.0.0.1", "localhost"]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &id.cert_pem).unwrap();
        std::fs::write(&key, &id.key_pem).unwrap();
        let (tls_port, h2c_port, other_port) = (free_port(), free_port(), free_port());
        let log = dir.join("access.log");
        let d = dir.display();
        let proxy = format!(
            "location / {{ proxy_pass http://{upstream}; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; proxy_set_header Host $http_host; }}"
        );
        let conf = format!(
            "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  log_format proto '$server_protocol $status $request_method $request_uri';\n\
             access_log {log} proto;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{tls_port} ssl http2; ssl_certificate {cert}; \
             ssl_certificate_key {key}; {proxy} }}\n\
             server {{ listen 127.0.0.1:{other_port} ssl http2; ssl_certificate {cert}; \
             ssl_certificate_key {key}; {proxy} }}\n\
             server {{ listen 127.0.0.1:{h2c_port} http2; {proxy} }}\n}}\n",
            log = log.display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .args(["-p", &d.to_string(), "-c"])
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (scripts/test.sh installs nginx-light)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", h2c_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            tls_port,
            other_port,
            h2c_port,
            log,
            cert,
        }
    }

    /// Requests in the access log, by the protocol nginx spoke.
    fn protocols(&self) -> std::collections::BTreeMap<String, u64> {
        let mut by = std::collections::BTreeMap::new();
        for line in std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
        {
            let proto = line.split(' ').next().unwrap_or("").to_string();
            *by.entry(proto).or_insert(0) += 1;
        }
        by
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plan(dir: &Path, name: &str, base: &str, http: &str, ca: &Path) -> PathBuf {
    write_plan(
        dir,
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\n[target]\nbase_url = \"{base}\"\nca_file = \"{}\"\n\
             [http]\n{http}\n[load]\nusers = 3\niterations = 5\n\
             [[scenario]]\nname = \"s\"\n\
             [[scenario.step]]\nname = \"get\"\npath = \"/a\"\n\
             [[scenario.step]]\nname = \"post\"\nmethod = \"POST\"\npath = \"/echo\"\n\
             form = {{ who = \"h2\" }}\ncheck = {{ body_contains = [\"who=h2\"] }}\n",
            ca.display()
        ),
    )
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn_by_prior_knowledge_and_http1_when_asked() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path(), &bed.addr().to_string());
    let tls = format!("https://127.0.0.1:{}", nginx.tls_port);
    let h2c = format!("http://127.0.0.1:{}", nginx.h2c_port);
    let mut before = nginx.protocols();
    for (name, base, http, expect) in [
        // The default: offered by ALPN, taken.
        ("auto", &tls, "", "HTTP/2.0"),
        ("forced", &tls, "version = \"2\"", "HTTP/2.0"),
        ("h2c", &h2c, "version = \"h2c\"", "HTTP/2.0"),
        ("one", &tls, "version = \"1.1\"", "HTTP/1.1"),
    ] {
        let p = plan(dir.path(), name, base, http, &nginx.cert);
        let out = dir.path().join(name);
        let exit = run_plan(&p, &out).await;
        assert_eq!(exit.code, 0, "{name}: {}", exit.stderr);
        let s = summary(&out);
        assert_eq!(u(&s["total"]["errors"]), 0, "{name}: {}", s["errors"]);
        assert_eq!(u(&s["total"]["requests"]), 30);
        let after = nginx.protocols();
        let spoken: std::collections::BTreeMap<&String, u64> = after
            .iter()
            .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let h2 = u(&s["total"]["http2_responses"]);
        println!("{name}: nginx spoke {spoken:?}; the summary: {h2} of 30 over HTTP/2");
        assert_eq!(spoken.len(), 1, "{name}: one protocol: {spoken:?}");
        assert_eq!(spoken.get(&expect.to_string()), Some(&30), "{name}");
        assert_eq!(h2, if expect == "HTTP/2.0" { 30 } else { 0 }, "{name}");
        if h2 == 30 {
            assert!(
                exit.stdout
                    .contains("step post: 15 responses over HTTP/2, 0 over HTTP/1.1"),
                "{}",
                exit.stdout
            );
            // The report's step table says it too.
            let report = std::fs::read_to_string(out.join("report.html")).unwrap();
            assert!(
                report.contains("(15 of 15 responses over HTTP/2)"),
                "{name}: the report's step rows"
            );
        }
        before = after;
    }
}

/// The Moodle journey (cookies, a login token and sesskey extracted, forms
/// posted, redirects followed) over HTTP/2, counted on the site and in
/// nginx's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moodle_journey_runs_over_http2() {
    let bed = testbed(Config {
        moodle: Some(MoodleConfig::default()),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path(), &bed.addr().to_string());
    let base = format!("https://127.0.0.1:{}", nginx.tls_port);
    let plan = moodle_plan(dir.path(), &base, 4, |t| {
        t.replace(
            "timeout = \"30s\"",
            &format!("timeout = \"30s\"\nca_file = \"{}\"", nginx.cert.display()),
        )
    });
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(u(&s["total"]["errors"]), 0, "{}", s["errors"]);
    let site = bed.moodle().unwrap();
    let logins: u64 = site.logins().values().sum();
    println!(
        "over HTTP/2: {logins} logins, {} replies, {} logouts; nginx spoke {:?}",
        site.replies(),
        site.logouts(),
        nginx.protocols()
    );
    assert_eq!((logins, site.replies(), site.logouts()), (4, 4, 4));
    assert_eq!(
        u(&s["total"]["http2_responses"]),
        u(&s["total"]["requests"])
    );
    let spoken = nginx.protocols();
    assert_eq!(spoken.len(), 1, "{spoken:?}");
    // Every exchange, redirect hops included, went over HTTP/2.
    assert_eq!(spoken.get("HTTP/2.0"), Some(&u(&s["total"]["exchanges"])));
}

/// `version = "2"` against a server that offers only HTTP/1.1 (the test
/// target over TLS): every request is a `protocol` error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_only_against_a_server_without_it_says_so() {
    let id = self_signed(&["127.0.0.1"]).unwrap();
    let bed = testbed(Config {
        tls: Some(id.clone()),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &id.cert_pem).unwrap();
    let p = plan(dir.path(), "only2", &bed.base_url(), "version = \"2\"", &ca);
    let out = dir.path().join("out");
    let exit = run_plan(&p, &out).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    println!("{}", s["errors"]);
    assert_eq!(u(&s["total"]["errors_by_kind"]["protocol"]), 30);
    assert!(
        s["errors"]["protocol"]["sample"]
            .as_str()
            .unwrap()
            .contains("did not offer HTTP/2 (ALPN h2)"),
        "{}",
        s["errors"]
    );
    assert_eq!(bed.stats().served(), 0, "nothing was sent over HTTP/1.1");
}

/// A step that goes to another origin: that origin's own HTTP/2 connection
/// (a browser keeps one per origin), by ALPN too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origin_gets_its_own_http2_connection() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path(), &bed.addr().to_string());
    let p = write_plan(
        dir.path(),
        "two.toml",
        &format!(
            "name = \"two\"\n[target]\nbase_url = \"https://127.0.0.1:{}\"\nca_file = \"{}\"\n\
             [load]\nusers = 3\niterations = 5\n[[scenario]]\nname = \"s\"\n\
             [[scenario.step]]\nname = \"here\"\npath = \"/a\"\n\
             [[scenario.step]]\nname = \"there\"\nurl = \"https://127.0.0.1:{}/b\"\n",
            nginx.tls_port,
            nginx.cert.display(),
            nginx.other_port
        ),
    );
    let out = dir.path().join("out");
    let exit = run_plan(&p, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    println!(
        "there: {} of {} over HTTP/2; nginx spoke {:?}",
        s["requests"]["there"]["http2_responses"],
        s["requests"]["there"]["requests"],
        nginx.protocols()
    );
    assert_eq!(u(&s["requests"]["there"]["http2_responses"]), 15);
    assert_eq!(u(&s["total"]["http2_responses"]), 30);
    assert_eq!(nginx.protocols().get("HTTP/2.0"), Some(&30));
}
