//! Multipart/form-data bodies (`multipart` in a step): fields and files
//! sent as a browser sends a form with a file input, checked by parsing
//! what the test target received with Python's own MIME parser (an
//! implementation that is not ours).

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

/// Parses a multipart body with Python's `email` package: each part's
/// name, file name, media type, length and SHA-256.
const PARSE: &str = r#"
import hashlib, json, sys
from email.parser import BytesParser
from email.policy import HTTP
kind, path = sys.argv[1], sys.argv[2]
body = open(path, "rb").read()
msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + kind.encode() + b"\r\n\r\n" + body)
assert msg.is_multipart(), "not multipart"
out = []
for part in msg.iter_parts():
    data = part.get_payload(decode=True)
    out.append({
        "name": part.get_param("name", header="content-disposition"),
        "filename": part.get_filename(),
        "type": part.get_content_type(),
        "len": len(data),
        "sha": hashlib.sha256(data).hexdigest(),
        "text": data.decode("utf-8", "replace") if part.get_filename() is None else "",
    })
print(json.dumps(out))
"#;

/// A multipart body as Python's MIME parser reads it (one JSON object per
/// part), after checking its content type names multipart/form-data.
pub(crate) fn parse_multipart(kind: &str, body: &[u8]) -> serde_json::Value {
    assert!(kind.starts_with("multipart/form-data; boundary="), "{kind}");
    let dir = tempfile::tempdir().unwrap();
    let (script, file) = (dir.path().join("parse.py"), dir.path().join("body"));
    std::fs::write(&script, PARSE).unwrap();
    std::fs::write(&file, body).unwrap();
    let parsed = std::process::Command::new("python3")
        .arg(&script)
        .arg(kind)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    serde_json::from_slice(&parsed.stdout).unwrap()
}

pub(crate) fn sha256(data: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_and_files_go_as_multipart_form_data() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // A binary file holding line breaks, dashes and every byte value.
    let scan: Vec<u8> = (0..3000u32)
        .map(|i| (i * 7 % 256) as u8)
        .chain(*b"\r\n--\r\n--loadfleet-\r\n")
        .collect();
    std::fs::write(dir.path().join("scan.png"), &scan).unwrap();
    std::fs::write(dir.path().join("notes"), "first line\nsecond line\n").unwrap();
    let plan = write_plan(
        dir.path(),
        "upload.toml",
        &format!(
            r#"
[target]
base_url = "{}"
[load]
users = 1
iterations = 2
[[scenario]]
name = "form"
[[scenario.step]]
name = "upload"
method = "POST"
path = "/upload"
multipart = [
  {{ name = "title", value = "Report ${{__iteration}}" }},
  {{ name = "tag", value = "a" }},
  {{ name = "tag", value = "b" }},
  {{ name = "scan", file = "scan.png" }},
  {{ name = "notes", file = "notes", filename = "notes.txt", content_type = "text/plain" }},
]
"#,
            bed.base_url()
        ),
    );
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let uploads = bed.stats().uploads();
    assert_eq!(uploads.len(), 2, "one upload per iteration");
    for (i, (kind, body)) in uploads.iter().enumerate() {
        let parts = parse_multipart(kind, body);
        println!("iteration {i}: {parts}");
        let names: Vec<&str> = parts
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["title", "tag", "tag", "scan", "notes"],
            "in order, repeats kept"
        );
        assert_eq!(
            parts[0]["text"],
            format!("Report {}", i + 1),
            "a template, per iteration (1-based)"
        );
        assert_eq!(
            (parts[1]["text"].as_str(), parts[2]["text"].as_str()),
            (Some("a"), Some("b"))
        );
        assert_eq!(parts[3]["filename"], "scan.png");
        assert_eq!(parts[3]["type"], "image/png");
        assert_eq!(parts[3]["len"], scan.len());
        assert_eq!(
            parts[3]["sha"],
            sha256(&scan),
            "the file's bytes, unchanged"
        );
        assert_eq!(parts[4]["filename"], "notes.txt");
        assert_eq!(parts[4]["type"], "text/plain");
        assert_eq!(parts[4]["sha"], sha256(b"first line\nsecond line\n"));
    }
    let s = summary(&out);
    assert_eq!(s["total"]["errors"], 0);
}

#[test]
fn a_bad_multipart_part_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\nusers = 1\niterations = 1\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\npath = \"/u\"\nmethod = \"POST\"\n";
    for (part, expected) in [
        (
            "multipart = [{ name = \"f\", file = \"missing.bin\" }]",
            "11:35: step `multipart` part \"f\" `file`: cannot read",
        ),
        (
            "multipart = [{ name = \"f\" }]",
            "expected either `value` (a field) or `file`",
        ),
        (
            "multipart = [{ name = \"f\", value = \"v\", content_type = \"text/plain\" }]",
            "`filename` and `content_type` are for a `file`",
        ),
        (
            "multipart = [{ name = \"f\", value = \"v\" }]\nform = { a = \"b\" }",
            "expected at most one of `form`, `json`, `body` and `multipart`",
        ),
    ] {
        let plan = write_plan(dir.path(), "bad.toml", &format!("{base}{part}\n"));
        let exit = run(
            &loadfleet(),
            &["validate", plan.to_str().unwrap()],
            Duration::from_secs(20),
        );
        assert_eq!(exit.code, 2, "{part}: {}", exit.stderr);
        assert!(exit.stderr.contains(expected), "{part}: {}", exit.stderr);
    }
}

/// A form as a list of pairs keeps its order and its repeated names, as a
/// browser sends a form with two fields of one name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_of_pairs_keeps_order_and_repeats() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "pairs.toml",
        &format!(
            "[target]\nbase_url = \"{}\"\n[load]\nusers = 1\niterations = 1\n[[scenario]]\nname = \"s\"\n\
             [[scenario.step]]\npath = \"/upload\"\nform = [[\"z\", \"1\"], [\"tag\", \"a b\"], [\"tag\", \"c&d\"]]\n",
            bed.base_url()
        ),
    );
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let uploads = bed.stats().uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].0, "application/x-www-form-urlencoded");
    assert_eq!(
        String::from_utf8_lossy(&uploads[0].1),
        "z=1&tag=a+b&tag=c%26d",
        "in order, both tags, each encoded"
    );
    // A pair that is not [name, value] is an error with its place.
    let bad = write_plan(
        dir.path(),
        "bad.toml",
        "[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\nusers = 1\niterations = 1\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\npath = \"/\"\nform = [[\"a\"]]\n",
    );
    let exit = run(
        &loadfleet(),
        &["validate", bad.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("bad.toml:10:9: `scenario.step.form`: expected a [name, value] pair"),
        "{}",
        exit.stderr
    );
}
