//! The test kit's one error type: every failure names the command, file or
//! namespace it concerns, so a failed lab set-up reads as a diagnosis.

use std::process::ExitStatus;

/// What went wrong while building or driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// a command ran and failed; its stderr says why
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// a command could not be started (not installed?)
    #[error("starting `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why exec failed.
        #[source]
        source: std::io::Error,
    },
    /// a command's output was not what the kit expected
    #[error("unexpected output of `{cmd}`: {detail}")]
    Output {
        /// The command line.
        cmd: String,
        /// What was wrong with it.
        detail: String,
    },
    /// network-namespace labs need root (namespaces, veths, XDP)
    #[error("network-namespace labs need root: run the tests as root")]
    NotRoot,
    /// a file or system call failed
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// a process did not finish in time
    #[error("{what} did not finish within {limit:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        limit: std::time::Duration,
    },
    /// the caller asked to stop waiting (e.g. SIGINT to a harness)
    #[error("interrupted while {0} ran")]
    Interrupted(String),
    /// one process created more labs than the interface-name scheme holds
    #[error("more than {0} labs in one process: interface names would no longer be unique")]
    TooManyLabs(u32),
}

/// The kit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] about `what`.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
