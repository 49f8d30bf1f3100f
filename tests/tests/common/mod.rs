//! Shared by the L7 suites: backends running `weft-sim-http`, Istio YAML
//! written to the control plane's directory, and waits for config to take
//! effect (config reaches agents asynchronously: a test polls for the
//! behaviour it expects, never sleeps).

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context as _, Result};
use weft_sim::{Cluster, Pod, PodSpec, Process, wait_for};

pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

/// A pod running `weft-sim-http serve`.
pub struct Backend {
    pub pod: Pod,
    pub server: Process,
}

/// Adds pod `name` on `node` in `ns` with `labels`, serving HTTP (and
/// gRPC) on `port` with `serve_args` (e.g. `--fail-rate 0.5`).
pub fn backend(
    cluster: &Cluster,
    node: &str,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    port: u16,
    serve_args: &[&str],
) -> Result<Backend> {
    let mut spec = PodSpec::new(node, ns, name)
        .service_account(
            labels
                .iter()
                .find(|(k, _)| *k == "app")
                .map_or(name, |(_, v)| v),
        )
        .port("http", port);
    for (k, v) in labels {
        spec = spec.label(k, v);
    }
    let pod = cluster.add_pod(spec)?;
    let port = port.to_string();
    let mut args = vec!["serve", "--port", &port];
    args.extend_from_slice(serve_args);
    let server = pod.spawn_http(&args)?;
    Ok(Backend { pod, server })
}

/// A client pod (no server).
pub fn client(cluster: &Cluster, node: &str, ns: &str, name: &str) -> Result<Pod> {
    cluster.add_pod(PodSpec::new(node, ns, name).service_account(name))
}

/// Writes one config file of Istio YAML (replacing a file of that name).
pub fn apply(cluster: &Cluster, file: &str, yaml: &str) -> Result<()> {
    cluster
        .write_config_file(&format!("{file}.yaml"), yaml)
        .map(|_| ())
}

/// Longer than the agent takes to write a finished request's log line.
pub const LOG_SETTLE: Duration = Duration::from_millis(50);

/// Polls `check` (a request or a few) until it returns `Ok(true)`: config
/// has reached the client's agent.
pub fn converge(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_for(what, TIMEOUT, || Ok(check()?.then_some(())))
}

/// The client-side agent's L7 access-log lines (`http request`), once
/// the lines of the requests just made are out: the agent writes a line
/// when the response has been sent, and its log thread gathers lines for
/// a millisecond before writing them.
pub fn request_log(cluster: &Cluster, node: &str) -> Result<Vec<String>> {
    std::thread::sleep(LOG_SETTLE);
    let node = cluster.node(node)?;
    Ok(node
        .agent_log()
        .lines()
        .filter(|l| l.contains("http request"))
        .map(str::to_string)
        .collect())
}

/// The value of `key=` in a log line (text format: `key=value`, values
/// with spaces quoted).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    rest.split(' ').next()
}

/// Fails with the log's tail when `result` is an error.
pub fn with_log<T>(cluster: &Cluster, node: &str, result: Result<T>) -> Result<T> {
    result.with_context(|| {
        cluster
            .node(node)
            .map(|n| n.agent_log_tail(40))
            .unwrap_or_default()
    })
}
