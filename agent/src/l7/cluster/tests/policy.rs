//! Which entry, subset and port-level settings apply.

use weft_proto::route::{
    self as pb,
    connection_pool_settings::{HttpSettings, TcpSettings},
    load_balancer_settings::{SimpleLb, consistent_hash_lb::HashKey as PbKey},
};

use super::{proto::*, *};

#[test]
fn defaults_are_istios() {
    let d = EffectivePolicy::defaults();
    assert_eq!(d.lb, LbPolicy::LeastRequest);
    assert_eq!(d.limits.max_connections, u32::MAX);
    assert_eq!(d.limits.max_requests, u32::MAX);
    assert_eq!(d.limits.max_pending_requests, u32::MAX);
    assert_eq!(d.limits.max_retries, u32::MAX);
    assert_eq!(d.limits.max_requests_per_connection, 0);
    assert_eq!(d.limits.connect_timeout, None);
    assert_eq!(d.limits.idle_timeout, secs(3600));
    assert_eq!(d.limits.max_connection_duration, None);
    assert_eq!(d.outlier, None);
    assert_eq!(d.tls, None);
    assert_eq!(d.tls_mode, TlsMode::MeshDefault);
    assert_eq!(d.h2_upgrade, H2Upgrade::Default);
    assert!(!d.use_client_protocol);

    let none = compile(vec![]);
    assert_eq!(*none.effective("bookinfo", "", 9080), d);
    assert!(!none.has_subset("bookinfo", "v1"));
    // An entry without a traffic policy, too.
    assert_eq!(
        *compile(vec![entry("bookinfo", &[], None)]).effective("x", "", 80),
        d
    );
}

#[test]
fn entry_by_client_namespace_then_visibility() {
    let p = compile(vec![
        // The service's namespace, visible to itself and "frontend" only.
        entry(
            "bookinfo",
            &["bookinfo", "frontend"],
            Some(lb_policy(simple(SimpleLb::RoundRobin))),
        ),
        // The root namespace, visible to all.
        entry(
            "istio-system",
            &[],
            Some(lb_policy(simple(SimpleLb::Random))),
        ),
        // A client namespace's own rule, exported nowhere else.
        entry(
            "team-a",
            &["team-a"],
            Some(lb_policy(simple(SimpleLb::Passthrough))),
        ),
    ]);
    let lb = |ns: &str| p.effective(ns, "", 9080).lb.clone();
    assert_eq!(lb("bookinfo"), LbPolicy::RoundRobin);
    assert_eq!(lb("frontend"), LbPolicy::RoundRobin, "first visible entry");
    assert_eq!(
        lb("team-a"),
        LbPolicy::Passthrough,
        "the client's own namespace first"
    );
    assert_eq!(lb("team-b"), LbPolicy::Random, "the root namespace's");

    let hidden = compile(vec![entry(
        "bookinfo",
        &["bookinfo"],
        Some(lb_policy(simple(SimpleLb::Random))),
    )]);
    assert_eq!(
        *hidden.effective("other", "", 9080),
        EffectivePolicy::defaults()
    );
}

#[test]
fn subsets_replace_the_entry_policy() {
    let mut e = entry(
        "bookinfo",
        &[],
        Some(lb_policy(simple(SimpleLb::RoundRobin))),
    );
    e.subsets = vec![
        pb::Subset {
            name: "v1".into(),
            traffic_policy: Some(lb_policy(simple(SimpleLb::Random))),
            ..Default::default()
        },
        pb::Subset {
            name: "v2".into(),
            traffic_policy: None,
            ..Default::default()
        },
    ];
    let p = compile(vec![e, entry("istio-system", &[], None)]);
    assert_eq!(p.effective("bookinfo", "v1", 9080).lb, LbPolicy::Random);
    assert_eq!(p.effective("bookinfo", "v2", 9080).lb, LbPolicy::RoundRobin);
    assert_eq!(p.effective("bookinfo", "v3", 9080).lb, LbPolicy::RoundRobin);
    assert_eq!(p.effective("bookinfo", "", 9080).lb, LbPolicy::RoundRobin);
    assert!(p.has_subset("bookinfo", "v1"));
    assert!(p.has_subset("bookinfo", "v2"));
    assert!(!p.has_subset("bookinfo", "v3"));
    assert!(!p.has_subset("bookinfo", ""));

    // Subsets are those of the entry that applies to the client.
    let mut own = entry("team-a", &["team-a"], None);
    own.subsets = vec![pb::Subset {
        name: "canary".into(),
        ..Default::default()
    }];
    let p = compile(vec![entry("bookinfo", &[], None), own]);
    assert!(p.has_subset("team-a", "canary"));
    assert!(!p.has_subset("bookinfo", "canary"));
}

#[test]
fn port_level_settings_replace_the_whole_policy() {
    let tp = pb::TrafficPolicy {
        load_balancer: simple(SimpleLb::RoundRobin),
        connection_pool: Some(pb::ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connections: 7,
                ..Default::default()
            }),
            http: Some(HttpSettings {
                http2_max_requests: 9,
                ..Default::default()
            }),
        }),
        outlier_detection: Some(pb::OutlierDetection::default()),
        port_level_settings: vec![pb::PortTrafficPolicy {
            port: 9443,
            load_balancer: simple(SimpleLb::Random),
            connection_pool: Some(pb::ConnectionPoolSettings {
                http: Some(HttpSettings {
                    max_retries: 2,
                    ..Default::default()
                }),
                tcp: None,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let p = compile(vec![entry("bookinfo", &[], Some(tp))]);
    let base = p.effective("bookinfo", "", 9080);
    assert_eq!(base.lb, LbPolicy::RoundRobin);
    assert_eq!(base.limits.max_connections, 7);
    assert_eq!(base.limits.max_requests, 9);
    let port = p.effective("bookinfo", "", 9443);
    assert_eq!(port.lb, LbPolicy::Random);
    assert_eq!(port.limits.max_retries, 2);
    // The whole connection pool was replaced: the policy's limits are gone.
    assert_eq!(port.limits.max_connections, u32::MAX);
    assert_eq!(port.limits.max_requests, u32::MAX);
    // Parts the port does not set are Istio's defaults, not the policy's.
    assert!(port.outlier.is_none());
}

#[test]
fn the_tcp_proxy_takes_the_top_level_and_the_subsets_hash() {
    let tcp = |idle, max| {
        Some(pb::ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                idle_timeout: pd(idle),
                max_connection_duration: pd(max),
                ..Default::default()
            }),
            http: None,
        })
    };
    let mut top = lb_policy(hashing(PbKey::UseSourceIp(true), None, 0));
    top.connection_pool = tcp(30, 600);
    top.port_level_settings = vec![pb::PortTrafficPolicy {
        port: 9443,
        load_balancer: hashing(PbKey::HttpHeaderName("x-user".into()), None, 0),
        connection_pool: tcp(5, 60),
        ..Default::default()
    }];
    let mut e = entry("bookinfo", &[], Some(top));
    e.subsets = vec![pb::Subset {
        name: "rr".into(),
        traffic_policy: Some(pb::TrafficPolicy {
            load_balancer: simple(SimpleLb::RoundRobin),
            connection_pool: tcp(1, 2),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let p = compile(vec![e]);
    let want = TcpProxySettings {
        idle: Some(secs(30)),
        max_duration: Some(secs(600)),
        hash_source_ip: true,
    };
    assert_eq!(p.tcp_proxy("bookinfo", ""), want);
    // The port's settings shape its cluster, not the TCP proxy.
    assert_eq!(
        p.effective("bookinfo", "", 9443).limits.tcp_idle_timeout,
        Some(secs(5))
    );
    // A subset's balancer decides the hash; its timeouts do not count.
    assert_eq!(
        p.tcp_proxy("bookinfo", "rr"),
        TcpProxySettings {
            hash_source_ip: false,
            ..want.clone()
        }
    );
    // A subset the rule does not define: the top level's.
    assert_eq!(p.tcp_proxy("bookinfo", "v9"), want);
    // No entry visible to the client: nothing.
    let own = compile(vec![entry("bookinfo", &["bookinfo"], None)]);
    assert_eq!(own.tcp_proxy("other", ""), TcpProxySettings::default());
}

#[test]
fn results_are_cached() {
    let p = compile(vec![entry(
        "bookinfo",
        &[],
        Some(lb_policy(simple(SimpleLb::Random))),
    )]);
    let a = p.effective("bookinfo", "", 9080);
    let b = p.effective("bookinfo", "", 9080);
    let c = p.effective("other", "", 8080);
    assert!(Arc::ptr_eq(&a, &b));
    assert!(
        Arc::ptr_eq(&a, &c),
        "same entry and no port settings: same policy"
    );
}

#[test]
fn produces_names_every_policy_some_client_gets() {
    let p = compile(vec![
        entry(
            "bookinfo",
            &[],
            Some(lb_policy(simple(SimpleLb::RoundRobin))),
        ),
        entry(
            "team-a",
            &["team-a"],
            Some(lb_policy(simple(SimpleLb::Random))),
        ),
    ]);
    let of = |lb| EffectivePolicy {
        lb,
        ..EffectivePolicy::defaults()
    };
    assert!(p.produces("", 9080, &of(LbPolicy::RoundRobin)));
    assert!(p.produces("", 9080, &of(LbPolicy::Random)), "team-a's");
    assert!(
        p.produces("", 9080, &EffectivePolicy::defaults()),
        "a namespace no entry is visible to"
    );
    assert!(!p.produces("", 9080, &of(LbPolicy::Passthrough)));
}
