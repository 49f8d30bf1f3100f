//! Wires the agent together: what starts, in which order, and when it is
//! ready.

use std::sync::{Arc, atomic::Ordering};

use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    admin::{self, AdminState, Readiness},
    cni_install::{self, CniInstallError},
    control::{ControlClient, ControlError},
    handoff::{self, Inherited, Kept, Slot},
    identity::{IdentityError, SecretManager, TrustBundle},
    inpod::{self, Enroller, persist::PodFiles, server::CniServer},
    l7::{L7, L7Config},
    lifecycle::Tasks,
    metrics::Metrics,
    proxy::{ProxyContext, pool::Pool},
    redirect::{RedirectError, Redirector, loader::RedirectConfig},
    state::WorkloadStore,
    sys::{self, Netns},
    xds::XdsClient,
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    CniInstall(#[from] CniInstallError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AppError {
    let what = what.into();
    move |source| AppError::Io { what, source }
}

/// The agent.
pub struct App;

/// A started agent. [`Running::stop`] winds it down as SIGTERM does, and
/// returns once nothing of it runs any more; tests start and stop agents
/// in process with it.
pub struct Running {
    tasks: Tasks,
    enroller: Arc<Enroller>,
    tracer: Arc<crate::trace::Tracer>,
    drain: CancellationToken,
    stop_handoff: CancellationToken,
    stop_cni_install: CancellationToken,
    stop_admin: CancellationToken,
    drain_timeout: std::time::Duration,
}

impl App {
    /// Runs the agent until SIGTERM/SIGINT. Fatal set-up problems (no root,
    /// no bpffs, unreadable credentials) are returned at once. `logging`
    /// is what the admin API reads and changes of the log (`/logging`,
    /// `/logs`).
    pub async fn run(config: Config, logging: crate::log_sink::Logging) -> Result<(), AppError> {
        let running = Self::start(config, logging).await?;
        shutdown_signal().await;
        running.stop().await;
        tracing::info!(
            "shut down; redirection stays pinned, so enrolled pods fail closed until the agent is back"
        );
        Ok(())
    }

    /// Starts the agent: its listeners are open when this returns, and
    /// it gets ready in the background (workload data, restored pods).
    pub async fn start(
        config: Config,
        logging: crate::log_sink::Logging,
    ) -> Result<Running, AppError> {
        Netns::init_home();
        tracing::info!(
            config = %serde_json::to_string(&config).unwrap_or_default(),
            worker_threads = config.worker_threads(),
            "starting weft-agent"
        );
        let tasks = Tasks::default();

        let readiness = Arc::new(Readiness::default());
        let metrics = Arc::new(Metrics::new(config.traffic_metrics, config.mesh_waits));
        let store = Arc::new(WorkloadStore::default());
        let admin_state = Arc::new(AdminState {
            config: config.clone(),
            readiness: readiness.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            secrets: tokio::sync::OnceCell::new(),
            enroller: tokio::sync::OnceCell::new(),
            l7: tokio::sync::OnceCell::new(),
            xds_connected: tokio::sync::OnceCell::new(),
            redirector: tokio::sync::OnceCell::new(),
            spans: tokio::sync::OnceCell::new(),
            logging,
            profiler: crate::profile::Profiler::new(&config, store.clone()),
            tcp_health: tokio::sync::OnceCell::new(),
        });
        // An agent already running on this node (an upgrade) hands its
        // listeners over once this one has its workload data; until then
        // it serves them, the admin endpoints included.
        let predecessor = handoff::Predecessor::find(&config.state_dir);
        let stop_admin = CancellationToken::new();
        let mut agent_listeners = Vec::new();
        if predecessor.is_some() {
            tracing::info!(
                "another agent serves this node; taking over from it once the workload data is in"
            );
        } else {
            agent_listeners = serve_admin(
                &config,
                &admin_state,
                &mut Inherited::default(),
                &stop_admin,
                &tasks,
            )
            .await?;
        }

        let redirector = Arc::new(Redirector::load(&RedirectConfig {
            bpffs_dir: config.bpffs_dir.clone(),
            cgroup: config.cgroup.clone(),
            capture_times: config.mesh_waits,
        })?);
        let _ = admin_state.redirector.set(redirector.clone());
        if config.tcp_health {
            let tcp_health = crate::tcp_health::TcpHealth::start(
                &config.bpffs_dir,
                config.agent_cgroup.as_deref(),
                redirector.cgroup(),
            );
            let _ = admin_state.tcp_health.set(Arc::new(tcp_health));
        }
        // Kubelet probes come from the node's own addresses; as in Istio,
        // they reach apps directly.
        let host_ips = sys::local_ipv4_addresses().map_err(io("listing the node's addresses"))?;
        redirector.set_host_sources(&host_ips)?;
        tracing::info!(addresses = ?host_ips, "node addresses exempt from inbound steering");
        readiness.redirection.store(true, Ordering::Release);

        let trust = Arc::new(TrustBundle::load(&config.ca_root_file)?);
        let control = ControlClient::new(&config, &trust.current().pem)?;
        let secrets = Arc::new(SecretManager::new(control.clone(), config.cert_ttl));
        tasks.spawn_background("certificate renewals", secrets.clone().run_renewals());
        let _ = admin_state.secrets.set(secrets.clone());
        tasks.spawn_background(
            "trust bundle watch",
            trust.clone().watch(BUNDLE_CHECK_INTERVAL),
        );
        tasks.spawn_background(
            "trust bundle follower",
            follow_trust_bundle(trust.clone(), control.clone(), secrets.clone()),
        );

        let l7_config = Arc::new(L7Config::default());
        let _ = admin_state.l7.set(l7_config.clone());
        let tracer = Arc::new(crate::trace::Tracer::new(store.clone()));
        let _ = admin_state.spans.set(tracer.stats().clone());
        crate::access_log::global().export_with(store.clone(), &config.node_name);
        let xds = XdsClient::new(
            control,
            config.node_name.clone(),
            store.clone(),
            l7_config.clone(),
            tracer.clone(),
        );
        let mut synced = xds.synced();
        let _ = admin_state.xds_connected.set(xds.connected());
        tasks.spawn_background("xDS client", xds.run());

        let drain = CancellationToken::new();
        let pool = Arc::new(Pool::default());
        tasks.spawn_background("HBONE pool sweeper", pool.clone().run_sweeper());
        let l7 = L7::new(l7_config);
        tasks.spawn_background("L7 cluster and upstream sweeper", l7.run_sweeper());
        let proxy = Arc::new_cyclic(|me| ProxyContext {
            me: me.clone(),
            store: store.clone(),
            secrets,
            trust,
            redirection: redirector.clone(),
            pool: pool.clone(),
            tls: Default::default(),
            local_pods: Default::default(),
            metrics: metrics.clone(),
            l7,
            ext_authz: Default::default(),
            tracer: tracer.clone(),
            limits: crate::proxy::limits::Limits {
                handshake_timeout: config.handshake_timeout,
                connect_timeout: config.connect_timeout,
                idle_timeout: config.idle_timeout,
                max_handshakes_per_source: config.max_handshakes_per_source,
            },
            handshakes: Default::default(),
            open: Default::default(),
            drain: drain.clone(),
            tasks: tasks.clone(),
            authn: crate::authn::Authn::new(crate::authn::FetchConfig {
                ca_bundle: config.jwks_ca_bundle.clone(),
                refresh: config.jwks_refresh,
                ..Default::default()
            }),
        });
        // Open connections that a policy change denies are closed.
        tasks.spawn_background(
            "policy revalidation",
            crate::proxy::open::revalidate(proxy.clone()),
        );
        let files = PodFiles::new(&config.state_dir).map_err(io(format!(
            "state directory {}",
            config.state_dir.display()
        )))?;
        let enroller = Arc::new(Enroller::new(
            inpod::enrol_config(&config),
            proxy,
            redirector,
            files,
        ));
        let _ = admin_state.enroller.set(enroller.clone());

        let mut inherited = Inherited::default();
        if let Some(predecessor) = &predecessor {
            let _ = synced.wait_for(|synced| *synced).await;
            match predecessor.take_over().await {
                Ok(handed) => inherited = handed,
                Err(err) => {
                    tracing::warn!(error = %err, "the running agent did not hand its listeners over; opening new ones")
                }
            }
            agent_listeners =
                serve_admin(&config, &admin_state, &mut inherited, &stop_admin, &tasks).await?;
        }
        let handed_pods = enroller.inherit(inherited.take_pods());

        let cni_slot = Slot::new("cni", config.cni_socket.display());
        let cni_what = || format!("CNI socket {}", config.cni_socket.display());
        let cni = match inherited.take_agent(&cni_slot) {
            Some(fd) => handoff::unix_listener(fd),
            None => inpod::server::bind(&config.cni_socket),
        }
        .map_err(io(cni_what()))?;
        agent_listeners.push(handoff::keep(cni_slot, &cni).map_err(io(cni_what()))?);
        let cni = CniServer::start(cni, enroller.clone()).map_err(io(cni_what()))?;
        readiness.cni_listening.store(true, Ordering::Release);
        // Chained only once the socket accepts: from then on every pod ADD
        // on the node calls it.
        let stop_cni_install = tokio_util::sync::CancellationToken::new();
        if config.cni_install {
            let readiness = readiness.clone();
            let on_state = move |chained| readiness.cni_chained.store(chained, Ordering::Release);
            tasks.spawn_background(
                "CNI install",
                cni_install::start(&config, on_state, stop_cni_install.clone())?,
            );
        } else {
            readiness.cni_chained.store(true, Ordering::Release);
        }

        let stop_handoff = CancellationToken::new();
        let handover = handoff::Handover {
            enroller: enroller.clone(),
            agent_listeners,
            cni,
            stop_admin: stop_admin.clone(),
            drain: drain.clone(),
            metrics: metrics.clone(),
        };
        let startup = {
            let (readiness, enroller, tasks) = (readiness.clone(), enroller.clone(), tasks.clone());
            let (state_dir, stop_handoff) = (config.state_dir.clone(), stop_handoff.clone());
            async move {
                let _ = synced.wait_for(|synced| *synced).await;
                readiness.workloads_synced.store(true, Ordering::Release);
                enroller.restore(handed_pods).await;
                readiness.pods_restored.store(true, Ordering::Release);
                tracing::info!("weft-agent ready");
                // What start-up freed goes back to the kernel.
                tasks.spawn_background("heap releaser", sys::heap::run_releaser());
                if let Some(predecessor) = predecessor {
                    match predecessor.serving().await {
                        Ok(open_connections) => tracing::info!(
                            open_connections,
                            "took this node over; the previous agent has stopped accepting and finishes the connections it holds"
                        ),
                        Err(err) => {
                            tracing::warn!(error = %err, "the previous agent did not confirm the handover")
                        }
                    }
                }
                // Ready: a newer agent may take over from this one.
                tasks.spawn_background("handoff", async move {
                    handoff::serve(state_dir, handover, stop_handoff).await;
                });
                enroller.run_reconciler().await;
            }
        };
        tasks.spawn_background("startup and reconciliation", startup);
        Ok(Running {
            tasks,
            enroller,
            tracer,
            drain,
            stop_handoff,
            stop_cni_install,
            stop_admin,
            drain_timeout: config.drain_timeout,
        })
    }
}

/// How long a stopping agent waits for the collectors to take what is
/// queued for them.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Running {
    /// Winds the agent down: no handover or CNI install any more, every
    /// connection told to finish ([`ProxyContext::drain`]) and waited for
    /// up to `--drain-timeout`, the spans and access-log records still
    /// queued for collectors sent (for up to [`FLUSH_TIMEOUT`]), then the
    /// admin endpoints and every background loop stopped. weft-cni stays
    /// chained and the redirection pinned: pods wait for the next agent
    /// (fail closed).
    pub async fn stop(self) {
        self.stop_handoff.cancel();
        self.stop_cni_install.cancel();
        self.drain.cancel();
        self.enroller.stop_listeners().await;
        let deadline = self.drain_timeout;
        let active = self.tasks.work_in_progress();
        tracing::info!(active, ?deadline, "draining connections");
        let left = self.tasks.drain_work(deadline).await;
        if left > 0 {
            tracing::warn!(
                left,
                "drain deadline passed; closing the remaining connections"
            );
        }
        tokio::join!(
            self.tracer.flush(FLUSH_TIMEOUT),
            crate::access_log::global().flush_records(FLUSH_TIMEOUT),
        );
        self.stop_admin.cancel();
        self.tasks.stop().await;
    }
}

/// Serves the readiness, metrics and admin endpoints, on the listeners a
/// previous agent handed over or on new ones; returns second descriptors of
/// them, for a successor.
async fn serve_admin(
    config: &Config,
    state: &Arc<AdminState>,
    inherited: &mut Inherited,
    stop: &CancellationToken,
    tasks: &Tasks,
) -> Result<Vec<Kept>, AppError> {
    let endpoints = [
        (
            "readiness",
            config.readiness_addr,
            admin::Endpoints::Readiness,
        ),
        ("admin", config.admin_addr, admin::Endpoints::Admin),
        ("metrics", config.metrics_addr, admin::Endpoints::Metrics),
    ];
    let mut kept = Vec::new();
    for (role, addr, endpoints) in endpoints {
        let slot = Slot::new(role, addr);
        let what = format!("{role} endpoint");
        let listener = match inherited.take_agent(&slot) {
            Some(fd) => handoff::tcp_listener(fd, addr).map_err(io(&what))?,
            None => admin::bind(addr).await.map_err(io(&what))?,
        };
        kept.push(handoff::keep(slot, &listener).map_err(io(&what))?);
        tasks.spawn_background(
            "admin server",
            admin::serve(listener, state.clone(), endpoints, stop.clone()),
        );
    }
    Ok(kept)
}

/// How often the trust bundle file is checked for a new root.
const BUNDLE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// On a new trust bundle: verify the control plane with it, and re-issue
/// workload certificates so they chain to the CA's current root. Peers
/// trust both roots while the bundle holds both, so nothing is dropped.
async fn follow_trust_bundle(
    trust: Arc<TrustBundle>,
    control: ControlClient,
    secrets: Arc<SecretManager>,
) {
    let mut changes = trust.subscribe();
    while changes.changed().await.is_ok() {
        if let Err(err) = control.set_trust_bundle(&trust.current().pem) {
            tracing::warn!(error = %err, "cannot use the new trust bundle for the control plane");
        }
        secrets.refresh_all().await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
