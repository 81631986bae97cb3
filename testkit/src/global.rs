//! Locks on what every namespace shares, and guards for global kernel
//! settings.
//!
//! `cargo test` runs the tests of one binary on parallel threads and
//! nextest runs them in parallel processes, so a lock on a global resource
//! must hold across both: a [`GlobalLock`] is an exclusive `flock(2)` on a
//! file named after the resource (under `/run/xlb-testkit`), plus an
//! in-process table that makes it re-entrant for the thread that holds it —
//! a test may hold a lock across a call that takes the same lock.
//!
//! [`Sysctls`] holds the global-sysctl lock, records each setting's value
//! before its first change, and puts every one back when dropped (also when
//! the test panics). Use it for what is not per namespace: the conntrack
//! limits (`nf_conntrack_max`, the hash size), module parameters, anything
//! a child namespace sees read-only. Per-namespace settings go through
//! [`crate::Netns::sysctl`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::error::{Error, Result};
use crate::sys;

/// The lock every [`Sysctls`] guard holds.
pub const SYSCTL_LOCK: &str = "global-sysctls";

/// Where lock files live: root can always write /run, and it is emptied at
/// boot.
const LOCK_DIR: &str = "/run/xlb-testkit";

struct Held {
    owner: ThreadId,
    depth: usize,
    /// The flock'd file (`None` while its owner waits in flock); closing
    /// it releases the lock.
    _file: Option<File>,
}

static HELD: Mutex<BTreeMap<String, Held>> = Mutex::new(BTreeMap::new());
static RELEASED: Condvar = Condvar::new();

fn held() -> MutexGuard<'static, BTreeMap<String, Held>> {
    // Every change to the table is one call: a panic cannot leave it torn.
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_file(name: &str) -> Result<File> {
    let dir = if std::fs::create_dir_all(LOCK_DIR).is_ok() {
        PathBuf::from(LOCK_DIR)
    } else {
        let d = std::env::temp_dir().join("xlb-testkit");
        std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("creating {d:?}"), e))?;
        d
    };
    let path = dir.join(format!("{name}.lock"));
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {path:?}"), e))
}

/// An exclusive lock on the global resource it is named after, held until
/// dropped, across threads and processes; re-entrant on the holding thread.
#[derive(Debug)]
pub struct GlobalLock {
    name: String,
}

/// Take the lock on resource `name` (a file-name-safe word), blocking until
/// no other thread or process holds it.
pub fn lock(name: &str) -> Result<GlobalLock> {
    let me = std::thread::current().id();
    let mut table = held();
    loop {
        match table.get_mut(name) {
            Some(h) if h.owner == me => {
                h.depth += 1;
                return Ok(GlobalLock {
                    name: name.to_string(),
                });
            }
            Some(_) => {
                table = RELEASED.wait(table).unwrap_or_else(|p| p.into_inner());
            }
            None => break,
        }
    }
    // Claim the name in the table first (other threads of this process wait
    // on the table), then wait in flock for other processes with the table
    // unlocked, so threads taking or releasing other locks are not held up.
    table.insert(
        name.to_string(),
        Held {
            owner: me,
            depth: 1,
            _file: None,
        },
    );
    drop(table);
    let file = lock_file(name).and_then(|f| {
        sys::flock_exclusive(&f)
            .map(|()| f)
            .map_err(|e| Error::io(format!("flock {name}"), e))
    });
    let mut table = held();
    match file {
        Ok(f) => {
            if let Some(h) = table.get_mut(name) {
                h._file = Some(f);
            }
            Ok(GlobalLock {
                name: name.to_string(),
            })
        }
        Err(e) => {
            table.remove(name);
            RELEASED.notify_all();
            Err(e)
        }
    }
}

impl Drop for GlobalLock {
    fn drop(&mut self) {
        let mut table = held();
        let last = match table.get_mut(&self.name) {
            Some(h) => {
                h.depth -= 1;
                h.depth == 0
            }
            None => false,
        };
        if last {
            // Dropping the entry closes the file: the flock goes with it.
            table.remove(&self.name);
            RELEASED.notify_all();
        }
    }
}

/// Changes to global kernel settings, made under [`SYSCTL_LOCK`] and undone
/// on drop, last change first.
#[derive(Debug)]
pub struct Sysctls {
    /// What changed, in change order.
    restore: Vec<Change>,
    _lock: GlobalLock,
}

/// One setting changed by a [`Sysctls`].
#[derive(Debug)]
struct Change {
    /// Where the setting is read.
    key: PathBuf,
    /// The file written (and written back).
    write: PathBuf,
    /// Its value before the first change.
    before: String,
}

/// `/proc/sys/a/b/c` for `a.b.c`; paths pass through.
fn sysctl_path(key: &str) -> PathBuf {
    if key.starts_with('/') {
        PathBuf::from(key)
    } else {
        Path::new("/proc/sys").join(key.replace('.', "/"))
    }
}

impl Sysctls {
    /// Take the global-sysctl lock (blocking while another test or process
    /// holds it).
    pub fn lock() -> Result<Sysctls> {
        Ok(Sysctls {
            restore: Vec::new(),
            _lock: lock(SYSCTL_LOCK)?,
        })
    }

    /// The current value of `key` (`net.netfilter.nf_conntrack_max`, or a
    /// path under /proc or /sys), trimmed.
    pub fn read(&self, key: &str) -> Result<String> {
        read(key)
    }

    /// [`Sysctls::read`] as a number.
    pub fn read_u64(&self, key: &str) -> Result<u64> {
        read_u64(key)
    }

    /// Set `key` to `value`, remembering its value before the first change.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.set_through(key, key, value)
    }

    /// Set the setting read at `key` by writing `value` to `write` (another
    /// file behind the same setting, e.g. a module parameter); restored the
    /// same way.
    pub fn set_through(&mut self, key: &str, write: &str, value: &str) -> Result<()> {
        let before = read(key)?;
        let path = sysctl_path(write);
        std::fs::write(&path, value)
            .map_err(|e| Error::io(format!("writing {value} to {path:?}"), e))?;
        if !self.restore.iter().any(|c| c.write == path) {
            self.restore.push(Change {
                key: sysctl_path(key),
                write: path,
                before,
            });
        }
        Ok(())
    }

    /// What changed: (setting's file, value before), in change order.
    pub fn changed(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.restore
            .iter()
            .map(|c| (c.key.as_path(), c.before.as_str()))
    }

    /// The value `key` had before this guard first changed it, if it did.
    pub fn before(&self, key: &str) -> Option<&str> {
        let key = sysctl_path(key);
        self.restore
            .iter()
            .find(|c| c.key == key)
            .map(|c| c.before.as_str())
    }
}

impl Drop for Sysctls {
    fn drop(&mut self) {
        for c in self.restore.drain(..).rev() {
            if let Err(e) = std::fs::write(&c.write, &c.before) {
                eprintln!(
                    "xlb-testkit: could not restore {:?} to {}: {e}",
                    c.write, c.before
                );
            }
        }
    }
}

/// The current value of global setting `key` (see [`Sysctls::read`]),
/// without the lock.
pub fn read(key: &str) -> Result<String> {
    let path = sysctl_path(key);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io(format!("reading {path:?}"), e))
}

/// [`read`] as a number.
pub fn read_u64(key: &str) -> Result<u64> {
    let v = read(key)?;
    v.parse().map_err(|_| Error::Output {
        cmd: format!("cat {:?}", sysctl_path(key)),
        detail: format!("{v:?} is not a number"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn keys_map_to_proc_sys_and_paths_pass_through() {
        assert_eq!(
            sysctl_path("net.netfilter.nf_conntrack_max"),
            Path::new("/proc/sys/net/netfilter/nf_conntrack_max")
        );
        assert_eq!(
            sysctl_path("/sys/module/nf_conntrack/parameters/hashsize"),
            Path::new("/sys/module/nf_conntrack/parameters/hashsize")
        );
    }

    #[test]
    fn the_lock_is_reentrant_on_its_thread_and_exclusive_across_threads() {
        // One name for every run: the lock file stays, as the others do.
        let name = "testkit-selftest".to_string();
        let outer = lock(&name).expect("lock");
        let inner = lock(&name).expect("re-entrant");
        let other_has_it = Arc::new(AtomicBool::new(false));
        let flag = other_has_it.clone();
        let n2 = name.clone();
        let t = std::thread::spawn(move || {
            let _g = lock(&n2).expect("lock from another thread");
            flag.store(true, Ordering::SeqCst);
        });
        drop(inner);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !other_has_it.load(Ordering::SeqCst),
            "still held by the outer guard"
        );
        drop(outer);
        t.join().expect("other thread");
        assert!(other_has_it.load(Ordering::SeqCst));
    }
}
