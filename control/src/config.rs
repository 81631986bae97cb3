//! loxilb's start-up files: `EPconfig.txt` (`{"Attr":[...]}`, probe entries)
//! then `lbconfig.txt` (`{"lbAttr":[...]}`, rules), read from `--config-path`,
//! and writing them back (`xlb save`).
//!
//! Entries go through exactly the checks a REST request gets, one at a time: a
//! bad entry is reported (file, index, reason) and skipped, the good ones load,
//! as loxilb does.
//!
//! Saving writes the two files as a pair. Both carry the same generation
//! (root key `"xlbSave"`, which loxilb and loxicmd ignore as they ignore
//! every unknown key). Both new files are written and synced as temporary
//! files first; then each replaces its file by a rename, the previous one
//! kept as `<name>.bk`. A save killed between the two renames leaves the
//! new `EPconfig.txt` beside the old `lbconfig.txt` and the new one's
//! temporary file, of the same generation: whoever reads the directory
//! next ([`load`], [`save`]) finishes that rename first ([`settle`]), so
//! xlb never loads a mixed pair. A temporary file of a save killed before
//! its first rename is discarded (that save never reported success).
//!
//! A save never replaces a file that cannot be read (not JSON, not the
//! expected document): a daemon started on it did not load it, and saving
//! what it runs would lose the original and, at the next save, its `.bk`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::controller::ControlState;
use crate::error::{ApiError, RuleError};
use crate::model::{parse_value, EpProbe, EpProbeList, EpStatusList, LbRule, LbRuleList};

/// Rule file name.
pub const LB_FILE: &str = "lbconfig.txt";
/// Probe-entry file name.
pub const EP_FILE: &str = "EPconfig.txt";
/// Default directory.
pub const DEFAULT_DIR: &str = "/etc/loxilb";
/// The root key holding a saved pair's generation (see the module doc).
pub const GENERATION_KEY: &str = "xlbSave";

/// A problem with a config file or one of its entries.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// the file cannot be read or is not the expected JSON document
    #[error("{}: {reason}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// one entry was rejected (the others still load)
    #[error("{}: entry {index}: {reason}", file.display())]
    Entry {
        /// The file.
        file: PathBuf,
        /// 0-based position in the array.
        index: usize,
        /// Why (the API's error text).
        reason: String,
    },
    /// saving would replace a file that cannot be read
    #[error(
        "{} cannot be read ({reason}): a daemon started on it did not load it, and saving would \
         replace it; fix it or move it aside, then save again",
        file.display()
    )]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// writing a file failed
    #[error("writing {}: {source}", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Probe entries loaded.
    pub endpoints: usize,
    /// Rules loaded.
    pub rules: usize,
    /// Everything that was rejected.
    pub errors: Vec<ConfigError>,
}

impl LoadReport {
    /// True if nothing was rejected.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The entries of `root_key` in `file`; `Ok(None)` if the file does not exist.
fn read_entries(file: &Path, root_key: &str) -> Result<Option<Vec<Value>>, ConfigError> {
    let text = match fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError::File {
                file: file.into(),
                reason: e.to_string(),
            })
        }
    };
    let bad = |reason: String| ConfigError::File {
        file: file.into(),
        reason,
    };
    let v: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let Value::Object(map) = v else {
        return Err(bad("not a JSON object".into()));
    };
    // Go matches the root key case-insensitively too.
    let entries = map
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(root_key))
        .map(|(_, v)| v);
    match entries {
        None | Some(Value::Null) => Ok(Some(Vec::new())),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(bad(format!("\"{root_key}\" is not an array"))),
    }
}

/// Apply one rule entry exactly as `POST /config/loadbalancer` would.
pub fn apply_rule(state: &mut ControlState, v: Value) -> Result<(), ApiError> {
    state.post_rule(parse_value::<LbRule>(v)?.validate()?)?;
    Ok(())
}

/// Apply one probe entry exactly as `POST /config/endpoint` would.
pub fn apply_probe(state: &mut ControlState, v: Value) -> Result<(), ApiError> {
    state.post_probe(parse_value::<EpProbe>(v)?.validate()?)?;
    Ok(())
}

/// Load `EPconfig.txt` then `lbconfig.txt` from `dir`. Missing files are fine.
/// All entries are applied with one table build; should that build fail (a
/// conflict only the whole set shows), they are replayed one by one so the
/// offending entry is the one reported.
pub fn load(state: &mut ControlState, dir: &Path) -> LoadReport {
    let mut file_errors = Vec::new();
    if let Err(e) = settle(dir) {
        file_errors.push(e);
    }
    let mut read = |name: &str, root: &str| {
        let file = dir.join(name);
        match read_entries(&file, root) {
            Ok(entries) => (file, entries.unwrap_or_default()),
            Err(e) => {
                file_errors.push(e);
                (file, Vec::new())
            }
        }
    };
    let eps = read(EP_FILE, "Attr");
    let rules = read(LB_FILE, "lbAttr");
    let mut report = match state.batch(|st| apply_all(st, &eps, &rules)) {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!("config: loading all entries at once failed ({e}); applying one by one");
            apply_all(state, &eps, &rules)
        }
    };
    file_errors.append(&mut report.errors);
    report.errors = file_errors;
    report
}

/// Load `lbconfig.txt` and `EPconfig.txt` from `dir` into a running state
/// (SIGHUP, `check-config`'s rules): every entry is applied as `load` does
/// (added, or replacing the entry of the same key; nothing else is
/// removed), or, if any entry or file is rejected, none is, and the error
/// names every rejection.
pub fn reload(state: &mut ControlState, dir: &Path) -> Result<LoadReport, RuleError> {
    state.all_or_nothing(|st| {
        let report = load(st, dir);
        if report.is_clean() {
            Ok(report)
        } else {
            let why: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
            Err(RuleError::ConfigRejected(format!(
                "{} entries rejected, nothing changed: {}",
                why.len(),
                why.join("; ")
            )))
        }
    })
}

type Entries = (PathBuf, Vec<Value>);

fn apply_all(state: &mut ControlState, eps: &Entries, rules: &Entries) -> LoadReport {
    let mut errors = Vec::new();
    let endpoints = apply_entries(state, eps, apply_probe, &mut errors);
    let rules = apply_entries(state, rules, apply_rule, &mut errors);
    LoadReport {
        endpoints,
        rules,
        errors,
    }
}

/// Apply each entry of one file; returns how many were accepted.
fn apply_entries(
    state: &mut ControlState,
    (file, entries): &Entries,
    apply: fn(&mut ControlState, Value) -> Result<(), ApiError>,
    errors: &mut Vec<ConfigError>,
) -> usize {
    let mut accepted = 0;
    for (index, e) in entries.iter().enumerate() {
        match apply(state, e.clone()) {
            // Already there as the file says (a reload): what it asks for.
            Ok(()) | Err(ApiError::Handler(RuleError::Exists)) => accepted += 1,
            Err(err) => errors.push(ConfigError::Entry {
                file: file.clone(),
                index,
                reason: err.to_string(),
            }),
        }
    }
    accepted
}

/// The documents `save` writes, from the GET answers: `managed` rules are left
/// out (their controller re-pushes them), live state and counters cleared.
pub fn saved_documents(rules: &LbRuleList, eps: &EpStatusList) -> (LbRuleList, EpProbeList) {
    let lb = LbRuleList {
        lb_attr: rules
            .lb_attr
            .iter()
            .filter(|r| !r.serviceargs.managed)
            .map(|r| {
                let mut r = r.clone();
                for e in &mut r.endpoints {
                    e.state.clear();
                    e.counter.clear();
                }
                r
            })
            .collect(),
    };
    let ep = EpProbeList {
        attr: eps.attr.iter().map(|e| e.to_probe()).collect(),
    };
    (lb, ep)
}

/// Write both files into `dir` as a pair (see the module doc); refused if a
/// file there cannot be read.
pub fn save(dir: &Path, rules: &LbRuleList, eps: &EpStatusList) -> Result<(), ConfigError> {
    save_some(dir, rules, eps, true, true).map(|_| ())
}

/// [`save`] of the rules (`lb`), the probe entries (`ep`) or both (loxicmd's
/// `save --lb`, `--endpoint`, `--all`); returns each file written with its
/// number of entries. Refused if a file it would replace cannot be read. A
/// lone `lbconfig.txt` takes the generation of the `EPconfig.txt` beside
/// it, so the two stay a pair.
pub fn save_some(
    dir: &Path,
    rules: &LbRuleList,
    eps: &EpStatusList,
    lb: bool,
    ep: bool,
) -> Result<Vec<(PathBuf, usize)>, ConfigError> {
    let (lb_doc, ep_doc) = saved_documents(rules, eps);
    settle(dir)?;
    let ep_file = dir.join(EP_FILE);
    let lb_file = dir.join(LB_FILE);
    for (file, root, on) in [(&ep_file, "Attr", ep), (&lb_file, "lbAttr", lb)] {
        if !on {
            continue;
        }
        if let Err(ConfigError::File { file, reason }) = read_entries(file, root) {
            return Err(ConfigError::Unreadable { file, reason });
        }
    }
    let fresh = || {
        format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id()
        )
    };
    let generation = if ep {
        fresh()
    } else {
        generation_of(&ep_file).unwrap_or_else(fresh)
    };
    let mut written = Vec::new();
    if ep {
        write_temporary(
            &ep_file,
            marked_text(&ep_file, &ep_doc, &generation)?.as_bytes(),
        )?;
    }
    if lb {
        write_temporary(
            &lb_file,
            marked_text(&lb_file, &lb_doc, &generation)?.as_bytes(),
        )?;
    }
    if ep {
        install(&ep_file)?;
        written.push((ep_file, ep_doc.attr.len()));
    }
    if lb {
        install(&lb_file)?;
        written.push((lb_file, lb_doc.lb_attr.len()));
    }
    Ok(written)
}

/// `doc` as pretty JSON with the pair's `generation` at its root.
fn marked_text<T: serde::Serialize>(
    file: &Path,
    doc: &T,
    generation: &str,
) -> Result<String, ConfigError> {
    let enc = |e: serde_json::Error| ConfigError::Write {
        file: file.into(),
        source: io::Error::other(e),
    };
    let mut v = serde_json::to_value(doc).map_err(enc)?;
    if let Value::Object(m) = &mut v {
        m.insert(GENERATION_KEY.into(), Value::String(generation.into()));
    }
    serde_json::to_string_pretty(&v).map_err(enc)
}

/// The pair generation a saved file carries, if it is readable and has one.
fn generation_of(file: &Path) -> Option<String> {
    let v: Value = serde_json::from_slice(&fs::read(file).ok()?).ok()?;
    Some(v.get(GENERATION_KEY)?.as_str()?.to_string())
}

/// Finish a save that was killed between its two renames (see the module
/// doc), and drop the temporary files of one killed before them.
pub fn settle(dir: &Path) -> Result<(), ConfigError> {
    let lb_file = dir.join(LB_FILE);
    let lb_tmp = temporary(&lb_file);
    if let Some(g) = generation_of(&dir.join(EP_FILE)) {
        if lb_tmp.exists()
            && generation_of(&lb_tmp).as_ref() == Some(&g)
            && generation_of(&lb_file).as_ref() != Some(&g)
        {
            tracing::warn!(
                dir = %dir.display(),
                "config: completing a save that was interrupted between its two files"
            );
            install(&lb_file)?;
        }
    }
    for file in [dir.join(EP_FILE), lb_file] {
        match fs::remove_file(temporary(&file)) {
            Ok(()) => tracing::info!(
                file = %file.display(),
                "config: discarded the temporary file of a save that did not finish"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Write { file, source }),
        }
    }
    Ok(())
}

/// Write `data` to `path` via a synced temporary file and a rename, keeping
/// the previous file as `<path>.bk`.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ConfigError> {
    write_temporary(path, data)?;
    install(path)
}

/// Where the next content of `path` waits for its rename.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Write and sync `path`'s temporary file.
fn write_temporary(path: &Path, data: &[u8]) -> Result<(), ConfigError> {
    let err = |source: io::Error| ConfigError::Write {
        file: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = fs::File::create(temporary(path)).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)
}

/// Replace `path` with its temporary file, keeping the previous one as
/// `<path>.bk`.
fn install(path: &Path) -> Result<(), ConfigError> {
    let err = |source: io::Error| ConfigError::Write {
        file: path.into(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bk = path.with_file_name(format!("{name}.bk"));
    if path.exists() {
        // A hard link keeps the old file in place until the rename replaces it,
        // so a reader never finds the file missing.
        match fs::remove_file(&bk) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        if fs::hard_link(path, &bk).is_err() {
            fs::copy(path, &bk).map_err(err)?;
        }
    }
    fs::rename(temporary(path), path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename durable; not all filesystems allow syncing a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("lbconfig.txt");
        write_atomic(&p, b"one").expect("write");
        assert!(!dir.path().join("lbconfig.txt.bk").exists());
        write_atomic(&p, b"two").expect("write");
        assert_eq!(fs::read_to_string(&p).expect("read"), "two\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("lbconfig.txt.bk")).expect("read"),
            "one\n"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    fn empty_lists() -> (LbRuleList, EpStatusList) {
        (
            LbRuleList { lb_attr: vec![] },
            EpStatusList { attr: vec![] },
        )
    }

    #[test]
    fn a_save_killed_between_its_renames_is_completed_not_mixed() {
        let dir = tempfile::tempdir().expect("tmp");
        let (rules, eps) = empty_lists();
        save(dir.path(), &rules, &eps).expect("first save");
        let (ep, lb) = (dir.path().join(EP_FILE), dir.path().join(LB_FILE));
        let old = generation_of(&lb).expect("marked");
        assert_eq!(generation_of(&ep), Some(old.clone()));
        // What a save killed after its first rename leaves.
        let text = |g: &str| format!("{{\"Attr\": [], \"{GENERATION_KEY}\": \"{g}\"}}");
        write_temporary(&ep, text("new").as_bytes()).expect("tmp");
        write_temporary(&lb, text("new").replace("Attr", "lbAttr").as_bytes()).expect("tmp");
        install(&ep).expect("first rename");
        assert_ne!(
            generation_of(&ep),
            generation_of(&lb),
            "mixed before settling"
        );
        settle(dir.path()).expect("settle");
        assert_eq!(generation_of(&ep).as_deref(), Some("new"));
        assert_eq!(generation_of(&lb).as_deref(), Some("new"));
        let bk = dir.path().join(format!("{LB_FILE}.bk"));
        assert_eq!(generation_of(&bk), Some(old), "the old rules are the .bk");
        assert!(!temporary(&lb).exists());
        // A save killed before its first rename: its files are dropped.
        write_temporary(&ep, text("lost").as_bytes()).expect("tmp");
        settle(dir.path()).expect("settle");
        assert!(!temporary(&ep).exists());
        assert_eq!(generation_of(&ep).as_deref(), Some("new"));
    }

    #[test]
    fn save_refuses_to_replace_a_file_it_cannot_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let lb = dir.path().join(LB_FILE);
        fs::write(&lb, "{ not json").expect("write");
        let (rules, eps) = empty_lists();
        for _ in 0..2 {
            let e = save(dir.path(), &rules, &eps).expect_err("refused");
            assert!(matches!(e, ConfigError::Unreadable { .. }), "{e}");
            assert!(e.to_string().contains("move it aside"), "{e}");
        }
        assert_eq!(fs::read_to_string(&lb).expect("read"), "{ not json");
        assert!(!dir.path().join(EP_FILE).exists(), "nothing half-saved");
    }
}
