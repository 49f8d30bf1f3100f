//! The spine, end to end on a 2-node simulated cluster running weft's real
//! binaries: requests cross the mesh in HBONE (TLS to 15008, no plaintext on
//! the wire), the server sees the client pod's IP, unlabelled namespaces are
//! untouched, enrolment follows pods and labels as they come, and agent
//! restarts neither leak plaintext nor lose pods. Needs root and the
//! binaries (`cargo xtask test` builds them).

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::{access_log_entries, is_client, is_tcp, json_access_log};
use weft_sim::{Cluster, Packets, Pod, PodSpec, ServicePort, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);
const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

/// A server on node 2 (with a Service) and a client on node 1, in `ns`.
struct Pair {
    server: Pod,
    client: Pod,
    _app: weft_sim::Process,
}

fn pair(cluster: &Cluster, ns: &str) -> Result<Pair> {
    let server = cluster.add_pod(
        PodSpec::new("node-2", ns, "server")
            .label("app", "server")
            .service_account("server")
            .port("http", 8080),
    )?;
    let client = cluster.add_pod(PodSpec::new("node-1", ns, "client").service_account("client"))?;
    let app = server.spawn_app(&["http-server", "--port", "8080"])?;
    Ok(Pair {
        server,
        client,
        _app: app,
    })
}

/// Whether an access-log entry's downstream (the connection's source)
/// is at `addr_prefix` (`"<ip>:"`).
fn from(entry: &serde_json::Value, addr_prefix: &str) -> bool {
    entry["downstream_remote_address"]
        .as_str()
        .is_some_and(|a| a.starts_with(addr_prefix))
}

/// `http-get` from `client`, retried until it succeeds.
fn get_eventually(client: &Pod, url: &str) -> Result<String> {
    wait_for(
        &format!("GET {url} from {}", client.name()),
        TIMEOUT,
        || {
            let out = client.run_app(&["http-get", url, "--timeout", "3"], TIMEOUT)?;
            Ok(out.success().then_some(out.stdout))
        },
    )
}

/// `http-get` carrying `marker` in a header and the body, once.
fn get_with_marker(client: &Pod, url: &str, marker: &str) -> Result<String> {
    let out = client
        .run_app(
            &["http-get", url, "--body-marker", marker, "--timeout", "5"],
            TIMEOUT,
        )?
        .check(&format!("GET {url}"))?;
    Ok(out.stdout)
}

/// The capture shows HBONE (TLS application data to 15008), no plaintext
/// to the app's ports and never the marker. (The TLS handshake may have
/// happened before the capture: HBONE connections are pooled.)
fn assert_encrypted(packets: &Packets, app_ports: &[u16], marker: &str) -> Result<()> {
    ensure!(
        packets
            .tls_records_to(15008)
            .any(|p| p.tls_record() == Some((0x17, 0x0303))),
        "no TLS application data to 15008 on the wire:\n{}",
        packets.summary(60)
    );
    for port in app_ports {
        ensure!(
            packets.to_port(*port).next().is_none(),
            "plaintext to port {port} crossed the wire:\n{}",
            packets.summary(60)
        );
    }
    ensure!(
        !packets.contains(marker.as_bytes()),
        "the request's plaintext ({marker}) crossed the wire"
    );
    Ok(())
}

/// TLS ClientHellos to 15008: handshake records whose first message is a
/// ClientHello.
fn client_hellos(packets: &Packets) -> usize {
    packets
        .to_port(15008)
        .filter(|p| p.payload.len() > 5 && p.payload[0] == 0x16 && p.payload[5] == 0x01)
        .count()
}

fn assert_saw_client(out: &str, client: &Pod) -> Result<()> {
    let expected = format!("hello from server to {}:", client.ip());
    ensure!(
        out.contains(&expected),
        "the server did not see the client pod's IP {} (expected `{expected}`):\n{out}",
        client.ip()
    );
    Ok(())
}

#[test]
fn cross_node_requests_through_vip_and_pod_ip_are_encrypted_and_keep_the_client_ip() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("demo", &[AMBIENT])?;
        let pods = pair(cluster, "demo")?;
        let vip = cluster.add_service(
            "demo",
            "server",
            &[("app", "server")],
            &[ServicePort::tcp("http", 80, 8080)],
        )?;
        let by_ip = format!("http://{}/", pods.server.addr(8080));
        let by_vip = format!("http://{vip}:80/");
        get_eventually(&pods.client, &by_ip)?;
        get_eventually(&pods.client, &by_vip)?;

        let capture = cluster.capture_between_nodes()?;
        let marker = "SECRET-MARKER-vip-7f3a";
        let via_vip = get_with_marker(&pods.client, &by_vip, marker)?;
        let via_ip = get_with_marker(&pods.client, &by_ip, marker)?;
        let packets = capture.stop()?;

        assert_saw_client(&via_vip, &pods.client).context("through the Service VIP")?;
        assert_saw_client(&via_ip, &pods.client).context("through the pod IP")?;
        assert_encrypted(&packets, &[80, 8080], marker)?;
        // The tunnel runs between the two pods' own addresses.
        ensure!(
            packets
                .tls_records_to(15008)
                .all(|p| p.src.ip() == pods.client.ip() && p.dst.ip() == pods.server.ip()),
            "HBONE should run from the client pod's IP to the server pod's IP:\n{}",
            packets.summary(40)
        );
        Ok(())
    })
}

/// Kubernetes' order of events: a pod's IP reaches the API server only
/// after its CNI ADD has returned, and that ADD waits for the agent. The
/// agent enrols the pod from the control plane's address-less workload
/// and the IP in the CNI result; the address is published afterwards.
#[test]
fn pods_whose_ip_reaches_the_api_after_their_cni_add_are_enrolled() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("kubelet-order", &[AMBIENT])?;
        let server = cluster.add_pod(
            PodSpec::new("node-2", "kubelet-order", "server")
                .service_account("server")
                .port("http", 8080)
                .ip_after_cni(),
        )?;
        let client = cluster.add_pod(
            PodSpec::new("node-1", "kubelet-order", "client")
                .service_account("client")
                .ip_after_cni(),
        )?;
        let _app = server.spawn_app(&["http-server", "--port", "8080"])?;
        let url = format!("http://{}/", server.addr(8080));
        get_eventually(&client, &url)?;

        let capture = cluster.capture_between_nodes()?;
        let marker = "SECRET-MARKER-kubelet-order-2c9d";
        let out = get_with_marker(&client, &url, marker)?;
        let packets = capture.stop()?;
        assert_saw_client(&out, &client)?;
        assert_encrypted(&packets, &[8080], marker)
    })
}

#[test]
fn pods_in_an_unlabelled_namespace_talk_plaintext_directly() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("plain", &[])?;
        let pods = pair(cluster, "plain")?;
        let url = format!("http://{}/", pods.server.addr(8080));
        get_eventually(&pods.client, &url)?;

        let capture = cluster.capture_between_nodes()?;
        let marker = "PLAIN-MARKER-21c9";
        let out = get_with_marker(&pods.client, &url, marker)?;
        let packets = capture.stop()?;

        assert_saw_client(&out, &pods.client)?;
        ensure!(
            packets.contains(marker.as_bytes()),
            "an unenrolled pod's request should cross in plaintext:\n{}",
            packets.summary(40)
        );
        ensure!(
            packets.to_port(15008).next().is_none(),
            "an unenrolled pod must not use HBONE:\n{}",
            packets.summary(40)
        );
        Ok(())
    })
}

#[test]
fn labelling_a_namespace_enrols_its_running_pods() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("late", &[])?;
        let pods = pair(cluster, "late")?;
        let url = format!("http://{}/", pods.server.addr(8080));
        get_eventually(&pods.client, &url)?;

        cluster.add_namespace("late", &[AMBIENT])?;
        let marker = "LATE-MARKER-90be";
        wait_for_hbone(cluster, &pods.client, &url, marker, true)?;
        let out = get_with_marker(&pods.client, &url, marker)?;
        assert_saw_client(&out, &pods.client)
    })
}

/// Waits until `client`'s requests to `url` cross between the nodes in
/// HBONE (`hbone`), or in plaintext directly (`!hbone`).
fn wait_for_hbone(
    cluster: &Cluster,
    client: &Pod,
    url: &str,
    marker: &str,
    hbone: bool,
) -> Result<()> {
    let what = if hbone {
        "traffic to move into HBONE"
    } else {
        "traffic to leave HBONE for plaintext"
    };
    wait_for(what, TIMEOUT, || {
        let capture = cluster.capture_between_nodes()?;
        let out = client.run_app(
            &["http-get", url, "--body-marker", marker, "--timeout", "3"],
            TIMEOUT,
        )?;
        let packets = capture.stop()?;
        let arrived = if hbone {
            assert_encrypted(&packets, &[8080], marker).is_ok()
        } else {
            packets.contains(marker.as_bytes()) && packets.to_port(15008).next().is_none()
        };
        Ok((out.success() && arrived).then_some(()))
    })
}

/// Pods that ran before weft was installed never had a CNI ADD: when
/// their namespace is labelled, the agents find them on the node (through
/// their processes' network namespaces, as Istio's CNI node agent does)
/// and enrol them without a restart; an agent restart keeps them; removing
/// the label releases them.
#[test]
fn pods_running_before_weft_join_with_their_namespace_label_and_leave_without_it() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("early", &[])?;
        let server = cluster.add_pod(
            PodSpec::new("node-2", "early", "server")
                .service_account("server")
                .port("http", 8080)
                .before_weft(),
        )?;
        let client = cluster.add_pod(
            PodSpec::new("node-1", "early", "client")
                .service_account("client")
                .before_weft(),
        )?;
        let _app = server.spawn_app(&["http-server", "--port", "8080"])?;
        // The client's pause container: every real pod has one.
        let mut pause = std::process::Command::new("sleep");
        pause.arg("infinity");
        let _pause = client.spawn(pause)?;
        let url = format!("http://{}/", server.addr(8080));
        get_eventually(&client, &url)?;

        cluster.add_namespace("early", &[AMBIENT])?;
        let marker = "EARLY-MARKER-5e1a";
        wait_for_hbone(cluster, &client, &url, marker, true)?;
        assert_saw_client(&get_with_marker(&client, &url, marker)?, &client)?;

        cluster.node("node-1")?.restart_agent()?;
        get_eventually(&client, &url)?;
        let capture = cluster.capture_between_nodes()?;
        let out = get_with_marker(&client, &url, marker)?;
        let packets = capture.stop()?;
        assert_saw_client(&out, &client)?;
        assert_encrypted(&packets, &[8080], marker).context("after the agent restarted")?;

        cluster.add_namespace("early", &[])?;
        wait_for_hbone(cluster, &client, &url, marker, false)?;
        assert_saw_client(&get_with_marker(&client, &url, marker)?, &client)
    })
}

#[test]
fn restarted_agents_reenrol_running_pods_and_new_pods_join() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("demo", &[AMBIENT])?;
        let pods = pair(cluster, "demo")?;
        let url = format!("http://{}/", pods.server.addr(8080));
        get_eventually(&pods.client, &url)?;

        // One agent killed outright, the other stopped gracefully.
        cluster.node("node-1")?.restart_agent()?;
        cluster
            .node("node-2")?
            .restart_agent_graceful(Duration::from_secs(5))?;

        let marker = "RESTART-MARKER-44d0";
        get_eventually(&pods.client, &url)?;
        let capture = cluster.capture_between_nodes()?;
        let out = get_with_marker(&pods.client, &url, marker)?;
        let packets = capture.stop()?;
        assert_saw_client(&out, &pods.client)?;
        assert_encrypted(&packets, &[8080], marker).context("after the agents restarted")?;

        // A pod that arrives after the restart is enrolled too.
        let newcomer = cluster
            .add_pod(PodSpec::new("node-1", "demo", "newcomer").service_account("newcomer"))?;
        get_eventually(&newcomer, &url)?;
        let capture = cluster.capture_between_nodes()?;
        let out = get_with_marker(&newcomer, &url, marker)?;
        let packets = capture.stop()?;
        ensure!(out.contains(&format!("to {}:", newcomer.ip())), "{out}");
        assert_encrypted(&packets, &[8080], marker).context("from the newcomer")
    })
}

#[test]
fn with_the_agent_down_enrolled_pods_fail_closed_and_new_pods_do_not_start() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("demo", &[AMBIENT])?;
        let pods = pair(cluster, "demo")?;
        let url = format!("http://{}/", pods.server.addr(8080));
        get_eventually(&pods.client, &url)?;

        let node = cluster.node("node-1")?;
        ensure!(
            node.agent_pid().is_some(),
            "the agent on node-1 was not running"
        );
        node.stop_agent(None);

        // Redirection stays pinned: the client's connection goes to a proxy
        // that isn't there, and nothing leaves in plaintext.
        let capture = cluster.capture_between_nodes()?;
        let marker = "DOWN-MARKER-c13e";
        let out = pods.client.run_app(
            &["http-get", &url, "--body-marker", marker, "--timeout", "3"],
            TIMEOUT,
        )?;
        let packets = capture.stop()?;
        ensure!(
            !out.success(),
            "a request succeeded with the agent down:\n{}",
            out.stdout
        );
        ensure!(
            !packets.contains(marker.as_bytes()) && packets.to_port(8080).next().is_none(),
            "plaintext left the pod while its agent was down:\n{}",
            packets.summary(40)
        );

        // A new pod on that node cannot start: the CNI plugin fails.
        let err = cluster
            .add_pod(PodSpec::new("node-1", "demo", "blocked"))
            .expect_err("a pod started on a node whose agent is down");
        let text = format!("{err:#}");
        ensure!(
            text.contains("weft agent"),
            "the CNI error should name the agent: {text}"
        );

        node.start_agent()?;
        get_eventually(&pods.client, &url)?;
        Ok(())
    })
}

#[test]
fn plaintext_to_an_enrolled_pod_is_steered_through_its_proxy_but_node_probes_are_not() -> Result<()>
{
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("demo", &[AMBIENT])?;
        cluster.add_namespace("legacy", &[])?;
        let server = cluster.add_pod(
            PodSpec::new("node-2", "demo", "server")
                .label("app", "server")
                .service_account("server")
                .port("http", 8080),
        )?;
        let outsider = cluster.add_pod(PodSpec::new("node-1", "legacy", "outsider"))?;
        let _app = server.spawn_app(&["http-server", "--port", "8080"])?;
        let url = format!("http://{}/", server.addr(8080));

        let out = get_eventually(&outsider, &url)?;
        ensure!(
            out.contains(&format!("to {}:", outsider.ip())),
            "the app should see the outsider's own IP:\n{out}"
        );
        let node = cluster.node("node-2")?;
        // The server side's line of a TCP connection that completed
        // (no flag), from the outsider's address.
        let steered = format!("{}:", outsider.ip());
        wait_for(
            "the server's agent to log the steered connection",
            TIMEOUT,
            || {
                Ok(access_log_entries(cluster, "node-2")?
                    .iter()
                    .any(|e| {
                        is_tcp(e)
                            && !is_client(e)
                            && e["response_flags"] == "-"
                            && from(e, &steered)
                    })
                    .then_some(()))
            },
        )?;

        // A probe from the node itself (kubelet) reaches the app directly.
        let mut probe = std::process::Command::new(cluster.bin_dir().join("weft-sim-app"));
        probe.args(["http-get", &url, "--timeout", "3"]);
        let out = node.run(probe, TIMEOUT)?.check("probe from the node")?;
        ensure!(
            out.stdout.contains(&format!("to {}:", node.ip())),
            "the probe should arrive from the node's IP:\n{}",
            out.stdout
        );
        let from_node = format!("{}:", node.ip());
        let proxied: Vec<_> = access_log_entries(cluster, "node-2")?
            .into_iter()
            .filter(|e| from(e, &from_node))
            .collect();
        ensure!(
            proxied.is_empty(),
            "a probe from the node went through the proxy: {proxied:?}"
        );
        Ok(())
    })
}

#[test]
fn connections_to_one_destination_share_one_pooled_hbone_connection() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("demo", &[AMBIENT])?;
        let pods = pair(cluster, "demo")?;
        let url = format!("http://{}/", pods.server.addr(8080));
        // Capture from before the first request on.
        let capture = cluster.capture_between_nodes()?;
        get_eventually(&pods.client, &url)?;
        for _ in 0..5 {
            let out = get_with_marker(&pods.client, &url, "POOL-MARKER-6b2a")?;
            assert_saw_client(&out, &pods.client)?;
        }
        let packets = capture.stop()?;
        assert_encrypted(&packets, &[8080], "POOL-MARKER-6b2a")?;
        ensure!(
            client_hellos(&packets) == 1,
            "6 app connections should share one HBONE connection, saw {} TLS handshakes:\n{}",
            client_hellos(&packets),
            packets.summary(60)
        );
        Ok(())
    })
}

#[test]
fn a_gracefully_stopped_agent_lets_connections_in_flight_finish() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("demo", &[AMBIENT])?;
        let pods = pair(cluster, "demo")?;
        let _echo = pods.server.spawn_app(&["tcp-echo", "--port", "7070"])?;
        get_eventually(&pods.client, &format!("http://{}/", pods.server.addr(8080)))?;
        // Three seconds of pings on one connection through both agents.
        let mut ping = pods.client.spawn_app(&[
            "tcp-ping",
            &pods.server.addr(7070).to_string(),
            "--count",
            "12",
            "--interval-ms",
            "250",
        ])?;
        wait_for("the first pings", TIMEOUT, || {
            Ok(ping.log().contains("ping 1 ok").then_some(()))
        })?;
        // SIGTERM: the agent stops accepting, drains, then exits.
        cluster
            .node("node-1")?
            .restart_agent_graceful(Duration::from_secs(10))?;
        let status = ping.wait_exit(TIMEOUT)?;
        ensure!(
            status.success() && ping.log().contains("all 12 pings echoed on one connection"),
            "the connection in flight was cut by the agent's shutdown:\n{}",
            ping.log()
        );
        // The stopped agent's own log (the restarted one writes a new file).
        let drained = std::fs::read_dir(cluster.log_dir())?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("node-1_weft-agent")
            })
            .any(|e| {
                std::fs::read_to_string(e.path())
                    .is_ok_and(|log| log.contains("draining connections"))
            });
        ensure!(drained, "the stopped agent did not log its drain");
        Ok(())
    })
}

#[test]
fn same_node_traffic_skips_the_tls_hop_but_keeps_identity_ip_and_policy() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("demo", &[AMBIENT])?;
        let server = cluster.add_pod(
            PodSpec::new("node-1", "demo", "neighbour")
                .label("app", "neighbour")
                .service_account("server")
                .port("http", 8080),
        )?;
        let client = cluster.add_pod(PodSpec::new("node-1", "demo", "client").service_account("client"))?;
        let _app = server.spawn_app(&["http-server", "--port", "8080"])?;
        let url = format!("http://{}/", server.addr(8080));
        let out = get_eventually(&client, &url)?;
        ensure!(
            out.contains(&format!("hello from neighbour to {}:", client.ip())),
            "the neighbour should see the client's IP:\n{out}"
        );
        // A same-node connection has no inbound proxy: the client's agent
        // writes both sides' lines, for the same app connection (the same
        // downstream address), the server's naming both identities.
        let (client_side, server_side) =
            wait_for("the same-node access log lines", TIMEOUT, || {
                let entries = access_log_entries(cluster, "node-1")?;
                let completed = |e: &&serde_json::Value| is_tcp(e) && e["response_flags"] == "-";
                Ok(entries
                    .iter()
                    .filter(completed)
                    .filter(|e| {
                        is_client(e)
                            && e["downstream_local_address"] == server.addr(8080).to_string()
                    })
                    .find_map(|c| {
                        entries
                            .iter()
                            .filter(completed)
                            .find(|s| {
                                s["upstream_cluster"] == "inbound|8080||"
                                    && s["downstream_remote_address"]
                                        == c["downstream_remote_address"]
                            })
                            .map(|s| (c.clone(), s.clone()))
                    }))
            })?;
        ensure!(
            client_side["downstream_local_uri_san"] == "spiffe://cluster.local/ns/demo/sa/client"
                && server_side["downstream_peer_uri_san"]
                    == "spiffe://cluster.local/ns/demo/sa/client"
                && server_side["downstream_local_uri_san"]
                    == "spiffe://cluster.local/ns/demo/sa/server",
            "{client_side}\n{server_side}"
        );
        // The destination's policy applies on this path too.
        cluster.write_config_file(
            "deny-client.yaml",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-client\n  namespace: demo\nspec:\n  selector:\n    matchLabels:\n      app: neighbour\n  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/demo/sa/client\"]\n",
        )?;
        wait_for("the same-node request to be denied", TIMEOUT, || {
            let out = client.run_app(&["http-get", &url, "--timeout", "3"], TIMEOUT)?;
            Ok((!out.success() && out.stderr.contains("reset")).then_some(()))
        })?;
        Ok(())
    })
}

/// The spine in Kubernetes mode: weft-control watches an API server,
/// pods are created through it and get their IP there only after their
/// CNI ADD (as kubelet writes it), agents authenticate with
/// service-account tokens checked by TokenReview. Cross-node HBONE with
/// the client's IP, an agent restart, unlabelling the namespace and
/// labelling it again with its pods running.
#[test]
fn in_kubernetes_mode_pods_cross_in_hbone_survive_restarts_and_follow_labels() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).kubernetes(true).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("kube", &[AMBIENT])?;
        let pods = pair(cluster, "kube")?;
        let url = format!("http://{}/", pods.server.addr(8080));
        get_eventually(&pods.client, &url)?;
        let api = cluster.kube_api().context("a Kubernetes-mode cluster")?;
        let object = api
            .get("v1", "Pod", Some("kube"), "client")
            .context("the client pod is in the API")?;
        ensure!(
            object["status"]["podIP"] == pods.client.ip().to_string(),
            "kubelet's write of the pod IP is missing: {object}"
        );

        let marker = "KUBE-MARKER-7f3c";
        let capture = cluster.capture_between_nodes()?;
        let out = get_with_marker(&pods.client, &url, marker)?;
        let packets = capture.stop()?;
        assert_saw_client(&out, &pods.client)?;
        assert_encrypted(&packets, &[8080], marker)?;

        cluster.node("node-1")?.restart_agent()?;
        get_eventually(&pods.client, &url)?;
        let capture = cluster.capture_between_nodes()?;
        let out = get_with_marker(&pods.client, &url, marker)?;
        let packets = capture.stop()?;
        assert_saw_client(&out, &pods.client)?;
        assert_encrypted(&packets, &[8080], marker).context("after the agent restarted")?;

        cluster.add_namespace("kube", &[])?;
        wait_for_hbone(cluster, &pods.client, &url, marker, false)?;
        cluster.add_namespace("kube", &[AMBIENT])?;
        wait_for_hbone(cluster, &pods.client, &url, marker, true)
    })
}
