//! `weft-control`: the bundled control plane (directory or Kubernetes mode).

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use weft_control::{CaSource, Config, Server, config::ConfigSource};

#[derive(Parser)]
#[command(
    name = "weft-control",
    version,
    about = "weft's control plane: config, xDS and CA"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "WEFT_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS and the CA, with config from a directory of
    /// Kubernetes-style YAML or from the Kubernetes API.
    Serve(Box<ServeArgs>),
    /// Check a config directory once: print every error and analysis
    /// finding; exit 1 when there is an error.
    Validate {
        /// The directory of YAML.
        dir: PathBuf,
        /// `text` (one line per problem) or `json`.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
        /// DNS suffix of service hostnames.
        #[arg(long, default_value = "cluster.local")]
        domain_suffix: String,
        /// Istio's root namespace.
        #[arg(long, default_value = "istio-system")]
        root_namespace: String,
    },
    /// Print a node's bootstrap token (creates the secret if missing).
    BootstrapToken {
        /// The control plane's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// The node's name, as in pods' spec.nodeName.
        #[arg(long)]
        node: String,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory of YAML (Namespace, Pod, Service, ...), watched
    /// recursively: directory mode.
    #[arg(long, required_unless_present_any = ["kubernetes", "kubeconfig"], conflicts_with_all = ["kubernetes", "kubeconfig"])]
    config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API server instead: in a pod with its service
    /// account, else as kubectl finds it ($KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubernetes: bool,
    /// Watch the API server of this kubeconfig (implies --kubernetes).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: a service account agents run as, `namespace/name`
    /// (repeatable; default istio-system/weft-agent and
    /// istio-system/ztunnel). Their projected tokens (audience istio-ca)
    /// are checked with a TokenReview.
    #[arg(long = "agent-service-account")]
    agent_service_accounts: Vec<String>,
    /// Kubernetes mode: weft-control's own namespace, where the CA's
    /// Secrets are (`cacerts` for a plugged CA, else `istio-ca-secret`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    namespace: String,
    /// Kubernetes mode: the Lease (in --namespace) that elects the replica
    /// doing cluster-wide writes (the istio-ca-root-cert ConfigMaps).
    #[arg(long, default_value = "weft-control-leader")]
    leader_lease: String,
    /// Kubernetes mode: this replica's name in the Lease (default: the
    /// pod's name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    leader_identity: Option<String>,
    /// Directory for the bootstrap secret, CA files and trust bundle.
    #[arg(long)]
    state_dir: PathBuf,
    /// TLS gRPC address for xDS and the CA.
    #[arg(long, default_value = "0.0.0.0:15012")]
    xds_addr: SocketAddr,
    /// Plain-HTTP address for /ready and /debug/*.
    #[arg(long, default_value = "0.0.0.0:15014")]
    debug_addr: SocketAddr,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Signing certificate (intermediate or root), PEM. Without it a root
    /// is generated into --state-dir.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// Key of --ca-cert, unencrypted PKCS#8 PEM.
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Certificates above --ca-cert up to the root, PEM.
    #[arg(long, requires = "ca_cert")]
    ca_chain: Option<PathBuf>,
    /// Istio's root namespace (mesh-wide policies live there).
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    /// Extra DNS name for the serving certificate (repeatable).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// More roots (PEM) for the trust bundle besides the CA's: during a
    /// root rotation, the root being retired.
    #[arg(long)]
    extra_trust_bundle: Option<PathBuf>,
    /// Istio MeshConfig (YAML, as the `istio` ConfigMap's `mesh` key):
    /// `extensionProviders` for CUSTOM AuthorizationPolicies. Read at
    /// start; the root namespace's `istio` ConfigMap, while it exists,
    /// takes its place (and applies live). Other fields are ignored.
    #[arg(long)]
    mesh_config: Option<PathBuf>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mesh = match &self.mesh_config {
            Some(path) => weft_control::mesh::MeshConfig::load(path)
                .map_err(|e| anyhow::anyhow!("--mesh-config {e}"))?,
            None => Default::default(),
        };
        let ca = match (self.ca_cert, self.ca_key) {
            (Some(cert), Some(key)) => CaSource::Files {
                cert,
                key,
                chain: self.ca_chain,
            },
            _ => CaSource::Generate,
        };
        let source = match self.config_dir {
            Some(dir) => ConfigSource::Directory(dir),
            None => ConfigSource::Kubernetes {
                kubeconfig: self.kubeconfig,
            },
        };
        let defaults = Config::new(PathBuf::new(), self.state_dir);
        let agent_service_accounts = if self.agent_service_accounts.is_empty() {
            defaults.agent_service_accounts.clone()
        } else {
            self.agent_service_accounts
        };
        let mut leader_election = defaults.leader_election.clone();
        leader_election.lease = self.leader_lease;
        if let Some(identity) = self.leader_identity.filter(|i| !i.is_empty()) {
            leader_election.identity = identity;
        }
        Ok(Config {
            source,
            namespace: self.namespace,
            leader_election,
            agent_service_accounts,
            xds_addr: self.xds_addr,
            debug_addr: self.debug_addr,
            trust_domain: self.trust_domain,
            ca,
            server_names: self.server_names,
            root_namespace: self.root_namespace,
            extra_trust_roots: self.extra_trust_bundle,
            mesh: std::sync::Arc::new(mesh),
            ..defaults
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `validate` prints its own report; logs would repeat it.
    let default_level = match cli.command {
        Command::Validate { .. } => "error",
        _ => "info",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colours only on a terminal: logs in files stay greppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }

    match cli.command {
        Command::Validate {
            dir,
            output,
            domain_suffix,
            root_namespace,
        } => {
            let report =
                weft_control::validate::validate_dir(&dir, &domain_suffix, &root_namespace)?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            if report.failed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::BootstrapToken { state_dir, node } => {
            let token = weft_control::bootstrap_token(&state_dir, &node)?;
            // No newline into a file: clients (ztunnel among them) put the
            // file's bytes in a header as they are. One on a terminal.
            print!("{token}");
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                println!();
            }
            Ok(())
        }
        Command::Serve(args) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
            runtime.block_on(serve(args.into_config()?))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut handle = Server::start(config).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
        reason = handle.failed() => anyhow::bail!("weft-control stopped: {reason}"),
    }
    handle.shutdown().await;
    Ok(())
}
