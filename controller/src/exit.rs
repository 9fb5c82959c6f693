//! The process exit codes, and where outcomes become them. Library
//! functions return typed outcomes ([`RunOutcome`], a capacity [`Report`],
//! a [`crate::series::Series`], whose `exit` is the worst of its runs');
//! only the command line turns them into the process's code.

use std::process::ExitCode;

use crate::capacity::Report;
use crate::outcome::{FleetError, RunStatus};
use crate::runner::RunOutcome;

/// How a `loadfleet` command ended. Ordered from best to worst, so the
/// worst of several runs is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: the run completed without errors.
    Ok,
    /// 1: the run completed, but some requests failed, a threshold failed,
    /// an agent was lost, or it was interrupted; for `capacity`, no load
    /// met every SLO.
    Errors,
    /// 2: the plan or the command line is wrong; nothing was sent.
    Usage,
    /// 3: the fleet failed (agents never attached, all agents lost), or a
    /// report, comparison or search table could not be written.
    Fleet,
    /// 4: the run happened but its results could not be written to its run
    /// directory (the message says where they went instead, if anywhere).
    Unsaved,
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Errors => 1,
            Exit::Usage => 2,
            Exit::Fleet => 3,
            Exit::Unsaved => 4,
        }
    }

    /// How a run's status reads as an exit code.
    pub fn of_status(status: RunStatus) -> Exit {
        match status {
            RunStatus::Completed => Exit::Ok,
            RunStatus::CompletedWithErrors
            | RunStatus::ThresholdsFailed
            | RunStatus::Degraded
            | RunStatus::Interrupted
            | RunStatus::Truncated
            | RunStatus::Incomplete => Exit::Errors,
        }
    }

    /// How a run that could not happen reads as an exit code.
    pub fn of_fleet_error(e: &FleetError) -> Exit {
        match e {
            FleetError::Insecure { .. } => Exit::Usage,
            _ => Exit::Fleet,
        }
    }

    /// One run: its status, or why it did not run or keep its results.
    pub fn of_run(outcome: &RunOutcome) -> Exit {
        match outcome {
            RunOutcome::Ran {
                written: Err(_), ..
            } => Exit::Unsaved,
            RunOutcome::Ran { summary, .. } => Exit::of_status(summary.status),
            RunOutcome::NoRunDirectory { .. } => Exit::Usage,
            RunOutcome::NotRun(e) => Exit::of_fleet_error(e),
        }
    }

    /// A capacity search: 0 when some load met every SLO, else 1.
    pub fn of_capacity(report: &Report) -> Exit {
        if report.capacity.is_some() {
            Exit::Ok
        } else {
            Exit::Errors
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

impl serde::Serialize for Exit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_numbers_and_order_by_severity() {
        let all = [
            Exit::Ok,
            Exit::Errors,
            Exit::Usage,
            Exit::Fleet,
            Exit::Unsaved,
        ];
        assert_eq!(all.map(Exit::code), [0, 1, 2, 3, 4]);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Exit::of_status(RunStatus::Completed), Exit::Ok);
        for s in [
            RunStatus::CompletedWithErrors,
            RunStatus::ThresholdsFailed,
            RunStatus::Degraded,
            RunStatus::Interrupted,
            RunStatus::Truncated,
        ] {
            assert_eq!(Exit::of_status(s), Exit::Errors, "{s:?}");
        }
    }
}
