//! The spans, access-log records and access-log service entries the mesh
//! exports, as `weft-sim-http otlp-receiver` prints them: tests of
//! distributed tracing and of `envoyOtelAls`, `envoyHttpAls` and
//! `envoyTcpAls` access logs run it in a pod ([`spawn_receiver`]), point
//! the mesh's tracing or access log at it, and read what it received
//! ([`spans`], [`wait_for_spans`], [`log_records`], [`als_entries`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::{Cluster, Pod, PodSpec, Process, ServicePort, wait_for};

/// How long a receiver may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`wait_for_spans`] waits, unless told otherwise.
pub const SPAN_TIMEOUT: Duration = Duration::from_secs(20);

/// One span, as the receiver prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Span {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// 16 lower-case hex digits; empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `SERVER`, `CLIENT`, `INTERNAL`, `PRODUCER`, `CONSUMER` or
    /// `UNSPECIFIED`.
    pub kind: String,
    /// The resource attribute `service.name`, or empty.
    pub service: String,
    /// The resource's attributes, values as strings.
    pub resource: BTreeMap<String, String>,
    /// The span's attributes, values as strings.
    pub attributes: BTreeMap<String, String>,
    /// `UNSET`, `OK` or `ERROR`.
    pub status: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl Span {
    /// A span attribute.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// A resource attribute.
    pub fn resource_attribute(&self, key: &str) -> Option<&str> {
        self.resource.get(key).map(String::as_str)
    }

    /// Whether it has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    /// Whether `parent` is its parent (same trace, parent's span id).
    pub fn is_child_of(&self, parent: &Span) -> bool {
        self.trace_id == parent.trace_id && self.parent_span_id == parent.span_id
    }
}

/// One log record, as the receiver prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogRecord {
    pub body: String,
    /// The record's attributes, values as strings.
    pub attributes: BTreeMap<String, String>,
    /// The resource's attributes, values as strings.
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name; empty when there is none.
    pub scope: String,
    pub time_unix_nano: u64,
    /// 32 lower-case hex digits; empty when the record has none.
    pub trace_id: String,
    /// 16 lower-case hex digits; empty when the record has none.
    pub span_id: String,
}

/// Every log record the receiver has printed so far, in the order
/// received.
pub fn log_records(receiver: &Process) -> Result<Vec<LogRecord>> {
    parse_lines(&receiver.log(), "{\"body\":")
        .with_context(|| format!("reading {}", receiver.name()))
}

/// One entry an Envoy gRPC access-log service got, as the receiver
/// prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AlsEntry {
    /// `http` (an `HTTPAccessLogEntry`) or `tcp`.
    pub als: String,
    /// The stream's number at the receiver, from 0, in the order opened.
    pub stream: usize,
    /// Whether the entry's message carried the stream's identifier.
    pub identified: bool,
    /// Whether the entry's message was its stream's first.
    pub first: bool,
    /// The identifier's node id and log name.
    pub node_id: String,
    pub log_name: String,
    /// Envoy's `RequestMethod` and `HTTPVersion` names (`GET`, `HTTP11`).
    pub method: String,
    pub path: String,
    pub authority: String,
    pub protocol: String,
    pub user_agent: String,
    pub request_id: String,
    pub request_headers: BTreeMap<String, String>,
    /// 0: none.
    pub response_code: u32,
    pub response_code_details: String,
    pub response_headers: BTreeMap<String, String>,
    /// The `ResponseFlags` fields set, by name.
    pub response_flags: Vec<String>,
    pub upstream_cluster: String,
    pub route_name: String,
    /// `ip:port`, or empty.
    pub downstream_remote: String,
    pub downstream_local: String,
    pub upstream_remote: String,
    /// The TLS properties' URI SANs; empty without TLS.
    pub peer_san: String,
    pub local_san: String,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub start_unix_nano: u64,
    /// The entry's `duration`, `time_to_first_upstream_rx_byte` and
    /// `time_to_last_downstream_tx_byte`, in nanoseconds.
    pub duration_nanos: Option<u64>,
    pub first_upstream_rx_nanos: Option<u64>,
    pub last_downstream_tx_nanos: Option<u64>,
    /// Each filter state object (`upstream_peer`, `downstream_peer`): a
    /// `google.protobuf.Struct`'s string fields.
    pub filter_state: BTreeMap<String, BTreeMap<String, String>>,
}

/// Every access-log service entry the receiver has printed so far, in
/// the order received.
pub fn als_entries(receiver: &Process) -> Result<Vec<AlsEntry>> {
    parse_lines(&receiver.log(), "{\"als\":")
        .with_context(|| format!("reading {}", receiver.name()))
}

/// The OpenTelemetry collector of the tests: a receiver on 4317 in the
/// pod `observability/otel-collector` (on node-1, the namespace made
/// here, out of the mesh), behind the Service
/// `otel-collector.observability.svc.cluster.local` (port `grpc-otlp`,
/// 4317).
pub fn collector(cluster: &Cluster) -> Result<Process> {
    cluster.add_namespace("observability", &[])?;
    let pod = cluster.add_pod(
        PodSpec::new("node-1", "observability", "otel-collector")
            .label("app", "otel-collector")
            .port("grpc-otlp", 4317),
    )?;
    let receiver = spawn_receiver(&pod, 4317)?;
    cluster.add_service(
        "observability",
        "otel-collector",
        &[("app", "otel-collector")],
        &[ServicePort::tcp("grpc-otlp", 4317, 4317).with_app_protocol("grpc")],
    )?;
    Ok(receiver)
}

/// Starts `weft-sim-http otlp-receiver --port <port>` in `pod` and waits
/// until it listens.
pub fn spawn_receiver(pod: &Pod, port: u16) -> Result<Process> {
    let port_text = port.to_string();
    let mut receiver = pod.spawn_http(&["otlp-receiver", "--port", &port_text])?;
    let listening = format!("otlp receiver on 0.0.0.0:{port}");
    let what = format!("the OTLP receiver in pod {} to listen", pod.name());
    wait_for(&what, START_TIMEOUT, || {
        if receiver.log().lines().any(|l| l == listening) {
            return Ok(Some(()));
        }
        if !receiver.is_running() {
            bail!("it exited:\n{}", receiver.log_tail(20));
        }
        Ok(None)
    })?;
    Ok(receiver)
}

/// Every span the receiver has printed so far, in the order received.
pub fn spans(receiver: &Process) -> Result<Vec<Span>> {
    parse_spans(&receiver.log()).with_context(|| format!("reading {}", receiver.name()))
}

/// Polls [`spans`] until `done` holds for them, at most for `timeout`
/// (e.g. [`SPAN_TIMEOUT`]); the spans it held for. `what` completes
/// "timed out waiting for …"; the error then lists the spans seen.
pub fn wait_for_spans(
    receiver: &Process,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Span]) -> bool,
) -> Result<Vec<Span>> {
    let mut seen = Vec::new();
    let waited = wait_for(what, timeout, || {
        seen = spans(receiver)?;
        Ok(done(&seen).then(|| seen.clone()))
    });
    match waited {
        Ok(spans) => Ok(spans),
        Err(e) => bail!("{e:#}\n{} spans seen:\n{}", seen.len(), describe(&seen)),
    }
}

/// The spans of the receiver's output (stdout and stderr, as the log
/// holds both): the lines that are span JSON.
fn parse_spans(log: &str) -> Result<Vec<Span>> {
    parse_lines(log, "{\"trace_id\":")
}

/// The lines of the receiver's output that start with `start`, parsed. A
/// last line still being written is left for the next read.
fn parse_lines<T: serde::de::DeserializeOwned>(log: &str, start: &str) -> Result<Vec<T>> {
    let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter(|line| line.starts_with(start))
        .map(|line| serde_json::from_str(line).with_context(|| format!("cannot read {line}")))
        .collect()
}

/// One line per span, for error messages.
pub fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} {}<-{} {} {:?} service={:?} status={} attributes={:?}",
                s.trace_id,
                s.span_id,
                if s.is_root() { "-" } else { &s.parent_span_id },
                s.kind,
                s.name,
                s.service,
                s.status,
                s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"abababababababab","parent_span_id":"","name":"web.shop.svc.cluster.local:80/*","kind":"SERVER","service":"web.shop","resource":{"service.name":"web.shop"},"attributes":{"http.status_code":"200"},"status":"UNSET","start_unix_nano":1,"end_unix_nano":2}"#;

    #[test]
    fn reads_the_span_lines_only() {
        let child = LINE
            .replace(
                r#""span_id":"abababababababab""#,
                r#""span_id":"cdcdcdcdcdcdcdcd""#,
            )
            .replace(
                r#""parent_span_id":"""#,
                r#""parent_span_id":"abababababababab""#,
            );
        let log = format!(
            "otlp receiver on 0.0.0.0:4317\n{LINE}\nsome error on stderr\n{child}\n{}",
            &LINE[..20]
        );
        let spans = parse_spans(&log).unwrap();
        assert_eq!(spans.len(), 2);
        let (root, child) = (&spans[0], &spans[1]);
        assert!(root.is_root() && !child.is_root());
        assert!(child.is_child_of(root) && !root.is_child_of(child));
        assert_eq!(root.attribute("http.status_code"), Some("200"));
        assert_eq!(root.resource_attribute("service.name"), Some("web.shop"));
        assert_eq!((root.kind.as_str(), root.end_unix_nano), ("SERVER", 2));
        assert!(describe(&spans).contains("cdcdcdcdcdcdcdcd<-abababababababab"));
        assert!(parse_spans("{\"trace_id\":1}\n").is_err());
        assert!(parse_spans("").unwrap().is_empty());
        let records: Vec<LogRecord> = parse_lines(
            &format!("{LINE}\n{{\"body\":\"b\",\"attributes\":{{}},\"resource\":{{}},\"scope\":\"\",\"time_unix_nano\":3,\"trace_id\":\"\",\"span_id\":\"\"}}\n"),
            "{\"body\":",
        )
        .unwrap();
        assert_eq!((records.len(), records[0].body.as_str()), (1, "b"));
    }
}
