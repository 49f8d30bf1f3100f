//! Child processes placed in a network namespace and a cgroup, with their
//! output in a log file; killed and reaped on drop.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::Netns;
use crate::wait::wait_for;

/// Distinguishes log files of processes spawned under the same label.
static SEQ: AtomicU64 = AtomicU64::new(1);

/// Where a child runs: a network namespace and/or a cgroup directory.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Network namespace entered before exec.
    pub netns: Option<Netns>,
    /// cgroup v2 directory the child moves itself into before exec.
    pub cgroup: Option<PathBuf>,
}

// === impl Placement ===

impl Placement {
    /// Arranges for `cmd`'s child to enter the namespace and cgroup between
    /// fork and exec. The files are opened here, in the parent, so the child
    /// only makes async-signal-safe system calls.
    fn apply(&self, cmd: &mut Command) -> Result<()> {
        let netns = self.netns.as_ref().map(Netns::open).transpose()?;
        let procs = match &self.cgroup {
            Some(dir) => {
                let path = dir.join("cgroup.procs");
                Some(
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .with_context(|| format!("opening {}", path.display()))?,
                )
            }
            None => None,
        };
        // SAFETY: the closure only calls write(2) and setns(2) on descriptors
        // opened above; it neither allocates nor takes locks.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(procs) = &procs {
                    // Writing "0" moves the writing process (this child).
                    let n = libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(ns) = &netns {
                    setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        Ok(())
    }
}

/// A running child; stdout and stderr go to one log file.
///
/// Dropping it sends SIGKILL and reaps it.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

// === impl Process ===

impl Process {
    /// Starts `cmd` placed as `placement`, logging to `<log_dir>/<label>.<n>.log`.
    pub fn spawn(
        mut cmd: Command,
        placement: &Placement,
        log_dir: &Path,
        label: &str,
    ) -> Result<Process> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let safe_label = label.replace(['/', ' '], "_");
        let log = log_dir.join(format!("{safe_label}.{seq}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        placement.apply(&mut cmd)?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {program} for {label}"))?;
        Ok(Process {
            name: label.to_string(),
            child,
            log,
            exited: None,
        })
    }

    /// The label given at spawn (e.g. `node-1/weft-agent`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file holding the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the child has written so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log, headed by the process name.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "----- {} (pid {}, {}) last {lines} lines of {} -----\n{}",
            self.name,
            self.pid(),
            match self.exited {
                Some(s) => format!("exited: {s}"),
                None => "running".to_string(),
            },
            self.log.display(),
            tail(&self.log, lines)
        )
    }

    /// Whether the child is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// The exit status, if the child has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    /// Waits (bounded) for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let name = format!("{} (pid {}) to exit", self.name, self.pid());
        wait_for(&name, timeout, || Ok(self.try_status()))
    }

    /// Sends `signal` unless the child has already exited.
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.try_status().is_some() {
            return Ok(());
        }
        match kill(Pid::from_raw(self.pid() as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => bail!(
                "sending {signal} to {} (pid {}): {e}",
                self.name,
                self.pid()
            ),
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        self.exited = Some(status);
        status
    }

    /// SIGTERM, wait up to `grace` for the child to exit, then SIGKILL.
    /// Returns the exit status and whether the child exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> (ExitStatus, bool) {
        let _ = self.signal(Signal::SIGTERM);
        match self.wait_exit(grace) {
            Ok(status) => (status, true),
            Err(_) => (self.kill(), false),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command that ran to completion with its output captured.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

// === impl Finished ===

impl Finished {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Ok with the output if it exited 0, else an error quoting both streams.
    pub fn check(self, what: &str) -> Result<Finished> {
        if self.success() {
            return Ok(self);
        }
        bail!(
            "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` placed as `placement`, with `stdin` as its input, capturing its
/// output; kills it if it has not exited after `timeout`.
pub fn run(
    mut cmd: Command,
    placement: &Placement,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Finished> {
    use std::io::Write;

    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    placement.apply(&mut cmd)?;
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits without reading gives EPIPE: its status says more.
        let _ = pipe.write_all(input);
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{program} did not finish within {timeout:?} and was killed:\n--- stdout ---\n{}\n\
             --- stderr ---\n{}",
            stdout.trim_end(),
            stderr.trim_end()
        ),
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
