//! The gRPC service: one task per stream, fed by the client's requests
//! and by model changes, until the client leaves or the server drains.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use weft_proto::discovery::DeltaDiscoveryRequest;

use super::{
    raw::{RawAds, RawDeltaDiscoveryResponse},
    stream::{DeltaState, Next, check_type},
    syncz::SyncRegistry,
};
use crate::{auth::AuthenticatedNode, metrics::Metrics, model::Model};

type Reply = Result<RawDeltaDiscoveryResponse, Status>;

/// Full first responses (tens of MB at scale) in flight at once; each
/// holds its permit until the client answers it (or [`FULL_SYNC_HOLD`]),
/// which bounds memory when hundreds of agents connect together.
const FULL_SYNCS: usize = 4;
const FULL_SYNC_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves [`Model`] over delta ADS.
#[derive(Clone)]
pub struct XdsServer {
    model: watch::Receiver<Arc<Model>>,
    syncz: Arc<SyncRegistry>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    full_syncs: Arc<tokio::sync::Semaphore>,
}

impl XdsServer {
    pub fn new(
        model: watch::Receiver<Arc<Model>>,
        syncz: Arc<SyncRegistry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            model,
            syncz,
            metrics,
            shutdown,
            full_syncs: Arc::new(tokio::sync::Semaphore::new(FULL_SYNCS)),
        }
    }
}

impl RawAds for XdsServer {
    type Stream = ReceiverStream<Reply>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::Stream>, Status> {
        let Some(AuthenticatedNode(node)) =
            request.extensions().get::<AuthenticatedNode>().cloned()
        else {
            return Err(Status::unauthenticated("no authenticated node"));
        };
        let peer = request.remote_addr().map(|a| a.to_string());
        let (tx, rx) = mpsc::channel(8);
        let stream = Stream {
            node,
            peer,
            model: self.model.clone(),
            syncz: Arc::clone(&self.syncz),
            metrics: Arc::clone(&self.metrics),
            shutdown: self.shutdown.clone(),
            full_syncs: Arc::clone(&self.full_syncs),
            full_sync_done: None,
            tx,
        };
        let span = tracing::info_span!("xds_stream", node = stream.node, peer = stream.peer);
        tokio::spawn(stream.run(request.into_inner()).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One client's stream.
struct Stream {
    node: String,
    peer: Option<String>,
    model: watch::Receiver<Arc<Model>>,
    syncz: Arc<SyncRegistry>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    full_syncs: Arc<tokio::sync::Semaphore>,
    /// The nonce of the full response holding a permit, and how to
    /// release it.
    full_sync_done: Option<(String, tokio::sync::oneshot::Sender<()>)>,
    tx: mpsc::Sender<Reply>,
}

impl Stream {
    async fn run(mut self, mut requests: Streaming<DeltaDiscoveryRequest>) {
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            first = requests.message() => first,
        };
        let first = match first {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(status) => return self.broken(status),
        };
        if let Err(status) = check_type(&first.type_url) {
            tracing::warn!(
                type_url = first.type_url,
                "xDS request for an unsupported type"
            );
            let _ = self.tx.send(Err(status)).await;
            return;
        }
        let node_id = first
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default();
        let guard = self.syncz.register(&self.node, &node_id, self.peer.clone());
        let _connected = self.metrics.xds_connected(istio_version(&first));
        let connection = guard.id();
        tracing::info!(
            connection,
            node_id,
            type_url = first.type_url,
            initial_resources = first.initial_resource_versions.len(),
            "agent connected"
        );

        let mut state = DeltaState::new(guard, Arc::clone(&self.metrics));
        let mut request = Some(first);
        loop {
            if let Some(r) = request.take() {
                if let Some((nonce, _)) = &self.full_sync_done
                    && *nonce == r.response_nonce
                    && let Some((_, done)) = self.full_sync_done.take()
                {
                    let _ = done.send(());
                }
                match state.on_request(r) {
                    Ok(Next::Nothing) => {}
                    Ok(Next::Push { type_url, always }) => {
                        // One permit per stream: a stream that holds one
                        // (its first type's full sync) does not wait again.
                        let permit = if always && self.full_sync_done.is_none() {
                            tokio::select! {
                                _ = self.shutdown.cancelled() => break,
                                p = Arc::clone(&self.full_syncs).acquire_owned() => p.ok(),
                            }
                        } else {
                            None
                        };
                        let model = self.model.borrow().clone();
                        let started = std::time::Instant::now();
                        let responses = state.response(type_url, &model, always);
                        let pushed = !responses.is_empty();
                        if let (Some(permit), Some(r)) = (permit, responses.last()) {
                            let (done, wait) = tokio::sync::oneshot::channel::<()>();
                            self.full_sync_done = Some((r.nonce.clone(), done));
                            tokio::spawn(async move {
                                let _permit = permit;
                                let _ = tokio::time::timeout(FULL_SYNC_HOLD, wait).await;
                            });
                        }
                        let mut open = true;
                        for response in responses {
                            if !self.send(Some(response)).await {
                                open = false;
                                break;
                            }
                        }
                        if !open {
                            break;
                        }
                        if pushed {
                            self.metrics.xds_pushed(type_url, started.elapsed());
                        }
                    }
                    Err(status) => {
                        tracing::warn!(connection, error = %status.message(), "closing xDS stream");
                        let _ = self.tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.tx.closed() => break,
                changed = self.model.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let model = self.model.borrow_and_update().clone();
                    if !self.push(&mut state, &model).await {
                        break;
                    }
                }
                next = requests.message() => match next {
                    Ok(Some(r)) => request = Some(r),
                    Ok(None) => break,
                    Err(status) => return self.broken(status),
                },
            }
        }
        tracing::info!(connection, "agent disconnected");
    }

    /// Brings the client to `model`, type by type, counting each type
    /// pushed and, once all are sent, the convergence time of the model
    /// change. False once the client is gone or the server drains.
    async fn push(&self, state: &mut DeltaState, model: &Model) -> bool {
        let began = self
            .metrics
            .change_began(state.synced_version(), &model.version);
        let mut pushed = false;
        for (type_url, names) in state.push_types(model) {
            let started = std::time::Instant::now();
            let responses = state.push_type(type_url, model, names.as_deref());
            if responses.is_empty() {
                continue;
            }
            for response in responses {
                if !self.send(Some(response)).await {
                    return false;
                }
            }
            self.metrics.xds_pushed(type_url, started.elapsed());
            pushed = true;
        }
        if pushed && let Some(began) = began {
            self.metrics.converged(began);
        }
        true
    }

    /// Sends a response (if any); false once the client is gone or the
    /// server drains.
    async fn send(&self, response: Option<RawDeltaDiscoveryResponse>) -> bool {
        let Some(response) = response else {
            return true;
        };
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            sent = self.tx.send(Ok(response)) => sent.is_ok(),
        }
    }

    /// Reading a request failed: the client sent something that does not
    /// decode (tonic reports `Internal`; tell it why), or it went away.
    /// Either way only this stream ends.
    fn broken(&self, status: Status) {
        if status.code() == tonic::Code::Internal {
            // istiod counts a request that fails to arrive for a reason
            // other than the client leaving as an internal error.
            self.metrics.xds_internal_error();
            tracing::warn!(error = %status.message(), "closing xDS stream after a malformed message");
            let _ = self.tx.try_send(Err(Status::invalid_argument(format!(
                "malformed DeltaDiscoveryRequest: {}",
                status.message()
            ))));
        } else {
            tracing::info!(code = ?status.code(), error = %status.message(), "xDS stream broken; agent gone");
        }
    }
}

/// The client's Istio version (`ISTIO_VERSION` in its node metadata, as
/// istio-proxy and ztunnel send it).
fn istio_version(request: &DeltaDiscoveryRequest) -> Option<&str> {
    let field = request
        .node
        .as_ref()?
        .metadata
        .as_ref()?
        .fields
        .get("ISTIO_VERSION")?;
    match &field.kind {
        Some(prost_types::value::Kind::StringValue(v)) => Some(v),
        _ => None,
    }
}
