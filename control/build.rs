//! Build script: the commit xlb is built from, for `xlb --version`,
//! `GET /version` and the `xlb_build_info` metric.
//!
//! `XLB_GIT_COMMIT` in the environment wins (a build from a source tarball
//! or a package builder that knows the commit); else `git rev-parse`; else
//! "unknown" (no git, or not a checkout).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=XLB_GIT_COMMIT");
    let commit = std::env::var("XLB_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=XLB_GIT_COMMIT={commit}");
    // Build again when HEAD moves: HEAD itself (a checkout) and the branch
    // it points at (a commit). Without git, nothing to watch.
    // (Only paths that exist: cargo runs a script again on every build
    // while a path it watches is missing.)
    let mut watch = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watch.push(format!("{dir}/HEAD"));
    }
    if let (Some(common), Some(branch)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        watch.push(format!("{common}/{branch}"));
        watch.push(format!("{common}/packed-refs"));
    }
    for path in watch {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
