//! `http/authz-latency/cross-node`: what L7 authorization at the
//! destination adds to a request. The fixed-rate client of
//! `http/latency-2000rps` (1 KiB `POST /bench`, 4 keep-alive connections,
//! 2,000/s, coordinated omission corrected), cross-node, through weft L7,
//! side by side in the same rounds:
//!
//! - `weft-l7`: to `bench-l7-remote` (no policy on `server-remote`);
//! - `weft-l7-authz`: to `bench-l7-authz`, the same L7 path to
//!   `server-authz` (also on node-2), whose agent validates each request's
//!   JWT with a RequestAuthentication (ES256, inline `jwks`) and evaluates
//!   an ALLOW AuthorizationPolicy of 10 HTTP rules, only the last of which
//!   matches (see `testbed::authorization_policy`).
//!
//! Every request of both carries the same valid token
//! (`Authorization: Bearer …`), so the requests are the same bytes and
//! only the policy differs; the agent verifies a token's signature once
//! and caches it. Every response of the authorized path must be a `200`
//! (any other fails the scenario), and node-2's agent must have counted
//! at least as many requests allowed (`/stats`,
//! `http_requests_authorized.allowed`) and none refused. The report gives
//! both paths' percentiles and their difference, the added cost.

use anyhow::{Context, Result, bail};

use super::{agents_cpu, agents_switches, run_load};
use crate::bench::options::Settings;
use crate::bench::procstat::ProcStat;
use crate::bench::report::{Metric, Sample, lower};
use crate::bench::runner::Run;
use crate::bench::stats::LoadReport;
use crate::bench::testbed::{AUTHZ_SCENARIO, HTTP_PORT, Placement, Testbed, Variant, load_args};

const AGENT_CPU: Metric = lower("agent CPU per request", "µs");
const DEST_CPU: Metric = lower("destination agent CPU per request", "µs");
const SWITCHES: Metric = lower("agent context switches per request", "1/op");

/// The node of the server, whose agent authorizes.
const DESTINATION: &str = "node-2";

pub fn run(run: &mut Run, testbed: &Testbed) {
    let s = run.settings.clone();
    run.authz_pair(testbed, AUTHZ_SCENARIO, |testbed, variant| {
        fixed_rate(testbed, variant, &s)
    });
}

fn fixed_rate(testbed: &Testbed, variant: Variant, s: &Settings) -> Result<Vec<Sample>> {
    // Both paths wait for the policy, so that neither runs while the
    // agents are still taking in config.
    let authz = testbed.authz()?;
    let addr = testbed.service_addr(variant, Placement::CrossNode, HTTP_PORT);
    let mut args = load_args(
        "http",
        addr,
        &[
            ("rate", &s.http_rate.to_string()),
            ("connections", &s.http_connections.to_string()),
            ("body", &s.body.to_string()),
            ("seconds", &s.seconds.to_string()),
            ("warmup", &s.warmup.to_string()),
        ],
    );
    args.extend(["--header".to_string(), authz.header.clone()]);
    let destination = testbed.cluster.node(DESTINATION)?;
    let verdicts_before = verdicts(testbed)?;
    let dest_pid = destination
        .agent_pid()
        .with_context(|| format!("the agent of {DESTINATION} is not running"))?;
    let dest_cpu = ProcStat::read(dest_pid)?.cpu_seconds;
    let cpu = agents_cpu(testbed, variant)?;
    let switches = agents_switches(testbed, variant)?;
    let r = run_load(testbed, testbed.client(variant), &args, s.seconds)?;
    let cpu = agents_cpu(testbed, variant)? - cpu;
    let switches = agents_switches(testbed, variant)? - switches;
    let dest_cpu = ProcStat::read(dest_pid)?.cpu_seconds - dest_cpu;
    let verdicts_after = verdicts(testbed)?;
    check_all_ok(&r, variant)?;
    if variant == Variant::WeftL7Authz {
        let delta = |k: &str| verdicts_after.get(k) - verdicts_before.get(k);
        // The counters cover the warm-up too, the report only the window.
        if delta("allowed") < r.count {
            bail!(
                "{DESTINATION}'s agent counted {} requests allowed, the client had {} answered: \
                 the policy did not decide them ({verdicts_after:?})",
                delta("allowed"),
                r.count
            );
        }
        for refused in ["denied", "unauthenticated", "bad_path"] {
            if delta(refused) > 0 {
                bail!(
                    "{DESTINATION}'s agent counted {} requests {refused} ({verdicts_after:?})",
                    delta(refused)
                );
            }
        }
    }
    let ops = r.count as f64 * (s.seconds + s.warmup) / s.seconds;
    let mut samples = super::http::fixed_rate_samples(&r);
    if ops > 0.0 {
        samples.push((DEST_CPU, dest_cpu * 1e6 / ops));
        samples.push((AGENT_CPU, cpu * 1e6 / ops));
        samples.push((SWITCHES, switches as f64 / ops));
    }
    Ok(samples)
}

/// Every request must have been answered `200`: a `401` or `403` would
/// measure a refusal, not the authorized path.
fn check_all_ok(r: &LoadReport, variant: Variant) -> Result<()> {
    if r.count == 0 || r.errors > 0 {
        bail!(
            "{}: {} requests answered 200, {} not (first: {})",
            variant.path_name(),
            r.count,
            r.errors,
            r.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

/// node-2's agent's `http_requests_authorized` counters.
#[derive(Debug)]
struct Verdicts(serde_json::Value);

impl Verdicts {
    fn get(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or(0)
    }
}

fn verdicts(testbed: &Testbed) -> Result<Verdicts> {
    let stats = testbed.cluster.node(DESTINATION)?.admin_json("/stats")?;
    let counted = stats
        .get("http_requests_authorized")
        .with_context(|| format!("no http_requests_authorized in {DESTINATION}'s /stats"))?;
    Ok(Verdicts(counted.clone()))
}
