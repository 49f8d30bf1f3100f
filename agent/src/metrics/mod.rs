//! What the agent counts: Istio's traffic metrics ([`traffic`]) and its
//! own health (connections active, denials by reason, request verdicts,
//! xDS and certificate state). Served on `:15020/stats/prometheus` in the
//! Prometheus formats ([`Metrics::encode`]); the health counters also as
//! JSON on the admin API (`/stats`).

pub mod traffic;
pub mod waits;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::proxy::limits::Stage;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

pub use traffic::Traffic;

/// Why a connection was refused; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A DENY policy matched (PeerAuthentication STRICT included).
    PolicyDeny,
    /// ALLOW policies applied and none matched.
    NoAllowMatch,
    /// The peer's TLS handshake failed (no, expired or untrusted certificate).
    TlsHandshake,
    /// The peer's certificate is from another trust domain.
    ForeignTrustDomain,
    /// The peer's identity is not the one of the workload at its address.
    IdentityMismatch,
    /// CONNECT to an address this pod does not have, or not a CONNECT.
    BadTarget,
    /// Outbound: no original destination recorded, or a service without
    /// endpoints.
    NoDestination,
    /// The source already had `--max-handshakes-per-source` handshakes
    /// in progress on 15008.
    HandshakeLimit,
    /// An open connection that a policy change denies, closed.
    PolicyRevoked,
}

impl Denial {
    const ALL: [Denial; 9] = [
        Denial::PolicyDeny,
        Denial::NoAllowMatch,
        Denial::TlsHandshake,
        Denial::ForeignTrustDomain,
        Denial::IdentityMismatch,
        Denial::BadTarget,
        Denial::NoDestination,
        Denial::HandshakeLimit,
        Denial::PolicyRevoked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Denial::PolicyDeny => "policy_deny",
            Denial::NoAllowMatch => "no_allow_match",
            Denial::TlsHandshake => "tls_handshake",
            Denial::ForeignTrustDomain => "foreign_trust_domain",
            Denial::IdentityMismatch => "identity_mismatch",
            Denial::BadTarget => "bad_target",
            Denial::NoDestination => "no_destination",
            Denial::HandshakeLimit => "handshake_limit",
            Denial::PolicyRevoked => "policy_revoked",
        }
    }
}

/// What became of a request at an HTTP port's authorization; one counter
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Passed authentication and authorization.
    Allowed,
    /// A DENY policy matched, or ALLOW policies applied and none did (403).
    Denied,
    /// It carried an invalid JWT (401).
    Unauthenticated,
    /// Its path cannot be normalised safely (400).
    BadPath,
}

impl RequestVerdict {
    const ALL: [RequestVerdict; 4] = [
        RequestVerdict::Allowed,
        RequestVerdict::Denied,
        RequestVerdict::Unauthenticated,
        RequestVerdict::BadPath,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RequestVerdict::Allowed => "allowed",
            RequestVerdict::Denied => "denied",
            RequestVerdict::Unauthenticated => "unauthenticated",
            RequestVerdict::BadPath => "bad_path",
        }
    }
}

/// The agent's counters.
#[derive(Debug)]
pub struct Metrics {
    /// Istio's `istio_tcp_*` and `istio_request*` families.
    pub traffic: Traffic,
    /// Where `traffic` is registered.
    registry: Registry,
    denials: [AtomicU64; Denial::ALL.len()],
    /// Waits cut at their bound, by [`Stage`].
    timeouts: [AtomicU64; Stage::ALL.len()],
    /// Requests at HTTP ports' authorization, by [`RequestVerdict`].
    requests: [AtomicU64; 4],
    /// Connections being proxied now (all directions).
    active: AtomicU64,
    /// Malformed HTTP requests from apps, answered by the proxy and not
    /// forwarded.
    bad_requests: AtomicU64,
    /// Whether pods' waits in the mesh are recorded ([`waits`]).
    waits: bool,
}

/// Counts one proxied connection while it lives.
pub struct ActiveConnection<'a>(&'a Metrics);

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true, true)
    }
}

impl Metrics {
    /// The agent's counters; Istio's traffic metrics only if `traffic`,
    /// pods' waits in the mesh only if `waits`.
    pub fn new(traffic: bool, waits: bool) -> Metrics {
        let traffic = if traffic {
            Traffic::default()
        } else {
            Traffic::disabled()
        };
        let mut registry = Registry::default();
        traffic.register(&mut registry);
        Metrics {
            traffic,
            registry,
            denials: Default::default(),
            timeouts: Default::default(),
            requests: Default::default(),
            active: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            waits,
        }
    }

    /// Whether pods' waits in the mesh are recorded.
    pub fn waits_on(&self) -> bool {
        self.waits
    }
}

/// What a scrape reports of the agent's state besides its counters.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The xDS stream to the control plane is up.
    pub xds_connected: bool,
    /// Workloads and services the agent knows.
    pub workloads: u64,
    pub services: u64,
    /// Pods enrolled on this node (`None`: not known at this instant).
    pub pods_enrolled: Option<u64>,
    /// Per identity held: its certificate's expiry (Unix seconds).
    pub certificates: Vec<(String, u64)>,
    /// Per eBPF map loaded: (name, entries, capacity), as last counted.
    pub maps: Vec<(String, u64, u64)>,
    /// Spans [exported, dropped (queue full), failed (export failed)].
    pub spans: [u64; 3],
    /// Per eBPF program: the kernel's run count and total run time.
    pub programs: Vec<crate::redirect::ProgramStats>,
    /// Per-workload TCP health (`None`: off or not attached).
    pub tcp: Option<Vec<(crate::tcp_health::Pair, crate::tcp_health::Totals)>>,
    /// The enrolled pods, for their waits in the mesh (empty: off).
    pub waits: Vec<(waits::PodLabels, std::sync::Arc<crate::proxy::PodContext>)>,
}

/// The health families, encoded at scrape time from a [`Health`] snapshot
/// and the counters.
#[derive(Debug)]
struct HealthCollector {
    health: Health,
    active: u64,
    denials: Vec<(&'static str, u64)>,
    timeouts: Vec<(&'static str, u64)>,
    requests: Vec<(&'static str, u64)>,
    bad_requests: u64,
}

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
        };
        gauge(
            &mut encoder,
            "weft_agent_connections_active",
            "Connections being proxied now",
            self.active,
        )?;
        gauge(
            &mut encoder,
            "weft_agent_xds_connected",
            "1 while the xDS stream to the control plane is up",
            u64::from(self.health.xds_connected),
        )?;
        gauge(
            &mut encoder,
            "weft_agent_workloads",
            "Workloads known",
            self.health.workloads,
        )?;
        gauge(
            &mut encoder,
            "weft_agent_services",
            "Services known",
            self.health.services,
        )?;
        if let Some(pods) = self.health.pods_enrolled {
            gauge(
                &mut encoder,
                "weft_agent_pods_enrolled",
                "Pods enrolled on this node",
                pods,
            )?;
        }
        let mut labelled =
            |name: &str, help: &str, label: &str, kind: MetricType, values: &[(&str, u64)]| {
                let mut family = encoder.encode_descriptor(name, help, None, kind)?;
                for (value, n) in values {
                    let labels = [(label, *value)];
                    let encoder = family.encode_family(&labels)?;
                    match kind {
                        MetricType::Counter => ConstCounter::new(*n).encode(encoder)?,
                        _ => ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                            .encode(encoder)?,
                    }
                }
                Ok::<(), std::fmt::Error>(())
            };
        labelled(
            "weft_agent_connections_denied",
            "Connections refused, by reason",
            "reason",
            MetricType::Counter,
            &self.denials,
        )?;
        labelled(
            "weft_agent_timeouts",
            "Waits cut at their bound (a peer's handshake, a connect), by stage",
            "stage",
            MetricType::Counter,
            &self.timeouts,
        )?;
        labelled(
            "weft_agent_requests_authorized",
            "Requests at HTTP ports' authorization, by verdict",
            "verdict",
            MetricType::Counter,
            &self.requests,
        )?;
        let certificates: Vec<(&str, u64)> = self
            .health
            .certificates
            .iter()
            .map(|(identity, expiry)| (identity.as_str(), *expiry))
            .collect();
        labelled(
            "weft_agent_certificate_expiry_timestamp_seconds",
            "When each workload certificate held expires (Unix time)",
            "identity",
            MetricType::Gauge,
            &certificates,
        )?;
        let entries: Vec<(&str, u64)> = self
            .health
            .maps
            .iter()
            .map(|(map, entries, _)| (map.as_str(), *entries))
            .collect();
        labelled(
            "weft_agent_ebpf_map_entries",
            "Entries in each eBPF map, counted every 10 seconds",
            "map",
            MetricType::Gauge,
            &entries,
        )?;
        let capacity: Vec<(&str, u64)> = self
            .health
            .maps
            .iter()
            .map(|(map, _, capacity)| (map.as_str(), *capacity))
            .collect();
        labelled(
            "weft_agent_ebpf_map_capacity",
            "Maximum entries of each eBPF map (its max_entries)",
            "map",
            MetricType::Gauge,
            &capacity,
        )?;
        // What the OTLP exporters did with what they were given.
        let outcomes = |[exported, dropped, failed]: [u64; 3]| {
            [
                ("exported", exported),
                ("dropped", dropped),
                ("failed", failed),
            ]
        };
        labelled(
            "weft_agent_spans",
            "Trace spans sent to collectors, by outcome (exported; dropped: the queue was full or the collector fell behind; failed: the export failed)",
            "outcome",
            MetricType::Counter,
            &outcomes(self.health.spans),
        )?;
        labelled(
            "weft_agent_access_log_records",
            "Access-log records sent to OpenTelemetry collectors (envoyOtelAls) and entries streamed to Envoy's access-log services (envoyHttpAls, envoyTcpAls), by outcome (exported: the collector accepted them, or the service's stream took them; dropped: the queue was full, the collector or service fell behind, or the agent was starting; failed: the export failed)",
            "outcome",
            MetricType::Counter,
            &outcomes(crate::access_log::global().records()),
        )?;
        let runs: Vec<(&str, u64)> = self
            .health
            .programs
            .iter()
            .map(|p| (p.program.as_str(), p.runs))
            .collect();
        labelled(
            "weft_agent_ebpf_program_runs",
            "Times each eBPF program of the agent ran, as the kernel counts them",
            "program",
            MetricType::Counter,
            &runs,
        )?;
        if let Some(heap) = crate::sys::heap::usage() {
            labelled(
                "weft_agent_heap_bytes",
                "The allocator's heap: bytes in use, and free bytes it holds (released to the kernel once the agent is ready and when 4 MiB gather)",
                "state",
                MetricType::Gauge,
                &[("in_use", heap.in_use as u64), ("free", heap.free as u64)],
            )?;
        }
        let mut family = encoder.encode_descriptor(
            "weft_agent_ebpf_program_run_seconds",
            "Time each eBPF program of the agent ran, in all, as the kernel counts it",
            None,
            MetricType::Counter,
        )?;
        for program in &self.health.programs {
            let labels = [("program", program.program.as_str())];
            ConstCounter::new(program.run_time.as_secs_f64())
                .encode(family.encode_family(&labels)?)?;
        }
        ConstCounter::new(self.bad_requests).encode(encoder.encode_descriptor(
            "weft_agent_http_bad_requests",
            "Malformed HTTP requests from apps, answered by the proxy",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(crate::access_log::dropped()).encode(encoder.encode_descriptor(
            "weft_agent_access_log_dropped",
            "Access-log lines dropped because the output could not keep up",
            None,
            MetricType::Counter,
        )?)
    }
}

impl Metrics {
    /// Everything, as OpenMetrics text, or in the classic text format
    /// unless `openmetrics`.
    pub fn encode(&self, mut health: Health, openmetrics: bool) -> String {
        let mut text = String::new();
        let mut scrape = Registry::default();
        if let Some(tcp) = health.tcp.take() {
            scrape.register_collector(Box::new(crate::tcp_health::TcpCollector(tcp)));
        }
        if self.waits {
            let pods = std::mem::take(&mut health.waits);
            scrape.register_collector(Box::new(waits::WaitsCollector(pods)));
        }
        scrape.register_collector(Box::new(HealthCollector {
            health,
            active: self.active_connections(),
            denials: Denial::ALL
                .iter()
                .map(|d| (d.name(), self.denials(*d)))
                .collect(),
            timeouts: Stage::ALL
                .iter()
                .map(|s| (s.name(), self.timeouts(*s)))
                .collect(),
            requests: RequestVerdict::ALL
                .iter()
                .map(|v| (v.name(), self.requests(*v)))
                .collect(),
            bad_requests: self.bad_requests(),
        }));
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let encoded = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &scrape))
            .and_then(|()| encode_eof(&mut text));
        if let Err(err) = encoded {
            // Writing to a String cannot fail; a label value that cannot be
            // encoded would be a bug.
            tracing::error!(error = %err, "encoding metrics failed");
        }
        if openmetrics {
            text
        } else {
            weft_proto::exposition::to_prometheus_text(&text)
        }
    }

    /// Marks a connection as being proxied until the guard drops.
    pub fn track(&self) -> ActiveConnection<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveConnection(self)
    }

    pub fn active_connections(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn deny(&self, reason: Denial) {
        self.denials[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn denials(&self, reason: Denial) -> u64 {
        self.denials[reason as usize].load(Ordering::Relaxed)
    }

    /// A wait was cut at its bound.
    pub fn timed_out(&self, stage: Stage) {
        self.timeouts[stage as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn timeouts(&self, stage: Stage) -> u64 {
        self.timeouts[stage as usize].load(Ordering::Relaxed)
    }

    /// One request's authorization outcome.
    pub fn request(&self, verdict: RequestVerdict) {
        self.requests[verdict as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self, verdict: RequestVerdict) -> u64 {
        self.requests[verdict as usize].load(Ordering::Relaxed)
    }

    /// An app sent a malformed HTTP request.
    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bad_requests(&self) -> u64 {
        self.bad_requests.load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let denied: serde_json::Map<String, serde_json::Value> = Denial::ALL
            .iter()
            .map(|d| (d.name().to_string(), self.denials(*d).into()))
            .collect();
        let requests: serde_json::Map<String, serde_json::Value> = RequestVerdict::ALL
            .iter()
            .map(|v| (v.name().to_string(), self.requests(*v).into()))
            .collect();
        let timeouts: serde_json::Map<String, serde_json::Value> = Stage::ALL
            .iter()
            .map(|s| (s.name().to_string(), self.timeouts(*s).into()))
            .collect();
        serde_json::json!({
            "connections_denied": denied,
            "timeouts": timeouts,
            "http_requests_authorized": requests,
            "connections_active": self.active_connections(),
            "http_bad_requests": self.bad_requests(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebpf_program_statistics_are_two_counters_per_program() {
        let health = Health {
            programs: vec![crate::redirect::ProgramStats {
                program: "weft_connect4".into(),
                runs: 12,
                run_time: std::time::Duration::from_micros(1_500),
            }],
            ..Health::default()
        };
        let text = Metrics::default().encode(health, false);
        for line in [
            "# TYPE weft_agent_ebpf_program_runs_total counter",
            "weft_agent_ebpf_program_runs_total{program=\"weft_connect4\"} 12",
            "# TYPE weft_agent_ebpf_program_run_seconds_total counter",
            "weft_agent_ebpf_program_run_seconds_total{program=\"weft_connect4\"} 0.0015",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn ebpf_map_occupancy_is_one_gauge_pair_per_map() {
        let health = Health {
            maps: vec![
                ("WEFT_ENROLLED".into(), 3, 16_384),
                ("WEFT_INBOUND".into(), 2, 16_384),
                ("WEFT_DST_PORT".into(), 0, 65_536),
            ],
            ..Health::default()
        };
        let text = Metrics::default().encode(health, false);
        for line in [
            "# TYPE weft_agent_ebpf_map_entries gauge",
            "weft_agent_ebpf_map_entries{map=\"WEFT_ENROLLED\"} 3",
            "weft_agent_ebpf_map_entries{map=\"WEFT_INBOUND\"} 2",
            "weft_agent_ebpf_map_entries{map=\"WEFT_DST_PORT\"} 0",
            "# TYPE weft_agent_ebpf_map_capacity gauge",
            "weft_agent_ebpf_map_capacity{map=\"WEFT_ENROLLED\"} 16384",
            "weft_agent_ebpf_map_capacity{map=\"WEFT_INBOUND\"} 16384",
            "weft_agent_ebpf_map_capacity{map=\"WEFT_DST_PORT\"} 65536",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        let openmetrics = Metrics::default().encode(
            Health {
                maps: vec![("WEFT_HOST_SRC".into(), 1, 64)],
                ..Health::default()
            },
            true,
        );
        assert!(
            openmetrics
                .lines()
                .any(|l| l == "weft_agent_ebpf_map_capacity{map=\"WEFT_HOST_SRC\"} 64"),
            "{openmetrics}"
        );
    }

    #[test]
    fn the_heap_is_reported_in_use_and_free() {
        let text = Metrics::default().encode(Health::default(), false);
        let value = |state: &str| -> f64 {
            let prefix = format!("weft_agent_heap_bytes{{state=\"{state}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"))
                .parse()
                .expect("a number")
        };
        assert!(
            text.lines()
                .any(|l| l == "# TYPE weft_agent_heap_bytes gauge"),
            "{text}"
        );
        assert!(value("in_use") > 0.0, "{text}");
        assert!(value("free") >= 0.0, "{text}");
    }

    #[test]
    fn no_maps_no_samples() {
        let text = Metrics::default().encode(Health::default(), false);
        assert!(
            !text.lines().any(|l| l.starts_with("weft_agent_ebpf_map_")),
            "{text}"
        );
    }
}
