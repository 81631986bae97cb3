//! loxilb's start-up files: `EPconfig.txt` (`{"Attr":[...]}`, probe entries)
//! then `lbconfig.txt` (`{"lbAttr":[...]}`, rules), read from `--config-path`,
//! and writing them back (`xlb save`).
//!
//! Entries go through exactly the checks a REST request gets, one at a time: a
//! bad entry is reported (file, index, reason) and skipped, the good ones load,
//! as loxilb does. Saving is atomic: a temporary file is written and synced,
//! the previous file is kept as `<name>.bk`, then the new one is renamed over.

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

/// Write both files into `dir` atomically (see the module doc).
pub fn save(dir: &Path, rules: &LbRuleList, eps: &EpStatusList) -> Result<(), ConfigError> {
    let (lb, ep) = saved_documents(rules, eps);
    let enc = |file: &Path, r: serde_json::Result<String>| {
        r.map_err(|e| ConfigError::Write {
            file: file.into(),
            source: io::Error::other(e),
        })
    };
    let ep_file = dir.join(EP_FILE);
    let lb_file = dir.join(LB_FILE);
    let ep_text = enc(&ep_file, serde_json::to_string_pretty(&ep))?;
    let lb_text = enc(&lb_file, serde_json::to_string_pretty(&lb))?;
    write_atomic(&ep_file, ep_text.as_bytes())?;
    write_atomic(&lb_file, lb_text.as_bytes())?;
    Ok(())
}

/// Write `data` to `path` via a synced temporary file and a rename, keeping
/// the previous file as `<path>.bk`.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ConfigError> {
    let err = |source: io::Error| ConfigError::Write {
        file: path.into(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let bk = path.with_file_name(format!("{name}.bk"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    {
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(data).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
        f.sync_all().map_err(err)?;
    }
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
    fs::rename(&tmp, path).map_err(err)?;
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
}
