//! Plans people already have, turned into loadfleet plans: browser
//! recordings (HAR). Every conversion passes `loadfleet validate` before it
//! is written, and says in the plan and on stderr what needs a person.

pub mod har;
mod toml_text;
