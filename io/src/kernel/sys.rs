//! Every raw syscall the crate makes outside xsk-rs and libbpf-rs: `poll` over
//! the worker's sockets, the monotonic clock, the effective uid. Each wrapper
//! is safe to call; the unsafe blocks are confined here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// CLOCK_MONOTONIC in nanoseconds (the clock `Processor::process_batch` expects).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The effective uid (0 = root).
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Block until one of `fds` is readable or `timeout_ms` passes. `pollfds` is
/// the caller's scratch (reused, so no allocation per call once sized).
/// Returns the number of ready fds; EINTR counts as 0.
pub fn poll_readable(
    fds: &[RawFd],
    pollfds: &mut Vec<libc::pollfd>,
    timeout_ms: i32,
) -> io::Result<usize> {
    pollfds.clear();
    pollfds.extend(fds.iter().map(|&fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    // SAFETY: `pollfds` points at `pollfds.len()` initialised pollfd structs
    // that stay alive and unaliased for the duration of the call.
    let rc = unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(rc as usize)
}

/// The name of interface `ifindex` in the calling thread's namespace.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write
    // (the name and its NUL); it returns NULL or a pointer into `buf`.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success `buf` holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Current (rx, tx, combined) channel counts of interface `name`, asked with
/// `SIOCETHTOOL` on a socket of the calling thread's network namespace (sysfs
/// would show the namespace it was mounted in instead).
pub fn ethtool_channels(name: &str) -> io::Result<(u32, u32, u32)> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: plain socket(2) call; the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ifr` is a valid ifreq naming the interface, its data pointer
    // points at a live, writable ethtool_channels for the whole call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` is ours and not used after this.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    Ok((ch.rx_count, ch.tx_count, ch.combined_count))
}

/// Preferred busy polling on socket `fd` (`SO_PREFER_BUSY_POLL`,
/// `SO_BUSY_POLL` for `usecs`, `SO_BUSY_POLL_BUDGET` of `budget` packets): the
/// socket's own syscalls then run its device queue's NAPI in the caller's
/// context, on the caller's core, instead of in a softirq wherever the
/// interrupt (or, on veth, the sender) happens to be.
pub fn set_prefer_busy_poll(fd: RawFd, usecs: u32, budget: u16) -> io::Result<()> {
    let opts: [(libc::c_int, libc::c_int); 3] = [
        (libc::SO_PREFER_BUSY_POLL, 1),
        (
            libc::SO_BUSY_POLL,
            usecs.min(i32::MAX as u32) as libc::c_int,
        ),
        (libc::SO_BUSY_POLL_BUDGET, libc::c_int::from(budget)),
    ];
    for (name, value) in opts {
        // SAFETY: `value` is a live c_int for the whole call and its size is
        // passed; setsockopt does not keep the pointer.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Drive busy polling on AF_XDP socket `fd`: a non-blocking, zero-length
/// `recvfrom` runs the queue's NAPI once (up to the socket's budget), which
/// moves waiting packets into the RX ring. Errors other than EAGAIN/EBUSY
/// (the NAPI is busy elsewhere) are returned.
pub fn busy_poll_rx(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zero-length receive with null buffer and address pointers is
    // valid for AF_XDP sockets (the kernel reads and writes nothing).
    let rc = unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) => Ok(()),
            _ => Err(e),
        };
    }
    Ok(())
}

/// The NAPI id the kernel recorded for socket `fd` from the packets it
/// received (`SO_INCOMING_NAPI_ID`); 0 when there is none, in which case
/// busy polling on the socket has no queue to poll.
pub fn napi_id(fd: RawFd) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live, writable and sized for the option's
    // c_int value; getsockopt does not keep the pointers.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_NAPI_ID,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as u32)
}

/// A send-only AF_PACKET socket for whole Ethernet frames (protocol 0: it
/// receives nothing).
pub fn packet_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new
    // descriptor this process owns.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Send `frame` (a whole Ethernet frame, destination MAC first) out of
/// interface `ifindex` on an AF_PACKET socket.
pub fn send_frame(fd: RawFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex =
        i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex out of range"))?;
    addr.sll_halen = 6;
    if let Some(dst) = frame.get(..6) {
        addr.sll_addr[..6].copy_from_slice(dst);
    }
    // SAFETY: `frame` is valid for `frame.len()` bytes and `addr` is an
    // initialised sockaddr_ll whose size is passed; neither outlives the call.
    let rc = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
