//! Tests of `als.rs`: entries for Envoy's gRPC access-log service.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue};
use tokio::sync::mpsc;
use weft_proto::als::{
    StreamAccessLogsResponse,
    access_log_service_server::{AccessLogService, AccessLogServiceServer},
};

use super::*;
use crate::{
    access_log::entry::{Headers, Http},
    l7::reply::Flags,
    otlp::tests::wait_for,
    state::{Identity, WorkloadStore},
};

fn provider(kind: GrpcKind, port: u16) -> GrpcAccessLog {
    GrpcAccessLog {
        kind: kind as i32,
        service: "127.0.0.1".into(),
        port: port.into(),
        log_name: "http_envoy_accesslog".into(),
        request_headers: vec!["x-tenant".into(), ":authority".into()],
        response_headers: vec!["x-cache".into()],
        filter_state_objects: vec!["upstream_peer".into(), "downstream_peer".into()],
    }
}

fn identity(namespace: &str, sa: &str) -> Identity {
    Identity {
        trust_domain: "cluster.local".into(),
        namespace: namespace.into(),
        service_account: sa.into(),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A PATCH of `/cart?id=1` over HBONE, answered 503 with `UF`, as the
/// server side logs it; `f` gets it with the headers kept for `format`.
fn with_entry<R>(format: &Format, f: impl FnOnce(&Entry<'_>) -> R) -> R {
    let mut request = HeaderMap::new();
    for (name, value) in [
        ("user-agent", "curl/8"),
        ("x-forwarded-for", "10.0.0.9"),
        ("x-request-id", "req-1"),
        ("x-tenant", "acme"),
        ("x-other", "not kept"),
    ] {
        request.insert(name, HeaderValue::from_static(value));
    }
    let mut response = HeaderMap::new();
    response.insert("x-cache", HeaderValue::from_static("miss"));
    let request = Headers::capture(&request, format.request_headers(), &[]);
    let response = Headers::capture(&response, format.response_headers(), &[]);
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_796_239_034_123_456_789);
    let mut e = Entry::new(start, Duration::from_millis(1500));
    e.http = Some(Http {
        method: "PATCH",
        path: "/cart?id=1",
        authority: "cart.shop:8080",
        headers: Some(&request),
        response_headers: Some(&response),
        status: 503,
        grpc_status: None,
    });
    e.protocol = "HTTP/2";
    let mut flags = Flags::default();
    flags.set(Flag::UpstreamConnectFailure);
    e.flags = flags;
    e.bytes_received = 12;
    e.request_duration = Some(Duration::from_millis(2));
    e.bytes_sent = 91;
    e.upstream_host = Some(addr("10.1.0.5:8080"));
    e.upstream_cluster = "inbound|8080||";
    e.downstream_remote = Some(addr("10.1.0.4:40000"));
    e.downstream_local = Some(addr("10.1.0.5:15008"));
    let (local, peer) = (identity("shop", "cart"), identity("front", "web"));
    e.local_identity = Some(&local);
    e.peer_identity = Some(&peer);
    e.mtls = true;
    e.downstream_tls = true;
    e.route = "default";
    e.attempts = 1;
    f(&e)
}

fn socket(a: &Option<Address>) -> (String, u32) {
    match a.as_ref().and_then(|a| a.address.as_ref()) {
        Some(weft_proto::core::address::Address::SocketAddress(s)) => {
            let Some(socket_address::PortSpecifier::PortValue(port)) = s.port_specifier else {
                panic!("no port: {s:?}");
            };
            (s.address.clone(), port)
        }
        other => panic!("not a socket address: {other:?}"),
    }
}

#[test]
fn an_http_entry_carries_the_request_the_response_and_the_connection() {
    let (service, format) = Service::compile("als", &provider(GrpcKind::Http, 9000)).unwrap();
    let Item::Http(got) = with_entry(&format, |e| entry(&service, e, None)) else {
        panic!("an envoyHttpAls provider gets HTTP entries");
    };
    assert_eq!(got.protocol_version, HttpVersion::Http2 as i32);
    let request = got.request.unwrap();
    assert_eq!(request.request_method, RequestMethod::Patch as i32);
    assert_eq!(request.path, "/cart?id=1", "with its query, as Envoy's");
    assert_eq!(request.authority, "cart.shop:8080");
    assert_eq!(request.scheme, "http");
    assert_eq!(request.user_agent, "curl/8");
    assert_eq!(request.forwarded_for, "10.0.0.9");
    assert_eq!(request.request_id, "req-1");
    assert_eq!(request.referer, "", "absent");
    assert_eq!(request.request_body_bytes, 12);
    assert_eq!(
        request.request_headers,
        [
            ("x-tenant".to_string(), "acme".to_string()),
            (":authority".to_string(), "cart.shop:8080".to_string())
        ]
        .into(),
        "the additional headers only, pseudo-headers from the request line"
    );
    let response = got.response.unwrap();
    assert_eq!(response.response_code, Some(503));
    assert_eq!(response.response_body_bytes, 91);
    assert_eq!(
        response.response_headers,
        [("x-cache".to_string(), "miss".to_string())].into()
    );
    assert_eq!(
        response.response_code_details,
        "upstream_reset_before_response_started{connection_failure}"
    );
    let common = got.common_properties.unwrap();
    assert_eq!(common.sample_rate, 0.0, "Envoy leaves it unset");
    assert_eq!(common.access_log_type, AccessLogType::DownstreamEnd as i32);
    assert_eq!(
        common.start_time,
        Some(prost_types::Timestamp {
            seconds: 1_796_239_034,
            nanos: 123_456_789
        })
    );
    assert_eq!(
        common.duration,
        Some(prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000
        })
    );
    // A connection failure: nothing came from upstream; the last byte
    // went back when the entry was made, the request's came in 2 ms.
    assert_eq!(common.time_to_first_upstream_rx_byte, None);
    assert_eq!(
        common.time_to_last_rx_byte,
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 2_000_000
        })
    );
    assert_eq!(common.time_to_last_downstream_tx_byte, common.duration);
    assert_eq!(
        socket(&common.downstream_remote_address),
        ("10.1.0.4".into(), 40000)
    );
    assert_eq!(
        socket(&common.downstream_direct_remote_address),
        ("10.1.0.4".into(), 40000)
    );
    assert_eq!(
        socket(&common.downstream_local_address),
        ("10.1.0.5".into(), 15008)
    );
    assert_eq!(
        socket(&common.upstream_remote_address),
        ("10.1.0.5".into(), 8080)
    );
    assert!(common.upstream_local_address.is_none(), "not known");
    assert_eq!(common.upstream_cluster, "inbound|8080||");
    assert_eq!(common.route_name, "default");
    assert_eq!(common.upstream_request_attempt_count, 1);
    let flags = common.response_flags.unwrap();
    assert!(flags.upstream_connection_failure);
    assert!(!flags.no_healthy_upstream && flags.unauthorized_details.is_none());
    let tls = common.tls_properties.unwrap();
    assert_eq!(tls.tls_version, TlsVersion::TlSv13 as i32);
    let san = |c: Option<CertificateProperties>| c.unwrap().subject_alt_name[0].san.clone();
    assert_eq!(
        san(tls.peer_certificate_properties),
        Some(San::Uri("spiffe://cluster.local/ns/front/sa/web".into()))
    );
    assert_eq!(
        san(tls.local_certificate_properties),
        Some(San::Uri("spiffe://cluster.local/ns/shop/sa/cart".into()))
    );
}

#[test]
fn a_tcp_provider_gets_connection_entries_and_only_external_denials_are_unauthorized() {
    let (service, format) = Service::compile("tcp", &provider(GrpcKind::Tcp, 9000)).unwrap();
    assert!(
        format.request_headers().is_empty() && format.response_headers().is_empty(),
        "a TCP entry keeps no header"
    );
    let got = with_entry(&format, |e| {
        let mut e = e.clone();
        e.flags = Flag::RbacDenied.into();
        entry(&service, &e, None)
    });
    let Item::Tcp(got) = got else {
        panic!("an envoyTcpAls provider gets TCP entries");
    };
    let connection = got.connection_properties.unwrap();
    assert_eq!((connection.received_bytes, connection.sent_bytes), (12, 91));
    let common = got.common_properties.unwrap();
    assert_eq!(
        common.response_flags.unwrap(),
        ResponseFlags::default(),
        "Envoy's RBAC sets no flag"
    );
    assert_eq!(
        common.access_log_type,
        AccessLogType::DownstreamEnd as i32,
        "a request, though a TCP entry"
    );
    // A request's denial is in its response code details; a
    // connection's in its termination details.
    assert_eq!(common.connection_termination_details, "");
    let got = with_entry(&format, |e| {
        let mut e = e.clone();
        e.http = None;
        e.flags = Flag::RbacDenied.into();
        // No ALLOW policy matched.
        e.denied_rule = Some("none");
        // Denied before any upstream: no cluster.
        e.upstream_host = None;
        entry(&service, &e, None)
    });
    let Item::Tcp(got) = got else { panic!("TCP") };
    let common = got.common_properties.unwrap();
    assert_eq!(
        common.connection_termination_details,
        "rbac_access_denied_matched_policy[none]"
    );
    // A DENY policy's rule.
    let got = with_entry(&format, |e| {
        let mut e = e.clone();
        e.http = None;
        e.flags = Flag::RbacDenied.into();
        e.denied_rule = Some("ns[db]-policy[deny]-rule[2]");
        entry(&service, &e, None)
    });
    let Item::Tcp(got) = got else { panic!("TCP") };
    assert_eq!(
        got.common_properties
            .unwrap()
            .connection_termination_details,
        "rbac_access_denied_matched_policy[ns[db]-policy[deny]-rule[2]]"
    );
    assert_eq!(
        common.upstream_cluster, "",
        "Envoy names the host's cluster"
    );
    assert_eq!(
        common.access_log_type,
        AccessLogType::TcpConnectionEnd as i32
    );
    // A plaintext downstream (the client side's: the app's connection; a
    // same-node client's handover, whose identity is known) has no TLS
    // properties.
    let (service, format) = Service::compile("http", &provider(GrpcKind::Http, 9000)).unwrap();
    let Item::Http(plain) = with_entry(&format, |e| {
        let mut e = e.clone();
        e.downstream_tls = false;
        e.flags = Flag::ExternalDenied.into();
        entry(&service, &e, None)
    }) else {
        panic!("HTTP");
    };
    let common = plain.common_properties.unwrap();
    assert!(common.tls_properties.is_none());
    assert_eq!(
        common.response_flags.unwrap().unauthorized_details,
        Some(Unauthorized {
            reason: Reason::ExternalService as i32
        })
    );
}

#[test]
fn a_provider_without_a_port_is_refused() {
    let err = Service::compile("als", &provider(GrpcKind::Http, 0)).unwrap_err();
    assert_eq!(err, "port 0 is not a port");
}

/// What the service gets: per stream (numbered from 0 in the order
/// opened), each message.
type Received = (usize, StreamAccessLogsMessage);

/// An access-log service on loopback that hands each message to a
/// channel, and ends each stream after `per_stream` messages.
struct Receiver {
    messages: mpsc::UnboundedSender<Received>,
    streams: std::sync::atomic::AtomicUsize,
    per_stream: usize,
}

#[tonic::async_trait]
impl AccessLogService for Receiver {
    async fn stream_access_logs(
        &self,
        request: tonic::Request<tonic::Streaming<StreamAccessLogsMessage>>,
    ) -> Result<tonic::Response<StreamAccessLogsResponse>, tonic::Status> {
        let stream = self
            .streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut messages = request.into_inner();
        for _ in 0..self.per_stream {
            match messages.message().await? {
                Some(message) => {
                    let _ = self.messages.send((stream, message));
                }
                None => break,
            }
        }
        Ok(tonic::Response::new(StreamAccessLogsResponse {}))
    }
}

/// Serves `service` on a loopback port of its own: its address.
async fn serve(service: impl AccessLogService) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AccessLogServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn receiver(per_stream: usize) -> (u16, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let service = Receiver {
        messages: tx,
        streams: Default::default(),
        per_stream,
    };
    (serve(service).await.port(), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the service got a message within 10 s")
        .unwrap()
}

#[tokio::test]
async fn batches_go_on_one_stream_that_names_the_node_once() {
    let (port, mut rx) = receiver(usize::MAX).await;
    let exporter = Exporter::with(Arc::new(WorkloadStore::default()), Entries::new("node-1"));
    let (service, format) = Service::compile("als", &provider(GrpcKind::Http, port)).unwrap();
    let service = Arc::new(service);
    for batch in 0..2 {
        for _ in 0..=batch {
            let item = with_entry(&format, |e| entry(&service, e, None));
            exporter.submit(service.clone(), item);
        }
        exporter.flush(Duration::from_secs(5)).await;
    }
    let (stream, first) = next(&mut rx).await;
    let identifier = first.identifier.expect("the first message names the node");
    assert_eq!(identifier.node.unwrap().id, "node-1");
    assert_eq!(identifier.log_name, "http_envoy_accesslog");
    let Some(LogEntries::HttpLogs(entries)) = first.log_entries else {
        panic!("HTTP entries: {:?}", first.log_entries);
    };
    assert_eq!(entries.log_entry.len(), 1);
    let (again, second) = next(&mut rx).await;
    assert_eq!(again, stream, "the same stream");
    assert!(second.identifier.is_none(), "named once per stream");
    let Some(LogEntries::HttpLogs(entries)) = second.log_entries else {
        panic!("HTTP entries");
    };
    assert_eq!(entries.log_entry.len(), 2);
    wait_for(
        || exporter.stats.snapshot() == [3, 0, 0],
        "three entries exported",
    )
    .await;
}

#[tokio::test]
async fn a_stream_the_service_ended_is_opened_again_with_its_identifier() {
    // The service ends each stream after its first message.
    let (port, mut rx) = receiver(1).await;
    let exporter = Exporter::with(Arc::new(WorkloadStore::default()), Entries::new("node-2"));
    let (service, format) = Service::compile("tcp", &provider(GrpcKind::Tcp, port)).unwrap();
    let service = Arc::new(service);
    let mut streams = Vec::new();
    for _ in 0..2 {
        let item = with_entry(&format, |e| entry(&service, e, None));
        exporter.submit(service.clone(), item);
        exporter.flush(Duration::from_secs(5)).await;
        let (stream, message) = next(&mut rx).await;
        assert!(
            message.identifier.is_some(),
            "a new stream names the node again"
        );
        assert!(matches!(message.log_entries, Some(LogEntries::TcpLogs(_))));
        streams.push(stream);
        // The stream's end reaches the agent before the next batch.
        wait_for(
            || {
                service
                    .stream
                    .try_lock()
                    .is_ok_and(|s| s.as_ref().is_none_or(|s| s.messages.is_closed()))
            },
            "the agent saw the stream end",
        )
        .await;
    }
    assert_eq!(streams, [0, 1]);
    assert_eq!(exporter.stats.snapshot()[0], 2);
}

#[test]
fn a_batch_of_both_kinds_is_two_messages() {
    let (http, format) = Service::compile("als", &provider(GrpcKind::Http, 9000)).unwrap();
    let (tcp, _) = Service::compile("als", &provider(GrpcKind::Tcp, 9000)).unwrap();
    let items = with_entry(&format, |e| {
        vec![
            entry(&http, e, None),
            entry(&tcp, e, None),
            entry(&http, e, None),
        ]
    });
    let messages = <Entries as crate::otlp::Signal>::request(items);
    let sizes: Vec<(&str, usize)> = messages
        .iter()
        .map(|m| match m {
            LogEntries::HttpLogs(h) => ("http", h.log_entry.len()),
            LogEntries::TcpLogs(t) => ("tcp", t.log_entry.len()),
        })
        .collect();
    assert_eq!(sizes, [("http", 2), ("tcp", 1)], "none lost");
}

/// A service that takes streams and never reads nor answers them.
struct Stalled;

#[tonic::async_trait]
impl AccessLogService for Stalled {
    async fn stream_access_logs(
        &self,
        _request: tonic::Request<tonic::Streaming<StreamAccessLogsMessage>>,
    ) -> Result<tonic::Response<StreamAccessLogsResponse>, tonic::Status> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_stream_let_go_is_cancelled_when_the_service_does_not_answer() {
    let addr = serve(Stalled).await;
    let (service, _) = Service::compile("als", &provider(GrpcKind::Http, addr.port())).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let stream = Stream::open(channel, addr, &service);
    let (taken, on_taken) = oneshot::channel();
    stream
        .messages
        .send((StreamAccessLogsMessage::default(), taken))
        .await
        .unwrap();
    on_taken.await.expect("the stream took the message");
    let task = stream.task.abort_handle();
    assert!(!task.is_finished(), "open while the service holds it");
    // Let go (an export that timed out, a provider replaced): the
    // service gets GRACE to answer, then the stream is cancelled, and
    // its task and connection go with it.
    drop(stream);
    let deadline = tokio::time::Instant::now() + GRACE + Duration::from_secs(3);
    while !task.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's task still runs {GRACE:?} after it was let go"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn entries_for_a_service_that_is_down_are_counted_failed() {
    // A port bound, and kept, but not listening: connections to it are
    // refused, and no other test can take it.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let exporter = Exporter::with(Arc::new(WorkloadStore::default()), Entries::new("n"));
    let (service, format) = Service::compile("als", &provider(GrpcKind::Http, port)).unwrap();
    let service = Arc::new(service);
    exporter.submit(
        service.clone(),
        with_entry(&format, |e| entry(&service, e, None)),
    );
    exporter.flush(Duration::from_secs(10)).await;
    assert_eq!(exporter.stats.snapshot(), [0, 0, 1]);
    drop(held);
}

/// A meshed workload, `front/web-1` (also the format tests' upstream).
pub(in crate::access_log) fn peer_workload() -> Workload {
    Workload {
        uid: "Kubernetes//Pod/front/web-1".into(),
        name: "web-1".into(),
        namespace: "front".into(),
        ips: vec!["10.1.0.4".parse().unwrap()],
        node: "node-1".into(),
        identity: identity("front", "web"),
        hbone: true,
        host_network: false,
        services: Default::default(),
        policies: Vec::new(),
        names: crate::state::WorkloadNames {
            workload: "web".into(),
            canonical_service: "web".into(),
            canonical_revision: "v1".into(),
            cluster: "Kubernetes".into(),
            workload_type: "deployment",
        },
        telemetry: Default::default(),
    }
}

#[test]
fn the_peer_is_logged_as_istios_peer_metadata_filter_state() {
    let store = WorkloadStore::default();
    let w = peer_workload();
    store.apply(
        vec![(
            w.uid.clone(),
            "1".into(),
            crate::state::Converted::Workload(w),
        )],
        &[],
    );
    let (service, format) = Service::compile("als", &provider(GrpcKind::Http, 9000)).unwrap();
    // The server side: the client, found by its address and identity.
    let Item::Http(got) = with_entry(&format, |e| {
        let peer = peer(e, Side::Server, &store);
        entry(&service, e, peer.as_ref())
    }) else {
        panic!("HTTP");
    };
    let state = got.common_properties.unwrap().filter_state_objects;
    assert_eq!(state.keys().collect::<Vec<_>>(), ["downstream_peer"]);
    let any = &state["downstream_peer"];
    assert_eq!(any.type_url, "type.googleapis.com/google.protobuf.Struct");
    let fields: std::collections::BTreeMap<String, String> =
        <prost_types::Struct as prost::Message>::decode(any.value.as_slice())
            .unwrap()
            .fields
            .into_iter()
            .map(|(k, v)| match v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => (k, s),
                other => panic!("{k}: {other:?}"),
            })
            .collect();
    let expected = [
        ("app", "web"),
        ("cluster", "Kubernetes"),
        ("identity", "spiffe://cluster.local/ns/front/sa/web"),
        ("name", "web-1"),
        ("namespace", "front"),
        ("revision", "v1"),
        ("service", "web"),
        ("type", "deployment"),
        ("version", "v1"),
        ("workload", "web"),
    ];
    assert_eq!(
        fields,
        expected.map(|(k, v)| (k.to_string(), v.to_string())).into()
    );
    // A client whose proven identity is not the workload's at that
    // address is no peer.
    let stranger = with_entry(&format, |e| {
        let mut e = e.clone();
        let other = identity("front", "other");
        e.peer_identity = Some(&other);
        peer(&e, Side::Server, &store).is_none()
    });
    assert!(stranger, "an identity that does not match");
    // The client side's peer is its upstream; a provider that does not
    // name it logs none.
    let client_side = with_entry(&format, |e| {
        let mut e = e.clone();
        e.upstream_host = Some(addr("10.1.0.4:8080"));
        peer(&e, Side::Client, &store).map(|(name, w)| (name, w.name.clone()))
    });
    assert_eq!(client_side, Some(("upstream_peer", "web-1".to_string())));
    // The workload the proxy chose is the peer, whatever is at its
    // address (a host-network pod is no one's by address).
    let chosen = Arc::new(Workload {
        name: "node-exporter-x".into(),
        host_network: true,
        ..peer_workload()
    });
    let client_side = with_entry(&format, |e| {
        let mut e = e.clone();
        e.upstream_host = Some(addr("10.0.0.1:9100"));
        e.upstream_workload = Some(&chosen);
        peer(&e, Side::Client, &store).map(|(_, w)| w.name.clone())
    });
    assert_eq!(client_side.as_deref(), Some("node-exporter-x"));
    let only_upstream = GrpcAccessLog {
        filter_state_objects: vec!["upstream_peer".into()],
        ..provider(GrpcKind::Http, 9000)
    };
    let (service, format) = Service::compile("als", &only_upstream).unwrap();
    assert!(service.logs_peer(Side::Client) && !service.logs_peer(Side::Server));
    let Item::Http(got) = with_entry(&format, |e| {
        let peer = peer(e, Side::Server, &store);
        entry(&service, e, peer.as_ref())
    }) else {
        panic!("HTTP");
    };
    assert!(
        got.common_properties
            .unwrap()
            .filter_state_objects
            .is_empty()
    );
}

/// A service that keeps, in order, what its streams brought: the number
/// of entries of each message, and `end` when a stream ended.
#[derive(Clone, Default)]
struct Kept(Arc<std::sync::Mutex<Vec<String>>>);

impl Kept {
    fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl AccessLogService for Kept {
    async fn stream_access_logs(
        &self,
        request: tonic::Request<tonic::Streaming<StreamAccessLogsMessage>>,
    ) -> Result<tonic::Response<StreamAccessLogsResponse>, tonic::Status> {
        let mut messages = request.into_inner();
        while let Some(message) = messages.message().await? {
            let entries = match message.log_entries {
                Some(LogEntries::HttpLogs(h)) => h.log_entry.len(),
                Some(LogEntries::TcpLogs(t)) => t.log_entry.len(),
                None => 0,
            };
            let named = if message.identifier.is_some() {
                " (named)"
            } else {
                ""
            };
            self.0.lock().unwrap().push(format!("{entries}{named}"));
        }
        self.0.lock().unwrap().push("end".into());
        Ok(tonic::Response::new(StreamAccessLogsResponse {}))
    }
}

async fn kept() -> (u16, Kept) {
    let kept = Kept::default();
    (serve(kept.clone()).await.port(), kept)
}

#[tokio::test]
async fn at_exit_a_stream_is_ended_once_the_service_has_every_batch() {
    let (port, kept) = kept().await;
    let exporter = Exporter::with(Arc::new(WorkloadStore::default()), Entries::new("node-1"));
    let (service, format) = Service::compile("als", &provider(GrpcKind::Http, port)).unwrap();
    let service = Arc::new(service);
    for _ in 0..3 {
        exporter.submit(
            service.clone(),
            with_entry(&format, |e| entry(&service, e, None)),
        );
    }
    exporter.flush(Duration::from_secs(5)).await;
    // What `AccessLog::flush_records` does last: when it returns, the
    // service has read the stream to its end, so nothing it took is lost
    // with the process.
    service.close().await;
    assert_eq!(kept.seen(), ["3 (named)", "end"]);
    assert!(service.stream.try_lock().unwrap().is_none());
}

#[tokio::test]
async fn a_push_that_leaves_a_provider_as_it_was_keeps_its_stream() {
    let (port, kept) = kept().await;
    let exporter = Exporter::with(Arc::new(WorkloadStore::default()), Entries::new("node-1"));
    let compile = |log_name: &str| {
        let mut grpc = provider(GrpcKind::Http, port);
        grpc.log_name = log_name.into();
        let (service, format) = Service::compile("als", &grpc).unwrap();
        (Arc::new(service), format)
    };
    let send = |service: &Arc<Service>, format: &Format| {
        exporter.submit(
            service.clone(),
            with_entry(format, |e| entry(service, e, None)),
        );
        exporter.flush(Duration::from_secs(5))
    };
    let (before, format) = compile("http_envoy_accesslog");
    send(&before, &format).await;
    // The same provider compiled again (a push): the stream carries over,
    // and its next message is not named again.
    let (after, format) = compile("http_envoy_accesslog");
    after.take_stream_of(&before);
    send(&after, &format).await;
    // Another log name is another identifier: a stream of its own.
    let (renamed, format) = compile("other");
    renamed.take_stream_of(&after);
    send(&renamed, &format).await;
    for service in [&after, &renamed] {
        service.close().await;
    }
    let mut seen = kept.seen();
    // The two streams' messages may interleave; each stream's are in order.
    seen.sort();
    assert_eq!(seen, ["1", "1 (named)", "1 (named)", "end", "end"]);
    assert!(before.stream.try_lock().unwrap().is_none());
}

/// The wiring in `AccessLog`: a push that recompiles the root hands the
/// provider's stream to the new service, while a request that began
/// before it (its decision holds the replaced service) opens a stream of
/// its own; at exit, `flush_records` ends both, and the service has
/// every batch.
#[tokio::test]
async fn pushes_carry_streams_over_and_exit_ends_every_one() {
    use weft_proto::telemetry::{AccessLogPolicy, AccessLogProvider, MeshAccessLog};
    let (port, kept) = kept().await;
    let log = crate::access_log::AccessLog::default();
    log.export_with(Arc::new(WorkloadStore::default()), "node-1");
    let push = |version: &str| {
        let root = AccessLogPolicy {
            namespace: "istio-system".into(),
            mesh: Some(MeshAccessLog {
                file: "/dev/stdout".into(),
                ..Default::default()
            }),
            providers: vec![AccessLogProvider {
                name: "als".into(),
                grpc: Some(provider(GrpcKind::Http, port)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let compiled = crate::access_log::compile(&root).unwrap();
        log.apply(vec![("istio-system".into(), version.into(), compiled)], &[]);
        let root = log.policies.root().unwrap();
        crate::access_log::services(&root).next().unwrap().clone()
    };
    let send = |service: &Arc<Service>| {
        let exporters = log.exporters().unwrap();
        let (_, format) = Service::compile("als", &provider(GrpcKind::Http, port)).unwrap();
        exporters.als.submit(
            service.clone(),
            with_entry(&format, |e| entry(service, e, None)),
        );
        async move { exporters.als.flush(Duration::from_secs(5)).await }
    };
    let before = push("1");
    send(&before).await;
    let after = push("2");
    // A request decided before the push sends through the old service:
    // its stream went to `after`, so it opens one of its own.
    send(&before).await;
    send(&after).await;
    log.flush_records(Duration::from_secs(5)).await;
    let mut seen = kept.seen();
    seen.sort();
    assert_eq!(seen, ["1", "1 (named)", "1 (named)", "end", "end"]);
}
