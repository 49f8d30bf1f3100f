//! `weft-demo` (run by `cargo xtask demo`): a 2-node simulated cluster with
//! weft, a client and a server in a mesh namespace and a client outside the
//! mesh, and requests flowing until Ctrl-C. For each round it shows what
//! the server saw, what crossed the wire between the nodes, and the access
//! log line (JSON, as the mesh config asks) in which the server's node
//! agent names the authenticated client identity. Everything is torn down
//! on Ctrl-C or exit.
//!
//! Options: `--requests N` stops after N rounds; `--interval SECONDS`
//! between rounds (default 2).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use weft_sim::{Cluster, Packets, Pod, PodSpec, ServicePort, wait_for};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

fn catch_signals() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.context("installing the Ctrl-C handler")?;
    }
    Ok(())
}

struct Options {
    requests: Option<u64>,
    interval: Duration,
}

fn options() -> Result<Options> {
    let mut options = Options {
        requests: None,
        interval: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--requests" => options.requests = Some(value()?.parse().context("--requests")?),
            "--interval" => {
                options.interval = Duration::from_secs_f64(value()?.parse().context("--interval")?)
            }
            other => bail!("unknown option {other} (use --requests N, --interval SECONDS)"),
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    let options = options()?;
    catch_signals()?;
    println!(
        "weft demo: building a simulated cluster (2 nodes, a control plane) out of network namespaces..."
    );
    let cluster = Cluster::builder().nodes(2).build()?;
    let result = cluster.with_logs(|cluster| run(cluster, &options));
    println!("\nweft demo: tearing the cluster down");
    drop(cluster);
    result
}

fn run(cluster: &Cluster, options: &Options) -> Result<()> {
    let control = cluster.control();
    println!(
        "  control plane  {} (xDS + CA over TLS on 15012)",
        control.ip()
    );
    for node in cluster.nodes() {
        println!(
            "  {}         {} (pod CIDR {}, weft-agent ready)",
            node.name(),
            node.ip(),
            node.pod_cidr()
        );
    }

    // The access log as JSON, with the identities of both ends (Envoy's
    // default format has neither).
    cluster.write_config_file("mesh-config.yaml", MESH_CONFIG)?;
    cluster.add_namespace("demo", &[("istio.io/dataplane-mode", "ambient")])?;
    cluster.add_namespace("legacy", &[])?;
    let server = cluster.add_pod(
        PodSpec::new("node-2", "demo", "server")
            .label("app", "server")
            .service_account("server")
            .port("http", 8080),
    )?;
    let client =
        cluster.add_pod(PodSpec::new("node-1", "demo", "client").service_account("client"))?;
    let legacy = cluster.add_pod(PodSpec::new("node-1", "legacy", "legacy-client"))?;
    let vip = cluster.add_service(
        "demo",
        "server",
        &[("app", "server")],
        &[ServicePort::tcp("http", 80, 8080)],
    )?;
    let _app = server.spawn_app(&["http-server", "--port", "8080", "--quiet", "true"])?;
    println!("\nnamespace demo (istio.io/dataplane-mode=ambient, in the mesh):");
    println!(
        "  server  on node-2  {}  serviceaccount server, Service server.demo -> {vip}:80",
        server.ip()
    );
    println!(
        "  client  on node-1  {}  serviceaccount client",
        client.ip()
    );
    println!("namespace legacy (no label, not in the mesh):");
    println!("  legacy-client on node-1  {}", legacy.ip());

    let mesh_url = format!("http://{vip}:80/");
    let direct_url = format!("http://{}/", server.addr(8080));
    wait_for(
        "the server to answer through the mesh",
        Duration::from_secs(30),
        || {
            let out = client.run_app(
                &["http-get", &mesh_url, "--timeout", "3"],
                Duration::from_secs(10),
            )?;
            // ... and its agent to log it in the mesh config's format.
            Ok((out.success() && !server_lines(cluster)?.is_empty()).then_some(()))
        },
    )?;
    println!("\nRequests every {:?}; Ctrl-C to stop.", options.interval);

    let mut round = 0u64;
    while !STOP.load(Ordering::SeqCst) && options.requests.is_none_or(|n| round < n) {
        round += 1;
        println!("\n[{round}] client -> {mesh_url} (Service VIP; the mesh carries it)");
        let before = server_lines(cluster)?.len();
        show_request(cluster, &client, &mesh_url, round)?;
        // The server side's line is written when the connection closes.
        let line = wait_for("the access log line", Duration::from_secs(5), || {
            Ok(server_lines(cluster)?
                .get(before..)
                .and_then(|new| new.last().cloned()))
        });
        if let Ok(line) = line {
            println!("    node-2 agent access log: {line}");
        }
        println!("[{round}] legacy-client -> {direct_url} (not in the mesh)");
        show_request(cluster, &legacy, &direct_url, round)?;
        sleep_unless_stopped(options.interval);
    }
    Ok(())
}

/// The mesh config: the access log in JSON, one line per request or
/// connection, with the client's proven identity (`peer`) and the
/// server's (`local`).
const MESH_CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
    accessLogEncoding: JSON
    accessLogFormat: '{"start_time": "%START_TIME%", "upstream_cluster": "%UPSTREAM_CLUSTER%", "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%", "downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%", "upstream_host": "%UPSTREAM_HOST%", "downstream_local_uri_san": "%DOWNSTREAM_LOCAL_URI_SAN%", "bytes_received": "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%", "duration": "%DURATION%", "response_flags": "%RESPONSE_FLAGS%"}'
"#;

/// node-2's access-log lines (JSON) of the connections its agent received
/// for the server's port 8080 from a proven identity (HBONE), oldest
/// first.
fn server_lines(cluster: &Cluster) -> Result<Vec<String>> {
    std::thread::sleep(Duration::from_millis(50));
    let log = cluster.node("node-2")?.agent_log();
    let complete = log.rfind('\n').map_or("", |end| &log[..end]);
    Ok(complete
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|e| {
                e["upstream_cluster"] == "inbound|8080||"
                    && e["downstream_peer_uri_san"].is_string()
            })
        })
        .map(str::to_string)
        .collect())
}

/// One request with a marker; prints the answer and what the wire showed.
fn show_request(cluster: &Cluster, from: &Pod, url: &str, round: u64) -> Result<()> {
    let marker = format!("demo-secret-{round}-{}", from.name());
    let capture = cluster.capture_between_nodes()?;
    let out = from.run_app(
        &["http-get", url, "--body-marker", &marker, "--timeout", "5"],
        Duration::from_secs(10),
    )?;
    let packets = capture.stop()?;
    let answer = out
        .stdout
        .lines()
        .find(|l| l.starts_with("hello"))
        .unwrap_or("(no answer)");
    println!("    answer: {answer}");
    println!("    {}", wire_summary(&packets, &marker));
    Ok(())
}

fn wire_summary(packets: &Packets, marker: &str) -> String {
    let tls = packets.tls_records_to(15008).count();
    let handshake = packets.tls_records_to(15008).any(|p| {
        p.tls_record()
            .is_some_and(|(content_type, _)| content_type == 0x16)
    });
    let plaintext = packets.contains(marker.as_bytes());
    format!(
        "on the wire between the nodes: {tls} TLS records to port 15008{}; request visible in plaintext: {}",
        if handshake {
            " (handshake + application data)"
        } else {
            ""
        },
        if plaintext { "YES" } else { "no" }
    )
}

fn sleep_unless_stopped(interval: Duration) {
    let deadline = std::time::Instant::now() + interval;
    while !STOP.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}
