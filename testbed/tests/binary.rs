//! The testbed binary serves, reports its address, and counts what it served.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn serves_statuses_and_reports_the_count_on_exit() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadfleet-testbed"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--exit-after",
            "2",
            "--latency",
            "/slow=50ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    let get = |path: &str| {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let started = std::time::Instant::now();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        (resp, started.elapsed())
    };
    let (ok, _) = get("/");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let (missing, _) = get("/status/404");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let (_, took) = get("/slow/page");
    assert!(
        took.as_millis() >= 50,
        "the /slow prefix waits 50 ms, took {took:?}"
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "served 3 responses; abandoned 0; late reuses 0"
    );
}
