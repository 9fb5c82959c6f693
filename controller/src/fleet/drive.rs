//! Driving a started run: the owner of the fleet's state while load runs.
//! [`Run`] holds the agents, the merged data and the run's fate; its loop
//! selects over the agents' events, the interval tick, the operator's
//! interrupts and the time limit, and each calls one method.

use std::time::Duration;

use loadfleet_proto::v1::agent_message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::plan::{OnAgentLoss, Plan};
use crate::progress::{Progress, Snapshot};
use crate::service::Event;
use crate::stats::Collector;

use super::agent::{Agent, RESUME_GRACE, State};
use super::{INTERVAL, reject};
use crate::outcome::Abort;

/// How long agents told to stop at once (a second interrupt) have to say
/// Done: they stop within milliseconds; one that does not is lost.
const HARD_STOP_GRACE: Duration = Duration::from_secs(3);

/// A running agent whose newest report is older than this is named as
/// stale on the progress line (reports come every interval).
const STALE_AFTER: Duration = Duration::from_millis(2500);

/// A started run and everything that decides how it ends.
pub(super) struct Run<'a> {
    /// The run's identity, sent with every command.
    pub(super) run_id: String,
    pub(super) plan: Plan,
    /// The schedule's zero.
    pub(super) start: Instant,
    /// How long an agent's lease lasts without renewal.
    pub(super) lease: Duration,
    /// The fleet, sorted by name.
    pub(super) agents: Vec<Agent>,
    /// Everything merged so far.
    pub(super) collector: Collector,
    progress: &'a Progress,
    /// The operator asked to stop (Ctrl-C): the run ends `interrupted`.
    pub(super) stopping: bool,
    /// The controller stopped the run early, and why.
    pub(super) abort: Option<Abort>,
    /// The controller's own time limit ended the run with agents running.
    pub(super) time_limit_hit: bool,
    /// Where applied reports go, as they arrive (see [`crate::journal`]).
    journal: Option<crate::journal::Writer>,
    /// Where the merged figures are published each interval.
    pub(super) live: Option<std::sync::Arc<crate::live::Live>>,
    /// Which run of a series this is, for the dashboard's title.
    pub(super) label: Option<String>,
    /// Each agent's index in `agents` by its stream, so a report finds its
    /// agent without a walk through ten thousand of them.
    by_conn: std::collections::HashMap<crate::service::ConnId, usize>,
    /// Agents whose stream broke (a superset: those that resumed or were
    /// lost since are pruned as the loop looks).
    broken: std::collections::BTreeSet<usize>,
    /// No agent before this index is running (agents stop running during
    /// the loop, never start again), so "is any running" costs nothing.
    first_running: usize,
    /// Observers of the system under test: no load, their host's vitals.
    pub(super) observers: Vec<super::observer::Observer>,
    /// When an observed host counts as disturbed.
    pub(super) host_bounds: crate::hosts::Bounds,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        run_id: String,
        plan: Plan,
        start: Instant,
        lease: Duration,
        agents: Vec<Agent>,
        progress: &'a Progress,
        journal: Option<crate::journal::Writer>,
    ) -> Run<'a> {
        let collector = Collector::new(plan.step_names.clone(), INTERVAL)
            .with_metrics(plan.metrics.clone())
            .with_groups(&plan.groups);
        let by_conn = super::conn_index(&agents);
        Run {
            by_conn,
            broken: Default::default(),
            first_running: 0,
            run_id,
            plan,
            start,
            lease,
            agents,
            collector,
            progress,
            stopping: false,
            abort: None,
            time_limit_hit: false,
            journal,
            live: None,
            label: None,
            observers: Vec::new(),
            host_bounds: crate::hosts::Bounds::default(),
        }
    }

    /// The dashboard's view of the run now; `stale` are the running agents
    /// whose reports are late, and since when.
    pub(super) fn snapshot(&self, stale: &[(String, Duration)]) -> crate::live::Snapshot {
        let mut s = crate::live::Snapshot::of(&self.collector);
        s.title = match &self.label {
            Some(l) => format!("{} · {l}", self.plan.name),
            None => self.plan.name.clone(),
        };
        s.run_id = self.run_id.clone();
        s.state = if self.stopping || self.abort.is_some() {
            "stopping".into()
        } else {
            "running".into()
        };
        s.elapsed_s = self.start.elapsed().as_secs_f64().round();
        s.scheduled_s = self.plan.scheduled_duration().map(|d| d.as_secs_f64());
        s.agents = self
            .agents
            .iter()
            .map(|a| crate::live::dashboard::AgentRow {
                name: a.name.clone(),
                region: a.region.clone(),
                state: format!("{:?}", a.state).to_lowercase(),
                requests: self
                    .collector
                    .agents
                    .get(&a.name)
                    .map_or(0, |t| t.requests()),
                stale_s: stale
                    .iter()
                    .find(|(n, _)| *n == a.name)
                    .map(|(_, d)| (d.as_secs_f64() * 10.0).round() / 10.0),
                cpu_pct: self
                    .collector
                    .agents
                    .get(&a.name)
                    .filter(|t| t.health.intervals > 0)
                    .map(|t| t.health.last.0.round()),
                lag_ms: self
                    .collector
                    .agents
                    .get(&a.name)
                    .filter(|t| t.health.intervals > 0)
                    .map(|t| (t.health.last.1 * 10.0).round() / 10.0),
            })
            .collect();
        s.thresholds = self
            .plan
            .thresholds
            .check(&self.collector, self.start.elapsed(), false);
        s.hosts = self
            .observers
            .iter()
            .filter_map(|o| {
                let (_, v) = o.report.samples.last()?;
                Some(crate::live::dashboard::HostRow::of(&o.report.name, v))
            })
            .collect();
        s
    }

    /// The merged figures so far, as Prometheus families.
    pub(super) fn families(&self) -> Vec<crate::live::metrics::Family> {
        let count = |f: fn(&State) -> bool| self.agents.iter().filter(|a| f(&a.state)).count();
        crate::live::metrics::families(
            &self.run_id,
            &self.collector,
            crate::live::metrics::Agents {
                running: count(|s| matches!(s, State::Running | State::Ready | State::Attached)),
                finished: count(|s| *s == State::Finished),
                lost: count(|s| matches!(s, State::Lost | State::Failed)),
            },
        )
    }

    /// Runs until every agent has ended, the operator stops it at once, or
    /// the time limit passes.
    pub(super) async fn drive(
        &mut self,
        events: &mut mpsc::Receiver<Event>,
        interrupt: &CancellationToken,
        hard_interrupt: &CancellationToken,
    ) {
        let hard_deadline = self.start + self.plan.max_run() + Duration::from_secs(10);
        let mut hard_stop: Option<Instant> = None;
        let mut tick =
            tokio::time::interval_at(self.start + INTERVAL + Duration::from_millis(150), INTERVAL);
        // The run's series exist (at zero) from its start.
        if let Some(live) = &self.live {
            live.publish(&self.families());
            live.show(self.snapshot(&[]));
        }
        while self.any_running() {
            // The first moment a broken stream's grace runs out.
            let agents = &self.agents;
            self.broken
                .retain(|&i| agents[i].is_running() && agents[i].disconnected_at.is_some());
            let resume_deadline = self
                .broken
                .iter()
                .filter_map(|&i| self.agents[i].disconnected_at)
                .min()
                .map(|t| t + RESUME_GRACE + Duration::from_millis(10));
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    self.on_event(ev);
                }
                _ = tokio::time::sleep_until(resume_deadline.unwrap_or(hard_deadline)), if resume_deadline.is_some() => {
                    self.expire_silent();
                }
                _ = tick.tick() => self.on_tick(),
                _ = interrupt.cancelled(), if !self.stopping => {
                    self.stopping = true;
                    self.progress.note("stopping: users finish their current step (Ctrl-C again to stop at once)");
                    self.stop_all(true);
                }
                _ = hard_interrupt.cancelled(), if hard_stop.is_none() => {
                    // Everything stops at once; the agents' last reports
                    // and their Done (with what they abandoned) still count.
                    self.stopping = true;
                    self.stop_all(false);
                    hard_stop = Some(Instant::now() + HARD_STOP_GRACE);
                    self.progress.note("stopping at once: requests in flight are abandoned (and counted as such)");
                }
                _ = tokio::time::sleep_until(hard_stop.unwrap_or(hard_deadline)), if hard_stop.is_some() => {
                    self.progress.note("agents did not confirm the stop in time; ending without them");
                    break;
                }
                _ = tokio::time::sleep_until(hard_deadline) => {
                    self.progress.note("the run passed its time limit; stopping every agent");
                    self.time_limit_hit = true;
                    self.stop_all(false);
                    break;
                }
            }
        }
        self.finish_observers(events).await;
        if let Some(j) = &mut self.journal {
            j.flush();
        }
        self.collector.close_all();
    }

    /// The load has ended: each observer sends its last, partial sample
    /// and Done (waited for up to 3 s; what arrives meanwhile from agents
    /// counts, late).
    async fn finish_observers(&mut self, events: &mut mpsc::Receiver<Event>) {
        for o in &self.observers {
            o.stop(&self.run_id);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.observers.iter().any(|o| !o.ended) {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    for o in self.observers.iter_mut().filter(|o| !o.ended) {
                        o.ended = true;
                        o.report.note = "it did not confirm its end within 3 s: its last partial interval is missing".into();
                    }
                    break;
                }
            }
        }
    }

    /// Whether any agent is still running (amortized constant time).
    fn any_running(&mut self) -> bool {
        while self
            .agents
            .get(self.first_running)
            .is_some_and(|a| !a.is_running())
        {
            self.first_running += 1;
        }
        self.first_running < self.agents.len()
    }

    /// Tells every running agent to stop, gracefully or at once.
    pub(super) fn stop_all(&self, graceful: bool) {
        for a in self.agents.iter().filter(|a| a.is_running()) {
            a.stop(&self.run_id, graceful);
        }
    }

    /// Stops the run for `abort`, unless it is already stopping.
    fn abort(&mut self, abort: Abort) {
        if self.stopping || self.abort.is_some() {
            return;
        }
        self.stop_all(true);
        self.abort = Some(abort);
    }

    /// An agent was lost or failed: with `on_agent_loss = "abort"`, the
    /// others stop too.
    fn agent_gone(&mut self, name: String) {
        if self.plan.on_agent_loss != OnAgentLoss::Abort || self.stopping || self.abort.is_some() {
            return;
        }
        self.progress.note(&format!(
            "agent {name} is gone and on_agent_loss = \"abort\": stopping the run"
        ));
        self.abort(Abort::AgentLost { agent: name });
    }

    /// Once per interval: expire silent agents, renew leases, close the
    /// intervals everyone reported, check thresholds, show progress.
    fn on_tick(&mut self) {
        // Agents that broke their stream and did not resume it, or went
        // silent for longer than their lease, are lost.
        self.expire_silent();
        // Renew every running agent's lease (the dead-man switch),
        // acknowledging the reports received so far.
        for a in self.agents.iter().filter(|a| a.is_running()) {
            a.renew(&self.run_id, self.lease);
        }
        for o in &self.observers {
            o.renew(&self.run_id, self.lease);
        }
        self.close_reported();
        if let Some(j) = &mut self.journal {
            j.flush();
        }
        if let Some(live) = &self.live {
            live.publish(&self.families());
        }
        let t = &self.plan.thresholds;
        if t.abort_on_fail
            && !self.stopping
            && self.abort.is_none()
            && self.start.elapsed() >= t.grace
            && let Some(failed) = t
                .check(&self.collector, self.start.elapsed(), false)
                .into_iter()
                .find(|o| !o.passed)
        {
            self.progress.note(&format!(
                "threshold failed: {} ({}) observed {}; stopping the run",
                failed.rule,
                failed.scope,
                failed
                    .observed
                    .map_or_else(|| "nothing yet".to_string(), |v| format!("{v:.3}"))
            ));
            self.abort(Abort::Threshold {
                rule: failed.rule,
                scope: failed.scope,
            });
        }
        let stale: Vec<(String, Duration)> = self
            .agents
            .iter()
            .filter(|a| a.is_running())
            .filter_map(|a| {
                let since = a.last_report_at.elapsed();
                (since > STALE_AFTER).then(|| (a.name.clone(), since))
            })
            .collect();
        let closed = self.collector.newest.clone();
        // While an agent is stale, the intervals wait for it: show what the
        // others have reported since, rather than freeze on the last closed one.
        let partial = self
            .agents
            .iter()
            .filter(|a| a.is_running() && !stale.iter().any(|(n, _)| *n == a.name))
            .map(|a| a.next_seq)
            .min()
            .and_then(|n| n.checked_sub(1))
            // (Every agent still running is stale: the newest interval.)
            .or_else(|| self.collector.newest_seq())
            .filter(|&seq| !stale.is_empty() && closed.as_ref().is_none_or(|p| p.seq < seq))
            .and_then(|seq| self.collector.preview(seq));
        if let Some(live) = &self.live {
            live.show(self.snapshot(&stale));
        }
        self.progress.show(&Snapshot {
            elapsed: self.start.elapsed(),
            total: self.plan.scheduled_duration(),
            partial: partial.is_some(),
            last: partial.or(closed),
            errors_total: self.collector.total.error_count(),
            // Agents still in the run: running, or done with their part
            // (a finished agent is not missing from the last line).
            agents_running: self
                .agents
                .iter()
                .filter(|a| a.is_running() || a.state == State::Finished)
                .count(),
            agents_total: self.agents.len(),
            stale,
            no_connection: {
                // Every request so far failed to connect (no response at all).
                let t = &self.collector.total;
                (t.responses() == 0
                    && !t.errors.is_empty()
                    && t.errors
                        .keys()
                        .all(|k| matches!(k.as_str(), "connect" | "connect_timeout" | "dns")))
                .then(|| self.plan.target.base_url.clone())
            },
        });
    }

    /// Marks lost the running agents whose stream broke more than
    /// [`RESUME_GRACE`] ago, or that have been silent for longer than their
    /// lease plus a second (a link that stalls without breaking).
    fn expire_silent(&mut self) {
        let mut lost = Vec::new();
        for a in self.agents.iter_mut().filter(|a| a.is_running()) {
            let gone_at = match a.disconnected_at {
                Some(t) if t.elapsed() > RESUME_GRACE => Some(t),
                _ if a.last_heard.elapsed() > self.lease + Duration::from_secs(1) => {
                    a.note = format!("silent for {:.1} s", a.last_heard.elapsed().as_secs_f64());
                    Some(a.last_heard)
                }
                _ => None,
            };
            if let Some(t) = gone_at {
                self.progress
                    .note(&format!("agent {} was lost ({})", a.name, a.note));
                a.state = State::Lost;
                a.ended_at = Some(t.saturating_duration_since(self.start));
                lost.push(a.name.clone());
            }
        }
        for name in lost {
            self.agent_gone(name);
        }
    }

    /// Closes the intervals every running agent has reported; a lagging
    /// agent holds intervals open for at most five intervals (its later
    /// reports still count in the totals).
    fn close_reported(&mut self) {
        let reported = self
            .agents
            .iter()
            .filter(|a| a.is_running())
            .map(|a| a.next_seq)
            .min()
            .unwrap_or(u64::MAX);
        let lag_limit = self
            .collector
            .newest_seq()
            .map_or(0, |n| n.saturating_sub(5));
        self.collector.close_before(reported.max(lag_limit));
    }

    /// One event from the fleet service.
    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Attached {
                conn,
                outbound,
                hello,
                peer,
                ..
            } => {
                // An agent of this run carrying on after its stream broke
                // (the service already checked its certificate names it).
                // An agent already lost may still hand over what it
                // measured: it gets no more load (a Stop at once), but its
                // reports count, late.
                let resumed = (!hello.resume_run_id.is_empty()
                    && hello.resume_run_id == self.run_id)
                    .then(|| {
                        self.agents.iter_mut().enumerate().find(|(_, a)| {
                            a.name == hello.name && matches!(a.state, State::Running | State::Lost)
                        })
                    })
                    .flatten()
                    .map(|(i, a)| {
                        self.by_conn.remove(&a.conn);
                        self.by_conn.insert(conn, i);
                        a
                    });
                match resumed {
                    Some(a) if a.state == State::Lost => {
                        a.conn = conn;
                        a.outbound = outbound;
                        a.peer = peer;
                        a.disconnected_at = None;
                        a.last_heard = Instant::now();
                        a.renew(&self.run_id, self.lease);
                        a.stop(&self.run_id, false);
                        a.note =
                            format!("{}; it came back and handed over its reports late", a.note);
                        self.progress.note(&format!(
                            "agent {} came back after it was lost: it gets no more load, and its reports from interval {} on count late",
                            a.name, a.next_seq
                        ));
                    }
                    Some(a) => {
                        let away = a.last_heard.elapsed();
                        a.conn = conn;
                        a.outbound = outbound;
                        a.peer = peer;
                        a.disconnected_at = None;
                        a.last_heard = Instant::now();
                        a.renew(&self.run_id, self.lease);
                        if self.stopping {
                            a.stop(&self.run_id, true);
                        }
                        self.progress.note(&format!(
                            "agent {} reconnected after {:.1} s of silence; it sends again from interval {}",
                            a.name,
                            away.as_secs_f64(),
                            a.next_seq
                        ));
                    }
                    None if !hello.resume_run_id.is_empty() => {
                        tracing::info!(agent = %hello.name, run = %hello.resume_run_id, "refused a resume");
                        reject(
                            &outbound,
                            "this controller does not hold that run for this agent (it ended, or the agent was lost)",
                        );
                    }
                    None => {
                        tracing::info!(agent = %hello.name, "rejected: a run is in progress");
                        reject(&outbound, "a run is in progress; try again later");
                    }
                }
            }
            Event::Message { conn, body } if !self.by_conn.contains_key(&conn) => {
                let at_s = self.start.elapsed().as_secs_f64();
                if let Some(o) = self.observers.iter_mut().find(|o| o.conn == conn) {
                    o.on_message(&self.run_id, body, at_s);
                }
            }
            Event::Message { conn, body } => {
                if let Some(failed) = self.on_message(conn, body) {
                    self.agent_gone(failed);
                }
            }
            Event::Refused(r) => tracing::debug!(?r, "refused an agent during the run"),
            Event::Detached { conn, reason } if !self.by_conn.contains_key(&conn) => {
                let at_s = self.start.elapsed().as_secs_f64();
                if let Some(o) = self.observers.iter_mut().find(|o| o.conn == conn) {
                    if !o.ended {
                        self.progress.note(&format!("observer {} is gone ({reason}): its host is not observed for the rest of the run", o.report.name));
                    }
                    o.detached(&reason, Some(at_s));
                }
            }
            Event::Detached { conn, reason } => {
                if let Some(&i) = self.by_conn.get(&conn)
                    && let Some(a) = self.agents.get_mut(i).filter(|a| a.conn == conn)
                    && a.state == State::Running
                {
                    // Lost unless it resumes soon (see `expire_silent`).
                    tracing::info!(agent = %a.name, %reason, "stream broke; waiting for a resume");
                    a.disconnected_at = Some(Instant::now());
                    a.note = reason;
                    self.broken.insert(i);
                }
            }
        }
    }

    /// A message from an agent of the run; returns the agent's name if it
    /// just failed.
    fn on_message(
        &mut self,
        conn: crate::service::ConnId,
        body: agent_message::Body,
    ) -> Option<String> {
        let &i = self.by_conn.get(&conn)?;
        let a = self.agents.get_mut(i).filter(|a| a.conn == conn)?;
        a.last_heard = Instant::now();
        match body {
            agent_message::Body::Interval(iv) => {
                if iv.run_id != self.run_id {
                    tracing::warn!(agent = %a.name, run = %iv.run_id, "dropped an interval of another run");
                    return None;
                }
                if iv.seq < a.next_seq {
                    tracing::debug!(agent = %a.name, seq = iv.seq, "duplicate interval ignored");
                    return None;
                }
                match self.collector.apply(&a.name, &a.region, &iv) {
                    Ok(()) => {
                        if let Some(j) = &mut self.journal {
                            j.interval(&a.name, &a.region, &iv);
                        }
                    }
                    Err(e) => {
                        self.collector.dropped_reports += 1;
                        tracing::warn!("dropped a report from agent {}: {e}", a.name);
                    }
                }
                a.next_seq = iv.seq + 1;
                a.last_report_at = Instant::now();
            }
            agent_message::Body::Done(d) if d.run_id == self.run_id => {
                if let Some(j) = &mut self.journal {
                    j.done(&a.name, &a.region, &d);
                }
                // A lost agent that handed over its reports stays lost (its
                // part stopped when it was), but nothing it measured is
                // missing when every report up to its last arrived.
                if a.state != State::Lost {
                    a.state = State::Finished;
                } else if a.next_seq > d.last_seq {
                    a.returned = true;
                    self.progress.note(&format!(
                        "agent {} came back and handed over every report it made (late): all of its requests are counted",
                        a.name
                    ));
                }
                a.start_lateness = Some(Duration::from_micros(d.start_lateness_us));
                a.abandoned = d.abandoned;
                // (A lost agent's own account of its early end adds nothing
                // to its being lost.)
                if !d.cut_short.is_empty() && a.state != State::Lost {
                    self.progress
                        .note(&format!("agent {} was cut short: {}", a.name, d.cut_short));
                    a.cut_short = Some(d.cut_short);
                }
                let why = match &d.totals {
                    Some(t) => self
                        .collector
                        .apply_totals(&a.name, t)
                        .err()
                        .map(|e| e.to_string()),
                    None => Some("sent no totals: its latency percentiles are not shown".into()),
                };
                if let Some(why) = why {
                    tracing::warn!(agent = %a.name, "{why}");
                    if a.note.is_empty() {
                        a.note = why;
                    }
                }
            }
            agent_message::Body::Failed(f) => {
                self.progress
                    .note(&format!("agent {} failed: {}", a.name, f.reason));
                a.state = State::Failed;
                a.ended_at = Some(self.start.elapsed());
                a.note = f.reason;
                return Some(a.name.clone());
            }
            other => {
                tracing::warn!(agent = %a.name, message = ?other, "unexpected message during the run")
            }
        }
        None
    }
}
