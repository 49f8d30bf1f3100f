//! The access log of L7 requests: one line per request, written when the
//! response has been sent (or the stream reset), with Envoy's fields that
//! Istio users read: method, authority, path, status, response flags,
//! route, destination and subset, upstream endpoint, attempts. The same
//! moment records Istio's request metrics (`reporter="source"`).

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{
    body::{self, Body, BoxError},
    forward::Downstream,
    reply::{Flag, Flags, Replied},
    route::{Destination, HttpRoute},
};
use crate::{
    metrics::{
        Metrics,
        traffic::{Peer, Reporter, RequestOutcome, RequestProtocol, SecurityPolicy, TrafficLabels},
    },
    proxy::ProxyContext,
    state::{Identity, Service, Workload, WorkloadStore},
};

/// What the request metrics need besides the record itself.
struct Telemetry {
    metrics: std::sync::Arc<Metrics>,
    store: std::sync::Arc<WorkloadStore>,
    source: std::sync::Arc<Workload>,
    service: std::sync::Arc<Service>,
    protocol: RequestProtocol,
}

/// What is known of one request, filled in as it goes.
pub struct Record {
    started: Instant,
    src_identity: Identity,
    src_addr: SocketAddr,
    method: Method,
    authority: String,
    path: String,
    version: Version,
    /// Response flags (Envoy's `%RESPONSE_FLAGS%`).
    pub flags: Flags,
    route: String,
    destination: String,
    subset: String,
    upstream: Option<SocketAddr>,
    attempts: u32,
    status: Option<StatusCode>,
    grpc_status: Option<u32>,
    /// The request body's size (its `content-length`, when it has one).
    request_bytes: u64,
    telemetry: Telemetry,
}

impl Record {
    pub fn start<B>(request: &Request<B>, down: &Downstream, ctx: &ProxyContext) -> Record {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("")
            .to_string();
        Record {
            started: Instant::now(),
            src_identity: down.pod.identity().clone(),
            src_addr: down.peer,
            method: request.method().clone(),
            authority,
            path: request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            version: request.version(),
            flags: Flags::default(),
            route: String::new(),
            destination: String::new(),
            subset: String::new(),
            upstream: None,
            attempts: 0,
            status: None,
            grpc_status: None,
            request_bytes: request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0),
            telemetry: Telemetry {
                metrics: ctx.metrics.clone(),
                store: ctx.store.clone(),
                source: down.pod.current(ctx),
                service: down.service.clone(),
                // As Istio: gRPC by the request's content type, whatever
                // the port declares.
                protocol: if super::reply::is_grpc(request.headers()) {
                    RequestProtocol::grpc
                } else {
                    RequestProtocol::http
                },
            },
        }
    }

    /// The route that matched.
    pub fn route(&mut self, route: &HttpRoute) {
        self.route = if route.name.is_empty() {
            route.virtual_service.clone()
        } else {
            format!("{}.{}", route.virtual_service, route.name)
        };
    }

    /// The destination chosen.
    pub fn destination(&mut self, destination: &Destination) {
        self.destination = destination.host.clone();
        self.subset = destination.subset.clone();
    }

    /// An attempt went to `endpoint`.
    pub fn attempt(&mut self, endpoint: SocketAddr) {
        self.upstream = Some(endpoint);
        self.attempts += 1;
    }

    /// The response is ready: it is logged when its body has been sent.
    pub fn finish(mut self, response: Response<Body>) -> Response<Body> {
        if let Some(Replied(flags)) = response.extensions().get::<Replied>() {
            for flag in Flag::ALL {
                if flags.has(flag) {
                    self.flags.set(flag);
                }
            }
        }
        self.status = Some(response.status());
        self.grpc_status = super::reply::grpc_status(response.headers());
        let (parts, inner) = response.into_parts();
        let logged = Logged {
            inner,
            record: Some(self),
            bytes: 0,
        };
        Response::from_parts(parts, body::boxed(logged))
    }

    /// The request ended with a reset instead of a response.
    pub fn finish_reset(self) {
        self.write(0);
    }

    /// Istio's request metrics for this request, as its source reports
    /// them: the destination is the endpoint of the last attempt.
    fn count(&self, response_bytes: u64) {
        let t = &self.telemetry;
        if !t.metrics.traffic.enabled() {
            return;
        }
        let destination = self.upstream.and_then(|a| t.store.workload_by_ip(a.ip()));
        let security = match &destination {
            Some(w) if w.hbone => SecurityPolicy::mutual_tls,
            _ => SecurityPolicy::unknown,
        };
        let labels = TrafficLabels::new(
            Reporter::source,
            Peer::workload(&t.source),
            destination
                .as_deref()
                .map(Peer::workload)
                .unwrap_or_default(),
            Some(&t.service),
            t.protocol,
            security,
        )
        .with_flags(&self.flags.to_string());
        t.metrics.traffic.request(
            &labels,
            RequestOutcome {
                status: self.status.map_or(0, |s| s.as_u16()),
                grpc_status: self.grpc_status,
                duration: self.started.elapsed(),
                request_bytes: self.request_bytes,
                response_bytes,
            },
        );
    }

    fn write(&self, bytes_sent: u64) {
        self.count(bytes_sent);
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let status = self.status.map_or(0, |s| s.as_u16());
        let upstream = self
            .upstream
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        tracing::info!(
            src.identity = %self.src_identity,
            src.addr = %self.src_addr,
            method = %self.method,
            authority = %self.authority,
            path = %self.path,
            protocol = ?self.version,
            status,
            grpc_status = self.grpc_status.map(|s| s as i64).unwrap_or(-1),
            response_flags = %self.flags,
            route = %self.route,
            destination = %self.destination,
            subset = %self.subset,
            upstream = %upstream,
            attempts = self.attempts,
            bytes_sent,
            duration_ms,
            "http request"
        );
    }
}

/// A response body that writes the access log line when it ends (or is
/// dropped: the app went away, `DC`).
struct Logged {
    inner: Body,
    record: Option<Record>,
    bytes: u64,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(record) = self.record.as_mut()
                    && let Some(status) = super::reply::grpc_status(trailers)
                {
                    record.grpc_status = Some(status);
                }
            }
            Poll::Ready(None) => {
                if let Some(record) = self.record.take() {
                    record.write(self.bytes);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut record) = self.record.take() {
                    record.flags.set(Flag::UpstreamReset);
                    record.write(self.bytes);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            if !self.inner.is_end_stream() {
                record.flags.set(Flag::DownstreamTerminated);
            }
            record.write(self.bytes);
        }
    }
}
