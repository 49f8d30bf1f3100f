//! The workload certificate lifecycle on the simulated cluster: short-lived
//! certificates rotate under a long-lived connection; a new root is
//! introduced and the old one retired without dropping it; a pod's identity
//! is forgotten when the pod leaves. Needs root, the built binaries and
//! `openssl` (to make the second root).

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use weft_sim::{Cluster, Node, Pod, PodSpec, Process, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);
const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

struct Pair {
    server: Pod,
    client: Pod,
    _apps: Vec<Process>,
}

fn pair(cluster: &Cluster) -> Result<Pair> {
    cluster.add_namespace("demo", &[AMBIENT])?;
    let server = cluster.add_pod(
        PodSpec::new("node-2", "demo", "server")
            .service_account("server")
            .port("http", 8080)
            .port("echo", 7070),
    )?;
    let client =
        cluster.add_pod(PodSpec::new("node-1", "demo", "client").service_account("client"))?;
    let apps = vec![
        server.spawn_app(&["http-server", "--port", "8080", "--quiet", "true"])?,
        server.spawn_app(&["tcp-echo", "--port", "7070"])?,
    ];
    let pair = Pair {
        server,
        client,
        _apps: apps,
    };
    get_eventually(&pair)?;
    Ok(pair)
}

/// A new connection through the mesh works (retried: the mesh may be
/// reconnecting to a restarted control plane).
fn get_eventually(pair: &Pair) -> Result<()> {
    let url = format!("http://{}/", pair.server.addr(8080));
    wait_for("a new connection through the mesh", TIMEOUT, || {
        let out = pair
            .client
            .run_app(&["http-get", &url, "--timeout", "3"], TIMEOUT)?;
        Ok(out.success().then_some(()))
    })
}

/// One connection kept open, a line echoed every 250 ms, `count` times.
fn long_lived(pair: &Pair, count: u32) -> Result<Process> {
    pair.client.spawn_app(&[
        "tcp-ping",
        &pair.server.addr(7070).to_string(),
        "--count",
        &count.to_string(),
        "--interval-ms",
        "250",
    ])
}

fn survived(mut ping: Process, count: u32) -> Result<()> {
    let status = ping.wait_exit(TIMEOUT)?;
    let log = ping.log();
    ensure!(
        status.success() && log.contains(&format!("all {count} pings echoed on one connection")),
        "the long-lived connection did not survive ({status}):\n{log}"
    );
    Ok(())
}

fn log_count(node: &Node, needle: &str) -> usize {
    node.agent_log_tail(5000)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn workload_certificates_rotate_under_a_long_lived_connection() -> Result<()> {
    // Six-second certificates: renewed about every three seconds.
    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--cert-ttl", "6s"])
        .build()?;
    cluster.with_logs(|cluster| {
        let pair = pair(cluster)?;
        let ping = long_lived(&pair, 48)?; // 12 s
        let issued =
            "workload certificate issued identity=spiffe://cluster.local/ns/demo/sa/client";
        let node = cluster.node("node-1")?;
        let before = log_count(node, issued);
        wait_for("two renewals of the client's certificate", TIMEOUT, || {
            Ok((log_count(node, issued) >= before + 2).then_some(()))
        })?;
        get_eventually(&pair).context("a new connection after the renewals")?;
        survived(ping, 48)
    })
}

/// A second root CA (key and self-signed certificate) made with openssl.
fn make_root(dir: &Path, name: &str) -> Result<(String, String)> {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-days",
            "2",
            "-subj",
            &format!("/O=cluster.local/CN={name}"),
        ])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .output()
        .context("running openssl (apt-get install openssl)")?;
    ensure!(
        status.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    Ok((cert.display().to_string(), key.display().to_string()))
}

#[test]
fn a_new_root_is_introduced_and_the_old_one_retired_without_dropping_connections() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let pair = pair(cluster)?;
        let ping = long_lived(&pair, 120)?; // 30 s
        let old_root = cluster.control().state_dir().join("root-cert.pem");
        let old_root = old_root.display().to_string();
        let (new_cert, new_key) = make_root(cluster.dir(), "weft-root-b")?;
        let reissued = "re-issued after a trust bundle change";
        let nodes = [cluster.node("node-1")?, cluster.node("node-2")?];

        // 1. Both roots trusted; the CA signs with the new one.
        cluster.control().restart_with(&[
            "--ca-cert",
            &new_cert,
            "--ca-key",
            &new_key,
            "--extra-trust-bundle",
            &old_root,
        ])?;
        wait_for(
            "both agents to re-issue their certificates from the new root",
            TIMEOUT,
            || {
                Ok(nodes
                    .iter()
                    .all(|n| log_count(n, reissued) >= 1)
                    .then_some(()))
            },
        )?;
        get_eventually(&pair).context("a new connection with both roots trusted")?;

        // 2. The old root retired.
        cluster
            .control()
            .restart_with(&["--ca-cert", &new_cert, "--ca-key", &new_key])?;
        wait_for("both agents to load the one-root bundle", TIMEOUT, || {
            Ok(nodes
                .iter()
                .all(|n| {
                    n.agent_log_tail(5000)
                        .lines()
                        .any(|l| l.contains("trust bundle changed") && l.contains("roots=1"))
                })
                .then_some(()))
        })?;
        get_eventually(&pair).context("a new connection after the old root was retired")?;
        survived(ping, 120)
    })
}

#[test]
fn a_departed_pods_identity_is_dropped() -> Result<()> {
    let cluster = Cluster::builder().nodes(2).build()?;
    cluster.with_logs(|cluster| {
        let pair = pair(cluster)?;
        let node = cluster.node("node-1")?;
        let identity = "spiffe://cluster.local/ns/demo/sa/client";
        let dump = || -> Result<String> {
            let mut get = Command::new(cluster.bin_dir().join("weft-sim-app"));
            get.args([
                "http-get",
                "http://127.0.0.1:15000/config_dump",
                "--timeout",
                "3",
            ]);
            Ok(node.run(get, TIMEOUT)?.check("GET /config_dump")?.stdout)
        };
        ensure!(
            dump()?.contains(identity),
            "the client's certificate is not held:\n{}",
            dump()?
        );
        cluster.delete_pod(&pair.client)?;
        wait_for("the log of the dropped certificate", TIMEOUT, || {
            Ok((log_count(node, "certificate dropped") >= 1).then_some(()))
        })
        .with_context(|| node.agent_log_tail(50))?;
        let after = dump()?;
        ensure!(
            !after.contains(identity),
            "the departed pod's identity is still held:\n{after}"
        );
        Ok(())
    })
}

#[test]
fn the_mesh_rides_out_a_control_plane_outage_and_renews_when_it_is_back() -> Result<()> {
    // Thirty-second certificates, renewed at fifteen: a 20 s outage begun
    // right after they were issued spans their renewal, not their expiry.
    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--cert-ttl", "30s"])
        .build()?;
    cluster.with_logs(|cluster| {
        let pair = pair(cluster)?;
        let ping = long_lived(&pair, 160)?; // 40 s
        let issued =
            "workload certificate issued identity=spiffe://cluster.local/ns/demo/sa/client";
        let node = cluster.node("node-1")?;
        let issued_before = log_count(node, issued);
        let reconnects = "xDS stream established";
        let connected_before = log_count(node, reconnects);

        let outage = std::time::Instant::now();
        cluster.control().stop(None);
        // Old and new connections between enrolled pods keep working, and
        // the client's renewal, due meanwhile, fails and is retried.
        let url = format!("http://{}/", pair.server.addr(8080));
        while outage.elapsed() < Duration::from_secs(20) {
            let out = pair
                .client
                .run_app(&["http-get", &url, "--timeout", "3"], TIMEOUT)?;
            ensure!(
                out.success(),
                "a new connection failed {:?} into the outage:\n{}{}",
                outage.elapsed(),
                out.stdout,
                out.stderr
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        ensure!(
            log_count(node, "certificate renewal failed; retrying") > 0,
            "no renewal came due during the outage:\n{}",
            node.agent_log_tail(60)
        );

        // Back: the agents reconnect and the due certificate is renewed
        // before it expires.
        cluster.control().start()?;
        wait_for(
            "node-1's agent to reconnect to the control plane",
            TIMEOUT,
            || Ok((log_count(node, reconnects) > connected_before).then_some(())),
        )
        .with_context(|| node.agent_log_tail(60))?;
        wait_for("the client's certificate to be renewed", TIMEOUT, || {
            Ok((log_count(node, issued) > issued_before).then_some(()))
        })
        .with_context(|| node.agent_log_tail(60))?;
        // Past the old certificate's expiry, new connections still work.
        while outage.elapsed() < Duration::from_secs(32) {
            std::thread::sleep(Duration::from_millis(500));
        }
        get_eventually(&pair).context("a new connection after the old certificate expired")?;
        survived(ping, 160)
    })
}
