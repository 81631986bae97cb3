//! Commands run to completion: `ip`, `ethtool`, `nft`, `sysctl` and the
//! like, on the host or (through `ip netns exec`) inside a namespace. A
//! command that exits non-zero is an [`Error::Command`] carrying its stderr.
//! Like every process the kit starts, a command inherits no descriptor of
//! the test process but stdio.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

/// `args` as one readable command line, for errors.
pub(crate) fn line(args: &[&str]) -> String {
    args.join(" ")
}

/// Run `args` (program first) and return what it printed, or
/// [`Error::Command`] with its stderr if it failed.
pub fn sh(args: &[&str]) -> Result<String> {
    checked(args, output(args)?)
}

/// Run `args` and return its raw output, whatever its exit status; only
/// failing to start it is an error.
pub fn output(args: &[&str]) -> Result<Output> {
    let (prog, rest) = args.split_first().ok_or_else(|| Error::Output {
        cmd: String::new(),
        detail: "empty command".into(),
    })?;
    let mut c = Command::new(prog);
    c.args(rest).stdin(Stdio::null());
    crate::sys::close_inherited_fds(&mut c);
    c.output().map_err(|source| Error::Spawn {
        cmd: line(args),
        source,
    })
}

/// [`sh`] with `input` on the command's stdin (e.g. `nft -f -`).
pub fn sh_with_input(args: &[&str], input: &str) -> Result<String> {
    let (prog, rest) = args.split_first().ok_or_else(|| Error::Output {
        cmd: String::new(),
        detail: "empty command".into(),
    })?;
    let spawn_err = |source| Error::Spawn {
        cmd: line(args),
        source,
    };
    let mut c = Command::new(prog);
    c.args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::sys::close_inherited_fds(&mut c);
    let mut child = c.spawn().map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| Error::io(format!("writing to `{}`", line(args)), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("waiting for `{}`", line(args)), e))?;
    checked(args, out)
}

fn checked(args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        return Err(Error::Command {
            cmd: line(args),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The effective user id (0 for the root the lab tests need).
pub fn euid() -> u32 {
    crate::sys::euid()
}

/// [`Error::NotRoot`] unless this process runs as root.
pub fn require_root() -> Result<()> {
    if euid() == 0 {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}
