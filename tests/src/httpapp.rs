//! What `weft-sim-http` prints, typed: the L7 tests and benchmarks run it
//! in pods ([`Pod::spawn_http`], [`Pod::run_http`]) and read these.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::Pod;

/// `weft-sim-http load`'s summary.
#[derive(Debug, Clone, Deserialize)]
pub struct LoadSummary {
    pub sent: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Requests that got no response.
    pub errors: u64,
    /// Responses by status code.
    pub status: BTreeMap<String, u64>,
    /// Responses by `x-served-by` (`-`: none, e.g. the proxy answered).
    pub served_by: BTreeMap<String, u64>,
    pub connections: u64,
    pub duration_ms: u64,
}

impl LoadSummary {
    /// Responses with this status.
    pub fn status(&self, code: u16) -> u64 {
        self.status.get(&code.to_string()).copied().unwrap_or(0)
    }

    /// Responses served by this server.
    pub fn served_by(&self, name: &str) -> u64 {
        self.served_by.get(name).copied().unwrap_or(0)
    }
}

/// One response of `weft-sim-http get`.
#[derive(Debug, Clone, Deserialize)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// Which of the client's connections carried it (1, 2...).
    #[serde(default)]
    pub connection: u32,
}

impl Reply {
    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The server's JSON report of the request (what it received).
    pub fn seen(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("the body is not the server's JSON report: {}", self.body))
    }
}

/// How long a `weft-sim-http` client may run before the test gives up.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// `weft-sim-http load URL <args>` in `pod`; its summary (also when some
/// requests got no response).
pub fn load(pod: &Pod, url: &str, args: &[&str]) -> Result<LoadSummary> {
    let mut all = vec!["load", url];
    all.extend_from_slice(args);
    let out = pod.run_http(&all, CLIENT_TIMEOUT)?;
    let line = out
        .stdout
        .lines()
        .last()
        .with_context(|| format!("load {url} printed nothing; stderr:\n{}", out.stderr))?;
    serde_json::from_str(line)
        .with_context(|| format!("load {url}: not a summary: {line}\nstderr:\n{}", out.stderr))
}

/// `weft-sim-http get URL <args>` in `pod`: its responses; fails on a
/// connection or protocol error.
pub fn get(pod: &Pod, url: &str, args: &[&str]) -> Result<Vec<Reply>> {
    let mut all = vec!["get", url];
    all.extend_from_slice(args);
    let out = pod.run_http(&all, CLIENT_TIMEOUT)?;
    if !out.success() {
        bail!("get {url} {args:?} failed:\n{}", out.stderr);
    }
    out.stdout
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("get {url}: {line}")))
        .collect()
}

/// One `get`, its response.
pub fn get_one(pod: &Pod, url: &str, args: &[&str]) -> Result<Reply> {
    get(pod, url, args)?
        .into_iter()
        .next()
        .with_context(|| format!("get {url}: no response"))
}
