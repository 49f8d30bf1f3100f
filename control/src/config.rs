//! The control plane's configuration: one struct, one source of truth.
//! `main.rs` fills it from flags; tests fill it directly.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::leader::LeaderElection;

/// Everything `weft-control serve` needs.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Where pods, services and Istio config come from.
    pub source: ConfigSource,
    /// Where the control plane keeps its state: `bootstrap-secret`,
    /// `root-cert.pem`/`root-key.pem` (generated root), `trust-bundle.pem`.
    pub state_dir: PathBuf,
    /// Address of the TLS gRPC server (xDS and CA); port 0 picks one.
    pub xds_addr: SocketAddr,
    /// Address of the plain-HTTP debug/monitoring server; port 0 picks one.
    pub debug_addr: SocketAddr,
    /// SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// Where the CA's signing key comes from.
    pub ca: CaSource,
    /// Extra DNS names for the serving certificate, besides
    /// [`DEFAULT_SERVER_NAMES`].
    pub server_names: Vec<String>,
    /// Cluster id, used in workload uids (`<cluster>//Pod/<ns>/<name>`).
    pub cluster_id: String,
    /// DNS suffix of service hostnames (`<svc>.<ns>.svc.<suffix>`).
    pub domain_suffix: String,
    /// Istio's root namespace: AuthorizationPolicies and
    /// PeerAuthentications there without a selector apply mesh-wide.
    pub root_namespace: String,
    /// Kubernetes mode: the control plane's own namespace, where the CA's
    /// Secrets (`cacerts`, `istio-ca-secret`) are.
    pub namespace: String,
    /// Kubernetes mode: the service accounts (`namespace/name`) agents run
    /// as; a service-account token of any other account is refused.
    pub agent_service_accounts: Vec<String>,
    /// More root certificates (PEM) to put in the trust bundle besides the
    /// CA's own: during a root rotation, the root being retired (or, before
    /// switching, the one being introduced), so that both are trusted.
    pub extra_trust_roots: Option<PathBuf>,
    /// Kubernetes mode: the Lease that elects the one replica doing
    /// cluster-wide writes (the root-cert ConfigMaps).
    pub leader_election: LeaderElection,
    /// MeshConfig (`--mesh-config`): the extension providers CUSTOM
    /// policies name.
    #[serde(skip)]
    pub mesh: std::sync::Arc<crate::mesh::MeshConfig>,
}

/// Where configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// A directory of Kubernetes-style YAML, watched recursively and
    /// hot-reloaded (the demo, tests, and trying weft without a cluster).
    Directory(PathBuf),
    /// The Kubernetes API server: with this kubeconfig, else in-cluster
    /// (the pod's service account) or `$KUBECONFIG`.
    Kubernetes { kubeconfig: Option<PathBuf> },
}

/// The CA's signing certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaSource {
    /// A self-signed root, generated into the state directory on first
    /// start and reused after.
    Generate,
    /// Given files.
    Files {
        /// The signing certificate (an intermediate or a root), PEM.
        cert: PathBuf,
        /// Its key, unencrypted PKCS#8 PEM.
        key: PathBuf,
        /// The certificates above `cert`, up to the root (last), PEM.
        chain: Option<PathBuf>,
    },
}

/// Names always in the serving certificate: agents verify
/// `weft-control`; a stock ztunnel dials `istiod.istio-system.svc` (its
/// default address) and verifies that.
pub const DEFAULT_SERVER_NAMES: [&str; 5] = [
    "weft-control",
    "weft-control.istio-system.svc",
    "istiod",
    "istiod.istio-system",
    "istiod.istio-system.svc",
];

/// Who agents are in Kubernetes mode: weft's agent DaemonSet, and a stock
/// ztunnel's (weft-control stands in for istiod).
pub const DEFAULT_AGENT_SERVICE_ACCOUNTS: [&str; 2] =
    ["istio-system/weft-agent", "istio-system/ztunnel"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--trust-domain `{0}` is not a valid trust domain (lowercase letters, digits, '.', '-', '_')"
    )]
    TrustDomain(String),
    #[error("--server-name `{0}` is not a valid DNS name")]
    ServerName(String),
    #[error("--agent-service-account `{0}` must be `namespace/name`")]
    AgentServiceAccount(String),
}

/// This replica's name in the leader Lease: its pod's name (`POD_NAME`,
/// from the downward API), else the host name, process id and a sequence
/// number (two control planes in one process are two replicas).
pub fn default_identity() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "weft-control".into());
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{host}_{}_{n}", std::process::id())
        })
}

impl Config {
    /// Directory mode, defaults for everything but the two directories;
    /// addresses as in Istio (15012, 15014).
    pub fn new(config_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Config {
            source: ConfigSource::Directory(config_dir.into()),
            state_dir: state_dir.into(),
            xds_addr: ([0, 0, 0, 0], 15012).into(),
            debug_addr: ([0, 0, 0, 0], 15014).into(),
            trust_domain: "cluster.local".into(),
            ca: CaSource::Generate,
            server_names: Vec::new(),
            cluster_id: "Kubernetes".into(),
            domain_suffix: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            namespace: "istio-system".into(),
            agent_service_accounts: DEFAULT_AGENT_SERVICE_ACCOUNTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            extra_trust_roots: None,
            leader_election: LeaderElection::new(default_identity()),
            mesh: Default::default(),
        }
    }

    /// Like [`Config::new`], on loopback ports picked by the kernel: for
    /// in-process tests.
    pub fn for_tests(config_dir: &Path, state_dir: &Path) -> Self {
        Config {
            xds_addr: ([127, 0, 0, 1], 0).into(),
            debug_addr: ([127, 0, 0, 1], 0).into(),
            ..Config::new(config_dir, state_dir)
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let td = &self.trust_domain;
        let td_ok = !td.is_empty()
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !td_ok {
            return Err(ConfigError::TrustDomain(td.clone()));
        }
        for name in &self.server_names {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-*".contains(&b));
            if !ok {
                return Err(ConfigError::ServerName(name.clone()));
            }
        }
        for account in &self.agent_service_accounts {
            let ok = account.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty() && !name.is_empty() && !name.contains('/')
            });
            if !ok {
                return Err(ConfigError::AgentServiceAccount(account.clone()));
            }
        }
        Ok(())
    }

    /// All DNS names of the serving certificate.
    pub fn all_server_names(&self) -> Vec<String> {
        let mut names: Vec<String> = DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect();
        for name in &self.server_names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}
