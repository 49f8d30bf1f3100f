//! The access log end to end on a 2-node simulated cluster with weft's
//! real binaries: each agent writes one line per HTTP request and per TCP
//! connection, on the client's node and on the server's, in Envoy's
//! default text format as Istio sets it (response flags as Envoy names
//! them), or as JSON with Istio's keys when the `istio` ConfigMap's mesh
//! config asks for it; the Telemetry API turns a namespace's lines off and
//! filters them (`response.code >= 400`); an expression weft cannot
//! evaluate is refused by weft-control, which keeps the last good one.
//! Needs root and the binaries (`cargo xtask test` builds them).

/// Envoy's gRPC access-log service providers.
#[path = "access_log/als.rs"]
mod als;
mod common;
/// TCP connections' lines, refused ones included.
#[path = "access_log/tcp.rs"]
mod tcp;

use std::io::{Read as _, Write as _};

use anyhow::{Context as _, Result, bail, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp, otlp, wait_for};

/// The agent's access-log lines (Envoy text lines start with `[`, JSON
/// ones with `{`; the agent's own log lines start with a timestamp) that
/// contain `needle`.
fn lines(cluster: &Cluster, node: &str, needle: &str) -> Result<Vec<String>> {
    std::thread::sleep(LOG_SETTLE);
    Ok(cluster
        .node(node)?
        .agent_log()
        .lines()
        .filter(|l| (l.starts_with('[') || l.starts_with('{')) && l.contains(needle))
        .map(str::to_string)
        .collect())
}

/// The one line with `needle`, waiting for it to be written.
fn one_line(cluster: &Cluster, node: &str, needle: &str) -> Result<String> {
    wait_for(
        &format!("one access-log line with {needle} on {node}"),
        TIMEOUT,
        || {
            let found = lines(cluster, node, needle)?;
            ensure!(found.len() <= 1, "more than one line: {found:#?}");
            Ok(found.into_iter().next())
        },
    )
}

/// The Envoy text line's quoted fields and the bare ones between them.
fn text_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            fields.push(quoted[..end].to_string());
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    fields
}

/// The mesh config, one line of it, in the root namespace's ConfigMap.
fn mesh_config(cluster: &Cluster, line: &str) -> Result<()> {
    apply(
        cluster,
        "mesh-config",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    {line}\n"
        ),
    )
}

/// Requests `/json-<n>` (counting `n` on) until node-1 logs one as JSON.
fn until_json_lines(
    cluster: &Cluster,
    web: &weft_sim::Pod,
    base: &str,
    n: &mut u32,
    what: &str,
) -> Result<()> {
    converge(what, || {
        *n += 1;
        ensure!(get(web, base, &format!("/json-{n}"))? == 200);
        Ok(lines(cluster, "node-1", &format!("/json-{n}"))?
            .iter()
            .any(|l| l.starts_with('{')))
    })
}

/// `GET path` from `from` to `base`; the status.
fn get(from: &weft_sim::Pod, base: &str, path: &str) -> Result<u16> {
    Ok(httpapp::get_one(from, &format!("{base}{path}"), &[])?.status)
}

fn telemetry(cluster: &Cluster, ns: &str, name: &str, spec: &str) -> Result<()> {
    apply(
        cluster,
        &format!("telemetry-{ns}-{name}"),
        &format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
        ),
    )
}

/// weft-control's `/debug/config_errors`, as text.
fn config_errors(cluster: &Cluster) -> Result<String> {
    let addr = cluster.control().debug_addr();
    cluster.control().netns().run(|| -> Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.write_all(b"GET /debug/config_errors HTTP/1.0\r\nHost: weft\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })?
}

/// Namespaces `shop` and `front` in the mesh, `shop/api` (HTTP on 8080)
/// on node-2 behind its Service, a DENY policy for its `/forbidden*`
/// paths, and the client `front/web` on node-1; api, web and the
/// Service's VIP.
fn shop_api_and_front_web(
    cluster: &Cluster,
) -> Result<(Backend, weft_sim::Pod, std::net::Ipv4Addr)> {
    let (api, vip) = shop_api(cluster)?;
    cluster.add_namespace("front", &[AMBIENT])?;
    let web = client(cluster, "node-1", "front", "web")?;
    apply(
        cluster,
        "deny-forbidden",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-forbidden\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/forbidden*\"]\n",
    )?;
    Ok((api, web, vip))
}

/// The records and entries the agent on `node` counts exported
/// (`weft_agent_access_log_records_total{outcome="exported"}`).
fn exported(cluster: &Cluster, node: &str) -> Result<f64> {
    let metrics = cluster.node(node)?.agent_metrics()?;
    let prefix = "weft_agent_access_log_records_total{outcome=\"exported\"} ";
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no {prefix}on {node}:\n{metrics}"))
}

/// `shop/db` on node-2, an opaque TCP port (9090) behind its Service;
/// the backend and the Service's VIP.
fn shop_db(cluster: &Cluster) -> Result<(Backend, std::net::Ipv4Addr)> {
    let db = backend(cluster, "node-2", "shop", "db", &[("app", "db")], 9090, &[])?;
    let vip = cluster.add_service(
        "shop",
        "db",
        &[("app", "db")],
        &[ServicePort::tcp("tcp", 9090, 9090)],
    )?;
    Ok((db, vip))
}

#[test]
fn access_logs_in_envoys_formats_as_telemetry_says() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let (api, web, vip) = shop_api_and_front_web(cluster)?;
        // An opaque TCP port, on a pod the HTTP policy does not pick.
        let (db_pod, db) = shop_db(cluster)?;
        // A service without endpoints: 503 UH.
        let ghost = cluster.add_service(
            "shop",
            "ghost",
            &[("app", "ghost")],
            &[ServicePort::http("http", 8080, 8080)],
        )?;
        let base = format!("http://{vip}:8080");
        converge("the DENY policy reached node-2", || {
            Ok(get(&web, &base, "/forbidden-0")? == 403)
        })?;

        // A 200, on both sides, in Envoy's default text format.
        ensure!(get(&web, &base, "/ok?n=1")? == 200);
        let client = one_line(cluster, "node-1", "/ok?n=1")?;
        let f = text_fields(&client);
        ensure!(f[0].starts_with('[') && f[0].ends_with("Z]"), "START_TIME: {client}");
        ensure!(f[1] == "GET /ok?n=1 HTTP/1.1", "request: {client}");
        ensure!(
            f[2..7] == ["200", "-", "via_upstream", "-", "-"],
            "code, flags, details, termination, failure: {client}"
        );
        ensure!(f[9].parse::<u64>().is_ok(), "duration: {client}");
        ensure!(f[14] == format!("{vip}:8080"), "authority: {client}");
        ensure!(f[15] == api.pod.addr(8080).to_string(), "upstream host: {client}");
        ensure!(
            f[16] == "outbound|8080||api.shop.svc.cluster.local",
            "upstream cluster: {client}"
        );
        // The HBONE connection it went on, from web's address.
        ensure!(
            f[17].starts_with(&format!("{}:", web.ip())) && f[17] != f[19],
            "upstream local: {client}"
        );
        ensure!(f[18] == format!("{vip}:8080"), "downstream local: {client}");
        ensure!(f[19].starts_with(&web.ip().to_string()), "downstream remote: {client}");
        ensure!(f.len() == 22, "Envoy's default has 22 fields: {f:?}");
        let server = one_line(cluster, "node-2", "/ok?n=1")?;
        let f = text_fields(&server);
        ensure!(f[1] == "GET /ok?n=1 HTTP/1.1" && f[2] == "200", "{server}");
        ensure!(f[16] == "inbound|8080||", "server cluster: {server}");
        // The app connection, made from the client's own address (another
        // port than the HBONE connection it came on).
        ensure!(
            f[17].starts_with(&format!("{}:", web.ip())) && f[17] != f[19],
            "upstream local: {server}"
        );
        // The client's HBONE connection is the server's downstream.
        ensure!(
            text_fields(&client)[17] == f[19],
            "the client's upstream local is the server's downstream remote:\n{client}\n{server}"
        );
        // The x-request-id the client's agent made, on both lines.
        let request_id = &text_fields(&client)[13];
        ensure!(
            request_id.len() == 36 && *request_id == f[13],
            "x-request-id: client {request_id:?}, server {:?}",
            f[13]
        );

        // A 403 from the destination's policy: no flag (Envoy's RBAC
        // filter sets none) and the DENY policy's rule, as Istio names it
        // for Envoy, at the server; the upstream's answer at the client.
        ensure!(get(&web, &base, "/forbidden-1")? == 403);
        let server = one_line(cluster, "node-2", "/forbidden-1")?;
        ensure!(
            text_fields(&server)[2..5]
                == [
                    "403",
                    "-",
                    "rbac_access_denied_matched_policy[ns[shop]-policy[deny-forbidden]-rule[0]]"
                ],
            "{server}"
        );
        ensure!(
            text_fields(&server)[15] == "-",
            "no upstream host for a local reply: {server}"
        );
        let client = one_line(cluster, "node-1", "/forbidden-1")?;
        ensure!(text_fields(&client)[2..4] == ["403", "-"], "{client}");
        println!("--- a denied request's lines, the server's then the client's:\n{server}\n{client}");

        // No endpoint: 503 UH, answered by the client's agent.
        ensure!(get(&web, &format!("http://{ghost}:8080"), "/nowhere")? == 503);
        let client = one_line(cluster, "node-1", "/nowhere")?;
        let f = text_fields(&client);
        ensure!(
            f[2] == "503" && f[3].split(',').any(|flag| flag == "UH"),
            "{client}"
        );

        // TCP, and connections the destination refuses: one line each.
        let db_base = tcp::lines_of_connections(cluster, &web, &db_pod, db)?;

        // JSON, from the mesh config in the root namespace's ConfigMap.
        mesh_config(cluster, "accessLogEncoding: JSON")?;
        let mut n = 0;
        until_json_lines(cluster, &web, &base, &mut n, "JSON lines on node-1")?;
        let line = one_line(cluster, "node-1", &format!("/json-{n}"))?;
        let json: serde_json::Value = serde_json::from_str(&line).context(line.clone())?;
        for key in [
            "start_time",
            "method",
            "path",
            "protocol",
            "response_code",
            "response_flags",
            "response_code_details",
            "bytes_received",
            "bytes_sent",
            "duration",
            "authority",
            "upstream_host",
            "upstream_cluster",
            "downstream_local_address",
            "downstream_remote_address",
            "route_name",
        ] {
            ensure!(json.get(key).is_some(), "no `{key}`: {line}");
        }
        ensure!(json["method"] == "GET" && json["response_code"] == 200, "{line}");
        ensure!(json["path"] == format!("/json-{n}"), "{line}");
        ensure!(json["upstream_cluster"] == "outbound|8080||api.shop.svc.cluster.local");
        ensure!(get(&web, &base, "/forbidden-json")? == 403);
        let line = one_line(cluster, "node-2", "/forbidden-json")?;
        let json: serde_json::Value = serde_json::from_str(&line).context(line.clone())?;
        ensure!(
            json["response_code"] == 403
                && json["response_flags"] == "-"
                && json["response_code_details"] == "rbac_access_denied_matched_policy[ns[shop]-policy[deny-forbidden]-rule[0]]",
            "{line}"
        );

        // A text format of the mesh config's own, with operators beyond
        // Envoy's default: a POST's body bytes and its end, the ports,
        // the line's type, long flags, an unset variable, a unique id.
        mesh_config(
            cluster,
            "accessLogFormat: '[%START_TIME%] %REQ(:PATH)% %BYTES_RECEIVED% %REQUEST_DURATION% %UPSTREAM_REMOTE_PORT% %DOWNSTREAM_LOCAL_PORT% %ACCESS_LOG_TYPE% %RESPONSE_FLAGS_LONG% %ENVIRONMENT(WEFT_SIM_UNSET)% %UNIQUE_ID%'",
        )?;
        let body = "eleven-byte";
        let post = |path: &str| -> Result<u16> {
            Ok(httpapp::get_one(&web, &format!("{base}{path}"), &["--method", "POST", "--body", body])?.status)
        };
        converge("lines of the mesh config's format on node-1", || {
            n += 1;
            ensure!(post(&format!("/fmt-{n}"))? == 200);
            Ok(lines(cluster, "node-1", &format!("/fmt-{n}"))?
                .iter()
                .any(|l| l.contains("DownstreamEnd")))
        })?;
        for node in ["node-1", "node-2"] {
            let line = one_line(cluster, node, &format!("/fmt-{n}"))?;
            let f: Vec<&str> = line.split(' ').collect();
            ensure!(
                f.len() == 10
                    && f[1] == format!("/fmt-{n}")
                    && f[2] == body.len().to_string()
                    && f[3].parse::<u64>().is_ok()
                    && f[4..7] == ["8080", "8080", "DownstreamEnd"]
                    && f[7..9] == ["-", "-"]
                    && f[9].len() == 36,
                "{node}: {line}"
            );
        }
        ensure!(get(&web, &format!("http://{ghost}:8080"), "/fmt-nowhere")? == 503);
        let line = one_line(cluster, "node-1", "/fmt-nowhere")?;
        ensure!(
            line.contains(" DownstreamEnd NoHealthyUpstream - "),
            "the client's long flags: {line}"
        );
        mesh_config(cluster, "accessLogEncoding: JSON")?;
        until_json_lines(cluster, &web, &base, &mut n, "JSON lines on node-1 again")?;

        // A Telemetry for some of a namespace's workloads (`selector`):
        // api's server side stops logging, db's, in the same namespace,
        // goes on; without it, api's lines come back.
        telemetry(
            cluster,
            "shop",
            "quiet-api",
            "  selector:\n    matchLabels:\n      app: api\n  accessLogging:\n  - disabled: true\n",
        )?;
        converge("api's server-side lines stop", || {
            n += 1;
            ensure!(get(&web, &base, &format!("/sel-{n}"))? == 200);
            Ok(lines(cluster, "node-2", &format!("/sel-{n}"))?.is_empty())
        })?;
        let db_lines = || Ok::<_, anyhow::Error>(lines(cluster, "node-2", "inbound|9090||")?.len());
        // (db refuses web's connections since `deny-front-db`: its
        // server-side line of a refusal is a line all the same.)
        let before = db_lines()?;
        let _ = get(&web, &db_base, "/sel-db");
        converge("db's server side still logs", || Ok(db_lines()? > before))?;
        cluster.remove_config_file("telemetry-shop-quiet-api.yaml")?;
        converge("api's server-side lines again", || {
            n += 1;
            ensure!(get(&web, &base, &format!("/sel-{n}"))? == 200);
            Ok(!lines(cluster, "node-2", &format!("/sel-{n}"))?.is_empty())
        })?;

        // `disabled: true` in the client's namespace: its side stops, the
        // server's goes on.
        telemetry(cluster, "front", "quiet", "  accessLogging:\n  - disabled: true\n")?;
        converge("front's lines stop on node-1", || {
            n += 1;
            ensure!(get(&web, &base, &format!("/quiet-{n}"))? == 200);
            Ok(lines(cluster, "node-1", &format!("/quiet-{n}"))?.is_empty())
        })?;
        ensure!(get(&web, &base, "/quiet-last")? == 200);
        one_line(cluster, "node-2", "/quiet-last")?;
        ensure!(lines(cluster, "node-1", "/quiet-last")?.is_empty());

        // A filter on the server's namespace: errors only.
        let errors_only = "  accessLogging:\n  - filter:\n      expression: response.code >= 400\n";
        telemetry(cluster, "shop", "errors", errors_only)?;
        converge("shop's filter on node-2", || {
            n += 1;
            ensure!(get(&web, &base, &format!("/filtered-{n}"))? == 200);
            Ok(lines(cluster, "node-2", &format!("/filtered-{n}"))?.is_empty())
        })?;
        ensure!(get(&web, &base, "/forbidden-filtered")? == 403);
        one_line(cluster, "node-2", "/forbidden-filtered")?;

        // An expression weft cannot evaluate: refused, the last good
        // one keeps serving.
        telemetry(
            cluster,
            "shop",
            "errors",
            "  accessLogging:\n  - filter:\n      expression: response.code >== 400\n",
        )?;
        wait_for("the bad expression in /debug/config_errors", TIMEOUT, || {
            let errors = config_errors(cluster)?;
            Ok((errors.contains("spec.accessLogging[0].filter.expression")
                && errors.contains("position 16"))
            .then_some(()))
        })?;
        ensure!(get(&web, &base, "/still-filtered")? == 200);
        ensure!(get(&web, &base, "/forbidden-still")? == 403);
        one_line(cluster, "node-2", "/forbidden-still")?;
        ensure!(
            lines(cluster, "node-2", "/still-filtered")?.is_empty(),
            "the last good filter no longer applies"
        );

        // A filter on a request header: a logged request keeps only the
        // headers its format prints and its filter reads, so this one
        // must be kept for the filter.
        telemetry(
            cluster,
            "shop",
            "errors",
            "  accessLogging:\n  - filter:\n      expression: request.headers['x-log'] == 'yes'\n",
        )?;
        let get_with = |path: &str, header: &str| -> Result<u16> {
            let url = format!("{base}{path}");
            Ok(httpapp::get_one(&web, &url, &["--header", header])?.status)
        };
        converge("shop's header filter on node-2", || {
            n += 1;
            ensure!(get_with(&format!("/by-header-{n}"), "x-log: yes")? == 200);
            Ok(!lines(cluster, "node-2", &format!("/by-header-{n}"))?.is_empty())
        })?;
        ensure!(get_with("/header-no", "x-log: no")? == 200);
        ensure!(get_with("/header-yes", "x-log: yes")? == 200);
        one_line(cluster, "node-2", "/header-yes")?;
        ensure!(
            lines(cluster, "node-2", "/header-no")?.is_empty(),
            "the header filter let `x-log: no` through"
        );
        Ok(())
    })
}

/// The lines of `file` that contain `needle`.
fn file_lines(file: &std::path::Path, needle: &str) -> Result<Vec<String>> {
    std::thread::sleep(LOG_SETTLE);
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).context(file.display().to_string()),
    };
    Ok(text
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect())
}

/// Istio's file access-log providers: an `envoyFileAccessLog` provider
/// in the mesh config, with its own path and JSON labels, named by a
/// Telemetry beside the built-in `envoy` (each with its own filter), then
/// by `defaultProviders.accessLogging` alone; and a Telemetry naming a
/// provider that writes no file falls back to `accessLogFile`. The labels
/// use Envoy's operators beyond the default format's: a `strftime` start
/// time, a path without its query, the HBONE ends' TLS version and the
/// server's SPIFFE id, a gRPC status (none here), and the response's
/// times (none for the server side's own denial).
#[test]
fn file_providers_from_the_mesh_config_as_telemetry_names_them() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    // In the cluster's directory: removed with it.
    let file = cluster.dir().join("errors.json");
    cluster.with_logs(|cluster| {
        let (_api, web, vip) = shop_api_and_front_web(cluster)?;
        let base = format!("http://{vip}:8080");
        let providers = format!(
            "    extensionProviders:\n    - name: Errors-File\n      envoyFileAccessLog:\n        path: {}\n        logFormat:\n          labels:\n            code: '%RESPONSE_CODE%'\n            path: '%REQ(:PATH)%'\n            flags: '%RESPONSE_FLAGS%'\n            when: '%START_TIME(%s)%'\n            route: '%REQ_WITHOUT_QUERY(:PATH)%'\n            downstream_tls: '%DOWNSTREAM_TLS_VERSION%'\n            upstream_tls: '%UPSTREAM_TLS_VERSION%'\n            upstream_peer: '%UPSTREAM_PEER_URI_SAN%'\n            grpc: '%GRPC_STATUS%'\n            response_ms: '%RESPONSE_DURATION%'\n            response_tx_ms: '%RESPONSE_TX_DURATION%'\n    - name: otel\n      envoyOtelAls: {{service: otel.observability.svc.cluster.local, port: 4317}}\n",
            file.display()
        );
        apply(
            cluster,
            "mesh-config",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n{providers}"
            ),
        )?;
        // Mesh-wide: errors to the file provider (named in another case),
        // and every request to `envoy` on stdout, for the server side only.
        apply(
            cluster,
            "telemetry-mesh",
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: mesh-default\n  namespace: istio-system\nspec:\n  accessLogging:\n  - providers: [{name: errors-file}]\n    filter:\n      expression: response.code >= 400\n  - providers: [{name: envoy}]\n    match: {mode: SERVER}\n",
        )?;
        let mut n = 0;
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        converge("the file provider's lines", || {
            n += 1;
            ensure!(get(&web, &base, &format!("/forbidden-{n}?q={n}"))? == 403);
            Ok(file_lines(&file, &format!("/forbidden-{n}\""))?.len() == 2)
        })?;
        // Both sides wrote their 403 to the file, as the labels say: the
        // client side (node-1) with HBONE upstream, to api's identity, the
        // server side (node-2) with HBONE downstream.
        let route = format!("/forbidden-{n}");
        let mut sides = Vec::new();
        for line in file_lines(&file, &format!("{route}\""))? {
            let json: serde_json::Value = serde_json::from_str(&line).context(line.clone())?;
            ensure!(json["code"] == 403, "{line}");
            ensure!(json["path"] == format!("{route}?q={n}") && json["route"] == route, "{line}");
            let when: u64 = json["when"].as_str().unwrap_or_default().parse().context(line.clone())?;
            ensure!(when >= sent && when <= sent + 300, "START_TIME(%s) {when}, sent at {sent}: {line}");
            ensure!(json["grpc"].is_null(), "a gRPC status for HTTP: {line}");
            ensure!(json.as_object().map(|o| o.len()) == Some(11), "the labels' keys: {line}");
            let tls = |key: &str| json[key].as_str().map(str::to_string);
            sides.push((
                tls("downstream_tls"),
                tls("upstream_tls"),
                json["upstream_peer"].as_str().map(str::to_string),
                json["response_ms"].as_u64().zip(json["response_tx_ms"].as_u64()),
            ));
        }
        sides.sort();
        // The server side denied the request itself: nothing came from
        // its upstream (the app); the client side's upstream answered.
        let [
            (None, Some(client_up), Some(peer), Some(_)),
            (Some(server_down), None, None, None),
        ] = sides.as_slice()
        else {
            bail!("the two sides' TLS and response time labels: {sides:?}");
        };
        ensure!(client_up == "TLSv1.3" && server_down == "TLSv1.3", "{sides:?}");
        ensure!(
            peer.starts_with("spiffe://") && peer.contains("/ns/shop/sa/"),
            "the client side's upstream peer: {peer}"
        );
        // A 200: not in the file (its filter), on node-2's stdout (the
        // server side's `envoy`), not on node-1's (the client side names
        // only the file provider, so `accessLogFile` no longer applies).
        ensure!(get(&web, &base, "/fine")? == 200);
        one_line(cluster, "node-2", "/fine")?;
        ensure!(lines(cluster, "node-1", "/fine")?.is_empty(), "client side on stdout");
        ensure!(file_lines(&file, "/fine")?.is_empty(), "the filter let a 200 into the file");

        // A namespace naming an OpenTelemetry provider (`envoyOtelAls`):
        // its pods' client side sends its records to that collector (this
        // cluster has none: the exports fail, and are counted) and writes
        // nothing here...
        telemetry(
            cluster,
            "front",
            "otel",
            "  accessLogging:\n  - providers: [{name: otel}]\n",
        )?;
        // A 403: node-2's server side still writes it to the file and to
        // stdout; node-1's client side writes it nowhere.
        converge("front's client side writes nothing", || {
            n += 1;
            ensure!(get(&web, &base, &format!("/forbidden-otel-{n}"))? == 403);
            one_line(cluster, "node-2", &format!("/forbidden-otel-{n}"))?;
            Ok(file_lines(&file, &format!("/forbidden-otel-{n}\""))?.len() == 1)
        })?;
        ensure!(
            lines(cluster, "node-1", &format!("/forbidden-otel-{n}"))?.is_empty(),
            "no fallback to stdout for an OpenTelemetry provider"
        );
        // ...and a name no provider has resolves to nothing: MeshConfig's
        // own output (weft's default, stdout) applies to that side again.
        telemetry(
            cluster,
            "front",
            "otel",
            "  accessLogging:\n  - providers: [{name: nowhere}]\n",
        )?;
        converge("front's client side back on stdout", || {
            n += 1;
            ensure!(get(&web, &base, &format!("/nowhere-{n}"))? == 200);
            Ok(lines(cluster, "node-1", &format!("/nowhere-{n}"))?.len() == 1)
        })?;

        // `defaultProviders.accessLogging` alone (the Telemetries gone):
        // every request to the file provider, unfiltered, and nothing on
        // stdout.
        for name in ["telemetry-mesh", "telemetry-front-otel"] {
            cluster.remove_config_file(&format!("{name}.yaml"))?;
        }
        apply(
            cluster,
            "mesh-config",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    defaultProviders:\n      accessLogging: [errors-file]\n{providers}"
            ),
        )?;
        converge("every request in the file", || {
            n += 1;
            ensure!(get(&web, &base, &format!("/default-{n}"))? == 200);
            Ok(file_lines(&file, &format!("/default-{n}\""))?.len() == 2)
        })?;
        ensure!(get(&web, &base, "/default-last")? == 200);
        ensure!(lines(cluster, "node-1", "/default-last")?.is_empty());
        ensure!(lines(cluster, "node-2", "/default-last")?.is_empty());
        Ok(())
    })
}

/// An `envoyOtelAls` provider (`defaultProviders.accessLogging`): each
/// side's line reaches the OpenTelemetry collector as a log record over
/// OTLP/gRPC, as Envoy's OpenTelemetry access logger sends it when
/// istiod configures it: the body in Istio's default text format (its
/// newline kept), the labels as string attributes, the request's start
/// as the record's time, the ids of each side's span (the request is
/// traced, to the same collector), an empty resource; nothing on stdout.
/// A TCP connection's lines go there too.
#[test]
fn otel_providers_send_each_line_to_the_collector() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let (_api, web, vip) = shop_api_and_front_web(cluster)?;
        let (_db, db) = shop_db(cluster)?;
        let receiver = otlp::collector(cluster)?;
        apply(
            cluster,
            "mesh-config",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    defaultProviders:\n      accessLogging: [otel]\n      tracing: [traces]\n    extensionProviders:\n    - name: traces\n      opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}\n    - name: otel\n      envoyOtelAls:\n        service: otel-collector.observability.svc.cluster.local\n        port: 4317\n        logFormat:\n          labels:\n            code: '%RESPONSE_CODE%'\n            upstream_cluster: '%UPSTREAM_CLUSTER%'\n            missing: '%REQ(X-NOT-SENT)%'\n",
        )?;
        let base = format!("http://{vip}:8080");
        let of = |path: &str| -> Result<Vec<otlp::LogRecord>> {
            let request = format!("\"GET {path} HTTP/1.1\"");
            Ok(otlp::log_records(&receiver)?
                .into_iter()
                .filter(|r| r.body.contains(&request))
                .collect())
        };
        // A caller that traces, and samples: both sides' spans are on.
        let trace = "0af7651916cd43dd8448eb211c80319c";
        let traceparent = format!("traceparent: 00-{trace}-b7ad6b7169203331-01");
        let mut n = 0;
        let started = std::time::SystemTime::now();
        let mut answered = started;
        converge("both sides' records at the collector", || {
            n += 1;
            let url = format!("{base}/otel-{n}");
            ensure!(httpapp::get_one(&web, &url, &["--header", &traceparent])?.status == 200);
            answered = std::time::SystemTime::now();
            // The exporter sends a batch every second.
            std::thread::sleep(std::time::Duration::from_millis(1500));
            Ok(of(&format!("/otel-{n}"))?.len() == 2)
        })?;
        let path = format!("/otel-{n}");
        let records = of(&path)?;
        let answered = answered.duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
        // For the record (`--nocapture`): what the collector got.
        println!("the records of GET {path}:\n{records:#?}");
        let since = started
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
        let mut clusters = Vec::new();
        for r in &records {
            ensure!(
                r.body.starts_with('[') && r.body.ends_with('\n') && r.body.contains("\" 200 - via_upstream "),
                "the body is Istio's default line, newline kept: {r:?}"
            );
            ensure!(
                r.attributes.len() == 3
                    && r.attributes["code"] == "200"
                    && r.attributes["missing"] == "-",
                "the labels, as strings, `-` for a missing value: {r:?}"
            );
            ensure!(
                r.resource.is_empty() && r.scope.is_empty(),
                "no resource attributes and no scope name, as istiod sets Envoy: {r:?}"
            );
            ensure!(
                r.time_unix_nano >= since && r.time_unix_nano <= answered,
                "the record's time is the request's start: {r:?}"
            );
            ensure!(
                r.trace_id == trace && r.span_id.len() == 16 && r.span_id != "b7ad6b7169203331",
                "the record carries its side's span in the caller's trace: {r:?}"
            );
            clusters.push(r.attributes["upstream_cluster"].clone());
        }
        ensure!(
            records[0].span_id != records[1].span_id,
            "each side its own span: {records:#?}"
        );
        clusters.sort();
        ensure!(
            clusters
                == [
                    "inbound|8080||".to_string(),
                    "outbound|8080||api.shop.svc.cluster.local".to_string()
                ],
            "one record from each side: {records:#?}"
        );
        ensure!(
            lines(cluster, "node-1", &path)?.is_empty() && lines(cluster, "node-2", &path)?.is_empty(),
            "the provider replaced stdout"
        );
        // A TCP connection: one record from each side, by its cluster.
        ensure!(get(&web, &format!("http://{db}:9090"), "/over-tcp")? == 200);
        let l4 = [
            "outbound|9090||db.shop.svc.cluster.local",
            "inbound|9090||",
        ];
        converge("both sides' TCP records", || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let records = otlp::log_records(&receiver)?;
            Ok(l4.iter().all(|cluster| {
                records.iter().any(|r| {
                    r.attributes.get("upstream_cluster").map(String::as_str) == Some(*cluster)
                        && r.attributes["code"] == "0"
                        && r.body.contains("\"- - -\" 0 - ")
                })
            }))
        })?;
        // Each agent counts what it exported.
        for node in ["node-1", "node-2"] {
            ensure!(exported(cluster, node)? >= 1.0, "{node} counted no exported record");
        }
        Ok(())
    })
}
