//! Any text as a plan: an error or a plan, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = loadfleet_controller::plan::parse("fuzz/plan.toml", text, "fuzz");
    }
});
