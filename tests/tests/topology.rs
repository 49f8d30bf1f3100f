//! The simulated cluster's network without the mesh: pods on different
//! nodes reach each other by pod IP, peers see each other's real IPs, and
//! processes land in their pod's namespace and cgroup. Needs root.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use weft_sim::{Cluster, Pod, PodSpec, wait_for};

const TIMEOUT: Duration = Duration::from_secs(20);

fn two_node_cluster() -> Result<Cluster> {
    Cluster::builder().nodes(2).mesh(false).build()
}

/// Runs `http-get` from `client` until the server answers (it may still be
/// binding its port), returning the output.
fn http_get_until_served(client: &Pod, url: &str, extra: &[&str]) -> Result<String> {
    wait_for(
        &format!("{url} to answer from pod {}", client.name()),
        TIMEOUT,
        || {
            let mut args = vec!["http-get", url, "--timeout", "2"];
            args.extend_from_slice(extra);
            let out = client.run_app(&args, TIMEOUT)?.check("http-get")?;
            Ok(Some(out.stdout))
        },
    )
}

#[test]
fn pod_reaches_pod_on_another_node_and_server_sees_its_ip() -> Result<()> {
    let cluster = two_node_cluster()?;
    let server = cluster.add_pod(PodSpec::new("node-2", "demo", "server").port("http", 8080))?;
    let client = cluster.add_pod(PodSpec::new("node-1", "demo", "client"))?;
    assert_ne!(server.node(), client.node());
    let _server_app = server.spawn_app(&["http-server", "--port", "8080"])?;

    let url = format!("http://{}/hi", server.addr(8080));
    let out = http_get_until_served(&client, &url, &["--count", "3"])?;
    let expected = format!("hello from server to {}:", client.ip());
    ensure!(
        out.matches("HTTP/1.1 200 OK").count() == 3,
        "3 responses expected:\n{out}"
    );
    ensure!(
        out.contains(&expected),
        "server did not see the client's pod IP ({expected}):\n{out}"
    );
    ensure!(out.contains("path=/hi"), "{out}");
    Ok(())
}

#[test]
fn tcp_echo_across_nodes() -> Result<()> {
    let cluster = two_node_cluster()?;
    let server = cluster.add_pod(PodSpec::new("node-1", "demo", "echo"))?;
    let client = cluster.add_pod(PodSpec::new("node-2", "demo", "sender"))?;
    let _echo = server.spawn_app(&["tcp-echo", "--port", "9000"])?;
    let addr = server.addr(9000).to_string();
    let reply = wait_for("tcp-echo to answer", TIMEOUT, || {
        let out = client
            .run_app(&["tcp-send", &addr, "ping-42"], TIMEOUT)?
            .check("tcp-send")?;
        Ok(Some(out.stdout))
    })?;
    assert_eq!(reply.trim(), "ping-42");
    Ok(())
}

#[test]
fn in_process_socket_inside_a_pod_sees_the_client_pod_ip() -> Result<()> {
    let cluster = two_node_cluster()?;
    let server = cluster.add_pod(PodSpec::new("node-1", "demo", "inproc"))?;
    let client = cluster.add_pod(PodSpec::new("node-2", "demo", "client"))?;
    let listener = server.tcp_listener(7000)?;
    let addr = server.addr(7000).to_string();
    let sender = std::thread::spawn({
        let client = client.clone();
        move || client.run_app(&["tcp-send", &addr, "from-app"], TIMEOUT)
    });
    let (mut conn, peer) = listener.accept()?;
    let mut got = Vec::new();
    conn.read_to_end(&mut got)?;
    conn.write_all(b"ack")?;
    drop(conn);
    let out = sender.join().expect("sender thread")?.check("tcp-send")?;
    assert_eq!(
        peer.ip(),
        client.ip(),
        "the listener saw the client's pod IP"
    );
    assert_eq!(got, b"from-app");
    assert_eq!(out.stdout.trim(), "ack");

    // And the other way: a socket of the test process connects out of a pod.
    let _echo = client.spawn_app(&["tcp-echo", "--port", "9001"])?;
    let mut stream = wait_for("tcp-echo in the client pod", TIMEOUT, || {
        Ok(Some(
            server.tcp_connect(client.addr(9001), Duration::from_secs(2))?,
        ))
    })?;
    stream.write_all(b"round trip")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut echoed = String::new();
    stream.read_to_string(&mut echoed)?;
    assert_eq!(echoed, "round trip");
    Ok(())
}

#[test]
fn pod_processes_run_in_the_pod_netns_and_cgroup() -> Result<()> {
    let cluster = two_node_cluster()?;
    let pod = cluster.add_pod(PodSpec::new("node-1", "demo", "placed").label("app", "placed"))?;
    let proc = pod.spawn(sleep(600))?;
    let pid = proc.pid();

    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let unified = cgroup
        .lines()
        .find(|l| l.starts_with("0::"))
        .context("no cgroup v2 line")?;
    let expected = pod.cgroup_dir().strip_prefix(cluster.cgroup2_root())?;
    assert_eq!(unified, format!("0::/{}", expected.display()));
    assert!(
        pod.cgroup_dir()
            .starts_with(cluster.node("node-1")?.cgroup_dir())
    );

    let proc_ns = std::fs::metadata(format!("/proc/{pid}/ns/net"))?.ino();
    let pod_ns = std::fs::metadata(pod.netns().path())?.ino();
    assert_eq!(proc_ns, pod_ns, "process is in the pod's network namespace");

    // Exactly the routes a primary CNI gives a pod, nothing more.
    let routes = pod.netns().ip(&["-4", "route", "show", "table", "all"])?;
    let main: Vec<&str> = routes
        .lines()
        .filter(|l| !l.contains("table local"))
        .map(str::trim)
        .collect();
    assert_eq!(
        main,
        [
            "default via 169.254.1.1 dev eth0",
            "169.254.1.1 dev eth0 scope link"
        ]
    );
    let addrs = pod
        .netns()
        .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    assert!(addrs.contains(&format!("inet {}/32", pod.ip())), "{addrs}");
    let rules = pod.netns().ip(&["rule", "show"])?;
    assert_eq!(
        rules.lines().count(),
        3,
        "only the default ip rules:\n{rules}"
    );

    // Pod YAML is in the config dir with the IP and node.
    let yaml = std::fs::read_to_string(cluster.config_dir().join(pod.config_file()))?;
    assert!(yaml.contains(&format!("podIP: {}", pod.ip())), "{yaml}");
    assert!(yaml.contains("nodeName: node-1"), "{yaml}");

    // Deleting the pod kills its processes and removes its netns and cgroup.
    cluster.delete_pod(&pod)?;
    let mut proc = proc;
    proc.wait_exit(TIMEOUT)?;
    assert!(!pod.netns().path().exists());
    assert!(!pod.cgroup_dir().exists());
    assert!(!cluster.config_dir().join(pod.config_file()).exists());
    assert!(cluster.pod("demo", "placed").is_none());
    Ok(())
}

#[test]
fn capture_between_nodes_sees_plaintext_without_the_mesh() -> Result<()> {
    let cluster = two_node_cluster()?;
    let server = cluster.add_pod(PodSpec::new("node-2", "demo", "server"))?;
    let client = cluster.add_pod(PodSpec::new("node-1", "demo", "client"))?;
    let _app = server.spawn_app(&["http-server", "--port", "8080"])?;
    let url = format!("http://{}/", server.addr(8080));
    http_get_until_served(&client, &url, &[])?;

    let capture = cluster.capture_between_nodes()?;
    let marker = "PLAINTEXT-MARKER-7f3a";
    let out = client
        .run_app(&["http-get", &url, "--body-marker", marker], TIMEOUT)?
        .check("http-get with marker")?;
    assert!(out.stdout.contains("200 OK"), "{}", out.stdout);
    let pcap = capture.pcap_path().to_path_buf();
    let packets = capture.stop()?;

    let to_server: Vec<_> = packets.to_port(8080).collect();
    assert!(
        to_server
            .iter()
            .any(|p| p.src.ip() == client.ip() && p.dst.ip() == server.ip()),
        "no client->server segment captured:\n{}",
        packets.summary(40)
    );
    assert!(
        packets.contains(marker.as_bytes()),
        "the marker crossed in plaintext:\n{}",
        packets.summary(40)
    );
    assert_eq!(packets.tls_records_to(8080).count(), 0);
    // Each segment is seen once (the bridge passes forwarded frames up once).
    let syns = packets
        .tcp
        .iter()
        .filter(|p| p.flags & 0x12 == 0x02)
        .count();
    assert_eq!(syns, 1, "{}", packets.summary(40));

    // The pcap file holds the same segments.
    let reread = weft_sim::Packets::read_pcap(&pcap)?;
    assert_eq!(reread.tcp, packets.tcp);
    Ok(())
}

fn sleep(secs: u32) -> std::process::Command {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg(secs.to_string());
    cmd
}
