//! The access log's gRPC providers: Envoy's access-log service
//! (`envoyHttpAls`, `envoyTcpAls`), at a real receiver.

use super::*;

/// `envoyHttpAls` and `envoyTcpAls` providers (`defaultProviders`):
/// each side's entries reach Envoy's gRPC access-log service as Envoy's
/// gRPC loggers send them: the request, its answer, the additional
/// headers, the downstream's TLS peer, the peers' metadata, a denial's
/// details, one identifier per stream naming the node and the log name;
/// TCP entries for a connection; nothing on stdout.
#[test]
fn grpc_providers_stream_entries_to_the_access_log_service() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let (_api, web, vip) = shop_api_and_front_web(cluster)?;
        let (_db, db) = shop_db(cluster)?;
        // The test's receiver also serves Envoy's access-log service.
        let receiver = otlp::collector(cluster)?;
        apply(
            cluster,
            "mesh-config",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    defaultProviders:\n      accessLogging: [als, tcp-als]\n    extensionProviders:\n    - name: als\n      envoyHttpAls:\n        service: otel-collector.observability.svc.cluster.local\n        port: 4317\n        additionalRequestHeadersToLog: [X-Tenant]\n        additionalResponseHeadersToLog: [x-served-by]\n    - name: tcp-als\n      envoyTcpAls: {service: observability/otel-collector.observability.svc.cluster.local, port: 4317, logName: tcp-log}\n",
        )?;
        let base = format!("http://{vip}:8080");
        let http_of = |path: &str| -> Result<Vec<otlp::AlsEntry>> {
            Ok(otlp::als_entries(&receiver)?
                .into_iter()
                .filter(|e| e.als == "http" && e.path == path)
                .collect())
        };
        let mut n = 0;
        let started = std::time::SystemTime::now();
        converge("both sides' HTTP entries at the service", || {
            n += 1;
            let url = format!("{base}/als-{n}?q=1");
            let got = httpapp::get_one(&web, &url, &["--header", "x-tenant: acme"])?;
            ensure!(got.status == 200, "{got:?}");
            // The exporter sends a batch every second.
            std::thread::sleep(std::time::Duration::from_millis(1500));
            Ok(http_of(&format!("/als-{n}?q=1"))?.len() == 2)
        })?;
        let path = format!("/als-{n}?q=1");
        let mut entries = http_of(&path)?;
        // For the record (`--nocapture`): what the service got.
        println!("the entries of GET {path}:\n{entries:#?}");
        entries.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let since = started.duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
        for e in &entries {
            ensure!(
                e.method == "GET"
                    && e.protocol == "HTTP11"
                    && e.authority == format!("{vip}:8080")
                    && e.response_code == 200
                    && e.response_code_details == "via_upstream"
                    && e.response_flags.is_empty(),
                "the request and its answer: {e:?}"
            );
            ensure!(
                e.request_headers == [("x-tenant".to_string(), "acme".to_string())].into()
                    && e.response_headers.get("x-served-by").is_some_and(|s| !s.is_empty()),
                "the additional headers, by their lower-case names: {e:?}"
            );
            ensure!(e.start_unix_nano >= since, "the request's start: {e:?}");
            // The answer came from upstream before the last byte went
            // back, which is when the entry was made.
            ensure!(
                e.last_downstream_tx_nanos.is_some()
                    && e.last_downstream_tx_nanos == e.duration_nanos
                    && e.first_upstream_rx_nanos.is_some()
                    && e.first_upstream_rx_nanos <= e.last_downstream_tx_nanos,
                "the request's times: {e:?}"
            );
            ensure!(
                e.log_name == "http_envoy_accesslog" && e.identified == e.first,
                "istiod's default log name; the identifier on a stream's first message only: {e:?}"
            );
        }
        let [client, server] = &entries[..] else {
            unreachable!("two entries, checked above")
        };
        ensure!(
            client.node_id == "node-1"
                && client.upstream_cluster == "outbound|8080||api.shop.svc.cluster.local"
                && client.peer_san.is_empty()
                && client.local_san.is_empty(),
            "the client side, named by its node, the app's connection plaintext: {client:?}"
        );
        // Istio's peer metadata (istiod's default filterStateObjectsToLog):
        // each side's peer, the endpoint for the client, the client for
        // the server.
        let peer = |e: &otlp::AlsEntry, key: &str| -> Option<(String, String)> {
            let fields = e.filter_state.get(key)?;
            let namespace = fields.get("namespace")?;
            let sa = fields.get("workload")?;
            // A pod's workload type, and its SPIFFE identity.
            let identity = format!("spiffe://cluster.local/ns/{namespace}/sa/{sa}");
            if fields.get("type")? != "pod" || fields.get("identity")? != &identity {
                return None;
            }
            Some((sa.clone(), namespace.clone()))
        };
        ensure!(
            client.filter_state.len() == 1
                && peer(client, "upstream_peer") == Some(("api".into(), "shop".into())),
            "the client side's upstream peer: {client:?}"
        );
        ensure!(
            server.filter_state.len() == 1
                && peer(server, "downstream_peer") == Some(("web".into(), "front".into())),
            "the server side's downstream peer: {server:?}"
        );
        ensure!(
            server.node_id == "node-2"
                && server.upstream_cluster == "inbound|8080||"
                && server.peer_san == "spiffe://cluster.local/ns/front/sa/web"
                && server.local_san == "spiffe://cluster.local/ns/shop/sa/api",
            "the server side, with the HBONE connection's mutual TLS: {server:?}"
        );
        ensure!(
            client.request_id == server.request_id && !client.request_id.is_empty(),
            "one request id on both sides: {entries:#?}"
        );
        ensure!(
            lines(cluster, "node-1", &path)?.is_empty() && lines(cluster, "node-2", &path)?.is_empty(),
            "the providers replaced stdout"
        );
        // A denied request: the server's entry says why, as Envoy's RBAC
        // filter does (its details, naming the DENY policy's rule; no
        // response flag), and names no upstream.
        ensure!(get(&web, &base, "/forbidden-als")? == 403);
        converge("the denied request's entry", || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            Ok(http_of("/forbidden-als")?.iter().any(|e| {
                e.node_id == "node-2"
                    && e.response_code == 403
                    && e.response_code_details
                        == "rbac_access_denied_matched_policy[ns[shop]-policy[deny-forbidden]-rule[0]]"
                    && e.response_flags.is_empty()
                    && e.upstream_cluster.is_empty()
            }))
        })?;
        // A TCP connection: a TCP entry from each side, on the TCP
        // provider's streams, by their log name, with its peer.
        ensure!(get(&web, &format!("http://{db}:9090"), "/over-tcp")? == 200);
        let l4 = [
            ("node-1", "outbound|9090||db.shop.svc.cluster.local", "upstream_peer", "db"),
            ("node-2", "inbound|9090||", "downstream_peer", "web"),
        ];
        converge("both sides' TCP entries", || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let entries = otlp::als_entries(&receiver)?;
            Ok(l4.iter().all(|(node, cluster, key, workload)| {
                entries.iter().any(|e| {
                    e.als == "tcp"
                        && e.log_name == "tcp-log"
                        && e.node_id == *node
                        && e.upstream_cluster == *cluster
                        && e.received_bytes > 0
                        && e.sent_bytes > 0
                        && peer(e, key).is_some_and(|(w, _)| w == *workload)
                })
            }))
        })?;
        // Each agent counts what it exported.
        for node in ["node-1", "node-2"] {
            let exported = exported(cluster, node)?;
            ensure!(exported >= 2.0, "{node} counted {exported} exported entries");
        }
        Ok(())
    })
}
