//! DestinationRule → `weft.route.v1.DestinationPolicy`: the traffic
//! policy and subsets of the rules that apply to one host, one entry per
//! namespace on Istio's lookup path.

use weft_proto::route::{
    self as pb, ConfigRef, ScopedPolicy,
    client_tls_settings::TlsMode,
    connection_pool_settings::{HttpSettings, TcpSettings, http_settings::H2UpgradePolicy},
    load_balancer_settings::{
        ConsistentHashLb, LbPolicy, SimpleLb,
        consistent_hash_lb::{HashAlgorithm, HashKey, HttpCookie, MagLev, RingHash},
    },
    locality_load_balancer_setting::{Distribute, Failover},
};

use super::route::duration;
use crate::kinds::{
    DestinationRule,
    destination_rule::{self as dr, TrafficPolicy},
};

/// The rules of one namespace for one host (same host, oldest first),
/// merged as istiod merges them (`mergeDestinationRule`): the first rule's
/// `exportTo`, the first traffic policy any of them has, subsets added by
/// name in order, each over that traffic policy.
pub fn scoped(namespace: &str, host: &str, rules: &[&DestinationRule]) -> ScopedPolicy {
    let mut out = ScopedPolicy {
        namespace: namespace.to_string(),
        host: host.to_string(),
        ..Default::default()
    };
    let Some(first) = rules.first() else {
        return out;
    };
    out.export_to = export_to(&first.spec.export_to, namespace);
    let top = rules.iter().find_map(|r| r.spec.traffic_policy.as_ref());
    out.traffic_policy = top.map(traffic_policy);
    for rule in rules {
        out.destination_rules.push(ConfigRef {
            namespace: namespace.to_string(),
            name: rule.metadata.name.clone(),
        });
        for s in &rule.spec.subsets {
            if out.subsets.iter().any(|o| o.name == s.name) {
                continue;
            }
            let effective = match (top, &s.traffic_policy) {
                (None, None) => None,
                (base, over) => Some(merge(base, over.as_ref())),
            };
            out.subsets.push(pb::Subset {
                name: s.name.clone(),
                labels: s.labels.clone(),
                traffic_policy: effective.as_ref().map(traffic_policy),
            });
        }
    }
    out
}

/// Whether a rule is visible anywhere (`exportTo` not only `~`).
pub fn visible(rule: &DestinationRule) -> bool {
    let e = &rule.spec.export_to;
    e.is_empty() || !e.iter().all(|e| e == "~")
}

fn export_to(export_to: &[String], namespace: &str) -> Vec<String> {
    if export_to.iter().any(|e| e == "*") {
        return Vec::new();
    }
    let mut out: Vec<String> = export_to
        .iter()
        .filter(|e| *e != "~")
        .map(|e| if e == "." { namespace } else { e }.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A subset's policy over the rule's, as Istio merges them for each port
/// (`MergeSubsetTrafficPolicy`): on a port with settings of its own, the
/// subset's port settings, whole; else the rule's (its port settings,
/// whole, where it has some for the port) with each part the subset sets
/// replacing the rule's. The agent takes a port's settings whole, so the
/// result carries that merge for every port either side names.
fn merge(base: Option<&TrafficPolicy>, over: Option<&TrafficPolicy>) -> TrafficPolicy {
    let mut out = base.cloned().unwrap_or_default();
    let Some(o) = over else {
        return out;
    };
    let mut ports: Vec<u32> = out
        .port_level_settings
        .iter()
        .chain(&o.port_level_settings)
        .filter_map(|s| s.port.as_ref().map(|p| p.number))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let port_of = |p: &TrafficPolicy, number: u32| {
        p.port_level_settings
            .iter()
            .find(|s| s.port.as_ref().is_some_and(|p| p.number == number))
            .cloned()
    };
    let mut port_level = Vec::with_capacity(ports.len());
    for number in ports {
        let merged = match (port_of(o, number), port_of(&out, number)) {
            (Some(own), _) => own,
            (None, Some(mut rule)) => {
                overlay(
                    (
                        &mut rule.load_balancer,
                        &mut rule.connection_pool,
                        &mut rule.outlier_detection,
                        &mut rule.tls,
                    ),
                    o,
                );
                rule
            }
            // The rule says nothing of the port: the merged top level
            // applies, and no entry is needed.
            (None, None) => continue,
        };
        port_level.push(merged);
    }
    overlay(
        (
            &mut out.load_balancer,
            &mut out.connection_pool,
            &mut out.outlier_detection,
            &mut out.tls,
        ),
        o,
    );
    out.port_level_settings = port_level;
    out
}

/// Each part `over` sets replaces the one in `parts`.
fn overlay(
    parts: (
        &mut Option<dr::LoadBalancerSettings>,
        &mut Option<dr::ConnectionPoolSettings>,
        &mut Option<dr::OutlierDetection>,
        &mut Option<dr::ClientTlsSettings>,
    ),
    over: &TrafficPolicy,
) {
    let (lb, pool, outlier, tls) = parts;
    if over.load_balancer.is_some() {
        lb.clone_from(&over.load_balancer);
    }
    if over.connection_pool.is_some() {
        pool.clone_from(&over.connection_pool);
    }
    if over.outlier_detection.is_some() {
        outlier.clone_from(&over.outlier_detection);
    }
    if over.tls.is_some() {
        tls.clone_from(&over.tls);
    }
}

fn traffic_policy(p: &TrafficPolicy) -> pb::TrafficPolicy {
    pb::TrafficPolicy {
        load_balancer: p.load_balancer.as_ref().map(load_balancer),
        connection_pool: p.connection_pool.as_ref().map(connection_pool),
        outlier_detection: p.outlier_detection.as_ref().map(outlier_detection),
        tls: p.tls.as_ref().map(tls),
        port_level_settings: p
            .port_level_settings
            .iter()
            .map(|s| pb::PortTrafficPolicy {
                port: s.port.map_or(0, |p| p.number),
                load_balancer: s.load_balancer.as_ref().map(load_balancer),
                connection_pool: s.connection_pool.as_ref().map(connection_pool),
                outlier_detection: s.outlier_detection.as_ref().map(outlier_detection),
                tls: s.tls.as_ref().map(tls),
            })
            .collect(),
    }
}

fn load_balancer(lb: &dr::LoadBalancerSettings) -> pb::LoadBalancerSettings {
    let lb_policy = if let Some(simple) = lb.simple {
        Some(LbPolicy::Simple(match simple {
            dr::SimpleLb::Unspecified => SimpleLb::Unspecified,
            dr::SimpleLb::LeastConn => SimpleLb::LeastConn,
            dr::SimpleLb::Random => SimpleLb::Random,
            dr::SimpleLb::Passthrough => SimpleLb::Passthrough,
            dr::SimpleLb::RoundRobin => SimpleLb::RoundRobin,
            dr::SimpleLb::LeastRequest => SimpleLb::LeastRequest,
        } as i32))
    } else {
        lb.consistent_hash.as_ref().map(|c| {
            let hash_key = if let Some(h) = &c.http_header_name {
                Some(HashKey::HttpHeaderName(h.clone()))
            } else if let Some(cookie) = &c.http_cookie {
                Some(HashKey::HttpCookie(HttpCookie {
                    name: cookie.name.clone(),
                    path: cookie.path.clone(),
                    ttl: cookie.ttl.map(duration),
                }))
            } else if let Some(ip) = c.use_source_ip {
                Some(HashKey::UseSourceIp(ip))
            } else {
                c.http_query_parameter_name
                    .clone()
                    .map(HashKey::HttpQueryParameterName)
            };
            let hash_algorithm = if let Some(r) = &c.ring_hash {
                Some(HashAlgorithm::RingHash(RingHash {
                    minimum_ring_size: r.minimum_ring_size,
                }))
            } else {
                c.maglev.as_ref().map(|m| {
                    HashAlgorithm::Maglev(MagLev {
                        table_size: m.table_size,
                    })
                })
            };
            LbPolicy::ConsistentHash(ConsistentHashLb {
                hash_key,
                hash_algorithm,
                minimum_ring_size: c.minimum_ring_size.unwrap_or(0),
            })
        })
    };
    pb::LoadBalancerSettings {
        lb_policy,
        locality_lb_setting: lb.locality_lb_setting.as_ref().map(|l| {
            pb::LocalityLoadBalancerSetting {
                distribute: l
                    .distribute
                    .iter()
                    .map(|d| Distribute {
                        from: d.from.clone(),
                        to: d.to.clone(),
                    })
                    .collect(),
                failover: l
                    .failover
                    .iter()
                    .map(|f| Failover {
                        from: f.from.clone(),
                        to: f.to.clone(),
                    })
                    .collect(),
                failover_priority: l.failover_priority.clone(),
                enabled: l.enabled,
            }
        }),
        warmup_duration_secs: lb.warmup_duration_secs.map(duration),
    }
}

fn connection_pool(p: &dr::ConnectionPoolSettings) -> pb::ConnectionPoolSettings {
    pb::ConnectionPoolSettings {
        tcp: p.tcp.as_ref().map(|t| TcpSettings {
            max_connections: t.max_connections.unwrap_or(0),
            connect_timeout: t.connect_timeout.map(duration),
            max_connection_duration: t.max_connection_duration.map(duration),
            idle_timeout: t.idle_timeout.map(duration),
        }),
        http: p.http.as_ref().map(|h| HttpSettings {
            http1_max_pending_requests: h.http1_max_pending_requests.unwrap_or(0),
            http2_max_requests: h.http2_max_requests.unwrap_or(0),
            max_requests_per_connection: h.max_requests_per_connection.unwrap_or(0),
            max_retries: h.max_retries.unwrap_or(0),
            idle_timeout: h.idle_timeout.map(duration),
            h2_upgrade_policy: match h.h2_upgrade_policy.as_deref() {
                Some("DO_NOT_UPGRADE") => H2UpgradePolicy::DoNotUpgrade,
                Some("UPGRADE") => H2UpgradePolicy::Upgrade,
                _ => H2UpgradePolicy::Default,
            } as i32,
            use_client_protocol: h.use_client_protocol,
            max_concurrent_streams: h.max_concurrent_streams.unwrap_or(0),
        }),
    }
}

fn outlier_detection(o: &dr::OutlierDetection) -> pb::OutlierDetection {
    pb::OutlierDetection {
        consecutive_5xx_errors: o
            .consecutive_5xx_errors
            .or(o.consecutive_errors.map(|n| n.max(0) as u32)),
        consecutive_gateway_errors: o.consecutive_gateway_errors,
        consecutive_local_origin_failures: o.consecutive_local_origin_failures,
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        interval: o.interval.map(duration),
        base_ejection_time: o.base_ejection_time.map(duration),
        max_ejection_percent: o.max_ejection_percent,
        min_health_percent: o.min_health_percent,
    }
}

fn tls(t: &dr::ClientTlsSettings) -> pb::ClientTlsSettings {
    pb::ClientTlsSettings {
        mode: match t.mode {
            None | Some(dr::TlsMode::Disable) => TlsMode::Disable,
            Some(dr::TlsMode::Simple) => TlsMode::Simple,
            Some(dr::TlsMode::Mutual) => TlsMode::Mutual,
            Some(dr::TlsMode::IstioMutual) => TlsMode::IstioMutual,
        } as i32,
        client_certificate: t.client_certificate.clone(),
        private_key: t.private_key.clone(),
        ca_certificates: t.ca_certificates.clone(),
        credential_name: t.credential_name.clone(),
        subject_alt_names: t.subject_alt_names.clone(),
        sni: t.sni.clone(),
        insecure_skip_verify: t.insecure_skip_verify,
        ca_crl: t.ca_crl.clone(),
    }
}
