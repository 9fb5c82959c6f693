//! `loadfleet-agent`'s exit codes, and how its outcomes become them.

use std::process::ExitCode;

use crate::session::AgentError;

/// How `loadfleet-agent` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: stopped when asked (a signal, or after its run with `--once`);
    /// for `--check`, everything checked is well.
    Ok,
    /// 1: `--check` only: the controller cannot be reached.
    Unreachable,
    /// 2: the configuration is wrong (flags, files, certificates, the
    /// controller's URL, or a token or certificate the controller refuses);
    /// nothing was sent.
    Config,
    /// 3: the agent stopped for another reason: its controller rejected it,
    /// it refused an assignment with `--once`, or it could not start.
    Stopped,
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Unreachable => 1,
            Exit::Config => 2,
            Exit::Stopped => 3,
        }
    }

    /// How an agent's run (`run_agent`) ended.
    pub fn of_run(outcome: &Result<(), AgentError>) -> Exit {
        match outcome {
            Ok(()) => Exit::Ok,
            Err(
                AgentError::BadControllerUrl(_) | AgentError::Tls(_) | AgentError::NotAccepted(_),
            ) => Exit::Config,
            Err(_) => Exit::Stopped,
        }
    }

    /// How `--check` ended.
    pub fn of_check<T>(outcome: &Result<T, AgentError>) -> Exit {
        match outcome {
            Ok(_) => Exit::Ok,
            Err(AgentError::Unreachable(_)) => Exit::Unreachable,
            Err(_) => Exit::Config,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_documented_codes() {
        let all = [Exit::Ok, Exit::Unreachable, Exit::Config, Exit::Stopped];
        assert_eq!(all.map(Exit::code), [0, 1, 2, 3]);
        assert_eq!(Exit::of_run(&Ok(())), Exit::Ok);
        assert_eq!(
            Exit::of_run(&Err(AgentError::Tls("x".into()))),
            Exit::Config
        );
        assert_eq!(
            Exit::of_run(&Err(AgentError::Rejected("x".into()))),
            Exit::Stopped
        );
        assert_eq!(
            Exit::of_check(&Err::<(), _>(AgentError::Unreachable("x".into()))),
            Exit::Unreachable
        );
        assert_eq!(
            Exit::of_check(&Err::<(), _>(AgentError::BadControllerUrl("x".into()))),
            Exit::Config
        );
    }
}
