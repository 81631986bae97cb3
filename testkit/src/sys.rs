//! Every system call of the kit, each wrapped safely: effective uid,
//! `setns(2)` for the calling thread, signals by pid, `flock(2)`, the
//! private mount namespace that gives a thread the sysfs of its network
//! namespace, and the hook that keeps a child from inheriting the test
//! process's descriptors. Nothing else in the crate uses `unsafe`.
// Raw syscalls through libc; each block says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Move the calling thread into the network namespace `ns` refers to.
pub(crate) fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open file for the duration of the call; setns with
    // CLONE_NEWNET changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Give the calling thread a network namespace of its own, new and empty
/// but for `lo` (down). It goes away with the thread.
pub(crate) fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers and moves only the
    // calling thread into a new network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Send `sig` to process `pid`; false if it no longer exists (or may not be
/// signalled).
pub(crate) fn kill(pid: i32, sig: i32) -> bool {
    if pid <= 0 {
        // 0 and negative pids address process groups: never what the kit means.
        return false;
    }
    // SAFETY: kill(2) takes plain integers and has no memory effects on us.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Block until `f` holds an exclusive `flock(2)` lock. The lock belongs to
/// the open file description: it is released when `f` is closed.
pub(crate) fn flock_exclusive(f: &File) -> io::Result<()> {
    loop {
        // SAFETY: `f` is an open file for the duration of the call.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Give the calling thread its own mount namespace holding a fresh sysfs,
/// as `ip netns exec` does for a command: sysfs shows the network namespace
/// it was mounted from, so a thread that only called setns still sees the
/// host's `/sys/class/net`. Call it after entering the network namespace.
pub(crate) fn private_sysfs() -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: unshare takes a flag and only detaches this thread's mount
    // table from the process's.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
    // SAFETY: valid NUL-terminated strings and null data pointers; marking
    // every mount a slave keeps what follows out of the host's mount table.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    })?;
    // SAFETY: a valid NUL-terminated path; the detach only affects this
    // thread's (now private) mount table.
    check(unsafe { libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) })?;
    // SAFETY: valid NUL-terminated strings and a null data pointer.
    check(unsafe {
        libc::mount(
            c"sysfs".as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    })
}

/// Make `cmd`'s child close every descriptor above stdio when it execs.
///
/// Tests run in parallel threads of one process, and libxdp opens AF_XDP
/// sockets without `SOCK_CLOEXEC`: without this, a daemon or command one
/// test starts inherits another test's AF_XDP socket and keeps its queue
/// claimed (`EBUSY` for the next socket there) and its UMEM alive for as
/// long as it runs.
pub(crate) fn close_inherited_fds(cmd: &mut Command) {
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes one raw system call on
    // integers and touches no memory shared with the parent. close_range
    // with CLOSE_RANGE_CLOEXEC only marks descriptors; std's own pipes are
    // close-on-exec already. On kernels without it (before 5.11) the call
    // fails with ENOSYS and the child inherits as before.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
}
