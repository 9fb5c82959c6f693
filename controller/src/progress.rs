//! The live progress line: elapsed/total, active users, req/s, errors, p95 of
//! the last interval, agents attached. A bar on a terminal, plain lines
//! otherwise (CI logs), or nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::stats::IntervalPoint;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live line on a terminal, plain lines elsewhere.
    Auto,
    /// Nothing.
    Off,
}

/// What the progress line shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub total: Option<Duration>,
    pub last: Option<IntervalPoint>,
    /// `last` is an interval still open: it holds only the reports of the
    /// agents that are not stale.
    pub partial: bool,
    pub errors_total: u64,
    /// Agents still in the run: running, or finished with their part.
    pub agents_running: usize,
    pub agents_total: usize,
    /// Running agents whose reports are late, and since when their newest
    /// one arrived: the figures wait for them (at most five intervals).
    pub stale: Vec<(String, Duration)>,
    /// Set while every request so far failed to connect: the target's
    /// address, for "is it running?".
    pub no_connection: Option<String>,
}

impl Snapshot {
    /// The text of the progress line.
    pub fn line(&self) -> String {
        let elapsed = format!("{:.0}s", self.elapsed.as_secs_f64());
        let total = self
            .total
            .map_or_else(String::new, |t| format!("/{:.0}s", t.as_secs_f64()));
        let (users, rps, p95) = match &self.last {
            Some(p) => (
                format!(
                    "{:.0} (peak {})",
                    p.active_mean,
                    p.active_peak.max(p.active_users)
                ),
                format!("{:.1}", p.requests as f64 / p.length_s.max(0.001)),
                p.latency_ms
                    .map_or_else(|| "-".to_string(), |l| format!("{:.1} ms", l.p95)),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let mut line = format!(
            "{elapsed}{total}  users {users}  {rps} req/s  errors {}  p95 {p95} (last 1s)  agents {}/{}",
            self.errors_total, self.agents_running, self.agents_total
        );
        if let Some(target) = &self.no_connection {
            line.push_str(&format!(
                "  no connection to {target} has opened yet: is the target running?"
            ));
        }
        if !self.stale.is_empty() {
            let names: Vec<String> = self
                .stale
                .iter()
                .map(|(name, since)| format!("{name} ({:.1} s)", since.as_secs_f64()))
                .collect();
            line.push_str(&format!(
                "  STALE: no report from {}{}",
                names.join(", "),
                if self.partial {
                    "; the figures are the others' alone"
                } else {
                    ""
                }
            ));
        }
        line
    }
}

/// Draws snapshots.
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let bar = (mode == ProgressMode::Auto && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Progress { mode, bar }
    }

    pub fn show(&self, snap: &Snapshot) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.set_message(snap.line()),
            (None, ProgressMode::Auto) => eprintln!("{}", snap.line()),
            (None, ProgressMode::Off) => {}
        }
    }

    /// Prints a message above the progress line.
    pub fn note(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(msg),
            (None, ProgressMode::Auto) => eprintln!("{msg}"),
            (None, ProgressMode::Off) => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_agent_is_named_with_how_long() {
        let mut snap = Snapshot {
            elapsed: Duration::from_secs(5),
            total: Some(Duration::from_secs(9)),
            agents_running: 2,
            agents_total: 2,
            ..Snapshot::default()
        };
        assert!(!snap.line().contains("STALE"), "{}", snap.line());
        snap.no_connection = Some("http://127.0.0.1:9".into());
        assert!(snap.line().contains(
            "no connection to http://127.0.0.1:9 has opened yet: is the target running?"
        ));
        snap.no_connection = None;
        snap.stale = vec![("a2".into(), Duration::from_millis(3100))];
        snap.partial = true;
        assert!(
            snap.line().ends_with(
                "agents 2/2  STALE: no report from a2 (3.1 s); the figures are the others' alone"
            ),
            "{}",
            snap.line()
        );
    }
}
