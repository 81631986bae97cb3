//! The record of what this xlb changed on the host, kept where a restarted
//! xlb finds it: the addresses it added (and on which interface), the XDP
//! programs it attached, and whether it needs the source-NAT ports kept in
//! `ip_local_reserved_ports`. However an xlb ends — a clean stop, a fatal
//! error, a panic (in release builds, which abort on one, the panic hook
//! undoes the record first), SIGKILL — exactly what it added goes: by itself on the way out,
//! or by the next xlb in the namespace, which sweeps the records of dead
//! ones before it starts.
//!
//! Layout, in [`xlb_io::xdp::owner::state_dir`] (one per network namespace):
//! `ledger-<pid>.json` (the record, replaced atomically on every change),
//! `ledger-<pid>.alive` (flock'd by its owner for its whole life: a record
//! whose lock can be taken is a dead xlb's), `reserved-ports.json` (what the
//! operator had in `ip_local_reserved_ports` before the first xlb added to
//! it, and which live xlbs need the range), and `.lock`, held while any of
//! them is read and changed together. The last xlb of a namespace to end
//! removes the directory.
//!
//! Invariants: xlb never removes an address that is not both in a record
//! and still marked as xlb's ([`addr::XLB_PROTO`]), never detaches a
//! program other than the one it recorded (by the kernel's program id), and
//! removes from `ip_local_reserved_ports` only the ports it added when no
//! live xlb needs them any more, leaving whatever the operator has there.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use xlb_io::kernel::addr;
use xlb_io::xdp::owner::{state_dir, unix_now_s};

/// The kernel's list of ports its own connections never pick as a source.
const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Why the record could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// the state directory or a file in it could not be used
    #[error("xlb's state in {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system's answer.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One xlb's record.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Its process id.
    pub pid: u32,
    /// When it started (Unix seconds).
    pub since: u64,
    /// Addresses it added: (interface index, address).
    pub addrs: BTreeSet<(u32, IpAddr)>,
    /// XDP programs it attached: (interface index, the kernel's program id).
    pub xdp: Vec<(u32, u32)>,
    /// The port range it keeps in `ip_local_reserved_ports`, if any.
    pub reserved_ports: Option<(u16, u16)>,
}

/// `reserved-ports.json`: shared by every xlb of the namespace.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PortsRecord {
    /// The setting before the first xlb added to it.
    before: String,
    /// The records (file stems) of the xlbs that need the range.
    users: BTreeSet<String>,
}

/// This process's record, kept on disk as it changes.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    name: String,
    record: Mutex<Record>,
    /// Held (flock'd) while this xlb lives.
    _alive: File,
}

/// Where the panic hook finds this process's record.
static MINE: OnceLock<(PathBuf, String)> = OnceLock::new();

impl Ledger {
    /// Sweep the records of dead xlbs in this namespace (undoing what they
    /// left), then start this process's own, empty.
    pub fn open() -> Result<Ledger, LedgerError> {
        let dir = state_dir().map_err(io_err(Path::new("/run/xlb")))?;
        Ledger::open_in(&dir)
    }

    fn open_in(dir: &Path) -> Result<Ledger, LedgerError> {
        if let Some(base) = dir.parent() {
            forget_gone_namespaces(base, dir);
        }
        let _guard = dir_lock(dir)?;
        sweep_dead(dir);
        let name = format!("ledger-{}", std::process::id());
        let alive_path = dir.join(format!("{name}.alive"));
        let alive = File::create(&alive_path).map_err(io_err(&alive_path))?;
        alive.lock().map_err(io_err(&alive_path))?;
        let ledger = Ledger {
            dir: dir.to_path_buf(),
            name,
            record: Mutex::new(Record {
                pid: std::process::id(),
                since: unix_now_s(),
                ..Record::default()
            }),
            _alive: alive,
        };
        ledger.persist(&ledger.lock())?;
        // Only where a panic ends the process (release builds): where it
        // unwinds, a caught panic (an API task's) must not tear the host
        // down under a daemon that goes on, and the destructors run anyway.
        if cfg!(panic = "abort") && MINE.set((ledger.dir.clone(), ledger.name.clone())).is_ok() {
            install_panic_hook();
        }
        Ok(ledger)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, r: &Record) -> Result<(), LedgerError> {
        write_json(&self.dir.join(format!("{}.json", self.name)), r)
    }

    /// The addresses this xlb holds now are `held`.
    pub fn set_addrs(&self, held: impl IntoIterator<Item = (u32, IpAddr)>) {
        let mut r = self.lock();
        let new: BTreeSet<_> = held.into_iter().collect();
        if new != r.addrs {
            r.addrs = new;
            if let Err(e) = self.persist(&r) {
                tracing::warn!("recording the addresses xlb holds: {e}");
            }
        }
    }

    /// This xlb attached these programs ((interface index, program id)).
    pub fn set_programs(&self, progs: Vec<(u32, u32)>) {
        let mut r = self.lock();
        r.xdp = progs;
        if let Err(e) = self.persist(&r) {
            tracing::warn!("recording the XDP programs xlb attached: {e}");
        }
    }

    /// Addresses marked as xlb's that a live xlb other than this one holds.
    pub fn held_by_others(&self) -> BTreeSet<(u32, IpAddr)> {
        let Ok(_guard) = dir_lock(&self.dir) else {
            return BTreeSet::new();
        };
        records(&self.dir)
            .into_iter()
            .filter(|(name, _)| *name != self.name && alive(&self.dir, name))
            .flat_map(|(_, r)| r.addrs)
            .collect()
    }

    /// Keep `lo..=hi` in `ip_local_reserved_ports`, merged with what is
    /// there (an operator's ranges stay), until this xlb ends.
    pub fn reserve_ports(&self, lo: u16, hi: u16) -> Result<(), LedgerError> {
        let _guard = dir_lock(&self.dir)?;
        let path = self.dir.join("reserved-ports.json");
        let mut shared: PortsRecord = read_json(&path).unwrap_or_default();
        shared.users.retain(|u| alive(&self.dir, u));
        let current =
            fs::read_to_string(RESERVED_PORTS).map_err(io_err(Path::new(RESERVED_PORTS)))?;
        if shared.users.is_empty() {
            shared.before = current.trim().to_string();
        }
        let mut want = Ranges::parse(&current);
        want.add(lo, hi);
        let want = want.to_string();
        if want != Ranges::parse(&current).to_string() {
            fs::write(RESERVED_PORTS, &want).map_err(io_err(Path::new(RESERVED_PORTS)))?;
        }
        shared.users.insert(self.name.clone());
        write_json(&path, &shared)?;
        let mut r = self.lock();
        r.reserved_ports = Some((lo, hi));
        self.persist(&r)
    }

    /// This xlb is ending and has removed its addresses and programs:
    /// give the reserved ports back and drop the record.
    fn close(&self) {
        let Ok(_guard) = dir_lock(&self.dir) else {
            return;
        };
        let r = self.lock().clone();
        release_ports(&self.dir, &self.name, r.reserved_ports);
        remove_record(&self.dir, &self.name);
        remove_if_last(&self.dir);
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
}

/// The lock on the whole directory, held while records are read and
/// changed together.
fn dir_lock(dir: &Path) -> Result<File, LedgerError> {
    let path = dir.join(".lock");
    loop {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let f = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            // The last xlb of the namespace removed the directory meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        f.lock().map_err(io_err(&path))?;
        // Holding a lock file the last xlb removed while we waited would
        // lock out nobody: take the one at the path.
        let held = f.metadata().map_err(io_err(&path))?;
        if fs::metadata(&path).is_ok_and(|m| m.ino() == held.ino() && m.dev() == held.dev()) {
            return Ok(f);
        }
    }
}

/// Remove the namespace's directory when this was its last xlb (nothing
/// but the directory lock, which the caller holds, is left), so that
/// namespaces that come and go leave nothing in `/run/xlb`.
fn remove_if_last(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    if entries.flatten().all(|e| e.file_name() == ".lock") {
        let _ = fs::remove_file(dir.join(".lock"));
        let _ = fs::remove_dir(dir);
    }
}

/// Remove the directories of namespaces that no longer exist (an xlb
/// killed in a container's namespace, and the namespace deleted after):
/// what their records name went with the namespace, and no xlb will ever
/// start there to sweep them.
fn forget_gone_namespaces(base: &Path, mine: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let live = live_namespaces();
    for e in entries.flatten() {
        let ino = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("net-"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(ino) = ino {
            if !live.contains(&ino) && e.path() != mine {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The inodes of every network namespace in use: any thread's, and those
/// kept by `ip netns` (a namespace with neither has no process to run an
/// xlb in).
fn live_namespaces() -> BTreeSet<u64> {
    let mut live = BTreeSet::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = fs::metadata(p) {
            live.insert(m.ino());
        }
    };
    for named in ["/run/netns", "/var/run/netns"] {
        for e in fs::read_dir(named).into_iter().flatten().flatten() {
            add(e.path());
        }
    }
    for pid in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let tasks = pid.path().join("task");
        for t in fs::read_dir(tasks).into_iter().flatten().flatten() {
            add(t.path().join("ns/net"));
        }
    }
    live
}

/// Whether the xlb of record `name` lives (holds its `.alive` lock).
fn alive(dir: &Path, name: &str) -> bool {
    let Ok(f) = File::open(dir.join(format!("{name}.alive"))) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// Every record in `dir`, by name.
fn records(dir: &Path) -> Vec<(String, Record)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = file.strip_prefix("ledger-")?.strip_suffix(".json")?;
            let name = format!("ledger-{name}");
            read_json(&e.path()).map(|r| (name, r))
        })
        .collect()
}

/// Undo and remove the records of dead xlbs. Called with the directory
/// locked.
fn sweep_dead(dir: &Path) {
    for (name, r) in records(dir) {
        if alive(dir, &name) {
            continue;
        }
        tracing::info!(
            pid = r.pid,
            "removing what an xlb that ended without cleaning up left"
        );
        undo(&r);
        release_ports(dir, &name, r.reserved_ports);
        remove_record(dir, &name);
    }
}

/// Remove a record's addresses (those still marked as xlb's) and detach its
/// programs (those still attached).
fn undo(r: &Record) {
    for &(ifindex, a) in &r.addrs {
        let still_ours = addr::marked(ifindex).is_ok_and(|m| m.contains(&a));
        if still_ours {
            match addr::del(ifindex, a) {
                Ok(_) => {
                    tracing::info!(addr = %a, ifindex, "removed an address a previous xlb left")
                }
                Err(e) => {
                    tracing::warn!(addr = %a, ifindex, "removing an address left behind: {e}")
                }
            }
        }
    }
    for &(ifindex, id) in &r.xdp {
        match xlb_io::detach_if(ifindex, id) {
            Ok(true) => tracing::info!(
                ifindex,
                prog_id = id,
                "detached an XDP program a previous xlb left"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                ifindex,
                prog_id = id,
                "detaching an XDP program left behind: {e}"
            ),
        }
    }
}

/// `name` no longer needs `range`: when no live xlb does, take out of
/// `ip_local_reserved_ports` the ports of it the operator did not have.
/// Called with the directory locked.
fn release_ports(dir: &Path, name: &str, range: Option<(u16, u16)>) {
    let Some((lo, hi)) = range else { return };
    let path = dir.join("reserved-ports.json");
    let Some(mut shared) = read_json::<PortsRecord>(&path) else {
        return;
    };
    shared.users.remove(name);
    shared.users.retain(|u| alive(dir, u));
    if !shared.users.is_empty() {
        let _ = write_json(&path, &shared);
        return;
    }
    let Ok(current) = fs::read_to_string(RESERVED_PORTS) else {
        return;
    };
    let mut now = Ranges::parse(&current);
    let mut ours = Ranges::default();
    ours.add(lo, hi);
    ours.remove(&Ranges::parse(&shared.before));
    now.remove(&ours);
    if let Err(e) = fs::write(RESERVED_PORTS, now.to_string()) {
        tracing::warn!("giving back the NAT ports in {RESERVED_PORTS}: {e}");
    }
    let _ = fs::remove_file(&path);
}

fn remove_record(dir: &Path, name: &str) {
    let _ = fs::remove_file(dir.join(format!("{name}.json")));
    let _ = fs::remove_file(dir.join(format!("{name}.alive")));
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Replace `path` with `v` as JSON, atomically (a reader sees the old or
/// the new record, never half of one).
fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), LedgerError> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec(v).map_err(|e| LedgerError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&text).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Before the process aborts on a panic (release builds abort; nothing
/// unwinds to the destructors), undo this process's record from its file.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some((dir, name)) = MINE.get() {
            if let Some(r) = read_json::<Record>(&dir.join(format!("{name}.json"))) {
                undo(&r);
                // Another thread of this process may hold the directory
                // lock: then the next xlb gives the ports back.
                if let Ok(f) = File::open(dir.join(".lock")) {
                    if f.try_lock().is_ok() {
                        release_ports(dir, name, r.reserved_ports);
                        remove_record(dir, name);
                    }
                }
            }
        }
        previous(info);
    }));
}

/// A set of ports as `ip_local_reserved_ports` writes it: `1,2-4,10`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges(Vec<(u16, u16)>);

impl Ranges {
    /// Parse the kernel's form; anything unreadable is left out.
    pub fn parse(s: &str) -> Ranges {
        let mut r = Ranges::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                r.add(a.min(b), a.max(b));
            }
        }
        r
    }

    /// Add `lo..=hi`.
    pub fn add(&mut self, lo: u16, hi: u16) {
        self.0.push((lo, hi));
        self.0.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(self.0.len());
        for &(a, b) in &self.0 {
            match out.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.0 = out;
    }

    /// Take out every port of `other`.
    pub fn remove(&mut self, other: &Ranges) {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut pieces = vec![(u32::from(a), u32::from(b))];
            for &(x, y) in &other.0 {
                let (x, y) = (u32::from(x), u32::from(y));
                pieces = pieces
                    .into_iter()
                    .flat_map(|(a, b)| {
                        let mut keep = Vec::new();
                        if y < a || x > b {
                            keep.push((a, b));
                        } else {
                            if a < x {
                                keep.push((a, x - 1));
                            }
                            if y < b {
                                keep.push((y + 1, b));
                            }
                        }
                        keep
                    })
                    .collect();
            }
            out.extend(pieces.into_iter().map(|(a, b)| (a as u16, b as u16)));
        }
        self.0 = out;
    }
}

impl std::fmt::Display for Ranges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_subtract_as_the_kernel_writes_them() {
        let mut r = Ranges::parse("30000-32767, 8080\n");
        r.add(40000, 59999);
        assert_eq!(r.to_string(), "8080,30000-32767,40000-59999");
        r.add(59990, 60010);
        r.add(60011, 60011);
        assert_eq!(r.to_string(), "8080,30000-32767,40000-60011");
        let mut ours = Ranges::default();
        ours.add(40000, 59999);
        ours.remove(&Ranges::parse("45000-45010"));
        assert_eq!(ours.to_string(), "40000-44999,45011-59999");
        r.remove(&ours);
        assert_eq!(r.to_string(), "8080,30000-32767,45000-45010,60000-60011");
        assert_eq!(Ranges::parse("").to_string(), "");
    }

    #[test]
    fn a_dead_record_is_swept_and_a_live_one_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        // A dead xlb's record: nobody holds its lock. Its address is not
        // on any interface, so undoing it changes nothing on the host.
        let dead = Record {
            pid: 1,
            addrs: [(u32::MAX, "192.0.2.77".parse().expect("ip"))].into(),
            ..Record::default()
        };
        write_json(&dir.path().join("ledger-1.json"), &dead).expect("write");
        File::create(dir.path().join("ledger-1.alive")).expect("alive");
        let me = Ledger::open_in(dir.path()).expect("open");
        assert!(!dir.path().join("ledger-1.json").exists(), "swept");
        let mine = dir
            .path()
            .join(format!("ledger-{}.json", std::process::id()));
        me.set_addrs([(1, "192.0.2.1".parse().expect("ip"))]);
        let r: Record = read_json(&mine).expect("record");
        assert_eq!(r.addrs.len(), 1);
        assert!(alive(dir.path(), &me.name));
        drop(me);
        assert!(!mine.exists(), "a clean end removes the record");
        assert!(!dir.path().exists(), "and the last one its directory");
        let again = Ledger::open_in(dir.path()).expect("a later xlb recreates it");
        drop(again);
    }
}
