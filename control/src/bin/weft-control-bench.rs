//! `weft-control-bench`: the control plane at scale. Writes a config
//! directory (pods, services, VirtualServices and DestinationRules),
//! starts weft-control in this process, and starts the agents in a child
//! process (so that this process's RSS and CPU are the control plane's):
//! each agent is a delta ADS client over real TLS gRPC on loopback,
//! subscribed (wildcard) to every type weft serves (workloads and
//! services, authorizations, route configs, destination policies), ACKing
//! every response. Measures:
//!
//! - first sync: from starting the agents until every one has ACKed the
//!   current version of every type;
//! - one change: from rewriting one pod's file on disk until every agent
//!   has ACKed the version that contains it (p50, p99);
//! - the control plane's peak RSS and CPU seconds.
//!
//! Prints a table and writes JSON to `$WEFT_BENCH_DIR/control-plane.json`
//! (default `target/bench/`). Build with `--release`.
//!
//! The agents read each response's type, nonce and every resource's name
//! and version but skip the resource bodies (a real agent would convert
//! them; that cost is the agent's, on its own node).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use weft_control::{
    Config, Server, ServerHandle,
    xds::{SERVED_TYPES, SyncRegistry},
};
use weft_proto::{core::Node, discovery::DeltaDiscoveryRequest};

#[derive(Parser, Debug, Clone)]
#[command(about = "weft-control at scale: first sync, one-change latency, RSS, CPU")]
struct Args {
    /// Small sizes for a CI smoke run (under a minute).
    #[arg(long)]
    quick: bool,
    #[arg(long)]
    pods: Option<usize>,
    #[arg(long)]
    services: Option<usize>,
    /// VirtualServices, and as many DestinationRules.
    #[arg(long)]
    routes: Option<usize>,
    #[arg(long)]
    agents: Option<usize>,
    /// One-pod changes to time.
    #[arg(long)]
    changes: Option<usize>,
    /// Internal: run the agents (the child process).
    #[arg(long, hide = true)]
    agents_for: Option<String>,
}

struct Sizes {
    pods: usize,
    services: usize,
    routes: usize,
    agents: usize,
    changes: usize,
    namespaces: usize,
}

const PODS_PER_FILE: usize = 100;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(spec) = &args.agents_for {
        return runtime.block_on(agents::run(spec));
    }
    let sizes = if args.quick {
        Sizes {
            pods: args.pods.unwrap_or(10_000),
            services: args.services.unwrap_or(1_000),
            routes: args.routes.unwrap_or(200),
            agents: args.agents.unwrap_or(20),
            changes: args.changes.unwrap_or(10),
            namespaces: 20,
        }
    } else {
        Sizes {
            pods: args.pods.unwrap_or(100_000),
            services: args.services.unwrap_or(10_000),
            routes: args.routes.unwrap_or(2_000),
            agents: args.agents.unwrap_or(200),
            changes: args.changes.unwrap_or(50),
            namespaces: 100,
        }
    };
    runtime.block_on(bench(sizes, args.quick))
}

async fn bench(sizes: Sizes, quick: bool) -> anyhow::Result<()> {
    let config_dir = tempfile::tempdir()?;
    let state_dir = tempfile::tempdir()?;
    let t = Instant::now();
    write_config(config_dir.path(), &sizes)?;
    eprintln!("wrote the config in {:.1?}", t.elapsed());

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let handle = Server::start(Config::for_tests(config_dir.path(), state_dir.path())).await?;
    let load = started.elapsed();
    let model = handle.model();
    let (addresses, authorizations, routes, destinations) = {
        let m = model.borrow();
        (
            m.resources.len(),
            m.authorizations.len(),
            m.routes.len(),
            m.destinations.len(),
        )
    };
    eprintln!(
        "control plane up in {load:.1?}: {addresses} addresses, {authorizations} authorizations, {routes} route configs, {destinations} destination policies"
    );

    // The agents, in a child process.
    let spec = format!(
        "{}|{}|{}|{}",
        handle.xds_addr(),
        handle.trust_bundle_path().display(),
        state_dir.path().display(),
        sizes.agents
    );
    let t0 = Instant::now();
    let cpu_at_start = cpu_seconds();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--agents-for", &spec])
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the agents process")?;
    let syncz = handle.syncz();
    let first_sync = wait_all_acked(
        &handle,
        &syncz,
        sizes.agents,
        &mut child,
        Duration::from_secs(600),
    )
    .await?;
    let first_sync = first_sync.duration_since(t0);
    // CPU time is what the sync costs whatever else runs on the machine.
    let sync_cpu = cpu_seconds() - cpu_at_start;
    let agents_cpu = child
        .id()
        .map_or(0.0, |pid| cpu_seconds_of(&format!("/proc/{pid}/stat")));
    eprintln!(
        "first sync: {first_sync:.2?} (CPU: control plane {sync_cpu:.1} s, agents {agents_cpu:.1} s)"
    );

    // One-pod changes.
    let mut latencies = Vec::new();
    for i in 0..sizes.changes {
        let file = (i * 7919) % sizes.pods.div_ceil(PODS_PER_FILE);
        let before = model.borrow().version.clone();
        let t = Instant::now();
        rewrite_pod_file(config_dir.path(), &sizes, file, i + 1)?;
        // The new version, then every agent's ACK of it.
        let deadline = t + Duration::from_secs(30);
        loop {
            if model.borrow().version != before {
                break;
            }
            if Instant::now() > deadline {
                bail!("change {i} never reached the model");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let done = wait_all_acked(
            &handle,
            &syncz,
            sizes.agents,
            &mut child,
            Duration::from_secs(30),
        )
        .await?;
        latencies.push(done.duration_since(t));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    let (p50, p99) = (pct(0.50), pct(0.99));
    let cpu = cpu_seconds() - cpu_before;
    let rss = peak_rss_bytes();
    child.kill().await.ok();
    handle.shutdown().await;

    let gib = rss as f64 / (1024.0 * 1024.0 * 1024.0);
    let mut table = String::new();
    writeln!(
        table,
        "weft-control at scale{}",
        if quick { " (--quick)" } else { "" }
    )?;
    writeln!(
        table,
        "  config: {} pods, {} services, {} VirtualServices + {} DestinationRules, {} agents; served: {} addresses, {} authorizations, {} route configs, {} destination policies",
        sizes.pods,
        sizes.services,
        sizes.routes,
        sizes.routes,
        sizes.agents,
        addresses,
        authorizations,
        routes,
        destinations
    )?;
    writeln!(
        table,
        "  {:<44} {:>12} {:>10}",
        "metric", "measured", "target"
    )?;
    writeln!(
        table,
        "  {:<44} {:>12} {:>10}",
        "config load to ready",
        format!("{:.2} s", load.as_secs_f64()),
        ""
    )?;
    writeln!(
        table,
        "  {:<44} {:>12} {:>10}",
        "first sync, all agents ACKed",
        format!("{:.2} s", first_sync.as_secs_f64()),
        "≤ 10 s"
    )?;
    writeln!(
        table,
        "  {:<44} {:>12} {:>10}",
        "  CPU during it: control plane / agents",
        format!("{sync_cpu:.1} / {agents_cpu:.1} s"),
        ""
    )?;
    writeln!(
        table,
        "  {:<44} {:>12} {:>10}",
        format!("one pod change → all ACKed, p50 (n={})", latencies.len()),
        format!("{} ms", p50.as_millis()),
        ""
    )?;
    writeln!(
        table,
        "  {:<44} {:>12} {:>10}",
        "one pod change → all ACKed, p99",
        format!("{} ms", p99.as_millis()),
        "≤ 250 ms"
    )?;
    writeln!(
        table,
        "  {:<44} {:>12} {:>10}",
        "control plane peak RSS",
        format!("{gib:.2} GiB"),
        "≤ 1.5 GiB"
    )?;
    writeln!(
        table,
        "  {:<44} {:>12} {:>10}",
        "control plane CPU (start to end)",
        format!("{cpu:.1} s"),
        ""
    )?;
    print!("{table}");

    let json = serde_json::json!({
        "quick": quick,
        "pods": sizes.pods,
        "services": sizes.services,
        "virtual_services": sizes.routes,
        "destination_rules": sizes.routes,
        "agents": sizes.agents,
        "addresses": addresses,
        "authorizations": authorizations,
        "route_configs": routes,
        "destination_policies": destinations,
        "load_seconds": load.as_secs_f64(),
        "first_sync_seconds": first_sync.as_secs_f64(),
        "first_sync_cpu_seconds": {"control_plane": sync_cpu, "agents": agents_cpu},
        "change_p50_ms": p50.as_secs_f64() * 1e3,
        "change_p99_ms": p99.as_secs_f64() * 1e3,
        "changes": latencies.len(),
        "peak_rss_bytes": rss,
        "cpu_seconds": cpu,
        "targets": {"first_sync_seconds": 10.0, "change_p99_ms": 250.0, "peak_rss_bytes": 1.5 * 1024.0 * 1024.0 * 1024.0},
    });
    let dir = std::env::var_os("WEFT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("control-plane.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&json)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Waits until `agents` streams are connected and each has ACKed the
/// current version of every type; returns when.
async fn wait_all_acked(
    handle: &ServerHandle,
    syncz: &Arc<SyncRegistry>,
    agents: usize,
    child: &mut tokio::process::Child,
    limit: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    let model = handle.model();
    loop {
        let versions: Vec<(&str, String)> = {
            let m = model.borrow();
            SERVED_TYPES
                .iter()
                .map(|t| (*t, m.type_version(t)))
                .collect()
        };
        let (streams, synced) = syncz.count(|s| {
            versions.iter().all(|(t, v)| {
                s.types
                    .get(*t)
                    .is_some_and(|status| status.last_acked_version == *v)
            })
        });
        let done = streams >= agents && synced == streams;
        if done {
            return Ok(Instant::now());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the agents process exited: {status}");
        }
        if Instant::now() > deadline {
            bail!(
                "not all agents ACKed within {limit:?}: {streams} streams connected, {synced} in sync"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// === the configuration ===

fn namespace(i: usize) -> String {
    format!("ns-{i}")
}

fn write_config(dir: &Path, sizes: &Sizes) -> anyhow::Result<()> {
    let mut ns = String::new();
    for i in 0..sizes.namespaces {
        writeln!(
            ns,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels: {{istio.io/dataplane-mode: ambient}}",
            namespace(i)
        )?;
    }
    ns.push_str("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n");
    std::fs::write(dir.join("namespaces.yaml"), ns)?;

    std::fs::create_dir_all(dir.join("services"))?;
    for chunk in 0..sizes.services.div_ceil(100) {
        let mut text = String::new();
        for s in chunk * 100..((chunk + 1) * 100).min(sizes.services) {
            writeln!(
                text,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  selector: {{app: svc-{s}}}\n  clusterIP: 10.{a}.{b}.{c}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}",
                ns = namespace(s % sizes.namespaces),
                a = 96 + s / 65536,
                b = (s / 256) % 256,
                c = s % 256,
            )?;
        }
        std::fs::write(dir.join(format!("services/{chunk:04}.yaml")), text)?;
    }

    std::fs::create_dir_all(dir.join("routes"))?;
    for chunk in 0..sizes.routes.div_ceil(100) {
        let mut text = String::new();
        for s in chunk * 100..((chunk + 1) * 100).min(sizes.routes) {
            let ns = namespace(s % sizes.namespaces);
            writeln!(
                text,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  host: svc-{s}\n  trafficPolicy: {{loadBalancer: {{simple: LEAST_REQUEST}}}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  hosts: [svc-{s}]\n  http:\n  - match: [{{headers: {{x-canary: {{exact: 'true'}}}}}}]\n    route: [{{destination: {{host: svc-{s}, subset: v2}}}}]\n  - route:\n    - {{destination: {{host: svc-{s}, subset: v1}}, weight: 90}}\n    - {{destination: {{host: svc-{s}, subset: v2}}, weight: 10}}\n    retries: {{attempts: 3, perTryTimeout: 2s}}\n    timeout: 10s"
            )?;
        }
        std::fs::write(dir.join(format!("routes/{chunk:04}.yaml")), text)?;
    }

    std::fs::create_dir_all(dir.join("pods"))?;
    for file in 0..sizes.pods.div_ceil(PODS_PER_FILE) {
        std::fs::write(
            dir.join(format!("pods/{file:05}.yaml")),
            pod_file(sizes, file, 0),
        )?;
    }
    Ok(())
}

/// One file of pods; `generation` moves the first pod's IP.
fn pod_file(sizes: &Sizes, file: usize, generation: usize) -> String {
    let mut text = String::new();
    for p in file * PODS_PER_FILE..((file + 1) * PODS_PER_FILE).min(sizes.pods) {
        let s = p % sizes.services;
        let ip_index = if p == file * PODS_PER_FILE && generation > 0 {
            sizes.pods + generation * 1000 + file
        } else {
            p
        };
        let _ = writeln!(
            text,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{p}\n  namespace: {ns}\n  labels: {{app: svc-{s}, version: v{v}}}\nspec:\n  nodeName: node-{node}\n  serviceAccountName: svc-{s}\n  containers:\n  - name: app\n    ports: [{{name: http, containerPort: 8080}}]\nstatus:\n  podIP: 10.{a}.{b}.{c}",
            ns = namespace(s % sizes.namespaces),
            v = 1 + p % 2,
            node = p % sizes.agents,
            a = 1 + ip_index / 65536 % 60,
            b = (ip_index / 256) % 256,
            c = ip_index % 256,
        );
    }
    text
}

fn rewrite_pod_file(
    dir: &Path,
    sizes: &Sizes,
    file: usize,
    generation: usize,
) -> anyhow::Result<()> {
    let path = dir.join(format!("pods/{file:05}.yaml"));
    let tmp = dir.join(format!("pods/.{file:05}.yaml.tmp"));
    std::fs::write(&tmp, pod_file(sizes, file, generation))?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

// === process figures ===

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// User + system CPU seconds from a `/proc/<pid>/stat` file.
fn cpu_seconds_of(stat_file: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_file).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after `)`.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Peak resident set size (VmHWM) of this process.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// === the agents (child process) ===

mod agents {
    use bytes::Buf;
    use tonic::codec::{Codec, DecodeBuf, Decoder};

    use super::*;

    /// What an agent here reads of a response: type, nonce, and where
    /// each resource's name and version are, not the bodies. Read in place from tonic's buffer with no
    /// allocation per resource: the agents share the control plane's CPUs
    /// in this benchmark, while a real agent decodes on its own node.
    pub struct Lite {
        pub type_url: String,
        pub nonce: String,
        pub resources: usize,
    }

    pub struct AgentCodec;

    impl Codec for AgentCodec {
        type Encode = DeltaDiscoveryRequest;
        type Decode = Lite;
        type Encoder = tonic_prost::ProstEncoder<DeltaDiscoveryRequest>;
        type Decoder = LiteDecoder;

        fn encoder(&mut self) -> Self::Encoder {
            tonic_prost::ProstEncoder::default()
        }

        fn decoder(&mut self) -> Self::Decoder {
            LiteDecoder
        }
    }

    pub struct LiteDecoder;

    impl Decoder for LiteDecoder {
        type Item = Lite;
        type Error = tonic::Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Lite>, tonic::Status> {
            let len = buf.remaining();
            let bad = || tonic::Status::internal("malformed DeltaDiscoveryResponse");
            let bytes = buf.chunk();
            if bytes.len() < len {
                return Err(bad());
            }
            let mut lite = Lite {
                type_url: String::new(),
                nonce: String::new(),
                resources: 0,
            };
            fn text(b: &[u8]) -> Result<&str, tonic::Status> {
                std::str::from_utf8(b)
                    .map_err(|_| tonic::Status::internal("a string that is not UTF-8"))
            }
            for field in Fields(&bytes[..len]) {
                match field.ok_or_else(bad)? {
                    (2, Some(resource)) => {
                        let (mut name, mut version) = (None, None);
                        for inner in Fields(resource) {
                            match inner.ok_or_else(bad)? {
                                (1, v) => version = v,
                                (3, n) => name = n,
                                _ => {}
                            }
                        }
                        if name.is_none() || version.is_none() {
                            return Err(bad());
                        }
                        lite.resources += 1;
                    }
                    (4, Some(s)) => lite.type_url = text(s)?.to_string(),
                    (5, Some(s)) => lite.nonce = text(s)?.to_string(),
                    _ => {}
                }
            }
            buf.advance(len);
            Ok(Some(lite))
        }
    }

    /// The fields of a protobuf message: (number, payload of a
    /// length-delimited field); `None` when malformed.
    struct Fields<'a>(&'a [u8]);

    impl<'a> Iterator for Fields<'a> {
        type Item = Option<(u64, Option<&'a [u8]>)>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.0.is_empty() {
                return None;
            }
            let field = (|| {
                let key = varint(&mut self.0)?;
                let payload = match key & 7 {
                    0 => {
                        varint(&mut self.0)?;
                        None
                    }
                    1 | 5 => {
                        let n = if key & 7 == 1 { 8 } else { 4 };
                        self.0 = self.0.get(n..)?;
                        None
                    }
                    2 => {
                        let n = usize::try_from(varint(&mut self.0)?).ok()?;
                        let payload = self.0.get(..n)?;
                        self.0 = &self.0[n..];
                        Some(payload)
                    }
                    _ => return None,
                };
                Some((key >> 3, payload))
            })();
            if field.is_none() {
                self.0 = &[];
            }
            Some(field)
        }
    }

    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *b.get(i)?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                *b = &b[i + 1..];
                return Some(value);
            }
        }
        None
    }

    pub async fn run(spec: &str) -> anyhow::Result<()> {
        let parts: Vec<&str> = spec.split('|').collect();
        let [addr, bundle, state_dir, n] = parts.as_slice() else {
            bail!("bad --agents-for");
        };
        let n: usize = n.parse()?;
        let bundle = std::fs::read(bundle)?;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let node = format!("node-{i}");
            let token = weft_control::bootstrap_token(Path::new(state_dir), &node)?;
            // Windows as ztunnel sets them (4 MiB stream, 16 MiB connection).
            let endpoint = Endpoint::from_shared(format!("https://{addr}"))?
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(bundle.clone()))
                        .domain_name("weft-control"),
                )?;
            tasks.spawn(async move {
                if let Err(e) = agent(endpoint, node.clone(), token).await {
                    eprintln!("agent {node}: {e:#}");
                    std::process::exit(1);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    fn request(node: &str, type_url: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(Node {
                id: node.to_string(),
                ..Default::default()
            }),
            type_url: type_url.to_string(),
            ..Default::default()
        }
    }

    async fn agent(endpoint: Endpoint, node: String, token: String) -> anyhow::Result<()> {
        let channel = endpoint.connect().await?;
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
        grpc.ready().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for type_url in SERVED_TYPES {
            tx.send(request(&node, type_url)).await?;
        }
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let codec = AgentCodec;
        let path = http::uri::PathAndQuery::from_static(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
        );
        let mut responses = grpc.streaming(req, path, codec).await?.into_inner();
        while let Some(response) = responses.message().await? {
            let mut ack = request(&node, &response.type_url);
            ack.response_nonce = response.nonce;
            tx.send(ack).await?;
        }
        Ok(())
    }
}
