//! Istio's telemetry from weft, end to end on a 2-node simulated cluster
//! with weft's real binaries: each agent serves `istio_requests_total`,
//! `istio_tcp_*` and its own health on `:15020/stats/prometheus`, with
//! Istio's labels, from both sides of each request and connection; a real
//! Prometheus (Debian's) scrapes agents and control plane, and queries
//! from Istio's standard dashboards, and every expression of the
//! dashboards in `deploy/dashboards/`, run against it. Needs root, the
//! binaries and `prometheus` (`cargo xtask test` sets them up).

mod common;
/// More checks on the first test's cluster: how connections are counted
/// and to whom.
#[path = "telemetry/connections.rs"]
mod connections;
/// A Telemetry bound to a Service (`targetRef`) turning its metrics off.
#[path = "telemetry/scopes.rs"]
mod scopes;
/// The request and response sizes: heads and bodies, as sent.
#[path = "telemetry/sizes.rs"]
mod sizes;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail, ensure};
use common::*;
use weft_sim::{
    Cluster, ServicePort, dashboards, httpapp,
    prometheus::{Prometheus, ScrapeJob},
};

/// weft-control's debug endpoint `path`, as text.
fn control_debug(cluster: &Cluster, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let addr = cluster.control().debug_addr();
    cluster.control().netns().run(|| -> Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: weft\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })?
}

/// One sample of a scrape: labels and value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of `name` from `node`'s agent, in the classic text format.
fn scrape(cluster: &Cluster, node: &str, name: &str) -> Result<Vec<Sample>> {
    parse(&cluster.node(node)?.agent_metrics()?, name)
}

/// The samples of metric `name` in exposition `text`.
fn parse(text: &str, name: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').context("a sample line")?;
        let (metric, labels) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.strip_suffix('}').context("closing brace")?),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let mut map = BTreeMap::new();
        // Values here never contain `",`.
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").context("label=\"value\"")?;
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        samples.push(Sample {
            labels: map,
            value: value.parse().with_context(|| format!("value of {line}"))?,
        });
    }
    Ok(samples)
}

/// The sum of the samples whose labels include every pair of `with`.
fn total(samples: &[Sample], with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// The one sample with these labels, or why there is not exactly one.
fn one<'a>(samples: &'a [Sample], with: &[(&str, &str)]) -> Result<&'a Sample> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        _ => bail!("{} samples with {with:?} in {samples:#?}", matching.len()),
    }
}

#[test]
fn agents_report_istios_metrics_from_both_sides_and_prometheus_reads_them() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        for ns in ["shop", "frontend"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        cluster.add_namespace("legacy", &[])?;
        let api = backend(
            cluster,
            "node-2",
            "shop",
            "api",
            &[("app", "api"), ("version", "v1")],
            8080,
            &[],
        )?;
        // An opaque TCP port and a gRPC port on the same pod (more servers).
        let _tcp_server = api.pod.spawn_http(&["serve", "--port", "9090"])?;
        let _grpc_server = api.pod.spawn_http(&["serve", "--port", "7070"])?;
        let vip = cluster.add_service(
            "shop",
            "api",
            &[("app", "api")],
            &[
                ServicePort::http("http", 8080, 8080),
                ServicePort::tcp("tcp", 9090, 9090),
                ServicePort::tcp("grpc", 7070, 7070),
            ],
        )?;
        let web = client(cluster, "node-1", "frontend", "web")?;
        let outsider = client(cluster, "node-1", "legacy", "outsider")?;
        policy_denying_admin(cluster)?;
        converge("the policy reached node-2", || {
            Ok(httpapp::get_one(&web, &format!("http://{vip}:8080/admin"), &[])?.status == 403)
        })?;
        let before = scrape(cluster, "node-2", "istio_requests_total")?;
        // Converging sent `/admin` before the policy was in force, too.
        let denied_before = total(
            &before,
            &[("reporter", "destination"), ("response_code", "403")],
        );
        let allowed_before = total(
            &before,
            &[
                ("reporter", "destination"),
                ("source_workload", "web"),
                ("response_code", "200"),
            ],
        );

        // 5 requests on one HTTP connection, 1 denied; 3 TCP connections;
        // 2 plaintext requests from outside the mesh.
        let replies = httpapp::get(
            &web,
            &format!("http://{vip}:8080/items"),
            &[
                "--then",
                "GET /items",
                "--then",
                "GET /items",
                "--then",
                "GET /items",
                "--then",
                "GET /admin",
            ],
        )?;
        let codes: Vec<u16> = replies.iter().map(|r| r.status).collect();
        ensure!(codes == [200, 200, 200, 200, 403], "{codes:?}");
        for _ in 0..3 {
            ensure!(httpapp::get_one(&web, &format!("http://{vip}:9090/tcp"), &[])?.status == 200);
        }
        for _ in 0..2 {
            let direct = format!("http://{}/legacy", api.pod.addr(8080));
            ensure!(httpapp::get_one(&outsider, &direct, &[])?.status == 200);
        }
        std::thread::sleep(LOG_SETTLE);

        // The source's view (node-1): requests by the route's service and
        // the endpoint's workload, TCP by connection.
        let source = scrape(cluster, "node-1", "istio_requests_total")?;
        let web_to_api = [
            ("reporter", "source"),
            ("source_workload", "web"),
            ("source_workload_namespace", "frontend"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/frontend/sa/web",
            ),
            ("destination_workload", "api"),
            ("destination_workload_namespace", "shop"),
            ("destination_app", "api"),
            ("destination_version", "v1"),
            ("destination_service", "api.shop.svc.cluster.local"),
            ("destination_service_name", "api"),
            ("destination_service_namespace", "shop"),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/shop/sa/api",
            ),
            ("request_protocol", "http"),
            ("connection_security_policy", "mutual_tls"),
        ];
        let ok = [web_to_api.as_slice(), &[("response_code", "200")]].concat();
        ensure!(total(&source, &ok) >= 4.0, "source 200s: {source:#?}");
        let denied = [web_to_api.as_slice(), &[("response_code", "403")]].concat();
        ensure!(
            total(&source, &denied) >= 2.0,
            "source 403s (converge + this run): {source:#?}"
        );

        let opened = scrape(cluster, "node-1", "istio_tcp_connections_opened_total")?;
        let tcp_from_web = [
            ("reporter", "source"),
            ("source_workload", "web"),
            ("destination_workload", "api"),
            ("destination_service", "api.shop.svc.cluster.local"),
            ("request_protocol", "tcp"),
            ("connection_security_policy", "mutual_tls"),
        ];
        ensure!(one(&opened, &tcp_from_web)?.value == 3.0, "{opened:#?}");
        let closed = scrape(cluster, "node-1", "istio_tcp_connections_closed_total")?;
        ensure!(one(&closed, &tcp_from_web)?.value == 3.0, "{closed:#?}");

        // The destination's view (node-2): the same requests, the client's
        // proven identity, a denial flagged as Envoy flags it, plaintext as
        // `none` with no principal.
        let at_api = scrape(cluster, "node-2", "istio_requests_total")?;
        let web_at_api = [
            ("reporter", "destination"),
            ("source_workload", "web"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/frontend/sa/web",
            ),
            ("destination_workload", "api"),
            ("destination_app", "api"),
            ("destination_version", "v1"),
            ("destination_service", "api.shop.svc.cluster.local"),
            ("request_protocol", "http"),
            ("connection_security_policy", "mutual_tls"),
        ];
        let ok = [
            web_at_api.as_slice(),
            &[("response_code", "200"), ("response_flags", "-")],
        ]
        .concat();
        ensure!(
            one(&at_api, &ok)?.value == allowed_before + 4.0,
            "destination 200s (before: {allowed_before}): {at_api:#?}"
        );
        let rbac = [
            web_at_api.as_slice(),
            // Envoy's RBAC filter sets no response flag.
            &[("response_code", "403"), ("response_flags", "-")],
        ]
        .concat();
        ensure!(
            total(&at_api, &rbac) == denied_before + 1.0,
            "destination 403s (before: {denied_before}): {at_api:#?}"
        );
        let plaintext = [
            ("reporter", "destination"),
            ("source_principal", "unknown"),
            ("destination_workload", "api"),
            ("connection_security_policy", "none"),
            ("response_code", "200"),
        ];
        ensure!(
            one(&at_api, &plaintext)?.value == 2.0,
            "plaintext at the destination: {at_api:#?}"
        );
        let durations = scrape(
            cluster,
            "node-2",
            "istio_request_duration_milliseconds_count",
        )?;
        ensure!(
            one(&durations, &ok)?.value == allowed_before + 4.0,
            "{durations:#?}"
        );
        let sizes = scrape(cluster, "node-2", "istio_response_bytes_sum")?;
        ensure!(one(&sizes, &ok)?.value > 0.0, "response bytes: {sizes:#?}");

        let opened = scrape(cluster, "node-2", "istio_tcp_connections_opened_total")?;
        let tcp_at_api = [
            ("reporter", "destination"),
            ("source_workload", "web"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/frontend/sa/web",
            ),
            ("destination_workload", "api"),
            ("destination_service", "api.shop.svc.cluster.local"),
            ("connection_security_policy", "mutual_tls"),
        ];
        ensure!(one(&opened, &tcp_at_api)?.value == 3.0, "{opened:#?}");
        for (metric, direction) in [
            ("istio_tcp_received_bytes_total", "request"),
            ("istio_tcp_sent_bytes_total", "response"),
        ] {
            let at_source = one(&scrape(cluster, "node-1", metric)?, &tcp_from_web)?.value;
            let at_destination = one(&scrape(cluster, "node-2", metric)?, &tcp_at_api)?.value;
            ensure!(
                at_source > 0.0 && at_source == at_destination,
                "{direction} bytes: {at_source} at the source, {at_destination} at the destination"
            );
        }
        grpc_messages_are_counted(cluster, &web, vip)?;
        connections::open_connections_show_their_bytes(cluster, &web, &api.pod)?;
        connections::host_network_pods_are_named_by_service_not_by_address(
            cluster, &web, &api.pod,
        )?;
        prometheus_reads_them(cluster, &web, vip)?;
        connections::failed_connections_close_under_ztunnels_flags(
            cluster, &web, &outsider, &api.pod,
        )
    })
}

/// The Telemetry API's `metrics` overrides change what the agents record:
/// a mesh-wide Telemetry adds labels to the server side's request count
/// (values read from each request, and a TCP connection's port), removes
/// one, and turns every client-side metric off; a namespace's Telemetry
/// turns its servers' duration histogram off. Unlisted metrics keep
/// Istio's standard labels.
#[test]
fn telemetry_metric_overrides_change_labels_and_turn_metrics_off() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        for ns in ["shop", "front"] {
            cluster.add_namespace(ns, &[AMBIENT])?;
        }
        let api = backend(cluster, "node-2", "shop", "api", &[("app", "api")], 8080, &[])?;
        let _tcp_server = api.pod.spawn_http(&["serve", "--port", "9090"])?;
        let vip = cluster.add_service(
            "shop",
            "api",
            &[("app", "api")],
            &[
                ServicePort::http("http", 8080, 8080),
                ServicePort::tcp("tcp", 9090, 9090),
            ],
        )?;
        let web = client(cluster, "node-1", "front", "web")?;
        apply(
            cluster,
            "telemetry-metrics",
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: mesh-default\n  namespace: istio-system\nspec:\n  metrics:\n  - providers:\n    - name: prometheus\n    overrides:\n    - match: {metric: REQUEST_COUNT, mode: SERVER}\n      tagOverrides:\n        request_host: {value: request.host}\n        request_method: {value: request.method}\n        user: {value: \"request.headers['x-user']\"}\n        served_by: {value: \"response.headers['x-served-by']\"}\n        source_principal: {operation: REMOVE}\n    - match: {metric: TCP_OPENED_CONNECTIONS, mode: SERVER}\n      tagOverrides:\n        destination_port: {value: string(destination.port)}\n        source_address: {value: source.address}\n    - match: {metric: ALL_METRICS, mode: CLIENT}\n      disabled: true\n---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: no-durations\n  namespace: shop\nspec:\n  metrics:\n  - overrides:\n    - match: {metric: REQUEST_DURATION, mode: SERVER}\n      disabled: true\n",
        )?;
        let url = format!("http://{vip}:8080/items");
        let from_web = [
            ("reporter", "destination"),
            ("source_workload", "web"),
            ("destination_workload", "api"),
        ];
        let mut last = Vec::new();
        converge("node-2 writes the added labels", || {
            httpapp::get_one(&web, &url, &["--header", "x-user: ada"])?;
            last = scrape(cluster, "node-2", "istio_requests_total")?;
            Ok(last.iter().any(|s| {
                s.labels.get("user").map(String::as_str) == Some("ada")
                    && from_web
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            }))
        })
        .with_context(|| {
            let syncz = control_debug(cluster, "/debug/syncz").unwrap_or_default();
            format!("node-2's last scrape: {last:#?}\nsyncz: {syncz}")
        })?;
        // The client side is off at node-1: a request no longer counts.
        let source_count = || -> Result<f64> {
            Ok(total(
                &scrape(cluster, "node-1", "istio_requests_total")?,
                &[("reporter", "source"), ("source_workload", "web")],
            ))
        };
        converge("node-1 stops counting the client side", || {
            let before = source_count()?;
            httpapp::get_one(&web, &url, &[])?;
            std::thread::sleep(LOG_SETTLE);
            Ok(source_count()? == before)
        })?;

        let at_api = scrape(cluster, "node-2", "istio_requests_total")?;
        let ada = [from_web.as_slice(), &[("user", "ada")]].concat();
        let sample = one(&at_api, &ada)?;
        let label = |name: &str| sample.labels.get(name).map(String::as_str);
        ensure!(
            label("request_host") == Some(&format!("{vip}:8080")),
            "request_host: {sample:?}"
        );
        ensure!(label("request_method") == Some("GET"), "{sample:?}");
        // From the response's headers (the app names itself in one).
        ensure!(label("served_by") == Some("api"), "served_by: {sample:?}");
        ensure!(label("source_principal").is_none(), "removed: {sample:?}");
        ensure!(label("response_code") == Some("200"), "{sample:?}");
        // A request without the header: `unknown`, as Istio writes a
        // value it cannot compute.
        let anonymous = [from_web.as_slice(), &[("user", "unknown")]].concat();
        ensure!(total(&at_api, &anonymous) >= 1.0, "{at_api:#?}");

        // Other metrics keep the standard set; the duration histogram is
        // off for shop's servers.
        let sizes = scrape(cluster, "node-2", "istio_request_bytes_count")?;
        let size = one(&sizes, &from_web)?;
        ensure!(
            size.labels.get("source_principal").map(String::as_str)
                == Some("spiffe://cluster.local/ns/front/sa/web")
                && !size.labels.contains_key("user"),
            "{size:?}"
        );
        // Series recorded before the policy arrived stay (counters never
        // go away), but no longer grow.
        let durations = || -> Result<f64> {
            let samples = scrape(cluster, "node-2", "istio_request_duration_milliseconds_count")?;
            Ok(total(&samples, &from_web))
        };
        let (sent, timed) = (source_count()?, durations()?);
        let counted = total(&scrape(cluster, "node-2", "istio_requests_total")?, &from_web);
        for _ in 0..3 {
            ensure!(httpapp::get_one(&web, &url, &[])?.status == 200);
        }
        std::thread::sleep(LOG_SETTLE);
        ensure!(source_count()? == sent, "client side off");
        ensure!(durations()? == timed, "durations are off for shop");
        let now = total(&scrape(cluster, "node-2", "istio_requests_total")?, &from_web);
        ensure!(now == counted + 3.0, "{counted} then {now}");

        // A TCP connection: the port, computed when it opened.
        ensure!(httpapp::get_one(&web, &format!("http://{vip}:9090/tcp"), &[])?.status == 200);
        std::thread::sleep(LOG_SETTLE);
        let opened = scrape(cluster, "node-2", "istio_tcp_connections_opened_total")?;
        let tcp = [
            ("reporter", "destination"),
            ("source_workload", "web"),
            ("destination_port", "9090"),
        ];
        ensure!(total(&opened, &tcp) >= 1.0, "{opened:#?}");
        // The client's address, as the destination's side saw it: web's
        // IP and a port (it was `unknown` before 2026-12-05).
        let from = format!("{}:", web.ip());
        let of_this_connection = |s: &&Sample| {
            tcp.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        };
        let web_addressed = |s: &Sample| {
            s.labels
                .get("source_address")
                .is_some_and(|a| a.starts_with(&from))
        };
        ensure!(
            opened.iter().filter(of_this_connection).all(web_addressed),
            "source_address is web's {from}…: {opened:#?}"
        );
        let closed = scrape(cluster, "node-2", "istio_tcp_connections_closed_total")?;
        ensure!(
            closed.iter().all(|s| !s.labels.contains_key("destination_port")),
            "only the opened count has the port: {closed:#?}"
        );
        Ok(())
    })
}

/// A gRPC stream of 5 messages each way is one request, and its messages
/// are counted, by both reporters, in `istio_request_messages_total` and
/// `istio_response_messages_total`; its request's size counts the bytes
/// its body carried (a gRPC request has no `content-length`).
fn grpc_messages_are_counted(
    cluster: &Cluster,
    web: &weft_sim::Pod,
    vip: std::net::Ipv4Addr,
) -> Result<()> {
    let out = web.run_http(
        &[
            "grpc-call",
            &format!("{vip}:7070"),
            "--method",
            "chat",
            "--count",
            "5",
        ],
        TIMEOUT,
    )?;
    ensure!(
        out.stdout.contains("\"grpc_status\":0"),
        "grpc-call chat: {out:?}"
    );
    std::thread::sleep(LOG_SETTLE);
    let mut sizes = Vec::new();
    for (node, reporter) in [("node-1", "source"), ("node-2", "destination")] {
        let stream = [
            ("reporter", reporter),
            ("source_workload", "web"),
            ("destination_workload", "api"),
            ("request_protocol", "grpc"),
            ("grpc_response_status", "0"),
        ];
        for metric in [
            "istio_request_messages_total",
            "istio_response_messages_total",
        ] {
            let counted = total(&scrape(cluster, node, metric)?, &stream);
            ensure!(counted == 5.0, "{metric} by the {reporter}: {counted}");
        }
        sizes.push(total(
            &scrape(cluster, node, "istio_request_bytes_sum")?,
            &stream,
        ));
    }
    // Five messages of a 5-byte prefix and a payload each, and the head;
    // the destination's head has the headers the source's agent added.
    ensure!(
        sizes[0] > 25.0 && sizes[1] > sizes[0],
        "istio_request_bytes_sum of the stream, source and destination: {sizes:?}"
    );
    Ok(())
}

/// A real Prometheus, in the control plane's namespace (on the fabric),
/// scrapes both agents: queries from Istio's standard dashboards return
/// the traffic made, and every expression of `deploy/dashboards/` runs.
fn prometheus_reads_them(
    cluster: &Cluster,
    web: &weft_sim::Pod,
    vip: std::net::Ipv4Addr,
) -> Result<()> {
    let agents: Vec<String> = ["node-1", "node-2"]
        .iter()
        .map(|n| Ok(format!("{}:15020", cluster.node(n)?.ip())))
        .collect::<Result<_>>()?;
    let prometheus = Prometheus::builder()
        .netns(cluster.control().netns())
        .job(ScrapeJob::new("weft-agent", agents).metrics_path("/stats/prometheus"))
        .job(
            ScrapeJob::new("weft-control", [cluster.control().debug_addr().to_string()])
                .metrics_path("/metrics"),
        )
        .start()?;
    // Traffic while Prometheus watches (every target scraped before and
    // after it), so that rates are not zero: HTTP, TCP, gRPC, and a config
    // change for the control plane's pushes.
    let after_scrapes = |what: &str| {
        prometheus
            .wait_for_query("min(count_over_time(up[5m]))", TIMEOUT, |s| {
                s.first().is_some_and(|s| s.value >= 2.0)
            })
            .with_context(|| what.to_string())
    };
    after_scrapes("every target scraped twice")?;
    let pushes_before = prometheus.query_value("sum(pilot_xds_pushes)")?;
    for _ in 0..10 {
        ensure!(httpapp::get_one(web, &format!("http://{vip}:8080/items"), &[])?.status == 200);
        ensure!(httpapp::get_one(web, &format!("http://{vip}:9090/tcp"), &[])?.status == 200);
    }
    for (method, code) in [("unary", "0"), ("fail", "5")] {
        let out = web.run_http(
            &[
                "grpc-call",
                &format!("{vip}:7070"),
                "--method",
                method,
                "--code",
                code,
            ],
            TIMEOUT,
        )?;
        ensure!(
            out.stdout.contains(&format!("\"grpc_status\":{code}")),
            "grpc-call {method}: {out:?}"
        );
    }
    apply(
        cluster,
        "audit",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: audit\n  namespace: shop\nspec:\n  action: AUDIT\n  rules:\n  - to:\n    - operation:\n        paths: [\"/audited\"]\n",
    )?;
    std::thread::sleep(LOG_SETTLE);
    // Prometheus has what each agent counted, and a later scrape.
    for (node, reporter) in [("node-1", "source"), ("node-2", "destination")] {
        let counted = total(
            &scrape(cluster, node, "istio_requests_total")?,
            &[("reporter", reporter), ("source_workload", "web")],
        );
        let query =
            format!("sum(istio_requests_total{{reporter=\"{reporter}\",source_workload=\"web\"}})");
        prometheus.wait_for_query(&query, TIMEOUT, |s| {
            s.first().is_some_and(|s| s.value == counted)
        })?;
    }
    prometheus.wait_for_query("sum(pilot_xds_pushes)", TIMEOUT, |s| {
        s.first().is_some_and(|s| s.value > pushes_before)
    })?;
    let scrapes = prometheus.query_value("min(count_over_time(up[5m]))")?;
    prometheus.wait_for_query("min(count_over_time(up[5m]))", TIMEOUT, |s| {
        s.first().is_some_and(|s| s.value >= scrapes + 1.0)
    })?;

    // Request rate by response code (Istio's mesh and service dashboards).
    let by_code = prometheus.query(
        "sum(rate(istio_requests_total{reporter=\"destination\",destination_workload=\"api\"}[1m])) by (response_code)",
    )?;
    let rate_of = |code: &str| {
        by_code
            .iter()
            .find(|s| s.label("response_code") == Some(code))
            .map(|s| s.value)
    };
    ensure!(
        rate_of("200").is_some_and(|r| r > 0.0),
        "rate of 200s: {by_code:?}"
    );
    // P99 latency by workload.
    let p99 = prometheus.query(
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\"}[1m])) by (le, destination_workload))",
    )?;
    let api_p99 = p99
        .iter()
        .find(|s| s.label("destination_workload") == Some("api"));
    ensure!(
        api_p99.is_some_and(|s| s.value.is_finite() && s.value > 0.0),
        "P99 latency of api: {p99:?}"
    );
    // TCP bytes by source and destination: what the agent counted.
    let bytes = prometheus.query(
        "sum(istio_tcp_received_bytes_total{reporter=\"destination\"}) by (source_workload, destination_workload)",
    )?;
    let scraped = total(
        &scrape(cluster, "node-2", "istio_tcp_received_bytes_total")?,
        &[
            ("reporter", "destination"),
            ("source_workload", "web"),
            ("destination_workload", "api"),
        ],
    );
    let web_to_api = bytes.iter().find(|s| {
        s.label("source_workload") == Some("web") && s.label("destination_workload") == Some("api")
    });
    ensure!(
        web_to_api.is_some_and(|s| s.value == scraped && scraped > 0.0),
        "TCP bytes web → api: Prometheus {bytes:?}, agent {scraped}"
    );

    // Every expression of every dashboard is valid PromQL; those over the
    // traffic made return it.
    // The workload dashboard twice: api receives, web sends.
    let views = [
        dashboards::Values::from([
            ("namespace", "shop"),
            ("workload", "api"),
            ("service", "api.shop.svc.cluster.local"),
        ]),
        dashboards::Values::from([
            ("namespace", "frontend"),
            ("workload", "web"),
            ("service", "api.shop.svc.cluster.local"),
        ]),
    ];
    let mut empty = Vec::new();
    let mut checked = 0;
    for dashboard in dashboards::load_all(&dashboards::default_dir())? {
        let per_view: Vec<Vec<(String, String)>> = views
            .iter()
            .map(|v| dashboard.expressions(v))
            .collect::<Result<_>>()?;
        for (i, (panel, expr)) in per_view[0].iter().enumerate() {
            let mut answered = false;
            for view in &per_view {
                let (_, expr) = &view[i];
                let result = prometheus
                    .query(expr)
                    .with_context(|| format!("{}: panel {panel:?}", dashboard.title))?;
                checked += 1;
                answered |= !result.is_empty();
            }
            if !answered {
                empty.push(format!("{} / {panel}: {expr}", dashboard.title));
            }
        }
    }
    ensure!(
        empty.is_empty(),
        "{checked} dashboard queries ran; these returned nothing for the traffic made:\n{}",
        empty.join("\n")
    );
    Ok(())
}

/// Scrapers that ask and then read nothing, and connections that send
/// nothing, at a node's metrics port from the other node: the node's
/// traffic and other scrapes go on while they hang, and the agent closes
/// every one of them after its limits (an answer that makes no progress
/// for 30 s is cut off; a connection without a request for 30 s closed).
#[test]
fn stalled_scrapers_hold_up_neither_traffic_nor_scrapes_and_are_closed() -> Result<()> {
    use std::io::{Read, Write};
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let (_api, vip) = shop_api(cluster)?;
        cluster.add_namespace("frontend", &[AMBIENT])?;
        let url = format!("http://{vip}:8080/items");
        // A series per source workload: enough that a scrape outgrows the
        // kernel's buffers between a stalled client and the agent.
        let mut clients = Vec::new();
        for i in 0..8 {
            let web = client(cluster, "node-1", "frontend", &format!("web-{i}"))?;
            converge("web reaches api", || {
                Ok(httpapp::get_one(&web, &url, &[])?.status == 200)
            })?;
            clients.push(web);
        }
        let node = cluster.node("node-2")?;
        let scrape = node.agent_metrics()?.len();
        ensure!(
            scrape > 256 * 1024,
            "a scrape of node-2 is {scrape} bytes: too small to stall a client that reads nothing"
        );

        let addr = std::net::SocketAddr::from((node.ip(), 15020));
        let (stalled, silent) = cluster.node("node-1")?.netns().run(|| -> Result<_> {
            let mut stalled = Vec::new();
            for _ in 0..8 {
                // A 4 KiB receive buffer: the answer soon fills both sides'.
                let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                socket.set_recv_buffer_size(4096)?;
                socket.connect(&addr.into())?;
                let mut stream = std::net::TcpStream::from(socket);
                stream.write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: weft\r\n\r\n")?;
                stalled.push(stream);
            }
            let silent = (0..8)
                .map(|_| std::net::TcpStream::connect(addr))
                .collect::<std::io::Result<Vec<_>>>()?;
            Ok((stalled, silent))
        })??;

        // While they hang: requests through node-2's agent, and whole
        // scrapes for another client.
        let mut chain = Vec::new();
        for _ in 0..9 {
            chain.extend(["--then", "GET /items"]);
        }
        let codes: Vec<u16> = httpapp::get(&clients[0], &url, &chain)?
            .iter()
            .map(|r| r.status)
            .collect();
        ensure!(codes == [200; 10], "requests while scrapers stall: {codes:?}");
        for _ in 0..3 {
            let again = node.agent_metrics()?;
            // `agent_metrics` reads the whole body its length announces.
            ensure!(
                again.contains("istio_requests_total"),
                "a scrape while others stall: {} bytes",
                again.len()
            );
        }

        // Past the limits, every one of them has been closed by the agent:
        // reading finds the end; a stalled scraper's answer was cut off.
        std::thread::sleep(std::time::Duration::from_secs(35));
        for (kind, streams) in [("stalled scraper", stalled), ("silent connection", silent)] {
            for mut stream in streams {
                stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
                let mut got = Vec::new();
                match stream.read_to_end(&mut got) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                    Err(e) => bail!(
                        "a {kind} was not closed by node-2's agent ({e}; {} bytes read)",
                        got.len()
                    ),
                }
                ensure!(
                    kind != "stalled scraper" || got.len() < scrape,
                    "a stalled scraper got {} bytes, a whole answer (about {scrape}): nothing was cut off",
                    got.len()
                );
            }
        }
        Ok(())
    })
}

/// Denies `/admin` on the api pods.
fn policy_denying_admin(cluster: &Cluster) -> Result<()> {
    apply(
        cluster,
        "deny-admin",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-admin\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        ports: [\"8080\"]\n        paths: [\"/admin\"]\n",
    )
}
