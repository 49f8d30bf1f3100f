//! The `envoyHttpAls` and `envoyTcpAls` providers: each request and each
//! connection becomes an entry of Envoy's gRPC Access Log Service
//! (`envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`), as
//! Envoy's `http_grpc` and `tcp_grpc` access loggers send them when
//! istiod configures them: an `envoyHttpAls` provider gets an
//! `HTTPAccessLogEntry` for every request and connection, an
//! `envoyTcpAls` one a `TCPAccessLogEntry` (Envoy runs either logger on
//! both its HTTP and its TCP filter chains).
//!
//! Entries are batched and sent by [`crate::otlp`]'s exporter, one batch
//! at a time per provider. Unlike OTLP's `Export`, the service is one
//! long-lived client stream per provider: its first message carries the
//! identifier (this agent's node and the provider's log name), each
//! message a batch. The server answers only when the stream ends (the
//! API is lossy by design, as in Envoy): a batch counts as exported once
//! the stream's HTTP/2 encoder has pulled it, which may be up to a
//! flow-control window ahead of what the service has read; a stream that
//! ended is opened again, with its identifier, by the next batch, and
//! one that ended with an error is logged. A stream that is let go (its
//! export timed out, the provider changed) is closed, and cancelled if
//! the service has not answered within [`GRACE`]: a service that stops
//! reading holds no connection and no task for longer.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt as _;
use http::HeaderName;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use weft_proto::{
    access_log_entry::{
        AccessLogCommon, AccessLogType, ConnectionProperties, HttpAccessLogEntry,
        HttpRequestProperties, HttpResponseProperties, ResponseFlags, TcpAccessLogEntry,
        TlsProperties,
        http_access_log_entry::HttpVersion,
        response_flags::{Unauthorized, unauthorized::Reason},
        tls_properties::{
            CertificateProperties, TlsVersion,
            certificate_properties::{SubjectAltName, subject_alt_name::San},
        },
    },
    als::{
        StreamAccessLogsMessage,
        access_log_service_client::AccessLogServiceClient,
        stream_access_logs_message::{
            HttpAccessLogEntries, Identifier, LogEntries, TcpAccessLogEntries,
        },
    },
    core::{Address, Node, RequestMethod, SocketAddress, node, socket_address},
    telemetry::{GrpcAccessLog, grpc_access_log::Kind as GrpcKind},
};

use super::{
    entry::{Entry, Header},
    format::Format,
    policy::Side,
};
use crate::{
    l7::reply::Flag,
    state::{Workload, WorkloadStore},
};

/// The exporter of access-log service entries.
pub type Exporter = crate::otlp::Exporter<Entries>;

/// How long a stream that is let go may take to end before it is
/// cancelled.
pub const GRACE: Duration = Duration::from_secs(5);

/// A provider's failed streams are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Which entries a provider gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `envoyHttpAls`.
    Http,
    /// `envoyTcpAls`.
    Tcp,
}

/// An `envoyHttpAls` or `envoyTcpAls` provider: its service, what its
/// entries carry, and its stream.
#[derive(Debug)]
pub struct Service {
    /// The provider's name, lower-cased.
    pub provider: String,
    pub kind: Kind,
    /// A hostname, `<namespace>/<hostname>`, or an IP.
    pub service: String,
    pub port: u16,
    pub log_name: String,
    /// `additionalRequestHeadersToLog` (each as named, and as the entry
    /// reads it: a pseudo-header from the request line) and
    /// `additionalResponseHeadersToLog`.
    request_headers: Vec<(String, Header)>,
    response_headers: Vec<HeaderName>,
    /// `filterStateObjectsToLog`: of them, weft has `upstream_peer` and
    /// `downstream_peer` (an older weft-control sends none: both).
    filter_state: Vec<String>,
    /// The stream open to the service, if any.
    stream: tokio::sync::Mutex<Option<Stream>>,
    /// When a failed stream was last logged.
    warned: Arc<Mutex<Option<Instant>>>,
}

/// The request headers an `HTTPRequestProperties` names a field for.
const REQUEST_FIELDS: [&str; 5] = [
    "user-agent",
    "referer",
    "x-forwarded-for",
    "x-request-id",
    "x-envoy-original-path",
];

impl Service {
    /// Converts a provider; with the format that makes a request keep the
    /// headers its entries carry. A header name that is none is left out
    /// (weft-control warns of it). The error names what the agent cannot
    /// send.
    pub fn compile(provider: &str, grpc: &GrpcAccessLog) -> Result<(Service, Format), String> {
        let port = u16::try_from(grpc.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {} is not a port", grpc.port))?;
        let kind = match grpc.kind() {
            GrpcKind::Http => Kind::Http,
            GrpcKind::Tcp => Kind::Tcp,
        };
        // Envoy's TCP logger has no additional headers.
        let (request_headers, response_headers) = match kind {
            Kind::Http => (
                grpc.request_headers
                    .iter()
                    .map(|n| (n.clone(), Header::parse(n)))
                    .filter(|(_, h)| *h != Header::Invalid)
                    .collect(),
                grpc.response_headers
                    .iter()
                    .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                    .collect(),
            ),
            Kind::Tcp => (Vec::new(), Vec::new()),
        };
        let mut kept = Vec::new();
        if kind == Kind::Http {
            kept.extend(REQUEST_FIELDS.map(HeaderName::from_static));
            kept.push(http::header::HOST);
        }
        for (_, header) in &request_headers {
            if let Header::Named(name) = header
                && !kept.contains(name)
            {
                kept.push(name.clone());
            }
        }
        let format = Format::fields(kept, response_headers.clone());
        Ok((
            Service {
                provider: provider.to_string(),
                kind,
                service: grpc.service.clone(),
                port,
                log_name: grpc.log_name.clone(),
                request_headers,
                response_headers,
                filter_state: if grpc.filter_state_objects.is_empty() {
                    vec!["upstream_peer".to_string(), "downstream_peer".to_string()]
                } else {
                    grpc.filter_state_objects.clone()
                },
                stream: tokio::sync::Mutex::default(),
                warned: Arc::default(),
            },
            format,
        ))
    }

    /// Whether its entries carry `side`'s peer.
    pub fn logs_peer(&self, side: Side) -> bool {
        self.logs_state(peer_key(side))
    }

    /// Whether it logs the filter state `name`.
    fn logs_state(&self, name: &str) -> bool {
        self.filter_state.iter().any(|n| n == name)
    }

    /// Takes over the stream of `old`, the same provider as compiled
    /// before a config push, if both name the same service, entry kind
    /// and log name (what its stream and identifier are): a push that
    /// leaves a provider as it was does not reopen its stream. Skipped
    /// if either stream is busy (a batch is being sent): the next batch
    /// then opens one.
    pub fn take_stream_of(&self, old: &Service) {
        fn stream_key(s: &Service) -> (&str, Kind, &str, u16, &str) {
            (&s.provider, s.kind, &s.service, s.port, &s.log_name)
        }
        if stream_key(self) != stream_key(old) {
            return;
        }
        if let (Ok(mut mine), Ok(mut theirs)) = (self.stream.try_lock(), old.stream.try_lock())
            && mine.is_none()
        {
            *mine = theirs.take();
        }
    }

    /// Ends its stream, if it has one, and waits for the service to
    /// answer it (for [`GRACE`] at most, then the stream is cancelled):
    /// at exit, so that what the stream took reaches the service before
    /// the process ends.
    pub async fn close(&self) {
        let stream = self.stream.lock().await.take();
        if let Some(stream) = stream {
            let _ = stream.end().await;
        }
    }
}

impl crate::otlp::Collector for Service {
    fn provider(&self) -> &str {
        &self.provider
    }

    fn address(&self) -> (&str, u16) {
        (&self.service, self.port)
    }
}

/// One entry, of the provider's kind (boxed: an entry is about a
/// kilobyte, and up to [`crate::otlp`]'s queue of them may wait).
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Http(Box<HttpAccessLogEntry>),
    Tcp(Box<TcpAccessLogEntry>),
}

/// The name of the filter state `side`'s peer is under, as Istio's peer
/// metadata filter (`envoy.filters.http.peer_metadata`, istiod's
/// `istio.metadata_exchange`) discovers them: a client side finds its
/// upstream, a server side its downstream.
pub fn peer_key(side: Side) -> &'static str {
    match side {
        Side::Client => "upstream_peer",
        Side::Server => "downstream_peer",
    }
}

/// The other side's workload, under [`peer_key`]: the client side's
/// upstream (the endpoint chosen, as chosen, else by its address), the server side's downstream (the
/// client, if the identity it proved, if any, is the workload's). Looked
/// up for an access-log service's entry only.
pub fn peer(
    e: &Entry<'_>,
    side: Side,
    store: &WorkloadStore,
) -> Option<(&'static str, Arc<Workload>)> {
    let key = peer_key(side);
    match side {
        Side::Client => {
            let workload = match e.upstream_workload {
                Some(chosen) => chosen.clone(),
                None => store.workload_by_ip(e.upstream_host?.ip())?,
            };
            Some((key, workload))
        }
        Side::Server => {
            let workload = store
                .workload_by_ip(e.downstream_remote?.ip())
                .filter(|w| e.peer_identity.is_none_or(|id| *id == w.identity))?;
            Some((key, workload))
        }
    }
}

/// The entry of `e` for `service`, with `peer`'s metadata if the
/// provider logs its filter state.
pub fn entry(
    service: &Service,
    e: &Entry<'_>,
    peer: Option<&(&'static str, Arc<Workload>)>,
) -> Item {
    let mut common = common(e);
    if let Some((name, workload)) = peer
        && service.logs_state(name)
    {
        common
            .filter_state_objects
            .insert(name.to_string(), peer_metadata(workload));
    }
    let common = Some(common);
    match service.kind {
        Kind::Tcp => Item::Tcp(Box::new(TcpAccessLogEntry {
            common_properties: common,
            connection_properties: Some(ConnectionProperties {
                received_bytes: e.bytes_received,
                sent_bytes: e.bytes_sent,
            }),
        })),
        Kind::Http => Item::Http(Box::new(HttpAccessLogEntry {
            common_properties: common,
            protocol_version: match e.protocol {
                "HTTP/1.0" => HttpVersion::Http10,
                "HTTP/1.1" => HttpVersion::Http11,
                "HTTP/2" => HttpVersion::Http2,
                "HTTP/3" => HttpVersion::Http3,
                _ => HttpVersion::ProtocolUnspecified,
            } as i32,
            request: Some(request(service, e)),
            response: Some(response(service, e)),
        })),
    }
}

/// What every entry has, as Envoy fills it.
fn common(e: &Entry<'_>) -> AccessLogCommon {
    AccessLogCommon {
        access_log_type: if e.http.is_some() {
            AccessLogType::DownstreamEnd
        } else {
            AccessLogType::TcpConnectionEnd
        } as i32,
        downstream_remote_address: e.downstream_remote.map(address),
        downstream_direct_remote_address: e.downstream_remote.map(address),
        downstream_local_address: e.downstream_local.map(address),
        // The downstream's mutual TLS: HBONE's, on the server side (the
        // client side's downstream is the app's plaintext connection, a
        // same-node client's a handover in the process).
        tls_properties: e.downstream_tls.then(|| tls(e)),
        start_time: Some(timestamp(e.start)),
        duration: Some(duration(e.duration)),
        // A request's: its answer's head from upstream, and the last byte
        // of an answer sent back (when the entry is written).
        time_to_last_rx_byte: e.request_duration.map(duration),
        time_to_first_upstream_rx_byte: e.response_duration.map(duration),
        time_to_last_downstream_tx_byte: e
            .http
            .is_some_and(|h| h.status != 0)
            .then(|| duration(e.duration)),
        upstream_remote_address: e.upstream_host.map(address),
        upstream_local_address: e.upstream_local.map(address),
        // Envoy names the cluster of the upstream host chosen: none
        // without one (no route, a denial, a local reply).
        upstream_cluster: if e.upstream_host.is_some() {
            e.upstream_cluster.to_string()
        } else {
            String::new()
        },
        response_flags: Some(flags(e)),
        upstream_transport_failure_reason: e.transport_failure.to_string(),
        route_name: e.route.to_string(),
        upstream_request_attempt_count: e.attempts,
        // A connection RBAC closed, as Envoy's network RBAC filter says
        // it (a request's denial is in its response code details).
        connection_termination_details: e.termination_details().unwrap_or_default(),
        ..Default::default()
    }
}

/// The downstream's mutual TLS: HBONE's, TLS 1.3, with both sides'
/// SPIFFE ids.
fn tls(e: &Entry<'_>) -> TlsProperties {
    let certificate = |identity: Option<&crate::state::Identity>| {
        identity.map(|id| CertificateProperties {
            subject_alt_name: vec![SubjectAltName {
                san: Some(San::Uri(id.to_string())),
            }],
            subject: String::new(),
        })
    };
    TlsProperties {
        tls_version: TlsVersion::TlSv13 as i32,
        tls_sni_hostname: e.sni.to_string(),
        local_certificate_properties: certificate(e.local_identity),
        peer_certificate_properties: certificate(e.peer_identity),
        ..Default::default()
    }
}

fn request(service: &Service, e: &Entry<'_>) -> HttpRequestProperties {
    let header = |name: &'static str| {
        e.request(&Header::Named(HeaderName::from_static(name)))
            .unwrap_or_default()
            .to_string()
    };
    let Some(http) = &e.http else {
        // A connection: an HTTP entry with nothing of a request, as
        // Envoy's HTTP logger writes on a TCP chain.
        return HttpRequestProperties {
            request_body_bytes: e.bytes_received,
            ..Default::default()
        };
    };
    HttpRequestProperties {
        request_method: method(http.method) as i32,
        scheme: e.request(&Header::Scheme).unwrap_or_default().to_string(),
        authority: e
            .request(&Header::Authority)
            .unwrap_or_default()
            .to_string(),
        path: http.path.to_string(),
        user_agent: header("user-agent"),
        referer: header("referer"),
        forwarded_for: header("x-forwarded-for"),
        request_id: header("x-request-id"),
        original_path: header("x-envoy-original-path"),
        request_body_bytes: e.bytes_received,
        request_headers: service
            .request_headers
            .iter()
            .filter_map(|(name, header)| {
                let value = e.request(header)?;
                Some((name.clone(), value.to_string()))
            })
            .collect(),
        ..Default::default()
    }
}

fn response(service: &Service, e: &Entry<'_>) -> HttpResponseProperties {
    HttpResponseProperties {
        response_code: Some(u32::from(e.response_code())).filter(|code| *code != 0),
        response_body_bytes: e.bytes_sent,
        response_headers: service
            .response_headers
            .iter()
            .filter_map(|name| {
                let value = e.response(&Header::Named(name.clone()))?;
                Some((name.to_string(), value.to_string()))
            })
            .collect(),
        response_code_details: e.code_details().to_string(),
        ..Default::default()
    }
}

fn method(method: &str) -> RequestMethod {
    match method {
        "GET" => RequestMethod::Get,
        "HEAD" => RequestMethod::Head,
        "POST" => RequestMethod::Post,
        "PUT" => RequestMethod::Put,
        "DELETE" => RequestMethod::Delete,
        "CONNECT" => RequestMethod::Connect,
        "OPTIONS" => RequestMethod::Options,
        "TRACE" => RequestMethod::Trace,
        "PATCH" => RequestMethod::Patch,
        _ => RequestMethod::MethodUnspecified,
    }
}

/// The entry's response flags, as Envoy's `ResponseFlags` fields. An
/// RBAC denial has none (Envoy's RBAC filters set no flag; the response
/// code details or the connection termination details say it).
fn flags(e: &Entry<'_>) -> ResponseFlags {
    let has = |flag| e.flags.has(flag);
    ResponseFlags {
        no_healthy_upstream: has(Flag::NoHealthyUpstream),
        upstream_connection_failure: has(Flag::UpstreamConnectFailure),
        upstream_overflow: has(Flag::UpstreamOverflow),
        no_route_found: has(Flag::NoRoute),
        upstream_retry_limit_exceeded: has(Flag::RetryLimitExceeded),
        upstream_request_timeout: has(Flag::UpstreamTimeout),
        fault_injected: has(Flag::FaultInjected),
        delay_injected: has(Flag::DelayInjected),
        downstream_connection_termination: has(Flag::DownstreamTerminated),
        upstream_connection_termination: has(Flag::UpstreamTerminated),
        upstream_remote_reset: has(Flag::UpstreamReset),
        no_cluster_found: has(Flag::NoCluster),
        // UAEX: denied by the external authorization service.
        unauthorized_details: has(Flag::ExternalDenied).then_some(Unauthorized {
            reason: Reason::ExternalService as i32,
        }),
        ..Default::default()
    }
}

/// A peer's metadata as Istio's `WorkloadMetadataObject` serializes it
/// for an access log when it was discovered by address (as a waypoint,
/// or a sidecar without the peer's headers, finds it from the Workload
/// API): a `google.protobuf.Struct` of its workload type and name,
/// instance (pod) name, cluster, namespace, canonical service and
/// revision, app and version (from the canonical names, as Istio's
/// discovery fills them) and SPIFFE identity, those set, packed into an
/// `Any`.
fn peer_metadata(w: &Workload) -> prost_types::Any {
    let identity = w.identity.to_string();
    let fields = [
        ("type", w.names.workload_type),
        ("workload", &w.names.workload),
        ("name", &w.name),
        ("cluster", &w.names.cluster),
        ("namespace", &w.namespace),
        ("service", &w.names.canonical_service),
        ("revision", &w.names.canonical_revision),
        ("app", &w.names.canonical_service),
        ("version", &w.names.canonical_revision),
        ("identity", &identity),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(key, value)| {
        let value = prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(value.to_string())),
        };
        (key.to_string(), value)
    })
    .collect();
    prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.Struct".to_string(),
        value: prost::Message::encode_to_vec(&prost_types::Struct { fields }),
    }
}

fn address(addr: SocketAddr) -> Address {
    Address {
        address: Some(weft_proto::core::address::Address::SocketAddress(
            SocketAddress {
                protocol: socket_address::Protocol::Tcp as i32,
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(addr.port().into())),
            },
        )),
    }
}

fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A message and the sender told when the stream takes it.
type Sent = (StreamAccessLogsMessage, oneshot::Sender<()>);

/// A stream open to a provider's service.
#[derive(Debug)]
struct Stream {
    addr: SocketAddr,
    messages: mpsc::Sender<Sent>,
    /// Dropped with the stream: its task ends it (see [`GRACE`]).
    _close: oneshot::Sender<()>,
    /// Ends when the service has answered, or the stream failed or was
    /// cancelled.
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    /// Opens a stream to `service` on `channel`; its messages go as the
    /// HTTP/2 encoder pulls them. Its task logs how it failed, if it
    /// does.
    fn open(channel: Channel, addr: SocketAddr, service: &Service) -> Stream {
        let (messages, queue) = mpsc::channel::<Sent>(1);
        let (close, closing) = oneshot::channel::<()>();
        let outbound =
            tokio_stream::wrappers::ReceiverStream::new(queue).map(|(message, taken)| {
                let _ = taken.send(());
                message
            });
        let provider = service.provider.clone();
        let warned = service.warned.clone();
        let task = tokio::spawn(async move {
            let mut client = AccessLogServiceClient::new(channel);
            let call = client.stream_access_logs(outbound);
            tokio::pin!(call);
            let ended = tokio::select! {
                ended = &mut call => Some(ended),
                // Let go: its messages' sender is gone with it, so the
                // request stream has ended, and the service may answer.
                _ = closing => tokio::time::timeout(GRACE, &mut call).await.ok(),
            };
            let reason = match ended {
                Some(Ok(_)) => return,
                Some(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                None => format!("no answer within {GRACE:?} of its end; cancelled"),
            };
            let now = Instant::now();
            let mut last = warned.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
                *last = Some(now);
                drop(last);
                tracing::warn!(provider, %addr, %reason, "an access-log service stream failed; entries it had taken may be lost");
            }
        });
        Stream {
            addr,
            messages,
            _close: close,
            task,
        }
    }

    /// Ends the request stream; its task, which ends once the service
    /// has answered (within [`GRACE`]).
    fn end(self) -> tokio::task::JoinHandle<()> {
        let Stream {
            messages,
            _close,
            task,
            ..
        } = self;
        drop((messages, _close));
        task
    }
}

/// Access-log service entries, and the node that sends them.
pub struct Entries {
    node: Node,
}

impl Entries {
    /// Entries sent by the agent of node `node` (the stream's identifier
    /// names it, as Envoy's names its own node).
    pub fn new(node: &str) -> Entries {
        Entries {
            node: Node {
                id: node.to_string(),
                user_agent_name: "weft".to_string(),
                user_agent_version_type: Some(node::UserAgentVersionType::UserAgentVersion(
                    env!("CARGO_PKG_VERSION").to_string(),
                )),
                ..Default::default()
            },
        }
    }
}

impl crate::otlp::Signal for Entries {
    type Collector = Service;
    type Item = Item;
    /// A batch: a message per kind of entry in it (one, unless the
    /// provider's kind changed while entries waited).
    type Request = Vec<LogEntries>;
    const ITEMS: &'static str = "access-log service entries";

    fn request(items: Vec<Item>) -> Vec<LogEntries> {
        let mut http = Vec::new();
        let mut tcp = Vec::new();
        for item in items {
            match item {
                Item::Http(e) => http.push(*e),
                Item::Tcp(e) => tcp.push(*e),
            }
        }
        let mut messages = Vec::new();
        if !http.is_empty() {
            messages.push(LogEntries::HttpLogs(HttpAccessLogEntries {
                log_entry: http,
            }));
        }
        if !tcp.is_empty() {
            messages.push(LogEntries::TcpLogs(TcpAccessLogEntries { log_entry: tcp }));
        }
        messages
    }

    /// Sends the batch on the provider's stream, opening one (its first
    /// message with the identifier) when it has none to `addr` or it
    /// ended; done when the stream has taken it.
    async fn export(
        &self,
        channel: Channel,
        service: &Service,
        addr: SocketAddr,
        batch: Vec<LogEntries>,
    ) -> Result<(), tonic::Status> {
        let mut slot = service.stream.lock().await;
        let (stream, mut identifier) = match slot.take() {
            Some(stream) if stream.addr == addr && !stream.messages.is_closed() => (stream, None),
            _ => (
                Stream::open(channel, addr, service),
                Some(Identifier {
                    node: Some(self.node.clone()),
                    log_name: service.log_name.clone(),
                }),
            ),
        };
        for entries in batch {
            let message = StreamAccessLogsMessage {
                identifier: identifier.take(),
                log_entries: Some(entries),
            };
            let (taken, on_taken) = oneshot::channel();
            if stream.messages.send((message, taken)).await.is_err() || on_taken.await.is_err() {
                // The stream is let go (and its task logs why it ended).
                return Err(tonic::Status::unavailable(format!(
                    "the stream to {addr} ended before it took the batch"
                )));
            }
        }
        *slot = Some(stream);
        Ok(())
    }
}

#[cfg(test)]
#[path = "als_tests.rs"]
pub(super) mod tests;
