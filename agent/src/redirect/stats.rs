//! What the agent's eBPF programs cost, as the kernel counts it: for each
//! program, how many times it ran and for how long in all
//! (`weft_agent_ebpf_program_runs_total` and
//! `weft_agent_ebpf_program_run_seconds_total`). The kernel keeps these
//! counts only while statistics are on: the agent turns them on with
//! `BPF_ENABLE_STATS` (kernel 5.8+) for as long as it runs. That switch is
//! the node's, not the agent's: while it is held, every program on the
//! node pays for two clock reads per run (tens of nanoseconds; the
//! programs run once per connection or per socket event, not per packet).

use std::{os::fd::OwnedFd, time::Duration};

/// One program's counts since it was loaded (with statistics on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: String,
    pub runs: u64,
    pub run_time: Duration,
}

/// Turns the kernel's run statistics on until the returned descriptor is
/// closed; `None` (and a warning that says what is missing) where the
/// kernel refuses.
pub(super) fn enable() -> Option<OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(err) => {
            tracing::warn!(error = %err, "the kernel does not keep eBPF run statistics (BPF_ENABLE_STATS needs Linux 5.8+ and CAP_SYS_ADMIN): weft_agent_ebpf_program_* are not reported; the rest of the agent runs");
            None
        }
    }
}

impl super::Redirector {
    /// Each loaded program's run count and total run time (empty when the
    /// kernel keeps no statistics). One `bpf(BPF_OBJ_GET_INFO_BY_FD)` per
    /// program; the programs' lock is held only while they are listed.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        if self.stats.is_none() {
            return Vec::new();
        }
        let ebpf = self.ebpf.lock().expect("eBPF programs lock");
        let mut stats = of(&ebpf);
        stats.sort_by(|a, b| a.program.cmp(&b.program));
        stats
    }
}

/// The run statistics of every program loaded in `ebpf` (the kernel counts
/// only while statistics are on).
pub fn of(ebpf: &aya::Ebpf) -> Vec<ProgramStats> {
    ebpf.programs()
        .filter_map(|(name, program)| {
            let info = program
                .info()
                .inspect_err(|err| tracing::debug!(program = name, error = %err, "cannot read the program's statistics"))
                .ok()?;
            Some(ProgramStats {
                program: name.to_string(),
                runs: info.run_count(),
                run_time: info.run_time(),
            })
        })
        .collect()
}
