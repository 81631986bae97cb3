//! The Rust side of the XDP steering program (`bpf/xlb.bpf.c`): loading the
//! compiled object ([`loader`]), the program attached to an interface
//! ([`program`]) and the claim on that interface that keeps a second xlb
//! off it ([`owner`]), the steering maps it reads and their sync from a
//! tables snapshot ([`maps`]), and its per-action counters ([`stats`]).
//!
//! Every layout and constant here mirrors `bpf/xlb_consts.h` and
//! `bpf/xlb_structs.h`; `io/tests/c_headers.rs` fails when the two disagree.
//!
//! This module holds what all of them share (the attach mode and the error
//! type), so that the files below import it and never each other in a circle.

pub mod loader;
pub mod maps;
pub mod owner;
pub mod program;
pub mod stats;

use libbpf_rs::XdpFlags;

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// Driver mode (`XDP_FLAGS_DRV_MODE`); falls back to generic with a warning
    /// if the driver refuses.
    Native,
    /// Generic/SKB mode (`XDP_FLAGS_SKB_MODE`): works everywhere, slower.
    Generic,
}

impl XdpMode {
    pub(crate) fn flags(self) -> XdpFlags {
        match self {
            XdpMode::Native => XdpFlags::DRV_MODE,
            XdpMode::Generic => XdpFlags::SKB_MODE,
        }
    }
}

/// Why loading or attaching the XDP program failed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// the kernel refused to load the XDP program (needs root / CAP_BPF + CAP_NET_ADMIN)
    #[error("the kernel refused to load the XDP program: {0} (needs root, or CAP_BPF and CAP_NET_ADMIN)")]
    Load(#[source] libbpf_rs::Error),
    /// the XDP program could not be attached to the interface
    #[error("attaching XDP to ifindex {ifindex} in {mode:?} mode was refused: {source}")]
    Attach {
        /// Interface index.
        ifindex: u32,
        /// Mode tried last.
        mode: XdpMode,
        /// The kernel's answer.
        #[source]
        source: libbpf_rs::Error,
    },
    /// the compiled object lacks a program or map this crate expects
    #[error("the XDP object has no {0} (bpf/xlb.bpf.c and the io crate disagree)")]
    Missing(&'static str),
    /// another xlb serves the interface, or it could not be claimed
    #[error("{0}")]
    Owner(#[from] owner::OwnerError),
    /// a BPF map operation failed
    #[error("BPF map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The kernel's answer.
        #[source]
        source: libbpf_rs::Error,
    },
}

/// Test fixtures shared by the modules' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::net::IpAddr;

    use xlb_dataplane::tables::{
        EndpointSpec, EndpointState, L4Proto, NatMode, Selection, ServiceKey, ServiceSpec,
    };

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// A round-robin service on `vip` ports `lo..=hi` with endpoints `eps`
    /// (address, port).
    pub(crate) fn svc(
        vip: &str,
        proto: L4Proto,
        lo: u16,
        hi: u16,
        mode: NatMode,
        eps: &[(&str, u16)],
    ) -> ServiceSpec {
        ServiceSpec {
            key: ServiceKey {
                vip: ip(vip),
                proto,
                port_min: lo,
                port_max: hi,
                block: 0,
            },
            sel: Selection::RoundRobin,
            mode,
            allowed_sources: vec![],
            endpoints: eps
                .iter()
                .map(|(a, p)| EndpointSpec {
                    addr: ip(a),
                    port: *p,
                    weight: 1,
                    state: EndpointState::Active,
                })
                .collect(),
            inactive_timeout_s: 60,
            dsr_ipip: false,
            name: String::new(),
            snat: None,
        }
    }
}
