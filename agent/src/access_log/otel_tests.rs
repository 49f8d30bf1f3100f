//! Tests of `otel.rs`: access-log records for `envoyOtelAls` collectors.
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    common::v1::KeyValue,
};
use tokio::sync::mpsc;
use weft_proto::telemetry::{FormatToken, JsonField};

use super::*;
use crate::{
    access_log::entry::{Headers, Http},
    otlp::tests::wait_for,
    state::WorkloadStore,
};

fn op(operator: &str, argument: &str) -> FormatToken {
    FormatToken {
        operator: operator.into(),
        argument: argument.into(),
        ..Default::default()
    }
}

fn literal(text: &str) -> FormatToken {
    FormatToken {
        literal: text.into(),
        ..Default::default()
    }
}

/// `%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%`, then `end` (a newline
/// at most), and two labels given out of order.
fn provider(end: &str) -> OtelAccessLog {
    let mut body = vec![
        op("REQ", ":method"),
        literal(" "),
        op("REQ", ":path"),
        literal(" "),
        op("RESPONSE_CODE", ""),
    ];
    if !end.is_empty() {
        body.push(literal(end));
    }
    OtelAccessLog {
        service: "otel.observability.svc.cluster.local".into(),
        port: 4317,
        body,
        attributes: vec![
            JsonField {
                key: "user_agent".into(),
                value: vec![op("REQ", "user-agent")],
            },
            JsonField {
                key: "code".into(),
                value: vec![literal("code="), op("RESPONSE_CODE", "")],
            },
        ],
    }
}

fn text(kv: &KeyValue) -> (&str, &str) {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => (kv.key.as_str(), s.as_str()),
        other => panic!("{} is not a string: {other:?}", kv.key),
    }
}

fn body(record: &LogRecord) -> &str {
    match record.body.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("the body is not a string: {other:?}"),
    }
}

/// A GET of `/reviews/1` answered 200, with `headers` (none: no
/// `user-agent`).
fn with_entry<R>(headers: &HeaderMap, f: impl FnOnce(&Entry<'_>) -> R) -> R {
    let headers = Headers::all(headers);
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_796_239_034_123_456_789);
    let mut e = Entry::new(start, Duration::from_millis(3));
    e.http = Some(Http {
        method: "GET",
        path: "/reviews/1",
        authority: "reviews",
        headers: Some(&headers),
        response_headers: None,
        status: 200,
        grpc_status: None,
    });
    f(&e)
}

#[test]
fn a_record_is_the_line_as_its_body_and_the_labels_as_string_attributes() {
    let (collector, format) = Collector::compile("otel", &provider("")).unwrap();
    assert_eq!(
        (collector.service.as_str(), collector.port),
        ("otel.observability.svc.cluster.local", 4317)
    );
    let record = with_entry(&HeaderMap::new(), |e| record(&format, e, &mut Vec::new()));
    assert_eq!(body(&record), "GET /reviews/1 200");
    assert_eq!(record.time_unix_nano, 1_796_239_034_123_456_789);
    // In the order the control plane sent them (it sorts them); a
    // missing value is `-`, as Envoy writes it.
    let attributes: Vec<(&str, &str)> = record.attributes.iter().map(text).collect();
    assert_eq!(attributes, [("user_agent", "-"), ("code", "code=200")]);
    assert!(
        record.trace_id.is_empty() && record.span_id.is_empty(),
        "not traced"
    );
}

#[test]
fn a_traced_request_gives_its_record_the_spans_ids() {
    let (_, format) = Collector::compile("otel", &provider("")).unwrap();
    let got = with_entry(&HeaderMap::new(), |e| {
        let mut e = e.clone();
        e.trace = Some((
            0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            0xabab_abab_abab_abab,
        ));
        record(&format, &e, &mut Vec::new())
    });
    assert_eq!(got.trace_id, (1..=16).collect::<Vec<u8>>());
    assert_eq!(got.span_id, [0xab; 8]);
}

#[test]
fn the_body_keeps_the_formats_line_breaks_and_the_format_asks_for_its_headers() {
    let (_, format) = Collector::compile("otel", &provider("\r\n")).unwrap();
    let line = with_entry(&HeaderMap::new(), |e| record(&format, e, &mut Vec::new()));
    assert_eq!(
        body(&line),
        "GET /reviews/1 200\r\n",
        "as the format writes them"
    );
    // A header only an attribute prints is kept with the request.
    assert!(format.request_headers().contains(&http::header::USER_AGENT));
    let mut map = HeaderMap::new();
    map.insert(http::header::USER_AGENT, HeaderValue::from_static("curl/8"));
    let got = with_entry(&map, |e| record(&format, e, &mut Vec::new()));
    assert_eq!(text(&got.attributes[0]), ("user_agent", "curl/8"));
}

#[test]
fn a_provider_without_a_port_is_refused() {
    let err = Collector::compile(
        "otel",
        &OtelAccessLog {
            port: 0,
            ..provider("")
        },
    )
    .unwrap_err();
    assert_eq!(err, "port 0 is not a port");
}

/// A collector on loopback that hands each request it gets to a channel.
struct Receiver(mpsc::UnboundedSender<ExportLogsServiceRequest>);

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A collector on loopback: its port, and the requests it gets.
async fn receiver() -> (u16, mpsc::UnboundedReceiver<ExportLogsServiceRequest>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LogsServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (port, rx)
}

/// The provider `name`, sending to 127.0.0.1:`port`.
fn at_loopback(name: &str, port: u16) -> (Collector, Format) {
    Collector::compile(
        name,
        &OtelAccessLog {
            service: "127.0.0.1".into(),
            port: port.into(),
            ..provider("")
        },
    )
    .unwrap()
}

#[tokio::test]
async fn records_reach_the_collector_in_one_resource_and_scope() {
    let (port, mut rx) = receiver().await;
    let exporter = Exporter::new(Arc::new(WorkloadStore::default()));
    let (collector, format) = at_loopback("otel", port);
    let collector = Arc::new(collector);
    for _ in 0..2 {
        let record = with_entry(&HeaderMap::new(), |e| record(&format, e, &mut Vec::new()));
        exporter.submit(collector.clone(), record);
    }
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the collector got the records within 10 s")
        .unwrap();
    assert_eq!(got.resource_logs.len(), 1);
    let resource = &got.resource_logs[0];
    assert!(resource.resource.as_ref().unwrap().attributes.is_empty());
    assert_eq!(resource.scope_logs.len(), 1);
    assert!(resource.scope_logs[0].scope.is_none());
    let records = &resource.scope_logs[0].log_records;
    assert_eq!(records.len(), 2, "one batch");
    assert_eq!(body(&records[0]), "GET /reviews/1 200");
    wait_for(
        || exporter.stats.snapshot()[0] == 2,
        "the records were not counted as exported",
    )
    .await;
}

#[tokio::test]
async fn a_flush_sends_what_is_queued_at_once() {
    let (port, mut rx) = receiver().await;
    let exporter = Exporter::new(Arc::new(WorkloadStore::default()));
    // Never started: nothing to wait for.
    exporter.flush(Duration::from_secs(5)).await;
    let (collector, format) = at_loopback("otel", port);
    let record = with_entry(&HeaderMap::new(), |e| record(&format, e, &mut Vec::new()));
    exporter.submit(Arc::new(collector), record);
    // Well within the batch's second.
    exporter.flush(Duration::from_secs(5)).await;
    assert!(
        rx.try_recv().is_ok(),
        "the record was sent when the flush returned"
    );
    assert_eq!(exporter.stats.snapshot()[0], 1);
}

#[tokio::test]
async fn a_silent_collector_holds_up_its_own_records_only_and_bounds_them() {
    // A collector that is never answered: the kernel completes the
    // connection (the listener's backlog), nothing reads it, and each
    // export to it waits for its timeout (5 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (port, mut rx) = receiver().await;
    let exporter = Exporter::new(Arc::new(WorkloadStore::default()));
    let (stuck, format) = at_loopback("silent", silent_port);
    let (fine, _) = at_loopback("fine", port);
    let (stuck, fine) = (Arc::new(stuck), Arc::new(fine));
    let one = || with_entry(&HeaderMap::new(), |e| record(&format, e, &mut Vec::new()));
    // A full batch: sent at once, and stuck.
    for _ in 0..512 {
        exporter.submit(stuck.clone(), one());
    }
    exporter.submit(fine.clone(), one());
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the other collector got its record")
        .unwrap();
    assert_eq!(
        exporter.stats.snapshot()[2],
        0,
        "it got it while the silent collector's export was still waiting"
    );
    // While that export waits, the silent provider's records wait too,
    // up to the queue's size; the rest are dropped, not kept. (The task
    // takes them as they come: the test yields to it.)
    for i in 0..4096 + 100 {
        exporter.submit(stuck.clone(), one());
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_for(
        || exporter.stats.snapshot()[1] == 100,
        "the records beyond the queue's size were not dropped",
    )
    .await;
    drop(silent);
}
