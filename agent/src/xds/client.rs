//! One delta ADS stream to the control plane, subscribed (wildcard) to seven
//! types: `istio.workload.Address` (workloads and services),
//! `istio.security.Authorization` (L4 policies), weft's
//! `weft.route.v1.RouteConfig` and `DestinationPolicy` (L7 routing), and
//! `weft.telemetry.v1.AccessLogPolicy` (the access log),
//! `TracingPolicy` (tracing) and `MetricsPolicy` (metric overrides). Each response is applied
//! to the [`WorkloadStore`] and ACKed, or NACKed with the reason if any
//! resource in it doesn't convert (nothing of it is applied then). On a broken stream the client reconnects with
//! backoff, sending `initial_resource_versions` so that the control plane
//! only sends differences.

use std::{sync::Arc, time::Duration};

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::{
    ACCESS_LOG_POLICY_TYPE_URL, ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
    DESTINATION_POLICY_TYPE_URL, METRICS_POLICY_TYPE_URL, ROUTE_CONFIG_TYPE_URL,
    TRACING_POLICY_TYPE_URL,
    core::Node,
    discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse},
    route::{DestinationPolicy, RouteConfig},
    rpc::Status,
    security::Authorization,
    workload::Address,
};

use crate::{
    control::ControlClient,
    l7::{L7Config, cluster::Policies, route::RouteTable},
    policy::{self, Policy},
    state::{Converted, WorkloadStore, from_address},
};

/// Keeps the store in sync with the control plane.
pub struct XdsClient {
    control: ControlClient,
    node: String,
    store: Arc<WorkloadStore>,
    l7: Arc<L7Config>,
    tracer: Arc<crate::trace::Tracer>,
    synced: watch::Sender<bool>,
    /// The stream is up (for `weft_agent_xds_connected`).
    connected: Arc<std::sync::atomic::AtomicBool>,
}

impl XdsClient {
    pub fn new(
        control: ControlClient,
        node: String,
        store: Arc<WorkloadStore>,
        l7: Arc<L7Config>,
        tracer: Arc<crate::trace::Tracer>,
    ) -> Self {
        Self {
            control,
            node,
            store,
            l7,
            tracer,
            synced: watch::Sender::new(false),
            connected: Arc::default(),
        }
    }

    /// `true` while the xDS stream is up.
    pub fn connected(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.connected.clone()
    }

    /// Becomes `true` once the first workload state has been applied.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Runs until the process ends: stream, and on failure reconnect.
    pub async fn run(self) {
        const FIRST: Duration = Duration::from_millis(100);
        const MOST: Duration = Duration::from_secs(10);
        let mut backoff = FIRST;
        loop {
            let result = self.stream_once().await;
            let was_up = self
                .connected
                .swap(false, std::sync::atomic::Ordering::Relaxed);
            if was_up {
                // A stream that was up: the control plane went away (a
                // restart, an outage); try again soon.
                backoff = FIRST;
            }
            // Jittered, half to all of the backoff: the agents of a
            // cluster that lost the control plane together come back
            // spread out, not in one burst.
            let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            match result {
                Ok(()) => {
                    tracing::warn!(retry_in = ?wait, "xDS stream closed by the control plane; reconnecting");
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), retry_in = ?wait, "xDS stream failed; is the control plane reachable on 15012?");
                }
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MOST);
        }
    }

    fn request(&self, type_url: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(Node {
                id: self.node.clone(),
                ..Default::default()
            }),
            type_url: type_url.to_string(),
            ..Default::default()
        }
    }

    async fn stream_once(&self) -> Result<(), tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut addresses = self.request(ADDRESS_TYPE_URL);
        addresses.initial_resource_versions = self.store.versions();
        let mut policies = self.request(AUTHORIZATION_TYPE_URL);
        policies.initial_resource_versions = self.store.policy_versions();
        let mut routes = self.request(ROUTE_CONFIG_TYPE_URL);
        routes.initial_resource_versions = self.l7.route_versions();
        let mut destinations = self.request(DESTINATION_POLICY_TYPE_URL);
        destinations.initial_resource_versions = self.l7.policy_versions();
        let mut access_logs = self.request(ACCESS_LOG_POLICY_TYPE_URL);
        access_logs.initial_resource_versions = crate::access_log::global().versions();
        let mut tracing = self.request(TRACING_POLICY_TYPE_URL);
        tracing.initial_resource_versions = self.tracer.policies.versions();
        let mut metrics = self.request(METRICS_POLICY_TYPE_URL);
        metrics.initial_resource_versions = crate::metrics::traffic::overrides::global().versions();
        for request in [
            addresses,
            policies,
            routes,
            destinations,
            access_logs,
            tracing,
            metrics,
        ] {
            tx.send(request).await.expect("receiver alive");
        }
        let mut responses = self
            .control
            .xds()
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tracing::info!("xDS stream established");
        self.connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
        let mut reply = self.request(&response.type_url);
        reply.response_nonce = response.nonce.clone();
        let (added, removed) = (response.resources.len(), response.removed_resources.len());
        let applied = decode(&response).map(|decoded| match decoded {
            Decoded::Addresses(upserts) => {
                self.store.apply(upserts, &response.removed_resources);
                self.synced.send_replace(true);
            }
            Decoded::Policies(upserts) => {
                self.store
                    .apply_policies(upserts, &response.removed_resources);
            }
            Decoded::Routes(upserts) => {
                self.l7.apply_routes(upserts, &response.removed_resources);
            }
            Decoded::Destinations(upserts) => {
                self.l7.apply_policies(upserts, &response.removed_resources);
            }
            Decoded::AccessLogs(upserts) => {
                crate::access_log::global().apply(upserts, &response.removed_resources);
            }
            Decoded::Tracing(upserts) => {
                self.tracer
                    .policies
                    .apply(upserts, &response.removed_resources);
            }
            Decoded::Metrics(upserts) => {
                crate::metrics::traffic::overrides::global()
                    .apply(upserts, &response.removed_resources);
            }
        });
        match applied {
            Ok(()) => {
                tracing::debug!(type_url = %response.type_url, added, removed, nonce = %response.nonce, "applied update");
            }
            Err(message) => {
                tracing::warn!(type_url = %response.type_url, nonce = %response.nonce, %message, "rejecting (NACK) update");
                reply.error_detail = Some(nack(message));
            }
        }
        reply
    }
}

/// A response's resources, each decoded and converted to the agent's own
/// form, as `(name, version, converted)`: what [`XdsClient`] applies.
pub enum Decoded {
    Addresses(Vec<(String, String, Converted)>),
    Policies(Vec<(String, String, Policy)>),
    Routes(Vec<(String, String, RouteTable)>),
    Destinations(Vec<(String, String, Policies)>),
    AccessLogs(Vec<(String, String, crate::access_log::policy::Compiled)>),
    Tracing(Vec<(String, String, weft_proto::telemetry::TracingPolicy)>),
    Metrics(Vec<(String, String, weft_proto::telemetry::MetricsPolicy)>),
}

/// Decodes and converts every resource of `response` by its type, all or
/// nothing: `Err` is the NACK's message (an unknown type, or the first
/// resource that does not decode or convert, by name). No I/O, no state:
/// the xDS client's whole reading of the control plane's bytes.
pub fn decode(response: &DeltaDiscoveryResponse) -> Result<Decoded, String> {
    Ok(match response.type_url.as_str() {
        ADDRESS_TYPE_URL => Decoded::Addresses(decode_addresses(response)?),
        AUTHORIZATION_TYPE_URL => Decoded::Policies(decode_policies(response)?),
        ROUTE_CONFIG_TYPE_URL => Decoded::Routes(decode_routes(response)?),
        DESTINATION_POLICY_TYPE_URL => Decoded::Destinations(decode_destinations(response)?),
        ACCESS_LOG_POLICY_TYPE_URL => Decoded::AccessLogs(decode_each(
            response,
            |p: weft_proto::telemetry::AccessLogPolicy| crate::access_log::compile(&p),
        )?),
        TRACING_POLICY_TYPE_URL => Decoded::Tracing(decode_each(
            response,
            |p: weft_proto::telemetry::TracingPolicy| Ok(p),
        )?),
        METRICS_POLICY_TYPE_URL => Decoded::Metrics(decode_each(
            response,
            |p: weft_proto::telemetry::MetricsPolicy| Ok(p),
        )?),
        other => return Err(format!("unexpected type {other}")),
    })
}

fn nack(message: String) -> Status {
    Status {
        code: tonic::Code::InvalidArgument as i32,
        message,
        details: vec![],
    }
}

fn decode_each<T, M: Message + Default>(
    response: &DeltaDiscoveryResponse,
    convert: impl Fn(M) -> Result<T, String>,
) -> Result<Vec<(String, String, T)>, String> {
    response
        .resources
        .iter()
        .map(|resource| {
            let any = resource
                .resource
                .as_ref()
                .ok_or_else(|| format!("resource {} has no body", resource.name))?;
            let message = M::decode(any.value.as_slice())
                .map_err(|err| format!("resource {}: {err}", resource.name))?;
            let converted =
                convert(message).map_err(|err| format!("resource {}: {err}", resource.name))?;
            Ok((resource.name.clone(), resource.version.clone(), converted))
        })
        .collect()
}

fn decode_addresses(
    response: &DeltaDiscoveryResponse,
) -> Result<Vec<(String, String, Converted)>, String> {
    decode_each(response, |address: Address| {
        from_address(address).map_err(|e| e.to_string())
    })
}

fn decode_policies(
    response: &DeltaDiscoveryResponse,
) -> Result<Vec<(String, String, Policy)>, String> {
    decode_each(response, |authz: Authorization| {
        policy::from_proto(authz).map_err(|e| e.to_string())
    })
}

fn decode_routes(
    response: &DeltaDiscoveryResponse,
) -> Result<Vec<(String, String, RouteTable)>, String> {
    decode_each(response, |config: RouteConfig| {
        RouteTable::compile(&config).map_err(|e| e.to_string())
    })
}

fn decode_destinations(
    response: &DeltaDiscoveryResponse,
) -> Result<Vec<(String, String, Policies)>, String> {
    decode_each(response, |policy: DestinationPolicy| {
        Policies::compile(&policy).map_err(|e| e.to_string())
    })
}
