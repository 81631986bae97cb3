//! Who serves an interface: one xlb at a time. A daemon takes an
//! [`InterfaceLock`] on every interface before it touches its XDP program,
//! and holds it for as long as it lives.
//!
//! The lock is an exclusive `flock(2)` on a file per interface under
//! [`state_dir`], which also records the owner's pid and start time for the
//! error a second daemon prints. The kernel drops a flock with the last
//! descriptor of its file, so when an owner dies however it dies (SIGKILL
//! included) the next daemon takes the lock and knows that any program
//! still attached is stale; while the owner lives, no other xlb can mistake
//! its program for a leftover and detach it.
//!
//! Invariants: the lock file's path names the network namespace (by its
//! inode) and the interface index, since interface names and indexes are
//! per namespace; a holder unlinks its file before it unlocks it, and a
//! taker checks after locking that the file it holds is still the one at
//! the path, so two takers can never each hold a different file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where xlb keeps what it must find again after a crash, by default: root
/// can always write `/run`, and it is emptied at boot, as the state is.
pub const DEFAULT_STATE_BASE: &str = "/run/xlb";

/// The environment variable that moves [`DEFAULT_STATE_BASE`] (tests, or
/// hosts with another runtime directory).
pub const STATE_BASE_ENV: &str = "XLB_STATE_DIR";

/// Why an interface could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// another live xlb serves the interface
    #[error(
        "interface {iface} is already served by another xlb (pid {pid}, serving it for {age_s} s); \
         stop that one first (its lock is {})",
        path.display()
    )]
    Busy {
        /// Interface name.
        iface: String,
        /// The owner's process id, as it recorded it.
        pid: u32,
        /// How long the owner has held the interface.
        age_s: u64,
        /// The lock file.
        path: PathBuf,
    },
    /// the lock file could not be created or locked
    #[error("claiming interface {iface} ({}): {source}", path.display())]
    Io {
        /// Interface name.
        iface: String,
        /// The lock file.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: std::io::Error,
    },
}

/// The directory of xlb's state for the calling thread's network namespace:
/// `/run/xlb/net-<inode>` (or under `$XLB_STATE_DIR`), created if missing.
pub fn state_dir() -> std::io::Result<PathBuf> {
    let base = std::env::var_os(STATE_BASE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_BASE));
    let ns = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    let dir = base.join(format!("net-{ns}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Seconds since the Unix epoch.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An exclusive claim on one interface for this process, released when
/// dropped (or when the process dies).
#[derive(Debug)]
pub struct InterfaceLock {
    file: File,
    path: PathBuf,
}

impl InterfaceLock {
    /// Claim interface `iface` (index `ifindex`) for this process, or say
    /// which live xlb holds it.
    pub fn claim(iface: &str, ifindex: u32) -> Result<InterfaceLock, OwnerError> {
        let dir = state_dir().map_err(|source| OwnerError::Io {
            iface: iface.to_string(),
            path: PathBuf::from(DEFAULT_STATE_BASE),
            source,
        })?;
        Self::claim_in(&dir, iface, ifindex)
    }

    fn claim_in(dir: &Path, iface: &str, ifindex: u32) -> Result<InterfaceLock, OwnerError> {
        let io_err = |path: &Path, source| OwnerError::Io {
            iface: iface.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let path = dir.join(format!("if{ifindex}.lock"));
        loop {
            let mut file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            {
                Ok(f) => f,
                // The last xlb of the namespace removed the directory.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
                    continue;
                }
                Err(e) => return Err(io_err(&path, e)),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let (pid, since) = parse_owner(&text);
                    return Err(OwnerError::Busy {
                        iface: iface.to_string(),
                        pid,
                        age_s: unix_now_s().saturating_sub(since),
                        path,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_err(&path, e)),
            }
            // The holder before us may have unlinked the file between our
            // open and our lock: then we hold a file nobody else finds.
            let held = file.metadata().map_err(|e| io_err(&path, e))?;
            match std::fs::metadata(&path) {
                Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {}
                _ => continue,
            }
            file.set_len(0).map_err(|e| io_err(&path, e))?;
            writeln!(
                file,
                "pid={} since={} iface={iface}",
                std::process::id(),
                unix_now_s()
            )
            .map_err(|e| io_err(&path, e))?;
            return Ok(InterfaceLock { file, path });
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InterfaceLock {
    fn drop(&mut self) {
        // Unlink while still locked (see the module invariants); closing
        // the file then releases the lock.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
        // The namespace's directory too, if nothing else is in it.
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// `(pid, since)` from a lock file's `pid=N since=S ...` line (0 when absent).
fn parse_owner(text: &str) -> (u32, u64) {
    let field = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("pid=") as u32, field("since="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_names_the_owner_and_a_released_one_is_free() {
        // A private directory: the interface is only a label here.
        let base = tempfile_dir();
        let claim = || InterfaceLock::claim_in(&base, "test0", 999_999);
        let first = claim().expect("first claim");
        let path = first.path().to_path_buf();
        // flock is per open file: a second open in this process conflicts
        // exactly as another process's would.
        match claim() {
            Err(OwnerError::Busy { iface, pid, .. }) => {
                assert_eq!(iface, "test0");
                assert_eq!(pid, std::process::id());
            }
            other => panic!("second claim: {other:?}"),
        }
        let msg = claim().expect_err("busy").to_string();
        assert!(
            msg.contains("test0") && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        assert!(!path.exists(), "the lock file goes with its holder");
        let again = claim().expect("free again");
        drop(again);
        let _ = std::fs::remove_dir_all(&base);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("xlb-owner-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }
}
