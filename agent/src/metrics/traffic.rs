//! Istio's standard traffic metrics, with Istio's names, labels and
//! buckets, so that users' Prometheus queries and dashboards keep working:
//! `istio_tcp_*` per connection and `istio_requests_total` with its
//! duration and size histograms per HTTP request. Each side reports what
//! it saw (`reporter="source"` on the client's node, `"destination"` on the
//! server's), as Istio does; a connection or request between two nodes is
//! counted once by each.
//!
//! Labels name workloads, services and identities, never connections or
//! IPs: cardinality is bounded by the mesh's size.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use crate::state::{Identity, Service, Workload};

/// Which side recorded the sample.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reporter {
    source,
    destination,
}

/// `request_protocol`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RequestProtocol {
    tcp,
    http,
    grpc,
}

/// `connection_security_policy`: `mutual_tls` for HBONE (and same-node
/// traffic, whose identities the agent checks in process), `none` for
/// plaintext a destination accepted, `unknown` where the reporter cannot
/// tell (a source's plaintext passthrough).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SecurityPolicy {
    mutual_tls,
    none,
    unknown,
}

/// Istio's standard labels of a connection or request, in Istio's order.
/// Anything the reporter does not know is `unknown`, as in Istio.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub destination_service: String,
    pub destination_service_namespace: String,
    pub destination_service_name: String,
    pub destination_workload: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_cluster: String,
    pub request_protocol: RequestProtocol,
    pub response_flags: String,
    pub connection_security_policy: SecurityPolicy,
}

/// One end of a connection, as far as the reporter knows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    pub workload: Option<&'a Workload>,
    /// Its principal: the identity proven in the handshake, the reporter's
    /// own, or (a destination seen from the source) the one expected.
    /// `None` (`unknown`) for a plaintext client, as in Istio.
    pub identity: Option<&'a Identity>,
}

impl<'a> Peer<'a> {
    /// A workload that is who it says: its own identity as principal.
    pub fn workload(workload: &'a Workload) -> Peer<'a> {
        Peer {
            workload: Some(workload),
            identity: Some(&workload.identity),
        }
    }
}

const UNKNOWN: &str = "unknown";

fn or_unknown(value: &str) -> String {
    if value.is_empty() {
        UNKNOWN.to_string()
    } else {
        value.to_string()
    }
}

/// (workload, canonical service, canonical revision, namespace, principal, cluster)
fn describe(peer: Peer<'_>) -> [String; 6] {
    let principal = peer
        .identity
        .map_or_else(|| UNKNOWN.to_string(), ToString::to_string);
    match peer.workload {
        Some(w) => [
            or_unknown(&w.names.workload),
            or_unknown(&w.names.canonical_service),
            or_unknown(&w.names.canonical_revision),
            or_unknown(&w.namespace),
            principal,
            or_unknown(&w.names.cluster),
        ],
        None => {
            let namespace = peer
                .identity
                .map_or_else(|| UNKNOWN.to_string(), |i| i.namespace.clone());
            [
                UNKNOWN.into(),
                UNKNOWN.into(),
                UNKNOWN.into(),
                namespace,
                principal,
                UNKNOWN.into(),
            ]
        }
    }
}

impl TrafficLabels {
    pub fn new(
        reporter: Reporter,
        source: Peer<'_>,
        destination: Peer<'_>,
        service: Option<&Service>,
        request_protocol: RequestProtocol,
        connection_security_policy: SecurityPolicy,
    ) -> TrafficLabels {
        let [sw, scs, scr, sns, sp, sc] = describe(source);
        let [dw, dcs, dcr, dns, dp, dc] = describe(destination);
        let (service, service_namespace, service_name) = match service {
            Some(s) => (s.hostname.clone(), s.namespace.clone(), s.name.clone()),
            None => (UNKNOWN.into(), UNKNOWN.into(), UNKNOWN.into()),
        };
        TrafficLabels {
            reporter,
            source_app: scs.clone(),
            source_version: scr.clone(),
            source_workload: sw,
            source_canonical_service: scs,
            source_canonical_revision: scr,
            source_workload_namespace: sns,
            source_principal: sp,
            source_cluster: sc,
            destination_service: service,
            destination_service_namespace: service_namespace,
            destination_service_name: service_name,
            destination_app: dcs.clone(),
            destination_version: dcr.clone(),
            destination_workload: dw,
            destination_canonical_service: dcs,
            destination_canonical_revision: dcr,
            destination_workload_namespace: dns,
            destination_principal: dp,
            destination_cluster: dc,
            request_protocol,
            response_flags: "-".into(),
            connection_security_policy,
        }
    }

    /// With Envoy's response flags (`-` for none).
    pub fn with_flags(mut self, flags: &str) -> TrafficLabels {
        self.response_flags = if flags.is_empty() {
            "-".into()
        } else {
            flags.into()
        };
        self
    }
}

/// The labels of one HTTP request: the connection's and its answer's.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub traffic: TrafficLabels,
    pub response_code: u16,
    /// gRPC's status code, `-` for anything that is not gRPC.
    pub grpc_response_status: String,
}

/// Envoy's default histogram buckets, which Istio's
/// `istio_request_duration_milliseconds` and the size histograms use.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type Histograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The families, registered once.
#[derive(Debug)]
pub struct Traffic {
    /// Off (`--traffic-metrics=false`): nothing is recorded, and callers
    /// skip building labels.
    enabled: bool,
    tcp_opened: Family<TrafficLabels, Counter>,
    tcp_closed: Family<TrafficLabels, Counter>,
    tcp_sent: Family<TrafficLabels, Counter>,
    tcp_received: Family<TrafficLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    duration: Histograms,
    request_bytes: Histograms,
    response_bytes: Histograms,
}

impl Default for Traffic {
    fn default() -> Self {
        let histograms = || Histograms::new_with_constructor(histogram as fn() -> Histogram);
        Traffic {
            enabled: true,
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            requests: Family::default(),
            duration: histograms(),
            request_bytes: histograms(),
            response_bytes: histograms(),
        }
    }
}

/// One connection's TCP metrics: `opened` when it is made, the rest when
/// it ends (or is dropped without an end, as a failure).
#[derive(Debug)]
pub struct TcpRecord {
    closed: Counter,
    sent: Counter,
    received: Counter,
    done: bool,
}

impl TcpRecord {
    /// The connection ended after `request` bytes from the client and
    /// `response` bytes back to it. As Istio defines them, `received`
    /// counts the request's bytes and `sent` the response's, whichever side
    /// reports.
    pub fn close(mut self, request: u64, response: u64) {
        self.received.inc_by(request);
        self.sent.inc_by(response);
        self.closed.inc();
        self.done = true;
    }
}

impl Drop for TcpRecord {
    fn drop(&mut self) {
        if !self.done {
            self.closed.inc();
        }
    }
}

/// One HTTP request's answer, for [`Traffic::request`].
#[derive(Debug, Clone, Copy)]
pub struct RequestOutcome {
    pub status: u16,
    /// gRPC status, when the request was gRPC and the answer had one.
    pub grpc_status: Option<u32>,
    pub duration: std::time::Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl Traffic {
    /// Families that record nothing (for measuring what they cost).
    pub fn disabled() -> Traffic {
        Traffic {
            enabled: false,
            ..Traffic::default()
        }
    }

    /// Whether traffic is recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_tcp_connections_opened",
            "Connections opened",
            self.tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "Connections closed",
            self.tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent in response (destination to source), counted when the connection closes",
            self.tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received in request (source to destination), counted when the connection closes",
            self.tcp_received.clone(),
        );
        registry.register(
            "istio_requests",
            "HTTP and gRPC requests",
            self.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Time from the request's first byte to the response's last, in milliseconds",
            self.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes, in bytes",
            self.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes, in bytes",
            self.response_bytes.clone(),
        );
    }

    /// A connection opened; keep the record until it ends.
    pub fn tcp_open(&self, labels: &TrafficLabels) -> TcpRecord {
        self.tcp_opened.get_or_create(labels).inc();
        TcpRecord {
            closed: self.tcp_closed.get_or_create(labels).clone(),
            sent: self.tcp_sent.get_or_create(labels).clone(),
            received: self.tcp_received.get_or_create(labels).clone(),
            done: false,
        }
    }

    /// One HTTP request, answered.
    pub fn request(&self, labels: &TrafficLabels, outcome: RequestOutcome) {
        if !self.enabled {
            return;
        }
        let labels = RequestLabels {
            traffic: labels.clone(),
            response_code: outcome.status,
            grpc_response_status: outcome
                .grpc_status
                .map_or_else(|| "-".to_string(), |s| s.to_string()),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(outcome.duration.as_secs_f64() * 1000.0);
        self.request_bytes
            .get_or_create(&labels)
            .observe(outcome.request_bytes as f64);
        self.response_bytes
            .get_or_create(&labels)
            .observe(outcome.response_bytes as f64);
    }
}

#[cfg(test)]
mod tests {
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
            services: HashMap::new(),
            policies: vec![],
            names: WorkloadNames {
                workload: name.into(),
                canonical_service: name.into(),
                canonical_revision: "v1".into(),
                cluster: "Kubernetes".into(),
            },
        }
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
        };
        let source = TrafficLabels::new(
            Reporter::source,
            Peer::workload(&client),
            Peer::workload(&server),
            Some(&service),
            RequestProtocol::tcp,
            SecurityPolicy::mutual_tls,
        );
        metrics.traffic.tcp_open(&source).close(100, 2000);
        // A plaintext client nobody knows, at the destination.
        let unknown = TrafficLabels::new(
            Reporter::destination,
            Peer::default(),
            Peer::workload(&server),
            None,
            RequestProtocol::http,
            SecurityPolicy::none,
        );
        metrics.traffic.request(
            &unknown,
            RequestOutcome {
                status: 403,
                grpc_status: None,
                duration: Duration::from_millis(7),
                request_bytes: 0,
                response_bytes: 19,
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
        assert!(!text.contains("# EOF"), "classic text has no EOF");
        let om = metrics.encode(Health::default(), true);
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE istio_requests counter"));
    }

    #[test]
    fn off_records_no_requests() {
        let metrics = Metrics::new(false);
        assert!(!metrics.traffic.enabled(), "callers skip building labels");
        let server = workload("shop", "api", "api");
        let labels = TrafficLabels::new(
            Reporter::destination,
            Peer::default(),
            Peer::workload(&server),
            None,
            RequestProtocol::http,
            SecurityPolicy::none,
        );
        metrics.traffic.request(
            &labels,
            RequestOutcome {
                status: 200,
                grpc_status: None,
                duration: Duration::from_millis(1),
                request_bytes: 0,
                response_bytes: 0,
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
                ..Health::default()
            },
            false,
        );
        for expected in [
            "weft_agent_connections_active 1",
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
}
