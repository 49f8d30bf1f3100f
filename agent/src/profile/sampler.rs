//! The profiling program (`ebpf/programs/src/profile.rs`): loaded for one
//! profile with its filter set, attached to a software `cpu-clock` perf
//! event on each online CPU, read and detached at the end. Dropping a
//! [`Sampler`] detaches everything (aya closes the links and the maps with
//! the object).

use std::collections::HashMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapError, PerCpuArray, PerCpuHashMap, StackTraceMap},
    programs::{
        PerfEvent, ProgramError,
        perf_event::{
            PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent,
        },
    },
};
use weft_ebpf_common::{
    MAP_PROFILE_COUNTS, MAP_PROFILE_LOST, MAP_PROFILE_STACKS, PROFILE_ALL, PROFILE_CGROUP,
    PROFILE_LOST_COUNT, PROFILE_LOST_STACK, PROFILE_TGID, SampleKey,
};

/// The compiled program, built by `build.rs`.
static PROFILE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weft-profile"));

const PROGRAM: &str = "weft_profile";

/// Whose samples are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    /// Tasks in this cgroup or below it.
    Cgroup {
        id: u64,
        level: u32,
    },
    /// The threads of one process.
    Process(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("cannot load the profiling program's maps: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the profiling object has no program `{PROGRAM}`; the agent binary is broken")]
    MissingProgram,
    #[error(
        "the kernel refused the perf_event program (needs BPF_PROG_TYPE_PERF_EVENT, bpf_get_stackid and bpf_get_current_ancestor_cgroup_id): {0}"
    )]
    Program(#[source] ProgramError),
    #[error(
        "the kernel has no software cpu-clock perf event for CPU {cpu} (perf_event_open: {source}); it needs CONFIG_PERF_EVENTS"
    )]
    NoPerfEvent { cpu: u32, source: std::io::Error },
    #[error("attaching to the cpu-clock perf event of CPU {cpu}: {source}")]
    Attach { cpu: u32, source: ProgramError },
    #[error("cannot list the online CPUs ({what}): {source}")]
    Cpus {
        what: &'static str,
        source: std::io::Error,
    },
}

/// A profile in progress.
pub struct Sampler {
    ebpf: Ebpf,
    links: Vec<PerfEventLinkId>,
}

/// What the maps held at the end.
#[derive(Debug, Default)]
pub struct Raw {
    /// (sample key, samples).
    pub counts: Vec<(SampleKey, u64)>,
    /// Stack id → instruction pointers, innermost first.
    pub stacks: HashMap<u32, Vec<u64>>,
    /// Samples that fitted no map.
    pub lost: u64,
    /// The sampling program's runs and run time, as the kernel counted
    /// them (`None` when it keeps no statistics).
    pub program: Option<crate::redirect::ProgramStats>,
}

impl Sampler {
    /// Loads the program with `filter` and attaches it on every online CPU
    /// at `frequency` Hz. Nothing stays loaded on failure.
    pub fn start(filter: Filter, frequency: u64) -> Result<Sampler, SamplerError> {
        let (kind, cgroup_id, level, tgid) = match filter {
            Filter::All => (PROFILE_ALL, 0u64, 0u32, 0u32),
            Filter::Cgroup { id, level } => (PROFILE_CGROUP, id, level, 0),
            Filter::Process(pid) => (PROFILE_TGID, 0, 0, pid),
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("PROFILE_FILTER", &kind, true)
            .override_global("PROFILE_CGROUP_ID", &cgroup_id, true)
            .override_global("PROFILE_CGROUP_LEVEL", &level, true)
            .override_global("PROFILE_TGID_VALUE", &tgid, true)
            .load(PROFILE_OBJECT)
            .map_err(|err| SamplerError::Load(Box::new(err)))?;
        let program: &mut PerfEvent = ebpf
            .program_mut(PROGRAM)
            .ok_or(SamplerError::MissingProgram)?
            .try_into()
            .map_err(SamplerError::Program)?;
        program.load().map_err(SamplerError::Program)?;
        let cpus = aya::util::online_cpus()
            .map_err(|(what, source)| SamplerError::Cpus { what, source })?;
        let mut links = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let link = program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency),
                    false,
                )
                .map_err(|source| match source {
                    ProgramError::SyscallError(err) if err.call == "perf_event_open" => {
                        SamplerError::NoPerfEvent {
                            cpu,
                            source: err.io_error,
                        }
                    }
                    source => SamplerError::Attach { cpu, source },
                })?;
            links.push(link);
        }
        Ok(Sampler { ebpf, links })
    }

    /// Detaches the program, then reads what it recorded.
    pub fn finish(mut self) -> Result<Raw, MapError> {
        let mut raw = Raw {
            program: crate::redirect::stats::of(&self.ebpf)
                .into_iter()
                .find(|s| s.program == PROGRAM && s.runs > 0),
            ..Raw::default()
        };
        if let Some(program) = self.ebpf.program_mut(PROGRAM)
            && let Ok(program) = <&mut PerfEvent>::try_from(program)
        {
            for link in self.links.drain(..) {
                if let Err(err) = program.detach(link) {
                    tracing::warn!(error = %err, "cannot detach a profiling link; it goes with the program");
                }
            }
        }
        let counts: PerCpuHashMap<_, SampleKey, u64> =
            PerCpuHashMap::try_from(self.ebpf.map(MAP_PROFILE_COUNTS).ok_or_else(missing)?)?;
        for entry in counts.iter() {
            let (key, per_cpu) = entry?;
            raw.counts.push((key, per_cpu.iter().sum()));
        }
        let stacks =
            StackTraceMap::try_from(self.ebpf.map(MAP_PROFILE_STACKS).ok_or_else(missing)?)?;
        let wanted: std::collections::HashSet<u32> = raw
            .counts
            .iter()
            .flat_map(|(k, _)| [k.user_stack, k.kernel_stack])
            .filter_map(|id| u32::try_from(id).ok())
            .collect();
        for id in wanted {
            if let Ok(trace) = stacks.get(&id, 0) {
                raw.stacks
                    .insert(id, trace.frames().iter().map(|f| f.ip).collect());
            }
        }
        let lost: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_PROFILE_LOST).ok_or_else(missing)?)?;
        for index in [PROFILE_LOST_STACK, PROFILE_LOST_COUNT] {
            raw.lost += lost.get(&index, 0)?.iter().sum::<u64>();
        }
        Ok(raw)
    }
}

fn missing() -> MapError {
    MapError::InvalidName {
        name: "a profiling map is missing from the object".into(),
    }
}
