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
    auth::{AuthError, BootstrapSecret},
    ca::{CaError, CertificateAuthority, TRUST_BUNDLE_FILE, service::CaService},
    config::{Config, ConfigError, ConfigSource},
    debug::{self, DebugState},
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
        let secret = Arc::new(BootstrapSecret::load_or_create(&config.state_dir)?);
        let ca = Arc::new(CertificateAuthority::load(
            &config.ca,
            &config.state_dir,
            &config.trust_domain,
            config.extra_trust_roots.as_deref(),
        )?);
        let model_config = ModelConfig {
            cluster_id: config.cluster_id.clone(),
            trust_domain: config.trust_domain.clone(),
            domain_suffix: config.domain_suffix.clone(),
            root_namespace: config.root_namespace.clone(),
        };

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let ready = Arc::new(AtomicBool::new(false));
        let builder = model::Builder::new(model_config.clone());
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
        let (model_tx, model_rx) = watch::channel(Arc::new(builder.model().clone()));
        let findings = Arc::new(std::sync::Mutex::new(Vec::new()));

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
            shutdown: shutdown.clone(),
        };
        match &config.source {
            ConfigSource::Directory(dir) => {
                let mut source = DirSource::load(dir)?;
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
                tasks.spawn({
                    let shutdown = shutdown.clone();
                    async move {
                        k8s::run(client, snapshot_tx, source_status_tx, shutdown).await;
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

        // xDS and CA, TLS, on one port.
        let issued = ca.server_certificate(&config.all_server_names())?;
        let tls =
            ServerTlsConfig::new().identity(Identity::from_pem(&issued.chain_pem, &issued.key_pem));
        let xds_listener = bind("xDS", config.xds_addr).await?;
        let xds_addr = xds_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "xDS",
                addr: config.xds_addr,
                source,
            })?;
        let syncz = Arc::new(SyncRegistry::default());
        let authenticate = {
            let secret = Arc::clone(&secret);
            let ready = Arc::clone(&ready);
            move |request| {
                if !ready.load(Ordering::Acquire) {
                    return Err(tonic::Status::unavailable(
                        "weft-control has not finished listing its config source (see /debug/syncz); retry",
                    ));
                }
                secret.authenticate(request)
            }
        };
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .tls_config(tls)
            .map_err(StartError::Tls)?
            .add_service(tonic::service::interceptor::InterceptedService::new(
                crate::xds::raw::RawAdsServer::new(XdsServer::new(
                    model_rx.clone(),
                    Arc::clone(&syncz),
                    shutdown.clone(),
                )),
                authenticate.clone(),
            ))
            .add_service(IstioCertificateServiceServer::with_interceptor(
                CaService::new(Arc::clone(&ca), model_rx.clone()),
                authenticate,
            ));
        let incoming = TcpIncoming::from(xds_listener).with_nodelay(Some(true));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let result = router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
            ("xDS server", result.map_err(|e| e.to_string()))
        });

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
            config,
            source: source_status,
            snapshot: snapshot_rx,
            model: model_rx.clone(),
            syncz: Arc::clone(&syncz),
            findings,
        });
        tasks.spawn({
            let state = Arc::clone(&state);
            let stop = shutdown.clone();
            async move {
                debug::serve(debug_listener, state, stop).await;
                ("debug server", Ok(()))
            }
        });

        if ready.load(Ordering::Acquire) {
            tracing::info!(%xds_addr, %debug_addr, trust_bundle = %trust_bundle.display(), "weft-control ready");
        } else {
            tracing::info!(%xds_addr, %debug_addr, trust_bundle = %trust_bundle.display(), "weft-control serving; ready once the Kubernetes source is synced");
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
