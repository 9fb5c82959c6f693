//! Any bytes from an agent, as the controller receives them: a protobuf
//! message, and when it is an interval report, its histograms checked,
//! decoded and merged; when it is a Done, its totals checked against the
//! reports received and decoded. Refused or merged, never a panic or a
//! runaway allocation.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use loadfleet_proto::v1::{self, agent_message};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = v1::AgentMessage::decode(data) else {
        return;
    };
    let mut c = loadfleet_controller::stats::Collector::new(
        vec!["a".into(), "b".into()],
        Duration::from_secs(1),
    );
    match m.body {
        Some(agent_message::Body::Interval(iv)) => {
            let _ = c.apply("fuzz", "region", &iv);
            let _ = c.apply("fuzz", "region", &iv);
            c.close_all();
            // An observer's sample: summed, judged and described.
            if let Some(h) = &iv.host {
                let report = loadfleet_controller::hosts::HostReport {
                    name: "fuzz".into(),
                    processes: h.processes.iter().map(|p| p.name.clone()).collect(),
                    samples: vec![(1.0, h.clone()), (2.0, h.clone())],
                    ..Default::default()
                };
                let s = loadfleet_controller::hosts::HostSummary::of(
                    &report,
                    2.0,
                    loadfleet_controller::hosts::Bounds::default(),
                );
                let _ = s.describe();
            }
        }
        Some(agent_message::Body::Done(done)) => {
            if let Some(totals) = &done.totals {
                // Against no reports, then against one report of the same
                // histogram (which then may agree).
                let _ = c.apply_totals("fuzz", totals);
                let iv = v1::Interval {
                    steps: vec![v1::StepInterval {
                        metrics: Vec::new(),
                        http2_responses: 0,
                        loop_bound_hits: 0,
                        step: 0,
                        histogram: totals.histogram.clone(),
                        count: totals.count,
                        errors: Vec::new(),
                        uncorrected: totals.uncorrected.clone(),
                        failed: Vec::new(),
                        exchanges: 0,
                        retries: 0,
                        bytes_received: 0,
                        bytes_decoded: 0,
                    }],
                    ..Default::default()
                };
                if c.apply("fuzz", "region", &iv).is_ok() {
                    let _ = c.apply_totals("fuzz", totals);
                }
                c.close_all();
            }
        }
        _ => {}
    }
});
