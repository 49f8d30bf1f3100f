//! The first end-to-end check of weft itself on the simulated cluster:
//! traffic between pods on two nodes is carried in HBONE (TLS to 15008),
//! the plaintext never crosses the fabric, and the server still sees the
//! client's pod IP. Needs root and weft's binaries
//! (`cargo build --workspace`).

use std::time::Duration;

use anyhow::{Result, ensure};
use weft_sim::{Cluster, PodSpec, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
#[ignore = "needs weft-control, weft-agent and weft-cni (cargo build --workspace); run with --ignored"]
fn pod_traffic_between_nodes_is_hbone_and_keeps_the_client_ip() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        cluster.add_namespace("demo", &[("istio.io/dataplane-mode", "ambient")])?;
        let server = cluster.add_pod(
            PodSpec::new("node-2", "demo", "server")
                .label("app", "server")
                .service_account("server")
                .port("http", 8080),
        )?;
        let client =
            cluster.add_pod(PodSpec::new("node-1", "demo", "client").service_account("client"))?;
        let _app = server.spawn_app(&["http-server", "--port", "8080"])?;
        let url = format!("http://{}/", server.addr(8080));
        wait_for("the server to answer through the mesh", TIMEOUT, || {
            let out = client.run_app(&["http-get", &url, "--timeout", "3"], TIMEOUT)?;
            Ok(out.success().then_some(()))
        })?;

        let capture = cluster.capture_between_nodes()?;
        let marker = "SECRET-MARKER-5d1c";
        let out = client
            .run_app(&["http-get", &url, "--body-marker", marker], TIMEOUT)?
            .check("http-get through the mesh")?;
        let packets = capture.stop()?;

        let expected = format!("hello from server to {}:", client.ip());
        ensure!(
            out.stdout.contains(&expected),
            "server did not see the client's IP:\n{}",
            out.stdout
        );
        let tls: Vec<_> = packets.tls_records_to(15008).collect();
        ensure!(
            tls.iter()
                .any(|p| p.tls_record().is_some_and(|(ct, _)| ct == 0x16)),
            "no TLS handshake to 15008:\n{}",
            packets.summary(60)
        );
        ensure!(
            tls.iter().any(|p| p.tls_record() == Some((0x17, 0x0303))),
            "no TLS application data to 15008:\n{}",
            packets.summary(60)
        );
        ensure!(
            packets.to_port(8080).next().is_none(),
            "plaintext to the app port crossed the fabric:\n{}",
            packets.summary(60)
        );
        ensure!(
            !packets.contains(marker.as_bytes()),
            "the marker crossed the fabric in plaintext"
        );
        Ok(())
    })
}
