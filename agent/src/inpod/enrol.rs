//! Enrolment: turning a pod the runtime reported into a pod in the mesh,
//! and back.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    net::TcpListener,
    sync::{Mutex, RwLock, RwLockReadGuard},
};
use tokio_util::sync::CancellationToken;
use weft_ebpf_common::{HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT};

mod views;

use super::{
    discover::{self, NetnsFinder},
    locks::{PodKey, PodLocks},
    persist::PodFiles,
};
use crate::{
    cni::{Command, PodEvent},
    handoff::{self, Kept, Slot},
    identity::IdentityError,
    proxy::{
        PodContext, ProxyContext,
        accept::{self, Listener},
    },
    redirect::{RedirectError, Redirector},
    state::Workload,
    sys::{
        Netns,
        netlink::{self, NetlinkError},
        netns::NetnsError,
        sockopt,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error(
        "pod {pod} is not known to the control plane after {waited:?}; is weft-control running and does its config contain the pod?"
    )]
    UnknownPod { pod: String, waited: Duration },
    #[error("pod {pod} is scheduled on node {scheduled}, but this agent serves node {this}")]
    WrongNode {
        pod: String,
        scheduled: String,
        this: String,
    },
    #[error("pod {pod} has no IP address, neither in the CNI result nor in the workload data")]
    NoAddress { pod: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Routing(#[from] NetlinkError),
    #[error("pod {pod}: cannot open the proxy's {what} listener on {addr}: {source}")]
    Listen {
        pod: String,
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    #[error("this agent has handed the node over to a newer agent; retry")]
    HandedOver,
}

/// The workload with the pod's addresses from the CNI result when the
/// control plane has none yet: on a real cluster the API server learns a
/// pod's IP only after its CNI ADD has returned, and that ADD is waiting
/// for us.
fn with_cni_addresses(workload: Arc<Workload>, event: &PodEvent) -> Arc<Workload> {
    if !workload.ips.is_empty() || event.ips.is_empty() {
        return workload;
    }
    Arc::new(Workload {
        ips: event.ips.clone(),
        ..(*workload).clone()
    })
}

/// A pod in the mesh: its listeners run until `cancel` fires.
pub(super) struct Enrolled {
    context: Arc<PodContext>,
    cancel: CancellationToken,
    /// What each listener is bound to (the admin API's listeners).
    listeners: Vec<(&'static str, SocketAddr)>,
    /// Second descriptors of the listeners, for a successor to take over;
    /// dropped with the accept loops, so that a stopped listener refuses.
    pub(super) kept: Vec<Kept>,
}

/// A pod the runtime told us about.
pub(super) struct KnownPod {
    pub(super) event: PodEvent,
    pub(super) enrolled: Option<Enrolled>,
}

/// Static settings of enrolment.
#[derive(Debug, Clone)]
pub struct EnrolConfig {
    pub node_name: String,
    pub workload_wait: Duration,
}

/// Enrols and releases pods; owns their listeners.
pub struct Enroller {
    config: EnrolConfig,
    proxy: Arc<ProxyContext>,
    redirect: Arc<Redirector>,
    files: PodFiles,
    /// The pods known. Held only to read or change the map, never across
    /// a pod's setup (a certificate from the CA, netlink): that is done
    /// under the pod's own lock in `locks`.
    pub(super) pods: Mutex<HashMap<(String, String), KnownPod>>,
    locks: PodLocks,
    /// Pods whose CNI ADD is in progress: discovery leaves them to it.
    adding: std::sync::Mutex<HashSet<(String, String)>>,
    finder: NetnsFinder,
    /// The last discovery scan and the uids it did not find, so that store
    /// changes elsewhere in the cluster do not rescan the node each time.
    last_scan: std::sync::Mutex<Option<(Instant, HashSet<String>)>>,
    /// Held (read) by every CNI call and reconciliation, taken (write) by
    /// a handover; `true` once a newer agent has the node.
    pub(super) gate: Arc<RwLock<bool>>,
    /// Listeners a previous agent handed over, by pod, until the pod is
    /// enrolled on them.
    pub(super) inherited: std::sync::Mutex<HashMap<(String, String), Vec<Kept>>>,
}

/// How often pods that should be in the mesh but were not found on the
/// node are looked for again.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

pub(super) fn key(event: &PodEvent) -> (String, String) {
    (event.pod_namespace.clone(), event.pod_name.clone())
}

impl Enroller {
    pub fn new(
        config: EnrolConfig,
        proxy: Arc<ProxyContext>,
        redirect: Arc<Redirector>,
        files: PodFiles,
    ) -> Self {
        Self {
            config,
            proxy,
            finder: NetnsFinder::new(redirect.cgroup()),
            redirect,
            files,
            pods: Mutex::new(HashMap::new()),
            locks: PodLocks::default(),
            adding: Default::default(),
            last_scan: Default::default(),
            gate: Default::default(),
            inherited: Default::default(),
        }
    }

    /// Admits a CNI call or a reconciliation, unless a newer agent has the
    /// node.
    async fn admit(&self) -> Result<RwLockReadGuard<'_, bool>, EnrolError> {
        let gate = self.gate.read().await;
        if *gate {
            return Err(EnrolError::HandedOver);
        }
        Ok(gate)
    }

    /// Waits for the control plane to describe the pod.
    async fn await_workload(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Workload>, EnrolError> {
        let store = &self.proxy.store;
        let mut changes = store.subscribe();
        let wait = async {
            loop {
                if let Some(workload) = store.workload_by_pod(namespace, name) {
                    return workload;
                }
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(self.config.workload_wait, wait)
            .await
            .map_err(|_| EnrolError::UnknownPod {
                pod: format!("{namespace}/{name}"),
                waited: self.config.workload_wait,
            })
    }

    /// CNI ADD: returns whether the pod is in the mesh. Only returns once
    /// the pod is fully set up; on error nothing is left half-done.
    pub async fn add(&self, event: PodEvent) -> Result<bool, EnrolError> {
        let _gate = self.admit().await?;
        let _adding = AddInProgress::start(&self.adding, key(&event));
        let workload = self
            .await_workload(&event.pod_namespace, &event.pod_name)
            .await?;
        let pod = format!("{}/{}", event.pod_namespace, event.pod_name);
        if !workload.node.is_empty() && workload.node != self.config.node_name {
            return Err(EnrolError::WrongNode {
                pod,
                scheduled: workload.node.clone(),
                this: self.config.node_name.clone(),
            });
        }
        let pod_key = key(&event);
        let _pod = self.locks.lock(&pod_key).await;
        let previous = self.pods.lock().await.remove(&pod_key);
        if let Some(previous) = previous {
            // A repeated ADD (runtime retry) or a new sandbox: start afresh.
            self.release(&previous);
        }
        let enrolled = if workload.hbone {
            Some(self.enrol(&event, workload).await?)
        } else {
            tracing::info!(%pod, "pod is not in the mesh (namespace not labelled istio.io/dataplane-mode=ambient, or opted out)");
            None
        };
        let in_mesh = enrolled.is_some();
        if let Err(err) = self.files.save(&event) {
            tracing::warn!(%pod, error = %err, "cannot persist pod state; a restarted agent will not re-enrol it");
        }
        self.pods
            .lock()
            .await
            .insert(pod_key, KnownPod { event, enrolled });
        Ok(in_mesh)
    }

    /// CNI CHECK: whether the pod is as it should be.
    pub async fn check(&self, event: &PodEvent) -> Result<bool, EnrolError> {
        let pods = self.pods.lock().await;
        Ok(pods.get(&key(event)).is_some_and(|p| p.enrolled.is_some()))
    }

    /// CNI DEL: idempotent.
    pub async fn remove(&self, event: &PodEvent) -> Result<(), EnrolError> {
        let _gate = self.admit().await?;
        let pod_key = key(event);
        // After an ADD of the same pod in progress.
        let _pod = self.locks.lock(&pod_key).await;
        let removed = self.pods.lock().await.remove(&pod_key);
        if let Some(pod) = removed {
            self.release(&pod);
            tracing::info!(pod = %format!("{}/{}", event.pod_namespace, event.pod_name), "pod removed");
        }
        self.files.remove(&event.pod_namespace, &event.pod_name);
        Ok(())
    }

    fn release(&self, pod: &KnownPod) {
        if let Some(enrolled) = &pod.enrolled {
            self.unenrol(enrolled);
        }
    }

    fn unenrol(&self, enrolled: &Enrolled) {
        let context = &enrolled.context;
        self.proxy.local_pods.remove(context);
        if let Err(err) = self.redirect.unenrol(context.netns_cookie) {
            tracing::warn!(pod = %context.name(), error = %err, "cannot remove the pod from the redirection map");
        }
        for ip in &context.workload.ips {
            if let IpAddr::V4(ip4) = ip {
                self.redirect.stop_inbound(context.netns_cookie, *ip4);
            }
        }
        enrolled.cancel.cancel();
        let identity = enrolled.context.identity();
        if self.proxy.secrets.release(identity) {
            // Cached TLS configs hold the key too.
            self.proxy.tls.forget(identity);
        }
    }

    /// Sets up a pod: routing, certificate, listeners, then capture.
    async fn enrol(
        &self,
        event: &PodEvent,
        workload: Arc<Workload>,
    ) -> Result<Enrolled, EnrolError> {
        let pod = format!("{}/{}", workload.namespace, workload.name);
        let workload = with_cni_addresses(workload, event);
        let ip = *workload
            .ips
            .first()
            .ok_or_else(|| EnrolError::NoAddress { pod: pod.clone() })?;
        let netns = Netns::open(&event.netns)?;
        let netns_cookie = netns.cookie()?;
        netlink::setup_delivery_routing(&netns).await?;
        self.proxy.secrets.acquire(&workload.identity).await?;
        let guard = scopeguard(|| {
            if self.proxy.secrets.release(&workload.identity) {
                self.proxy.tls.forget(&workload.identity);
            }
        });

        // A previous agent's listeners for this pod, if it handed them over.
        let handed = self
            .inherited
            .lock()
            .expect("inherited lock")
            .remove(&key(event))
            .unwrap_or_default();
        let mut handed = handed;
        let mut kept = Vec::new();
        let mut listen = |what: &'static str, addr: SocketAddr, freebind: bool| {
            let slot = Slot::new(what, addr);
            let failed = |source| EnrolError::Listen {
                pod: pod.clone(),
                what,
                addr,
                source,
            };
            let listener = match super::handover::take_slot(&mut handed, &slot) {
                Some(fd) => handoff::tcp_listener(fd, addr).map_err(failed)?,
                None => netns
                    .run(|| sockopt::listener(addr, freebind))?
                    .and_then(TcpListener::from_std)
                    .map_err(failed)?,
            };
            kept.push(handoff::keep(slot, &listener).map_err(failed)?);
            Ok::<_, EnrolError>(listener)
        };
        let outbound4 = listen(
            "outbound",
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), OUTBOUND_PORT),
            false,
        )?;
        let outbound6 = match listen(
            "outbound",
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), OUTBOUND_PORT),
            false,
        ) {
            Ok(listener) => Some(listener),
            Err(err) => {
                tracing::debug!(%pod, error = %err, "no IPv6 outbound listener (IPv6 is off in the pod?)");
                None
            }
        };
        let hbone = listen("HBONE", SocketAddr::new(ip, HBONE_PORT), true)?;
        // Steered connections arrive here whatever their address; loopback
        // keeps the listener itself out of reach from outside the pod.
        let plaintext = listen(
            "inbound plaintext",
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), INBOUND_PLAINTEXT_PORT),
            false,
        )?;

        let listeners: Vec<(&'static str, SocketAddr)> = std::iter::once(("outbound", &outbound4))
            .chain(outbound6.iter().map(|l| ("outbound", l)))
            .chain([("HBONE", &hbone), ("inbound plaintext", &plaintext)])
            .filter_map(|(what, l)| Some((what, l.local_addr().ok()?)))
            .collect();
        let context = Arc::new(PodContext {
            workload: workload.clone(),
            netns,
            netns_cookie,
            waits: Default::default(),
        });
        let cancel = CancellationToken::new();
        let serve = |which: Listener, listener| {
            self.proxy.tasks.spawn_background(
                "pod listener",
                accept::serve(
                    which,
                    listener,
                    context.clone(),
                    self.proxy.clone(),
                    cancel.clone(),
                ),
            )
        };
        for listener in std::iter::once(outbound4).chain(outbound6) {
            serve(Listener::Outbound, listener);
        }
        serve(Listener::Hbone, hbone);

        // Steering and capture last: from here on the pod's connections go
        // to listeners that exist.
        let steer = match ip {
            IpAddr::V4(ip4) => {
                self.redirect
                    .steer_inbound(&context.netns, netns_cookie, ip4, &plaintext)
            }
            IpAddr::V6(_) => Ok(()),
        };
        serve(Listener::InboundPlaintext, plaintext);
        if let Err(err) = steer.and_then(|()| self.redirect.enrol(netns_cookie)) {
            cancel.cancel();
            if let IpAddr::V4(ip4) = ip {
                self.redirect.stop_inbound(netns_cookie, ip4);
            }
            return Err(err.into());
        }
        guard.defuse();
        self.proxy.local_pods.insert(context.clone());
        tracing::info!(%pod, %ip, identity = %workload.identity, netns_cookie, "pod enrolled in the mesh");
        Ok(Enrolled {
            context,
            cancel,
            listeners,
            kept,
        })
    }

    /// Brings back the pods a previous agent knew about (after a restart),
    /// then drops redirection entries of pods that are gone.
    /// `handed`: the pods whose listeners a previous agent handed over
    /// (see [`Self::inherit`]), known even if their file is missing.
    pub async fn restore(&self, handed: Vec<PodEvent>) {
        let mut saved = self.files.load_all();
        for event in handed {
            if !saved.iter().any(|s| key(s) == key(&event)) {
                saved.push(event);
            }
        }
        tracing::info!(pods = saved.len(), "restoring pods from a previous run");
        for event in saved {
            if !std::path::Path::new(&event.netns).exists() || netns_moved(&event) {
                tracing::info!(pod = %format!("{}/{}", event.pod_namespace, event.pod_name), "pod's namespace is gone; forgetting it");
                self.files.remove(&event.pod_namespace, &event.pod_name);
                continue;
            }
            self.pods.lock().await.insert(
                key(&event),
                KnownPod {
                    event,
                    enrolled: None,
                },
            );
        }
        self.reconcile().await;
        self.drop_inherited();
        let (live, live_ips): (HashSet<u64>, Vec<Ipv4Addr>) = {
            let pods = self.pods.lock().await;
            let enrolled: Vec<&Enrolled> =
                pods.values().filter_map(|p| p.enrolled.as_ref()).collect();
            let cookies = enrolled.iter().map(|e| e.context.netns_cookie).collect();
            let ips = enrolled
                .iter()
                .flat_map(|e| e.context.workload.ips.iter())
                .filter_map(|ip| match ip {
                    IpAddr::V4(ip4) => Some(*ip4),
                    IpAddr::V6(_) => None,
                })
                .collect();
            (cookies, ips)
        };
        self.redirect.retain_inbound(&live, &live_ips);
        match self.redirect.retain_enrolled(&live) {
            Ok(0) => {}
            Ok(stale) => tracing::info!(stale, "removed redirection entries of pods that are gone"),
            Err(err) => tracing::warn!(error = %err, "cannot clean the redirection map"),
        }
    }

    /// Enrols known pods that should be in the mesh and aren't, and
    /// releases those that shouldn't be any more (e.g. a namespace label
    /// changed). Each pod is worked on under its own lock, so a CNI call
    /// for another pod never waits for this.
    pub async fn reconcile(&self) {
        let Ok(_gate) = self.admit().await else {
            return;
        };
        enum Step {
            Enrol(Arc<Workload>),
            Leave,
            Forget,
        }
        let steps: Vec<(PodKey, Step)> = {
            let pods = self.pods.lock().await;
            pods.iter()
                .filter_map(|(pod_key, known)| {
                    let workload = self.proxy.store.workload_by_pod(&pod_key.0, &pod_key.1);
                    let discovered = known.event.netns_inode.is_some();
                    let step = match (workload, &known.enrolled) {
                        // A pod the runtime told us about leaves with its
                        // CNI DEL; one we found ourselves leaves when the
                        // API deletes it.
                        (None, _) => discovered.then_some(Step::Forget)?,
                        // Found through a process that is gone: look again.
                        (Some(w), None) if w.hbone && netns_moved(&known.event) => Step::Forget,
                        (Some(w), None) if w.hbone => Step::Enrol(w),
                        (Some(w), Some(_)) if !w.hbone => Step::Leave,
                        _ => return None,
                    };
                    Some((pod_key.clone(), step))
                })
                .collect()
        };
        for (pod_key, step) in steps {
            let _pod = self.locks.lock(&pod_key).await;
            let pod = format!("{}/{}", pod_key.0, pod_key.1);
            match step {
                Step::Enrol(workload) => {
                    // Still known and not enrolled: a CNI call may have
                    // come first.
                    let event = match self.pods.lock().await.get(&pod_key) {
                        Some(known) if known.enrolled.is_none() => known.event.clone(),
                        _ => continue,
                    };
                    match self.enrol(&event, workload).await {
                        Ok(enrolled) => {
                            let mut pods = self.pods.lock().await;
                            match pods.get_mut(&pod_key) {
                                Some(known) if known.enrolled.is_none() => {
                                    known.enrolled = Some(enrolled)
                                }
                                _ => self.unenrol(&enrolled),
                            }
                        }
                        Err(err) => {
                            tracing::warn!(%pod, error = %err, "enrolment failed; will retry on the next change")
                        }
                    }
                }
                Step::Leave => {
                    let mut pods = self.pods.lock().await;
                    if let Some(enrolled) = pods.get_mut(&pod_key).and_then(|k| k.enrolled.take()) {
                        self.unenrol(&enrolled);
                        tracing::info!(%pod, "pod left the mesh");
                    }
                }
                Step::Forget => {
                    let removed = self.pods.lock().await.remove(&pod_key);
                    if let Some(known) = removed {
                        self.release(&known);
                        self.files.remove(&pod_key.0, &pod_key.1);
                        tracing::info!(%pod, "forgot a pod found on the node (deleted, or its namespace is gone)");
                    }
                }
            }
        }
        self.discover().await;
    }

    /// Enrols the pods of this node that should be in the mesh but that no
    /// CNI call told us about (they ran before weft was installed): finds
    /// each one's network namespace on the node by its IP.
    async fn discover(&self) {
        let adding = self.adding.lock().expect("adding lock").clone();
        let missing: Vec<Arc<Workload>> = {
            let pods = self.pods.lock().await;
            self.proxy
                .store
                .workloads_on_node(&self.config.node_name)
                .into_iter()
                .filter(|w| w.hbone && !w.ips.is_empty())
                .filter(|w| {
                    let pod_key = (w.namespace.clone(), w.name.clone());
                    !pods.contains_key(&pod_key) && !adding.contains(&pod_key)
                })
                .collect()
        };
        let due = {
            let last = self.last_scan.lock().expect("scan lock");
            match &*last {
                None => true,
                Some((at, not_found)) => {
                    at.elapsed() >= DISCOVERY_RETRY
                        || missing.iter().any(|w| !not_found.contains(&w.uid))
                }
            }
        };
        if missing.is_empty() || !due {
            return;
        }
        // Pods already known need not be entered again.
        let netns_paths: Vec<String> = {
            let pods = self.pods.lock().await;
            pods.values().map(|p| p.event.netns.clone()).collect()
        };
        let finder = self.finder.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let known: HashSet<u64> = netns_paths
                .iter()
                .filter_map(|path| discover::inode(std::path::Path::new(path)))
                .collect();
            finder.scan(&known)
        });
        let scan = match scan.await {
            Ok(scan) => scan,
            Err(err) => {
                tracing::warn!(error = %err, "looking for pods' network namespaces failed");
                return;
            }
        };
        let mut not_found = HashSet::new();
        for workload in missing {
            let pod = format!("{}/{}", workload.namespace, workload.name);
            let Some(found) = scan.find(&workload.ips) else {
                tracing::debug!(%pod, namespaces = scan.len(), "pod not found on this node yet; its CNI ADD or a later look will find it");
                not_found.insert(workload.uid.clone());
                continue;
            };
            let pod_key = (workload.namespace.clone(), workload.name.clone());
            let _pod = self.locks.lock(&pod_key).await;
            // A CNI ADD may have come meanwhile.
            let adding = self.adding.lock().expect("adding lock").contains(&pod_key);
            if adding || self.pods.lock().await.contains_key(&pod_key) {
                continue;
            }
            let event = PodEvent {
                command: Command::Add,
                container_id: String::new(),
                netns: found.path.to_string_lossy().into_owned(),
                pod_namespace: workload.namespace.clone(),
                pod_name: workload.name.clone(),
                pod_uid: workload.uid.clone(),
                ips: workload.ips.clone(),
                netns_inode: Some(found.inode),
            };
            match self.enrol(&event, workload).await {
                Ok(enrolled) => {
                    tracing::info!(%pod, netns = %event.netns, "enrolled a pod that was running before the agent heard of it");
                    if let Err(err) = self.files.save(&event) {
                        tracing::warn!(%pod, error = %err, "cannot persist pod state; a restarted agent will look for it again");
                    }
                    self.pods.lock().await.insert(
                        pod_key,
                        KnownPod {
                            event,
                            enrolled: Some(enrolled),
                        },
                    );
                }
                Err(err) => {
                    tracing::warn!(%pod, error = %err, "enrolling a pod found on the node failed; will retry");
                    not_found.insert(event.pod_uid);
                }
            }
        }
        *self.last_scan.lock().expect("scan lock") = Some((Instant::now(), not_found));
    }

    /// Stops every pod's listeners (shutdown); connections in flight go on.
    /// Capture stays pinned, so new connections are refused meanwhile.
    pub async fn stop_listeners(&self) {
        for known in self.pods.lock().await.values_mut() {
            if let Some(enrolled) = &mut known.enrolled {
                enrolled.cancel.cancel();
                enrolled.kept.clear();
            }
        }
    }

    /// The agent's tasks (CNI calls are units of its work).
    pub fn tasks(&self) -> &crate::lifecycle::Tasks {
        &self.proxy.tasks
    }

    /// Reconciles on every change of the workload data, until the process
    /// ends.
    /// Pods not found on the node are looked for again every
    /// [`DISCOVERY_RETRY`].
    pub async fn run_reconciler(self: Arc<Self>) {
        let mut changes = self.proxy.store.subscribe();
        let mut retry = tokio::time::interval(DISCOVERY_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *self.gate.read().await {
                return;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = retry.tick() => {}
            }
            self.reconcile().await;
        }
    }
}

/// Whether a pod found on the node (not from a CNI call) no longer has its
/// namespace at the saved path.
fn netns_moved(event: &PodEvent) -> bool {
    event
        .netns_inode
        .is_some_and(|ino| discover::inode(std::path::Path::new(&event.netns)) != Some(ino))
}

/// Marks a pod's CNI ADD in progress until dropped.
struct AddInProgress<'a> {
    set: &'a std::sync::Mutex<HashSet<(String, String)>>,
    key: (String, String),
}

impl<'a> AddInProgress<'a> {
    fn start(set: &'a std::sync::Mutex<HashSet<(String, String)>>, key: (String, String)) -> Self {
        set.lock().expect("adding lock").insert(key.clone());
        Self { set, key }
    }
}

impl Drop for AddInProgress<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("adding lock").remove(&self.key);
    }
}

/// Runs `f` on drop unless defused: undoes a half-done enrolment.
struct ScopeGuard<F: FnOnce()>(Option<F>);

fn scopeguard<F: FnOnce()>(f: F) -> ScopeGuard<F> {
    ScopeGuard(Some(f))
}

impl<F: FnOnce()> ScopeGuard<F> {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}
