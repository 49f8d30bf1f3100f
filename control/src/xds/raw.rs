//! The ADS gRPC service, written out by hand so that responses can carry
//! resources encoded once per model version: on the wire a
//! `DeltaDiscoveryResponse`'s `repeated Resource resources = 2` is a list
//! of length-delimited messages, exactly what `repeated bytes` with the
//! same field number encodes. Each resource is encoded when the model is
//! built; a response to 200 agents then copies no resource, it shares the
//! bytes. Clients see an ordinary `DeltaDiscoveryResponse`.

use std::{convert::Infallible, sync::Arc, task::Poll};

use bytes::Bytes;
use tonic::{
    Request, Response, Status, Streaming,
    body::Body,
    codegen::{BoxFuture, Service, http},
    server::NamedService,
};
use weft_proto::{core::ControlPlane, discovery::DeltaDiscoveryRequest};

/// `envoy.service.discovery.v3.DeltaDiscoveryResponse` with pre-encoded
/// `Resource`s (same field numbers).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawDeltaDiscoveryResponse {
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    /// Each an encoded `envoy.service.discovery.v3.Resource`.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub resources: Vec<Bytes>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(message, optional, tag = "7")]
    pub control_plane: Option<ControlPlane>,
}

/// What answers one stream.
pub trait RawAds: Send + Sync + 'static {
    type Stream: tokio_stream::Stream<Item = Result<RawDeltaDiscoveryResponse, Status>>
        + Send
        + 'static;

    fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> impl Future<Output = Result<Response<Self::Stream>, Status>> + Send;
}

/// `envoy.service.discovery.v3.AggregatedDiscoveryService`, delta only.
pub struct RawAdsServer<T> {
    inner: Arc<T>,
}

impl<T> RawAdsServer<T> {
    pub fn new(inner: T) -> Self {
        RawAdsServer {
            inner: Arc::new(inner),
        }
    }
}

impl<T> Clone for RawAdsServer<T> {
    fn clone(&self) -> Self {
        RawAdsServer {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> NamedService for RawAdsServer<T> {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

struct Method<T>(Arc<T>);

impl<T: RawAds> tonic::server::StreamingService<DeltaDiscoveryRequest> for Method<T> {
    type Response = RawDeltaDiscoveryResponse;
    type ResponseStream = T::Stream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.delta_aggregated_resources(request).await })
    }
}

impl<T: RawAds> Service<http::Request<Body>> for RawAdsServer<T> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        match req.uri().path() {
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources" => {
                Box::pin(async move {
                    let codec = tonic_prost::ProstCodec::<
                        RawDeltaDiscoveryResponse,
                        DeltaDiscoveryRequest,
                    >::default();
                    let mut grpc = tonic::server::Grpc::new(codec)
                        .apply_max_message_size_config(Some(4 << 20), Some(usize::MAX));
                    Ok(grpc.streaming(Method(inner), req).await)
                })
            }
            _ => Box::pin(async move {
                Ok(
                    Status::unimplemented("weft-control serves DeltaAggregatedResources only")
                        .into_http(),
                )
            }),
        }
    }
}
