use std::{collections::HashMap, time::Duration};

use super::*;
use crate::{
    metrics::{Health, Metrics},
    state::WorkloadNames,
};

fn workload(namespace: &str, name: &str, sa: &str) -> Workload {
    Workload {
        uid: format!("Kubernetes//Pod/{namespace}/{name}-1"),
        name: format!("{name}-1"),
        namespace: namespace.into(),
        ips: vec![],
        node: "node-1".into(),
        identity: Identity {
            trust_domain: "cluster.local".into(),
            namespace: namespace.into(),
            service_account: sa.into(),
        },
        hbone: true,
        host_network: false,
        services: HashMap::new(),
        policies: vec![],
        names: WorkloadNames {
            workload: name.into(),
            canonical_service: name.into(),
            canonical_revision: "v1".into(),
            cluster: "Kubernetes".into(),
            workload_type: "deployment",
        },
        telemetry: Default::default(),
    }
    .labelled()
}

#[test]
fn both_sides_report_with_istios_labels() {
    let metrics = Metrics::default();
    let (client, server) = (
        workload("shop", "web", "web"),
        workload("shop", "api", "api"),
    );
    let service = Service {
        name: "api".into(),
        namespace: "shop".into(),
        hostname: "api.shop.svc.cluster.local".into(),
        vips: vec![],
        ports: HashMap::new(),
        http_ports: HashMap::new(),
        original_dst: false,
        telemetry: Arc::new(ServiceLabels::of(
            "api.shop.svc.cluster.local",
            "shop",
            "api",
        )),
    };
    let source = TrafficLabels::new(
        Reporter::source,
        Peer::workload(&client),
        Peer::workload(&server),
        Some(&service),
        RequestProtocol::tcp,
        SecurityPolicy::mutual_tls,
    );
    let record = metrics.traffic.tcp_open(&source);
    record.bytes().from_client(100);
    // Still open: its bytes show already.
    record.bytes().to_client(2000);
    // A plaintext client nobody knows, at the destination.
    let unknown = served_plainly(&server);
    metrics.traffic.request(
        &unknown,
        403,
        None,
        &RequestOutcome {
            duration: Duration::from_millis(7),
            response_bytes: 19,
            ..RequestOutcome::default()
        },
    );
    let text = metrics.encode(Health::default(), false);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_string()
    };
    let opened = line("istio_tcp_connections_opened_total{");
    for label in [
        "reporter=\"source\"",
        "source_workload=\"web\"",
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/web\"",
        "source_app=\"web\"",
        "source_version=\"v1\"",
        "destination_service=\"api.shop.svc.cluster.local\"",
        "destination_service_name=\"api\"",
        "destination_workload=\"api\"",
        "destination_principal=\"spiffe://cluster.local/ns/shop/sa/api\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(opened.contains(label), "{label} in {opened}");
    }
    assert!(opened.ends_with(" 1"), "{opened}");
    assert!(
        line("istio_tcp_received_bytes_total{").ends_with(" 100"),
        "request bytes"
    );
    assert!(
        line("istio_tcp_sent_bytes_total{").ends_with(" 2000"),
        "response bytes"
    );
    assert!(
        line("istio_tcp_connections_closed_total{").ends_with(" 0"),
        "open"
    );
    drop(record);
    let after = metrics.encode(Health::default(), false);
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_closed_total{") && l.ends_with(" 1")),
        "closed when the record goes: {after}"
    );
    assert!(
        text.contains("# TYPE istio_requests_total counter"),
        "{text}"
    );
    let requests = line("istio_requests_total{");
    for label in [
        "reporter=\"destination\"",
        "source_workload=\"unknown\"",
        "source_principal=\"unknown\"",
        "destination_service=\"unknown\"",
        "response_code=\"403\"",
        "grpc_response_status=\"-\"",
        "connection_security_policy=\"none\"",
    ] {
        assert!(requests.contains(label), "{label} in {requests}");
    }
    let bucket = line("istio_request_duration_milliseconds_bucket{");
    assert!(
        bucket.contains("le=\"0.5\""),
        "Istio's first bucket: {bucket}"
    );
    assert!(text.contains("le=\"3600000.0\""), "Istio's last bucket");
    assert!(
        text.lines().any(
            |l| l.starts_with("istio_request_duration_milliseconds_bucket{")
                && l.contains("le=\"+Inf\"")
                && l.ends_with(" 1")
        ),
        "the +Inf bucket holds every observation:\n{text}"
    );
    assert!(!text.contains("# EOF"), "classic text has no EOF");
    let om = metrics.encode(Health::default(), true);
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE istio_requests counter"));
}

/// The server side's labels of a plaintext HTTP request to `server` from
/// a client outside the mesh.
fn served_plainly(server: &Workload) -> TrafficLabels {
    TrafficLabels::new(
        Reporter::destination,
        Peer::default(),
        Peer::workload(server),
        None,
        RequestProtocol::http,
        SecurityPolicy::none,
    )
}

/// A connection that failed is opened under `-` and closed (and failed)
/// under its flag, a series of its own, as ztunnel reports it; one that
/// ended well is closed under `-`.
#[test]
fn failed_connections_close_under_their_flag() {
    let metrics = Metrics::default();
    let server = workload("shop", "api", "api");
    let labels = TrafficLabels {
        request_protocol: RequestProtocol::tcp,
        ..served_plainly(&server)
    };
    metrics
        .traffic
        .tcp_open(&labels)
        .close(Some(TcpFailure::Denied));
    metrics
        .traffic
        .tcp_open(&labels)
        .close(Some(TcpFailure::Denied));
    metrics
        .traffic
        .tcp_open(&labels)
        .close(Some(TcpFailure::Connect));
    metrics.traffic.tcp_open(&labels).close(None);
    let text = metrics.encode(Health::default(), false);
    let value = |family: &str, flag: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{family}{{"))
                    && l.contains(&format!("response_flags=\"{flag}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect()
    };
    assert_eq!(value("istio_tcp_connections_opened_total", "-"), ["4"]);
    assert_eq!(value("istio_tcp_connections_opened_total", "DENY"), [""; 0]);
    assert_eq!(value("istio_tcp_connections_closed_total", "-"), ["1"]);
    assert_eq!(value("istio_tcp_connections_closed_total", "DENY"), ["2"]);
    assert_eq!(
        value("istio_tcp_connections_closed_total", "CONNECT"),
        ["1"]
    );
    assert_eq!(value("istio_tcp_connections_failed_total", "DENY"), ["2"]);
    assert_eq!(
        value("istio_tcp_connections_failed_total", "CONNECT"),
        ["1"]
    );
    assert_eq!(value("istio_tcp_connections_failed_total", "-"), [""; 0]);
    assert_eq!(value("istio_tcp_sent_bytes_total", "DENY"), [""; 0]);
    // The failed series differ from the opened one by the flag alone.
    let closed_deny = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_closed_total{") && l.contains("\"DENY\""))
        .unwrap();
    let opened = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .unwrap();
    assert_eq!(
        closed_deny
            .replace("closed", "opened")
            .replace("\"DENY\"", "\"-\"")
            .rsplit_once(' ')
            .unwrap()
            .0,
        opened.rsplit_once(' ').unwrap().0
    );
}

#[test]
fn off_records_no_requests() {
    let metrics = Metrics::new(false, false);
    assert!(!metrics.traffic.enabled(), "callers skip building labels");
    let server = workload("shop", "api", "api");
    let labels = served_plainly(&server);
    metrics.traffic.request(
        &labels,
        200,
        None,
        &RequestOutcome {
            duration: Duration::from_millis(1),
            ..RequestOutcome::default()
        },
    );
    let text = metrics.encode(Health::default(), false);
    assert!(!text.contains("istio_requests_total{"), "{text}");
    assert!(
        text.contains("weft_agent_connections_active 0"),
        "health stays"
    );
}

#[test]
fn health_is_reported() {
    let metrics = Metrics::default();
    metrics.deny(crate::metrics::Denial::PolicyDeny);
    let _active = metrics.track();
    let text = metrics.encode(
        Health {
            xds_connected: true,
            workloads: 3,
            services: 1,
            pods_enrolled: Some(2),
            certificates: vec![("spiffe://cluster.local/ns/a/sa/b".into(), 1_900_000_000)],
            spans: [5, 1, 2],
            ..Health::default()
        },
        false,
    );
    for expected in [
        "weft_agent_connections_active 1",
        "weft_agent_spans_total{outcome=\"exported\"} 5",
        "weft_agent_spans_total{outcome=\"dropped\"} 1",
        "weft_agent_spans_total{outcome=\"failed\"} 2",
        "weft_agent_xds_connected 1",
        "weft_agent_workloads 3",
        "weft_agent_pods_enrolled 2",
        "weft_agent_connections_denied_total{reason=\"policy_deny\"} 1",
        "weft_agent_requests_authorized_total{verdict=\"allowed\"} 0",
        "weft_agent_certificate_expiry_timestamp_seconds{identity=\"spiffe://cluster.local/ns/a/sa/b\"} 1900000000",
    ] {
        assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
    }
}

/// A view, as a Telemetry's overrides make it: `istio_requests_total`
/// loses `source_principal` and gains `request_host` (a value per
/// request); the duration histogram is off.
fn overridden_view() -> Arc<overrides::View> {
    use overrides::{LABELS, Metric, MetricView};
    let principal = LABELS
        .iter()
        .position(|l| *l == "source_principal")
        .unwrap();
    let mut view = overrides::View::default();
    view.metrics[Metric::RequestCount as usize] = MetricView {
        disabled: false,
        removed: 1 << principal,
        upserts: vec![("request_host".into(), 0)],
    };
    view.metrics[Metric::RequestDuration as usize].disabled = true;
    view.expressions.push((
        "request.host".into(),
        weft_proto::telemetry::Value {
            kind: Some(weft_proto::telemetry::value::Kind::Attribute(
                "request.host".into(),
            )),
        },
    ));
    Arc::new(view)
}

#[test]
fn overrides_remove_add_and_merge_labels_and_turn_metrics_off() {
    let metrics = Metrics::default();
    let server = workload("shop", "api", "api");
    let view = overridden_view();
    // Two clients that differ only in their principal, to one host.
    for sa in ["web", "admin"] {
        let client = workload("shop", "web", sa);
        let mut labels = TrafficLabels::new(
            Reporter::destination,
            Peer::workload(&client),
            Peer::workload(&server),
            None,
            RequestProtocol::http,
            SecurityPolicy::mutual_tls,
        );
        labels.custom = Some(Arc::new(overrides::Custom {
            view: view.clone(),
            values: vec![Some("api.example".into())].into_boxed_slice(),
        }));
        metrics.traffic.request(
            &labels,
            200,
            None,
            &RequestOutcome {
                duration: Duration::from_millis(3),
                request_bytes: 10,
                ..RequestOutcome::default()
            },
        );
    }
    let text = metrics.encode(Health::default(), false);
    let lines =
        |prefix: &str| -> Vec<&str> { text.lines().filter(|l| l.starts_with(prefix)).collect() };
    // One series: the two differed only in the removed label.
    let requests = lines("istio_requests_total{");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].ends_with(" 2"), "{}", requests[0]);
    assert!(requests[0].contains("request_host=\"api.example\""));
    assert!(!requests[0].contains("source_principal="));
    assert!(requests[0].contains("response_code=\"200\""));
    // Off for this view.
    assert!(lines("istio_request_duration_milliseconds_bucket{").is_empty());
    // Untouched: both principals, no added label.
    let sizes = lines("istio_request_bytes_count{");
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    assert!(
        sizes
            .iter()
            .all(|l| l.contains("source_principal=") && !l.contains("request_host"))
    );
}

#[test]
fn upsert_values_come_from_the_request() {
    let server = workload("shop", "api", "api");
    let mut labels = served_plainly(&server);
    labels.custom = Some(Arc::new(overrides::Custom::new(overridden_view())));
    let count = |l: &TrafficLabels| {
        RequestLabels {
            traffic: l.clone(),
            response_code: 200,
            grpc_response_status: None,
        }
        .for_metric(overrides::Metric::RequestCount)
        .unwrap()
    };
    let host = |pairs: Vec<(String, String)>| {
        pairs
            .into_iter()
            .find(|(n, _)| n == "request_host")
            .map(|(_, v)| v)
    };
    // Not computed (or missing): `unknown`, as Istio writes it.
    assert_eq!(host(count(&labels)).as_deref(), Some("unknown"));
    let mut e = Entry::new(std::time::SystemTime::now(), Duration::ZERO);
    e.http = Some(crate::access_log::Http {
        authority: "shop.example",
        ..crate::access_log::Http::get(200)
    });
    let labels = labels.with_values(&e);
    assert_eq!(host(count(&labels)).as_deref(), Some("shop.example"));
}

#[test]
fn merged_series_agree_whatever_the_label_order() {
    use overrides::{LABELS, Metric, MetricView};
    // `destination_service` redefined with the value it had, and an UPSERT
    // of `response_code`, which TCP metrics do not have.
    let service = LABELS
        .iter()
        .position(|l| *l == "destination_service")
        .unwrap();
    let mut view = overrides::View::default();
    for m in Metric::ALL {
        view.metrics[m as usize] = MetricView {
            disabled: false,
            removed: 1 << service,
            upserts: vec![
                ("destination_service".into(), 0),
                ("response_code".into(), 1),
            ],
        };
    }
    let literal = |s: &str| weft_proto::telemetry::Value {
        kind: Some(weft_proto::telemetry::value::Kind::String(s.into())),
    };
    view.expressions = vec![("a".into(), literal("unknown")), ("b".into(), literal("7"))];
    let view = Arc::new(view);
    let metrics = Metrics::default();
    let server = workload("shop", "api", "api");
    let plain = TrafficLabels::new(
        Reporter::destination,
        Peer::default(),
        Peer::workload(&server),
        None,
        RequestProtocol::tcp,
        SecurityPolicy::none,
    );
    let mut custom = plain.clone();
    custom.custom = Some(Arc::new(overrides::Custom {
        view,
        values: vec![Some("unknown".into()), Some("7".into())].into_boxed_slice(),
    }));
    for labels in [&plain, &custom] {
        let record = metrics.traffic.tcp_open(labels);
        record.bytes().from_client(1);
        record.bytes().to_client(1);
    }
    let text = metrics.encode(Health::default(), false);
    let opened: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .collect();
    // One series: the same labels, written in another order.
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert!(opened[0].ends_with(" 2"), "{}", opened[0]);
    assert!(!opened[0].contains("response_code"), "{}", opened[0]);
}

#[test]
fn upsert_values_read_the_response_headers_once_it_arrives() {
    let mut view = overrides::View::default();
    view.metrics[overrides::Metric::RequestCount as usize]
        .upserts
        .push(("cache".into(), 0));
    view.expressions.push((
        "response.headers['x-cache']".into(),
        weft_proto::telemetry::Value {
            kind: Some(weft_proto::telemetry::value::Kind::ResponseHeader(
                "x-cache".into(),
            )),
        },
    ));
    view.response_headers
        .push(http::HeaderName::from_static("x-cache"));
    let view = Arc::new(view);
    let server = workload("shop", "api", "api");
    let labels = served_plainly(&server).under(Some(view.clone()));
    let request = http::Request::get("http://shop/").body(()).unwrap();
    let mut tags = crate::l7::log::RequestTags::capture(&request, Some(&view), None, None).unwrap();
    let answer = crate::l7::log::Answer {
        status: 200,
        grpc_status: None,
        flags: Default::default(),
        request_bytes: 0,
        response_bytes: 0,
        duration: Duration::ZERO,
    };
    let cache = |labels: TrafficLabels| {
        RequestLabels {
            traffic: labels,
            response_code: 200,
            grpc_response_status: None,
        }
        .for_metric(overrides::Metric::RequestCount)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "cache")
        .map(|(_, v)| v)
    };
    // No response yet (a request that ended without one): `unknown`.
    assert_eq!(
        cache(tags.label(labels.clone(), &answer)).as_deref(),
        Some("unknown")
    );
    let mut response = http::HeaderMap::new();
    response.insert("x-cache", http::HeaderValue::from_static("HIT"));
    tags.responded(&response, &view);
    assert_eq!(cache(tags.label(labels, &answer)).as_deref(), Some("HIT"));
}
