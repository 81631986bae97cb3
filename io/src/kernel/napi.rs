//! Device NAPI settings for preferred busy polling.
//!
//! With `SO_PREFER_BUSY_POLL` a worker's own syscalls run its receive queue's
//! NAPI. Between two such calls the kernel would otherwise hand the queue back
//! to its interrupt (on veth: to the sending side's softirq, on the sender's
//! core). `napi_defer_hard_irqs` and `gro_flush_timeout` make it wait for the
//! worker instead, with a timer as the fallback, so receive processing stays on
//! the worker's core. The kernel's AF_XDP documentation suggests 2 and 200 µs.
//! Busy polling also needs the driver to give the sockets a NAPI id; veth's
//! get none, and there only the deferral timer runs the queue (the worker
//! warns, see `XskIo`'s NAPI check).
//!
//! Settings are changed only where they are 0 (the kernel's default), so a
//! value the operator chose is kept; the old values come back when the
//! [`NapiTuning`] is dropped. They are written through sysfs, which shows the
//! network namespace it was mounted in, not necessarily the caller's (a
//! thread that entered a namespace with `setns` still sees the old `/sys`;
//! `ip netns exec` mounts a fresh one). So an interface is changed only when
//! its sysfs entry has the index and MAC address the caller's namespace gives
//! it; otherwise a log line says what to set by hand.

use std::path::PathBuf;

use super::netinfo::IfaceInfo;

/// `napi_defer_hard_irqs` to set where it is 0.
pub const DEFER_HARD_IRQS: u32 = 2;
/// `gro_flush_timeout` (ns) to set where it is 0.
pub const GRO_FLUSH_TIMEOUT_NS: u32 = 200_000;

/// Settings changed on the interfaces; restored on drop.
#[derive(Debug, Default)]
pub struct NapiTuning {
    saved: Vec<(PathBuf, String)>,
}

/// Whether `/sys/class/net/<name>` is this interface (same index and MAC),
/// i.e. sysfs shows the caller's network namespace.
fn sysfs_is(info: &IfaceInfo) -> bool {
    let dir = PathBuf::from(format!("/sys/class/net/{}", info.name));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_string());
    match (read("ifindex"), read("address")) {
        (Ok(i), Ok(a)) => {
            i == info.ifindex.to_string() && a.eq_ignore_ascii_case(&info.mac.to_string())
        }
        _ => false,
    }
}

impl NapiTuning {
    /// Apply the settings to `ifaces` (see the module docs).
    pub fn apply(ifaces: &[IfaceInfo]) -> NapiTuning {
        let mut t = NapiTuning::default();
        for info in ifaces {
            let iface = info.name.as_str();
            if !sysfs_is(info) {
                tracing::info!(
                    iface,
                    "busy polling: /sys shows another network namespace; for receive work to \
                     stay on the workers' cores set napi_defer_hard_irqs={DEFER_HARD_IRQS} and \
                     gro_flush_timeout={GRO_FLUSH_TIMEOUT_NS} on it yourself (e.g. ip netns exec \
                     <ns> sh -c 'echo 2 > /sys/class/net/<if>/napi_defer_hard_irqs')"
                );
                continue;
            }
            for (attr, value) in [
                ("napi_defer_hard_irqs", DEFER_HARD_IRQS),
                ("gro_flush_timeout", GRO_FLUSH_TIMEOUT_NS),
            ] {
                let path = PathBuf::from(format!("/sys/class/net/{iface}/{attr}"));
                let old = match std::fs::read_to_string(&path) {
                    Ok(s) => s.trim().to_string(),
                    Err(e) => {
                        tracing::warn!(iface, attr, error = %e, "busy polling: cannot read NAPI setting");
                        continue;
                    }
                };
                if old != "0" {
                    continue;
                }
                match std::fs::write(&path, value.to_string()) {
                    Ok(()) => t.saved.push((path, old)),
                    Err(e) => {
                        tracing::warn!(iface, attr, error = %e, "busy polling: cannot set NAPI setting")
                    }
                }
            }
        }
        t
    }
}

impl Drop for NapiTuning {
    fn drop(&mut self) {
        for (path, old) in self.saved.drain(..) {
            if let Err(e) = std::fs::write(&path, &old) {
                tracing::warn!(path = %path.display(), error = %e, "could not restore NAPI setting");
            }
        }
    }
}
