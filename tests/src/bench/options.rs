//! `weft-bench`'s flags and the settings they imply.

use std::path::PathBuf;

use clap::Parser;

/// weft against no mesh, side by side, on one simulated cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "weft-bench")]
pub struct Options {
    /// A smoke run of about a minute: every scenario, short and small. It
    /// checks that the benchmarks work, not how fast anything is.
    #[arg(long)]
    pub quick: bool,
    /// Run only scenarios whose name contains one of these (repeatable),
    /// e.g. `--only throughput/cross-node --only footprint`; `--only
    /// metrics` for weft with the agents' traffic metrics on against off
    /// (new connections and HTTP L7 requests per second, cross-node),
    /// `--only kernel-telemetry` the same for TCP health and mesh waits
    /// (new connections, one stream's throughput), `--only profiling` for
    /// what a 99 Hz profile of a busy pod costs.
    #[arg(long, value_name = "SUBSTRING")]
    pub only: Vec<String>,
    /// Rounds per scenario (direct and weft alternate, medians reported).
    /// Default: 2, or 1 with `--quick`.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Measured seconds per run. Default: 10, or 1 with `--quick`.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// HTTP request rate (fixed, below saturation).
    #[arg(long, default_value_t = 2000.0)]
    pub http_rate: f64,
    /// Connections in flight in the connection-rate scenario.
    #[arg(long, default_value_t = 4)]
    pub conn_concurrency: usize,
    /// Record a CPU profile of the agents (`perf record -e cpu-clock -g`)
    /// during the first weft round of each scenario; reports go to
    /// `<target>/bench/profile/`. Profiling costs CPU: the figures of a
    /// profiled run are marked as such.
    #[arg(long)]
    pub profile: bool,
    /// Times a measurement is repeated when other work took more than 5% of
    /// the machine during it (the quietest attempt is kept; none with
    /// `--quick`).
    #[arg(long, default_value_t = 3)]
    pub busy_retries: usize,
    /// Before each measurement, wait up to this many seconds for other work
    /// to leave the machine (none with `--quick`).
    #[arg(long, default_value_t = 120.0)]
    pub quiet_wait: f64,
    /// Do not hold /dev/cpu_dma_latency at 0 (to see what it changes).
    #[arg(long)]
    pub no_dma_latency: bool,
    /// What the `kernel-telemetry` scenarios turn off in their "off"
    /// variant: both parts (the default), or one, to see what each costs.
    #[arg(long, value_enum, default_value_t = KernelTelemetry::Both)]
    pub kernel_telemetry: KernelTelemetry,
    /// What the `metrics` scenarios turn off in their "off" variant: the
    /// traffic metrics and the access log (the default), or one, to see
    /// what each costs.
    #[arg(long, value_enum, default_value_t = TrafficTelemetry::Both)]
    pub traffic_telemetry: TrafficTelemetry,
    /// `KEY=VALUE` set in the environment of everything the cluster runs
    /// (repeatable), to try an agent setting without rebuilding, e.g.
    /// `--agent-env TOKIO_WORKER_THREADS=1` or `--agent-env WEFT_LOG=warn`.
    /// Recorded in the report.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub agent_env: Vec<(String, String)>,
    /// Another node proxy measured beside weft in the L4 scenarios, as
    /// `NAME=PATH`; only `ztunnel=PATH` (Istio's ztunnel binary, see
    /// docs/PERFORMANCE.md for how to build it) is known.
    #[arg(long, value_name = "ztunnel=PATH", value_parser = parse_peer)]
    pub peer: Option<PathBuf>,
    /// Where weft's binaries are (default: `$WEFT_BIN_DIR`, else next to
    /// this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where to write the JSON report (default `<target>/bench/latest.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The parts of the agent's eBPF telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelTelemetry {
    /// TCP health and mesh waits.
    Both,
    /// The per-workload TCP health (`weft_tcp_health`) alone.
    TcpHealth,
    /// The per-pod mesh waits (the SYN stamp, the proxy's clock reads)
    /// alone.
    MeshWaits,
}

/// The parts of the agent's per-request telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficTelemetry {
    /// The traffic metrics and the access log.
    Both,
    /// The traffic metrics (`istio_tcp_*`, `istio_request*`) alone.
    Metrics,
    /// The access log alone.
    AccessLog,
}

impl TrafficTelemetry {
    /// Whether "off" turns the traffic metrics off.
    pub fn metrics(self) -> bool {
        self != TrafficTelemetry::AccessLog
    }

    /// Whether "off" turns the access log off.
    pub fn access_log(self) -> bool {
        self != TrafficTelemetry::Metrics
    }
}

/// Everything a run's scenarios need to know, resolved from [`Options`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub quick: bool,
    pub rounds: usize,
    pub seconds: f64,
    pub warmup: f64,
    /// Parallel streams of the multi-stream throughput scenarios.
    pub streams: usize,
    pub http_rate: f64,
    pub http_connections: usize,
    /// Keep-alive connections of the HTTP max-rate scenarios.
    pub http_max_connections: usize,
    /// HTTP/2 connections and calls in flight of the gRPC max-rate
    /// scenarios.
    pub grpc_connections: usize,
    pub grpc_concurrency: usize,
    /// Idle HTTP/1.1 connections held through weft L7 and L4 (cross-node).
    pub http_hold_count: usize,
    pub body: usize,
    pub message: usize,
    pub conn_concurrency: usize,
    /// Concurrent idle connections measured (cross-node).
    pub hold_counts: Vec<usize>,
    /// Enrolled pods on node-1 while its idle RSS is read.
    pub idle_pods: usize,
    pub only: Vec<String>,
    pub profile: bool,
    /// What the kernel-telemetry scenarios turn off.
    pub kernel_telemetry: KernelTelemetry,
    /// What the metrics scenarios turn off.
    pub traffic_telemetry: TrafficTelemetry,
    /// Share of the machine (0 to 1) that other work may take during a
    /// measurement before it is repeated.
    pub busy_threshold: f64,
    /// Repeats of a measurement during which the machine was busy.
    pub busy_retries: usize,
    /// How long to wait for a quiet machine before each measurement.
    pub quiet_wait: std::time::Duration,
    /// Istio's ztunnel, run as a third variant of the L4 scenarios.
    pub ztunnel: Option<PathBuf>,
}

impl Settings {
    pub fn from(options: &Options) -> Settings {
        let quick = options.quick;
        Settings {
            quick,
            rounds: options.rounds.unwrap_or(if quick { 1 } else { 2 }).max(1),
            seconds: options.seconds.unwrap_or(if quick { 1.0 } else { 10.0 }),
            warmup: if quick { 0.2 } else { 1.0 },
            streams: 8,
            http_rate: options.http_rate,
            http_connections: 4,
            http_max_connections: 16,
            grpc_connections: 2,
            grpc_concurrency: 32,
            http_hold_count: if quick { 100 } else { 1_000 },
            body: 1024,
            message: 100,
            conn_concurrency: options.conn_concurrency,
            hold_counts: if quick {
                vec![200]
            } else {
                vec![1_000, 10_000]
            },
            idle_pods: 10,
            only: options.only.clone(),
            profile: options.profile,
            kernel_telemetry: options.kernel_telemetry,
            traffic_telemetry: options.traffic_telemetry,
            busy_threshold: 0.05,
            busy_retries: if quick { 0 } else { options.busy_retries },
            quiet_wait: std::time::Duration::from_secs_f64(if quick {
                0.0
            } else {
                options.quiet_wait.max(0.0)
            }),
            ztunnel: options.peer.clone(),
        }
    }

    /// Whether the scenario called `name` is selected.
    pub fn selected(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }
}

/// `ztunnel=PATH`: the one peer the benchmark knows, and an executable.
fn parse_peer(s: &str) -> Result<PathBuf, String> {
    let path = match s.split_once('=') {
        Some(("ztunnel", path)) if !path.is_empty() => PathBuf::from(path),
        Some((name, _)) if name != "ztunnel" => {
            return Err(format!("{name:?}: the only peer known is ztunnel"));
        }
        _ => return Err(format!("{s:?} is not ztunnel=PATH")),
    };
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0
    {
        return Err(format!("{} is not an executable file", path.display()));
    }
    // The cluster's processes run elsewhere: an absolute path.
    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}
