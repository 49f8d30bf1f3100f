//! On-demand CPU profiling (admin API `POST /profile`).
//!
//! A profile samples, with the `weft_profile` eBPF program on a software
//! `cpu-clock` perf event on every CPU, the user and kernel stacks of one
//! pod's processes (by its cgroup), of the agent itself (by process id) or
//! of the whole node, for a bounded time at a bounded frequency. The agent
//! then symbolizes the stacks (kernel symbols from kallsyms, processes'
//! ELF and DWARF symbols, with blazesym) and answers folded stacks, which
//! `weftctl profile` turns into a flame graph and a table.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | the request, its limits, the errors, one profile from start to answer |
//! | [`target`] | a pod → the cgroup its processes share |
//! | [`sampler`] | the eBPF program: load, attach, read the maps, detach |
//! | [`folded`] | stacks → symbols → folded lines, and notes on truncated stacks |
//!
//! Nothing is loaded until a request has been checked; the program and
//! its maps exist only while a profile runs, and are detached when it ends
//! or when the client goes away (the request's future is dropped).

pub mod folded;
pub mod sampler;
pub mod target;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::state::WorkloadStore;

/// The shortest and the longest profile.
pub const MIN_DURATION: Duration = Duration::from_secs(1);
pub const MAX_DURATION: Duration = Duration::from_secs(300);
/// Samples per second and CPU.
pub const MIN_FREQUENCY: u64 = 1;
pub const MAX_FREQUENCY: u64 = 1_000;
/// Profiles running at the same time on one agent.
pub const MAX_CONCURRENT: usize = 4;

/// What to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A pod on this node: `(namespace, name)`.
    Pod { namespace: String, name: String },
    /// The agent's own process.
    Agent,
    /// Every process on the node.
    Node,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            Target::Agent => f.write_str("the agent"),
            Target::Node => f.write_str("the node"),
        }
    }
}

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub target: Target,
    pub duration: Duration,
    /// Hz, per CPU.
    pub frequency: u64,
}

/// Why a profile was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "pod {namespace}/{name} is not in this agent's workload data: it does not exist, or the control plane has not described it yet"
    )]
    UnknownPod { namespace: String, name: String },
    #[error(
        "pod {namespace}/{name} runs on node {node}, not on this node ({here}): ask that node's agent (weftctl profile POD finds it through the control plane)"
    )]
    OtherNode {
        namespace: String,
        name: String,
        node: String,
        here: String,
    },
    #[error("pod {namespace}/{name} is not scheduled on any node")]
    Unscheduled { namespace: String, name: String },
    #[error("pod {pod}: {reason}")]
    PodNotFound { pod: String, reason: String },
    #[error("{MAX_CONCURRENT} profiles are already running on this agent; try again when one ends")]
    Busy,
    #[error("CPU profiling is not available on this node: {0}")]
    Unavailable(#[from] sampler::SamplerError),
    #[error("the profile ran but its stacks could not be read: {0}")]
    Collect(String),
}

impl ProfileError {
    /// The HTTP status the admin API answers.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            ProfileError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProfileError::UnknownPod { .. } | ProfileError::PodNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ProfileError::OtherNode { .. } | ProfileError::Unscheduled { .. } => {
                StatusCode::CONFLICT
            }
            ProfileError::Busy => StatusCode::TOO_MANY_REQUESTS,
            ProfileError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProfileError::Collect(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl Request {
    /// Parses `POST /profile`'s query: `pod=NS/NAME` or `target=agent` or
    /// `target=node`, `duration_ms=`, `frequency=`. Every limit is checked
    /// here, before anything is loaded.
    pub fn parse(query: &str) -> Result<Request, ProfileError> {
        let bad = |text: String| ProfileError::BadRequest(text);
        let mut pod = None;
        let mut kind = None;
        let mut duration_ms = None;
        let mut frequency = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = crate::admin::percent_decode(value);
            match key {
                "pod" => pod = Some(value),
                "target" => kind = Some(value),
                "duration_ms" => {
                    duration_ms = Some(value.parse::<u64>().map_err(|_| {
                        bad(format!(
                            "duration_ms `{value}` is not a whole number of milliseconds"
                        ))
                    })?)
                }
                "frequency" => {
                    frequency = Some(value.parse::<u64>().map_err(|_| {
                        bad(format!("frequency `{value}` is not a whole number of Hz"))
                    })?)
                }
                other => return Err(bad(format!("unknown parameter `{other}`"))),
            }
        }
        let target = match (kind.as_deref(), pod) {
            (None | Some("pod"), Some(pod)) => {
                let Some((namespace, name)) = pod.split_once('/') else {
                    return Err(bad(format!("pod `{pod}`: expected NAMESPACE/NAME")));
                };
                if namespace.is_empty() || name.is_empty() || name.contains('/') {
                    return Err(bad(format!("pod `{pod}`: expected NAMESPACE/NAME")));
                }
                Target::Pod {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                }
            }
            (Some("agent"), None) => Target::Agent,
            (Some("node"), None) => Target::Node,
            (Some(other @ ("agent" | "node")), Some(_)) => {
                return Err(bad(format!("target={other} takes no pod")));
            }
            (Some(other), _) if other != "pod" => {
                return Err(bad(format!(
                    "target `{other}`: expected pod (with pod=NS/NAME), agent or node"
                )));
            }
            _ => {
                return Err(bad(
                    "what to profile is missing: pod=NS/NAME, target=agent or target=node".into(),
                ));
            }
        };
        let duration = Duration::from_millis(duration_ms.unwrap_or(30_000));
        if !(MIN_DURATION..=MAX_DURATION).contains(&duration) {
            return Err(bad(format!(
                "duration {} is out of range: a profile runs from {} to {}",
                human(duration),
                human(MIN_DURATION),
                human(MAX_DURATION)
            )));
        }
        let frequency = frequency.unwrap_or(99);
        if !(MIN_FREQUENCY..=MAX_FREQUENCY).contains(&frequency) {
            return Err(bad(format!(
                "frequency {frequency} Hz is out of range: from {MIN_FREQUENCY} to {MAX_FREQUENCY} Hz per CPU"
            )));
        }
        Ok(Request {
            target,
            duration,
            frequency,
        })
    }
}

/// `500ms`, `30s`, `5m`, `10d` (the largest unit that divides it).
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    match units
        .iter()
        .find(|(size, _)| ms > 0 && ms.is_multiple_of(*size))
    {
        Some((size, unit)) => format!("{}{unit}", ms / size),
        None if ms == 0 => "0s".into(),
        None => format!("{ms}ms"),
    }
}

/// What `POST /profile` answers.
#[derive(Debug, serde::Serialize)]
pub struct Profile {
    /// What was sampled, in words (`pod shop/api-0 (cgroup …)`).
    pub target: String,
    pub node: String,
    pub duration_ms: u64,
    pub frequency_hz: u64,
    /// Samples recorded, and lost because a map was full.
    pub samples: u64,
    pub lost: u64,
    /// `thread;outer;…;inner count`, kernel frames suffixed `_[k]`
    /// (the convention of `stackcollapse-perf --all`).
    pub folded: Vec<String>,
    /// What the reader should know: truncated user stacks, processes gone
    /// before their symbols were read.
    pub notes: Vec<String>,
    /// What the profile itself cost the node.
    pub cost: Cost,
}

/// What a profile cost: the sampling program's kernel time and the
/// agent's own CPU time for it (loading, reading the maps, symbolizing).
#[derive(Debug, Default, serde::Serialize)]
pub struct Cost {
    /// Runs of the sampling program and their total time, as the kernel
    /// counts them (`None`: the kernel keeps no eBPF statistics).
    pub program_runs: Option<u64>,
    pub program_seconds: Option<f64>,
    /// CPU time of the agent's threads spent on this profile.
    pub agent_cpu_seconds: f64,
}

/// Runs `work` on a blocking thread and adds that thread's CPU time for it
/// to `spent`.
async fn blocking<T: Send + 'static>(
    spent: &mut Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProfileError> {
    let (value, cpu) = tokio::task::spawn_blocking(move || {
        let before = thread_cpu();
        let value = work();
        (value, thread_cpu().saturating_sub(before))
    })
    .await
    .map_err(|err| ProfileError::Collect(err.to_string()))?;
    *spent += cpu;
    Ok(value)
}

/// The calling thread's CPU time so far.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Runs profiles for the admin API.
pub struct Profiler {
    node_name: String,
    /// The agent's `--cgroup`: pods' cgroups are below it.
    cgroup: Option<std::path::PathBuf>,
    store: Arc<WorkloadStore>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Profiler {
    pub fn new(config: &crate::Config, store: Arc<WorkloadStore>) -> Profiler {
        Profiler {
            node_name: config.node_name.clone(),
            cgroup: config.cgroup.clone(),
            store,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT)),
        }
    }

    /// Samples for `request.duration`, then symbolizes. Dropping the
    /// future (the client went away) detaches the program at once.
    pub async fn run(&self, request: Request) -> Result<Profile, ProfileError> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ProfileError::Busy)?;
        let (filter, described) = self.filter(&request.target).await?;
        let frequency = request.frequency;
        // From here on, a dropped future (the client went away) is logged,
        // whatever it was waiting for; the sampler, a local, is dropped
        // with it, which detaches the program.
        let mut running = Running {
            target: described.clone(),
            started: Instant::now(),
            cancelled: true,
        };
        let profiled = async {
            let mut spent = Duration::ZERO;
            let sampler = blocking(&mut spent, move || {
                sampler::Sampler::start(filter, frequency)
            })
            .await??;
            tracing::info!(target = %described, duration = ?request.duration, frequency, "profile started");
            tokio::time::sleep(request.duration).await;
            self.finish(sampler, spent, &request, &described, running.started)
                .await
        }
        .await;
        running.cancelled = false;
        drop(permit);
        profiled
    }

    /// Detaches the program, reads and symbolizes what it recorded.
    async fn finish(
        &self,
        sampler: sampler::Sampler,
        mut spent: Duration,
        request: &Request,
        described: &str,
        started: Instant,
    ) -> Result<Profile, ProfileError> {
        let raw = blocking(&mut spent, move || sampler.finish())
            .await?
            .map_err(|err| ProfileError::Collect(err.to_string()))?;
        let samples: u64 = raw.counts.iter().map(|(_, n)| n).sum();
        let lost = raw.lost;
        let program = raw.program.clone();
        let stacks = blocking(&mut spent, move || folded::fold(&raw)).await?;
        let cost = Cost {
            program_runs: program.as_ref().map(|p| p.runs),
            program_seconds: program.as_ref().map(|p| p.run_time.as_secs_f64()),
            agent_cpu_seconds: spent.as_secs_f64(),
        };
        tracing::info!(target = %described, samples, lost, elapsed = ?started.elapsed(), ?cost, "profile done");
        Ok(Profile {
            target: described.to_string(),
            node: self.node_name.clone(),
            duration_ms: request.duration.as_millis() as u64,
            frequency_hz: request.frequency,
            samples,
            lost,
            folded: stacks.lines,
            notes: stacks.notes,
            cost,
        })
    }

    /// The filter for a target, and the target in words.
    async fn filter(&self, target: &Target) -> Result<(sampler::Filter, String), ProfileError> {
        match target {
            Target::Agent => {
                let pid = std::process::id();
                Ok((
                    sampler::Filter::Process(pid),
                    format!("the agent (pid {pid})"),
                ))
            }
            Target::Node => Ok((sampler::Filter::All, "every process on the node".into())),
            Target::Pod { namespace, name } => {
                let workload = self.store.workload_by_pod(namespace, name).ok_or_else(|| {
                    ProfileError::UnknownPod {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    }
                })?;
                if workload.node.is_empty() {
                    return Err(ProfileError::Unscheduled {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    });
                }
                if workload.node != self.node_name {
                    return Err(ProfileError::OtherNode {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        node: workload.node.clone(),
                        here: self.node_name.clone(),
                    });
                }
                let pod = format!("{namespace}/{name}");
                let ips = workload.ips.clone();
                let below = self.cgroup.clone();
                let found =
                    tokio::task::spawn_blocking(move || target::pod_cgroup(&ips, below.as_deref()))
                        .await
                        .map_err(|err| ProfileError::Collect(err.to_string()))?
                        .map_err(|reason| ProfileError::PodNotFound {
                            pod: pod.clone(),
                            reason: reason.to_string(),
                        })?;
                let words = format!(
                    "pod {pod} (cgroup {}, {} processes)",
                    found.path.display(),
                    found.processes
                );
                Ok((
                    sampler::Filter::Cgroup {
                        id: found.id,
                        level: found.level,
                    },
                    words,
                ))
            }
        }
    }
}

/// A profile under way. Dropped while `cancelled` (the client went away
/// and the request's future was dropped, the sampler with it), it says so.
struct Running {
    target: String,
    started: Instant,
    cancelled: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.cancelled {
            tracing::info!(target = %self.target, after = ?self.started.elapsed(), "profile cancelled: the client went away; the program is detached");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(query: &str) -> String {
        Request::parse(query).unwrap_err().to_string()
    }

    #[test]
    fn parses_targets_and_defaults() {
        let r = Request::parse("pod=shop/api-0").unwrap();
        assert_eq!(
            r.target,
            Target::Pod {
                namespace: "shop".into(),
                name: "api-0".into()
            }
        );
        assert_eq!((r.duration, r.frequency), (Duration::from_secs(30), 99));
        let r = Request::parse("target=agent&duration_ms=1500&frequency=49").unwrap();
        assert_eq!(
            (r.target, r.duration, r.frequency),
            (Target::Agent, Duration::from_millis(1500), 49)
        );
        assert_eq!(Request::parse("target=node").unwrap().target, Target::Node);
        assert_eq!(
            Request::parse("pod=a%2Fb").unwrap().target,
            Target::Pod {
                namespace: "a".into(),
                name: "b".into()
            }
        );
    }

    #[test]
    fn a_kernel_without_the_perf_event_says_what_is_missing() {
        let err = ProfileError::from(sampler::SamplerError::NoPerfEvent {
            cpu: 0,
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let text = err.to_string();
        assert!(
            text.starts_with("CPU profiling is not available on this node: the kernel has no software cpu-clock perf event for CPU 0 (perf_event_open: ")
                && text.ends_with("it needs CONFIG_PERF_EVENTS"),
            "{text}"
        );
    }

    #[test]
    fn refuses_out_of_range_and_malformed_input() {
        assert_eq!(
            err("target=node&duration_ms=0"),
            "duration 0s is out of range: a profile runs from 1s to 5m"
        );
        assert_eq!(
            err("target=node&duration_ms=864000000"),
            "duration 10d is out of range: a profile runs from 1s to 5m"
        );
        assert_eq!(
            err("target=node&frequency=1000000"),
            "frequency 1000000 Hz is out of range: from 1 to 1000 Hz per CPU"
        );
        assert!(err("target=node&frequency=fast").contains("`fast`"));
        assert!(err("pod=nonamespace").contains("NAMESPACE/NAME"));
        assert!(err("").contains("what to profile is missing"));
        assert!(err("target=agent&pod=a/b").contains("takes no pod"));
        assert!(err("target=cluster").contains("`cluster`"));
        assert!(err("target=node&pid=1").contains("unknown parameter `pid`"));
    }
}
