//! One delta ADS stream to the control plane, subscribed (wildcard) to
//! `istio.workload.Address`. Each response is applied to the
//! [`WorkloadStore`] and ACKed, or NACKed with the reason if any resource in
//! it doesn't convert. On a broken stream the client reconnects with
//! backoff, sending `initial_resource_versions` so that the control plane
//! only sends differences.

use std::{sync::Arc, time::Duration};

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::{
    ADDRESS_TYPE_URL,
    core::Node,
    discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse},
    rpc::Status,
    workload::Address,
};

use crate::{
    control::ControlClient,
    state::{Converted, WorkloadStore, from_address},
};

/// Keeps the store in sync with the control plane.
pub struct XdsClient {
    control: ControlClient,
    node: String,
    store: Arc<WorkloadStore>,
    synced: watch::Sender<bool>,
}

impl XdsClient {
    pub fn new(control: ControlClient, node: String, store: Arc<WorkloadStore>) -> Self {
        Self {
            control,
            node,
            store,
            synced: watch::Sender::new(false),
        }
    }

    /// Becomes `true` once the first full state has been applied.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Runs until the process ends: stream, and on failure reconnect.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.stream_once().await {
                Ok(()) => {
                    tracing::warn!("xDS stream closed by the control plane; reconnecting");
                    backoff = Duration::from_millis(100);
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), retry_in = ?backoff, "xDS stream failed; is the control plane reachable on 15012?");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    fn request(&self) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(Node {
                id: self.node.clone(),
                ..Default::default()
            }),
            type_url: ADDRESS_TYPE_URL.to_string(),
            ..Default::default()
        }
    }

    async fn stream_once(&self) -> Result<(), tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut first = self.request();
        first.initial_resource_versions = self.store.versions();
        tx.send(first).await.expect("receiver alive");
        let mut responses = self
            .control
            .xds()
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!("xDS stream established");
        while let Some(response) = responses.message().await? {
            let reply = self.apply(response);
            if tx.send(reply).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Applies a response; returns the ACK or NACK to send.
    fn apply(&self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let mut reply = self.request();
        reply.response_nonce = response.nonce.clone();
        if response.type_url != ADDRESS_TYPE_URL {
            reply.error_detail = Some(nack(format!("unexpected type {}", response.type_url)));
            return reply;
        }
        match decode(&response) {
            Ok(upserts) => {
                let (added, removed) = (upserts.len(), response.removed_resources.len());
                self.store.apply(upserts, &response.removed_resources);
                tracing::debug!(added, removed, nonce = %response.nonce, "applied workload update");
                self.synced.send_replace(true);
            }
            Err(message) => {
                tracing::warn!(nonce = %response.nonce, %message, "rejecting (NACK) workload update");
                reply.error_detail = Some(nack(message));
            }
        }
        reply
    }
}

fn nack(message: String) -> Status {
    Status {
        code: tonic::Code::InvalidArgument as i32,
        message,
        details: vec![],
    }
}

fn decode(response: &DeltaDiscoveryResponse) -> Result<Vec<(String, String, Converted)>, String> {
    response
        .resources
        .iter()
        .map(|resource| {
            let any = resource
                .resource
                .as_ref()
                .ok_or_else(|| format!("resource {} has no body", resource.name))?;
            let address = Address::decode(any.value.as_slice())
                .map_err(|err| format!("resource {}: {err}", resource.name))?;
            let converted = from_address(address)
                .map_err(|err| format!("resource {}: {err}", resource.name))?;
            Ok((resource.name.clone(), resource.version.clone(), converted))
        })
        .collect()
}
