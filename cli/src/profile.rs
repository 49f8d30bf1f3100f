//! `weftctl profile POD|--agent|--node`: asks a node's agent for a CPU
//! profile (`POST /profile` on its admin API), writes the folded stacks it
//! answers as a flame graph SVG (inferno) and prints the top functions.
//!
//! A POD is looked up in the control plane's objects (as `diagnose` does):
//! its node, then that node's agent, at `--admin NODE=ADDR` or else the
//! address its xDS stream comes from. `--agent` and `--node` ask the agent
//! at `--admin ADDR` (default `127.0.0.1:15000`), or the agent of `--on
//! NODE`. The agent checks every limit (duration, frequency) and says why
//! it refuses.

use std::{collections::HashMap, path::Path, time::Duration};

use serde::Deserialize;

use crate::{
    diagnose::{
        inputs::{self, FetchError, Sources},
        target::{TargetError, resolve_pod},
    },
    http::{Endpoint, HttpError},
    table::Table,
};

/// Kernel frames end with this (`stackcollapse-perf --all`).
pub const KERNEL_SUFFIX: &str = "_[k]";

/// What to profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A pod, as written (`ns/name`, `name.ns`, `name`).
    Pod(String),
    Agent,
    Node,
}

/// The agent's answer (`weft_agent::profile::Profile`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Answer {
    pub target: String,
    pub node: String,
    pub duration_ms: u64,
    pub frequency_hz: u64,
    pub samples: u64,
    pub lost: u64,
    pub folded: Vec<String>,
    #[serde(default)]
    pub notes: Vec<String>,
    /// What the profile cost the node (absent from older agents).
    #[serde(default)]
    pub cost: Option<Cost>,
}

/// `weft_agent::profile::Cost`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct Cost {
    pub program_runs: Option<u64>,
    pub program_seconds: Option<f64>,
    pub agent_cpu_seconds: f64,
}

impl Cost {
    /// The kernel's and the agent's time together, as a share of one CPU
    /// over `duration_s`.
    pub fn share_of_one_cpu(&self, duration_s: f64) -> Option<f64> {
        let total = self.program_seconds? + self.agent_cpu_seconds;
        (duration_s > 0.0).then(|| total / duration_s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Pod(#[from] TargetError),
    #[error("pod {0} is not scheduled on any node: there is nothing to profile")]
    Unscheduled(String),
    #[error(
        "no agent on node {node} (where pod {pod} runs) is connected to the control plane, and no --admin {node}=ADDR was given"
    )]
    NoAgent { node: String, pod: String },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the agent at {addr} answered the profile in an unexpected shape: {source}")]
    Shape {
        addr: String,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Where the pod's node's agent is: the control plane's objects and
/// streams (`sources.control`), or `sources.agents[node]`.
pub fn locate_pod(sources: &Sources, given: &str) -> Result<(String, Endpoint), ProfileError> {
    let inputs = inputs::control(sources, crate::now_unix())?;
    let pod = resolve_pod(&inputs.objects, given, &inputs.domain_suffix, "POD")?;
    let key = pod.key();
    let node = pod
        .spec
        .node
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ProfileError::Unscheduled(key.clone()))?;
    let addr = inputs::agent_addr(&inputs, sources, &node).ok_or(ProfileError::NoAgent {
        node,
        pod: key.clone(),
    })?;
    Ok((key, agent(addr, sources)))
}

/// The agent of `node`, found as for a pod.
pub fn locate_node(sources: &Sources, node: &str) -> Result<Endpoint, ProfileError> {
    let inputs = inputs::control(sources, crate::now_unix())?;
    let addr = inputs::agent_addr(&inputs, sources, node).ok_or(ProfileError::NoAgent {
        node: node.to_string(),
        pod: "-".into(),
    })?;
    Ok(agent(addr, sources))
}

fn agent(addr: String, sources: &Sources) -> Endpoint {
    Endpoint {
        addr,
        what: "the agent's admin endpoint",
        hint: sources.agent_hint,
        timeout: sources.control.timeout,
    }
}

/// The admin API's query for `target` (a pod as `ns/name`).
pub fn query(target: &Target, duration: Duration, frequency: u64) -> String {
    let what = match target {
        Target::Pod(key) => format!("pod={}", key.replace('/', "%2F")),
        Target::Agent => "target=agent".into(),
        Target::Node => "target=node".into(),
    };
    format!(
        "/profile?{what}&duration_ms={}&frequency={frequency}",
        duration.as_millis()
    )
}

/// Asks `agent` for the profile; waits for the duration and then up to
/// the endpoint's timeout for the symbolized answer.
pub fn fetch(agent: &Endpoint, path: &str, duration: Duration) -> Result<Answer, ProfileError> {
    let mut agent = agent.clone();
    agent.timeout = agent.timeout.max(Duration::from_secs(60)) + duration;
    let body = agent.post(path)?;
    serde_json::from_slice(&body).map_err(|source| ProfileError::Shape {
        addr: agent.addr.clone(),
        source,
    })
}

/// One function of the top table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopEntry {
    /// Without the kernel suffix.
    pub name: String,
    pub kernel: bool,
    /// Samples where it was the innermost frame.
    pub self_samples: u64,
    /// Samples where it was on the stack.
    pub total_samples: u64,
}

/// Functions by self samples (then total), most first. The first frame of
/// a folded line is the thread's name, not a function.
pub fn top(folded: &[String]) -> Vec<TopEntry> {
    let mut by_name: HashMap<&str, (u64, u64)> = HashMap::new();
    for line in folded {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let frames: Vec<&str> = stack.split(';').skip(1).collect();
        let mut seen = std::collections::HashSet::new();
        for frame in &frames {
            if seen.insert(*frame) {
                by_name.entry(frame).or_default().1 += count;
            }
        }
        if let Some(leaf) = frames.last() {
            by_name.entry(leaf).or_default().0 += count;
        }
    }
    let mut entries: Vec<TopEntry> = by_name
        .into_iter()
        .map(|(frame, (self_samples, total_samples))| {
            let (name, kernel) = match frame.strip_suffix(KERNEL_SUFFIX) {
                Some(name) => (name.to_string(), true),
                None => (frame.to_string(), false),
            };
            TopEntry {
                name,
                kernel,
                self_samples,
                total_samples,
            }
        })
        .collect();
    entries.sort_by(|a, b| {
        (b.self_samples, b.total_samples, &a.name).cmp(&(a.self_samples, a.total_samples, &b.name))
    });
    entries
}

/// A header line, the top `rows` functions, and the agent's notes.
pub fn render(answer: &Answer, rows: usize) -> String {
    let mut out = format!(
        "{} on {}: {} samples in {:.1}s at {} Hz",
        answer.target,
        answer.node,
        answer.samples,
        answer.duration_ms as f64 / 1000.0,
        answer.frequency_hz
    );
    if answer.lost > 0 {
        out.push_str(&format!(
            " ({} lost: the stack maps were full)",
            answer.lost
        ));
    }
    out.push('\n');
    let percent = |n: u64| {
        if answer.samples == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", n as f64 * 100.0 / answer.samples as f64)
        }
    };
    let mut table = Table::new(["SELF", "SELF%", "TOTAL%", "SPACE", "FUNCTION"]);
    for entry in top(&answer.folded).into_iter().take(rows) {
        table.row([
            entry.self_samples.to_string(),
            percent(entry.self_samples),
            percent(entry.total_samples),
            (if entry.kernel { "kernel" } else { "user" }).to_string(),
            entry.name,
        ]);
    }
    if table.is_empty() {
        out.push_str("no samples: the target used no CPU while it was sampled\n");
    } else {
        out.push_str(&table.render());
    }
    if let Some(cost) = &answer.cost {
        out.push_str(&cost_line(cost, answer.duration_ms as f64 / 1000.0));
    }
    for note in &answer.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// What the profile cost the node, in one line.
fn cost_line(cost: &Cost, duration_s: f64) -> String {
    let agent = format!("the agent {:.1} ms", cost.agent_cpu_seconds * 1e3);
    match (
        cost.program_seconds,
        cost.program_runs,
        cost.share_of_one_cpu(duration_s),
    ) {
        (Some(seconds), Some(runs), Some(share)) => format!(
            "cost: {:.2}% of one CPU over {duration_s:.1}s (the sampling program {:.1} ms in {runs} runs, {agent})\n",
            share * 100.0,
            seconds * 1e3,
        ),
        _ => format!("cost: {agent} (the kernel keeps no eBPF run statistics)\n"),
    }
}

/// Writes the flame graph of `answer` to `path`; false (and nothing
/// written) when there is no sample to draw.
pub fn write_svg(answer: &Answer, path: &Path) -> Result<bool, ProfileError> {
    if answer.folded.is_empty() {
        return Ok(false);
    }
    let write_err = |source| ProfileError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut options = inferno::flamegraph::Options::default();
    options.title = format!("CPU: {} on {}", answer.target, answer.node);
    options.subtitle = Some(format!(
        "{} samples, {:.1}s at {} Hz (weftctl profile)",
        answer.samples,
        answer.duration_ms as f64 / 1000.0,
        answer.frequency_hz
    ));
    // The java palette colours `_[k]` frames as kernel.
    options.colors =
        inferno::flamegraph::Palette::Multi(inferno::flamegraph::color::MultiPalette::Java);
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(
        &mut options,
        answer.folded.iter().map(String::as_str),
        &mut svg,
    )
    .map_err(write_err)?;
    std::fs::write(path, svg).map_err(write_err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn top_counts_self_and_total_once_per_stack() {
        let folded = lines(&[
            "burn;main;spin;spin 30",
            "burn;main;getppid;do_syscall_64_[k] 10",
            "burn;main 5",
        ]);
        let top = top(&folded);
        assert_eq!(
            top[0],
            TopEntry {
                name: "spin".into(),
                kernel: false,
                self_samples: 30,
                total_samples: 30
            }
        );
        assert_eq!(
            top[1],
            TopEntry {
                name: "do_syscall_64".into(),
                kernel: true,
                self_samples: 10,
                total_samples: 10
            }
        );
        let main = top.iter().find(|e| e.name == "main").unwrap();
        assert_eq!((main.self_samples, main.total_samples), (5, 45));
        // The thread name is not a function.
        assert!(top.iter().all(|e| e.name != "burn"));
    }

    #[test]
    fn renders_a_table_and_the_notes() {
        let answer = Answer {
            target: "pod a/b".into(),
            node: "node-1".into(),
            duration_ms: 2000,
            frequency_hz: 99,
            samples: 40,
            lost: 0,
            folded: lines(&["burn;spin 30", "burn;x;write_null_[k] 10"]),
            notes: vec!["process 7 (burn): no frame pointers".into()],
            cost: Some(Cost {
                program_runs: Some(396),
                program_seconds: Some(0.004),
                agent_cpu_seconds: 0.016,
            }),
        };
        let text = render(&answer, 5);
        assert!(
            text.contains("cost: 1.00% of one CPU over 2.0s (the sampling program 4.0 ms in 396 runs, the agent 16.0 ms)\n"),
            "{text}"
        );
        assert!(text.starts_with("pod a/b on node-1: 40 samples in 2.0s at 99 Hz\n"));
        assert!(
            text.contains("30     75.0%   75.0%    user     spin"),
            "{text}"
        );
        assert!(text.contains("kernel   write_null"), "{text}");
        assert!(text.ends_with("note: process 7 (burn): no frame pointers\n"));
    }

    #[test]
    fn writes_an_svg_with_the_functions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.svg");
        let answer = Answer {
            target: "the agent".into(),
            node: "n".into(),
            duration_ms: 1000,
            frequency_hz: 99,
            samples: 3,
            lost: 0,
            folded: lines(&["t;outer;spin_hot_loop 3"]),
            notes: vec![],
            cost: None,
        };
        assert!(write_svg(&answer, &path).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("spin_hot_loop") && svg.contains("</svg>"));
        let empty = Answer {
            folded: vec![],
            samples: 0,
            ..answer
        };
        let other = dir.path().join("empty.svg");
        assert!(!write_svg(&empty, &other).unwrap());
        assert!(!other.exists());
    }

    #[test]
    fn queries() {
        assert_eq!(
            query(&Target::Pod("ns/p".into()), Duration::from_secs(3), 99),
            "/profile?pod=ns%2Fp&duration_ms=3000&frequency=99"
        );
        assert_eq!(
            query(&Target::Agent, Duration::from_millis(1500), 49),
            "/profile?target=agent&duration_ms=1500&frequency=49"
        );
    }
}
