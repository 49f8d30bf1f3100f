//! Where the traffic metrics are kept: one table of series per kind (TCP,
//! HTTP), each series the bundle of counters and histograms that one label
//! set records, so that a connection or a request costs one table lookup
//! and a few atomic additions, never a lock held while it records.
//!
//! `prometheus-client`'s `Family` would cost a lookup per metric (four per
//! connection, four per request, each hashing all 23 labels) and its
//! histograms take a lock per observation; the tables here are encoded at
//! scrape time by a [`Collector`] with the same names and types, so what
//! Prometheus sees is unchanged.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{RequestLabels, RequestProtocol, TcpFailure, TrafficLabels, overrides::Metric};

/// Envoy's default histogram buckets, which Istio's
/// `istio_request_duration_milliseconds` and the size histograms use.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A histogram over 19 bounds (plus `+Inf`; [`BUCKETS`] for Istio's
/// families) that records with atomic additions. Values are recorded as
/// integers in a unit `scale` times the reported one (nanoseconds for
/// milliseconds), so the sum is exact.
#[derive(Debug)]
pub struct Histogram {
    /// The buckets' upper bounds, in reported units.
    bounds: &'static [f64; BUCKETS.len()],
    /// Per-bucket counts (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    /// In recorded units.
    sum: AtomicU64,
    /// Recorded units per reported unit.
    scale: u64,
}

impl Histogram {
    fn new(scale: u64) -> Histogram {
        Histogram::with_bounds(&BUCKETS, scale)
    }

    /// A histogram over `bounds` (reported units) instead of [`BUCKETS`].
    pub fn with_bounds(bounds: &'static [f64; BUCKETS.len()], scale: u64) -> Histogram {
        Histogram {
            bounds,
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records `units` (reported as `units / scale`).
    pub fn observe(&self, units: u64) {
        let value = units as f64 / self.scale as f64;
        // Prometheus buckets are `le`: a value on a bound belongs to it.
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(units, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|n| n.load(Relaxed)).sum()
    }

    pub fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.snapshot().encode(encoder)
    }

    /// Its counts now.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            bounds: self.bounds,
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum: self.sum.load(Relaxed),
            scale: self.scale,
        }
    }
}

/// A histogram's counts at one moment; those of series that a metric
/// override makes one add up.
#[derive(Debug, Clone)]
struct Snapshot {
    bounds: &'static [f64; BUCKETS.len()],
    buckets: [u64; BUCKETS.len() + 1],
    sum: u64,
    scale: u64,
}

impl Snapshot {
    fn add(&mut self, other: &Snapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
    }

    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            // prometheus-client writes `le="+Inf"` for infinity.
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets)
            .collect();
        // The count is the buckets' total, so a scrape between two
        // additions of one observation stays consistent.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum as f64 / self.scale as f64;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// What one TCP label set records.
#[derive(Debug, Default)]
pub struct TcpSeries {
    pub opened: AtomicU64,
    /// Closed without a failure.
    pub closed: AtomicU64,
    /// Closed having failed, by [`TcpFailure`]: reported as closed (and
    /// failed) under the failure's `response_flags`, as ztunnel does.
    pub failed: [AtomicU64; TcpFailure::ALL.len()],
    /// Response bytes (destination to source).
    pub sent: AtomicU64,
    /// Request bytes (source to destination).
    pub received: AtomicU64,
}

/// What one HTTP label set (with its answer) records.
#[derive(Debug)]
pub struct RequestSeries {
    pub requests: AtomicU64,
    /// In nanoseconds, reported in milliseconds.
    pub duration: Histogram,
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
    /// gRPC messages of the stream, each way (reported for gRPC only).
    pub request_messages: AtomicU64,
    pub response_messages: AtomicU64,
}

impl Default for RequestSeries {
    fn default() -> Self {
        RequestSeries {
            requests: AtomicU64::new(0),
            duration: Histogram::new(1_000_000),
            request_bytes: Histogram::new(1),
            response_bytes: Histogram::new(1),
            request_messages: AtomicU64::new(0),
            response_messages: AtomicU64::new(0),
        }
    }
}

type Map<K, V> = HashMap<K, Arc<V>, foldhash::fast::RandomState>;

/// Label set → series, created on first use and kept for the agent's life
/// (as Prometheus expects of a counter; Istio's label sets are bounded by
/// the mesh's workloads and services, and a Telemetry's added labels by
/// their values).
#[derive(Debug)]
pub struct Table<K, V> {
    series: RwLock<Map<K, V>>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            series: RwLock::new(Map::default()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Default> Table<K, V> {
    /// The series of `labels`, created if new.
    pub fn get(&self, labels: &K) -> Arc<V> {
        if let Some(series) = self.read().get(labels) {
            return series.clone();
        }
        let mut table = self.series.write().unwrap_or_else(|e| e.into_inner());
        table.entry(labels.clone()).or_default().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map<K, V>> {
        // A panic while inserting leaves the map whole (insertion is the
        // only write); the counters stay worth serving.
        self.series.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the entries, so that encoding never holds the lock that
    /// connections take.
    fn snapshot(&self) -> Vec<(K, Arc<V>)> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }
}

/// The tables, encoded on each scrape with Istio's names.
#[derive(Debug, Default)]
pub struct Tables {
    pub tcp: Table<TrafficLabels, TcpSeries>,
    pub requests: Table<RequestLabels, RequestSeries>,
}

/// Labels as text, for series that metric overrides changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pairs(Vec<(String, String)>);

impl EncodeLabelSet for Pairs {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        let pairs: Vec<(&str, &dyn super::EncodeLabelValueDyn)> = self
            .0
            .iter()
            .map(|(n, v)| (n.as_str(), v as &dyn super::EncodeLabelValueDyn))
            .collect();
        super::labels(encoder, &pairs)
    }
}

/// A label set of a table, as each metric writes it.
trait Labels: EncodeLabelSet {
    /// Whether a Telemetry's overrides changed it.
    fn overridden(&self) -> bool;
    /// Its labels for `metric` (`None`: that metric is off for it).
    fn for_metric(&self, metric: Metric) -> Option<Vec<(String, String)>>;
}

impl Labels for TrafficLabels {
    fn overridden(&self) -> bool {
        self.custom.is_some()
    }

    fn for_metric(&self, metric: Metric) -> Option<Vec<(String, String)>> {
        TrafficLabels::for_metric(self, metric, &[])
    }
}

impl Labels for RequestLabels {
    fn overridden(&self) -> bool {
        self.traffic.custom.is_some()
    }

    fn for_metric(&self, metric: Metric) -> Option<Vec<(String, String)>> {
        RequestLabels::for_metric(self, metric)
    }
}

/// Series whose labels overrides changed, made one where they now agree
/// (a removed label, a disabled metric): `add` sums two values.
fn merged<L: Labels, T: Clone>(
    series: &[(&L, T)],
    metric: Metric,
    add: fn(&mut T, &T),
) -> Vec<(Pairs, T)> {
    let mut out: std::collections::BTreeMap<Pairs, T> = std::collections::BTreeMap::new();
    for (labels, value) in series {
        let Some(pairs) = labels.for_metric(metric) else {
            continue;
        };
        match out.entry(Pairs(pairs)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(value.clone());
            }
            std::collections::btree_map::Entry::Occupied(mut o) => add(o.get_mut(), value),
        }
    }
    out.into_iter().collect()
}

fn counter<L: Labels>(
    encoder: &mut DescriptorEncoder,
    metric: Metric,
    name: &str,
    help: &str,
    series: &[(&L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    if series.iter().any(|(l, _)| l.overridden()) {
        for (labels, value) in merged(series, metric, |a, b| *a += b) {
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        return Ok(());
    }
    for (labels, value) in series {
        family
            .encode_family(*labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    metric: Metric,
    name: &str,
    help: &str,
    series: &[(RequestLabels, Arc<RequestSeries>)],
    pick: fn(&RequestSeries) -> &Histogram,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    if series.iter().any(|(l, _)| l.overridden()) {
        let snapshots: Vec<(&RequestLabels, Snapshot)> = series
            .iter()
            .map(|(l, s)| (l, pick(s).snapshot()))
            .collect();
        for (labels, snapshot) in merged(&snapshots, metric, Snapshot::add) {
            snapshot.encode(family.encode_family(&labels)?)?;
        }
        return Ok(());
    }
    for (labels, s) in series {
        pick(s).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Tables {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tcp = self.tcp.snapshot();
        let tcp_counter = |pick: fn(&TcpSeries) -> &AtomicU64| -> Vec<(&TrafficLabels, u64)> {
            tcp.iter()
                .map(|(labels, s)| (labels, pick(s).load(Relaxed)))
                .collect()
        };
        counter(
            &mut encoder,
            Metric::TcpOpened,
            "istio_tcp_connections_opened",
            "Connections opened",
            &tcp_counter(|s| &s.opened),
        )?;
        // Failed connections, each under its series' labels with the
        // failure's flag (a series of its own, as in ztunnel: opened under
        // `-`, closed under `DENY`).
        let failed: Vec<(TrafficLabels, u64)> = tcp
            .iter()
            .flat_map(|(labels, s)| {
                TcpFailure::ALL.into_iter().filter_map(move |failure| {
                    let n = s.failed[failure as usize].load(Relaxed);
                    (n > 0).then(|| (labels.clone().with_failure(failure), n))
                })
            })
            .collect();
        let failed: Vec<(&TrafficLabels, u64)> = failed.iter().map(|(l, n)| (l, *n)).collect();
        let mut closed = tcp_counter(|s| &s.closed);
        closed.extend_from_slice(&failed);
        counter(
            &mut encoder,
            Metric::TcpClosed,
            "istio_tcp_connections_closed",
            "Connections closed",
            &closed,
        )?;
        // Not one of Istio's standard metrics (ztunnel's, marked unstable):
        // a Telemetry's overrides of `TCP_CLOSED_CONNECTIONS` apply to it.
        counter(
            &mut encoder,
            Metric::TcpClosed,
            "istio_tcp_connections_failed",
            "Connections that failed to be made, or that a policy refused or closed, by response_flags",
            &failed,
        )?;
        counter(
            &mut encoder,
            Metric::TcpSent,
            "istio_tcp_sent_bytes",
            "Bytes sent in response (destination to source), counted as they move",
            &tcp_counter(|s| &s.sent),
        )?;
        counter(
            &mut encoder,
            Metric::TcpReceived,
            "istio_tcp_received_bytes",
            "Bytes received in request (source to destination), counted as they move",
            &tcp_counter(|s| &s.received),
        )?;

        let requests = self.requests.snapshot();
        let request_counter = |pick: fn(&RequestSeries) -> &AtomicU64, grpc_only: bool| {
            requests
                .iter()
                .filter(|(labels, _)| {
                    !grpc_only || labels.traffic.request_protocol == RequestProtocol::grpc
                })
                .map(|(labels, s)| (labels, pick(s).load(Relaxed)))
                .collect::<Vec<_>>()
        };
        counter(
            &mut encoder,
            Metric::RequestCount,
            "istio_requests",
            "HTTP and gRPC requests",
            &request_counter(|s| &s.requests, false),
        )?;
        histogram(
            &mut encoder,
            Metric::RequestDuration,
            "istio_request_duration_milliseconds",
            "Time from the request's first byte to the response's last, in milliseconds",
            &requests,
            |s| &s.duration,
        )?;
        histogram(
            &mut encoder,
            Metric::RequestSize,
            "istio_request_bytes",
            "Request body sizes, in bytes",
            &requests,
            |s| &s.request_bytes,
        )?;
        histogram(
            &mut encoder,
            Metric::ResponseSize,
            "istio_response_bytes",
            "Response body sizes, in bytes",
            &requests,
            |s| &s.response_bytes,
        )?;
        counter(
            &mut encoder,
            Metric::GrpcRequestMessages,
            "istio_request_messages",
            "gRPC messages the client sent, per stream's labels",
            &request_counter(|s| &s.request_messages, true),
        )?;
        counter(
            &mut encoder,
            Metric::GrpcResponseMessages,
            "istio_response_messages",
            "gRPC messages the server sent, per stream's labels",
            &request_counter(|s| &s.response_messages, true),
        )?;
        Ok(())
    }
}
