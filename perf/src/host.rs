//! What the harness does to its own process and the host's scheduler:
//! SIGINT/SIGTERM turned into a flag the loops poll (so an interrupted run
//! still stops its senders and drops its lab), pinning, per-thread nice
//! values, the process's scheduler autogroup, and the `ksoftirqd` threads.
//! Namespaces, links and processes in them are the test kit's
//! (`xlb_testkit`).
// Raw syscalls: signal handlers, scheduling (nice, current CPU), gettid.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Turn SIGINT and SIGTERM into a flag ([`interrupted`]) that the loops
/// poll, so an interrupted run still stops its senders and drops its
/// lab (deleting the namespaces) instead of dying mid-way.
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // `on_signal` has the C ABI signal(2) expects and lives forever.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether SIGINT/SIGTERM arrived (after [`catch_signals`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Pin the calling thread to `cpu` (best effort; returns whether it worked).
pub fn pin(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Set thread `tid`'s nice value (Linux: per thread). Returns whether it worked.
/// The harness raises its own threads (generator, receiver, AF_XDP workers)
/// so compilers sharing the machine do not take their cores: softirq work
/// (the kernel contender) already preempts every user thread.
pub fn renice(tid: i32, nice: i32) -> bool {
    // SAFETY: setpriority takes plain integers; a bad tid only yields ESRCH.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0 }
}

/// The pid and nice of the `ksoftirqd/<cpu>` kernel thread.
pub fn ksoftirqd(cpu: usize) -> Option<(i32, i32)> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        if head.split_once('(')?.1 != want {
            return None;
        }
        // After ")": state is field 3 of stat(5), nice field 19.
        let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
        Some((pid, nice))
    })
}

/// Put this process in a session (and so a scheduler autogroup) of its own
/// and give that autogroup nice `nice`. With autogroups on (Debian's
/// default), thread nice values only rank threads *inside* their autogroup;
/// without this, a busy-polling worker gets the same share of its core as
/// each unrelated build job on the machine (measured: ~10 %), while softirq
/// work - the kernel contender - is not subject to that sharing at all.
/// Returns whether the autogroup nice was set.
pub fn own_autogroup(nice: i32) -> bool {
    // SAFETY: setsid has no memory-safety preconditions; it fails harmlessly
    // (EPERM) if we already lead a process group, and the autogroup is then
    // the caller's session's.
    unsafe {
        libc::setsid();
    }
    std::fs::write("/proc/self/autogroup", nice.to_string()).is_ok()
}

/// Thread ids of this process whose name starts with `prefix`.
pub fn threads_named(prefix: &str) -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.starts_with(prefix) {
                if let Some(t) = e.file_name().to_str().and_then(|t| t.parse().ok()) {
                    v.push(t);
                }
            }
        }
    }
    v
}

/// The CPU the calling thread runs on right now.
pub fn current_cpu() -> i32 {
    // SAFETY: sched_getcpu has no preconditions.
    unsafe { libc::sched_getcpu() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksoftirqd_of_each_cpu_is_found_with_its_nice() {
        let (pid, nice) = ksoftirqd(0).expect("ksoftirqd/0 exists on Linux");
        assert!(pid > 0 && (-20..=19).contains(&nice));
        assert_eq!(ksoftirqd(100_000), None);
    }
}
