//! The controller's integration tests, in one binary (one link step, one
//! copy of the helpers): real `loadfleet` and `loadfleet-agent` processes,
//! real servers on loopback, network namespaces where hosts must differ.
//! Each module is one area; `support` holds what they share.

mod support;

mod abuse_limits;
mod agent_lifecycle;
mod agent_loss;
mod auth;
mod bad_input;
mod capacity;
mod compare;
mod crash;
mod dashboard;
mod disk;
mod examples;
mod experiment;
mod exports;
mod failures;
mod fleet;
mod fleet_memory;
mod flow;
mod generator_health;
mod hostile_bytes;
mod house;
mod http2;
mod http_defaults;
mod https;
mod import_flow;
mod import_har;
mod import_jmeter;
mod journey;
mod keepalive;
mod limits;
mod merge;
mod metrics;
mod mtls;
mod netns;
mod open_model;
mod plan;
mod plan_size;
mod prometheus;
mod report_html;
mod report_layout;
mod request_phases;
mod rogue_agent;
mod stages;
mod start_sync;
mod sweep;
mod thresholds;
mod upload;
