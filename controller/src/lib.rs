//! loadfleet's controller: plan parsing, schedule splitting, the fleet
//! service, exact histogram merging and outputs.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod atomic;
pub mod audit;
pub mod auth;
pub mod capacity;
pub mod certs;
pub mod cli;
pub mod compare;
pub mod console;
#[cfg(feature = "demo")]
pub mod demo;
pub mod duration;
pub mod exit;
pub mod experiment;
pub mod facts;
pub mod fleet;
pub mod hosts;
pub mod import;
pub mod journal;
pub mod live;
pub mod outcome;
pub mod output;
pub mod phases;
pub mod plan;
pub mod progress;
pub mod runner;
pub mod schedule;
pub mod series;
pub mod service;
pub mod stats;
pub mod summary;
pub mod thresholds;
