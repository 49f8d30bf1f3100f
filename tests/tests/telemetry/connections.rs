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

/// Connections that were never relayed are counted as ztunnel counts
/// them: opened under `response_flags="-"`, then closed and failed under
/// their flag. The destination's side says `DENY` for a connection its
/// policy refused (over HBONE, and plaintext from outside the mesh) and
/// `CONNECT` for one whose app was not listening; the client's side says
/// `CONNECT` for both, as HBONE's answer (401 or 503) tells it.
pub(super) fn failed_connections_close_under_ztunnels_flags(
    cluster: &Cluster,
    web: &weft_sim::Pod,
    outsider: &weft_sim::Pod,
    api: &weft_sim::Pod,
) -> Result<()> {
    let _echo = api.spawn_app(&["tcp-echo", "--port", "9292"])?;
    apply(
        cluster,
        "deny-9292",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-9292\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [frontend]\n    to:\n    - operation:\n        ports: [\"9292\"]\n  - from:\n    - source:\n        ipBlocks: [\"{}/32\"]\n    to:\n    - operation:\n        ports: [\"9292\"]\n",
            outsider.ip()
        ),
    )?;
    let denied = api.addr(9292).to_string();
    // Nothing listens there.
    let closed_port = api.addr(9393).to_string();
    let send = |from: &weft_sim::Pod, target: &str| -> Result<()> {
        let out = from.run_app(&["tcp-send", target, "hello"], TIMEOUT)?;
        ensure!(
            !out.stdout.contains("hello"),
            "{target} answered through the mesh: {out:?}"
        );
        Ok(())
    };
    // (node, labels) → [opened "-", closed under the flag, failed under it].
    let counts = |node: &str, with: &[(&str, &str)], flag: &str| -> Result<[f64; 3]> {
        let unflagged = [with, &[("response_flags", "-")]].concat();
        let flagged = [with, &[("response_flags", flag)]].concat();
        Ok([
            total(
                &scrape(cluster, node, "istio_tcp_connections_opened_total")?,
                &unflagged,
            ),
            total(
                &scrape(cluster, node, "istio_tcp_connections_closed_total")?,
                &flagged,
            ),
            total(
                &scrape(cluster, node, "istio_tcp_connections_failed_total")?,
                &flagged,
            ),
        ])
    };
    let web_to_api = |reporter| {
        [
            ("reporter", reporter),
            ("source_workload", "web"),
            ("destination_workload", "api"),
            ("request_protocol", "tcp"),
            ("connection_security_policy", "mutual_tls"),
        ]
    };
    let (web_source, web_destination) = (web_to_api("source"), web_to_api("destination"));
    let outsider_to_api = [
        ("reporter", "destination"),
        ("source_principal", "unknown"),
        ("destination_workload", "api"),
        ("connection_security_policy", "none"),
    ];
    converge("the policy refuses web's connections at node-2", || {
        send(web, &denied)?;
        Ok(counts("node-2", &web_destination, "DENY")?[2] > 0.0)
    })?;
    converge("the policy refuses the outsider's connections", || {
        send(outsider, &denied)?;
        Ok(counts("node-2", &outsider_to_api, "DENY")?[2] > 0.0)
    })?;
    // Each case sends three more and waits for exactly three on each
    // reporting side: (node, labels, flag). The closed port's case is
    // `CONNECT` at the client only if the app's reset came back at once:
    // a delivery left waiting makes the client's tunnel time out first
    // (`NETWORK_POLICY`), as it did before the pods reflected marks.
    type Side<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [(&str, &weft_sim::Pod, &str, Vec<Side>); 3] = [
        (
            "refused over HBONE",
            web,
            &denied,
            vec![
                ("node-1", &web_source, "CONNECT"),
                ("node-2", &web_destination, "DENY"),
            ],
        ),
        (
            "refused in plaintext",
            outsider,
            &denied,
            vec![("node-2", &outsider_to_api, "DENY")],
        ),
        (
            "no app listening",
            web,
            &closed_port,
            vec![
                ("node-1", &web_source, "CONNECT"),
                ("node-2", &web_destination, "CONNECT"),
            ],
        ),
    ];
    for (case, from, target, sides) in cases {
        let before = sides
            .iter()
            .map(|(node, with, flag)| counts(node, with, flag))
            .collect::<Result<Vec<_>>>()?;
        for _ in 0..3 {
            send(from, target)?;
        }
        converge(
            &format!("{case}: three failed connections on each side"),
            || {
                let mut all = true;
                for ((node, with, flag), before) in sides.iter().zip(&before) {
                    let now = counts(node, with, flag)?;
                    let delta = [now[0] - before[0], now[1] - before[1], now[2] - before[2]];
                    ensure!(
                        delta.iter().all(|d| *d <= 3.0),
                        "{case} at {node}: more than three counted: {delta:?}"
                    );
                    all &= delta == [3.0, 3.0, 3.0];
                }
                Ok(all)
            },
        )?;
    }
    // Closed under a flag, never also under `-`: every web → api
    // connection opened at node-2 is closed once, under one flag or none
    // (the last relays may still be ending: waited for, never more).
    converge("every connection at node-2 closed once", || {
        let opened = total(
            &scrape(cluster, "node-2", "istio_tcp_connections_opened_total")?,
            &web_destination,
        );
        let closed = total(
            &scrape(cluster, "node-2", "istio_tcp_connections_closed_total")?,
            &web_destination,
        );
        ensure!(
            closed <= opened,
            "opened {opened}, closed {closed} at node-2"
        );
        Ok(opened == closed)
    })
}
