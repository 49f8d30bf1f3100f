//! VirtualService `tcp` and `tls` routes end to end on a 2-node simulated
//! cluster with weft's real binaries: on a Service's opaque port the
//! client's node proxy steers each connection by its routes (port,
//! source labels, subnets, SNI, weighted destinations), as Istio's TCP
//! and TLS proxies would. Needs root and the binaries (`cargo xtask test`
//! builds them).

mod common;

use anyhow::{Result, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp};

#[test]
fn tcp_routes_steer_l4_connections_of_an_opaque_port() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("data", &[AMBIENT])?;
        let _v1 = backend(cluster, "node-2", "data", "store-v1", &[("app", "store"), ("version", "v1")], 7000, &[])?;
        let _v2 = backend(cluster, "node-2", "data", "store-v2", &[("app", "store"), ("version", "v2")], 7000, &[])?;
        let client = client(cluster, "node-1", "data", "reader")?;
        // Declared tcp: relayed as bytes, each connection routed once.
        let vip = cluster.add_service("data", "store", &[("app", "store")], &[ServicePort::tcp("tcp-store", 7000, 7000)])?;
        let url = format!("http://{vip}:7000/");
        apply(cluster, "store-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: store\n  namespace: data\nspec:\n  host: store\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n")?;
        apply(cluster, "store-vs", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: store\n  namespace: data\nspec:\n  hosts:\n  - store\n  tcp:\n  - match:\n    - port: 7000\n      sourceNamespace: data\n    route:\n    - destination:\n        host: store\n        subset: v2\n        port:\n          number: 7000\n")?;
        // Each `load` connection is one L4 connection: all of them to v2.
        converge("the tcp route to v2", || {
            let load = httpapp::load(&client, &url, &["--count", "20", "--concurrency", "4"])?;
            Ok(load.served_by("store-v2") == 20)
        })?;
        let many = httpapp::load(&client, &url, &["--count", "200", "--concurrency", "10"])?;
        ensure!(many.served_by("store-v2") == 200, "every connection routed to v2: {many:?}");
        // Bytes are relayed untouched: no proxy headers, no L7 log.
        let reply = httpapp::get_one(&client, &url, &[])?;
        ensure!(reply.seen()?["headers"].get("x-forwarded-proto").is_none(), "L4: request untouched: {reply:?}");
        Ok(())
    })
}

/// A TLS ClientHello naming `sni` (what the proxy peeks at; the echo
/// servers behind the route only send it back).
fn client_hello(sni: &str) -> Vec<u8> {
    fn u16be(n: usize) -> [u8; 2] {
        (n as u16).to_be_bytes()
    }
    let name = sni.as_bytes();
    let mut server_name = Vec::new();
    server_name.extend(u16be(name.len() + 3)); // the list
    server_name.push(0); // host_name
    server_name.extend(u16be(name.len()));
    server_name.extend(name);
    let mut extensions = vec![0, 0]; // server_name
    extensions.extend(u16be(server_name.len()));
    extensions.extend(server_name);
    let mut body = vec![3, 3]; // TLS 1.2 in the legacy version field
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    body.extend(u16be(2));
    body.extend([0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend([1, 0]); // null compression
    body.extend(u16be(extensions.len()));
    body.extend(extensions);
    let mut handshake = vec![1]; // ClientHello
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 3, 1];
    record.extend(u16be(handshake.len()));
    record.extend(handshake);
    record
}

#[test]
fn tls_routes_steer_connections_by_their_sni() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("secure", &[AMBIENT])?;
        let echo = |name: &str, version: &str| -> Result<(weft_sim::Pod, weft_sim::Process)> {
            let spec = weft_sim::PodSpec::new("node-2", "secure", name)
                .service_account("vault")
                .label("app", "vault")
                .label("version", version)
                .port("tls", 7443);
            let pod = cluster.add_pod(spec)?;
            let server = pod.spawn_app(&["tcp-echo", "--port", "7443"])?;
            Ok((pod, server))
        };
        let (_v1_pod, v1) = echo("vault-v1", "v1")?;
        let (_v2_pod, v2) = echo("vault-v2", "v2")?;
        let client = client(cluster, "node-1", "secure", "teller")?;
        // Declared `tls`: an L4 port, each connection routed once, by the
        // SNI of its ClientHello.
        let vip = cluster.add_service("secure", "vault", &[("app", "vault")], &[ServicePort::tcp("tls-vault", 443, 7443)])?;
        apply(cluster, "vault-dr", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: vault\n  namespace: secure\nspec:\n  host: vault\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n")?;
        apply(cluster, "vault-vs", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vault\n  namespace: secure\nspec:\n  hosts:\n  - vault\n  - \"*.vault.example\"\n  tls:\n  - match:\n    - port: 443\n      sniHosts:\n      - v2.vault.example\n    route:\n    - destination:\n        host: vault\n        subset: v2\n        port:\n          number: 443\n  - match:\n    - sniHosts:\n      - \"*.vault.example\"\n    route:\n    - destination:\n        host: vault\n        subset: v1\n        port:\n          number: 443\n")?;
        let echoed = |server: &weft_sim::Process| server.log().matches(" echoed ").count();
        // One connection from the client pod with a ClientHello for
        // `sni`; the bytes come back.
        let send = |sni: &str| -> Result<()> {
            let hello: String = client_hello(sni).iter().map(|b| format!("{b:02x}")).collect();
            let out = client.run_app(&["tcp-send", &format!("{vip}:443"), &hello, "--hex", "true", "--timeout", "5"], TIMEOUT)?;
            ensure!(out.stdout.trim() == hello, "the ClientHello for {sni} did not come back as sent: {out:?}");
            Ok(())
        };
        converge("the tls route by SNI", || {
            let before = echoed(&v2);
            send("v2.vault.example")?;
            Ok(echoed(&v2) > before)
        })?;
        let (v1_before, v2_before) = (echoed(&v1), echoed(&v2));
        for _ in 0..10 {
            send("v2.vault.example")?;
            send("blue.vault.example")?;
        }
        // The echo servers log a connection when it ends: give them a moment.
        weft_sim::wait_for("the echo servers' logs", TIMEOUT, || {
            Ok((echoed(&v1) >= v1_before + 10 && echoed(&v2) >= v2_before + 10).then_some(()))
        })?;
        ensure!(
            echoed(&v1) == v1_before + 10 && echoed(&v2) == v2_before + 10,
            "v2.vault.example to v2, anything else under *.vault.example to v1: v1 {} → {}, v2 {} → {}",
            v1_before, echoed(&v1), v2_before, echoed(&v2)
        );
        Ok(())
    })
}
