//! Helpers shared by the controller's integration tests: real processes,
//! real servers on loopback, port 0 everywhere.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use loadfleet_testbed::{Config, Testbed};

/// The `loadfleet` binary built for these tests.
pub fn loadfleet() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadfleet"))
}

/// The `loadfleet-agent` binary: built by the same `cargo test --workspace`
/// into the same directory as `loadfleet`.
pub fn agent_bin() -> PathBuf {
    let p = loadfleet().with_file_name("loadfleet-agent");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the agent binary is built",
        p.display()
    );
    p
}

/// The test target's binary, built by `cargo test --workspace` beside `loadfleet`.
pub fn testbed_bin() -> PathBuf {
    loadfleet().with_file_name("loadfleet-testbed")
}

/// A free port on 127.0.0.1 (bound and released), for a process that must
/// be told its address before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test target on 127.0.0.1, port 0.
pub async fn testbed(config: Config) -> Testbed {
    Testbed::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .expect("testbed starts")
}

/// Waits (at most 20 s) until the target has served `n` responses: load
/// has started and is flowing.
pub async fn load_started(bed: &Testbed, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bed.stats().served() < n {
        assert!(std::time::Instant::now() < deadline, "load never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a plan file into `dir`.
pub fn write_plan(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write plan");
    p
}

/// A child process that is killed if the test ends early.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

/// How a process ended.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Proc {
    pub fn spawn(bin: &Path, args: &[&str]) -> Proc {
        Proc::spawn_env(bin, args, &[])
    }

    /// Like [`Proc::spawn`], with these environment variables set.
    pub fn spawn_env(bin: &Path, args: &[&str], env: &[(&str, &Path)]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        Proc {
            child,
            lines,
            stderr: Some(stderr),
            stdout: Some(stdout),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no stderr line containing {needle:?} within {timeout:?}"),
            }
        }
    }

    /// The address a controller started with `--listen 127.0.0.1:0` printed.
    pub fn listen_addr(&self) -> String {
        let line = self.wait_for_line("listening on", Duration::from_secs(20));
        line.split("listening on ")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .expect("address in line")
            .trim()
            .to_string()
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Like [`Proc::wait`], reading the peak resident memory every 10 ms
    /// meanwhile; returns the highest reading (KiB) with the exit.
    pub fn wait_watching_rss(mut self, timeout: Duration) -> (Exit, u64) {
        let deadline = std::time::Instant::now() + timeout;
        let mut peak = 0;
        while self.is_running() && std::time::Instant::now() < deadline {
            peak = peak.max(self.peak_rss_kib().unwrap_or(0));
            std::thread::sleep(Duration::from_millis(10));
        }
        (self.wait(Duration::from_secs(1)), peak)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for exit (bounded; killed and failed past `timeout`).
    pub fn wait(mut self, timeout: Duration) -> Exit {
        let deadline = std::time::Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status.code().unwrap_or(-1);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let join = |h: Option<std::thread::JoinHandle<String>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        Exit {
            code,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a process to completion (bounded).
pub fn run(bin: &Path, args: &[&str], timeout: Duration) -> Exit {
    Proc::spawn(bin, args).wait(timeout)
}

/// Reads a run directory's summary.json, after checking it against the
/// documented JSON Schema with an independent validator (Python's
/// `jsonschema`, installed by .ci/run): every summary a test reads validates.
pub fn summary(dir: &Path) -> serde_json::Value {
    checked_json(&dir.join("summary.json"), "summary.schema.json")
}

/// Reads a JSON output after checking it against `docs/SCHEMA` (itself
/// checked as a Draft 2020-12 schema) with an independent validator:
/// Python's `jsonschema`, installed by scripts/test.sh.
pub fn checked_json(path: &Path, schema: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(schema);
    let check = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))";
    let out = Command::new("python3")
        .args(["-c", check])
        .arg(&schema_path)
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} does not match docs/{schema} (or `pip install jsonschema` is missing):\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).expect("valid JSON")
}

/// A one-scenario plan: the `[load]` body as given, steps as (name, path).
pub fn plan_toml(base: &str, load: &str, steps: &[(&str, &str)]) -> String {
    let mut t = format!(
        "[target]\nbase_url = \"{base}\"\ntimeout = \"5s\"\n[load]\n{load}\n[[scenario]]\nname = \"s\"\n"
    );
    for (name, path) in steps {
        t.push_str(&format!(
            "[[scenario.step]]\nname = \"{name}\"\npath = \"{path}\"\n"
        ));
    }
    t
}

/// Starts `loadfleet run PLAN` waiting for `agents` remote agents on
/// 127.0.0.1 (port 0); returns the process and the URL agents dial.
pub fn fleet_controller(plan: &Path, out: &Path, agents: usize) -> (Proc, String) {
    let n = agents.to_string();
    let ctl = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--expect-agents",
            &n,
            "--out",
            out.to_str().unwrap(),
            "-q",
        ],
    );
    let url = format!("http://{}", ctl.listen_addr());
    (ctl, url)
}

/// Starts a `loadfleet-agent` process for one run (`--once`), allowed to
/// load loopback unless `extra` says what it may load.
pub fn agent(url: &str, region: &str, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--controller",
        url,
        "--region",
        region,
        "--name",
        name,
        "--once",
    ];
    if !extra
        .iter()
        .any(|a| *a == "--allow-target" || *a == "--allow-any-target")
    {
        args.extend_from_slice(&["--allow-target", "127.0.0.0/8"]);
    }
    args.extend_from_slice(extra);
    Proc::spawn(&agent_bin(), &args)
}

/// Waits for a process off the async runtime (bounded).
pub async fn exited(p: Proc, timeout: Duration) -> Exit {
    tokio::task::spawn_blocking(move || p.wait(timeout))
        .await
        .expect("wait task")
}

/// Starts `loadfleet run PLAN -q --out OUT EXTRA…` with an in-process
/// agent, and returns the running process.
pub fn run_in_background(plan: &Path, out: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "run",
        plan.to_str().unwrap(),
        "-q",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&loadfleet(), &args)
}

/// Runs `loadfleet run PLAN -q --out OUT` on a plan that must be refused:
/// checks it exits 2, writes no run directory, and returns its `error:`
/// line (file:line:column and the message).
pub async fn refused_plan(plan: &Path, out: &Path, what: &str) -> String {
    let args = [
        "run".to_string(),
        plan.to_str().unwrap().to_string(),
        "-q".into(),
        "--out".into(),
        out.to_str().unwrap().to_string(),
    ];
    let exit = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&loadfleet(), &args, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_eq!(exit.code, 2, "{what}: {}", exit.stderr);
    assert!(
        !out.exists(),
        "{what}: no run directory for a plan that never ran"
    );
    exit.stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default()
        .to_string()
}

/// Runs `loadfleet run PLAN -q --out OUT` with an in-process agent, to completion.
pub async fn run_plan(plan: &Path, out: &Path) -> Exit {
    let p = Proc::spawn(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    exited(p, Duration::from_secs(60)).await
}

// === headless Chromium ===

/// Debian's Chromium (`apt-get install chromium`; .ci/run installs it).
pub fn chromium() -> PathBuf {
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "headless Chromium is needed for this test: `apt-get install chromium` (.ci/run installs it)"
    );
}

/// Headless Chromium on `file`, with every network request sent to a proxy
/// that answers nothing and records what was asked. Returns (stdout,
/// stderr, requests the page made). Chromium's own calls home (time,
/// updates, accounts) are not the page's and are left out.
pub fn chromium_run(file: &Path, extra: &[&str]) -> (String, String, Vec<String>) {
    chromium_open(&format!("file://{}", file.display()), extra)
}

/// Like [`chromium_run`], on any URL (requests to loopback, where the
/// page's own server is, do not go through the recording proxy).
pub fn chromium_open(url: &str, extra: &[&str]) -> (String, String, Vec<String>) {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in proxy.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(1)));
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(conn), &mut line);
            // A connection that sent no request line within its second
            // (Chromium opens spare connections to its proxy ahead of need,
            // and CI once saw one) asked for nothing.
            if !line.trim().is_empty() {
                record.lock().unwrap().push(line.trim().to_string());
            }
        }
    });
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--proxy-server=http://{proxy_addr}"),
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let browser_services = ["google.com", "googleapis.com", "gstatic.com", "gvt1.com"];
    let page_requests = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            !browser_services
                .iter()
                .any(|h| l.split(' ').nth(1).unwrap_or("").contains(h))
        })
        .cloned()
        .collect();
    (
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        page_requests,
    )
}

/// The DOM after Chromium loaded the page and ran its script.
pub fn dump_dom(file: &Path) -> String {
    let (dom, stderr, requests) = chromium_run(file, &["--dump-dom"]);
    assert!(
        requests.is_empty(),
        "the page made network requests: {requests:?}"
    );
    let console_errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );
    dom
}

/// examples/moodle/plan.toml aimed at `base`, with `users` users over a 1 s
/// ramp, written next to a copy of its users.csv.
pub fn moodle_plan(
    dir: &Path,
    base: &str,
    users: u64,
    edit: impl Fn(String) -> String,
) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/moodle");
    std::fs::copy(root.join("users.csv"), dir.join("users.csv")).unwrap();
    let text = std::fs::read_to_string(root.join("plan.toml"))
        .unwrap()
        .replace("http://127.0.0.1:8080", base)
        .replace("users = [20, 30, 40]", &format!("users = {users}"))
        .replace("ramp_up = \"30s\"", "ramp_up = \"1s\"")
        .replace("cooldown = \"5s\"\n", "");
    write_plan(dir, "plan.toml", &edit(text))
}

/// The Hello of an agent written by hand in a test: version "0", weight 1,
/// any target, joining (not resuming, not checking).
pub fn hand_hello(name: &str, region: &str) -> loadfleet_proto::v1::Hello {
    loadfleet_proto::v1::Hello {
        name: name.into(),
        region: region.into(),
        version: "0".into(),
        weight: 1,
        resume_run_id: String::new(),
        check_only: false,
        allowed_targets: Vec::new(),
        allow_any_target: true,
        timing: String::new(),
        observer: false,
        observe_processes: Vec::new(),
        protocol: loadfleet_proto::PROTOCOL,
    }
}
