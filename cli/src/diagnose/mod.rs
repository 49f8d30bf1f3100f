//! `weftctl diagnose SRC DST[:PORT]`: Istio's "503 drill" in one command.
//! It gathers what the control plane holds (`/debug/objects`,
//! `/debug/syncz`, `/debug/config`) and what the agents on the two pods'
//! nodes hold (`/config_dump`, `/stats/prometheus`), then checks, in
//! order, everything a request from SRC to DST depends on, and names the
//! object and field to fix when a check fails.
//!
//! | module | what |
//! | --- | --- |
//! | [`inputs`] | the JSON read from weft-control and the agents, and fetching it |
//! | [`target`] | SRC and DST resolved to pods or a Service; close names when unknown |
//! | [`checks`] | agents (reachable, synced), mesh membership and enrolment, endpoints |
//! | [`route`] | the VirtualService and DestinationRule that apply; the port's protocol |
//! | [`security`] | PeerAuthentication at the destination; certificates |
//! | [`authz`] | which AuthorizationPolicy allows or denies, and its deciding rule |
//! | [`telemetry`] | what the agents counted for this pair (response codes and flags) |
//! | [`verdict`] | the most likely cause among the failed checks |

pub mod authz;
pub mod checks;
pub mod inputs;
pub mod route;
pub mod security;
pub mod target;
pub mod telemetry;
pub mod verdict;

#[cfg(test)]
mod tests;

use serde::Serialize;

pub use inputs::{Inputs, Sources};
pub use target::{Resolved, TargetError};

/// What a check is about; also the order in which causes are blamed
/// (see [`verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A node (or the network to it) does not answer.
    Network,
    /// An agent is not connected, has not acknowledged the latest config,
    /// or does not answer.
    Sync,
    /// A pod that should be in the mesh is not, or is not enrolled.
    Mesh,
    /// The destination has no endpoints.
    Endpoints,
    /// A VirtualService or DestinationRule sends requests nowhere.
    Route,
    /// The port's protocol keeps routes from applying.
    Protocol,
    /// PeerAuthentication refuses the client.
    Mtls,
    /// An AuthorizationPolicy denies the client.
    Authorization,
    /// A certificate is missing or expired.
    #[serde(rename = "certificates")]
    Certificate,
    /// What the agents counted for this pair.
    Telemetry,
}

impl Cause {
    /// The word shown before each line.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Network => "network",
            Cause::Sync => "sync",
            Cause::Mesh => "mesh",
            Cause::Endpoints => "endpoints",
            Cause::Route => "route",
            Cause::Protocol => "protocol",
            Cause::Mtls => "mtls",
            Cause::Authorization => "authorization",
            Cause::Certificate => "certificates",
            Cause::Telemetry => "telemetry",
        }
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Works, but something looks wrong or depends on the request.
    Warn,
    Fail,
    /// Could not be checked (the data was not available).
    Skip,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Skip => "-",
        }
    }
}

/// What to change: `kind namespace/name` and the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// e.g. `VirtualService shop/api`.
    pub object: String,
    /// e.g. `spec.http[0].route[0].destination.host`.
    pub field: String,
}

impl Fix {
    pub fn new(kind: &str, namespace: &str, name: &str, field: impl Into<String>) -> Fix {
        let object = if namespace.is_empty() {
            format!("{kind} {name}")
        } else {
            format!("{kind} {namespace}/{name}")
        };
        Fix {
            object,
            field: field.into(),
        }
    }
}

/// One sentence about one thing the request depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: Cause,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

impl Check {
    pub fn ok(check: Cause, message: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, message, None)
    }
    pub fn warn(check: Cause, message: impl Into<String>, fix: Option<Fix>) -> Check {
        Check::new(check, Status::Warn, message, fix)
    }
    pub fn fail(check: Cause, message: impl Into<String>, fix: Option<Fix>) -> Check {
        Check::new(check, Status::Fail, message, fix)
    }
    pub fn skip(check: Cause, message: impl Into<String>) -> Check {
        Check::new(check, Status::Skip, message, None)
    }
    fn new(check: Cause, status: Status, message: impl Into<String>, fix: Option<Fix>) -> Check {
        Check {
            check,
            status,
            message: message.into(),
            fix,
        }
    }
}

/// The whole answer: what was checked, and the most likely cause.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub destination: String,
    pub port: Option<u16>,
    pub checks: Vec<Check>,
    pub verdict: verdict::Verdict,
}

impl Report {
    /// Whether some check failed.
    pub fn failed(&self) -> bool {
        self.verdict.status == Status::Fail
    }
}

/// Why diagnose could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Fetch(#[from] inputs::FetchError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Reads the control plane, resolves SRC and DST, reads the agents of
/// the nodes involved, and checks.
pub fn run(sources: &Sources, src: &str, dst: &str, now_unix: u64) -> Result<Report, RunError> {
    let mut inputs = inputs::control(sources, now_unix)?;
    let resolved = target::resolve(&inputs.objects, src, dst, &inputs.domain_suffix)?;
    let nodes = checks::involved_nodes(&inputs, &resolved);
    inputs::agents(&mut inputs, sources, &nodes);
    Ok(diagnose(&inputs, &resolved))
}

/// Checks everything between `src` and `dst` with what `inputs` holds.
pub fn diagnose(inputs: &Inputs, resolved: &Resolved) -> Report {
    let mut checks = Vec::new();
    checks.extend(checks::agents(inputs, resolved));
    checks.extend(checks::mesh(inputs, resolved));
    checks.extend(checks::endpoints(inputs, resolved));
    checks.extend(route::route(inputs, resolved));
    checks.extend(route::protocol(inputs, resolved));
    checks.extend(security::mtls(inputs, resolved));
    checks.extend(authz::check(inputs, resolved));
    checks.extend(security::certificates(inputs, resolved));
    checks.extend(telemetry::check(inputs, resolved));
    let verdict = verdict::choose(&checks);
    Report {
        source: resolved.source.display(),
        destination: resolved.destination_name(),
        port: resolved.port,
        checks,
        verdict,
    }
}

/// One line per check, then the verdict.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "diagnose {} -> {}{}\n",
        report.source,
        report.destination,
        report.port.map(|p| format!(":{p}")).unwrap_or_default()
    );
    for c in &report.checks {
        out.push_str(&format!(
            "{} {:<13} {}",
            c.status.mark(),
            c.check.name(),
            c.message
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!(" [fix: {} {}]", fix.object, fix.field));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "verdict: {} {}\n",
        report.verdict.status.mark(),
        report.verdict.message
    ));
    out
}
