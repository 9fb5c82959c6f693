//! Farewell: what a driven run measured, how it ended, and how each agent's
//! part of it ended.

use std::net::SocketAddr;

use super::agent::State;
use super::drive::Run;
use super::{AgentEnd, AgentReport, FleetError, RunResult, RunStatus};
use crate::outcome::Abort;

impl Run<'_> {
    /// The run's result; an error when every agent was lost before any
    /// request completed.
    pub(super) fn finish(
        self,
        listen: SocketAddr,
        started_at: time::OffsetDateTime,
        seed: u64,
    ) -> Result<RunResult, FleetError> {
        let collector = self.collector;
        if self.agents.iter().all(|a| a.state != State::Finished) && collector.total.requests() == 0
        {
            return Err(FleetError::AllLost);
        }
        let duration = if collector.elapsed.is_zero() {
            self.start.elapsed()
        } else {
            collector.elapsed
        };
        let degraded = self.agents.iter().any(|a| a.state != State::Finished);
        let thresholds = self.plan.thresholds.check(&collector, duration, true);
        let threshold_abort = matches!(self.abort, Some(Abort::Threshold { .. }));
        let mut cut_short: Vec<String> = self
            .agents
            .iter()
            .filter_map(|a| {
                a.cut_short
                    .as_ref()
                    .map(|why| format!("agent {}: {why}", a.name))
            })
            .collect();
        if self.time_limit_hit {
            cut_short.push(format!(
                "the controller's time limit ({:.1} s) passed with agents still running",
                (self.plan.max_run() + std::time::Duration::from_secs(10)).as_secs_f64()
            ));
        }
        let status = if self.stopping {
            RunStatus::Interrupted
        } else if !cut_short.is_empty() {
            RunStatus::Truncated
        } else if threshold_abort || thresholds.iter().any(|o| !o.passed) {
            RunStatus::ThresholdsFailed
        } else if degraded {
            RunStatus::Degraded
        } else if collector.total.error_count() > 0 {
            RunStatus::CompletedWithErrors
        } else {
            RunStatus::Completed
        };
        let interval = collector.interval.as_secs_f64();
        let measured = duration.as_secs_f64();
        let agents = self
            .agents
            .into_iter()
            .map(|a| AgentReport {
                reported_until_s: (a.next_seq > 0)
                    .then(|| (a.next_seq as f64 * interval).min(measured)),
                end: match a.state {
                    State::Finished => AgentEnd::Finished,
                    State::Failed => AgentEnd::Failed,
                    _ => AgentEnd::Lost,
                },
                name: a.name,
                region: a.region,
                peer: a.peer,
                identity: a.identity.to_string(),
                targets: a.targets,
                timing: a.timing,
                users: a.users,
                ended_at_s: a.ended_at.map(|d| d.as_secs_f64()),
                note: a.note,
                clock_rtt: a.clock.best.map(|(rtt, _)| rtt),
                clock_offset_us: a.clock.wall_offset_us,
                abandoned: a.abandoned,
                returned: a.returned,
                start_lateness: a.start_lateness,
                load_share: a.load_share,
            })
            .collect();
        let hosts = self.observers.into_iter().map(|o| o.report).collect();
        Ok(RunResult {
            hosts,
            host_bounds: self.host_bounds,
            run_id: self.run_id,
            facts: crate::facts::RunFacts::of(&self.plan),
            listen,
            started_at,
            duration,
            collector,
            agents,
            status,
            thresholds,
            aborted_by: self.abort,
            cut_short,
            seed,
        })
    }
}
