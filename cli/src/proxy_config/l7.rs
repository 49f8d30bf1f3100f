//! `routes`, `clusters` and `endpoints`: the L7 part of the agent's dump
//! (`weft_agent::l7`: RouteConfigs as compiled, and the clusters the
//! agent's `L7::dump_clusters` lists), in `istioctl proxy-config`'s
//! columns.

use serde::Deserialize;
use serde_json::{Value, json};

use super::join;
use crate::table::Table;

/// A RouteConfig as the agent compiled it.
#[derive(Debug, Deserialize)]
pub(super) struct RouteConfig {
    name: String,
    hostname: String,
    http: Vec<HttpRoute>,
    #[serde(default)]
    tcp: Vec<L4Route>,
    #[serde(default)]
    tls: Vec<L4Route>,
}

#[derive(Debug, Deserialize)]
struct HttpRoute {
    name: String,
    virtual_service: String,
    #[serde(rename = "match")]
    matches: Vec<Value>,
    timeout: Option<String>,
    retries: Retries,
    #[serde(default)]
    route: Option<Vec<Destination>>,
    #[serde(default)]
    redirect: Option<Value>,
    #[serde(default)]
    direct_response: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct L4Route {
    virtual_service: String,
    route: Vec<Destination>,
}

#[derive(Debug, Deserialize)]
struct Retries {
    attempts: u32,
    per_try_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Destination {
    host: String,
    subset: String,
    port: u16,
    weight: u32,
}

/// One cluster: a service host, port and subset.
#[derive(Debug, Deserialize)]
pub(super) struct Cluster {
    name: String,
    hostname: String,
    port: u16,
    subset: String,
    direction: String,
    destination_rules: Vec<String>,
    policy: Value,
    endpoints: Option<Vec<Endpoint>>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Endpoint {
    address: Option<String>,
    workload: Option<String>,
    health: String,
    outlier_ejected: bool,
    #[serde(default)]
    active_requests: u64,
}

/// `reviews.shop.svc.cluster.local` → `reviews.shop` (as istioctl
/// shortens in-cluster hosts); other hosts as they are.
fn short_host(host: &str) -> &str {
    host.find(".svc.").map_or(host, |i| &host[..i])
}

/// `ns/name` → istioctl's `name.ns`.
fn dotted(reference: &str) -> String {
    match reference.split_once('/') {
        Some((ns, name)) => format!("{name}.{ns}"),
        None => reference.to_string(),
    }
}

/// A `StringMatch` dump as istioctl writes it: `/api*` (prefix), `/x`
/// (exact), `~/r.*` (regex).
fn string_match(m: &Value) -> String {
    if let Some(v) = m.get("exact").and_then(Value::as_str) {
        v.to_string()
    } else if let Some(v) = m.get("prefix").and_then(Value::as_str) {
        format!("{v}*")
    } else if let Some(v) = m.get("regex").and_then(Value::as_str) {
        format!("~{v}")
    } else {
        "*".to_string()
    }
}

/// One match: its URI (`/*` when unset), then its other conditions.
fn match_text(m: &Value) -> String {
    let mut parts = vec![m.get("uri").map_or("/*".to_string(), string_match)];
    for (key, label) in [("headers", "headers"), ("without_headers", "without")] {
        if let Some(Value::Object(map)) = m.get(key) {
            for (name, sm) in map {
                parts.push(format!("{label}[{name}]={}", string_match(sm)));
            }
        }
    }
    if let Some(Value::Object(map)) = m.get("query_params") {
        for (name, sm) in map {
            parts.push(format!("query[{name}]={}", string_match(sm)));
        }
    }
    if let Some(port) = m.get("port") {
        parts.push(format!("port={port}"));
    }
    if let Some(ns) = m.get("source_namespace").and_then(Value::as_str) {
        parts.push(format!("from={ns}"));
    }
    parts.join(" ")
}

fn destinations(list: &[Destination]) -> String {
    let one = |d: &Destination| {
        let mut text = short_host(&d.host).to_string();
        if d.port != 0 {
            text.push_str(&format!(":{}", d.port));
        }
        if !d.subset.is_empty() {
            text.push_str(&format!("|{}", d.subset));
        }
        text
    };
    match list {
        [] => "-".to_string(),
        [only] => one(only),
        many => many
            .iter()
            .map(|d| format!("{} {}%", one(d), d.weight))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

pub(super) fn routes(list: Vec<RouteConfig>) -> Table {
    let mut t = Table::new([
        "NAME",
        "VHOST",
        "ROUTE",
        "MATCH",
        "DESTINATIONS",
        "TIMEOUT",
        "RETRIES",
        "VIRTUAL SERVICE",
    ]);
    for config in list {
        // MeshConfig's `defaultHttpRetryPolicy` for the default route,
        // and its `defaultInboundHttpRetryPolicy` for requests to the apps.
        let mesh = match config.name.as_str() {
            weft_proto::MESH_DEFAULT_ROUTE => Some("(services without a VirtualService)"),
            weft_proto::MESH_INBOUND_ROUTE => Some("(each app, from its destination's side)"),
            _ => None,
        };
        if let Some(applies_to) = mesh {
            for r in &config.http {
                let retries = match r.retries.attempts {
                    0 => "none".to_string(),
                    n => n.to_string(),
                };
                t.row([
                    config.name.clone(),
                    "*".into(),
                    r.name.clone(),
                    "/*".into(),
                    applies_to.into(),
                    "-".into(),
                    retries,
                    "MeshConfig".into(),
                ]);
            }
            continue;
        }
        for (i, r) in config.http.iter().enumerate() {
            let matches = if r.matches.is_empty() {
                "/*".to_string()
            } else {
                r.matches
                    .iter()
                    .map(match_text)
                    .collect::<Vec<_>>()
                    .join(" || ")
            };
            let action = match (&r.route, &r.redirect, &r.direct_response) {
                (_, Some(redirect), _) => format!("redirect {}", redirect["code"]),
                (_, _, Some(direct)) => format!("direct response {}", direct["status"]),
                (Some(dests), _, _) => destinations(dests),
                (None, None, None) => "-".to_string(),
            };
            let retries = match (r.retries.attempts, &r.retries.per_try_timeout) {
                (0, _) => "none".to_string(),
                (n, Some(per_try)) => format!("{n} (per try {per_try})"),
                (n, None) => n.to_string(),
            };
            t.row([
                config.name.clone(),
                config.hostname.clone(),
                if r.name.is_empty() {
                    format!("#{i}")
                } else {
                    r.name.clone()
                },
                matches,
                action,
                r.timeout.clone().unwrap_or_else(|| "-".into()),
                retries,
                dotted(&r.virtual_service),
            ]);
        }
        for (kind, l4) in [("tcp", &config.tcp), ("tls", &config.tls)] {
            for (i, r) in l4.iter().enumerate() {
                t.row([
                    config.name.clone(),
                    config.hostname.clone(),
                    format!("{kind} #{i}"),
                    format!("({kind})"),
                    destinations(&r.route),
                    "-".into(),
                    "-".into(),
                    dotted(&r.virtual_service),
                ]);
            }
        }
    }
    t
}

/// The load balancer in one word (`RING_HASH(header x-user)` for a
/// consistent hash).
fn lb(policy: &Value) -> String {
    let lb = &policy["load_balancer"];
    if let Some(simple) = lb.as_str() {
        return simple.to_string();
    }
    let hash = &lb["consistent_hash"];
    let algorithm = hash["algorithm"].as_str().unwrap_or("HASH");
    let algorithm = algorithm.split(' ').next().unwrap_or(algorithm);
    format!("{algorithm}({})", hash["key"].as_str().unwrap_or("?"))
}

/// Outlier detection's thresholds, `-` when off.
fn outlier(policy: &Value) -> String {
    let o = &policy["outlier_detection"];
    if o.is_null() {
        return "-".to_string();
    }
    let mut parts = Vec::new();
    if let Some(n) = o["consecutive_5xx_errors"].as_u64() {
        parts.push(format!("5xx={n}"));
    }
    if let Some(n) = o["consecutive_gateway_errors"].as_u64() {
        parts.push(format!("gateway={n}"));
    }
    parts.push(format!(
        "eject={} max={}%",
        o["base_ejection_time"].as_str().unwrap_or("?"),
        o["max_ejection_percent"]
    ));
    parts.join(" ")
}

/// The connection-pool limits that are set (`default`: none).
fn pool(policy: &Value) -> String {
    let p = &policy["connection_pool"];
    let mut parts = Vec::new();
    for (key, label) in [
        ("max_connections", "conn"),
        ("http1_max_pending_requests", "pending"),
        ("http2_max_requests", "requests"),
        ("max_retries", "retries"),
    ] {
        if let Some(n) = p[key].as_u64() {
            parts.push(format!("{label}={n}"));
        }
    }
    if let Some(n) = p["max_requests_per_connection"].as_u64().filter(|&n| n > 0) {
        parts.push(format!("per-conn={n}"));
    }
    if parts.is_empty() {
        "default".to_string()
    } else {
        parts.join(",")
    }
}

pub(super) fn clusters(list: Vec<Cluster>) -> Table {
    let mut t = Table::new([
        "SERVICE FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "TYPE",
        "DESTINATION RULE",
        "LB",
        "TLS",
        "OUTLIER DETECTION",
        "CONNECTION POOL",
    ]);
    for c in list {
        let rules: Vec<String> = c.destination_rules.iter().map(|r| dotted(r)).collect();
        t.row([
            c.hostname,
            c.port.to_string(),
            if c.subset.is_empty() {
                "-".to_string()
            } else {
                c.subset
            },
            c.direction,
            "EDS".to_string(),
            join(&rules),
            lb(&c.policy),
            c.policy["tls"]["mode"].as_str().unwrap_or("-").to_string(),
            outlier(&c.policy),
            pool(&c.policy),
        ]);
    }
    t
}

pub(super) fn endpoints(list: Vec<Cluster>) -> Table {
    let mut t = Table::new(["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]);
    for c in list {
        for e in c.endpoints.unwrap_or_default() {
            t.row([
                e.address.unwrap_or_else(|| "-".into()),
                e.health,
                if e.outlier_ejected { "FAILED" } else { "OK" }.to_string(),
                c.name.clone(),
            ]);
        }
    }
    t
}

/// `-o json` of `endpoints`: one object per endpoint, with its cluster.
pub(super) fn endpoints_json(list: Option<Vec<Cluster>>) -> Vec<Value> {
    let mut out = Vec::new();
    for c in list.unwrap_or_default() {
        for e in c.endpoints.unwrap_or_default() {
            let mut v = json!(e);
            v["cluster"] = c.name.clone().into();
            out.push(v);
        }
    }
    out
}
