//! Shared by the L7 suites: backends running `weft-sim-http`, Istio YAML
//! written to the control plane's directory, and waits for config to take
//! effect (config reaches agents asynchronously: a test polls for the
//! behaviour it expects, never sleeps).

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weft_sim::{Cluster, Pod, PodSpec, Process, httpapp, wait_for};

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

/// `api` (label `app: api`) in the ambient namespace `shop` on node-2,
/// serving HTTP on 8080 behind its Service, and the Service's VIP.
pub fn shop_api(cluster: &Cluster) -> Result<(Backend, std::net::Ipv4Addr)> {
    cluster.add_namespace("shop", &[AMBIENT])?;
    let api = backend(
        cluster,
        "node-2",
        "shop",
        "api",
        &[("app", "api")],
        8080,
        &[],
    )?;
    let vip = cluster.add_service(
        "shop",
        "api",
        &[("app", "api")],
        &[weft_sim::ServicePort::http("http", 8080, 8080)],
    )?;
    Ok((api, vip))
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

/// Longer than the agent takes to write a finished request's log line
/// (its access-log writer gathers lines for 20 ms before it writes).
pub const LOG_SETTLE: Duration = Duration::from_millis(100);

/// Polls `check` (a request or a few) until it returns `Ok(true)`: config
/// has reached the client's agent.
pub fn converge(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_for(what, TIMEOUT, || Ok(check()?.then_some(())))
}

/// The JSON access-log format the suites read: Istio's default keys
/// (`EnvoyJSONLogFormatIstio`, `route_name` among them) and what the
/// tests check besides: the attempts of a retried request, the gRPC
/// status, the time to the answer's head from upstream, and for TCP
/// lines the connection id (set only on L4 lines: what tells them from
/// HTTP ones) and both identities.
pub const ACCESS_LOG_FORMAT: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"),
    ("grpc_status", "%GRPC_STATUS%"),
    ("response_duration", "%RESPONSE_DURATION%"),
    ("connection_id", "%CONNECTION_ID%"),
    ("downstream_peer_uri_san", "%DOWNSTREAM_PEER_URI_SAN%"),
    ("downstream_local_uri_san", "%DOWNSTREAM_LOCAL_URI_SAN%"),
];

/// A GET of weft-control's debug endpoint `path`: the body.
pub fn control_debug(cluster: &Cluster, path: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let addr = cluster.control().debug_addr();
    let text = cluster.control().netns().run(|| -> Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: weft\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: not an HTTP response: {text}"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "GET {path}: {head}"
    );
    Ok(body.to_string())
}

/// The access-log type's version each agent (by node) acknowledged, once
/// every connected agent holds the newest version sent to it.
fn access_log_versions(cluster: &Cluster) -> Result<Option<Vec<(String, String)>>> {
    let syncz: serde_json::Value = serde_json::from_str(&control_debug(cluster, "/debug/syncz")?)?;
    let mut versions = Vec::new();
    for node in cluster.nodes() {
        let synced = syncz["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["node"] == node.name())
            .filter_map(|a| a["types"].get(weft_proto::ACCESS_LOG_POLICY_TYPE_URL))
            .find(|t| {
                t["last_acked_version"]
                    .as_str()
                    .is_some_and(|v| !v.is_empty())
                    && t["last_acked_version"] == t["last_sent_version"]
            });
        let Some(synced) = synced else {
            return Ok(None);
        };
        versions.push((
            node.name().to_string(),
            synced["last_acked_version"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    Ok(Some(versions))
}

/// Sets the mesh config (the `istio` ConfigMap of the root namespace) to
/// the JSON access log with [`ACCESS_LOG_FORMAT`], and waits until every
/// agent has acknowledged it (weft-control's `/debug/syncz`): from then
/// on each request or connection is one JSON line, which
/// [`access_log`] reads.
pub fn json_access_log(cluster: &Cluster) -> Result<()> {
    let before = wait_for("every agent in sync with the access log", TIMEOUT, || {
        access_log_versions(cluster)
    })?;
    apply(cluster, "mesh-config", &json_access_log_mesh(""))?;
    let applied = wait_for("every agent to take the JSON access log", TIMEOUT, || {
        Ok(access_log_versions(cluster)?.filter(|now| {
            now.iter()
                .all(|(node, v)| before.iter().all(|(n, old)| n != node || old != v))
        }))
    });
    applied.with_context(|| {
        format!(
            "weft-control's config errors: {}",
            control_debug(cluster, "/debug/config_errors").unwrap_or_else(|e| format!("{e:#}"))
        )
    })?;
    Ok(())
}

/// The mesh config (the `istio` ConfigMap) of [`json_access_log`], with
/// `more` (lines of MeshConfig, indented by four spaces) after the access
/// log's: for a test that changes the mesh config and still reads the
/// JSON lines.
pub fn json_access_log_mesh(more: &str) -> String {
    let format = serde_json::Value::Object(
        ACCESS_LOG_FORMAT
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect(),
    );
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    accessLogEncoding: JSON\n    accessLogFormat: '{format}'\n{more}"
    )
}

/// Every access-log entry (JSON line) in the agent's log on `node`, once
/// the lines of the requests just made are out: the agent writes a line
/// when the response has been sent (or the connection closed), and its
/// access-log thread gathers lines for 20 ms before writing them. Needs
/// [`json_access_log`] first. A line still being written is left out.
pub fn access_log_entries(cluster: &Cluster, node: &str) -> Result<Vec<serde_json::Value>> {
    std::thread::sleep(LOG_SETTLE);
    let log = cluster.node(node)?.agent_log();
    let complete = match log.rfind('\n') {
        Some(end) => &log[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("an access-log line: {l}")))
        .collect()
}

/// The client side's L7 entries (one per HTTP request the pods of `node`
/// made, by their agent), oldest first. The server side's are told apart
/// as the access-log test does, by Istio's cluster name:
/// `inbound|<port>||` on the server's side.
pub fn access_log(cluster: &Cluster, node: &str) -> Result<Vec<serde_json::Value>> {
    Ok(access_log_entries(cluster, node)?
        .into_iter()
        .filter(|e| is_http(e) && is_client(e))
        .collect())
}

/// An HTTP request's entry (an L4 connection's has no method).
pub fn is_http(entry: &serde_json::Value) -> bool {
    entry["method"].is_string()
}

/// An L4 connection's entry (only those have a connection id).
pub fn is_tcp(entry: &serde_json::Value) -> bool {
    entry["connection_id"].is_u64()
}

/// The client side's entry: its cluster is not `inbound|…` (an
/// `outbound|…` one, `PassthroughCluster`, or none when no route chose a
/// destination).
pub fn is_client(entry: &serde_json::Value) -> bool {
    !entry["upstream_cluster"]
        .as_str()
        .is_some_and(|c| c.starts_with("inbound|"))
}

/// The subset in Istio's cluster name `outbound|<port>|<subset>|<host>`
/// (`""`: none).
pub fn subset(entry: &serde_json::Value) -> Option<&str> {
    let cluster = entry["upstream_cluster"].as_str()?;
    let mut parts = cluster.strip_prefix("outbound|")?.split('|');
    parts.next()?;
    parts.next()
}

/// Whether the entry's `response_flags` has `flag` among them.
pub fn has_flag(entry: &serde_json::Value, flag: &str) -> bool {
    entry["response_flags"]
        .as_str()
        .is_some_and(|flags| flags.split(',').any(|f| f == flag))
}

/// The last few entries, for a failure's message.
pub fn last_entries(entries: &[serde_json::Value], n: usize) -> String {
    entries
        .iter()
        .rev()
        .take(n)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
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

/// Writes AuthorizationPolicy `name` in namespace `shop`, selecting
/// `app: api`, with `annotations` (indented lines under `metadata`, or
/// empty) and `spec`'s lines under `spec:`.
pub fn api_policy(cluster: &Cluster, name: &str, annotations: &str, spec: &str) -> Result<()> {
    apply(
        cluster,
        name,
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: shop\n{annotations}spec:\n  selector:\n    matchLabels:\n      app: api\n{spec}"
        ),
    )
}

/// The statuses of `requests` (`METHOD /path`) sent one after the other on
/// one connection from `from`, with `headers`; fails if they did not all
/// share that connection.
pub fn statuses(
    from: &weft_sim::Pod,
    base: &str,
    requests: &[&str],
    headers: &[&str],
) -> Result<Vec<u16>> {
    let (first_method, first_path) = requests[0].split_once(' ').context("METHOD /path")?;
    let mut args = vec!["--method", first_method];
    for then in &requests[1..] {
        args.extend(["--then", then]);
    }
    for h in headers {
        args.extend(["--header", h]);
    }
    let replies = httpapp::get(from, &format!("{base}{first_path}"), &args)?;
    ensure!(
        replies.iter().all(|r| r.connection == 1),
        "a request needed a new connection: {replies:?}"
    );
    Ok(replies.iter().map(|r| r.status).collect())
}
