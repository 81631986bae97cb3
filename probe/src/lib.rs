//! xlb's health-probe engine: loxilb-compatible endpoint probes (tcp, udp,
//! http, https, ping, sctp, none) run by one fixed-rate scheduler with bounded
//! concurrency, turning results into Up/Down states and transition events that
//! the control plane maps onto the dataplane's `EndpointState`.
#![deny(unsafe_code)]

mod engine;
mod icmp;
mod methods;
mod spec;
mod sys;
mod tls;

#[cfg(test)]
mod testutil;

pub use engine::{
    Cause, EngineConfig, EngineStats, ProbeEngine, ProbeError, ProbeState, ProbeStatus, Transition,
};
pub use methods::{probe_once, sctp_supported, ProbeFailure, UDP_PROBE_PAYLOAD};
pub use spec::{
    ProbeKind, ProbeSpec, SpecError, DEFAULT_INTERVAL, DEFAULT_RETRIES, MAX_INTERVAL, MAX_RETRIES,
};
