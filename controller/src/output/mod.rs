//! What a run leaves behind: the terminal table, `summary.json`,
//! `latency.hlog` and `report.html`, all from one [`Summary`] (see [`crate::summary`]).

pub mod exports;
pub mod hlog;
pub mod index;
pub mod report;
pub mod svg;
pub mod table;

use std::path::{Path, PathBuf};

use crate::atomic;
use crate::outcome::RunResult;
use crate::summary::Summary;

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub dir: PathBuf,
    pub summary: PathBuf,
    pub hlog: PathBuf,
    pub report: PathBuf,
    pub hgrm: PathBuf,
    pub csv: PathBuf,
}

/// Writes `summary.json`, `latency.hlog`, `report.html`, `latency.hgrm` and
/// `requests.csv` into `dir`, each atomically.
pub fn write_run_dir(r: &RunResult, summary: &Summary, dir: &Path) -> std::io::Result<RunFiles> {
    std::fs::create_dir_all(dir)?;
    let files = RunFiles {
        dir: dir.to_path_buf(),
        summary: dir.join("summary.json"),
        hlog: dir.join("latency.hlog"),
        report: dir.join("report.html"),
        hgrm: dir.join("latency.hgrm"),
        csv: dir.join("requests.csv"),
    };
    let json = serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?;
    atomic::write(&files.summary, json + "\n")?;
    atomic::write_with(&files.hlog, |mut w| hlog::write(&mut w, r))?;
    atomic::write(
        &files.report,
        report::render(summary).map_err(std::io::Error::other)?,
    )?;
    atomic::write(&files.hgrm, exports::hgrm(&r.collector.total.all(), 1000.0))?;
    atomic::write_with(&files.csv, |w| exports::requests_csv(w, &r.collector))?;
    Ok(files)
}
