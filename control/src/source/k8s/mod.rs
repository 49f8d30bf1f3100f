//! Kubernetes mode: every kind weft reads, watched on the API server with
//! kube-runtime's watcher (list, then watch from the list's
//! resourceVersion; relist on `410 Gone`; retry with backoff), decoded
//! and validated exactly as directory mode decodes files, merged into one
//! [`Snapshot`] stream.
//!
//! One task per resource ([`resources::watch`]) reports to one merge loop
//! ([`run`]), which owns the [`store::Store`]. The source is *synced* once
//! every resource has been listed once (or found not served, for a CRD
//! that is not installed); no snapshot is published before, so agents
//! never see a half-listed cluster. After that, reports are gathered for
//! a few milliseconds and published as one snapshot with its changes.

mod resources;
mod store;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use resources::Report;
pub use resources::WATCHED;
use store::Store;

use super::Snapshot;

/// Quiet time after a report before publishing: a rollout is a burst.
const GATHER_QUIET: Duration = Duration::from_millis(20);
/// A burst that never quiets down is still published after this long.
const GATHER_MAX: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes credentials: not in a pod (no service-account token) and no usable $KUBECONFIG or ~/.kube/config ({0}); pass --kubeconfig"
    )]
    Infer(kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(kube::Error),
}

/// A client for the API server: from `kubeconfig`, else in-cluster (the
/// pod's service account) or `$KUBECONFIG`, as kubectl finds it.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(KubeError::Infer)?,
    };
    kube::Client::try_from(config).map_err(KubeError::Client)
}

/// Where one watched resource stands, for `/debug/syncz` and `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceStatus {
    /// `pods`, `virtualservices.networking.istio.io`.
    pub resource: String,
    /// The API version watched (the first one served), when known.
    pub version: Option<String>,
    /// Listed once at least (or known not served).
    pub synced: bool,
    /// The API server serves none of its versions (CRD not installed).
    pub absent: bool,
    /// Why the watch is failing right now, if it is.
    pub error: Option<String>,
    /// Relists so far (the first list included).
    pub lists: u64,
}

/// The whole source's status.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// `kubernetes` or `directory`.
    pub mode: &'static str,
    /// Every resource listed once: agents get config.
    pub synced: bool,
    /// Objects held (good or rejected); Kubernetes mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceStatus>,
}

impl SourceStatus {
    /// Directory mode: synced from the first read on.
    pub fn directory() -> Self {
        SourceStatus {
            mode: "directory",
            synced: true,
            objects: None,
            resources: Vec::new(),
        }
    }

    fn kubernetes() -> Self {
        SourceStatus {
            mode: "kubernetes",
            synced: false,
            objects: Some(0),
            resources: WATCHED
                .iter()
                .map(|w| ResourceStatus {
                    resource: w.name(),
                    version: None,
                    synced: false,
                    absent: false,
                    error: None,
                    lists: 0,
                })
                .collect(),
        }
    }
}

/// Watches every resource in [`WATCHED`] and publishes snapshots into
/// `snapshots` (the first once synced) and the status into `status`,
/// until `shutdown`. Object changes are counted in `metrics`.
pub async fn run(
    client: kube::Client,
    root_namespace: String,
    snapshots: watch::Sender<Arc<Snapshot>>,
    status: watch::Sender<SourceStatus>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let (reports_tx, mut reports) = mpsc::channel(1024);
    let mut watches = tokio::task::JoinSet::new();
    for resource in 0..WATCHED.len() {
        watches.spawn(resources::watch(
            client.clone(),
            resource,
            root_namespace.clone(),
            reports_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(reports_tx);
    status.send_replace(SourceStatus::kubernetes());
    let mut store = Store::new(WATCHED.len()).counting(metrics);
    let mut synced = false;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            report = reports.recv() => match report {
                Some(report) => report,
                None => break,
            },
        };
        let mut gathered = vec![first];
        // Before the first sync there is nothing to publish: take reports
        // as they come. After, gather a burst into one snapshot.
        if synced {
            gather(&mut reports, &mut gathered).await;
        } else {
            while let Ok(report) = reports.try_recv() {
                gathered.push(report);
            }
        }
        status.send_modify(|status| {
            for report in gathered {
                apply(&mut store, status, report);
            }
            status.objects = Some(store.len());
            status.synced = status.resources.iter().all(|r| r.synced);
        });
        let now_synced = status.borrow().synced;
        if now_synced && !synced {
            tracing::info!(
                objects = store.len(),
                "Kubernetes source synced: every resource listed"
            );
        }
        if now_synced && (store.changed() || !synced) {
            let snapshot = store.snapshot(true);
            if synced {
                tracing::info!(
                    changes = snapshot.changes.as_ref().map_or(0, Vec::len),
                    objects = snapshot.objects.len(),
                    rejected = snapshot.errors.len(),
                    "config changed"
                );
            }
            snapshots.send_replace(Arc::new(snapshot));
        }
        synced = now_synced;
    }
    watches.abort_all();
}

/// Reports until they stop for [`GATHER_QUIET`], or [`GATHER_MAX`].
async fn gather(reports: &mut mpsc::Receiver<Report>, gathered: &mut Vec<Report>) {
    let deadline = tokio::time::Instant::now() + GATHER_MAX;
    loop {
        let quiet = tokio::time::Instant::now() + GATHER_QUIET;
        match tokio::time::timeout_at(quiet.min(deadline), reports.recv()).await {
            Ok(Some(report)) => gathered.push(report),
            _ => return,
        }
    }
}

fn apply(store: &mut Store, status: &mut SourceStatus, report: Report) {
    match report {
        Report::Relisting { resource, version } => {
            let r = &mut status.resources[resource];
            r.version = Some(version);
            r.absent = false;
            r.lists += 1;
            store.relist_started(resource);
        }
        Report::Applied {
            resource,
            key,
            decoded,
        } => store.apply(resource, key, decoded),
        Report::Deleted { key } => store.delete(&key),
        Report::Listed { resource } => {
            let r = &mut status.resources[resource];
            r.synced = true;
            r.error = None;
            store.relist_done(resource, WATCHED[resource].key_kind());
        }
        Report::Absent { resource } => {
            let r = &mut status.resources[resource];
            r.synced = true;
            r.absent = true;
            r.version = None;
            store.absent(resource, WATCHED[resource].key_kind());
        }
        Report::Failing { resource, reason } => status.resources[resource].error = Some(reason),
    }
}
