//! The first telemetry test's checks of how L4 connections are counted
//! and to whom they are put: bytes while a connection is open, and
//! host-network pods, which share their node's address.

use anyhow::{Context as _, Result, ensure};
use weft_sim::{Cluster, ServicePort, httpapp};

use super::common::*;
use super::{scrape, total};

/// A long-lived connection's bytes show in `istio_tcp_received_bytes_total`
/// and `istio_tcp_sent_bytes_total` on both sides while it is open (they
/// are counted as they move, as ztunnel counts them), not only once it
/// closes; once closed, both sides agree.
pub(super) fn open_connections_show_their_bytes(
    cluster: &Cluster,
    web: &weft_sim::Pod,
    api: &weft_sim::Pod,
) -> Result<()> {
    let _echo = api.spawn_app(&["tcp-echo", "--port", "9191"])?;
    let target = api.addr(9191).to_string();
    converge("the echo server to answer through the mesh", || {
        let out = web.run_app(&["tcp-send", &target, "hello"], TIMEOUT)?;
        Ok(out.success() && out.stdout.contains("hello"))
    })?;
    // [opened, closed, received, sent] of web → api over mutual TLS.
    let counts = |node: &str, reporter: &str| -> Result<[f64; 4]> {
        let with = [
            ("reporter", reporter),
            ("source_workload", "web"),
            ("destination_workload", "api"),
            ("connection_security_policy", "mutual_tls"),
        ];
        let mut counts = [0.0; 4];
        for (i, metric) in [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
            "istio_tcp_received_bytes_total",
            "istio_tcp_sent_bytes_total",
        ]
        .into_iter()
        .enumerate()
        {
            counts[i] = total(&scrape(cluster, node, metric)?, &with);
        }
        Ok(counts)
    };
    let sides = [("node-1", "source"), ("node-2", "destination")];
    // The agents count a connection closed once its relay has ended, a
    // little after the app saw its end: every one so far first.
    converge("the connections so far counted closed", || {
        let mut settled = true;
        for (node, reporter) in sides {
            let [opened, closed, ..] = counts(node, reporter)?;
            settled &= opened == closed;
        }
        Ok(settled)
    })?;
    let before = [
        counts("node-1", "source")?,
        counts("node-2", "destination")?,
    ];
    let done = cluster.dir().join("telemetry-hold-done");
    let done = done.to_string_lossy();
    let mut held = web.spawn_app(&[
        "tcp-hold",
        &target,
        "--connections",
        "1",
        "--interval-ms",
        "50",
        "--until-file",
        &done,
    ])?;
    converge("an open connection's bytes on both sides", || {
        ensure!(held.is_running(), "tcp-hold exited:\n{}", held.log());
        let mut shown = true;
        for ((node, reporter), before) in sides.iter().zip(&before) {
            let [opened, closed, received, sent] = counts(node, reporter)?;
            ensure!(
                closed == before[1],
                "{reporter}: the held connection counted closed while open"
            );
            shown &= opened == before[0] + 1.0 && received > before[2] && sent > before[3];
        }
        Ok(shown)
    })?;
    std::fs::write(&*done, "")?;
    let status = held.wait_exit(TIMEOUT)?;
    ensure!(status.success(), "tcp-hold: {status}\n{}", held.log());
    converge("both sides to count the same bytes once closed", || {
        let source = counts("node-1", "source")?;
        let destination = counts("node-2", "destination")?;
        Ok(source[1] == before[0][1] + 1.0
            && destination[1] == before[1][1] + 1.0
            && source[2] - before[0][2] == destination[2] - before[1][2]
            && source[3] - before[0][3] == destination[3] - before[1][3])
    })
}

/// Host-network pods share their node's IP: a request from node-1's
/// address is from no workload (`unknown`), however many host-network
/// pods node-1 runs, not from whichever of them the agent heard of last
/// (as ztunnel, which leaves them out of its by-address index); a
/// request through a Service that selects one of them names it, as the
/// client's agent chose that endpoint.
pub(super) fn host_network_pods_are_named_by_service_not_by_address(
    cluster: &Cluster,
    web: &weft_sim::Pod,
    api: &weft_sim::Pod,
) -> Result<()> {
    use std::io::{Read, Write};
    let node1 = cluster.node("node-1")?;
    for name in ["node-exporter", "kube-proxy"] {
        cluster.write_config_file(
            &format!("host-network-{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: legacy\n  \
                 uid: host-network-{name}\n  labels: {{app: {name}}}\nspec:\n  nodeName: node-1\n  \
                 hostNetwork: true\n  containers: [{{name: main, image: {name}}}]\nstatus:\n  \
                 phase: Running\n  hostIP: {ip}\n  podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n",
                ip = node1.ip(),
            ),
        )?;
    }
    let node2 = cluster.node("node-2")?;
    converge("node-2's agent has both host-network pods", || {
        let dump = node2.admin_json("/config_dump")?;
        let known = dump["workloadState"]["workloads"]
            .as_array()
            .context("no workloads in /config_dump")?
            .iter()
            .filter(|w| w["host_network"] == true && w["namespace"] == "legacy")
            .count();
        Ok(known == 2)
    })?;
    let before = scrape(cluster, "node-2", "istio_requests_total")?;
    let from_node = [
        ("reporter", "destination"),
        ("source_workload", "unknown"),
        ("source_principal", "unknown"),
        ("destination_workload", "api"),
        ("connection_security_policy", "none"),
        ("response_code", "200"),
    ];
    let counted_before = total(&before, &from_node);
    let target = api.addr(8080);
    let reply = node1.in_netns(|| -> Result<String> {
        let mut stream = std::net::TcpStream::connect(target)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        write!(
            stream,
            "GET /from-the-node HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })??;
    ensure!(
        reply.starts_with("HTTP/1.1 200"),
        "from node-1's address: {reply}"
    );
    std::thread::sleep(LOG_SETTLE);
    let after = scrape(cluster, "node-2", "istio_requests_total")?;
    ensure!(
        total(&after, &from_node) == counted_before + 1.0,
        "a request from node-1's address, counted as `unknown`: {after:#?}"
    );
    for name in ["node-exporter", "kube-proxy"] {
        ensure!(
            total(&after, &[("source_workload", name)]) == 0.0,
            "a request from node-1's address put on host-network pod {name}: {after:#?}"
        );
    }

    // node-exporter serves HTTP on node-1's address, behind a Service.
    let _exporter = node1.spawn(api.http(&["serve", "--port", "9300"])?)?;
    let vip = cluster.add_service(
        "legacy",
        "node-exporter",
        &[("app", "node-exporter")],
        &[ServicePort::http("http-metrics", 9300, 9300)],
    )?;
    let url = format!("http://{vip}:9300/metrics");
    converge("node-exporter answers through its Service", || {
        Ok(httpapp::get_one(web, &url, &[]).is_ok_and(|r| r.status == 200))
    })?;
    let to_exporter = [
        ("reporter", "source"),
        ("source_workload", "web"),
        ("destination_workload", "node-exporter"),
        ("destination_service_name", "node-exporter"),
        ("response_code", "200"),
    ];
    // Counted when the response has gone back to web.
    converge("requests to node-exporter's Service name it", || {
        let at_web = scrape(cluster, "node-1", "istio_requests_total")?;
        Ok(total(&at_web, &to_exporter) >= 1.0)
    })
}
