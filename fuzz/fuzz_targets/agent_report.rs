//! Any bytes from an agent, as the controller receives them: a protobuf
//! message, and when it is an interval report, its histograms checked,
//! decoded and merged. Refused or merged, never a panic or a runaway
//! allocation.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use loadfleet_proto::v1::{self, agent_message};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = v1::AgentMessage::decode(data) else {
        return;
    };
    if let Some(agent_message::Body::Interval(iv)) = m.body {
        let mut c = loadfleet_controller::stats::Collector::new(
            vec!["a".into(), "b".into()],
            Duration::from_secs(1),
        );
        let _ = c.apply("fuzz", "region", &iv);
        let _ = c.apply("fuzz", "region", &iv);
        c.close_all();
    }
});
