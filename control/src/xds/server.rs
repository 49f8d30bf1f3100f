//! The gRPC service: one task per stream, fed by the client's requests
//! and by model changes, until the client leaves or the server drains.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use weft_proto::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    aggregated_discovery_service_server::AggregatedDiscoveryService,
};

use super::{
    stream::{DeltaState, Next, check_type},
    syncz::SyncRegistry,
};
use crate::{auth::AuthenticatedNode, model::Model};

type Reply = Result<DeltaDiscoveryResponse, Status>;

/// Serves [`Model`] over delta ADS.
#[derive(Clone)]
pub struct XdsServer {
    model: watch::Receiver<Arc<Model>>,
    syncz: Arc<SyncRegistry>,
    shutdown: CancellationToken,
}

impl XdsServer {
    pub fn new(
        model: watch::Receiver<Arc<Model>>,
        syncz: Arc<SyncRegistry>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            model,
            syncz,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type DeltaAggregatedResourcesStream = ReceiverStream<Reply>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
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
            shutdown: self.shutdown.clone(),
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
    shutdown: CancellationToken,
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
        let connection = guard.id();
        tracing::info!(
            connection,
            node_id,
            type_url = first.type_url,
            initial_resources = first.initial_resource_versions.len(),
            "agent connected"
        );

        let mut state = DeltaState::new(guard);
        let mut request = Some(first);
        loop {
            if let Some(r) = request.take() {
                match state.on_request(r) {
                    Ok(Next::Nothing) => {}
                    Ok(Next::Push { type_url, always }) => {
                        let model = self.model.borrow().clone();
                        if !self.send(state.response(type_url, &model, always)).await {
                            break;
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
                    let mut open = true;
                    for response in state.push(&model) {
                        if !self.send(Some(response)).await {
                            open = false;
                            break;
                        }
                    }
                    if !open {
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

    /// Sends a response (if any); false once the client is gone or the
    /// server drains.
    async fn send(&self, response: Option<DeltaDiscoveryResponse>) -> bool {
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
