//! Plans people already have, turned into loadfleet plans: browser
//! recordings (HAR) and JMeter test plans (JMX). Every conversion passes `loadfleet validate` before it
//! is written, and says in the plan and on stderr what needs a person.

pub mod har;
pub mod jmeter;
mod toml_text;
