//! Istio's standard traffic metrics, with Istio's names, labels and
//! buckets, so that users' Prometheus queries and dashboards keep working:
//! `istio_tcp_*` per connection and `istio_requests_total` with its
//! duration and size histograms per HTTP request. Each side reports what
//! it saw (`reporter="source"` on the client's node, `"destination"` on the
//! server's), as Istio does; a connection or request between two nodes is
//! counted once by each.
//!
//! Istio's standard labels name workloads, services and identities, never
//! connections or IPs: cardinality is bounded by the mesh's size, unless a
//! Telemetry adds a label with a per-request value ([`overrides`]).

pub mod overrides;
mod series;

use std::{
    borrow::Cow,
    sync::{Arc, LazyLock, atomic::Ordering::Relaxed},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder},
    registry::Registry,
};

use overrides::{Custom, View};
pub use series::{BUCKETS, Histogram, RequestSeries};
use series::{Tables, TcpSeries};

use crate::{
    access_log::{Side, entry::Entry},
    state::{Identity, Service, Workload},
};

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

const UNKNOWN: &str = "unknown";

/// How one end of the traffic is named in the labels (`*_workload`,
/// `*_canonical_service` and `*_app`, ...): built once per workload
/// ([`Workload::telemetry`]) and shared by every label set that names it.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct PeerLabels {
    pub workload: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub namespace: String,
    pub principal: String,
    pub cluster: String,
}

fn or_unknown(value: &str) -> String {
    if value.is_empty() {
        UNKNOWN.to_string()
    } else {
        value.to_string()
    }
}

static UNKNOWN_PEER: LazyLock<Arc<PeerLabels>> = LazyLock::new(|| {
    Arc::new(PeerLabels {
        workload: UNKNOWN.into(),
        canonical_service: UNKNOWN.into(),
        canonical_revision: UNKNOWN.into(),
        namespace: UNKNOWN.into(),
        principal: UNKNOWN.into(),
        cluster: UNKNOWN.into(),
    })
});

impl PeerLabels {
    /// A workload's labels, its own identity as principal (`None`:
    /// `unknown`, a plaintext client).
    pub fn of(workload: &Workload, principal: Option<&Identity>) -> PeerLabels {
        let names = &workload.names;
        PeerLabels {
            workload: or_unknown(&names.workload),
            canonical_service: or_unknown(&names.canonical_service),
            canonical_revision: or_unknown(&names.canonical_revision),
            namespace: or_unknown(&workload.namespace),
            principal: principal.map_or_else(|| UNKNOWN.to_string(), ToString::to_string),
            cluster: or_unknown(&names.cluster),
        }
    }

    /// What a reporter knows of `peer`.
    fn describe(peer: Peer<'_>) -> Arc<PeerLabels> {
        match (peer.workload, peer.identity) {
            // The common case: shared, nothing built.
            (Some(w), Some(id)) if *id == w.identity => w.telemetry.clone(),
            (Some(w), principal) => Arc::new(PeerLabels::of(w, principal)),
            (None, Some(id)) => Arc::new(PeerLabels {
                namespace: id.namespace.clone(),
                principal: id.to_string(),
                ..PeerLabels::clone(&UNKNOWN_PEER)
            }),
            (None, None) => UNKNOWN_PEER.clone(),
        }
    }
}

/// `destination_service`, `_namespace` and `_name`: built once per service
/// ([`Service::telemetry`]).
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct ServiceLabels {
    pub hostname: String,
    pub namespace: String,
    pub name: String,
}

static UNKNOWN_SERVICE: LazyLock<Arc<ServiceLabels>> = LazyLock::new(|| {
    Arc::new(ServiceLabels {
        hostname: UNKNOWN.into(),
        namespace: UNKNOWN.into(),
        name: UNKNOWN.into(),
    })
});

impl ServiceLabels {
    pub fn of(hostname: &str, namespace: &str, name: &str) -> ServiceLabels {
        ServiceLabels {
            hostname: hostname.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Istio's standard labels of a connection or request. Anything the
/// reporter does not know is `unknown`, as in Istio. Cheap to build and
/// clone: the peers and the service are shared.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct TrafficLabels {
    pub reporter: Reporter,
    pub source: Arc<PeerLabels>,
    pub destination: Arc<PeerLabels>,
    pub service: Arc<ServiceLabels>,
    pub request_protocol: RequestProtocol,
    /// Envoy's response flags, `-` for none.
    pub response_flags: Cow<'static, str>,
    pub connection_security_policy: SecurityPolicy,
    /// What a Telemetry's metric overrides change for the reporter's
    /// workload (`None`, the common case: Istio's standard set).
    pub custom: Option<Arc<Custom>>,
}

impl Reporter {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::source => "source",
            Reporter::destination => "destination",
        }
    }
}

impl RequestProtocol {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::tcp => "tcp",
            RequestProtocol::http => "http",
            RequestProtocol::grpc => "grpc",
        }
    }
}

impl SecurityPolicy {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::mutual_tls => "mutual_tls",
            SecurityPolicy::none => "none",
            SecurityPolicy::unknown => "unknown",
        }
    }
}

/// Writes `name="value"` pairs in order.
fn labels(
    encoder: &mut LabelSetEncoder,
    pairs: &[(&str, &dyn EncodeLabelValueDyn)],
) -> Result<(), std::fmt::Error> {
    for (name, value) in pairs {
        value.encode_pair(name, encoder)?;
    }
    Ok(())
}

/// [`EncodeLabelValue`] for a label whose value type varies.
trait EncodeLabelValueDyn {
    fn encode_pair(&self, name: &str, encoder: &mut LabelSetEncoder)
    -> Result<(), std::fmt::Error>;
}

impl<T: EncodeLabelValue> EncodeLabelValueDyn for T {
    fn encode_pair(
        &self,
        name: &str,
        encoder: &mut LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabelKey;
        let mut label = encoder.encode_label();
        let mut key = label.encode_label_key()?;
        EncodeLabelKey::encode(&name, &mut key)?;
        let mut value = key.encode_label_value()?;
        EncodeLabelValue::encode(self, &mut value)?;
        value.finish()
    }
}

impl EncodeLabelSet for TrafficLabels {
    /// In Istio's order.
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (s, d, service) = (&*self.source, &*self.destination, &*self.service);
        labels(
            encoder,
            &[
                ("reporter", &self.reporter),
                ("source_workload", &s.workload.as_str()),
                ("source_canonical_service", &s.canonical_service.as_str()),
                ("source_canonical_revision", &s.canonical_revision.as_str()),
                ("source_workload_namespace", &s.namespace.as_str()),
                ("source_principal", &s.principal.as_str()),
                ("source_app", &s.canonical_service.as_str()),
                ("source_version", &s.canonical_revision.as_str()),
                ("source_cluster", &s.cluster.as_str()),
                ("destination_service", &service.hostname.as_str()),
                ("destination_service_namespace", &service.namespace.as_str()),
                ("destination_service_name", &service.name.as_str()),
                ("destination_workload", &d.workload.as_str()),
                (
                    "destination_canonical_service",
                    &d.canonical_service.as_str(),
                ),
                (
                    "destination_canonical_revision",
                    &d.canonical_revision.as_str(),
                ),
                ("destination_workload_namespace", &d.namespace.as_str()),
                ("destination_principal", &d.principal.as_str()),
                ("destination_app", &d.canonical_service.as_str()),
                ("destination_version", &d.canonical_revision.as_str()),
                ("destination_cluster", &d.cluster.as_str()),
                ("request_protocol", &self.request_protocol),
                ("response_flags", &self.response_flags.as_ref()),
                (
                    "connection_security_policy",
                    &self.connection_security_policy,
                ),
            ],
        )
    }
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

impl TrafficLabels {
    pub fn new(
        reporter: Reporter,
        source: Peer<'_>,
        destination: Peer<'_>,
        service: Option<&Service>,
        request_protocol: RequestProtocol,
        connection_security_policy: SecurityPolicy,
    ) -> TrafficLabels {
        // The overrides are the reporter's workload's, for its side.
        let (reporting, side) = match reporter {
            Reporter::source => (source.workload, Side::Client),
            Reporter::destination => (destination.workload, Side::Server),
        };
        let custom = reporting
            .and_then(|w| overrides::global().resolve(&w.namespace, &w.uid, side))
            .map(|view| Arc::new(Custom::new(view)));
        TrafficLabels {
            reporter,
            source: PeerLabels::describe(source),
            destination: PeerLabels::describe(destination),
            service: service.map_or_else(|| UNKNOWN_SERVICE.clone(), |s| s.telemetry.clone()),
            request_protocol,
            response_flags: Cow::Borrowed("-"),
            connection_security_policy,
            custom,
        }
    }

    /// Under the overrides `view` (`None`: the standard set), as resolved
    /// now for the reporter's workload: labels kept for a connection's
    /// requests follow policy changes. Values are computed again.
    pub fn under(mut self, view: Option<Arc<View>>) -> TrafficLabels {
        let same = match (&self.custom, &view) {
            (None, None) => true,
            (Some(c), Some(v)) => Arc::ptr_eq(&c.view, v),
            _ => false,
        };
        if !same {
            self.custom = view.map(|v| Arc::new(Custom::new(v)));
        }
        self
    }

    /// The overrides' view, when a Telemetry changes these labels.
    pub fn view(&self) -> Option<&View> {
        self.custom.as_deref().map(|c| &*c.view)
    }

    /// With the overrides' UPSERT values computed on `e` (a no-op
    /// without any).
    pub fn with_values(mut self, e: &Entry<'_>) -> TrafficLabels {
        if let Some(custom) = &self.custom
            && !custom.view.expressions.is_empty()
        {
            let view = custom.view.clone();
            let values = view.values(e);
            self.custom = Some(Arc::new(Custom { view, values }));
        }
        self
    }

    /// For a connection (L4): with the overrides' UPSERT values computed
    /// on what a connection is known by (its addresses, whether it is
    /// mutual TLS); request attributes are missing there (`unknown`).
    pub fn with_connection_values(
        self,
        local: Option<std::net::SocketAddr>,
        remote: Option<std::net::SocketAddr>,
        mtls: bool,
    ) -> TrafficLabels {
        if self.view().is_none_or(|v| v.expressions.is_empty()) {
            return self;
        }
        let mut e = Entry::new(std::time::SystemTime::now(), std::time::Duration::ZERO);
        e.downstream_local = local;
        e.downstream_remote = remote;
        e.mtls = mtls;
        self.with_values(&e)
    }

    /// Istio's standard labels as text, in [`overrides::LABELS`] order.
    fn standard(&self) -> [Cow<'_, str>; 23] {
        let (s, d, service) = (&*self.source, &*self.destination, &*self.service);
        fn b(v: &'static str) -> Cow<'static, str> {
            Cow::Borrowed(v)
        }
        fn r(v: &str) -> Cow<'_, str> {
            Cow::Borrowed(v)
        }
        [
            b(self.reporter.as_str()),
            r(&s.workload),
            r(&s.canonical_service),
            r(&s.canonical_revision),
            r(&s.namespace),
            r(&s.principal),
            r(&s.canonical_service),
            r(&s.canonical_revision),
            r(&s.cluster),
            r(&service.hostname),
            r(&service.namespace),
            r(&service.name),
            r(&d.workload),
            r(&d.canonical_service),
            r(&d.canonical_revision),
            r(&d.namespace),
            r(&d.principal),
            r(&d.canonical_service),
            r(&d.canonical_revision),
            r(&d.cluster),
            b(self.request_protocol.as_str()),
            Cow::Borrowed(self.response_flags.as_ref()),
            b(self.connection_security_policy.as_str()),
        ]
    }

    /// The labels `metric` is written with under the overrides, or `None`
    /// when the overrides turn it off. `extra` are the standard labels
    /// after the 23 (an HTTP request's answer).
    pub fn for_metric(
        &self,
        metric: overrides::Metric,
        extra: &[Cow<'_, str>],
    ) -> Option<Vec<(String, String)>> {
        let standard = self.standard();
        let values = standard.iter().chain(extra);
        let Some(custom) = &self.custom else {
            let mut labels: Vec<(String, String)> = overrides::LABELS
                .iter()
                .zip(values)
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            labels.sort_unstable();
            return Some(labels);
        };
        let m = custom.view.metric(metric);
        if m.disabled {
            return None;
        }
        // The standard labels this metric has (an UPSERT of one it lacks,
        // `response_code` on a TCP metric, adds nothing, as in Istio).
        let carried = &overrides::LABELS[..standard.len() + extra.len()];
        let mut labels: Vec<(String, String)> = carried
            .iter()
            .zip(values)
            .enumerate()
            .filter(|(i, _)| m.keeps(*i))
            .map(|(_, (n, v))| (n.to_string(), v.to_string()))
            .collect();
        for (name, i) in &m.upserts {
            let standard_elsewhere =
                overrides::LABELS.contains(&name.as_str()) && !carried.contains(&name.as_str());
            if !standard_elsewhere {
                labels.push((name.clone(), custom.value(*i).to_string()));
            }
        }
        // In name order: the same labels in another order must be the
        // same series when the tables are encoded.
        labels.sort_unstable();
        Some(labels)
    }

    /// With a failed connection's flag, as ztunnel labels it.
    pub fn with_failure(mut self, failure: TcpFailure) -> TrafficLabels {
        self.response_flags = Cow::Borrowed(failure.label());
        self
    }

    /// With Envoy's response flags (`-` for none).
    pub fn with_flags(mut self, flags: &str) -> TrafficLabels {
        self.response_flags = if flags.is_empty() || flags == "-" {
            Cow::Borrowed("-")
        } else {
            Cow::Owned(flags.into())
        };
        self
    }
}

/// The labels of one HTTP request: the connection's and its answer's.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RequestLabels {
    pub traffic: TrafficLabels,
    pub response_code: u16,
    /// gRPC's status code, absent (`-`) for anything that is not gRPC.
    pub grpc_response_status: Option<u32>,
}

impl RequestLabels {
    /// As [`TrafficLabels::for_metric`], with the answer's labels.
    pub fn for_metric(&self, metric: overrides::Metric) -> Option<Vec<(String, String)>> {
        let code = self.response_code.to_string();
        let grpc = self
            .grpc_response_status
            .map_or(Cow::Borrowed("-"), |s| Cow::Owned(s.to_string()));
        self.traffic.for_metric(metric, &[Cow::Owned(code), grpc])
    }
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.traffic.encode(encoder)?;
        let grpc = self
            .grpc_response_status
            .map_or(Cow::Borrowed("-"), |s| Cow::Owned(s.to_string()));
        labels(
            encoder,
            &[
                ("response_code", &(self.response_code as u64)),
                ("grpc_response_status", &grpc.as_ref()),
            ],
        )
    }
}

/// Istio's traffic metrics, registered once.
#[derive(Debug)]
pub struct Traffic {
    /// Off (`--traffic-metrics=false`): nothing is recorded, and callers
    /// skip building labels.
    enabled: bool,
    tables: Arc<Tables>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            enabled: true,
            tables: Arc::default(),
        }
    }
}

/// Why a connection failed to be made, as ztunnel's `response_flags`
/// label of `istio_tcp_connections_closed` and
/// `istio_tcp_connections_failed` names it. A connection that was made
/// and then broke (a reset, an idle timeout) closes without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpFailure {
    /// An AuthorizationPolicy (or PeerAuthentication) refused it, or a
    /// policy change closed it: the destination's side.
    Denied,
    /// Its upstream could not be connected, or refused it (a client's
    /// side of a denial: HBONE's 401).
    Connect,
    /// The TLS handshake with the destination's node failed.
    Tls,
    /// HTTP/2 with the destination's node could not be started.
    H2Handshake,
    /// Connecting to the destination node's HBONE port timed out, as a
    /// NetworkPolicy that blocks 15008 makes it.
    NetworkPolicy,
    /// No certificate to prove the client's identity with.
    Identity,
    /// The DestinationRule's `maxConnections` were all open (Envoy's
    /// `UO`).
    Overflow,
}

impl TcpFailure {
    pub const ALL: [TcpFailure; 7] = [
        TcpFailure::Denied,
        TcpFailure::Connect,
        TcpFailure::Tls,
        TcpFailure::H2Handshake,
        TcpFailure::NetworkPolicy,
        TcpFailure::Identity,
        TcpFailure::Overflow,
    ];

    /// The label's value, ztunnel's.
    pub fn label(self) -> &'static str {
        match self {
            TcpFailure::Denied => "DENY",
            TcpFailure::Connect => "CONNECT",
            TcpFailure::Tls => "TLS_FAILURE",
            TcpFailure::H2Handshake => "H2_HANDSHAKE_FAILURE",
            TcpFailure::NetworkPolicy => "NETWORK_POLICY",
            TcpFailure::Identity => "IDENTITY_ERROR",
            TcpFailure::Overflow => "UO",
        }
    }
}

/// One connection's TCP metrics: `opened` when it is made, its bytes as
/// they move (through [`TcpBytes`], as ztunnel counts them, so that a
/// long-lived connection's traffic shows while it lasts), `closed` when
/// the record is dropped, however the connection ended; a connection that
/// failed ([`TcpRecord::close`]) is closed under its failure's flag, and
/// counted failed.
#[derive(Debug)]
pub struct TcpRecord {
    series: Arc<TcpSeries>,
    failure: Option<TcpFailure>,
}

impl TcpRecord {
    /// Where the relay counts the connection's bytes.
    pub fn bytes(&self) -> TcpBytes {
        TcpBytes(self.series.clone())
    }

    /// Counts the connection closed, failed with `failure` when it did.
    pub fn close(mut self, failure: Option<TcpFailure>) {
        self.failure = failure;
    }
}

impl Drop for TcpRecord {
    fn drop(&mut self) {
        match self.failure {
            None => &self.series.closed,
            Some(failure) => &self.series.failed[failure as usize],
        }
        .fetch_add(1, Relaxed);
    }
}

/// A connection's byte counters in its series, added to per chunk moved.
/// As Istio defines them, `received` counts the request's bytes (from the
/// client) and `sent` the response's (to it), whichever side reports.
#[derive(Debug, Clone)]
pub struct TcpBytes(Arc<TcpSeries>);

impl TcpBytes {
    /// `n` more bytes came from the client.
    pub fn from_client(&self, n: u64) {
        self.0.received.fetch_add(n, Relaxed);
    }

    /// `n` more bytes went back to the client.
    pub fn to_client(&self, n: u64) {
        self.0.sent.fetch_add(n, Relaxed);
    }

    /// (from the client, to it), as counted so far in the series.
    #[cfg(test)]
    pub fn counted(&self) -> (u64, u64) {
        (self.0.received.load(Relaxed), self.0.sent.load(Relaxed))
    }
}

/// One HTTP request's answer, for [`Traffic::request`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestOutcome {
    pub duration: std::time::Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// gRPC messages each way (0 for anything that is not gRPC).
    pub request_messages: u64,
    pub response_messages: u64,
}

impl RequestSeries {
    /// Records one answered request.
    pub fn record(&self, outcome: &RequestOutcome) {
        self.requests.fetch_add(1, Relaxed);
        self.duration.observe(outcome.duration.as_nanos() as u64);
        self.request_bytes.observe(outcome.request_bytes);
        self.response_bytes.observe(outcome.response_bytes);
        self.request_messages
            .fetch_add(outcome.request_messages, Relaxed);
        self.response_messages
            .fetch_add(outcome.response_messages, Relaxed);
    }
}

/// The request series one connection recorded into, so that its next
/// requests with the same labels and answer skip the shared table.
#[derive(Debug, Default)]
pub struct SeriesCache {
    recent: std::sync::Mutex<Vec<(RequestLabels, Arc<RequestSeries>)>>,
}

impl SeriesCache {
    /// Answers seldom vary on one connection; a few cover it.
    const KEEP: usize = 4;

    pub fn get(
        &self,
        traffic: &Traffic,
        labels: &TrafficLabels,
        status: u16,
        grpc_status: Option<u32>,
    ) -> Arc<RequestSeries> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let found = recent.iter().find(|(key, _)| {
            key.response_code == status
                && key.grpc_response_status == grpc_status
                && key.traffic == *labels
        });
        if let Some((_, series)) = found {
            return series.clone();
        }
        let series = traffic.request_series(labels, status, grpc_status);
        if recent.len() == Self::KEEP {
            recent.remove(0);
        }
        recent.push((
            RequestLabels {
                traffic: labels.clone(),
                response_code: status,
                grpc_response_status: grpc_status,
            },
            series.clone(),
        ));
        series
    }
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

    /// Adds the traffic families to `registry` (encoded at each scrape).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.tables.clone()));
    }

    /// A connection opened; keep the record until it ends, and count its
    /// bytes through [`TcpRecord::bytes`].
    pub fn tcp_open(&self, labels: &TrafficLabels) -> TcpRecord {
        let series = self.tables.tcp.get(labels);
        series.opened.fetch_add(1, Relaxed);
        TcpRecord {
            series,
            failure: None,
        }
    }

    /// The series of requests with `labels` answered `status` (and, for
    /// gRPC, `grpc_status`): a connection keeps it for its next requests.
    pub fn request_series(
        &self,
        labels: &TrafficLabels,
        status: u16,
        grpc_status: Option<u32>,
    ) -> Arc<RequestSeries> {
        self.tables.requests.get(&RequestLabels {
            traffic: labels.clone(),
            response_code: status,
            grpc_response_status: grpc_status,
        })
    }

    /// One HTTP request, answered `status`.
    pub fn request(
        &self,
        labels: &TrafficLabels,
        status: u16,
        grpc_status: Option<u32>,
        outcome: &RequestOutcome,
    ) {
        if self.enabled {
            self.request_series(labels, status, grpc_status)
                .record(outcome);
        }
    }

    /// Label sets in use (TCP, HTTP).
    pub fn series_count(&self) -> (usize, usize) {
        (self.tables.tcp.len(), self.tables.requests.len())
    }
}

#[cfg(test)]
mod tests;
