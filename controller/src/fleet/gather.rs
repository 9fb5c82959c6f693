//! Gathering: wait until the expected agents are attached.

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::progress::Progress;
use crate::service::Event;

use super::agent::Agent;
use super::observer::Observer;
use super::refusals::Refusals;
use super::{FleetError, RunOptions, reject};

/// Waits until the expected number of agents (and observers) is attached;
/// observers attached meanwhile go to `observers`.
pub(super) async fn gather(
    opts: &RunOptions,
    events: &mut mpsc::Receiver<Event>,
    progress: &Progress,
    expected: usize,
    addr: std::net::SocketAddr,
    observers: &mut Vec<Observer>,
) -> Result<Vec<Agent>, FleetError> {
    let mut agents: Vec<Agent> = Vec::new();
    let mut refusals = Refusals::default();
    let deadline = Instant::now() + opts.wait_for_agents;
    // What a remote agent must dial, said while waiting and in the error.
    let dial = format!(
        "{}://{addr}",
        if opts.tls.is_some() { "https" } else { "http" }
    );
    let mut reminder = tokio::time::interval_at(
        Instant::now() + std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(10),
    );
    while agents.len() < expected || observers.len() < opts.expect_observers {
        tokio::select! {
            _ = reminder.tick(), if opts.expect_agents > 0 || opts.expect_observers > 0 => {
                progress.note(&format!(
                    "still waiting: {} of {expected} agent(s) and {} of {} observer(s) attached; agents dial {dial} (loadfleet-agent --controller {dial})",
                    agents.len(), observers.len(), opts.expect_observers
                ));
            }
            ev = events.recv() => match ev {
                Some(Event::Attached { conn, hello, peer, identity, outbound }) => {
                    if !hello.resume_run_id.is_empty() {
                        // Resuming a run this controller never held (its
                        // controller died and this one took the address).
                        reject(&outbound, "this controller does not hold that run");
                        continue;
                    }
                    if hello.observer {
                        if observers.iter().any(|o| o.report.name == hello.name) {
                            reject(&outbound, &format!("an observer named {} is already attached", hello.name));
                            continue;
                        }
                        progress.note(&format!(
                            "observer {} (region {}) attached from {peer}: it reports its host's vitals{} and sends no load [{}/{}]",
                            hello.name,
                            hello.region,
                            if hello.observe_processes.is_empty() { String::new() } else { format!(" and {}'s", hello.observe_processes.join(", ")) },
                            observers.len() + 1,
                            opts.expect_observers.max(observers.len() + 1)
                        ));
                        observers.push(Observer::attached(conn, hello, peer, outbound));
                        continue;
                    }
                    if agents.iter().any(|a| a.name == hello.name) {
                        let why = format!("an agent named {} is already attached", hello.name);
                        reject(&outbound, &why);
                        // Said here too, and in the error if the run never starts.
                        refusals.add(
                            crate::service::Refusal {
                                peer: peer.clone(),
                                name: Some(hello.name.clone()),
                                reason: format!("{why} (give each agent its own --name)"),
                            },
                            progress,
                        );
                        continue;
                    }
                    let local = opts.local_agents.iter().any(|l| l.name == hello.name);
                    let targets = if hello.allow_any_target && !local {
                        "; it loads any target it is told (--allow-any-target)".to_string()
                    } else if hello.allowed_targets.is_empty() {
                        String::new()
                    } else {
                        format!("; it loads only {}", hello.allowed_targets.join(","))
                    };
                    progress.note(&format!(
                        "agent {} (region {}) attached from {peer} [{}/{expected}]{targets}",
                        hello.name, hello.region, agents.len() + 1
                    ));
                    agents.push(Agent::attached(conn, hello, peer, identity, outbound));
                }
                Some(Event::Detached { conn, reason }) => {
                    if let Some(i) = agents.iter().position(|a| a.conn == conn) {
                        let a = agents.remove(i);
                        progress.note(&format!("agent {} left before the start ({reason})", a.name));
                    } else if let Some(i) = observers.iter().position(|o| o.conn == conn) {
                        let o = observers.remove(i);
                        progress.note(&format!("observer {} left before the start ({reason})", o.report.name));
                    }
                }
                Some(Event::Refused(r)) => refusals.add(r, progress),
                Some(Event::Message { .. }) | None => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                let names: Vec<String> = agents.iter().map(|a| format!("{} ({})", a.name, a.region)).collect();
                if agents.len() >= expected {
                    let names: Vec<String> = observers.iter().map(|o| o.report.name.clone()).collect();
                    return Err(FleetError::Unfit(format!(
                        "{} of {} observer(s) attached in {:.0} s{}; observers dial {dial} (loadfleet-agent --observe --controller {dial})",
                        observers.len(),
                        opts.expect_observers,
                        opts.wait_for_agents.as_secs_f64(),
                        if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
                    )));
                }
                return Err(FleetError::NotEnoughAgents {
                    expected,
                    attached: agents.len(),
                    waited: opts.wait_for_agents,
                    detail: format!(
                        "{}{}{}; agents dial {dial}",
                        if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) },
                        gone(&opts.previous_agents, &agents),
                        refusals.describe(),
                    ),
                    present: agents.iter().map(Agent::facts).collect(),
                });
            }
            _ = opts.interrupt.cancelled() => return Err(FleetError::InterruptedBeforeStart),
        }
    }
    Ok(agents)
}

/// The agents of the previous run that are not back, in words (empty when
/// all are, or there was no previous run).
fn gone(previous: &[(String, String)], attached: &[Agent]) -> String {
    let gone: Vec<String> = previous
        .iter()
        .filter(|(name, _)| !attached.iter().any(|a| &a.name == name))
        .map(|(name, region)| format!("{name} ({region})"))
        .collect();
    if gone.is_empty() {
        return String::new();
    }
    format!(
        "; not back since the previous run: {} (an agent started with --once leaves after one run: \
         start a series' agents without --once)",
        gone.join(", ")
    )
}
