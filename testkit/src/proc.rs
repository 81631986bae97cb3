//! Processes a test or harness starts, optionally inside a namespace, pinned
//! to CPUs and reniced: a [`Spawn`] describes one, [`Proc`] is the running
//! process. A `Proc` stops its process by pid when dropped (SIGTERM, a grace
//! period, then SIGKILL) and reaps it, so a failed or interrupted run leaves
//! nothing behind; its [`crate::Lab`] also kills whatever else is still
//! inside its namespaces.
//!
//! `ip netns exec`, `taskset` and `nice` all exec: the child's pid is the
//! program's own, so signals reach it directly. A child inherits no
//! descriptor of the test process but stdio (see `sys::close_inherited_fds`):
//! not another test's AF_XDP socket, which would keep that socket's queue
//! claimed for as long as the child runs.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys;

/// How long [`Proc::stop`] lets a process exit after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The signals tests send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: a clean stop.
    Term,
    /// SIGKILL: a crash.
    Kill,
    /// SIGINT: Ctrl-C.
    Int,
    /// SIGSTOP: frozen (a hung node, or the first step of a power loss).
    Stop,
    /// SIGCONT: thawed.
    Cont,
    /// SIGHUP.
    Hup,
}

impl Signal {
    /// The signal number.
    pub fn raw(self) -> i32 {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Int => libc::SIGINT,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Hup => libc::SIGHUP,
        }
    }
}

/// Send `sig` to process `pid` (best effort: it may have exited). Returns
/// whether it was delivered.
pub fn signal(pid: i32, sig: Signal) -> bool {
    sys::kill(pid, sig.raw())
}

#[derive(Debug)]
enum Out {
    Null,
    Log(PathBuf),
    Piped,
}

/// A process to start: `args`, and where and how it runs.
#[derive(Debug)]
pub struct Spawn {
    args: Vec<String>,
    name: Option<String>,
    netns: Option<String>,
    cpus: Option<String>,
    nice: Option<i32>,
    dir: Option<PathBuf>,
    envs: Vec<(OsString, OsString)>,
    out: Out,
}

impl Spawn {
    /// `args` (program first), on the host, output discarded.
    pub fn new(args: &[&str]) -> Spawn {
        Spawn {
            args: args.iter().map(|a| a.to_string()).collect(),
            name: None,
            netns: None,
            cpus: None,
            nice: None,
            dir: None,
            envs: Vec::new(),
            out: Out::Null,
        }
    }

    /// What to call it in errors and logs (default: the program).
    pub fn name(mut self, name: &str) -> Spawn {
        self.name = Some(name.to_string());
        self
    }

    /// Run it inside namespace `ns` (`ip netns exec`).
    pub fn netns(mut self, ns: &str) -> Spawn {
        self.netns = Some(ns.to_string());
        self
    }

    /// Pin it and all its threads to `cpus` (a `taskset -c` list: "1", "0,1").
    pub fn cpus(mut self, cpus: &str) -> Spawn {
        self.cpus = Some(cpus.to_string());
        self
    }

    /// Start it at nice `nice` (inherited by its threads and children).
    pub fn nice(mut self, nice: i32) -> Spawn {
        self.nice = Some(nice);
        self
    }

    /// Its working directory.
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Spawn {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Spawn {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Its stdout and stderr go to file `log` ([`Proc::log`] reads it).
    pub fn log(mut self, log: impl AsRef<Path>) -> Spawn {
        self.out = Out::Log(log.as_ref().to_path_buf());
        self
    }

    /// Its stdout and stderr are pipes ([`Proc::stdout`], [`Proc::stderr`],
    /// [`Proc::wait_with_output`]).
    pub fn piped(mut self) -> Spawn {
        self.out = Out::Piped;
        self
    }

    /// Start it.
    pub fn start(self) -> Result<Proc> {
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Some(c) = &self.cpus {
            argv.extend(["taskset", "-c", c].map(String::from));
        }
        if let Some(n) = self.nice {
            argv.extend(["nice".to_string(), "-n".to_string(), n.to_string()]);
        }
        argv.extend(self.args.iter().cloned());
        let line = argv.join(" ");
        let name = self
            .name
            .clone()
            .or_else(|| self.args.first().cloned())
            .unwrap_or_default();
        let (prog, rest) = argv.split_first().ok_or_else(|| Error::Output {
            cmd: line.clone(),
            detail: "empty command".into(),
        })?;
        let mut c = Command::new(prog);
        c.args(rest).stdin(Stdio::null());
        crate::sys::close_inherited_fds(&mut c);
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        let log = match &self.out {
            Out::Null => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
                None
            }
            Out::Piped => {
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                None
            }
            Out::Log(path) => {
                let f =
                    File::create(path).map_err(|e| Error::io(format!("creating {path:?}"), e))?;
                let f2 = f
                    .try_clone()
                    .map_err(|e| Error::io(format!("duplicating {path:?}"), e))?;
                c.stdout(f).stderr(f2);
                Some(path.clone())
            }
        };
        let child = c
            .spawn()
            .map_err(|source| Error::Spawn { cmd: line, source })?;
        Ok(Proc {
            name,
            child: Some(child),
            log,
        })
    }
}

/// A running process; stopped (by pid) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    /// What it is (for reports and errors).
    pub name: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Proc {
    /// The pid (0 once reaped).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Its log so far (empty without [`Spawn::log`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Send it `sig` (unless it was reaped already).
    pub fn signal(&mut self, sig: Signal) -> bool {
        // Only while unreaped: the pid cannot have been reused.
        self.running() && sys::kill(self.pid(), sig.raw())
    }

    /// Its stdout pipe (with [`Spawn::piped`]), once.
    pub fn stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// Its stderr pipe (with [`Spawn::piped`]), once.
    pub fn stderr(&mut self) -> Option<ChildStderr> {
        self.child.as_mut()?.stderr.take()
    }

    /// Wait until it exits, at most `limit`, giving up early when `abort`
    /// says so (checked every 50 ms). Whether it exited successfully.
    pub fn wait(&mut self, limit: Duration, abort: impl Fn() -> bool) -> Result<bool> {
        let deadline = Instant::now() + limit;
        let Some(c) = self.child.as_mut() else {
            return Err(Error::Output {
                cmd: self.name.clone(),
                detail: "already reaped".into(),
            });
        };
        loop {
            match c.try_wait() {
                Ok(Some(st)) => return Ok(st.success()),
                Ok(None) => {}
                Err(e) => return Err(Error::io(format!("waiting for {}", self.name), e)),
            }
            if abort() {
                return Err(Error::Interrupted(self.name.clone()));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: self.name.clone(),
                    limit,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for it to exit and collect what it printed (with [`Spawn::piped`]).
    pub fn wait_with_output(mut self) -> Result<Output> {
        let Some(c) = self.child.take() else {
            return Err(Error::Output {
                cmd: self.name.clone(),
                detail: "already reaped".into(),
            });
        };
        c.wait_with_output()
            .map_err(|e| Error::io(format!("waiting for {}", self.name), e))
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; reaped.
    pub fn stop(&mut self) {
        self.stop_within(Signal::Term, STOP_GRACE);
    }

    /// Send `sig`, wait up to `grace` for it to exit, then SIGKILL; reaped.
    pub fn stop_within(&mut self, sig: Signal, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(None) = c.try_wait() {
            // Not reaped yet, so the pid is still this process's.
            sys::kill(c.id() as i32, sig.raw());
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
        }
        let _ = c.wait();
    }

    /// SIGKILL at once (a crash); reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
