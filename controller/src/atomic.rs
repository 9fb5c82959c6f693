//! Writing an output whole or not at all: into a temporary file beside it,
//! flushed to disk, then renamed over the name. A full disk or a crash
//! mid-write leaves the old file (or none), never a cut one that a reader
//! would take for the whole.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically.
pub fn write(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    write_with(path, |w| w.write_all(bytes.as_ref()))
}

/// Writes what `fill` writes to `path` atomically, streaming it to the
/// temporary file (an output as large as the run's interval log is never
/// whole in memory).
pub fn write_with(
    path: impl AsRef<Path>,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let path = path.as_ref();
    let tmp = temporary(path);
    let written = std::fs::File::create(&tmp).and_then(|f| {
        let mut w = std::io::BufWriter::with_capacity(64 << 10, f);
        fill(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return renamed;
    }
    // The rename itself is durable once the directory is synced; a
    // filesystem that cannot sync a directory still has the whole file.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `.NAME.tmp-PID` beside `path`.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summary.json");
        write(&p, "old").unwrap();
        write(&p, "new and longer").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new and longer");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["summary.json"]);
        // A directory that does not exist: an error, and nothing left behind.
        assert!(write(dir.path().join("no/such/file"), "x").is_err());
    }
}
