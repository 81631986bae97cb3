//! xlb's control plane: the controller that owns the control state, its
//! clients (the loxilb-compatible REST API, health probing, config files),
//! the dataplane behind it, and the operator CLI's client side.
//!
//! Data flow: a request (or a config-file entry) is parsed into the wire
//! types of [`model`], checked by [`rules`] into typed config, and sent to
//! the [`controller`] as a typed command. The controller applies it to its
//! state, which builds one new table snapshot, and publishes that through
//! the [`dataplane`]'s publisher: the workers' tables (RCU) and the XDP
//! steering maps move together. Statistics flow back through
//! [`dataplane::DataplaneView`].
//!
//! Modules: [`api`] (HTTP routing and handlers), [`controller`] (the state
//! and its commands), [`dataplane`] (what control drives: AF_XDP or none),
//! [`health`] (probing → results to the controller), [`config`]
//! (lbconfig.txt / EPconfig.txt), [`daemon`] (`xlb run`'s wiring),
//! [`sync`] (connection-state sync between members), [`ready`] (what
//! `/readyz` judges) and [`systemd`] (readiness to the service manager),
//! [`metrics`], [`cli`] (the client verbs), [`top`] (`xlb top`),
//! [`logging`], [`version`], [`model`] / [`rules`] /
//! [`error`] (loxilb's wire types, their checks, their errors).

// The OpenAPI document is one `json!` literal, deeper than the default limit.
#![recursion_limit = "256"]

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod error;
pub mod ha;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod ready;
pub mod rules;
pub mod sync;
pub mod sysinfo;
pub mod systemd;
pub mod tls;
pub mod top;
pub mod version;
