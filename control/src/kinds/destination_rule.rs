//! networking.istio.io DestinationRule: policy for traffic to a host once
//! routed (subsets, load balancing, connection pool, outlier detection,
//! TLS). Fields follow istio/api `networking/v1alpha3/destination_rule.proto`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Ignored, Invalid, ObjectMeta, Validate, invalid,
    istio::{Duration, check_dns_label, check_duration, check_host, check_port},
    selector::WorkloadSelector,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DestinationRuleSpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default)]
    pub tunnel: Ignored,
    #[serde(default)]
    pub proxy_protocol: Ignored,
    #[serde(default)]
    pub retry_budget: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default)]
    pub port: Option<super::istio::PortSelector>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
    #[serde(default)]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    #[serde(default)]
    pub warmup_duration_secs: Option<Duration>,
    #[serde(default)]
    pub warmup: Ignored,
}

/// `LocalityLoadBalancerSetting`: weights by locality, failover order.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    #[serde(default)]
    pub distribute: Vec<LocalityDistribute>,
    #[serde(default)]
    pub failover: Vec<LocalityFailover>,
    #[serde(default)]
    pub failover_priority: Vec<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityDistribute {
    #[serde(default)]
    pub from: String,
    /// Locality → weight (percent).
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityFailover {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    #[serde(default)]
    pub ring_hash: Option<RingHash>,
    #[serde(default)]
    pub maglev: Option<Maglev>,
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub ttl: Option<Duration>,
    #[serde(default)]
    pub attributes: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default)]
    pub minimum_ring_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    #[serde(default)]
    pub table_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default)]
    pub max_connections: Option<i32>,
    #[serde(default)]
    pub connect_timeout: Option<Duration>,
    #[serde(default)]
    pub tcp_keepalive: Ignored,
    #[serde(default)]
    pub max_connection_duration: Option<Duration>,
    #[serde(default)]
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default)]
    pub http1_max_pending_requests: Option<i32>,
    #[serde(default)]
    pub http2_max_requests: Option<i32>,
    #[serde(default)]
    pub max_requests_per_connection: Option<i32>,
    #[serde(default)]
    pub max_retries: Option<i32>,
    #[serde(default)]
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub h2_upgrade_policy: Option<String>,
    #[serde(default)]
    pub use_client_protocol: bool,
    #[serde(default)]
    pub max_concurrent_streams: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated alias of `consecutive5xxErrors`.
    #[serde(default)]
    pub consecutive_errors: Option<i32>,
    #[serde(default)]
    pub interval: Option<Duration>,
    #[serde(default)]
    pub base_ejection_time: Option<Duration>,
    #[serde(default)]
    pub max_ejection_percent: Option<i32>,
    #[serde(default)]
    pub min_health_percent: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default)]
    pub mode: Option<TlsMode>,
    #[serde(default)]
    pub client_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
    #[serde(default)]
    pub credential_name: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub sni: String,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default)]
    pub ca_crl: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

impl Validate for DestinationRule {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        let spec = &self.spec;
        if spec.host.is_empty() {
            e.push(invalid("spec.host", "must be set"));
        } else {
            check_host(&spec.host, false, "spec.host", &mut e);
        }
        if let Some(tp) = &spec.traffic_policy {
            tp.check("spec.trafficPolicy", &mut e);
        }
        let mut seen = Vec::new();
        for (i, s) in spec.subsets.iter().enumerate() {
            let at = format!("spec.subsets[{i}]");
            if s.name.is_empty() {
                e.push(invalid(format!("{at}.name"), "must be set"));
            } else {
                check_dns_label(&s.name, &format!("{at}.name"), &mut e);
                if seen.contains(&&s.name) {
                    e.push(invalid(
                        format!("{at}.name"),
                        format!("subset `{}` is defined twice", s.name),
                    ));
                }
                seen.push(&s.name);
            }
            if let Some(tp) = &s.traffic_policy {
                tp.check(&format!("{at}.trafficPolicy"), &mut e);
            }
        }
        e
    }
}

impl TrafficPolicy {
    fn check(&self, at: &str, e: &mut Vec<Invalid>) {
        check_parts(
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
            at,
            e,
        );
        for (i, p) in self.port_level_settings.iter().enumerate() {
            let at = format!("{at}.portLevelSettings[{i}]");
            match &p.port {
                Some(port) => check_port(port.number, &format!("{at}.port.number"), e),
                None => e.push(invalid(format!("{at}.port"), "must be set")),
            }
            check_parts(
                p.load_balancer.as_ref(),
                p.connection_pool.as_ref(),
                p.outlier_detection.as_ref(),
                p.tls.as_ref(),
                &at,
                e,
            );
        }
    }
}

fn check_parts(
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    at: &str,
    e: &mut Vec<Invalid>,
) {
    if let Some(lb) = lb {
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            e.push(invalid(
                format!("{at}.loadBalancer"),
                "`simple` and `consistentHash` are mutually exclusive",
            ));
        }
        if let Some(ch) = &lb.consistent_hash {
            let keys = [
                ch.http_header_name.is_some(),
                ch.http_cookie.is_some(),
                ch.use_source_ip.is_some(),
                ch.http_query_parameter_name.is_some(),
            ];
            if keys.iter().filter(|k| **k).count() != 1 {
                e.push(invalid(
                    format!("{at}.loadBalancer.consistentHash"),
                    "set exactly one of `httpHeaderName`, `httpCookie`, `useSourceIp` and `httpQueryParameterName`",
                ));
            }
            if let Some(c) = &ch.http_cookie
                && c.name.is_empty()
            {
                e.push(invalid(
                    format!("{at}.loadBalancer.consistentHash.httpCookie.name"),
                    "must be set",
                ));
            }
        }
    }
    if let Some(pool) = pool {
        let at = format!("{at}.connectionPool");
        if let Some(tcp) = &pool.tcp {
            if tcp.max_connections.is_some_and(|n| n < 0) {
                e.push(invalid(
                    format!("{at}.tcp.maxConnections"),
                    "must not be negative",
                ));
            }
            check_duration(tcp.connect_timeout, &format!("{at}.tcp.connectTimeout"), e);
            check_duration(
                tcp.max_connection_duration,
                &format!("{at}.tcp.maxConnectionDuration"),
                e,
            );
        }
        if let Some(http) = &pool.http {
            for (name, v) in [
                ("http1MaxPendingRequests", http.http1_max_pending_requests),
                ("http2MaxRequests", http.http2_max_requests),
                ("maxRequestsPerConnection", http.max_requests_per_connection),
                ("maxRetries", http.max_retries),
                ("maxConcurrentStreams", http.max_concurrent_streams),
            ] {
                if v.is_some_and(|n| n < 0) {
                    e.push(invalid(format!("{at}.http.{name}"), "must not be negative"));
                }
            }
            check_duration(http.idle_timeout, &format!("{at}.http.idleTimeout"), e);
            if let Some(p) = &http.h2_upgrade_policy
                && !["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"].contains(&p.as_str())
            {
                e.push(invalid(
                    format!("{at}.http.h2UpgradePolicy"),
                    format!("`{p}` is not one of `DEFAULT`, `DO_NOT_UPGRADE`, `UPGRADE`"),
                ));
            }
        }
    }
    if let Some(o) = outlier {
        let at = format!("{at}.outlierDetection");
        for (name, v) in [
            ("maxEjectionPercent", o.max_ejection_percent),
            ("minHealthPercent", o.min_health_percent),
        ] {
            if v.is_some_and(|p| !(0..=100).contains(&p)) {
                e.push(invalid(
                    format!("{at}.{name}"),
                    "must be a percentage (0-100)",
                ));
            }
        }
        if o.consecutive_errors.is_some_and(|n| n < 0) {
            e.push(invalid(
                format!("{at}.consecutiveErrors"),
                "must not be negative",
            ));
        }
        check_duration(o.interval, &format!("{at}.interval"), e);
        check_duration(o.base_ejection_time, &format!("{at}.baseEjectionTime"), e);
    }
    if let Some(tls) = tls
        && tls.mode == Some(TlsMode::Mutual)
        && tls.credential_name.is_empty()
        && (tls.client_certificate.is_empty() || tls.private_key.is_empty())
    {
        e.push(invalid(
            format!("{at}.tls"),
            "MUTUAL needs `credentialName`, or both `clientCertificate` and `privateKey`",
        ));
    }
}
