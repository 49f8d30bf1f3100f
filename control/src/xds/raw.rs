//! The ADS gRPC service, written out by hand so that responses go out
//! without copying their resources. On the wire a
//! `DeltaDiscoveryResponse`'s `repeated Resource resources = 2` is a run
//! of (tag, length, message) entries; each resource is encoded in that
//! form once per model version ([`XdsResource::framed`]), and a type's
//! whole state once per version ([`FullState`]). A response is its small
//! header fields followed by those shared buffers, handed to HTTP/2 as
//! they are: a full sync to 200 agents encodes nothing per agent. Requests
//! are read with tonic's decoder; clients see an ordinary gRPC stream of
//! `DeltaDiscoveryResponse`.
//!
//! [`XdsResource::framed`]: crate::model::XdsResource::framed
//! [`FullState`]: crate::model::full::FullState

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use tokio_stream::Stream;
use tonic::{
    Request, Response, Status, Streaming,
    body::Body,
    codec::Codec,
    codegen::{BoxFuture, Service, http},
    server::NamedService,
};
use weft_proto::{core::ControlPlane, discovery::DeltaDiscoveryRequest};

/// A `DeltaDiscoveryResponse` whose resources are already encoded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawDeltaDiscoveryResponse {
    pub system_version_info: String,
    /// Entries of field 2, each one or more framed `Resource`s.
    pub resources: Vec<Bytes>,
    /// How many resources `resources` holds.
    pub count: usize,
    pub type_url: String,
    pub removed_resources: Vec<String>,
    pub nonce: String,
    pub control_plane: Option<ControlPlane>,
}

/// The header fields of `DeltaDiscoveryResponse` (same field numbers).
#[derive(Clone, PartialEq, prost::Message)]
struct Header {
    #[prost(string, tag = "1")]
    system_version_info: String,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
    #[prost(string, repeated, tag = "6")]
    removed_resources: Vec<String>,
    #[prost(message, optional, tag = "7")]
    control_plane: Option<ControlPlane>,
}

/// Below this many bytes of resources a response is copied into one
/// buffer (one HTTP/2 frame is cheaper than many small ones).
const COPY_BELOW: usize = 64 * 1024;

impl RawDeltaDiscoveryResponse {
    /// The gRPC message (5-byte prefix, then the protobuf message) as
    /// buffers to send in order.
    pub fn into_frames(self) -> Vec<Bytes> {
        let header = Header {
            system_version_info: self.system_version_info,
            type_url: self.type_url,
            nonce: self.nonce,
            removed_resources: self.removed_resources,
            control_plane: self.control_plane,
        };
        let body_len: usize = self.resources.iter().map(Bytes::len).sum();
        let len = header.encoded_len() + body_len;
        let copy = body_len < COPY_BELOW;
        let mut first =
            BytesMut::with_capacity(5 + header.encoded_len() + if copy { body_len } else { 0 });
        first.put_u8(0); // not compressed
        first.put_u32(len as u32);
        header
            .encode(&mut first)
            .expect("a BytesMut with capacity for the header");
        if copy {
            for r in &self.resources {
                first.extend_from_slice(r);
            }
            return vec![first.freeze()];
        }
        let mut frames = Vec::with_capacity(1 + self.resources.len());
        frames.push(first.freeze());
        frames.extend(self.resources);
        frames
    }

    /// Decodes the message (tests): the header fields and each resource.
    pub fn decode(
        &self,
    ) -> Result<weft_proto::discovery::DeltaDiscoveryResponse, prost::DecodeError> {
        let mut bytes = Vec::new();
        for f in self.clone().into_frames() {
            bytes.extend_from_slice(&f);
        }
        weft_proto::discovery::DeltaDiscoveryResponse::decode(&bytes[5..])
    }
}

/// What answers one stream.
pub trait RawAds: Send + Sync + 'static {
    type Stream: Stream<Item = Result<RawDeltaDiscoveryResponse, Status>> + Send + Unpin + 'static;

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

/// Requests larger than this are refused (they are small: names and
/// versions).
const MAX_REQUEST: usize = 4 << 20;

impl<T: RawAds> Service<http::Request<Body>> for RawAdsServer<T> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        match req.uri().path() {
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources" => {
                Box::pin(async move {
                    let mut codec = tonic_prost::ProstCodec::<
                        DeltaDiscoveryRequest,
                        DeltaDiscoveryRequest,
                    >::default();
                    let request = req.map(|body| {
                        Streaming::new_request(codec.decoder(), body, None, Some(MAX_REQUEST))
                    });
                    let response = inner
                        .delta_aggregated_resources(Request::from_http(request))
                        .await;
                    Ok(match response {
                        Ok(response) => http::Response::builder()
                            .header(http::header::CONTENT_TYPE, "application/grpc")
                            .body(Body::new(ResponseBody {
                                responses: response.into_inner(),
                                frames: VecDeque::new(),
                                done: false,
                            }))
                            .expect("a valid response head"),
                        Err(status) => status.into_http(),
                    })
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

/// The response body: each response's buffers in turn, then trailers with
/// the stream's status.
struct ResponseBody<S> {
    responses: S,
    frames: VecDeque<Bytes>,
    done: bool,
}

impl<S> http_body::Body for ResponseBody<S>
where
    S: Stream<Item = Result<RawDeltaDiscoveryResponse, Status>> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.frames.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let status = match Pin::new(&mut this.responses).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(response))) => {
                    this.frames.extend(response.into_frames());
                    continue;
                }
                Poll::Ready(Some(Err(status))) => status,
                Poll::Ready(None) => Status::ok(""),
            };
            this.done = true;
            let mut trailers = http::HeaderMap::new();
            if let Err(e) = status.add_header(&mut trailers) {
                tracing::warn!(error = %e, "cannot encode the xDS stream's status");
            }
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_one_grpc_message() {
        let resource = |name: &str| {
            #[derive(Clone, PartialEq, prost::Message)]
            struct Framed {
                #[prost(message, optional, tag = "2")]
                r: Option<weft_proto::discovery::Resource>,
            }
            Bytes::from(
                Framed {
                    r: Some(weft_proto::discovery::Resource {
                        name: name.into(),
                        version: "v".into(),
                        ..Default::default()
                    }),
                }
                .encode_to_vec(),
            )
        };
        let big = Bytes::from(vec![resource("x").to_vec(); 20_000].concat());
        for resources in [vec![resource("a"), resource("b")], vec![big]] {
            let raw = RawDeltaDiscoveryResponse {
                system_version_info: "sv".into(),
                count: resources.len(),
                resources,
                type_url: "t".into(),
                removed_resources: vec!["gone".into()],
                nonce: "n".into(),
                control_plane: None,
            };
            let frames = raw.clone().into_frames();
            let bytes: Vec<u8> = frames.concat();
            assert_eq!(bytes[0], 0);
            let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
            assert_eq!(len, bytes.len() - 5);
            let decoded = raw.decode().unwrap();
            assert_eq!(
                (decoded.system_version_info.as_str(), decoded.nonce.as_str()),
                ("sv", "n")
            );
            assert_eq!(decoded.removed_resources, ["gone"]);
            assert!(decoded.resources.len() == 2 || decoded.resources.len() == 20_000);
        }
    }
}
