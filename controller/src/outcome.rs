//! What a run comes to: how it ended, each agent's part, what was
//! measured, and why a run could not happen. Read by the fleet that makes
//! these, and by the summary, the outputs, the journal and the audit log,
//! none of which needs the network code that produced them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::stats::Collector;

/// What is known as load is about to start.
#[derive(Debug, Clone)]
pub struct StartNote {
    pub run_id: String,
    pub started_at: time::OffsetDateTime,
    pub agents: Vec<AgentFacts>,
}

/// Who an agent of a run is, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    pub name: String,
    pub region: String,
    /// Where it connected from.
    pub address: String,
    /// How it proved who it is, as [`crate::auth::Identity`] reads:
    /// `mtls:NAME.agent.loadfleet`, `token` or `none`.
    pub identity: String,
    /// What it will load, as it said: its `--allow-target` list, `any` or
    /// `not reported`.
    pub targets: String,
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "refusing to listen on {addr} without authentication: anyone who can reach it could aim this fleet. \
         Use mTLS (`loadfleet certs init DIR`, then --tls-dir DIR), or set a shared token on the controller and every agent, \
         e.g. `export LOADFLEET_TOKEN=$(openssl rand -hex 32)` (or --token-file), or listen on 127.0.0.1"
    )]
    Insecure { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("expected {expected} agent(s), {attached} attached after {waited:?}{detail}")]
    NotEnoughAgents {
        expected: usize,
        attached: usize,
        waited: Duration,
        /// The attached agents' names, those of the previous run (of a
        /// series) that did not come back, the attempts refused meanwhile
        /// with their reasons, and the URL agents must dial.
        detail: String,
        /// The agents that did attach (for the audit line).
        present: Vec<AgentFacts>,
    },
    #[error("agent {agent} cannot run the plan: {reason}")]
    AgentFailed {
        agent: String,
        reason: String,
        /// Every agent attached for the run, the refusing one included.
        attached: Vec<AgentFacts>,
    },
    #[error("agent {agent} left before the run started ({reason})")]
    AgentLeft {
        agent: String,
        reason: String,
        attached: Vec<AgentFacts>,
    },
    #[error("agents were not ready within {0:?}")]
    NotReady(Duration),
    #[error("interrupted before the run started")]
    InterruptedBeforeStart,
    #[error("every agent was lost; nothing was measured")]
    AllLost,
    #[error("the plan does not fit this fleet: {0}")]
    Unfit(String),
}

impl FleetError {
    /// The agents that had attached for the run that did not happen.
    pub fn attached(&self) -> &[AgentFacts] {
        match self {
            FleetError::AgentFailed { attached, .. } | FleetError::AgentLeft { attached, .. } => {
                attached
            }
            FleetError::NotEnoughAgents { present, .. } => present,
            _ => &[],
        }
    }

    /// The agent that refused the run (`refused`) or left before it (`left`).
    pub fn stopped_by(&self) -> Option<(&str, &'static str)> {
        match self {
            FleetError::AgentFailed { agent, .. } => Some((agent, "refused")),
            FleetError::AgentLeft { agent, .. } => Some((agent, "left")),
            _ => None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    CompletedWithErrors,
    /// A threshold failed (the run may have been stopped early by it).
    ThresholdsFailed,
    /// An agent was lost or failed during the run: its part is partial.
    Degraded,
    Interrupted,
    /// A time limit ended users before they finished: fewer iterations (or
    /// less time) than the plan asked for.
    Truncated,
    /// Rebuilt from the run's journal after the controller stopped before
    /// the end (killed, crashed): it covers what was measured until then.
    Incomplete,
}

/// How one agent's part of the run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEnd {
    Finished,
    Lost,
    Failed,
    /// The controller stopped before it learnt how (a rebuilt run).
    Unknown,
}

/// One agent of the run.
#[derive(Debug, Clone)]
pub struct AgentReport {
    pub name: String,
    pub region: String,
    pub peer: String,
    /// How it proved who it is, as [`crate::auth::Identity`] reads:
    /// `mtls:NAME.agent.loadfleet`, `token` or `none`.
    pub identity: String,
    pub users: usize,
    pub end: AgentEnd,
    /// Seconds from the start at which it was lost or failed.
    pub ended_at_s: Option<f64>,
    pub note: String,
    /// Shortest round trip of the clock pings.
    pub clock_rtt: Option<Duration>,
    /// The agent's wall clock minus the controller's, microseconds
    /// (measured with the fastest ping; `None` from an older agent).
    pub clock_offset_us: Option<i64>,
    /// Requests it left waiting for a response when it stopped at once.
    pub abandoned: u64,
    /// Declared lost, it came back and handed over every report it made.
    pub returned: bool,
    /// How late the agent began its schedule by its own clock (reported with Done).
    pub start_lateness: Option<Duration>,
    /// The agent's planned share of the load (0..1).
    pub load_share: f64,
    /// What it will load, as it said (see [`AgentFacts::targets`]).
    pub targets: String,
    /// How its open-model generator waits for arrivals, as it said (empty
    /// when it did not).
    pub timing: String,
    /// Seconds from the start covered by the reports received from it
    /// (the end of its newest interval); `None` when none arrived.
    pub reported_until_s: Option<f64>,
}

/// What a run measured.
#[derive(Debug)]
pub struct RunResult {
    pub run_id: String,
    /// What the summary needs of the plan.
    pub facts: crate::facts::RunFacts,
    pub listen: SocketAddr,
    pub started_at: time::OffsetDateTime,
    pub duration: Duration,
    pub collector: Collector,
    pub agents: Vec<AgentReport>,
    pub status: RunStatus,
    /// Every threshold rule's final outcome.
    pub thresholds: Vec<crate::thresholds::Outcome>,
    /// Why the controller stopped the run early, if it did.
    pub aborted_by: Option<Abort>,
    /// Why a time limit ended users before they finished (one line per
    /// agent, or the controller's own); empty when none did.
    pub cut_short: Vec<String>,
    /// The seed of every user's random numbers (the plan's, or a fresh one).
    pub seed: u64,
    /// The observed hosts (`loadfleet-agent --observe`), with their samples.
    pub hosts: Vec<crate::hosts::HostReport>,
    /// When an observed host counts as disturbed.
    pub host_bounds: crate::hosts::Bounds,
}

/// Why a run was stopped before its schedule ended, by the controller.
#[derive(Debug, Clone, PartialEq)]
pub enum Abort {
    /// A threshold with `abort_on_fail` failed.
    Threshold { rule: String, scope: String },
    /// An agent was lost or failed and the plan says `on_agent_loss = "abort"`.
    AgentLost { agent: String },
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abort::Threshold { rule, scope } => write!(f, "{rule} ({scope})"),
            Abort::AgentLost { agent } => {
                write!(f, "agent {agent} was lost (on_agent_loss = abort)")
            }
        }
    }
}
