//! The agent's configuration: one struct, one source of truth. Every field
//! is a command-line flag (and an environment variable), printed at start
//! and served by the admin API (`/config`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Serialize;

/// Configuration of `weft-agent`.
#[derive(Debug, Clone, Serialize, clap::Parser)]
#[command(
    name = "weft-agent",
    version,
    about = "weft's per-node agent and proxy",
    after_help = "weft-agent cni-uninstall [--cni-bin-dir DIR] [--cni-net-dir DIR]: removes what --cni-install added to the node, and exits."
)]
pub struct Config {
    /// Name of the Kubernetes node this agent serves. The control plane only
    /// issues identities of pods scheduled on this node.
    #[arg(long, env = "WEFT_NODE_NAME")]
    pub node_name: String,

    /// Address (host:port) of the control plane's xDS and CA endpoint.
    #[arg(
        long,
        env = "WEFT_CONTROL_ADDR",
        default_value = "weft-control.istio-system.svc:15012"
    )]
    pub control_addr: String,

    /// TLS server name expected in the control plane's certificate.
    #[arg(long, env = "WEFT_CONTROL_SERVER_NAME", default_value = "weft-control")]
    pub control_server_name: String,

    /// PEM file with the mesh's trust bundle (root certificates): it verifies
    /// the control plane and every peer's workload certificate.
    #[arg(
        long,
        env = "WEFT_CA_ROOT_FILE",
        default_value = "/var/run/secrets/weft/trust-bundle.pem"
    )]
    pub ca_root_file: PathBuf,

    /// File holding this node's bootstrap token for the control plane.
    #[arg(
        long,
        env = "WEFT_TOKEN_FILE",
        default_value = "/var/run/secrets/weft/token"
    )]
    pub token_file: PathBuf,

    /// Unix socket on which `weft-cni` reports pod ADD/DEL.
    #[arg(
        long,
        env = "WEFT_CNI_SOCKET",
        default_value = "/var/run/weft/cni.sock"
    )]
    pub cni_socket: PathBuf,

    /// Install `weft-cni` into --cni-bin-dir and chain it into the primary
    /// CNI's network config in --cni-net-dir at start, and chain it again
    /// whenever that config is rewritten without it. `weft-agent
    /// cni-uninstall` removes both; stopping the agent does not (pods must
    /// not start outside the mesh while it restarts).
    #[arg(long, env = "WEFT_CNI_INSTALL")]
    pub cni_install: bool,

    /// The `weft-cni` binary --cni-install copies. Default: the `weft-cni`
    /// next to this executable.
    #[arg(long, env = "WEFT_CNI_BINARY")]
    pub cni_binary: Option<PathBuf>,

    /// The node's CNI plugin binary directory (--cni-install).
    #[arg(long, env = "WEFT_CNI_BIN_DIR", default_value = DEFAULT_CNI_BIN_DIR)]
    pub cni_bin_dir: PathBuf,

    /// The node's CNI network config directory (--cni-install): the
    /// bytewise first .conflist, .conf or .json in it is the one the
    /// container runtime uses, and gets weft-cni chained last.
    #[arg(long, env = "WEFT_CNI_NET_DIR", default_value = DEFAULT_CNI_NET_DIR)]
    pub cni_net_dir: PathBuf,

    /// Directory for the agent's own state (the pods it has seen), so that a
    /// restarted agent re-enrols running pods.
    #[arg(long, env = "WEFT_STATE_DIR", default_value = "/var/run/weft/agent")]
    pub state_dir: PathBuf,

    /// bpffs directory where the eBPF maps and links are pinned. Pins keep
    /// redirection in place while the agent restarts (fail closed).
    #[arg(long, env = "WEFT_BPFFS_DIR", default_value = "/sys/fs/bpf/weft")]
    pub bpffs_dir: PathBuf,

    /// cgroup v2 directory the redirection programs attach to; every pod's
    /// cgroup must be below it. Default: the root of the cgroup2 mount.
    #[arg(long, env = "WEFT_CGROUP")]
    pub cgroup: Option<PathBuf>,

    /// Per-workload TCP health (`weft_tcp_*`, `weftctl top`): a sockops
    /// program on the agent's own cgroup. Off only to measure what it
    /// costs.
    #[arg(long, env = "WEFT_TCP_HEALTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub tcp_health: bool,

    /// How long each pod's connections wait in the mesh
    /// (`weft_mesh_wait_seconds`: capture → accept, → upstream connected,
    /// → first byte back), with a capture timestamp from eBPF. Off only to
    /// measure what it costs.
    #[arg(long, env = "WEFT_MESH_WAITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub mesh_waits: bool,

    /// The agent's own cgroup v2 directory, where the TCP health program
    /// attaches; it must not hold the pods' cgroups. Default: found from
    /// `/proc/self/cgroup` (and, in a cgroup namespace, by looking for this
    /// process under the cgroup2 mount).
    #[arg(long, env = "WEFT_AGENT_CGROUP")]
    pub agent_cgroup: Option<PathBuf>,

    /// Admin API (config dump, effective config). Keep it on localhost.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,

    /// Readiness endpoint (`GET /healthz/ready`).
    #[arg(long, env = "WEFT_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,

    /// Prometheus metrics (`GET /stats/prometheus`), as ztunnel serves them.
    #[arg(long, env = "WEFT_METRICS_ADDR", default_value = "0.0.0.0:15020")]
    pub metrics_addr: SocketAddr,

    /// Record Istio's traffic metrics (`istio_tcp_*`, `istio_request*`).
    /// Off only to measure what they cost; the agent's health is always
    /// reported.
    #[arg(long, env = "WEFT_TRAFFIC_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub traffic_metrics: bool,

    /// How long a pod ADD waits for the control plane to describe the pod
    /// before the pod's start fails.
    #[arg(long, env = "WEFT_WORKLOAD_WAIT", default_value = "30s", value_parser = weft_proto::duration::parse)]
    #[serde(with = "duration_secs")]
    pub workload_wait: Duration,

    /// Requested lifetime of workload certificates.
    #[arg(long, env = "WEFT_CERT_TTL", default_value = "24h", value_parser = weft_proto::duration::parse)]
    #[serde(with = "duration_secs")]
    pub cert_ttl: Duration,

    /// On SIGTERM, how long connections in flight may finish before the
    /// agent exits.
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT", default_value = "5s", value_parser = weft_proto::duration::parse)]
    #[serde(with = "duration_secs")]
    pub drain_timeout: Duration,

    /// How long a client may take over its TLS and HTTP/2 handshake on a
    /// pod's 15008 before its connection is closed.
    #[arg(long, env = "WEFT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = weft_proto::duration::parse)]
    #[serde(with = "duration_secs")]
    pub handshake_timeout: Duration,

    /// How long connecting may take: to a destination's agent (TCP, TLS,
    /// HTTP/2 and the CONNECT's answer), or to an app (Istio's
    /// `connectTimeout`).
    #[arg(long, env = "WEFT_CONNECT_TIMEOUT", default_value = "10s", value_parser = weft_proto::duration::parse)]
    #[serde(with = "duration_secs")]
    pub connect_timeout: Duration,

    /// How long an L4 connection may carry no byte either way, or an HTTP
    /// connection no request, before it is closed (Istio's TCP and HTTP
    /// `idleTimeout`, 1h by default).
    #[arg(long, env = "WEFT_IDLE_TIMEOUT", default_value = "1h", value_parser = weft_proto::duration::parse)]
    #[serde(with = "duration_secs")]
    pub idle_timeout: Duration,

    /// Handshakes one source IP may have in progress on this node's 15008
    /// listeners at once; more are closed at once.
    #[arg(long, env = "WEFT_MAX_HANDSHAKES_PER_SOURCE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_handshakes_per_source: u32,

    /// CA certificates (PEM) trusted when fetching a RequestAuthentication's
    /// `jwksUri` over HTTPS.
    #[arg(
        long,
        env = "WEFT_JWKS_CA_BUNDLE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub jwks_ca_bundle: PathBuf,

    /// How long keys fetched from a `jwksUri` are used before they are
    /// fetched again (Istio's default: 5 minutes). A failed refresh keeps
    /// the last good keys.
    #[arg(long, env = "WEFT_JWKS_REFRESH", default_value = "5m", value_parser = weft_proto::duration::parse)]
    #[serde(with = "duration_secs")]
    pub jwks_refresh: Duration,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "WEFT_LOG_JSON")]
    pub log_json: bool,

    /// Threads that run the proxy. Default: half the CPUs this process may
    /// use, at least one. The agent shares the node with the apps it
    /// serves, and on small nodes fewer threads also mean fewer hand-offs
    /// between them (measured in docs/PERFORMANCE.md).
    #[arg(long, env = "WEFT_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

/// `weft-agent cni-uninstall`: removes what `--cni-install` added (the
/// weft-cni binary, then its entry from every network config) and exits.
/// Run it on the node before deleting the agents; a running agent does not
/// chain weft-cni again once its binary is gone.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "weft-agent cni-uninstall",
    bin_name = "weft-agent cni-uninstall",
    about = "Removes weft-cni from the node's CNI configuration and binary directory"
)]
pub struct CniUninstall {
    /// The node's CNI plugin binary directory.
    #[arg(long, env = "WEFT_CNI_BIN_DIR", default_value = DEFAULT_CNI_BIN_DIR)]
    pub cni_bin_dir: PathBuf,

    /// The node's CNI network config directory.
    #[arg(long, env = "WEFT_CNI_NET_DIR", default_value = DEFAULT_CNI_NET_DIR)]
    pub cni_net_dir: PathBuf,
}

/// The name `weft-agent` takes its uninstall mode under.
pub const CNI_UNINSTALL: &str = "cni-uninstall";
const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
const DEFAULT_CNI_NET_DIR: &str = "/etc/cni/net.d";

impl Config {
    /// The proxy's thread count: `--worker-threads`, else half the CPUs
    /// available to this process (its affinity and cgroup quota), at least 1.
    pub fn worker_threads(&self) -> usize {
        match self.worker_threads {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism()
                .map(|cpus| (cpus.get() / 2).max(1))
                .unwrap_or(1),
        }
    }
}

mod duration_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_install_is_off_unless_asked() {
        use clap::Parser;
        let config = Config::try_parse_from(["weft-agent", "--node-name", "n"]).unwrap();
        assert!(!config.cni_install);
        assert_eq!(config.cni_bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(config.cni_net_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(config.cni_binary, None);
        let config = Config::try_parse_from([
            "weft-agent",
            "--node-name",
            "n",
            "--cni-install",
            "--cni-net-dir",
            "/host/net.d",
        ])
        .unwrap();
        assert!(config.cni_install);
        assert_eq!(config.cni_net_dir, PathBuf::from("/host/net.d"));
        // The uninstall mode reads the same directories, by the same names.
        let args = CniUninstall::try_parse_from([CNI_UNINSTALL, "--cni-bin-dir", "/b"]).unwrap();
        assert_eq!(args.cni_bin_dir, PathBuf::from("/b"));
        assert_eq!(args.cni_net_dir, PathBuf::from("/etc/cni/net.d"));
    }
}
