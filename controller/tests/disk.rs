//! The disk under the run directory: too little room is refused before any
//! load is sent, and a disk that fills during the run loses nothing: the
//! outputs go whole to a fallback directory that the message names, and the
//! exit code (4) and the audit line say so. Real small filesystems (tmpfs,
//! mounted as root, as CI runs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use loadfleet_testbed::Config;

use crate::support::*;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes one file until the disk is full; returns its size.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let chunk = vec![7u8; 64 << 10];
        let mut n = 0u64;
        while let Ok(w) = f.write(&chunk) {
            if w == 0 {
                break;
            }
            n += w as u64;
        }
        n
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn plan(dir: &Path, base: &str, duration: &str) -> PathBuf {
    write_plan(
        dir,
        "disk.toml",
        &plan_toml(
            base,
            &format!("users = 2\nduration = \"{duration}\""),
            &[("a", "/a"), ("b", "/b")],
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_without_room_is_refused_before_any_load() {
    let bed = testbed(Config::default()).await;
    let work = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount("1m");
    let plan = plan(work.path(), &bed.base_url(), "3s");
    let out = disk.path().join("run");
    let exit = run(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "-q",
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    assert!(
        exit.stderr.contains("free") && exit.stderr.contains("need up to"),
        "{}",
        exit.stderr
    );
    assert_eq!(bed.stats().served(), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_during_the_run_loses_no_result() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(10),
        ..Config::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let audit = work.path().join("audit.jsonl");
    let disk = SmallDisk::mount("12m");
    let plan = plan(work.path(), &bed.base_url(), "4s");
    let out = disk.path().join("run");
    let ctl = Proc::spawn_env(
        &loadfleet(),
        &[
            "run",
            plan.to_str().unwrap(),
            "-q",
            "--out",
            out.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &[("TMPDIR", &tmp)],
    );
    load_started(&bed, 10).await;
    let filled = disk.fill();
    assert!(filled > 0, "the disk had room before the run's end");
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 4, "{}", exit.stderr);
    // Nothing cut short in the run directory.
    for name in ["summary.json", "latency.hlog", "report.html"] {
        assert!(
            !out.join(name).exists(),
            "{name} was left in the full run directory"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "left in the run directory: {leftovers:?}"
    );
    // The results went whole to the fallback the message names.
    let fallback = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("loadfleet-")
        })
        .expect("a fallback directory");
    assert!(
        exit.stderr.contains(&fallback.display().to_string()),
        "the message names {}: {}",
        fallback.display(),
        exit.stderr
    );
    let s = summary(&fallback);
    assert_eq!(
        s["total"]["requests"],
        bed.stats().served(),
        "every response is in the fallback's summary"
    );
    assert!(
        std::fs::metadata(fallback.join("latency.hlog"))
            .unwrap()
            .len()
            > 0
    );
    // The audit line does not pass this off as a clean run.
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&audit)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("results not saved")),
        "{line}"
    );
}
