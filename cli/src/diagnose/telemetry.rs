//! What the agents counted for this pair since they started: Istio's
//! `istio_requests_total` by response code and Envoy response flags,
//! `istio_tcp_connections_opened_total`, and
//! `istio_tcp_connections_failed_total` by ztunnel's flags, and the
//! destination agent's `weft_agent_connections_denied_total{reason}`.

use std::collections::BTreeMap;

use super::{
    Cause, Check,
    checks::destination_pods,
    inputs::Inputs,
    target::{Destination, Resolved},
};

/// One sample of the classic text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the classic Prometheus text format (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let Some(open) = line.find('{') else {
        let (name, value) = line.split_once(' ')?;
        return Some(Sample {
            name: name.to_string(),
            labels: BTreeMap::new(),
            value: value.split_whitespace().next()?.parse().ok()?,
        });
    };
    let chars: Vec<char> = line[open + 1..].chars().collect();
    let mut labels = BTreeMap::new();
    let mut i = 0;
    loop {
        while chars.get(i).is_some_and(|c| *c == ',' || *c == ' ') {
            i += 1;
        }
        if *chars.get(i)? == '}' {
            i += 1;
            break;
        }
        let start = i;
        while chars.get(i).is_some_and(|c| *c != '=') {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        if chars.get(i + 1) != Some(&'"') {
            return None;
        }
        i += 2;
        let mut value = String::new();
        while let Some(&c) = chars.get(i) {
            match c {
                '"' => break,
                '\\' => {
                    i += 1;
                    let next = *chars.get(i)?;
                    value.push(if next == 'n' { '\n' } else { next });
                }
                c => value.push(c),
            }
            i += 1;
        }
        i += 1;
        labels.insert(key, value);
    }
    let rest: String = chars.get(i..)?.iter().collect();
    Some(Sample {
        name: line[..open].to_string(),
        labels,
        value: rest.split_whitespace().next()?.parse().ok()?,
    })
}

/// What Envoy's response flags mean, for the ones a failing pair shows.
/// (An AuthorizationPolicy's denial has none: Envoy's RBAC filter sets no
/// flag, see [`code_meaning`].)
pub fn flag_meaning(flag: &str) -> &'static str {
    match flag {
        "UAEX" => "denied by an external authorizer",
        "UF" => "upstream connection failure",
        "UH" => "no healthy upstream",
        "NR" => "no route",
        "NC" => "no cluster for the host",
        "UO" => "overflow (circuit breaker)",
        "UC" => "upstream connection reset",
        "UT" => "upstream timeout",
        "URX" => "retries exhausted",
        "DC" => "downstream went away",
        "FI" | "DI" => "fault injected",
        // ztunnel's, on failed TCP connections.
        "DENY" => "refused or closed by an AuthorizationPolicy (see the authorization check)",
        "CONNECT" => "its upstream could not be connected, or refused it",
        "TLS_FAILURE" => "the TLS handshake with the destination's node failed",
        "H2_HANDSHAKE_FAILURE" => "HTTP/2 with the destination's node could not be started",
        "NETWORK_POLICY" => {
            "the destination node's port 15008 did not answer in time (a NetworkPolicy, or the node is down)"
        }
        "IDENTITY_ERROR" => "no certificate for the client's identity",
        _ => "",
    }
}

/// What a status answered without a flag may mean.
fn code_meaning(code: &str) -> &'static str {
    match code {
        "403" => "an AuthorizationPolicy's denial (see the authorization check) or the app's own",
        _ => "",
    }
}

/// The pair's counts from the agents of both ends.
pub fn check(inputs: &Inputs, resolved: &Resolved) -> Vec<Check> {
    let source = &resolved.source;
    let src_workload = inputs
        .agent_workload(&source.namespace, &source.name)
        .map(|w| w.names.workload.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| source.name.clone());
    let dst_pods = destination_pods(inputs, resolved);
    let dst_workloads: Vec<(String, String)> = dst_pods
        .iter()
        .map(|p| {
            let w = inputs
                .agent_workload(&p.namespace, &p.name)
                .map(|w| w.names.workload.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| p.name.clone());
            (p.namespace.clone(), w)
        })
        .collect();
    let service = match &resolved.destination {
        Destination::Service(s) => Some((s.namespace.clone(), s.name.clone())),
        Destination::Pod(_) => None,
    };
    let mut nodes: Vec<&str> = source.spec.node.iter().map(String::as_str).collect();
    nodes.extend(dst_pods.iter().filter_map(|p| p.spec.node.as_deref()));
    nodes.sort();
    nodes.dedup();
    // (reporter, code, flags) → count.
    let mut counts: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let mut denied: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut read = 0;
    for node in &nodes {
        let Some(Ok(text)) = inputs.agents.get(*node).map(|a| &a.metrics) else {
            continue;
        };
        read += 1;
        for s in parse(text) {
            let l = |k: &str| s.labels.get(k).map(String::as_str).unwrap_or("");
            if s.name == "weft_agent_connections_denied_total" && s.value > 0.0 {
                denied.insert((node.to_string(), l("reason").to_string()), s.value);
                continue;
            }
            // Opened under `-`; failed under their flag.
            let tcp = s.name == "istio_tcp_connections_opened_total"
                || s.name == "istio_tcp_connections_failed_total";
            if (s.name != "istio_requests_total" && !tcp) || s.value == 0.0 {
                continue;
            }
            let from = l("source_workload_namespace") == source.namespace
                && l("source_workload") == src_workload;
            let to = dst_workloads.iter().any(|(ns, w)| {
                l("destination_workload_namespace") == ns && l("destination_workload") == w
            }) || service.as_ref().is_some_and(|(ns, name)| {
                l("destination_service_namespace") == ns && l("destination_service_name") == name
            });
            if from && to {
                let code = if tcp {
                    "tcp".to_string()
                } else {
                    l("response_code").to_string()
                };
                *counts
                    .entry((
                        l("reporter").to_string(),
                        code,
                        l("response_flags").to_string(),
                    ))
                    .or_default() += s.value;
            }
        }
    }
    if read == 0 {
        return vec![Check::skip(
            Cause::Telemetry,
            "no agent's metrics could be read",
        )];
    }
    summarize(&counts, &denied)
}

/// One sentence from the counts; a warning when requests failed.
pub fn summarize(
    counts: &BTreeMap<(String, String, String), f64>,
    denied: &BTreeMap<(String, String), f64>,
) -> Vec<Check> {
    // Prefer what the destination saw; the source's view adds what never
    // reached it (UF, UH, NR...).
    let mut parts = Vec::new();
    let mut bad = Vec::new();
    for ((reporter, code, flags), n) in counts {
        let flagged = !flags.is_empty() && flags != "-";
        let failed = flagged || code.starts_with('4') || code.starts_with('5');
        let meaning = if flagged {
            flags
                .split(',')
                .map(flag_meaning)
                .filter(|m| !m.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            code_meaning(code).to_string()
        };
        let text = format!(
            "{n} {} {code}{}{} (reported by the {reporter})",
            if code == "tcp" {
                "connection(s)"
            } else {
                "request(s) answered"
            },
            if flagged {
                format!(" {flags}")
            } else {
                String::new()
            },
            if meaning.is_empty() {
                String::new()
            } else {
                format!(": {meaning}")
            },
        );
        if failed {
            bad.push(text);
        } else {
            parts.push(text);
        }
    }
    let denials: Vec<String> = denied
        .iter()
        .map(|((node, reason), n)| format!("{node} {reason} {n}"))
        .collect();
    let denials = if denials.is_empty() {
        String::new()
    } else {
        format!("; connections refused by reason: {}", denials.join(", "))
    };
    if bad.is_empty() {
        let text = if parts.is_empty() {
            "no traffic of this pair was counted since the agents started".to_string()
        } else {
            format!("since the agents started: {}", parts.join(", "))
        };
        return vec![Check::ok(Cause::Telemetry, text + &denials)];
    }
    vec![Check::warn(
        Cause::Telemetry,
        format!(
            "failures of this pair counted since the agents started: {}{denials}",
            bad.join(", ")
        ),
        None,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let text = "# TYPE x counter\nistio_requests_total{reporter=\"destination\",response_code=\"503\",response_flags=\"UH\",path=\"a\\\"b\"} 3\nup 1\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels["response_flags"], "UH");
        assert_eq!(samples[0].labels["path"], "a\"b");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].name, "up");
    }

    #[test]
    fn failures_are_warnings() {
        let mut counts = BTreeMap::new();
        counts.insert(("destination".into(), "403".into(), "-".into()), 2.0);
        counts.insert(("source".into(), "503".into(), "UF,URX".into()), 1.0);
        counts.insert(("destination".into(), "200".into(), "-".into()), 5.0);
        counts.insert(("destination".into(), "tcp".into(), "DENY".into()), 4.0);
        let checks = summarize(&counts, &BTreeMap::new());
        assert!(
            checks[0]
                .message
                .contains("4 connection(s) tcp DENY: refused or closed by an AuthorizationPolicy"),
            "{}",
            checks[0].message
        );
        assert_eq!(checks[0].status, super::super::Status::Warn);
        assert!(
            checks[0]
                .message
                .contains("2 request(s) answered 403: an AuthorizationPolicy's denial"),
            "{}",
            checks[0].message
        );
        assert!(
            checks[0].message.contains(
                "1 request(s) answered 503 UF,URX: upstream connection failure, retries exhausted"
            ),
            "{}",
            checks[0].message
        );
    }
}
