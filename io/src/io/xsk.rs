//! AF_XDP sockets as a [`PacketIo`]: one UMEM shared by a socket on every
//! configured interface at one queue index (so a frame received on one
//! interface is transmitted on another without a copy), each socket with its
//! own fill and completion rings. The daemon's workers run over it, and so
//! does `xlb-pktgen` (through [`super::pool::FramePool`]), each with its own
//! [`XskConfig`].
//!
//! The unsafe blocks below lean on [`PacketIo`]'s ownership contract (the
//! caller hands over only frames in its hands, each once) and on xsk-rs's
//! (descriptors belong to this UMEM): every desc this type hands out comes
//! from this UMEM's rings or its initial frame list.
#![allow(unsafe_code)]

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use xlb_dataplane::frame::{Frame, PortId};
use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{DeviceStats, PacketIo};
use crate::kernel::sys;

/// The workers' UMEM frame (chunk) size. A power of two (aligned mode);
/// leaves room after a 1500-byte packet for encapsulation.
pub const FRAME_SIZE: u32 = 4096;

/// The workers' most `sendto` kicks per port and round. Copy-mode AF_XDP
/// sends at most 32 frames per kick, so one kick per round lets the TX ring
/// fill up whenever a round receives more than that (a 64-frame batch did);
/// kicking again while the kernel takes frames keeps the ring drained, and
/// the cap bounds the syscalls a round makes.
pub const MAX_KICKS: u32 = 16;

/// How to build one [`XskIo`]. The default is what the daemon's workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// UMEM frames, shared by the sockets on every interface.
    pub frame_count: u32,
    /// Bytes per frame: a power of two, at least 2048.
    pub frame_size: u32,
    /// Turn on preferred busy polling with this NAPI budget per call (see
    /// `kernel::sys::set_prefer_busy_poll`); every `rx` then runs the port's
    /// receive queue in the caller's own context.
    pub busy_poll_budget: Option<u16>,
    /// Most `sendto` kicks per [`PacketIo::kick_tx`] call (at least 1).
    pub max_kicks: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_count: 4096,
            frame_size: FRAME_SIZE,
            busy_poll_budget: None,
            max_kicks: MAX_KICKS,
        }
    }
}

/// Socket-creation failure of one (interface, queue).
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// the UMEM could not be created
    #[error("UMEM of {frames} frames: {source}")]
    Umem {
        /// Frame count asked for.
        frames: u32,
        /// xsk-rs's error.
        #[source]
        source: xsk_rs::umem::UmemCreateError,
    },
    /// the AF_XDP socket could not be created or bound
    #[error("AF_XDP socket on {iface} queue {queue}: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// Queue index.
        queue: u32,
        /// xsk-rs's error; its source is the errno.
        #[source]
        source: xsk_rs::socket::SocketCreateError,
    },
    /// the socket refused the busy-polling options
    #[error("preferred busy polling on {iface}: {source}")]
    BusyPoll {
        /// Interface.
        iface: String,
        /// The setsockopt error.
        #[source]
        source: std::io::Error,
    },
    /// invalid ring or frame size
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
}

impl XskError {
    /// The errno behind a socket failure, if any.
    pub fn errno(&self) -> Option<i32> {
        use std::error::Error;
        let src = self.source()?.source()?;
        src.downcast_ref::<std::io::Error>()?.raw_os_error()
    }
}

struct Port {
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
}

/// The AF_XDP sockets of one worker (see the module docs).
pub struct XskIo {
    umem: Umem,
    ports: Vec<Port>,
    initial: Vec<FrameDesc>,
    ring: u32,
    max_kicks: u32,
    poll_fds: Vec<RawFd>,
    pollfds: Vec<libc::pollfd>,
    /// Preferred busy polling is on: every `rx` first runs the port's NAPI.
    busy_poll: bool,
    /// Per port: whether the socket's NAPI id was checked (busy polling).
    napi_checked: Vec<bool>,
    /// Interface names, for log lines.
    names: Vec<String>,
}

/// How long one busy-poll call may spin on an empty queue, in µs (the
/// kernel's AF_XDP documentation suggests 20).
const BUSY_POLL_USECS: u32 = 20;

impl std::fmt::Debug for XskIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskIo")
            .field("ports", &self.ports.len())
            .field("ring", &self.ring)
            .finish()
    }
}

/// A ring size (power of two, 64..=4096) no larger than `n` where possible.
pub(crate) fn ring_size(n: u32) -> u32 {
    let n = n.clamp(64, 4096);
    1 << (31 - n.leading_zeros())
}

impl XskIo {
    /// One UMEM of `cfg.frame_count` frames and a socket on every interface
    /// of `ifaces` at `queue`. Returns the sockets' fds (in `ifaces` order)
    /// for the XSKMAPs.
    ///
    /// Every ring holds half the frames: the caller decides how many of them
    /// each fill ring gets (a worker gives most to the ports that receive),
    /// so an idle port cannot starve a busy one.
    pub fn create(
        ifaces: &[String],
        queue: u32,
        cfg: &XskConfig,
    ) -> Result<(XskIo, Vec<RawFd>), XskError> {
        let frame_count = cfg.frame_count;
        let ring = ring_size(frame_count / 2);
        let qs = |n| QueueSize::new(n).map_err(|e| XskError::Config(e.to_string()));
        let umem_cfg = UmemConfig::builder()
            .frame_size(
                xsk_rs::config::FrameSize::new(cfg.frame_size)
                    .map_err(|e| XskError::Config(e.to_string()))?,
            )
            .fill_queue_size(qs(ring)?)
            .comp_queue_size(qs(ring)?)
            .build()
            .map_err(|e| XskError::Config(e.to_string()))?;
        let frames = NonZeroU32::new(frame_count)
            .ok_or_else(|| XskError::Config("frame_count is 0".into()))?;
        let (umem, descs) =
            Umem::new(umem_cfg, frames, false).map_err(|source| XskError::Umem {
                frames: frame_count,
                source,
            })?;
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(qs(ring)?)
            .tx_queue_size(qs(ring)?)
            // Our XDP program and XSKMAP, not libxdp's default program.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            // veth (and generic XDP) only support copy mode.
            .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let mut ports = Vec::with_capacity(ifaces.len());
        let mut fds = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            let name: xsk_rs::config::Interface = iface
                .parse()
                .map_err(|_| XskError::Config(format!("bad interface name {iface:?}")))?;
            // SAFETY: each (interface, queue) is bound once per UMEM, and
            // XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD is set (xsk-rs's requirement
            // for shared UMEMs).
            let (tx, rx, fqcq) =
                unsafe { Socket::new(sock_cfg, &umem, &name, queue) }.map_err(|source| {
                    XskError::Socket {
                        iface: iface.clone(),
                        queue,
                        source,
                    }
                })?;
            let (fq, cq) = fqcq.ok_or_else(|| {
                XskError::Config(format!("{iface} queue {queue} bound twice on one UMEM"))
            })?;
            let fd = rx.fd().as_raw_fd();
            if let Some(budget) = cfg.busy_poll_budget {
                sys::set_prefer_busy_poll(fd, BUSY_POLL_USECS, budget).map_err(|e| {
                    XskError::BusyPoll {
                        iface: iface.clone(),
                        source: e,
                    }
                })?;
            }
            fds.push(fd);
            ports.push(Port { tx, rx, fq, cq });
        }
        let io = XskIo {
            umem,
            pollfds: Vec::with_capacity(ports.len()),
            poll_fds: fds.clone(),
            ports,
            initial: descs,
            ring,
            max_kicks: cfg.max_kicks.max(1),
            busy_poll: cfg.busy_poll_budget.is_some(),
            napi_checked: vec![false; ifaces.len()],
            names: ifaces.to_vec(),
        };
        Ok((io, fds))
    }
}

impl XskIo {
    /// Once per port, after its first packets: busy polling needs the NAPI id
    /// the kernel records on the socket from received packets. Some drivers
    /// give none (veth: `SO_INCOMING_NAPI_ID` stays 0 on 6.18, also with GRO
    /// on before XDP is attached); then receive work waits for the NAPI
    /// deferral timer instead.
    fn check_napi(&self, port: usize) {
        match sys::napi_id(self.poll_fds[port]) {
            Ok(0) => tracing::warn!(
                iface = %self.names[port],
                "busy polling cannot engage on this interface (its AF_XDP socket has no NAPI id, \
                 as on veth): receive processing runs when the NAPI deferral timer fires, adding \
                 up to gro_flush_timeout of latency; without --busy-poll it runs at once"
            ),
            Ok(id) => {
                tracing::debug!(iface = %self.names[port], napi_id = id, "busy polling engaged")
            }
            Err(e) => tracing::debug!(iface = %self.names[port], error = %e, "SO_INCOMING_NAPI_ID"),
        }
    }
}

impl PacketIo for XskIo {
    type Desc = FrameDesc;

    fn ports(&self) -> usize {
        self.ports.len()
    }

    fn fill_ring_size(&self) -> u32 {
        self.ring
    }

    fn take_frames(&mut self) -> Vec<FrameDesc> {
        std::mem::take(&mut self.initial)
    }

    fn rx(&mut self, port: usize, out: &mut [FrameDesc]) -> usize {
        if self.busy_poll {
            // One syscall per port and round, not per packet: it moves up to
            // the budget's worth of waiting packets into the RX ring.
            if let Err(e) = sys::busy_poll_rx(self.poll_fds[port]) {
                tracing::debug!(error = %e, port, "AF_XDP busy poll failed");
            }
        }
        // SAFETY: the ring hands over frames of this UMEM that the kernel has
        // filled; from here they are in the caller's hands.
        let n = unsafe { self.ports[port].rx.consume(out) };
        if self.busy_poll && n > 0 && !self.napi_checked[port] {
            self.napi_checked[port] = true;
            self.check_napi(port);
        }
        n
    }

    fn completions(&mut self, port: usize, out: &mut [FrameDesc]) -> usize {
        // SAFETY: the descriptors written are this UMEM's frames the kernel
        // has finished sending; they return to the caller's hands.
        unsafe { self.ports[port].cq.consume(out) }
    }

    fn fill_room(&mut self, port: usize) -> usize {
        self.ports[port].fq.nb_free(self.ring) as usize
    }

    fn tx_room(&mut self, port: usize) -> usize {
        self.ports[port].tx.nb_free(self.ring) as usize
    }

    unsafe fn frames<'a>(
        &'a mut self,
        descs: &[FrameDesc],
        rx_port: PortId,
        out: &mut Vec<Frame<'a>>,
    ) {
        for desc in descs {
            let mut d = *desc;
            // SAFETY: `d` is a frame of this UMEM in the caller's hands (the
            // caller's contract), so the kernel does not touch it.
            let mut data = unsafe { self.umem.data_mut(&mut d) };
            let len = data.contents().len();
            // Widen the segment to the chunk's end (set_pos clamps), then take
            // the pointer last: `data` is not touched again, so the pointer
            // stays the most recent borrow of these bytes. The widened length
            // lives only in the local copy `d`; TX lengths come from set_len.
            data.cursor().set_pos(usize::MAX);
            let whole = data.contents_mut();
            let (ptr, cap) = (whole.as_mut_ptr(), whole.len());
            // SAFETY: `ptr..ptr+cap` is the rest of this frame's chunk (xsk-rs's
            // data segment runs from the packet to the chunk end), inside the
            // mapped UMEM, which lives as long as `self` ('a). Frames are
            // disjoint chunks and no desc appears twice (the caller's
            // contract), so the slices never alias; the kernel does not touch
            // a frame in the caller's hands, and the caller cannot hand these
            // frames to a ring while the slices borrow `self`.
            let buf: &'a mut [u8] = unsafe { std::slice::from_raw_parts_mut(ptr, cap) };
            out.push(Frame::new(buf, len, rx_port));
        }
    }

    unsafe fn set_len(&mut self, desc: &mut FrameDesc, len: usize) {
        // SAFETY: `desc` is a frame of this UMEM in the caller's hands.
        unsafe { self.umem.data_mut(desc) }.cursor().set_pos(len);
    }

    unsafe fn fill(&mut self, port: usize, descs: &[FrameDesc]) -> usize {
        let fq = &mut self.ports[port].fq;
        let n = descs.len().min(fq.nb_free(descs.len() as u32) as usize);
        if n == 0 {
            return 0;
        }
        // SAFETY: frames of this UMEM in the caller's hands, each once (the
        // caller's contract); the kernel owns them from here. `n` slots are
        // free, so the all-or-nothing reservation succeeds.
        unsafe { fq.produce(&descs[..n]) }
    }

    unsafe fn tx(&mut self, port: usize, descs: &[FrameDesc]) -> usize {
        let tx = &mut self.ports[port].tx;
        let n = descs.len().min(tx.nb_free(descs.len() as u32) as usize);
        if n == 0 {
            return 0;
        }
        // SAFETY: as in `fill`; lengths were set by `set_len`. The kernel owns
        // the frames until they come back on the completion ring.
        unsafe { tx.produce(&descs[..n]) }
    }

    fn kick_tx(&mut self, port: usize) -> u32 {
        let (tx, ring) = (&mut self.ports[port].tx, self.ring);
        let mut kicks = 0;
        let mut free = tx.nb_free_exact();
        while free < ring && kicks < self.max_kicks && tx.needs_wakeup() {
            if let Err(e) = tx.wakeup() {
                tracing::debug!(error = %e, "AF_XDP TX wakeup failed");
                break;
            }
            kicks += 1;
            let now = tx.nb_free_exact();
            if now == free {
                // No progress (completion ring full, device busy): the next
                // round tries again after draining completions.
                break;
            }
            free = now;
        }
        kicks
    }

    fn wait(&mut self, timeout_ms: i32) -> std::io::Result<()> {
        sys::poll_readable(&self.poll_fds, &mut self.pollfds, timeout_ms).map(|_| ())
    }

    fn device_stats(&self) -> DeviceStats {
        let mut s = DeviceStats::default();
        for p in &self.ports {
            if let Ok(k) = p.rx.fd().xdp_statistics() {
                s.rx_ring_full += k.rx_ring_full();
                s.fill_ring_empty += k.rx_fill_ring_empty_descs();
                s.rx_dropped += k.rx_dropped();
                s.tx_invalid += k.tx_invalid_descs();
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_in_range() {
        for n in [0, 1, 63, 64, 100, 1000, 5000, 100_000] {
            let r = ring_size(n);
            assert!(
                r.is_power_of_two() && (64..=4096).contains(&r),
                "{n} -> {r}"
            );
            assert!(r <= n.max(64), "{n} -> {r}: never more than asked");
        }
    }
}
