//! Writing to the terminal without panicking: a reader that has gone away
//! (`loadfleet run plan.toml | head`) is not an error, and `println!` would
//! panic on it.

use std::io::Write;

/// Prints a line to stdout; a closed pipe is not an error.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
