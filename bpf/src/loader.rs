//! Loads the XDP steering program (`src/bpf/xlb.bpf.c`) and attaches it to an
//! interface; owns the program's maps while it lives.
//!
//! Invariants: at most one xlb program per interface (a stale one, left by a
//! crashed process, is detached first); the program is detached when the
//! [`XdpProgram`] is dropped or [`XdpProgram::detach`]ed, and its maps vanish
//! with the last file descriptor. Nothing is pinned in bpffs.

use std::os::fd::{AsFd, RawFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle, Object, ObjectBuilder, Xdp, XdpFlags};

use crate::maps::{Stat, SteeringMaps, STAT_SLOTS};

/// The compiled XDP object, built by `build.rs` from `src/bpf/xlb.bpf.c`.
pub const XLB_BPF_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xlb.bpf.o"));

const STEER_PROG: &str = "xlb_steer";
const PASS_PROG: &str = "xlb_pass";
/// Maps shared by every interface's program (one sync updates them all).
const SHARED_MAPS: [&str; 5] = ["vip_ports", "vip_addrs", "snat_addrs", "backends", "config"];

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
    fn flags(self) -> XdpFlags {
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
    #[error("the XDP object has no {0} (build.rs and loader.rs disagree)")]
    Missing(&'static str),
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

/// Detach whatever XDP program (xlb's or not) is attached to `ifindex`, in
/// either mode. Returns how many were detached. Used at start-up: a program
/// attached with a plain attach survives the process that attached it.
pub fn detach_stale(ifindex: u32) -> Result<usize, XdpError> {
    // `Xdp` needs some program fd for its opts; detach/query ignore it, so
    // borrow the pass program of a throwaway load.
    let obj = open_and_load(None)?;
    let prog = find_prog(&obj, PASS_PROG)?;
    let xdp = Xdp::new(prog.as_fd());
    let mut n = 0;
    for mode in [XdpMode::Native, XdpMode::Generic] {
        if matches!(xdp.query_id(ifindex as i32, mode.flags()), Ok(id) if id != 0) {
            xdp.detach(ifindex as i32, mode.flags())
                .map_err(|source| XdpError::Attach {
                    ifindex,
                    mode,
                    source,
                })?;
            n += 1;
        }
    }
    Ok(n)
}

/// The steering program attached to one interface, with its maps.
pub struct XdpProgram {
    obj: Object,
    ifindex: u32,
    mode: XdpMode,
    attached: bool,
    xsks: MapHandle,
    stats: MapHandle,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram")
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("attached", &self.attached)
            .finish()
    }
}

impl XdpProgram {
    /// Load the program and attach it to `ifindex`, detaching any stale
    /// program first. `Native` falls back to `Generic` with a warning.
    pub fn load_and_attach(ifindex: u32, mode: XdpMode) -> Result<XdpProgram, XdpError> {
        Self::load_and_attach_sharing(ifindex, mode, None)
    }

    /// Like [`XdpProgram::load_and_attach`], but the steering maps (VIPs, SNAT
    /// addresses, backends, config) are `shared`'s: one [`crate::maps::MapSync`]
    /// then serves every interface. The XSKMAP and stats stay per interface.
    pub fn load_and_attach_sharing(
        ifindex: u32,
        mode: XdpMode,
        shared: Option<&SteeringMaps>,
    ) -> Result<XdpProgram, XdpError> {
        let stale = detach_stale(ifindex)?;
        if stale > 0 {
            tracing::warn!(
                ifindex,
                "detached a stale XDP program left by an earlier run"
            );
        }
        let obj = open_and_load(shared)?;
        let xsks = map_handle(&obj, "xsks_map")?;
        let stats = map_handle(&obj, "stats")?;
        let mut p = XdpProgram {
            obj,
            ifindex,
            mode,
            attached: false,
            xsks,
            stats,
        };
        let prog = find_prog(&p.obj, STEER_PROG)?;
        let xdp = Xdp::new(prog.as_fd());
        match xdp.attach(ifindex as i32, mode.flags()) {
            Ok(()) => {}
            Err(e) if mode == XdpMode::Native => {
                tracing::warn!(
                    ifindex,
                    error = %e,
                    "native XDP refused by the driver; falling back to generic (SKB) mode"
                );
                xdp.attach(ifindex as i32, XdpMode::Generic.flags())
                    .map_err(|source| XdpError::Attach {
                        ifindex,
                        mode: XdpMode::Generic,
                        source,
                    })?;
                p.mode = XdpMode::Generic;
            }
            Err(source) => {
                return Err(XdpError::Attach {
                    ifindex,
                    mode,
                    source,
                })
            }
        }
        p.attached = true;
        Ok(p)
    }

    /// The mode the program is actually attached in (after any fallback).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Handles on the steering maps, to share with other interfaces' programs
    /// and to sync from a [`xlb_dataplane::tables::Tables`].
    pub fn steering_maps(&self) -> Result<SteeringMaps, XdpError> {
        Ok(SteeringMaps {
            vip_ports: map_handle(&self.obj, "vip_ports")?,
            vip_addrs: map_handle(&self.obj, "vip_addrs")?,
            snat_addrs: map_handle(&self.obj, "snat_addrs")?,
            backends: map_handle(&self.obj, "backends")?,
            config: map_handle(&self.obj, "config")?,
        })
    }

    /// Point rx queue `queue`'s XSKMAP slot at the AF_XDP socket `fd`.
    pub fn register_socket(&self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let fd = u32::try_from(fd).map_err(|_| XdpError::Missing("valid socket fd"))?;
        self.xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| XdpError::Map {
                map: "xsks_map",
                source,
            })
    }

    /// Empty rx queue `queue`'s XSKMAP slot (its packets then pass to the kernel).
    pub fn unregister_socket(&self, queue: u32) -> Result<(), XdpError> {
        self.xsks
            .delete(&queue.to_ne_bytes())
            .map_err(|source| XdpError::Map {
                map: "xsks_map",
                source,
            })
    }

    /// The program's per-action counters, summed over CPUs.
    pub fn stats(&self) -> Result<XdpStats, XdpError> {
        let mut out = XdpStats::default();
        for slot in 0..STAT_SLOTS as u32 {
            let per_cpu = self
                .stats
                .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)
                .map_err(|source| XdpError::Map {
                    map: "stats",
                    source,
                })?
                .unwrap_or_default();
            let sum: u64 = per_cpu
                .iter()
                .filter_map(|v| v.get(..8))
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8-byte slice")))
                .sum();
            out.counts[slot as usize] = sum;
        }
        Ok(out)
    }

    /// Detach the program from the interface now (dropping does the same,
    /// logging instead of returning errors).
    pub fn detach(mut self) -> Result<(), XdpError> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<(), XdpError> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        let prog = find_prog(&self.obj, STEER_PROG)?;
        let xdp = Xdp::new(prog.as_fd());
        xdp.detach(self.ifindex as i32, self.mode.flags())
            .map_err(|source| XdpError::Attach {
                ifindex: self.ifindex,
                mode: self.mode,
                source,
            })
    }

    /// Leave the program attached and forget it, as a crashed process would.
    /// Only for tests of stale-program recovery.
    #[doc(hidden)]
    pub fn leak_attached(mut self) {
        self.attached = false;
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            tracing::warn!(ifindex = self.ifindex, error = %e, "XDP detach failed");
        }
    }
}

/// Per-action counters of one interface's program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Indexed by [`Stat`] as usize.
    pub counts: [u64; STAT_SLOTS],
}

impl XdpStats {
    /// One counter.
    pub fn get(&self, s: Stat) -> u64 {
        self.counts[s as usize]
    }
}

/// Attach the always-pass program to `ifindex` (generic or native). For lab
/// and test topologies: XDP_TX or redirects into a veth need a program on
/// its peer. Detached when the returned guard drops.
pub fn attach_pass_program(ifindex: u32, mode: XdpMode) -> Result<PassProgram, XdpError> {
    let obj = open_and_load(None)?;
    let prog = find_prog(&obj, PASS_PROG)?;
    Xdp::new(prog.as_fd())
        .attach(ifindex as i32, mode.flags())
        .map_err(|source| XdpError::Attach {
            ifindex,
            mode,
            source,
        })?;
    Ok(PassProgram { obj, ifindex, mode })
}

/// The pass program attached to an interface; detached on drop.
pub struct PassProgram {
    obj: Object,
    ifindex: u32,
    mode: XdpMode,
}

impl std::fmt::Debug for PassProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PassProgram(ifindex {})", self.ifindex)
    }
}

impl Drop for PassProgram {
    fn drop(&mut self) {
        if let Ok(prog) = find_prog(&self.obj, PASS_PROG) {
            let _ = Xdp::new(prog.as_fd()).detach(self.ifindex as i32, self.mode.flags());
        }
    }
}

fn open_and_load(shared: Option<&SteeringMaps>) -> Result<Object, XdpError> {
    let mut open = ObjectBuilder::default()
        .open_memory(XLB_BPF_OBJ)
        .map_err(XdpError::Load)?;
    if let Some(shared) = shared {
        for mut m in open.maps_mut() {
            let name = m.name().to_string_lossy().into_owned();
            if let Some(&static_name) = SHARED_MAPS.iter().find(|n| **n == name) {
                m.reuse_fd(shared.by_name(static_name).as_fd())
                    .map_err(|source| XdpError::Map {
                        map: static_name,
                        source,
                    })?;
            }
        }
    }
    open.load().map_err(XdpError::Load)
}

fn find_prog<'o>(obj: &'o Object, name: &'static str) -> Result<libbpf_rs::Program<'o>, XdpError> {
    obj.progs()
        .find(|p| p.name() == name)
        .ok_or(XdpError::Missing(name))
}

fn map_handle(obj: &Object, name: &'static str) -> Result<MapHandle, XdpError> {
    let m = obj
        .maps()
        .find(|m| m.name() == name)
        .ok_or(XdpError::Missing(name))?;
    MapHandle::try_from(&m).map_err(|source| XdpError::Map { map: name, source })
}
