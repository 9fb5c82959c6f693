//! Writing to the terminal without panicking: a reader that has gone away
//! (`loadfleet run plan.toml | head`) is not an error, and `println!` would
//! panic on it. Tables in loadfleet's style and byte counts for people
//! live here too, below every module that prints.

use std::io::Write;

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

/// Prints a line to stdout; a closed pipe is not an error.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A byte count for people: B, kB, MB, GB (powers of 1,000).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.2} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.2} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n:.0} B"),
    }
}

/// A table in loadfleet's style that fits the terminal it is printed to
/// (columns wrap to its width; written to a file or a pipe, it keeps its
/// natural width).
pub fn new_table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t
}
