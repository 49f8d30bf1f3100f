//! Each setting of a traffic policy, and what is refused.

use weft_proto::route::{
    self as pb,
    client_tls_settings::TlsMode as PbTlsMode,
    connection_pool_settings::{HttpSettings, TcpSettings, http_settings::H2UpgradePolicy},
    load_balancer_settings::{
        SimpleLb,
        consistent_hash_lb::{
            HashAlgorithm as PbAlg, HashKey as PbKey, HttpCookie, MagLev, RingHash,
        },
    },
};

use super::{proto::*, *};

#[test]
fn load_balancer_settings() {
    let lb = |s| effective(lb_policy(simple(s))).lb;
    assert_eq!(lb(SimpleLb::Unspecified), LbPolicy::LeastRequest);
    assert_eq!(lb(SimpleLb::LeastConn), LbPolicy::LeastRequest);
    assert_eq!(lb(SimpleLb::LeastRequest), LbPolicy::LeastRequest);
    assert_eq!(lb(SimpleLb::RoundRobin), LbPolicy::RoundRobin);
    assert_eq!(lb(SimpleLb::Random), LbPolicy::Random);
    assert_eq!(lb(SimpleLb::Passthrough), LbPolicy::Passthrough);
    // Settings without a policy (only locality, say): the default.
    let only_locality = Some(pb::LoadBalancerSettings::default());
    assert_eq!(
        effective(lb_policy(only_locality)).lb,
        LbPolicy::LeastRequest
    );
}

#[test]
fn consistent_hash_settings() {
    let ch = |key, alg, dep| effective(lb_policy(hashing(key, alg, dep))).lb;
    assert_eq!(
        ch(PbKey::HttpHeaderName("X-User".into()), None, 0),
        LbPolicy::ConsistentHash {
            key: HashKey::Header(http::HeaderName::from_static("x-user")),
            algorithm: HashAlgorithm::RingHash {
                minimum_ring_size: 1024
            },
        }
    );
    assert_eq!(
        ch(PbKey::UseSourceIp(true), None, 2048),
        LbPolicy::ConsistentHash {
            key: HashKey::SourceIp,
            algorithm: HashAlgorithm::RingHash {
                minimum_ring_size: 2048
            },
        },
        "the deprecated ring size"
    );
    assert_eq!(
        ch(
            PbKey::HttpQueryParameterName("u".into()),
            Some(PbAlg::RingHash(RingHash {
                minimum_ring_size: 4096
            })),
            2048
        ),
        LbPolicy::ConsistentHash {
            key: HashKey::QueryParameter("u".into()),
            algorithm: HashAlgorithm::RingHash {
                minimum_ring_size: 4096
            },
        }
    );
    assert_eq!(
        ch(
            PbKey::HttpCookie(HttpCookie {
                name: "s".into(),
                path: "/".into(),
                ttl: pd(60),
            }),
            Some(PbAlg::Maglev(MagLev { table_size: 0 })),
            0
        ),
        LbPolicy::ConsistentHash {
            key: HashKey::Cookie {
                name: "s".into(),
                path: "/".into(),
                ttl: Some(secs(60)),
            },
            algorithm: HashAlgorithm::Maglev { table_size: 65537 },
        }
    );
    let maglev = ch(
        PbKey::UseSourceIp(true),
        Some(PbAlg::Maglev(MagLev { table_size: 251 })),
        0,
    );
    assert!(matches!(
        maglev,
        LbPolicy::ConsistentHash {
            algorithm: HashAlgorithm::Maglev { table_size: 251 },
            ..
        }
    ));
    // Nothing to hash: Envoy picks at random.
    assert_eq!(ch(PbKey::UseSourceIp(false), None, 0), LbPolicy::Random);
}

#[test]
fn connection_pool_settings() {
    let tp = |tcp: Option<TcpSettings>, http: Option<HttpSettings>| pb::TrafficPolicy {
        connection_pool: Some(pb::ConnectionPoolSettings { tcp, http }),
        ..Default::default()
    };
    let p = effective(tp(
        Some(TcpSettings {
            max_connections: 10,
            connect_timeout: pd(3),
            max_connection_duration: pd(600),
            idle_timeout: pd(120),
        }),
        Some(HttpSettings {
            http1_max_pending_requests: 11,
            http2_max_requests: 12,
            max_requests_per_connection: 13,
            max_retries: 14,
            idle_timeout: pd(30),
            h2_upgrade_policy: H2UpgradePolicy::Upgrade as i32,
            use_client_protocol: false,
            max_concurrent_streams: 15,
        }),
    ));
    assert_eq!(
        p.limits,
        PoolLimits {
            max_connections: 10,
            connect_timeout: Some(secs(3)),
            max_pending_requests: 11,
            max_requests: 12,
            max_requests_per_connection: 13,
            max_retries: 14,
            idle_timeout: secs(30),
            max_concurrent_streams: 15,
            max_connection_duration: Some(secs(600)),
            tcp_idle_timeout: Some(secs(120)),
        }
    );
    assert_eq!(p.h2_upgrade, H2Upgrade::Upgrade);
    assert!(p.upgrades_h2(false));

    // The TCP idle timeout stands in for an unset HTTP one.
    let p = effective(tp(
        Some(TcpSettings {
            idle_timeout: pd(120),
            ..Default::default()
        }),
        Some(HttpSettings {
            use_client_protocol: true,
            h2_upgrade_policy: H2UpgradePolicy::Upgrade as i32,
            ..Default::default()
        }),
    ));
    assert_eq!(p.limits.idle_timeout, secs(120));
    assert_eq!(p.limits.max_requests, u32::MAX);
    assert!(p.use_client_protocol);
    assert!(!p.upgrades_h2(true), "the client's protocol wins");

    let p = effective(tp(
        None,
        Some(HttpSettings {
            h2_upgrade_policy: H2UpgradePolicy::DoNotUpgrade as i32,
            ..Default::default()
        }),
    ));
    assert!(!p.upgrades_h2(true));
    // An explicit 0 turns the idle timeout off.
    let p = effective(tp(
        None,
        Some(HttpSettings {
            idle_timeout: pd(0),
            ..Default::default()
        }),
    ));
    assert_eq!(p.limits.idle_timeout, Duration::MAX);
    assert!(EffectivePolicy::defaults().upgrades_h2(true));
    assert!(!EffectivePolicy::defaults().upgrades_h2(false));
}

#[test]
fn outlier_detection_settings() {
    let od = |o: pb::OutlierDetection| {
        effective(pb::TrafficPolicy {
            outlier_detection: Some(o),
            ..Default::default()
        })
        .outlier
        .expect("set")
    };
    assert_eq!(
        od(pb::OutlierDetection::default()),
        OutlierConfig {
            consecutive_5xx: Some(5),
            consecutive_gateway: None,
            consecutive_local_origin: None,
            split_local_origin: false,
            interval: secs(10),
            base_ejection_time: secs(30),
            max_ejection_time: secs(300),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    );
    let o = od(pb::OutlierDetection {
        consecutive_5xx_errors: Some(0),
        consecutive_gateway_errors: Some(3),
        split_external_local_origin_errors: true,
        interval: pd(1),
        base_ejection_time: pd(400),
        max_ejection_percent: Some(100),
        min_health_percent: Some(50),
        ..Default::default()
    });
    assert_eq!(o.consecutive_5xx, None, "0 disables");
    assert_eq!(o.consecutive_gateway, Some(3));
    assert_eq!(
        o.consecutive_local_origin,
        Some(5),
        "Envoy's default when split"
    );
    assert!(o.split_local_origin);
    assert_eq!(o.interval, secs(1));
    assert_eq!(o.max_ejection_time, secs(400), "never below the base");
    assert_eq!((o.max_ejection_percent, o.min_health_percent), (100, 50));
    let o = od(pb::OutlierDetection {
        consecutive_local_origin_failures: Some(2),
        ..Default::default()
    });
    assert_eq!(o.consecutive_local_origin, None, "only when split");
    let o = od(pb::OutlierDetection {
        max_ejection_percent: Some(0),
        ..Default::default()
    });
    assert_eq!(o.max_ejection_percent, 10, "0 is Envoy's default");
}

#[test]
fn tls_settings() {
    let tls = |mode: PbTlsMode| {
        effective(pb::TrafficPolicy {
            tls: Some(pb::ClientTlsSettings {
                mode: mode as i32,
                credential_name: "cred".into(),
                sni: "api.example.com".into(),
                subject_alt_names: vec!["api.example.com".into()],
                insecure_skip_verify: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let p = tls(PbTlsMode::Simple);
    assert_eq!(p.tls_mode, TlsMode::Simple);
    assert_eq!(
        p.tls,
        Some(TlsOrigination {
            mutual: false,
            client_certificate: String::new(),
            private_key: String::new(),
            ca_certificates: String::new(),
            credential_name: "cred".into(),
            subject_alt_names: vec!["api.example.com".into()],
            sni: "api.example.com".into(),
            insecure_skip_verify: true,
        })
    );
    assert!(tls(PbTlsMode::Mutual).tls.is_some_and(|t| t.mutual));
    for (mode, want) in [
        (PbTlsMode::Disable, TlsMode::Disable),
        (PbTlsMode::IstioMutual, TlsMode::IstioMutual),
    ] {
        let p = tls(mode);
        assert_eq!((p.tls, p.tls_mode), (None, want));
    }
}

#[test]
fn errors_name_policy_namespace_and_field() {
    let err = compile_err(lb_policy(hashing(
        PbKey::HttpHeaderName("bad header".into()),
        None,
        0,
    )));
    assert!(
        matches!(&err, PolicyError::HeaderName { policy, namespace, field, value }
        if policy == NAME && namespace == "bookinfo"
            && field == "traffic_policy.load_balancer.consistent_hash.http_header_name"
            && value == "bad header"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(NAME) && text.contains("bookinfo") && text.contains("http_header_name"),
        "{text}"
    );

    let err = compile_err(lb_policy(hashing(
        PbKey::UseSourceIp(true),
        Some(PbAlg::Maglev(MagLev { table_size: 65536 })),
        0,
    )));
    assert!(
        matches!(&err, PolicyError::NotPrime { size: 65536, field, .. }
        if field == "traffic_policy.load_balancer.consistent_hash.maglev.table_size"),
        "{err:?}"
    );

    // In a subset's port-level settings.
    let mut e = entry("istio-system", &[], None);
    e.subsets = vec![pb::Subset {
        name: "v1".into(),
        traffic_policy: Some(pb::TrafficPolicy {
            port_level_settings: vec![pb::PortTrafficPolicy {
                port: 80,
                load_balancer: hashing(PbKey::HttpHeaderName(String::new()), None, 0),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }];
    let err = Policies::compile(&policy(vec![e])).expect_err("refused");
    assert!(
        matches!(&err, PolicyError::HeaderName { namespace, field, .. }
        if namespace == "istio-system"
            && field == "subsets[v1].traffic_policy.port_level_settings[port 80].load_balancer.consistent_hash.http_header_name"),
        "{err:?}"
    );

    for bad in [
        lb_policy(hashing(
            PbKey::HttpCookie(HttpCookie {
                name: String::new(),
                ..Default::default()
            }),
            None,
            0,
        )),
        lb_policy(hashing(
            PbKey::HttpCookie(HttpCookie {
                name: "a b".into(),
                ..Default::default()
            }),
            None,
            0,
        )),
        lb_policy(hashing(
            PbKey::HttpQueryParameterName(String::new()),
            None,
            0,
        )),
        lb_policy(hashing(
            PbKey::UseSourceIp(true),
            Some(PbAlg::RingHash(RingHash {
                minimum_ring_size: MAX_RING_SIZE + 1,
            })),
            0,
        )),
        lb_policy(hashing(
            PbKey::UseSourceIp(true),
            Some(PbAlg::Maglev(MagLev {
                table_size: 5_000_081,
            })),
            0,
        )),
        pb::TrafficPolicy {
            connection_pool: Some(pb::ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    max_connections: -1,
                    ..Default::default()
                }),
                http: None,
            }),
            ..Default::default()
        },
        pb::TrafficPolicy {
            outlier_detection: Some(pb::OutlierDetection {
                max_ejection_percent: Some(101),
                ..Default::default()
            }),
            ..Default::default()
        },
        pb::TrafficPolicy {
            outlier_detection: Some(pb::OutlierDetection {
                interval: pd(0),
                ..Default::default()
            }),
            ..Default::default()
        },
        pb::TrafficPolicy {
            outlier_detection: Some(pb::OutlierDetection {
                base_ejection_time: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ] {
        let err = compile_err(bad);
        assert!(matches!(err, PolicyError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains(NAME));
    }
}
