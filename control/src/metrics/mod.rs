//! Prometheus metrics, served on the monitoring port (15014) at
//! `/metrics`. Names, labels, types and histogram buckets are istiod's
//! wherever istiod has the metric, so Istio's control-plane dashboards
//! and alerts work unchanged:
//!
//! | metric | type | labels | what |
//! | --- | --- | --- | --- |
//! | `pilot_xds` | gauge | `version` | connected xDS streams, by the client's `ISTIO_VERSION` node metadata (empty when it sends none) |
//! | `pilot_xds_pushes` | counter | `type` | one per type pushed to one client (a response, or a large one split in chunks) |
//! | `pilot_xds_push_time` | histogram | `type` | seconds to build one type's responses for one client and hand them to its stream |
//! | `pilot_proxy_convergence_time` | histogram | — | seconds from the model change (the builder picking up the config change) to a client's push for it being sent |
//! | `pilot_total_xds_rejects` | counter | `type` | NACKed responses |
//! | `pilot_total_xds_internal_errors` | counter | — | streams ended by a request that failed to decode |
//! | `pilot_k8s_cfg_events` | counter | `type`, `event` | Istio and Gateway API objects added, updated, deleted (both sources) |
//! | `pilot_k8s_reg_events` | counter | `type`, `event` | Services, Pods, EndpointSlices, Nodes, Namespaces (and weft's ServiceAccounts, ConfigMaps) added, updated, deleted |
//! | `pilot_services` | gauge | — | Services plus ServiceEntry hosts |
//! | `pilot_virt_services` | gauge | — | VirtualServices |
//! | `weft_control_config_errors` | gauge | — | rejected config objects/files (`/debug/config_errors`) |
//! | `citadel_server_csr_count` | counter | — | certificate requests |
//! | `citadel_server_authentication_failure_count` | counter | — | requests without a node, for an identity no pod on the node has, or outside the trust domain |
//! | `citadel_server_csr_parsing_err_count` | counter | — | CSRs that do not parse |
//! | `citadel_server_id_extraction_err_count` | counter | — | CSRs without exactly one SPIFFE URI, or whose identity differs from `ImpersonatedIdentity` |
//! | `citadel_server_csr_sign_err_count` | counter | `error` | signing failures (`CERT_GEN_ERROR`) |
//! | `citadel_server_success_cert_issuance_count` | counter | — | certificates issued |
//! | `citadel_server_root_cert_expiry_timestamp` | gauge | — | unix seconds at which the root expires |
//! | `citadel_server_root_cert_expiry_seconds` | gauge | — | seconds until then (negative: expired) |
//! | `istio_build` | gauge | `component="pilot"`, `tag` | 1; `tag` is weft's version |
//!
//! **Counters keep istiod's names.** istiod exports its counters without
//! a `_total` suffix (`pilot_xds_pushes`), which OpenMetrics does not
//! allow for the `counter` type. So those families are `unknown` in
//! OpenMetrics (the sample keeps the family's name, and Prometheus
//! stores the same series name as for istiod) and `counter` in the
//! classic text format, where a counter needs no suffix: exactly the
//! lines istiod serves. See [`UntypedCounter`] and [`classic_text`].
//!
//! **`type` values** are istiod's (`GetMetricType`): `wds` for
//! `istio.workload.Address`, `wads` for `istio.security.Authorization`;
//! for a type istiod has no short name for it uses the type URL, and so
//! does weft for its own: `type.googleapis.com/weft.route.v1.RouteConfig`
//! and `type.googleapis.com/weft.route.v1.DestinationPolicy`.
//!
//! Label values are drawn from fixed sets (types, kinds, events) or are
//! bounded ([`MAX_VERSIONS`] client versions); nothing is per agent,
//! connection or address. Counting on the push path is atomic increments
//! of handles created up front (a histogram observation takes its own
//! short lock); no lock is held across a push.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder},
    metrics::{MetricType, TypedMetric, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use weft_proto::{
    ACCESS_LOG_POLICY_TYPE_URL, ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
    DESTINATION_POLICY_TYPE_URL, METRICS_POLICY_TYPE_URL, ROUTE_CONFIG_TYPE_URL,
    TRACING_POLICY_TYPE_URL, exposition,
};

use crate::{kinds::Object, source::Snapshot, xds::SERVED_TYPES};

/// istiod's `pilot_proxy_convergence_time` buckets (seconds).
pub const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// istiod's `pilot_xds_push_time` buckets (seconds).
pub const PUSH_TIME_BUCKETS: [f64; 9] = [0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// Distinct `version` values of `pilot_xds`; clients beyond count as
/// `other`.
pub const MAX_VERSIONS: usize = 16;
/// Model changes remembered for convergence times (as many as the
/// model's own history).
const MODEL_CHANGES: usize = crate::model::HISTORY;

/// The families exported as `counter` without a `_total` suffix (istiod's
/// names); `unknown` in OpenMetrics.
const UNSUFFIXED_COUNTERS: [&str; 11] = [
    "pilot_xds_pushes",
    "pilot_total_xds_rejects",
    "pilot_total_xds_internal_errors",
    "pilot_k8s_cfg_events",
    "pilot_k8s_reg_events",
    "citadel_server_csr_count",
    "citadel_server_authentication_failure_count",
    "citadel_server_csr_parsing_err_count",
    "citadel_server_id_extraction_err_count",
    "citadel_server_csr_sign_err_count",
    "citadel_server_success_cert_issuance_count",
];

/// istiod's `type` label of an xDS type URL (`GetMetricType`): `wds`,
/// `wads`, else the type URL.
pub fn xds_type_label(type_url: &str) -> &'static str {
    match type_url {
        ADDRESS_TYPE_URL => "wds",
        AUTHORIZATION_TYPE_URL => "wads",
        ROUTE_CONFIG_TYPE_URL => ROUTE_CONFIG_TYPE_URL,
        DESTINATION_POLICY_TYPE_URL => DESTINATION_POLICY_TYPE_URL,
        ACCESS_LOG_POLICY_TYPE_URL => ACCESS_LOG_POLICY_TYPE_URL,
        TRACING_POLICY_TYPE_URL => TRACING_POLICY_TYPE_URL,
        METRICS_POLICY_TYPE_URL => METRICS_POLICY_TYPE_URL,
        _ => "unknown",
    }
}

/// A monotonic count exported under its own name (no `_total`): type
/// `unknown` in OpenMetrics, turned into `counter` by [`classic_text`].
/// Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct UntypedCounter(Arc<AtomicU64>);

impl UntypedCounter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for UntypedCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for UntypedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // A gauge's sample is `name{labels} value`: what an `unknown`
        // family's sample is.
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

/// An object change reported by a config source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigEvent {
    Add,
    Update,
    Delete,
}

impl ConfigEvent {
    fn label(self) -> &'static str {
        match self {
            ConfigEvent::Add => "add",
            ConfigEvent::Update => "update",
            ConfigEvent::Delete => "delete",
        }
    }
}

/// Which family counts a kind's changes and its `type` value: istiod's
/// registry kinds (`pilot_k8s_reg_events`, plural as istiod names them)
/// or config kinds (`pilot_k8s_cfg_events`, the Kubernetes kind).
fn event_family(kind: &'static str) -> (bool, &'static str) {
    match kind {
        "Service" => (true, "Services"),
        "Pod" => (true, "Pods"),
        "Node" => (true, "Nodes"),
        "Namespace" => (true, "Namespaces"),
        "EndpointSlice" => (true, "EndpointSlice"),
        "ServiceAccount" => (true, "ServiceAccounts"),
        "ConfigMap" => (true, "ConfigMaps"),
        // istiod labels by the resource's Kind, without its group.
        other => (false, other.split('.').next().unwrap_or(other)),
    }
}

/// The kinds whose event counters are created up front.
const KNOWN_KINDS: [&str; 20] = [
    "Service",
    "Pod",
    "Node",
    "Namespace",
    "EndpointSlice",
    "ServiceAccount",
    "ConfigMap",
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "WorkloadEntry",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "RequestAuthentication",
    "Telemetry",
    "Gateway.gateway.networking.k8s.io",
    "HTTPRoute",
    "Sidecar",
    "WorkloadGroup",
];

type TypeLabel = [(&'static str, &'static str); 1];
type EventLabels = [(&'static str, &'static str); 2];
type VersionLabel = [(&'static str, String); 1];

fn new_push_time() -> Histogram {
    Histogram::new(PUSH_TIME_BUCKETS)
}

/// When the model went from one version to the next.
#[derive(Debug)]
struct ModelChange {
    from: String,
    to: String,
    at: Instant,
}

/// Every metric of one control plane, and its registry.
pub struct Metrics {
    registry: Registry,
    // xDS
    connected: Family<VersionLabel, Gauge>,
    /// Distinct `version` values of `connected` so far.
    versions: std::sync::Mutex<usize>,
    /// Per [`SERVED_TYPES`] index.
    pushes: [UntypedCounter; SERVED_TYPES.len()],
    push_time: [Histogram; SERVED_TYPES.len()],
    rejects: [UntypedCounter; SERVED_TYPES.len()],
    convergence: Histogram,
    internal_errors: UntypedCounter,
    model_changes: RwLock<VecDeque<ModelChange>>,
    // Config
    cfg_events: Family<EventLabels, UntypedCounter>,
    reg_events: Family<EventLabels, UntypedCounter>,
    events: HashMap<&'static str, [UntypedCounter; 3]>,
    services: Gauge,
    virt_services: Gauge,
    config_errors: Gauge,
    // CA
    pub ca: CaMetrics,
}

/// The CA's counters (istiod's `security/pkg/server/ca/monitoring.go`).
pub struct CaMetrics {
    pub csr: UntypedCounter,
    pub authentication_failures: UntypedCounter,
    pub csr_parsing_errors: UntypedCounter,
    pub id_extraction_errors: UntypedCounter,
    /// `error="CERT_GEN_ERROR"`.
    pub cert_gen_errors: UntypedCounter,
    pub issued: UntypedCounter,
    root_expiry: Gauge,
    root_expiry_seconds: Gauge,
}

impl CaMetrics {
    /// Records the root certificate's expiry (unix seconds).
    pub fn set_root_expiry(&self, unix_seconds: i64) {
        self.root_expiry.set(unix_seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();

        let connected = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS",
            connected.clone(),
        );
        let pushes_family = Family::<TypeLabel, UntypedCounter>::default();
        registry.register(
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds",
            pushes_family.clone(),
        );
        let push_time_family =
            Family::<TypeLabel, Histogram, fn() -> Histogram>::new_with_constructor(new_push_time);
        registry.register(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds",
            push_time_family.clone(),
        );
        let convergence = Histogram::new(CONVERGENCE_BUCKETS);
        registry.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration",
            convergence.clone(),
        );
        let rejects_family = Family::<TypeLabel, UntypedCounter>::default();
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy",
            rejects_family.clone(),
        );
        let internal_errors = UntypedCounter::default();
        registry.register(
            "pilot_total_xds_internal_errors",
            "Total number of internal XDS errors in pilot",
            internal_errors.clone(),
        );
        let per_type = |family: &Family<TypeLabel, UntypedCounter>| {
            SERVED_TYPES.map(|t| family.get_or_create_owned(&[("type", xds_type_label(t))]))
        };
        let pushes = per_type(&pushes_family);
        let rejects = per_type(&rejects_family);
        let push_time = SERVED_TYPES
            .map(|t| push_time_family.get_or_create_owned(&[("type", xds_type_label(t))]));

        let cfg_events = Family::<EventLabels, UntypedCounter>::default();
        registry.register(
            "pilot_k8s_cfg_events",
            "Events from k8s config",
            cfg_events.clone(),
        );
        let reg_events = Family::<EventLabels, UntypedCounter>::default();
        registry.register(
            "pilot_k8s_reg_events",
            "Events from k8s registry",
            reg_events.clone(),
        );
        let events = KNOWN_KINDS
            .iter()
            .map(|kind| {
                let (registry_kind, label) = event_family(kind);
                let family = if registry_kind {
                    &reg_events
                } else {
                    &cfg_events
                };
                let counters = [ConfigEvent::Add, ConfigEvent::Update, ConfigEvent::Delete]
                    .map(|e| family.get_or_create_owned(&[("type", label), ("event", e.label())]));
                (*kind, counters)
            })
            .collect();
        let services = Gauge::default();
        registry.register(
            "pilot_services",
            "Total services known to pilot",
            services.clone(),
        );
        let virt_services = Gauge::default();
        registry.register(
            "pilot_virt_services",
            "Total virtual services known to pilot",
            virt_services.clone(),
        );
        let config_errors = Gauge::default();
        registry.register(
            "weft_control_config_errors",
            "Rejected configuration objects and files, as listed by /debug/config_errors; the last good version of each keeps serving",
            config_errors.clone(),
        );

        let ca = CaMetrics {
            csr: UntypedCounter::default(),
            authentication_failures: UntypedCounter::default(),
            csr_parsing_errors: UntypedCounter::default(),
            id_extraction_errors: UntypedCounter::default(),
            cert_gen_errors: UntypedCounter::default(),
            issued: UntypedCounter::default(),
            root_expiry: Gauge::default(),
            root_expiry_seconds: Gauge::default(),
        };
        registry.register(
            "citadel_server_csr_count",
            "The number of CSRs received by Citadel server",
            ca.csr.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "The number of authentication failures",
            ca.authentication_failures.clone(),
        );
        registry.register(
            "citadel_server_csr_parsing_err_count",
            "The number of errors occurred when parsing the CSR",
            ca.csr_parsing_errors.clone(),
        );
        registry.register(
            "citadel_server_id_extraction_err_count",
            "The number of errors occurred when extracting the ID from CSR",
            ca.id_extraction_errors.clone(),
        );
        let sign_errors = Family::<[(&'static str, &'static str); 1], UntypedCounter>::default();
        let ca = CaMetrics {
            cert_gen_errors: sign_errors.get_or_create_owned(&[("error", "CERT_GEN_ERROR")]),
            ..ca
        };
        registry.register(
            "citadel_server_csr_sign_err_count",
            "The number of errors occurred when signing the CSR",
            sign_errors,
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "The number of certificates issuances that have succeeded",
            ca.issued.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_timestamp",
            "The unix timestamp, in seconds, when the root cert will expire",
            ca.root_expiry.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_seconds",
            "The time remaining, in seconds, before the root cert will expire. A negative value indicates the cert is expired",
            ca.root_expiry_seconds.clone(),
        );

        let build = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        build
            .get_or_create(&[("component", "pilot"), ("tag", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("istio_build", "Istio component build info", build);

        Metrics {
            registry,
            connected,
            versions: std::sync::Mutex::new(0),
            pushes,
            push_time,
            rejects,
            convergence,
            internal_errors,
            model_changes: RwLock::new(VecDeque::new()),
            cfg_events,
            reg_events,
            events,
            services,
            virt_services,
            config_errors,
            ca,
        }
    }

    // === xDS ===

    /// A client connected; the returned guard counts it until dropped.
    /// `version` is its `ISTIO_VERSION` node metadata.
    pub fn xds_connected(self: &Arc<Self>, version: Option<&str>) -> ConnectedGuard {
        let label = [("version", version.map(sanitize_version).unwrap_or_default())];
        let existing = self.connected.get(&label).map(|g| g.clone());
        let gauge = existing.unwrap_or_else(|| {
            // A new version: the first MAX_VERSIONS get their own series.
            let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(gauge) = self.connected.get(&label) {
                gauge.clone()
            } else if *versions >= MAX_VERSIONS {
                self.connected
                    .get_or_create_owned(&[("version", "other".to_string())])
            } else {
                *versions += 1;
                self.connected.get_or_create_owned(&label)
            }
        });
        gauge.inc();
        ConnectedGuard(gauge)
    }

    /// One type's push to one client was sent, `took` from building it.
    pub fn xds_pushed(&self, type_url: &str, took: Duration) {
        if let Some(i) = type_index(type_url) {
            self.pushes[i].inc();
            self.push_time[i].observe(took.as_secs_f64());
        }
    }

    /// A client NACKed a response of `type_url`.
    pub fn xds_rejected(&self, type_url: &str) {
        if let Some(i) = type_index(type_url) {
            self.rejects[i].inc();
        }
    }

    /// A stream ended on an error of the server's side of it.
    pub fn xds_internal_error(&self) {
        self.internal_errors.inc();
    }

    /// The model went from `from` to `to`; the change began `at` (the
    /// builder picking up the config change).
    pub fn model_changed(&self, from: &str, to: &str, at: Instant) {
        let mut changes = self
            .model_changes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        changes.push_back(ModelChange {
            from: from.to_string(),
            to: to.to_string(),
            at,
        });
        while changes.len() > MODEL_CHANGES {
            changes.pop_front();
        }
    }

    /// When the oldest change a client at `from` has not seen began (else
    /// the change to `to`), if remembered.
    pub fn change_began(&self, from: &str, to: &str) -> Option<Instant> {
        let changes = self.model_changes.read().unwrap_or_else(|p| p.into_inner());
        changes
            .iter()
            .find(|c| c.from == from)
            .or_else(|| changes.iter().rev().find(|c| c.to == to))
            .map(|c| c.at)
    }

    /// A client got everything a model change (begun at `began`) meant
    /// for it.
    pub fn converged(&self, began: Instant) {
        self.convergence.observe(began.elapsed().as_secs_f64());
    }

    // === Config ===

    /// A source saw an object of `kind` change.
    pub fn config_event(&self, kind: &'static str, event: ConfigEvent) {
        let i = event as usize;
        if let Some(counters) = self.events.get(kind) {
            counters[i].inc();
            return;
        }
        let (registry_kind, label) = event_family(kind);
        let family = if registry_kind {
            &self.reg_events
        } else {
            &self.cfg_events
        };
        family
            .get_or_create(&[("type", label), ("event", event.label())])
            .inc();
    }

    // === Exposition ===

    /// `/metrics`: the gauges read from `snapshot` brought up to date,
    /// then the registry as OpenMetrics text if `accept` asks for it, else
    /// as the classic text format. Returns (content type, body).
    pub fn render(&self, accept: Option<&str>, snapshot: &Snapshot) -> (&'static str, String) {
        self.observe_snapshot(snapshot);
        let expiry = self.ca.root_expiry.get();
        if expiry != 0 {
            self.ca.root_expiry_seconds.set(expiry - unix_now());
        }
        let mut openmetrics = String::new();
        prometheus_client::encoding::text::encode(&mut openmetrics, &self.registry)
            .expect("writing to a String");
        if exposition::wants_openmetrics(accept) {
            (exposition::OPENMETRICS, openmetrics)
        } else {
            (exposition::PROMETHEUS_TEXT, classic_text(&openmetrics))
        }
    }

    fn observe_snapshot(&self, snapshot: &Snapshot) {
        let (mut services, mut virt_services) = (0usize, 0usize);
        for object in &snapshot.objects {
            match object {
                Object::Service(_) => services += 1,
                Object::ServiceEntry(se) => services += se.spec.hosts.len(),
                Object::VirtualService(_) => virt_services += 1,
                _ => {}
            }
        }
        self.services.set(services as i64);
        self.virt_services.set(virt_services as i64);
        self.config_errors.set(snapshot.errors.len() as i64);
    }
}

/// Counts one connected client until dropped.
#[derive(Debug)]
pub struct ConnectedGuard(Gauge);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn type_index(type_url: &str) -> Option<usize> {
    SERVED_TYPES.iter().position(|t| *t == type_url)
}

/// A client's version as a label value: at most 64 characters of
/// `[A-Za-z0-9._+-]`, else `unknown`.
fn sanitize_version(version: &str) -> String {
    let ok = version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        version.to_string()
    } else {
        "unknown".to_string()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// OpenMetrics text (as [`Metrics::render`] encodes it) as the classic
/// text format: [`exposition::to_prometheus_text`], with istiod's
/// unsuffixed counters typed `counter` again.
pub fn classic_text(openmetrics: &str) -> String {
    let text = exposition::to_prometheus_text(openmetrics);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" untyped"))
        {
            Some(name) if UNSUFFIXED_COUNTERS.contains(&name) => {
                let _ = writeln!(out, "# TYPE {name} counter");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
