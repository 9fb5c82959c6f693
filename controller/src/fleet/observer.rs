//! The controller's view of an observer (`loadfleet-agent --observe`): an
//! attachment that is dealt no load and reports its host's vitals while
//! the run goes on. It is kept apart from the load agents, so it is never
//! counted, dealt, waited on for the run's end, or merged as one.

use std::time::Duration;

use loadfleet_proto::v1::{self, agent_message, controller_message};

use crate::hosts::HostReport;
use crate::service::{ConnId, Outbound};

use super::micros;

pub(super) struct Observer {
    pub(super) conn: ConnId,
    pub(super) outbound: Outbound,
    pub(super) report: HostReport,
    pub(super) next_seq: u64,
    /// It said Done, or its stream ended.
    pub(super) ended: bool,
}

impl Observer {
    pub(super) fn attached(
        conn: ConnId,
        hello: v1::Hello,
        peer: String,
        outbound: Outbound,
    ) -> Observer {
        Observer {
            conn,
            outbound,
            report: HostReport {
                name: hello.name,
                region: hello.region,
                address: peer,
                processes: hello.observe_processes,
                ..HostReport::default()
            },
            next_seq: 0,
            ended: false,
        }
    }

    fn send(&self, body: controller_message::Body) -> bool {
        self.outbound
            .try_send(Box::new(v1::ControllerMessage { body: Some(body) }))
            .is_ok()
    }

    /// Starts its sampling for `run_id`; false when it is gone.
    pub(super) fn observe(&mut self, run_id: &str, lease: Duration, max_run: Duration) -> bool {
        let sent = self.send(controller_message::Body::Observe(v1::Observe {
            run_id: run_id.to_string(),
            interval_us: micros(super::INTERVAL),
            lease_us: micros(lease),
            max_run_us: micros(max_run),
        }));
        if !sent {
            self.ended = true;
            self.report.note = "it left before the load started".into();
        }
        sent
    }

    pub(super) fn renew(&self, run_id: &str, lease: Duration) {
        if !self.ended {
            self.send(controller_message::Body::Lease(v1::Lease {
                run_id: run_id.to_string(),
                valid_for_us: micros(lease),
                next_seq: self.next_seq,
            }));
        }
    }

    pub(super) fn stop(&self, run_id: &str) {
        if !self.ended {
            self.send(controller_message::Body::Stop(v1::Stop {
                run_id: run_id.to_string(),
                graceful: false,
            }));
        }
    }

    /// One message from it during the run; `at_s` is the time since the
    /// run's start.
    pub(super) fn on_message(&mut self, run_id: &str, body: agent_message::Body, at_s: f64) {
        match body {
            agent_message::Body::Interval(iv) if iv.run_id == run_id && iv.seq >= self.next_seq => {
                if let Some(h) = iv.host {
                    self.report.samples.push((at_s, h));
                }
                self.next_seq = iv.seq + 1;
            }
            agent_message::Body::Done(d) if d.run_id == run_id => self.ended = true,
            other => tracing::debug!(observer = %self.report.name, message = ?other, "ignored"),
        }
    }

    /// Its stream ended; `at_s` from the run's start.
    pub(super) fn detached(&mut self, reason: &str, at_s: Option<f64>) {
        if !self.ended {
            self.ended = true;
            self.report.note = match at_s {
                Some(t) => format!("its stream ended at {t:.1} s: {reason}"),
                None => format!("it left before the load started: {reason}"),
            };
        }
    }
}
