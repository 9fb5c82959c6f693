//! Attempts to attach that were refused (a wrong token, a certificate that
//! names another agent, a bad Hello), kept so the operator sees them: in
//! the progress notes (once per agent and reason), in the "not enough
//! agents" error, and in `loadfleet agents`.

use crate::progress::Progress;
use crate::service::Refusal;

/// Most distinct refusals kept (an address, a claimed name, a reason).
const MAX_KEPT: usize = 100;

/// The refused attempts of one gathering, one entry per address, claimed
/// name and reason, with how often.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    seen: Vec<(Refusal, u32)>,
}

impl Refusals {
    /// Records `r`; says so the first time this address, name and reason
    /// are seen (an agent retrying every few seconds is one line).
    pub(super) fn add(&mut self, mut r: Refusal, progress: &Progress) {
        // The port changes with every dial; the host is what identifies it.
        if let Some((host, _)) = r.peer.rsplit_once(':') {
            r.peer = host.to_string();
        }
        if let Some((_, n)) = self.seen.iter_mut().find(|(s, _)| *s == r) {
            *n = n.saturating_add(1);
            return;
        }
        progress.note(&format!("refused {}: {}", who(&r), r.reason));
        if self.seen.len() < MAX_KEPT {
            self.seen.push((r, 1));
        }
    }

    /// Each refusal with how many times it happened.
    pub(super) fn list(&self) -> &[(Refusal, u32)] {
        &self.seen
    }

    /// `; refused: …` for an error message, or nothing.
    pub(super) fn describe(&self) -> String {
        if self.seen.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .seen
            .iter()
            .map(|(r, n)| {
                let times = if *n > 1 {
                    format!(" ({n} times)")
                } else {
                    String::new()
                };
                format!("{}{times}: {}", who(r), r.reason)
            })
            .collect();
        format!("; refused: {}", parts.join("; "))
    }
}

/// `agent NAME from HOST`, or `an agent from HOST` when it named none.
fn who(r: &Refusal) -> String {
    match &r.name {
        Some(name) => format!("agent {name} from {}", r.peer),
        None => format!("an agent from {}", r.peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ProgressMode;

    #[test]
    fn one_entry_per_host_name_and_reason_with_a_count() {
        let progress = Progress::new(ProgressMode::Off);
        let mut r = Refusals::default();
        let wrong = |port: u16| Refusal {
            peer: format!("10.0.0.7:{port}"),
            name: Some("a1".into()),
            reason: "missing or wrong fleet token".into(),
        };
        r.add(wrong(40001), &progress);
        r.add(wrong(40002), &progress);
        r.add(
            Refusal {
                peer: "10.0.0.8:1".into(),
                name: None,
                reason: "the first message must be Hello".into(),
            },
            &progress,
        );
        assert_eq!(r.list().len(), 2);
        assert_eq!(
            r.describe(),
            "; refused: agent a1 from 10.0.0.7 (2 times): missing or wrong fleet token; \
             an agent from 10.0.0.8: the first message must be Hello"
        );
    }
}
