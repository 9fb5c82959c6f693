//! loadfleet's load engine and agent.
//!
//! - [`assignment`]: an agent's share of a run, validated from the wire.
//! - [`engine`]: virtual users on per-thread runtimes, lock-free recording,
//!   interval reports with serialized histograms.
//! - [`session`]: the agent's side of the fleet protocol (dial, run, report).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod alarm;
pub mod arrivals;
pub mod assignment;
pub mod backoff;
pub mod builtin;
pub mod client;
pub mod cookies;
pub mod counters;
pub mod deadline;
pub mod encoding;
pub mod engine;
pub mod exit;
pub mod expr;
pub mod failure;
pub mod health;
pub mod histogram_codec;
pub mod journey;
pub mod observe;
pub mod policy;
pub mod program;
pub mod recorder;
pub mod rng;
pub mod session;
pub mod signal;
pub mod template;
pub mod tls;
pub mod vitals;

pub use session::{AgentError, AgentOptions, AgentTls, run_agent};
