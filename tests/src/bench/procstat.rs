//! What a process costs, from `/proc`: resident memory, CPU time, open files.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// Resident set size (`VmRSS`), bytes.
    pub rss: u64,
    /// User + system CPU time so far, seconds (clock-tick resolution,
    /// threads that exited included).
    pub cpu_seconds: f64,
}

impl ProcStat {
    pub fn read(pid: u32) -> Result<ProcStat> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        Ok(ProcStat {
            rss: parse_rss(&status)?,
            cpu_seconds: parse_cpu_ticks(&stat)? as f64 / clock_ticks(),
        })
    }

    /// RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss as f64 / (1024.0 * 1024.0)
    }
}

/// Context switches (voluntary and not) of all of `pid`'s live threads:
/// each is a thread going to sleep or being preempted, which on these VMs
/// costs several µs of latency when another thread must wake it.
pub fn context_switches(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(Path::new(&dir))
        .with_context(|| format!("listing {dir}"))?
        .count())
}

/// The soft `Max open files` of `pid`.
pub fn nofile_limit(pid: u32) -> Result<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(str::to_string)
        .with_context(|| format!("no `Max open files` in /proc/{pid}/limits"))
}

fn parse_rss(status: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/<pid>/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("bad VmRSS line {line:?}"))?;
    Ok(kib * 1024)
}

/// `utime + stime` (fields 14 and 15; the command name in field 2 may hold
/// spaces, so count from its closing parenthesis).
fn parse_cpu_ticks(stat: &str) -> Result<u64> {
    let Some(end) = stat.rfind(')') else {
        bail!("bad /proc/<pid>/stat: {stat:?}");
    };
    let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no field {n} in /proc/<pid>/stat"))
    };
    Ok(field(14)? + field(15)?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no pointer arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t   2048 kB\n").unwrap(),
            2 * 1024 * 1024
        );
        let stat = "42 (weft agent) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 300);
        assert!(parse_rss("Name: x").is_err());
    }

    #[test]
    fn reads_this_process() {
        let me = ProcStat::read(std::process::id()).unwrap();
        assert!(me.rss > 0);
        assert!(open_fds(std::process::id()).unwrap() > 0);
        assert!(context_switches(std::process::id()).unwrap() > 0);
        assert!(!nofile_limit(std::process::id()).unwrap().is_empty());
    }
}
