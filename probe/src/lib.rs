//! xlb's health-probe engine: loxilb-compatible endpoint probes (tcp, udp,
//! http, https, ping, sctp, none) run by one fixed-rate scheduler with bounded
//! concurrency, turning results into Up/Down states and transition events that
//! the control plane maps onto the dataplane's `EndpointState`.
//!
//! Wiring it into control (not done here):
//! - `POST /config/endpoint` → [`ProbeEngine::upsert`]; `DELETE` →
//!   [`ProbeEngine::remove`] ([`ProbeError::NotFound`] → 404,
//!   [`ProbeError::InUse`] → 409); `GET /config/endpoint/all` →
//!   [`ProbeEngine::snapshot`] (`currState` from [`ProbeState::as_loxilb`];
//!   loxilb shows `minDelay`/`avgDelay`/`maxDelay` for ping entries only, as
//!   Go duration strings: [`go_duration`]).
//! - Each endpoint of a monitored rule → [`ProbeEngine::acquire`] with the
//!   key `<ip>_<type>_<port>`, [`ProbeEngine::release`] when the rule or
//!   endpoint goes; a user entry of the same name overrides the rule's spec.
//! - `endpointhoststate` → [`ProbeEngine::force`].
//! - [`ProbeEngine::subscribe`]: on every [`Transition`] rebuild the tables
//!   with Up → `EndpointState::Active`, Down → `EndpointState::Down`
//!   (endpoints without an entry stay Active, as in loxilb); on a lagged
//!   receiver rebuild from a snapshot.
//! - SCTP probes are refused with [`ProbeError::SctpUnsupported`] when the
//!   kernel has no SCTP (no `sctp` module), so a rule can fall back to ping or none.

mod engine;
mod failure;
mod fmt;
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
pub use fmt::go_duration;
pub use methods::{probe_once, sctp_supported, ProbeFailure, UDP_PROBE_PAYLOAD};
pub use spec::{
    ProbeKind, ProbeSpec, SpecError, DEFAULT_ACTIVE_RETRIES, DEFAULT_INTERVAL, DEFAULT_RETRIES,
    MAX_INTERVAL, MAX_RETRIES,
};
