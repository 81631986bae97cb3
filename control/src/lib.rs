//! xlb's control plane: the loxilb-compatible REST API, config files, the
//! operator CLI's client side, and the daemon that ties them to the dataplane.
//!
//! Data flow: a request (or a config-file entry) is parsed into the wire types
//! of [`model`], checked by [`rules`] into typed config, applied to
//! [`state::ControlState`], which builds one new table snapshot and publishes it
//! to the dataplane (RCU). Statistics flow back through [`env::DataplaneView`].
#![deny(unsafe_code)]

pub mod afxdp;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod env;
pub mod error;
pub mod health;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod rules;
pub mod state;
pub mod sysinfo;
pub mod tls;
