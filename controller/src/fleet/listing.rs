//! `loadfleet agents`: listen for a while and list who attaches, refusing
//! each, so they go on waiting for a real controller.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::service::Event;

use super::refusals::Refusals;
use super::{FleetError, reject, start_server};
use crate::progress::{Progress, ProgressMode};

/// An agent seen by [`list_agents`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeenAgent {
    pub name: String,
    pub region: String,
    pub version: String,
    pub address: String,
    /// `mtls:NAME.agent.loadfleet`, `token` or `none`.
    pub identity: String,
    /// `waiting for a run`, the run it tried to resume, or `refused: WHY`
    /// for an attempt that did not get in.
    pub state: String,
}

/// Adds an agent that attached to the list. The same agent dials again
/// from its host (a new port each time) and replaces its entry; the same
/// name from another host is a second agent, which a run would refuse:
/// both entries say so.
fn merge_seen(seen: &mut Vec<SeenAgent>, mut agent: SeenAgent) {
    let host = |a: &str| a.rsplit_once(':').map_or(a, |(h, _)| h).to_string();
    if let Some(s) = seen
        .iter_mut()
        .find(|s| s.name == agent.name && host(&s.address) == host(&agent.address))
    {
        *s = agent;
        return;
    }
    if let Some(other) = seen.iter_mut().find(|s| s.name == agent.name) {
        let (here, there) = (host(&agent.address), host(&other.address));
        other.state = format!(
            "{}; DUPLICATE NAME: another agent named {} dials from {here}",
            other.state, other.name
        );
        agent.state = format!(
            "{}; DUPLICATE NAME: another agent named {} dials from {there} (a run takes only one)",
            agent.state, agent.name
        );
    }
    seen.push(agent);
}

/// Listens for `for_how_long` and lists the agents that attach, refusing
/// each (no run is offered), so they go on waiting for a real controller.
pub async fn list_agents(
    listen: SocketAddr,
    token: Option<String>,
    tls: Option<&crate::certs::ControllerTls>,
    for_how_long: Duration,
) -> Result<(SocketAddr, Vec<SeenAgent>), FleetError> {
    crate::auth::check_listen(listen, token.is_some(), tls.is_some())?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| FleetError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| FleetError::Listen {
        addr: listen,
        source,
    })?;
    let (mut events, stop, server) = start_server(listener, token, tls)?;
    let mut seen: Vec<SeenAgent> = Vec::new();
    let mut refusals = Refusals::default();
    let quiet = Progress::new(ProgressMode::Off);
    let until = Instant::now() + for_how_long;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Attached { hello, peer, identity, outbound, .. }) => {
                    reject(&outbound, "this controller only lists agents; no run is offered");
                    let state = if hello.observer {
                        "observer (no load): waiting for a run to observe".to_string()
                    } else if hello.resume_run_id.is_empty() {
                        "waiting for a run".to_string()
                    } else {
                        format!("resuming run {}", hello.resume_run_id)
                    };
                    let agent = SeenAgent {
                        name: hello.name,
                        region: hello.region,
                        version: hello.version,
                        address: peer,
                        identity: identity.to_string(),
                        state,
                    };
                    merge_seen(&mut seen, agent);
                }
                Some(Event::Refused(r)) => refusals.add(r, &quiet),
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    // An agent that attached as the time ran out is refused too: its stream
    // would otherwise stay open and hold the server's shutdown forever.
    while let Ok(ev) = events.try_recv() {
        if let Event::Attached { outbound, .. } = ev {
            reject(
                &outbound,
                "this controller only lists agents; no run is offered",
            );
        }
    }
    drop(events);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    // Refused attempts after the agents that got in, so a misconfigured
    // agent is visible from here too.
    for (r, n) in refusals.list() {
        seen.push(SeenAgent {
            name: r.name.clone().unwrap_or_else(|| "?".into()),
            region: "-".into(),
            version: "-".into(),
            address: r.peer.clone(),
            identity: "-".into(),
            state: if *n > 1 {
                format!("refused ({n} times): {}", r.reason)
            } else {
                format!("refused: {}", r.reason)
            },
        });
    }
    Ok((addr, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, address: &str) -> SeenAgent {
        SeenAgent {
            name: name.into(),
            region: "eu".into(),
            version: "0".into(),
            address: address.into(),
            identity: "token".into(),
            state: "waiting for a run".into(),
        }
    }

    #[test]
    fn a_second_agent_of_one_name_is_said_and_a_redial_is_not() {
        let mut list = Vec::new();
        merge_seen(&mut list, seen("a1", "10.0.0.5:40000"));
        // The same agent dialling again from a new port: one entry.
        merge_seen(&mut list, seen("a1", "10.0.0.5:40002"));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].address, "10.0.0.5:40002");
        // Another host under the same name: both entries say so.
        merge_seen(&mut list, seen("a1", "10.0.0.9:51000"));
        assert_eq!(list.len(), 2);
        assert!(
            list[0]
                .state
                .contains("DUPLICATE NAME: another agent named a1 dials from 10.0.0.9")
        );
        assert!(
            list[1]
                .state
                .contains("dials from 10.0.0.5 (a run takes only one)")
        );
    }
}
