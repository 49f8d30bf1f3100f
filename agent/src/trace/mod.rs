//! Distributed tracing at L7, as Istio's proxies do it: each HTTP request
//! the agent proxies continues the app's trace context (W3C
//! `traceparent`, or B3), or starts a trace when it has none and the
//! sampling percentage says so; the agent records a span for its side
//! (CLIENT at the source pod's agent, SERVER at the destination's),
//! writes that span into the request as the next hop's parent, and sends
//! sampled spans to the providers the mesh config and the Telemetry API
//! name ([`export`], OTLP over gRPC).
//!
//! - [`context`]: reading and writing the headers.
//! - [`policy`]: `weft.telemetry.v1.TracingPolicy` and its levels.
//! - [`export`]: the batching exporter.
//!
//! The spans' names and attributes are Envoy's as Istio configures it:
//! the operation `<service host>:<port>/*`, and `http.url`,
//! `http.method`, `http.status_code`, `response_flags`,
//! `upstream_cluster`, `guid:x-request-id`, `istio.*`, ...

pub mod context;
pub mod export;
pub mod policy;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderName};
use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    trace::v1::{Span, Status, span::SpanKind, status::StatusCode},
};

use self::{
    context::{Incoming, SpanContext},
    export::{Exporter, Finished, Stats, attribute, int_attribute},
    policy::{Effective, Policies, TagValue},
};
use crate::{access_log::Side, state::Workload, state::WorkloadStore};

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Istio's default `maxPathTagLength`: `http.url` is cut to this.
const MAX_PATH_TAG_LENGTH: usize = 256;

/// The tracing policies and the exporter, shared by every proxy of the
/// agent.
pub struct Tracer {
    pub policies: Policies,
    exporter: Exporter,
}

impl Tracer {
    pub fn new(store: Arc<WorkloadStore>) -> Tracer {
        Tracer {
            policies: Policies::default(),
            exporter: Exporter::new(store),
        }
    }

    /// Sends the spans queued now; waits for at most `within`.
    pub async fn flush(&self, within: std::time::Duration) {
        self.exporter.flush(within).await;
    }

    /// What the exporter did, for the agent's metrics.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.exporter.stats
    }

    /// The client side of a request `workload` sent: the span to record,
    /// or `None` when its tracing is off. [`ActiveSpan::write`] puts it
    /// into the request once the request is ready to go.
    pub fn client(
        self: &Arc<Self>,
        workload: &Arc<Workload>,
        headers: &HeaderMap,
    ) -> Option<ActiveSpan> {
        self.begin(workload, || workload.clone(), headers, Side::Client)
    }

    /// The server side of a request that reached `workload` (the pod as
    /// enrolled; `current` fetches it as it is now, only for a span): the
    /// span, already written into `headers` as the app's parent.
    pub fn server(
        self: &Arc<Self>,
        workload: &Workload,
        current: impl FnOnce() -> Arc<Workload>,
        headers: &mut HeaderMap,
    ) -> Option<ActiveSpan> {
        let mut span = self.begin(workload, current, headers, Side::Server)?;
        span.write(headers);
        Some(span)
    }

    /// The client side of a TCP connection `workload` opened (L4): a new
    /// trace, sampled by the percentage; its context goes in the HBONE
    /// CONNECT's `traceparent`.
    pub fn connection(
        self: &Arc<Self>,
        workload: &Workload,
        current: impl FnOnce() -> Arc<Workload>,
    ) -> Option<ActiveSpan> {
        self.begin(workload, current, &HeaderMap::new(), Side::Client)
    }

    /// The server side of a TCP connection that arrived over HBONE: a
    /// child of the CONNECT's `traceparent`, traced only when the client
    /// sampled it (a CONNECT from a proxy that does not trace carries an
    /// unsampled, made-up context).
    pub fn accepted(
        self: &Arc<Self>,
        workload: &Workload,
        current: impl FnOnce() -> Arc<Workload>,
        connect: &HeaderMap,
    ) -> Option<ActiveSpan> {
        if Incoming::read(connect).sampled != Some(true) {
            return None;
        }
        self.begin(workload, current, connect, Side::Server)
    }

    /// The span of `side` of `workload`'s traffic, when its tracing is
    /// on; `current` (the workload as it is now, for the span's names and
    /// attributes) is called only then.
    fn begin(
        self: &Arc<Self>,
        workload: &Workload,
        current: impl FnOnce() -> Arc<Workload>,
        headers: &HeaderMap,
        side: Side,
    ) -> Option<ActiveSpan> {
        let effective = self
            .policies
            .resolve(&workload.namespace, &workload.uid, side)?;
        let incoming = Incoming::read(headers);
        let context = SpanContext::child_of(&incoming, || effective.sample());
        let mut span = ActiveSpan {
            tracer: self.clone(),
            workload: current(),
            side,
            context,
            parent: incoming.parent.map(|p| p.span_id),
            trace_state: headers
                .get(&TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            start: SystemTime::now(),
            started: Instant::now(),
            request_id: None,
            tags: Vec::new(),
            captured: false,
            effective,
        };
        span.capture(headers);
        Some(span)
    }
}

/// A span being recorded: started when the request arrived, sent when
/// its response has been.
pub struct ActiveSpan {
    tracer: Arc<Tracer>,
    effective: Arc<Effective>,
    workload: Arc<Workload>,
    side: Side,
    context: SpanContext,
    /// The caller's span.
    parent: Option<u64>,
    trace_state: String,
    start: SystemTime,
    started: Instant,
    request_id: Option<String>,
    /// Attributes taken from the request (user agent, custom tags).
    tags: Vec<KeyValue>,
    captured: bool,
}

/// What the request's end adds to its span.
pub struct End<'a> {
    /// `<service host>:<port>/*`.
    pub operation: String,
    pub method: &'a str,
    /// `http://<authority><path>`.
    pub url: String,
    pub protocol: &'a str,
    /// 0: no response (reset).
    pub status: u16,
    pub grpc_status: Option<u32>,
    /// Envoy's response flags, `-` for none.
    pub flags: String,
    pub request_size: u64,
    pub response_size: u64,
    /// Istio's cluster name (`outbound|9080|v1|reviews...`).
    pub upstream_cluster: &'a str,
    /// The other end: the upstream endpoint (client side) or the client
    /// (server side).
    pub peer: Option<SocketAddr>,
}

impl ActiveSpan {
    /// This span's trace id and span id.
    pub fn ids(&self) -> (u128, u64) {
        (self.context.trace_id, self.context.span_id)
    }

    /// Writes this span into the request as its callee's parent.
    pub fn write(&mut self, headers: &mut HeaderMap) {
        self.context.write(headers, self.parent);
        self.capture(headers);
    }

    /// The workload the span is reported for.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// This span's context, as it goes on the wire.
    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    /// What the span keeps from the request's headers: its id, user
    /// agent and header tags (the first time they are seen).
    fn capture(&mut self, headers: &HeaderMap) {
        if self.request_id.is_none() {
            self.request_id = headers
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        if self.captured || !self.context.sampled {
            return;
        }
        self.captured = true;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(agent) = header("user-agent") {
            self.tags.push(attribute("user_agent", agent));
        }
        for (name, value) in &self.effective.custom_tags {
            let value = match value {
                TagValue::Literal(v) | TagValue::Environment(v) => v.as_str(),
                TagValue::Header { name, default } => header(name).unwrap_or(default),
            };
            self.tags.push(attribute(name, value));
        }
    }

    /// Ends an HTTP request's span and sends it, if it is sampled and
    /// reported.
    pub fn finish(self, end: End<'_>) {
        if !self.reported() {
            return;
        }
        let url_limit = self
            .effective
            .providers
            .iter()
            .find(|p| p.exports)
            .map_or(MAX_PATH_TAG_LENGTH, |p| {
                p.max_tag_length.min(MAX_PATH_TAG_LENGTH)
            });
        let mut attributes = vec![
            attribute("http.url", truncate(&end.url, url_limit)),
            attribute("http.method", end.method),
            attribute("http.protocol", end.protocol),
            attribute("http.status_code", end.status.to_string()),
            attribute("response_flags", end.flags),
            int_attribute("request_size", end.request_size as i64),
            int_attribute("response_size", end.response_size as i64),
            attribute("upstream_cluster", end.upstream_cluster),
            attribute("upstream_cluster.name", end.upstream_cluster),
        ];
        if let Some(code) = end.grpc_status {
            attributes.push(attribute("grpc.status_code", code.to_string()));
        }
        let error = end.status == 0 || end.status >= 500;
        self.send(end.operation, attributes, end.peer, error);
    }

    /// Ends a TCP connection's span (L4, carried by the HBONE CONNECT's
    /// `traceparent`) and sends it, if it is sampled and reported.
    pub fn finish_tcp(self, end: TcpEnd<'_>) {
        if !self.reported() {
            return;
        }
        let mut attributes = vec![
            attribute("net.protocol", end.protocol),
            int_attribute("bytes_sent", end.bytes_sent as i64),
            int_attribute("bytes_received", end.bytes_received as i64),
            attribute("upstream_cluster", end.upstream_cluster),
        ];
        if let Some(error) = end.error {
            attributes.push(attribute("error.message", error));
        }
        let failed = end.error.is_some();
        self.send(end.operation, attributes, end.peer, failed);
    }

    fn reported(&self) -> bool {
        self.context.sampled && self.effective.exports()
    }

    /// Adds what every span carries and queues it for each provider.
    fn send(
        self,
        operation: String,
        mut attributes: Vec<KeyValue>,
        peer: Option<SocketAddr>,
        error: bool,
    ) {
        let duration = self.started.elapsed();
        let start_ns = unix_nanos(self.start);
        let w = &self.workload;
        let names = &w.names;
        attributes.extend(self.tags);
        attributes.extend([
            attribute("component", "proxy"),
            attribute("downstream_cluster", "-"),
            attribute("node_id", format!("weft-agent~{}", w.node)),
            attribute("istio.mesh_id", "cluster.local"),
            attribute("istio.namespace", w.namespace.as_str()),
            attribute("istio.canonical_service", names.canonical_service.as_str()),
            attribute(
                "istio.canonical_revision",
                names.canonical_revision.as_str(),
            ),
            attribute("istio.cluster_id", names.cluster.as_str()),
        ]);
        if let Some(id) = &self.request_id {
            attributes.push(attribute("guid:x-request-id", id.as_str()));
        }
        if let Some(peer) = peer {
            attributes.push(attribute("peer.address", peer.ip().to_string()));
        }
        if error {
            attributes.push(attribute("error", "true"));
        }
        attributes.sort_by(|a, b| a.key.cmp(&b.key));
        let span = Span {
            trace_id: self.context.trace_id.to_be_bytes().to_vec(),
            span_id: self.context.span_id.to_be_bytes().to_vec(),
            trace_state: self.trace_state,
            parent_span_id: self
                .parent
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            // W3C flags: sampled.
            flags: 1,
            name: operation,
            kind: match self.side {
                Side::Client => SpanKind::Client,
                Side::Server => SpanKind::Server,
            } as i32,
            start_time_unix_nano: start_ns,
            end_time_unix_nano: start_ns + duration.as_nanos() as u64,
            attributes,
            status: Some(Status {
                message: String::new(),
                code: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                } as i32,
            }),
            ..Default::default()
        };
        let resource = Arc::new(resource(w));
        for provider in self.effective.providers.iter().filter(|p| p.exports) {
            self.tracer.exporter.submit(
                provider.clone(),
                Finished {
                    resource: resource.clone(),
                    span: span.clone(),
                },
            );
        }
    }
}

/// What a TCP connection's end adds to its span.
pub struct TcpEnd<'a> {
    /// `<service host or address>:<port>`.
    pub operation: String,
    /// `HBONE`, `TCP`, ...
    pub protocol: &'a str,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub upstream_cluster: &'a str,
    pub peer: Option<SocketAddr>,
    /// Why the connection failed, if it did.
    pub error: Option<&'a str>,
}

/// `<host>:<port>` of the service whose port targets the workload's
/// `port` (the first by name), for the server side's span names.
pub fn served_as(workload: &Workload, port: u16) -> Option<String> {
    let (key, service_port, _) = workload
        .services
        .iter()
        .flat_map(|(key, ports)| ports.iter().map(move |(p, t)| (key, *p, *t)))
        .filter(|(_, service_port, target)| {
            *target == port || (*target == 0 && *service_port == port)
        })
        .min()?;
    let host = key.split_once('/').map_or(key.as_str(), |(_, h)| h);
    Some(format!("{host}:{service_port}"))
}

/// A workload's OTLP resource: `service.name` as Istio's default
/// (`APP_LABEL_AND_NAMESPACE`): `<canonical service>.<namespace>`.
fn resource(w: &Workload) -> Vec<KeyValue> {
    let service = match w.names.canonical_service.as_str() {
        "" => w.name.as_str(),
        name => name,
    };
    vec![
        attribute("service.name", format!("{service}.{}", w.namespace)),
        attribute("k8s.namespace.name", w.namespace.as_str()),
        attribute("k8s.pod.name", w.name.as_str()),
    ]
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
