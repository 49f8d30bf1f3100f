//! Starting and stopping the control plane: config source → model → xDS
//! and CA servers, plus the debug server. Every task watches one
//! shutdown token.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, ServerTlsConfig, server::TcpIncoming};
use weft_proto::ca::istio_certificate_service_server::IstioCertificateServiceServer;

use crate::{
    analysis::{self, Finding, Severity},
    auth::{AuthError, AuthLayer, Authenticator, BootstrapSecret, token_review::TokenReviewer},
    ca::{
        CaError, CertificateAuthority, TRUST_BUNDLE_FILE,
        kube_secret::{self, KubeCaError},
        service::CaService,
    },
    config::{Config, ConfigError, ConfigSource},
    debug::{self, DebugState},
    leader::{self, Leadership},
    metrics::Metrics,
    model::{self, Model, ModelConfig},
    source::{
        Snapshot,
        dir::{DirError, DirSource},
        k8s::{self, KubeError, SourceStatus},
    },
    xds::{SyncRegistry, XdsServer},
};

/// How long [`ServerHandle::shutdown`] waits for streams to end before
/// aborting them.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Source(#[from] DirError),
    #[error(transparent)]
    Kubernetes(#[from] KubeError),
    #[error(
        "cannot listen on {addr} for the {what} server: {source}; is another weft-control (or istiod) running?"
    )]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS for the xDS server: {0}")]
    Tls(tonic::transport::Error),
}

/// The control plane.
pub struct Server;

/// A running control plane. Dropping it signals shutdown without waiting;
/// prefer [`ServerHandle::shutdown`].
pub struct ServerHandle {
    xds_addr: SocketAddr,
    debug_addr: SocketAddr,
    trust_bundle: PathBuf,
    model: watch::Receiver<Arc<Model>>,
    syncz: Arc<SyncRegistry>,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
}

impl Server {
    /// Loads state and config, binds both servers and returns once they
    /// accept connections. In directory mode `/ready` is then 200; in
    /// Kubernetes mode it turns 200 (and agents are served) once every
    /// resource has been listed.
    pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
        config.validate()?;
        tracing::info!(
            config = %serde_json::to_string(&config).unwrap_or_default(),
            "starting weft-control"
        );
        let secret = BootstrapSecret::load_or_create(&config.state_dir)?;
        let model_config = ModelConfig {
            cluster_id: config.cluster_id.clone(),
            trust_domain: config.trust_domain.clone(),
            domain_suffix: config.domain_suffix.clone(),
            root_namespace: config.root_namespace.clone(),
            mesh: config.mesh.clone(),
        };

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let ready = Arc::new(AtomicBool::new(false));
        let builder = model::Builder::new(model_config.clone());
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
        let (model_tx, model_rx) = watch::channel(Arc::new(builder.model().clone()));
        let findings = Arc::new(std::sync::Mutex::new(Vec::new()));
        let metrics = Arc::new(Metrics::new());

        // Config source → snapshots → models. Directory mode reads
        // everything before going on; Kubernetes mode serves (unready)
        // while it lists, and builds the first model once synced.
        let (source_status_tx, source_status) = watch::channel(SourceStatus::directory());
        let models = BuildModels {
            snapshots: snapshot_rx.clone(),
            models: model_tx,
            builder,
            config: model_config.clone(),
            findings: Arc::clone(&findings),
            ready: Arc::clone(&ready),
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        };
        let mut kube_client = None;
        let (leadership_tx, leadership) = watch::channel(Leadership::default());
        match &config.source {
            ConfigSource::Directory(dir) => {
                let mut source = DirSource::load_counting(dir, Some(Arc::clone(&metrics)))?;
                snapshot_tx.send_replace(Arc::new(source.snapshot()));
                let watching = source.watch(snapshot_tx, shutdown.clone())?;
                tasks.spawn(async move {
                    watching.await;
                    ("config watcher", Ok(()))
                });
                let models = models.first_model();
                tasks.spawn(models.keep_up());
            }
            ConfigSource::Kubernetes { kubeconfig } => {
                let client = k8s::client(kubeconfig.as_deref()).await?;
                kube_client = Some(client.clone());
                tasks.spawn({
                    let leases = kube::Api::namespaced(client.clone(), &config.namespace);
                    let election = config.leader_election.clone();
                    let shutdown = shutdown.clone();
                    async move {
                        leader::run(leases, election, leadership_tx, shutdown).await;
                        ("leader election", Ok(()))
                    }
                });
                tasks.spawn({
                    let shutdown = shutdown.clone();
                    let root_namespace = config.root_namespace.clone();
                    let metrics = Arc::clone(&metrics);
                    async move {
                        k8s::run(
                            client,
                            root_namespace,
                            snapshot_tx,
                            source_status_tx,
                            metrics,
                            shutdown,
                        )
                        .await;
                        ("Kubernetes source", Ok(()))
                    }
                });
                tasks.spawn(models.when_synced());
            }
        }
        tasks.spawn(analyze_changes(
            snapshot_rx.clone(),
            model_rx.clone(),
            model_config,
            Arc::clone(&findings),
            shutdown.clone(),
        ));

        // xDS and CA, TLS, on one port: bound now, served once the CA is
        // loaded (Kubernetes mode reads its key from the cluster).
        let xds_listener = bind("xDS", config.xds_addr).await?;
        let xds_addr = xds_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "xDS",
                addr: config.xds_addr,
                source,
            })?;
        let syncz = Arc::new(SyncRegistry::default());
        let authenticator = Arc::new(Authenticator {
            bootstrap: secret,
            token_review: kube_client.clone().map(|client| {
                TokenReviewer::new(client, &config.agent_service_accounts, snapshot_rx.clone())
            }),
            ready: Arc::clone(&ready),
        });
        let xds = XdsParts {
            listener: xds_listener,
            server_names: config.all_server_names(),
            authenticator,
            model: model_rx.clone(),
            syncz: Arc::clone(&syncz),
            metrics: Arc::clone(&metrics),
            shutdown: shutdown.clone(),
        };
        let ca_ready = Arc::new(AtomicBool::new(false));
        let kube_client_mode = kube_client.is_some();
        match kube_client {
            None => {
                let ca = Arc::new(CertificateAuthority::load(
                    &config.ca,
                    &config.state_dir,
                    &config.trust_domain,
                    config.extra_trust_roots.as_deref(),
                )?);
                ca_ready.store(true, Ordering::Release);
                tasks.spawn(xds.serve(ca)?);
            }
            Some(client) => {
                let cluster_ca = ClusterCa {
                    client,
                    namespace: config.namespace.clone(),
                    state_dir: config.state_dir.clone(),
                    trust_domain: config.trust_domain.clone(),
                    extra_roots: config.extra_trust_roots.clone(),
                    snapshots: snapshot_rx.clone(),
                    ready: Arc::clone(&ca_ready),
                    leadership: leadership.clone(),
                };
                tasks.spawn(cluster_ca.serve(xds));
            }
        }

        // Debug / monitoring.
        let debug_listener = bind("debug", config.debug_addr).await?;
        let debug_addr = debug_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "debug",
                addr: config.debug_addr,
                source,
            })?;
        let trust_bundle = config.state_dir.join(TRUST_BUNDLE_FILE);
        let state = Arc::new(DebugState {
            ready: Arc::clone(&ready),
            ca_ready,
            config: config.clone(),
            source: source_status,
            snapshot: snapshot_rx,
            model: model_rx.clone(),
            syncz: Arc::clone(&syncz),
            findings,
            leadership: kube_client_mode.then_some(leadership),
            metrics,
        });
        tasks.spawn({
            let state = Arc::clone(&state);
            let stop = shutdown.clone();
            async move {
                debug::serve(debug_listener, state, stop).await;
                ("debug server", Ok(()))
            }
        });

        if state.is_ready() {
            tracing::info!(%xds_addr, %debug_addr, trust_bundle = %trust_bundle.display(), "weft-control ready");
        } else {
            tracing::info!(%xds_addr, %debug_addr, trust_bundle = %trust_bundle.display(), "weft-control started; ready once the CA is loaded from the cluster and the Kubernetes source is synced");
        }
        Ok(ServerHandle {
            xds_addr,
            debug_addr,
            trust_bundle,
            model: model_rx,
            syncz,
            shutdown,
            tasks,
        })
    }
}

/// The xDS/CA gRPC server, bound, waiting for its CA.
struct XdsParts {
    listener: TcpListener,
    server_names: Vec<String>,
    authenticator: Arc<Authenticator>,
    model: watch::Receiver<Arc<Model>>,
    syncz: Arc<SyncRegistry>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

type TaskResult = (&'static str, Result<(), String>);

impl XdsParts {
    /// The server with `ca`'s serving certificate, as a task.
    fn serve(
        self,
        ca: Arc<CertificateAuthority>,
    ) -> Result<impl Future<Output = TaskResult> + Send + 'static, StartError> {
        let issued = ca.server_certificate(&self.server_names)?;
        let tls =
            ServerTlsConfig::new().identity(Identity::from_pem(&issued.chain_pem, &issued.key_pem));
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .tls_config(tls)
            .map_err(StartError::Tls)?
            .layer(AuthLayer::new(self.authenticator))
            .add_service(crate::xds::raw::RawAdsServer::new(XdsServer::new(
                self.model.clone(),
                Arc::clone(&self.syncz),
                Arc::clone(&self.metrics),
                self.shutdown.clone(),
            )))
            .add_service(IstioCertificateServiceServer::new(CaService::new(
                ca,
                self.model,
                self.metrics,
            )));
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let stop = self.shutdown;
        Ok(async move {
            let result = router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
            ("xDS server", result.map_err(|e| e.to_string()))
        })
    }
}

/// Kubernetes mode: the CA's key from the cluster's Secrets (retried
/// with backoff until the API server answers), then the xDS server, and
/// the root published to every namespace.
struct ClusterCa {
    client: kube::Client,
    namespace: String,
    state_dir: PathBuf,
    trust_domain: String,
    extra_roots: Option<PathBuf>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    ready: Arc<AtomicBool>,
    /// Only the leader publishes the root to namespaces.
    leadership: watch::Receiver<Leadership>,
}

const CLUSTER_CA_RETRY_FIRST: Duration = Duration::from_millis(500);
const CLUSTER_CA_RETRY_MAX: Duration = Duration::from_secs(30);

impl ClusterCa {
    async fn serve(self, xds: XdsParts) -> TaskResult {
        let shutdown = xds.shutdown.clone();
        let mut retry = CLUSTER_CA_RETRY_FIRST;
        let ca = loop {
            match self.load().await {
                Ok(ca) => break Arc::new(ca),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = retry.as_millis() as u64, "cannot load the CA from the cluster; agents are not served until it loads");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return ("CA", Ok(())),
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(CLUSTER_CA_RETRY_MAX);
        };
        let bundle = std::fs::read_to_string(self.state_dir.join(TRUST_BUNDLE_FILE))
            .unwrap_or_else(|_| ca.trust_bundle_pem().to_string());
        self.ready.store(true, Ordering::Release);
        let serving = match xds.serve(ca) {
            Ok(serving) => serving,
            Err(error) => return ("xDS server", Err(error.to_string())),
        };
        let publishing = leader::while_leading(self.leadership, shutdown, |stop| {
            kube_secret::publish_root_cert(
                self.client.clone(),
                bundle.clone(),
                self.snapshots.clone(),
                stop,
            )
        });
        tokio::join!(serving, publishing).0
    }

    async fn load(&self) -> Result<CertificateAuthority, KubeCaError> {
        let source = kube_secret::ca_source(
            self.client.clone(),
            &self.namespace,
            &self.state_dir,
            &self.trust_domain,
        )
        .await?;
        Ok(CertificateAuthority::load(
            &source,
            &self.state_dir,
            &self.trust_domain,
            self.extra_roots.as_deref(),
        )?)
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn log_loaded(snapshot: &Snapshot) {
    tracing::info!(
        objects = snapshot.objects.len(),
        file_errors = snapshot.errors.len(),
        "config loaded"
    );
}

/// Snapshots → models: the first one once the source is synced, then one
/// per snapshot that changes what agents get.
struct BuildModels {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    models: watch::Sender<Arc<Model>>,
    builder: model::Builder,
    config: ModelConfig,
    findings: Arc<std::sync::Mutex<Vec<Finding>>>,
    /// Set with the first model: `/ready` is 200 and agents are served.
    ready: Arc<AtomicBool>,
    /// When each model change began, for convergence times.
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl BuildModels {
    /// Builds the first model from the current (synced) snapshot.
    fn first_model(mut self) -> Self {
        let snapshot = self.snapshots.borrow_and_update().clone();
        log_loaded(&snapshot);
        self.builder.update(model::Delta::Full(&snapshot.objects));
        let model = self.builder.model().clone();
        log_findings(&self.findings, &snapshot, &model, &self.config);
        tracing::info!(
            resources = model.resources.len(),
            version = model.version,
            "model built"
        );
        self.models.send_replace(Arc::new(model));
        self.ready.store(true, Ordering::Release);
        self
    }

    /// Waits for the source's first synced snapshot, then as
    /// [`BuildModels::keep_up`].
    async fn when_synced(mut self) -> (&'static str, Result<(), String>) {
        let mut waiting = tokio::time::interval(SYNC_WAIT_LOG);
        waiting.tick().await;
        loop {
            if self.snapshots.borrow_and_update().synced {
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return ("model builder", Ok(())),
                changed = self.snapshots.changed() => if changed.is_err() { return ("model builder", Ok(())) },
                _ = waiting.tick() => tracing::info!("still listing the Kubernetes API; agents wait (see /debug/syncz)"),
            }
        }
        self.first_model().keep_up().await
    }

    /// Rebuilds the model on every new snapshot; publishes only real
    /// changes.
    async fn keep_up(mut self) -> (&'static str, Result<(), String>) {
        let mut applied_seq = self.snapshots.borrow().seq;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                changed = self.snapshots.changed() => if changed.is_err() { break },
            }
            let snapshot = self.snapshots.borrow_and_update().clone();
            let started = std::time::Instant::now();
            let delta = match &snapshot.changes {
                Some(changes) if snapshot.seq == applied_seq + 1 => model::Delta::Changes(changes),
                _ => model::Delta::Full(&snapshot.objects),
            };
            applied_seq = snapshot.seq;
            if self.builder.update(delta) {
                let model = self.builder.model().clone();
                tracing::info!(
                    resources = model.resources.len(),
                    authorizations = model.authorizations.len(),
                    version = model.version,
                    took_ms = started.elapsed().as_millis() as u64,
                    "model updated"
                );
                let previous = self.models.borrow().version.clone();
                self.metrics
                    .model_changed(&previous, &model.version, started);
                self.models.send_replace(Arc::new(model));
            }
        }
        ("model builder", Ok(()))
    }
}

/// How often a control plane waiting for its source says so.
const SYNC_WAIT_LOG: Duration = Duration::from_secs(10);

/// Analysis runs beside the model builder, at most once per
/// [`ANALYSIS_INTERVAL`], so it never delays what agents get.
async fn analyze_changes(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    models: watch::Receiver<Arc<Model>>,
    config: ModelConfig,
    findings: Arc<std::sync::Mutex<Vec<Finding>>>,
    shutdown: CancellationToken,
) -> (&'static str, Result<(), String>) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = snapshots.changed() => if changed.is_err() { break },
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(ANALYSIS_INTERVAL) => {}
        }
        let snapshot = snapshots.borrow_and_update().clone();
        let model = models.borrow().clone();
        let (config, findings) = (config.clone(), Arc::clone(&findings));
        let _ = tokio::task::spawn_blocking(move || {
            log_findings(&findings, &snapshot, &model, &config)
        })
        .await;
    }
    ("analysis", Ok(()))
}

/// How often analysis may run while config keeps changing.
const ANALYSIS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the analysis and logs the findings that are new since the last
/// run (all of them at startup).
fn log_findings(
    current: &std::sync::Mutex<Vec<Finding>>,
    snapshot: &Snapshot,
    model: &Model,
    config: &ModelConfig,
) {
    let mut findings = analysis::analyze(
        &snapshot.objects,
        &config.domain_suffix,
        &config.root_namespace,
    );
    findings.extend(model.findings.iter().cloned());
    findings.sort();
    findings.dedup();
    let mut previous = current.lock().unwrap_or_else(|p| p.into_inner());
    for f in findings.iter().filter(|f| !previous.contains(f)) {
        match f.severity {
            Severity::Error | Severity::Warning => tracing::warn!(
                code = f.code,
                severity = %f.severity,
                object = f.object,
                path = f.path,
                message = f.message,
                "config analysis"
            ),
            Severity::Info => tracing::info!(
                code = f.code,
                object = f.object,
                path = f.path,
                message = f.message,
                "config analysis"
            ),
        }
    }
    *previous = findings;
}

// === impl ServerHandle ===

impl ServerHandle {
    /// Where the xDS/CA TLS server listens.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// Where the debug HTTP server listens.
    pub fn debug_addr(&self) -> SocketAddr {
        self.debug_addr
    }

    /// `<state-dir>/trust-bundle.pem`: the root agents verify against.
    pub fn trust_bundle_path(&self) -> &std::path::Path {
        &self.trust_bundle
    }

    /// Every connected agent's stream (what `/debug/syncz` shows).
    pub fn syncz(&self) -> Arc<SyncRegistry> {
        Arc::clone(&self.syncz)
    }

    /// The current model (tests use it to wait for a reload).
    pub fn model(&self) -> watch::Receiver<Arc<Model>> {
        self.model.clone()
    }

    /// Resolves when a server task ends by itself, which only happens on a
    /// fatal error: returns which one and why.
    pub async fn failed(&mut self) -> String {
        match self.tasks.join_next().await {
            Some(Ok((task, Ok(())))) => format!("{task} stopped"),
            Some(Ok((task, Err(err)))) => format!("{task} failed: {err}"),
            Some(Err(err)) => format!("a task panicked: {err}"),
            None => std::future::pending().await,
        }
    }

    /// Stops accepting, ends xDS streams, and waits for the tasks, up to a
    /// deadline after which they are aborted.
    pub async fn shutdown(mut self) {
        tracing::info!("weft-control shutting down");
        self.shutdown.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, "tasks still running at the shutdown deadline; aborting them");
            self.tasks.abort_all();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
