//! The compiled XDP object (`bpf/xlb.bpf.c`, built by `build.rs`): opening
//! and loading it into the kernel, finding its programs and maps, detaching
//! what an earlier run left attached, and the always-pass program that lab
//! topologies attach to veth peers.
//!
//! Invariants: nothing is pinned in bpffs, so a loaded object's maps vanish
//! with its last file descriptor; a program attached here is detached by the
//! guard that owns it ([`PassProgram`] here, `XdpProgram` for the steering
//! program), or by [`detach_stale`] in the next run if the process died.

use std::os::fd::{AsFd, BorrowedFd};

use libbpf_rs::{MapCore, MapHandle, Object, ObjectBuilder, Xdp};

use super::{XdpError, XdpMode};

/// The compiled XDP object, built by `build.rs` from `bpf/xlb.bpf.c`.
pub const XLB_BPF_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xlb.bpf.o"));

/// The steering program's name in the object.
pub(crate) const STEER_PROG: &str = "xlb_steer";
/// The always-pass program's name in the object.
const PASS_PROG: &str = "xlb_pass";

/// Detach whatever XDP program (xlb's or not) is attached to `ifindex`, in
/// either mode. Returns how many were detached. Used at start-up, once the
/// interface is claimed ([`super::owner::InterfaceLock`]): a program
/// attached with a plain attach survives the process that attached it.
pub fn detach_stale(ifindex: u32) -> Result<usize, XdpError> {
    detach_where(ifindex, |_| true)
}

/// Detach the program with the kernel's id `prog_id` from `ifindex`, if it
/// is still the one attached there (in either mode); anything else on the
/// interface is left alone. Returns whether it was detached. For removing
/// what a dead xlb recorded it attached, wherever it was.
pub fn detach_if(ifindex: u32, prog_id: u32) -> Result<bool, XdpError> {
    Ok(detach_where(ifindex, |id| id == prog_id)? > 0)
}

fn detach_where(ifindex: u32, which: impl Fn(u32) -> bool) -> Result<usize, XdpError> {
    let obj = open_and_load(&[])?;
    // `Xdp` wants a program fd for its opts; detach and query ignore it.
    let prog = find_prog(&obj, PASS_PROG)?;
    let xdp = Xdp::new(prog.as_fd());
    let mut n = 0;
    for mode in [XdpMode::Native, XdpMode::Generic] {
        if matches!(xdp.query_id(ifindex as i32, mode.flags()), Ok(id) if id != 0 && which(id)) {
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

/// Attach the always-pass program to `ifindex` (generic or native). For lab
/// and test topologies: XDP_TX or redirects into a veth need a program on
/// its peer. Detached when the returned guard drops.
pub fn attach_pass_program(ifindex: u32, mode: XdpMode) -> Result<PassProgram, XdpError> {
    let obj = open_and_load(&[])?;
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

/// Open the object and load it into the kernel. Each `(name, fd)` of
/// `reuse` makes the map `name` the existing map `fd` instead of a new one
/// (how every interface's program shares one set of steering maps).
pub(crate) fn open_and_load(reuse: &[(&'static str, BorrowedFd<'_>)]) -> Result<Object, XdpError> {
    let mut open = ObjectBuilder::default()
        .open_memory(XLB_BPF_OBJ)
        .map_err(XdpError::Load)?;
    if !reuse.is_empty() {
        for mut m in open.maps_mut() {
            let name = m.name().to_string_lossy().into_owned();
            if let Some(&(static_name, fd)) = reuse.iter().find(|(n, _)| *n == name) {
                m.reuse_fd(fd).map_err(|source| XdpError::Map {
                    map: static_name,
                    source,
                })?;
            }
        }
    }
    open.load().map_err(XdpError::Load)
}

/// The program `name` of a loaded object.
pub(crate) fn find_prog<'o>(
    obj: &'o Object,
    name: &'static str,
) -> Result<libbpf_rs::Program<'o>, XdpError> {
    obj.progs()
        .find(|p| p.name() == name)
        .ok_or(XdpError::Missing(name))
}

/// A handle on the map `name` of a loaded object (it keeps the map alive).
pub(crate) fn map_handle(obj: &Object, name: &'static str) -> Result<MapHandle, XdpError> {
    let m = obj
        .maps()
        .find(|m| m.name() == name)
        .ok_or(XdpError::Missing(name))?;
    MapHandle::try_from(&m).map_err(|source| XdpError::Map { map: name, source })
}
