//! `otlp-receiver`: an OpenTelemetry OTLP/gRPC receiver of traces
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`) and
//! logs (`opentelemetry.proto.collector.logs.v1.LogsService/Export`),
//! and an Envoy gRPC access-log service
//! (`envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`),
//! that prints every span, log record and access-log entry it receives
//! as one JSON line, for the tests of distributed tracing and of access
//! logs sent to a collector or a service.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming, transport::Server};
use weft_proto::access_log_entry::{AccessLogCommon, ResponseFlags};
use weft_proto::als::access_log_service_server::{AccessLogService, AccessLogServiceServer};
use weft_proto::als::stream_access_logs_message::LogEntries;
use weft_proto::als::{StreamAccessLogsMessage, StreamAccessLogsResponse};
use weft_proto::core::{Address, address, socket_address};

#[derive(Debug, clap::Args)]
pub struct OtlpReceiverArgs {
    /// Port to listen on, on 0.0.0.0.
    #[arg(long)]
    pub port: u16,
}

pub async fn run(args: OtlpReceiverArgs) -> Result<ExitCode> {
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    crate::emit(&format!("otlp receiver on {addr}"))?;
    serve(listener, crate::emit).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the trace and logs services on `listener` until the process is
/// stopped, handing each span's and each log record's JSON line to `out`.
pub async fn serve<F>(listener: tokio::net::TcpListener, out: F) -> Result<()>
where
    F: Fn(&str) -> Result<()> + Send + Sync + 'static,
{
    let receiver = std::sync::Arc::new(Receiver {
        out,
        streams: Default::default(),
    });
    Server::builder()
        .add_service(TraceServiceServer::from_arc(receiver.clone()))
        .add_service(LogsServiceServer::from_arc(receiver.clone()))
        .add_service(AccessLogServiceServer::from_arc(receiver))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .context("serving OTLP")
}

struct Receiver<F> {
    /// Where the lines go: stdout, but for tests.
    out: F,
    /// Access-log streams opened so far.
    streams: std::sync::atomic::AtomicUsize,
}

impl<F> Receiver<F>
where
    F: Fn(&str) -> Result<()>,
{
    fn print(&self, line: &impl Serialize) -> Result<(), Status> {
        let json = serde_json::to_string(line).expect("plain data serialises");
        (self.out)(&json).map_err(|e| Status::internal(format!("{e:#}")))
    }
}

#[tonic::async_trait]
impl<F> LogsService for Receiver<F>
where
    F: Fn(&str) -> Result<()> + Send + Sync + 'static,
{
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        for line in log_lines(&request.into_inner()) {
            self.print(&line)?;
        }
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The line printed per log record (its first key, `body`, tells it from
/// a span's).
#[derive(Debug, PartialEq, Serialize)]
pub struct LogLine {
    /// A string body as it is; any other value as text.
    body: String,
    attributes: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
    /// The instrumentation scope's name; empty when there is none.
    scope: String,
    time_unix_nano: u64,
    /// Lower-case hex; empty when the record has none.
    trace_id: String,
    span_id: String,
}

/// One line per log record of `request`, in the order received.
pub fn log_lines(request: &ExportLogsServiceRequest) -> Vec<LogLine> {
    let mut lines = Vec::new();
    for rl in &request.resource_logs {
        let resource = attributes(rl.resource.as_ref().map_or(&[][..], |r| &r.attributes));
        for sl in &rl.scope_logs {
            let scope = sl
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for record in &sl.log_records {
                lines.push(LogLine {
                    body: value_text(record.body.as_ref()),
                    attributes: attributes(&record.attributes),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    time_unix_nano: record.time_unix_nano,
                    trace_id: hex(&record.trace_id),
                    span_id: hex(&record.span_id),
                });
            }
        }
    }
    lines
}

#[tonic::async_trait]
impl<F> TraceService for Receiver<F>
where
    F: Fn(&str) -> Result<()> + Send + Sync + 'static,
{
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for line in lines(&request.into_inner()) {
            self.print(&line)?;
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The line printed per span.
#[derive(Debug, PartialEq, Serialize)]
pub struct SpanLine {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: &'static str,
    service: String,
    resource: BTreeMap<String, String>,
    attributes: BTreeMap<String, String>,
    status: &'static str,
    start_unix_nano: u64,
    end_unix_nano: u64,
}

/// One line per span of `request`, in the order received.
pub fn lines(request: &ExportTraceServiceRequest) -> Vec<SpanLine> {
    request
        .resource_spans
        .iter()
        .flat_map(|rs: &ResourceSpans| {
            let resource = attributes(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(move |span| SpanLine::of(span, resource.clone()))
        })
        .collect()
}

impl SpanLine {
    fn of(span: &Span, resource: BTreeMap<String, String>) -> SpanLine {
        SpanLine {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: hex(&span.parent_span_id),
            name: span.name.clone(),
            kind: kind_name(span.kind),
            service: resource.get("service.name").cloned().unwrap_or_default(),
            resource,
            attributes: attributes(&span.attributes),
            status: status_name(span.status.as_ref().map_or(0, |s| s.code)),
            start_unix_nano: span.start_time_unix_nano,
            end_unix_nano: span.end_time_unix_nano,
        }
    }
}

/// Lower-case hex; `""` for no bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "SERVER",
        Ok(SpanKind::Client) => "CLIENT",
        Ok(SpanKind::Internal) => "INTERNAL",
        Ok(SpanKind::Producer) => "PRODUCER",
        Ok(SpanKind::Consumer) => "CONSUMER",
        Ok(SpanKind::Unspecified) | Err(_) => "UNSPECIFIED",
    }
}

fn status_name(code: i32) -> &'static str {
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => "OK",
        Ok(StatusCode::Error) => "ERROR",
        Ok(StatusCode::Unset) | Err(_) => "UNSET",
    }
}

/// Attributes as strings, by key (the last of a repeated key wins).
fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect()
}

/// An attribute value as text: strings as they are, numbers and booleans
/// formatted, bytes in hex, arrays and key-value lists as compact JSON
/// of their values as text; `""` when absent (or a profiles-only string
/// table index).
fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        // A profiles-only string table index: as if absent, as OTLP says.
        None | Some(Value::StringValueStrindex(_)) => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| value_text(Some(v))).collect();
            serde_json::to_string(&items).expect("strings serialise")
        }
        Some(Value::KvlistValue(l)) => {
            serde_json::to_string(&attributes(&l.values)).expect("strings serialise")
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status as SpanStatus};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// A request with `spans`, from service `web.shop`.
    pub(crate) fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", Value::StringValue("web.shop".into())),
                        kv("k8s.pod.ip", Value::StringValue("10.1.1.2".into())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// A root server span with attributes of every kind.
    pub(crate) fn span() -> Span {
        Span {
            trace_id: (1..=16).collect(),
            span_id: vec![0xab; 8],
            parent_span_id: vec![],
            name: "web.shop.svc.cluster.local:80/*".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_002_000_000,
            attributes: vec![
                kv("http.status_code", Value::StringValue("200".into())),
                kv("node_id", Value::IntValue(-3)),
                kv("ratio", Value::DoubleValue(0.5)),
                kv("whole", Value::DoubleValue(2.0)),
                kv("sampled", Value::BoolValue(true)),
                kv("raw", Value::BytesValue(vec![0, 255])),
                kv(
                    "list",
                    Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(Value::StringValue("a".into())),
                            },
                            AnyValue {
                                value: Some(Value::IntValue(1)),
                            },
                        ],
                    }),
                ),
                kv(
                    "map",
                    Value::KvlistValue(KeyValueList {
                        values: vec![kv("b", Value::BoolValue(false))],
                    }),
                ),
                KeyValue {
                    key: "none".into(),
                    value: None,
                    ..Default::default()
                },
            ],
            status: Some(SpanStatus {
                message: String::new(),
                code: StatusCode::Error as i32,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn log_line_shape() {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource::default()),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 7,
                        body: Some(AnyValue {
                            value: Some(Value::StringValue("[x] \"GET / HTTP/1.1\" 200\n".into())),
                        }),
                        attributes: vec![kv("code", Value::StringValue("200".into()))],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let lines = log_lines(&request);
        assert_eq!(
            serde_json::to_string(&lines[0]).unwrap(),
            r#"{"body":"[x] \"GET / HTTP/1.1\" 200\n","attributes":{"code":"200"},"resource":{},"scope":"","time_unix_nano":7,"trace_id":"","span_id":""}"#
        );
    }

    #[test]
    fn ids_are_lower_case_hex() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&(1..=16).collect::<Vec<u8>>()).len(), 32);
    }

    #[test]
    fn span_line_shape() {
        let lines = lines(&request(vec![span()]));
        assert_eq!(lines.len(), 1);
        assert_eq!(
            serde_json::to_string(&lines[0]).unwrap(),
            r#"{"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"abababababababab","parent_span_id":"","name":"web.shop.svc.cluster.local:80/*","kind":"SERVER","service":"web.shop","resource":{"k8s.pod.ip":"10.1.1.2","service.name":"web.shop"},"attributes":{"http.status_code":"200","list":"[\"a\",\"1\"]","map":"{\"b\":\"false\"}","node_id":"-3","none":"","ratio":"0.5","raw":"00ff","sampled":"true","whole":"2"},"status":"ERROR","start_unix_nano":1700000000000000000,"end_unix_nano":1700000000002000000}"#
        );
    }

    #[test]
    fn kinds_statuses_and_missing_parts() {
        let kinds = [
            (0, "UNSPECIFIED"),
            (1, "INTERNAL"),
            (2, "SERVER"),
            (3, "CLIENT"),
            (4, "PRODUCER"),
            (5, "CONSUMER"),
            (99, "UNSPECIFIED"),
        ];
        for (kind, name) in kinds {
            assert_eq!(kind_name(kind), name);
        }
        for (code, name) in [(0, "UNSET"), (1, "OK"), (2, "ERROR"), (7, "UNSET")] {
            assert_eq!(status_name(code), name);
        }
        let child = Span {
            parent_span_id: vec![0x01; 8],
            kind: SpanKind::Client as i32,
            status: None,
            ..span()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![
                    ScopeSpans {
                        spans: vec![child.clone()],
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: vec![span()],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        };
        let lines = lines(&request);
        assert_eq!(lines.len(), 2);
        let l = &lines[0];
        assert_eq!(
            (l.parent_span_id.as_str(), l.kind, l.status),
            ("0101010101010101", "CLIENT", "UNSET")
        );
        assert!(l.service.is_empty() && l.resource.is_empty());
        assert_eq!(lines[1].kind, "SERVER");
    }
}

#[tonic::async_trait]
impl<F> AccessLogService for Receiver<F>
where
    F: Fn(&str) -> Result<()> + Send + Sync + 'static,
{
    /// Prints each entry of the stream as it comes; answers when the
    /// client ends the stream.
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let stream = self
            .streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut messages = request.into_inner();
        let mut named = (String::new(), String::new());
        let mut first = true;
        while let Some(message) = messages.message().await? {
            if let Some(identifier) = &message.identifier {
                named = (
                    identifier
                        .node
                        .as_ref()
                        .map(|n| n.id.clone())
                        .unwrap_or_default(),
                    identifier.log_name.clone(),
                );
            }
            let context = StreamContext {
                stream,
                identified: message.identifier.is_some(),
                first,
                node_id: &named.0,
                log_name: &named.1,
            };
            for line in als_lines(&context, &message) {
                self.print(&line)?;
            }
            first = false;
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

/// What an entry's line says of its stream.
pub struct StreamContext<'a> {
    /// The stream's number, from 0, in the order opened.
    pub stream: usize,
    /// Whether the entry's message carried the identifier.
    pub identified: bool,
    /// Whether it is the stream's first message.
    pub first: bool,
    /// The identifier's node id and log name, as the stream's first
    /// message gave them.
    pub node_id: &'a str,
    pub log_name: &'a str,
}

/// The line printed per access-log entry (its first key, `als`, the
/// entry's kind, tells it from a span's and a record's).
#[derive(Debug, PartialEq, Serialize)]
pub struct AlsLine {
    /// `http` or `tcp`.
    als: &'static str,
    stream: usize,
    identified: bool,
    first: bool,
    node_id: String,
    log_name: String,
    method: String,
    path: String,
    authority: String,
    protocol: String,
    user_agent: String,
    request_id: String,
    request_headers: BTreeMap<String, String>,
    response_code: u32,
    response_code_details: String,
    response_headers: BTreeMap<String, String>,
    /// The set `ResponseFlags` fields, by name.
    response_flags: Vec<&'static str>,
    upstream_cluster: String,
    route_name: String,
    /// `ip:port`, or `""`.
    downstream_remote: String,
    downstream_local: String,
    upstream_remote: String,
    /// The TLS properties' peer and local URI SANs; `""` without TLS.
    peer_san: String,
    local_san: String,
    received_bytes: u64,
    sent_bytes: u64,
    start_unix_nano: u64,
    /// The entry's `duration`, `time_to_first_upstream_rx_byte` and
    /// `time_to_last_downstream_tx_byte`, in nanoseconds (`null`: unset).
    duration_nanos: Option<u64>,
    first_upstream_rx_nanos: Option<u64>,
    last_downstream_tx_nanos: Option<u64>,
    /// Each filter state object: a `google.protobuf.Struct`'s string
    /// fields; any other type's URL under `@type`.
    filter_state: BTreeMap<String, BTreeMap<String, String>>,
}

fn nanos(d: prost_types::Duration) -> u64 {
    d.seconds as u64 * 1_000_000_000 + d.nanos as u64
}

/// One line per entry of `message`.
pub fn als_lines(context: &StreamContext<'_>, message: &StreamAccessLogsMessage) -> Vec<AlsLine> {
    let line = |als, common: Option<&AccessLogCommon>| {
        let common = common.cloned().unwrap_or_default();
        let san = |c: Option<
            &weft_proto::access_log_entry::tls_properties::CertificateProperties,
        >| {
            use weft_proto::access_log_entry::tls_properties::certificate_properties::subject_alt_name::San;
            c.and_then(|c| c.subject_alt_name.first())
                .and_then(|s| match &s.san {
                    Some(San::Uri(uri)) => Some(uri.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        let tls = common.tls_properties.as_ref();
        AlsLine {
            als,
            stream: context.stream,
            identified: context.identified,
            first: context.first,
            node_id: context.node_id.to_string(),
            log_name: context.log_name.to_string(),
            method: String::new(),
            path: String::new(),
            authority: String::new(),
            protocol: String::new(),
            user_agent: String::new(),
            request_id: String::new(),
            request_headers: BTreeMap::new(),
            response_code: 0,
            response_code_details: String::new(),
            response_headers: BTreeMap::new(),
            response_flags: flag_names(common.response_flags.as_ref()),
            upstream_cluster: common.upstream_cluster.clone(),
            route_name: common.route_name.clone(),
            downstream_remote: address_text(common.downstream_remote_address.as_ref()),
            downstream_local: address_text(common.downstream_local_address.as_ref()),
            upstream_remote: address_text(common.upstream_remote_address.as_ref()),
            peer_san: san(tls.and_then(|t| t.peer_certificate_properties.as_ref())),
            local_san: san(tls.and_then(|t| t.local_certificate_properties.as_ref())),
            received_bytes: 0,
            sent_bytes: 0,
            start_unix_nano: common
                .start_time
                .map_or(0, |t| t.seconds as u64 * 1_000_000_000 + t.nanos as u64),
            duration_nanos: common.duration.map(nanos),
            first_upstream_rx_nanos: common.time_to_first_upstream_rx_byte.map(nanos),
            last_downstream_tx_nanos: common.time_to_last_downstream_tx_byte.map(nanos),
            filter_state: common
                .filter_state_objects
                .iter()
                .map(|(name, any)| (name.clone(), struct_fields(any)))
                .collect(),
        }
    };
    match &message.log_entries {
        Some(LogEntries::HttpLogs(entries)) => entries
            .log_entry
            .iter()
            .map(|e| {
                let request = e.request.clone().unwrap_or_default();
                let response = e.response.clone().unwrap_or_default();
                AlsLine {
                    method: request.request_method().as_str_name().to_string(),
                    path: request.path,
                    authority: request.authority,
                    protocol: e.protocol_version().as_str_name().to_string(),
                    user_agent: request.user_agent,
                    request_id: request.request_id,
                    request_headers: request.request_headers.into_iter().collect(),
                    response_code: response.response_code.unwrap_or(0),
                    response_code_details: response.response_code_details,
                    response_headers: response.response_headers.into_iter().collect(),
                    received_bytes: request.request_body_bytes,
                    sent_bytes: response.response_body_bytes,
                    ..line("http", e.common_properties.as_ref())
                }
            })
            .collect(),
        Some(LogEntries::TcpLogs(entries)) => entries
            .log_entry
            .iter()
            .map(|e| {
                let connection = e.connection_properties.unwrap_or_default();
                AlsLine {
                    received_bytes: connection.received_bytes,
                    sent_bytes: connection.sent_bytes,
                    ..line("tcp", e.common_properties.as_ref())
                }
            })
            .collect(),
        None => Vec::new(),
    }
}

/// A `google.protobuf.Struct` packed in `any`: its string fields (others
/// as their debug text); another type: `{"@type": its URL}`.
fn struct_fields(any: &prost_types::Any) -> BTreeMap<String, String> {
    use prost::Message as _;
    let parsed = (any.type_url == "type.googleapis.com/google.protobuf.Struct")
        .then(|| prost_types::Struct::decode(any.value.as_slice()).ok())
        .flatten();
    let Some(parsed) = parsed else {
        return [("@type".to_string(), any.type_url.clone())].into();
    };
    parsed
        .fields
        .into_iter()
        .map(|(k, v)| match v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => (k, s),
            other => (k, format!("{other:?}")),
        })
        .collect()
}

fn address_text(a: Option<&Address>) -> String {
    match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(port)) => {
                format!("{}:{port}", s.address)
            }
            _ => s.address.clone(),
        },
        None => String::new(),
    }
}

fn flag_names(flags: Option<&ResponseFlags>) -> Vec<&'static str> {
    let Some(f) = flags else { return Vec::new() };
    [
        (f.no_healthy_upstream, "no_healthy_upstream"),
        (f.upstream_request_timeout, "upstream_request_timeout"),
        (f.upstream_remote_reset, "upstream_remote_reset"),
        (f.upstream_connection_failure, "upstream_connection_failure"),
        (
            f.upstream_connection_termination,
            "upstream_connection_termination",
        ),
        (f.upstream_overflow, "upstream_overflow"),
        (f.no_route_found, "no_route_found"),
        (f.delay_injected, "delay_injected"),
        (f.fault_injected, "fault_injected"),
        (f.unauthorized_details.is_some(), "unauthorized_details"),
        (
            f.downstream_connection_termination,
            "downstream_connection_termination",
        ),
        (
            f.upstream_retry_limit_exceeded,
            "upstream_retry_limit_exceeded",
        ),
        (f.no_cluster_found, "no_cluster_found"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}
