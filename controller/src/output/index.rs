//! `index.html` of a directory of runs (a series, an experiment, a
//! capacity search, phases, the demo): what opening the directory in a
//! browser shows. It links the directory's own answer page and every run's
//! report found under it, so no report is more than one click away.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How deep reports are looked for (a demo's experiment runs are three
/// levels down: `experiment/runs/<run>/report.html`; a swept phase four).
const DEPTH: usize = 4;

/// Writes `dir/index.html`: `title`, a link to `main` (a page in `dir`),
/// and a link to every `report.html` under `dir`, in path order.
pub fn write(dir: &Path, title: &str, main: &str) -> std::io::Result<()> {
    let mut reports = Vec::new();
    find_reports(dir, dir, DEPTH, &mut reports);
    reports.sort();
    crate::atomic::write(dir.join("index.html"), page(title, main, &reports))
}

fn find_reports(root: &Path, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if depth > 0 {
                find_reports(root, &path, depth - 1, out);
            }
        } else if path.file_name().is_some_and(|n| n == "report.html")
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_path_buf());
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A link's address: each path segment percent-encoded where a URL needs it.
fn href(path: &Path) -> String {
    path.components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn page(title: &str, main: &str, reports: &[PathBuf]) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<link rel=\"icon\" href=\"data:,\">\n<title>{t}</title>\n<style>body {{ font-family: system-ui, -apple-system, \"Segoe UI\", sans-serif; margin: 2rem; color: #222; max-width: 1100px; }} li {{ margin: .2rem 0; overflow-wrap: anywhere; }} @media (max-width: 600px) {{ body {{ margin: .6rem; }} }}</style>\n</head>\n<body>\n<h1>{t}</h1>\n<p><a href=\"{m}\">{me}</a>: the answer first.</p>\n",
        t = esc(title),
        m = href(Path::new(main)),
        me = esc(main),
    );
    let _ = writeln!(o, "<h2>Every run's report ({})</h2>\n<ul>", reports.len());
    for r in reports {
        let run = r
            .parent()
            .map_or(String::new(), |p| p.display().to_string());
        let _ = writeln!(
            o,
            "<li><a href=\"{}\">{}</a></li>",
            href(r),
            esc(if run.is_empty() { "report.html" } else { &run })
        );
    }
    o.push_str("</ul>\n</body>\n</html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_under_the_directory_is_linked() {
        let dir = tempfile::tempdir().unwrap();
        for run in ["runs/a-1", "runs/b <2>", "users-20/phase-1-warm"] {
            std::fs::create_dir_all(dir.path().join(run)).unwrap();
            std::fs::write(dir.path().join(run).join("report.html"), "x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("a/b/c/d/e")).unwrap();
        std::fs::write(dir.path().join("a/b/c/d/e/report.html"), "too deep").unwrap();
        write(dir.path(), "series \"x\"", "series.html").unwrap();
        let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        println!("{page}");
        assert!(page.contains("<a href=\"series.html\">series.html</a>"));
        assert!(page.contains("<title>series &quot;x&quot;</title>"));
        assert!(page.contains("(3)"), "three reports within reach");
        assert!(page.contains("<a href=\"runs/a-1/report.html\">runs/a-1</a>"));
        assert!(page.contains("<a href=\"runs/b%20%3C2%3E/report.html\">runs/b &lt;2&gt;</a>"));
        assert!(page.contains("users-20/phase-1-warm/report.html"));
        assert!(page.contains("name=\"viewport\""));
    }
}
