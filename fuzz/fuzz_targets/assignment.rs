//! Any bytes from a controller, as an agent receives them: an Assign that
//! the agent validates (URLs, templates, regexes, selectors, data, the open
//! model) before it would run anything. Refused or accepted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loadfleet_proto::v1;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = v1::Assign::decode(data) {
        let _ = loadfleet_agent::assignment::Assignment::try_from(a);
    }
});
