//! The access log of L7 requests: one line per request, written when the
//! response has been sent (or the stream reset), with Envoy's fields that
//! Istio users read: method, authority, path, status, response flags,
//! route, destination and subset, upstream endpoint, attempts. The same
//! moment records Istio's request metrics (`reporter="source"`).
//!
//! [`Record`] is the client's side (the agent of the pod that sent the
//! request), [`ServerRecord`] the server's (`l7/inbound.rs`); each writes
//! its side's line to the [`crate::access_log`] when the Telemetry API
//! and MeshConfig say so, and ends its side's span ([`crate::trace`]).

use std::{
    borrow::Cow,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{
    body::{self, Body, BoxError, GrpcFrames},
    cluster::{Endpoint, InFlight},
    forward::Downstream,
    reply::{Flag, Flags, Replied},
    route::{Destination, HttpRoute},
};
use crate::{
    access_log::{self, Decision, Entry, Headers, Http, Side},
    metrics::{
        Metrics,
        traffic::{
            Peer, Reporter, RequestOutcome, RequestProtocol, SecurityPolicy, SeriesCache,
            TrafficLabels, overrides,
        },
    },
    proxy::{PodContext, ProxyContext},
    state::{Service, Workload},
    trace::{ActiveSpan, End},
};

/// What the request metrics need besides the record itself.
struct Telemetry {
    metrics: Arc<Metrics>,
    /// The connection's recent series.
    series: Arc<SeriesCache>,
    source: Arc<Workload>,
    service: Arc<Service>,
    protocol: RequestProtocol,
}

/// The access log's part of a request that is logged: the decision made
/// when it started, and the headers its format prints or its filter reads.
struct Access {
    decision: Decision,
    headers: Headers,
    response_headers: Option<Headers>,
}

mod header_values;
mod line;
mod server;

use self::line::{RequestLine, protocol};
pub use self::{header_values::HeaderFormatting, server::ServerRecord};

/// What is known of one request, filled in as it goes.
pub struct Record {
    started: Instant,
    /// `%START_TIME%`.
    start_time: SystemTime,
    /// The address the app dialled (the service's VIP and port).
    local: SocketAddr,
    /// Istio's name of the cluster: `outbound|<port>|<subset>|<host>`.
    cluster: String,
    /// `None`: this request is not logged (the client side's is off).
    access: Option<Access>,
    /// When the response's head came from upstream, after `started`
    /// (`%RESPONSE_DURATION%`; read only for a request that is logged).
    responded_after: Option<std::time::Duration>,
    /// The last attempt went through an HBONE tunnel (to a mesh workload
    /// on another node; known only for a request that is logged).
    tunnelled: bool,
    /// The source: the app's pod.
    pod: Arc<PodContext>,
    src_addr: SocketAddr,
    line: RequestLine,
    /// Response flags (Envoy's `%RESPONSE_FLAGS%`).
    pub flags: Flags,
    /// `%RESPONSE_CODE_DETAILS%` of an answer of the proxy's own that its
    /// flags do not name (see [`Replied`]).
    details: Option<Cow<'static, str>>,
    route: String,
    destination: String,
    subset: String,
    upstream: Option<SocketAddr>,
    /// The local address of the connection the last attempt's response
    /// came on ([`Record::went_on`]).
    upstream_local: Option<SocketAddr>,
    /// The workload behind `upstream`, as the balancer knew it (by
    /// address, a host-network pod would be no workload).
    upstream_workload: Option<Arc<Workload>>,
    attempts: u32,
    status: Option<StatusCode>,
    grpc_status: Option<u32>,
    /// The request's body as it went upstream ([`Record::counting`]);
    /// `None`: it had none.
    request_body: Option<Arc<body::RequestBody>>,
    /// gRPC messages each way are counted when the request is gRPC and
    /// the metrics are on: the request's into `request_body`, the
    /// response's by the [`Logged`] body.
    count_messages: bool,
    response_messages: u64,
    telemetry: Telemetry,
    /// This side's span, when the source's tracing is on.
    span: Option<ActiveSpan>,
    /// The port of the destination chosen (for the span's name).
    destination_port: u16,
    /// The source's metric overrides when the request started (`None`:
    /// Istio's standard metrics).
    metrics_view: Option<Arc<overrides::View>>,
    /// What they read of the request, when they add labels with values.
    tags: Option<RequestTags>,
    /// The answered attempt's hold on its cluster, released when the
    /// record is: when the response's body ends ([`Record::hold`]).
    in_flight: Option<InFlight>,
    /// The request's and the response's heads, as `istio_request_bytes`
    /// and `istio_response_bytes` count them with the bodies (0 while the
    /// metrics are off; the response's until it comes).
    heads: (u64, u64),
}

/// What a Telemetry's UPSERT tag values may read of a request: kept only
/// for a reporter whose overrides have such values (nothing is copied
/// otherwise).
pub struct RequestTags {
    line: RequestLine,
    /// The request headers the values read.
    headers: Headers,
    /// The response headers they read (none until the response arrives,
    /// nor for a request that ends without one).
    response_headers: Headers,
    /// `destination.address`: the address the request came to.
    local: Option<SocketAddr>,
    /// `source.address`.
    remote: Option<SocketAddr>,
}

/// A request's answer, as the UPSERT values may read it.
pub struct Answer {
    pub status: u16,
    pub grpc_status: Option<u32>,
    pub flags: Flags,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration: std::time::Duration,
}

impl RequestTags {
    /// When `view` has UPSERT values.
    pub fn capture<B>(
        request: &Request<B>,
        view: Option<&overrides::View>,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
    ) -> Option<RequestTags> {
        let view = view.filter(|v| !v.expressions.is_empty())?;
        Some(RequestTags {
            line: RequestLine::of(request),
            headers: Headers::capture(request.headers(), &view.request_headers, &[]),
            response_headers: Headers::default(),
            local,
            remote,
        })
    }

    /// Keeps what of the response's headers `view`'s values read.
    pub fn responded(&mut self, headers: &http::HeaderMap, view: &overrides::View) {
        if !view.response_headers.is_empty() {
            self.response_headers = Headers::capture(headers, &view.response_headers, &[]);
        }
    }

    /// `labels` with their UPSERT values for this request and `answer`.
    pub fn label(&self, labels: TrafficLabels, answer: &Answer) -> TrafficLabels {
        let mut e = Entry::new(SystemTime::now(), answer.duration);
        e.http = Some(Http {
            method: self.line.method.as_str(),
            path: self.line.path(),
            authority: self.line.authority(),
            headers: Some(&self.headers),
            response_headers: Some(&self.response_headers),
            status: answer.status,
            grpc_status: answer.grpc_status,
        });
        e.protocol = protocol(self.line.version);
        e.flags = answer.flags;
        e.bytes_received = answer.request_bytes;
        e.bytes_sent = answer.response_bytes;
        e.downstream_local = self.local;
        e.downstream_remote = self.remote;
        e.mtls = labels.connection_security_policy == SecurityPolicy::mutual_tls;
        labels.with_values(&e)
    }
}

/// `%REQUEST_DURATION%`: when the request's body ended, after its start;
/// at once for a request without one (`seen`: `None`).
fn request_duration(seen: Option<&body::RequestBody>) -> Option<std::time::Duration> {
    match seen {
        Some(seen) => seen.ended_after(),
        None => Some(std::time::Duration::ZERO),
    }
}

impl Record {
    pub fn start<B: HttpBody>(
        request: &Request<B>,
        down: &Downstream,
        ctx: &ProxyContext,
    ) -> Record {
        let started = Instant::now();
        let access = access_log::global()
            .decide(
                &down.pod.workload.namespace,
                &down.pod.workload.uid,
                Side::Client,
            )
            .map(|decision| Access {
                headers: decision.request_headers(request.headers()),
                decision,
                response_headers: None,
            });
        let source = down.pod.current(ctx);
        let span = ctx.tracer.client(&source, request.headers());
        // The source's metric overrides, as they are when the request
        // starts (its values read the request then).
        let metrics_view = if ctx.metrics.traffic.enabled() {
            overrides::global().resolve(
                &down.pod.workload.namespace,
                &down.pod.workload.uid,
                Side::Client,
            )
        } else {
            None
        };
        let tags = RequestTags::capture(
            request,
            metrics_view.as_deref(),
            Some(down.original),
            // The app's address as a sidecar would see it.
            Some(access_log::app_address(down.peer, &down.pod.workload)),
        );
        let count_messages =
            ctx.metrics.traffic.enabled() && super::reply::is_grpc(request.headers());
        Record {
            started,
            start_time: SystemTime::now(),
            local: down.original,
            cluster: String::new(),
            access,
            responded_after: None,
            tunnelled: false,
            pod: down.pod.clone(),
            src_addr: down.peer,
            line: RequestLine::of(request),
            flags: Flags::default(),
            details: None,
            route: String::new(),
            destination: String::new(),
            subset: String::new(),
            upstream: None,
            upstream_local: None,
            upstream_workload: None,
            attempts: 0,
            status: None,
            grpc_status: None,
            // Observed whatever records the request: its end also times
            // `x-envoy-upstream-service-time`.
            request_body: (!request.body().is_end_stream())
                .then(|| body::RequestBody::new(started, request.headers(), count_messages)),
            count_messages,
            response_messages: 0,
            span,
            destination_port: down.original.port(),
            metrics_view,
            tags,
            in_flight: None,
            heads: (0, 0),
            telemetry: Telemetry {
                metrics: ctx.metrics.clone(),
                series: down.series.clone(),
                source,
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

    /// The request's head took `bytes` as the app sent it (before the
    /// proxy's own headers), for `istio_request_bytes`.
    pub fn request_head(&mut self, bytes: u64) {
        self.heads.0 = bytes;
    }

    /// The request's body on its way upstream, its bytes, gRPC messages
    /// and end counted (once, whatever the retries replay).
    pub fn counting(&self, body: Body) -> Body {
        match &self.request_body {
            Some(seen) => body::observe(body, seen.clone()),
            None => body,
        }
    }

    /// The request's body as it goes upstream (`None`: it has none).
    pub fn request_body(&self) -> Option<&body::RequestBody> {
        self.request_body.as_deref()
    }

    /// The request body's bytes that went upstream.
    fn request_bytes(&self) -> u64 {
        self.request_body
            .as_deref()
            .map_or(0, body::RequestBody::bytes)
    }

    /// The request is about to go upstream with `headers`: writes this
    /// request's span into them as the callee's parent (when the source's
    /// tracing is on). (The `x-request-id` the proxy made was in the
    /// request when [`Record::start`] kept its headers for the log.)
    pub fn forwarding(&mut self, headers: &mut HeaderMap) {
        if let Some(span) = self.span.as_mut() {
            span.write(headers);
        }
    }

    /// The path (and query) the request is routed and sent with, when the
    /// connection manager's normalisation changed it: what Envoy logs as
    /// `%REQ(:PATH)%`.
    pub fn normalized(&mut self, path_and_query: &str) {
        self.line.set_path(path_and_query);
    }

    /// The route edited the request (its path, authority or headers):
    /// the line reads it as it goes upstream, as Envoy's does (its router
    /// edits the request's headers in place, so `%REQ(:PATH)%` is the
    /// rewritten path and `%REQ(X-ENVOY-ORIGINAL-PATH)%` the one before).
    pub fn routed(&mut self, path_and_query: &str, authority: &str, headers: &HeaderMap) {
        self.line.set_path(path_and_query);
        self.line.set_authority(authority);
        if let Some(access) = self.access.as_mut() {
            access.headers = access.decision.request_headers(headers);
        }
    }

    /// The route that matched.
    pub fn route(&mut self, route: &HttpRoute) {
        self.route = if route.name.is_empty() {
            route.virtual_service.clone()
        } else {
            [route.virtual_service.as_str(), ".", &route.name].concat()
        };
    }

    /// The destination chosen.
    pub fn destination(&mut self, destination: &Destination) {
        self.destination = destination.host.clone();
        self.subset = destination.subset.clone();
        let port = match destination.port {
            0 => self.local.port(),
            port => port,
        };
        self.destination_port = port;
        // By hand: `format!` took about 1,200 instructions a request.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(port);
        let mut cluster = String::with_capacity(
            "outbound|||".len() + digits.len() + destination.subset.len() + destination.host.len(),
        );
        for part in [
            "outbound|",
            digits,
            "|",
            &destination.subset,
            "|",
            &destination.host,
        ] {
            cluster.push_str(part);
        }
        self.cluster = cluster;
    }

    /// An attempt went to `endpoint`. (A mesh workload on this node is
    /// handed the request in the process; one on another, through HBONE,
    /// as the upstream's `connect_io` decides.)
    pub fn attempt(&mut self, endpoint: &Endpoint, ctx: &ProxyContext) {
        self.upstream = Some(endpoint.addr);
        // Until this attempt's connection is known (`went_on`).
        self.upstream_local = None;
        self.upstream_workload.clone_from(&endpoint.workload);
        self.attempts += 1;
        if self.access.is_some() {
            self.tunnelled = endpoint.workload.as_ref().is_some_and(|w| w.hbone)
                && ctx.local_pods.get(endpoint.addr.ip()).is_none();
        }
    }

    /// The attempt's response came on a connection from `local` (`None`:
    /// it got none, or came through no socket).
    pub fn went_on(&mut self, local: Option<SocketAddr>) {
        self.upstream_local = local;
    }

    /// Keeps the answered attempt's hold on its cluster (its endpoint's
    /// active request, its `max_requests` unit) until the response's body
    /// has ended.
    pub fn hold(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    /// The response is ready: it is logged when its body has been sent.
    pub fn finish(mut self, response: Response<Body>) -> Response<Body> {
        let replied = response.extensions().get::<Replied>();
        if let Some(replied) = replied {
            for flag in Flag::ALL {
                if replied.flags.has(flag) {
                    self.flags.set(flag);
                }
            }
            self.details.clone_from(&replied.details);
        }
        // A reply of the proxy's own read nothing from upstream.
        if self.access.is_some() && replied.is_none() {
            self.responded_after = Some(self.started.elapsed());
        }
        self.status = Some(response.status());
        self.grpc_status = super::reply::grpc_status(response.headers());
        if self.telemetry.metrics.traffic.enabled() {
            self.heads.1 = super::wire::response_head(response.status(), response.headers());
        }
        if let Some(access) = self.access.as_mut() {
            access.response_headers = Some(access.decision.response_headers(response.headers()));
        }
        if let (Some(tags), Some(view)) = (self.tags.as_mut(), self.metrics_view.as_deref()) {
            tags.responded(response.headers(), view);
        }
        on_end(response, self)
    }

    /// The request ended with a reset instead of a response.
    pub fn finish_reset(mut self) {
        self.write(0);
    }

    /// Istio's request metrics for this request, as its source reports
    /// them: the destination is the endpoint of the last attempt.
    fn count(
        &self,
        response_bytes: u64,
        duration: std::time::Duration,
        destination: Option<&Arc<Workload>>,
    ) {
        let t = &self.telemetry;
        if !t.metrics.traffic.enabled() {
            return;
        }
        let security = match destination {
            Some(w) if w.hbone => SecurityPolicy::mutual_tls,
            _ => SecurityPolicy::unknown,
        };
        let labels = TrafficLabels::new(
            Reporter::source,
            Peer::workload(&t.source),
            destination.map(|w| Peer::workload(w)).unwrap_or_default(),
            Some(&t.service),
            t.protocol,
            security,
        )
        .under(self.metrics_view.clone());
        let labels = if self.flags.is_empty() {
            labels
        } else {
            labels.with_flags(&self.flags.to_string())
        };
        let status = self.status.map_or(0, |s| s.as_u16());
        let labels = match &self.tags {
            Some(tags) => tags.label(
                labels,
                &Answer {
                    status,
                    grpc_status: self.grpc_status,
                    flags: self.flags,
                    request_bytes: self.request_bytes(),
                    response_bytes,
                    duration,
                },
            ),
            None => labels,
        };
        t.series
            .get(&t.metrics.traffic, &labels, status, self.grpc_status)
            .record(&RequestOutcome {
                duration,
                request_bytes: self.heads.0 + self.request_bytes(),
                response_bytes: self.heads.1 + response_bytes,
                request_messages: self
                    .request_body
                    .as_deref()
                    .map_or(0, body::RequestBody::messages),
                response_messages: self.response_messages,
            });
    }

    fn write(&mut self, bytes_sent: u64) {
        // The workload of the endpoint, for the metrics and the log's
        // `connection.mtls`.
        let destination = self.upstream_workload.take();
        // One clock read for the metrics, the debug line and the log.
        let duration = self.started.elapsed();
        self.count(bytes_sent, duration, destination.as_ref());
        let duration_ms = duration.as_millis() as u64;
        let status = self.status.map_or(0, |s| s.as_u16());
        tracing::debug!(
            src.identity = %self.pod.identity(),
            src.addr = %self.src_addr,
            method = %self.line.method,
            authority = %self.line.authority(),
            path = %self.line.path(),
            protocol = ?self.line.version,
            status,
            grpc_status = self.grpc_status.map(|s| s as i64).unwrap_or(-1),
            response_flags = %self.flags,
            route = %self.route,
            destination = %self.destination,
            subset = %self.subset,
            upstream = %OrDash(self.upstream),
            attempts = self.attempts,
            bytes_sent,
            duration_ms,
            "http request"
        );
        self.access_log(bytes_sent, duration, destination.as_ref());
        self.end_span(bytes_sent);
    }

    /// Ends the client span: named after the destination chosen (else
    /// the service the app dialled).
    fn end_span(&mut self, bytes_sent: u64) {
        let Some(span) = self.span.take() else {
            return;
        };
        let host = match self.destination.as_str() {
            "" => self.telemetry.service.hostname.as_str(),
            host => host,
        };
        span.finish(End {
            operation: format!("{host}:{}/*", self.destination_port),
            method: self.line.method.as_str(),
            url: format!("http://{}{}", self.line.authority(), self.line.path()),
            protocol: protocol(self.line.version),
            status: self.status.map_or(0, |s| s.as_u16()),
            grpc_status: self.grpc_status,
            flags: self.flags.to_string(),
            request_size: self.request_bytes(),
            response_size: bytes_sent,
            upstream_cluster: &self.cluster,
            peer: self.upstream,
        });
    }

    /// The client side's access-log line, if it is logged.
    fn access_log(
        &self,
        bytes_sent: u64,
        duration: std::time::Duration,
        destination: Option<&Arc<Workload>>,
    ) {
        let Some(access) = &self.access else {
            return;
        };
        let status = self.status.map_or(0, |s| s.as_u16());
        let mut e = self.entry(
            duration,
            &access.headers,
            access.response_headers.as_ref(),
            status,
            self.grpc_status,
        );
        self.answered(&mut e, destination);
        e.bytes_received = self.request_bytes();
        e.request_duration = request_duration(self.request_body.as_deref());
        e.bytes_sent = bytes_sent;
        access_log::global().write(&access.decision, &e);
    }
}

impl Record {
    /// What every entry of this request has, its access-log line's and its
    /// header values' alike: the request, its addresses, this side's
    /// identity, its route and cluster, its span.
    fn entry<'a>(
        &'a self,
        duration: std::time::Duration,
        headers: &'a Headers,
        response_headers: Option<&'a Headers>,
        status: u16,
        grpc_status: Option<u32>,
    ) -> Entry<'a> {
        let mut e = Entry::new(self.start_time, duration);
        e.http = Some(Http {
            method: self.line.method.as_str(),
            path: self.line.path(),
            authority: self.line.authority(),
            headers: Some(headers),
            response_headers,
            status,
            grpc_status,
        });
        e.protocol = protocol(self.line.version);
        e.upstream_cluster = &self.cluster;
        e.downstream_local = Some(self.local);
        e.downstream_remote = Some(access_log::app_address(
            self.src_addr,
            &self.telemetry.source,
        ));
        e.local_identity = Some(self.pod.identity());
        e.route = &self.route;
        e.trace = self.span.as_ref().map(ActiveSpan::ids);
        e
    }

    /// What the answer added: its flags and details, the endpoint that
    /// gave it (`destination`, its workload), the attempts.
    fn answered<'a>(&'a self, e: &mut Entry<'a>, destination: Option<&'a Arc<Workload>>) {
        e.response_duration = self.responded_after;
        e.flags = self.flags;
        e.details = self.details.as_deref();
        e.upstream_host = self.upstream;
        e.upstream_local = self.upstream_local;
        e.upstream_workload = destination;
        e.attempts = self.attempts;
        e.mtls = destination.is_some_and(|w| w.hbone);
        // A tunnel that answered was made.
        e.upstream_tls = self.tunnelled && self.responded_after.is_some();
    }
}

/// An address, or `-`: written only when the debug line is (the
/// `to_string` it replaced ran on every request).
struct OrDash(Option<SocketAddr>);

impl std::fmt::Display for OrDash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl Ending for Record {
    fn grpc_status(&mut self, status: u32) {
        self.grpc_status = Some(status);
    }

    fn flag(&mut self, flag: Flag) {
        self.flags.set(flag);
    }

    fn counts_messages(&self) -> bool {
        self.count_messages
    }

    fn messages(&mut self, count: u64) {
        self.response_messages = count;
    }

    fn end(mut self, bytes_sent: u64) {
        self.write(bytes_sent);
    }
}

/// What a response's body tells when it ends (see [`on_end`]).
pub(super) trait Ending: Send + Sync + Unpin + 'static {
    fn grpc_status(&mut self, status: u32);
    fn flag(&mut self, flag: Flag);
    fn end(self, bytes_sent: u64);
    /// Whether the response's gRPC messages are counted.
    fn counts_messages(&self) -> bool {
        false
    }
    /// The response carried `count` gRPC messages (called before `end`).
    fn messages(&mut self, _count: u64) {}
}

/// `response`, whose body tells `record` when it ends: its bytes, its gRPC
/// status and messages, and whether it ended early.
pub(super) fn on_end<R: Ending>(response: Response<Body>, record: R) -> Response<Body> {
    let (parts, inner) = response.into_parts();
    Response::from_parts(parts, body::boxed(Logged::new(inner, record)))
}

/// A response body that writes the access log line when it ends (or is
/// dropped: the app went away, `DC`).
struct Logged<R: Ending> {
    inner: Body,
    record: Option<R>,
    bytes: u64,
    frames: Option<GrpcFrames>,
}

impl<R: Ending> Logged<R> {
    fn new(inner: Body, record: R) -> Logged<R> {
        Logged {
            inner,
            frames: record.counts_messages().then(GrpcFrames::default),
            record: Some(record),
            bytes: 0,
        }
    }

    fn end(&mut self, flag: Option<Flag>) {
        if let Some(mut record) = self.record.take() {
            if let Some(flag) = flag {
                record.flag(flag);
            }
            if let Some(frames) = &self.frames {
                record.messages(frames.messages);
            }
            record.end(self.bytes);
        }
    }
}

impl<R: Ending> HttpBody for Logged<R> {
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
                    if let Some(frames) = self.frames.as_mut() {
                        frames.feed(data);
                    }
                }
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(record) = self.record.as_mut()
                    && let Some(status) = super::reply::grpc_status(trailers)
                {
                    record.grpc_status(status);
                }
            }
            Poll::Ready(None) => self.end(None),
            Poll::Ready(Some(Err(err))) => {
                let flag = match err.is::<body::RouteTimeout>() {
                    true => Flag::UpstreamTimeout,
                    false => Flag::UpstreamReset,
                };
                self.end(Some(flag));
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

impl<R: Ending> Drop for Logged<R> {
    fn drop(&mut self) {
        let flag = (!self.inner.is_end_stream()).then_some(Flag::DownstreamTerminated);
        self.end(flag);
    }
}
