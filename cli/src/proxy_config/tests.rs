//! The tables of the sections, from a dump in the agent's shapes
//! (`RouteTable::dump`, `L7::dump_clusters`, the admin API's listeners,
//! `SecretManager::dump`).

use serde_json::{Value, json};

use super::*;

fn policy(lb: Value, outlier: Value, max_connections: Value) -> Value {
    json!({
        "load_balancer": lb,
        "connection_pool": {
            "max_connections": max_connections,
            "connect_timeout": "10s",
            "http1_max_pending_requests": "unlimited",
            "http2_max_requests": "unlimited",
            "max_requests_per_connection": 0,
            "max_retries": "unlimited",
            "idle_timeout": "3600s",
            "max_connection_duration": null,
            "h2_upgrade_policy": "Default",
            "use_client_protocol": false,
        },
        "outlier_detection": outlier,
        "tls": {"mode": "ISTIO_MUTUAL (mesh default)", "sni": null, "subject_alt_names": null},
    })
}

fn dump() -> Value {
    let dest = |subset: &str, weight: u32| {
        json!({
            "host": "reviews.shop.svc.cluster.local", "subset": subset, "port": 0,
            "service": "shop/reviews.shop.svc.cluster.local", "weight": weight,
            "endpoints": {"workload_uids": [format!("Kubernetes//Pod/shop/reviews-{subset}")], "addresses": []},
        })
    };
    let retries = |attempts: u32| json!({"attempts": attempts, "per_try_timeout": null, "retry_on": "connect-failure", "retriable_status_codes": []});
    let outlier = json!({
        "consecutive_5xx_errors": 3, "consecutive_gateway_errors": null,
        "consecutive_local_origin_failures": null, "split_external_local_origin_errors": false,
        "interval": "10s", "base_ejection_time": "30s", "max_ejection_time": "300s",
        "max_ejection_percent": 100, "min_health_percent": 0,
    });
    let endpoint = |addr: Option<&str>, health: &str, ejected: bool| {
        json!({"address": addr, "workload": "Kubernetes//Pod/shop/x", "health": health,
               "outlier_ejected": ejected, "active_requests": 0})
    };
    json!({
        "l7": {
            "routes": [{
                "resource": "shop/reviews.shop.svc.cluster.local",
                "version": "1",
                "name": "shop/reviews.shop.svc.cluster.local",
                "hostname": "reviews.shop.svc.cluster.local",
                "http": [{
                    "name": "jason",
                    "virtual_service": "shop/reviews",
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "export_to": null,
                    "timeout": "2s",
                    "retries": retries(3),
                    "route": [dest("v2", 0)],
                }, {
                    "name": "",
                    "virtual_service": "shop/reviews",
                    "match": [],
                    "export_to": null,
                    "timeout": null,
                    "retries": retries(0),
                    "route": [dest("v1", 90), dest("v2", 10)],
                }],
                "tcp": [],
                "tls": [],
            }, {
                "resource": "~/default",
                "version": "1",
                "name": "~/default",
                "hostname": "",
                "http": [{
                    "name": "default",
                    "virtual_service": "",
                    "match": [],
                    "export_to": null,
                    "timeout": null,
                    "retries": retries(0),
                    "route": [],
                }],
                "tcp": [],
                "tls": [],
            }, {
                "resource": "~/inbound",
                "version": "1",
                "name": "~/inbound",
                "hostname": "",
                "http": [{
                    "name": "inbound",
                    "virtual_service": "",
                    "match": [],
                    "export_to": null,
                    "timeout": null,
                    "retries": retries(4),
                    "route": [],
                }],
                "tcp": [],
                "tls": [],
            }],
            "destination_policies": [],
        },
        "clusters": [{
            "name": "outbound|9080||reviews.shop.svc.cluster.local",
            "service": "shop/reviews.shop.svc.cluster.local",
            "hostname": "reviews.shop.svc.cluster.local",
            "port": 9080, "subset": "", "direction": "outbound",
            "destination_rules": [],
            "policy": policy(json!("LEAST_REQUEST"), Value::Null, json!("unlimited")),
            "live": null,
            "endpoints": [endpoint(Some("10.244.1.2:9080"), "HEALTHY", false)],
        }, {
            "name": "outbound|9080|v1|reviews.shop.svc.cluster.local",
            "service": "shop/reviews.shop.svc.cluster.local",
            "hostname": "reviews.shop.svc.cluster.local",
            "port": 9080, "subset": "v1", "direction": "outbound",
            "destination_rules": ["shop/reviews"],
            "policy": policy(json!("ROUND_ROBIN"), outlier, json!(10)),
            "live": {"ejected": ["10.244.2.2:9080"], "requests": 0, "pending": 0, "retries": 0, "connections": 1},
            "endpoints": [
                endpoint(Some("10.244.2.2:9080"), "HEALTHY", true),
                endpoint(None, "UNHEALTHY", false),
            ],
        }],
        "listeners": [
            {"name": "admin", "address": "127.0.0.1:15000"},
            {"name": "CNI", "address": "/run/weft/cni.sock"},
            {"pod": "shop/reviews-v1", "name": "outbound", "address": "127.0.0.1:15001", "netns": "/x"},
            {"pod": "shop/reviews-v1", "name": "HBONE", "address": "10.244.2.2:15008", "netns": "/x"},
        ],
        "certificates": [{
            "identity": "spiffe://cluster.local/ns/shop/sa/reviews",
            "pods": 1,
            "issued_at": 1_764_700_000u64,
            "not_after": 1_764_786_400u64,
            "serial": "0a:1b",
            "not_before": 1_764_699_940,
            "issuer": "O=cluster.local",
            "root": "O=cluster.local, CN=weft root",
        }],
    })
}

#[test]
fn routes_one_row_per_route_with_match_weights_timeout_retries() {
    let out = render(&dump(), Section::Routes, 0).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "NAME                                  VHOST                            ROUTE     MATCH                        DESTINATIONS                               TIMEOUT   RETRIES   VIRTUAL SERVICE",
            "shop/reviews.shop.svc.cluster.local   reviews.shop.svc.cluster.local   jason     /* headers[end-user]=jason   reviews.shop|v2                            2s        3         reviews.shop",
            "shop/reviews.shop.svc.cluster.local   reviews.shop.svc.cluster.local   #1        /*                           reviews.shop|v1 90%, reviews.shop|v2 10%   -         none      reviews.shop",
            "~/default                             *                                default   /*                           (services without a VirtualService)        -         none      MeshConfig",
            "~/inbound                             *                                inbound   /*                           (each app, from its destination's side)    -         4         MeshConfig",
        ],
        "{out}"
    );
}

#[test]
fn clusters_show_the_destination_rule_policy() {
    let out = render(&dump(), Section::Clusters, 0).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "SERVICE FQDN                     PORT   SUBSET   DIRECTION   TYPE   DESTINATION RULE   LB              TLS                           OUTLIER DETECTION          CONNECTION POOL"
    );
    assert_eq!(
        lines[1],
        "reviews.shop.svc.cluster.local   9080   -        outbound    EDS    -                  LEAST_REQUEST   ISTIO_MUTUAL (mesh default)   -                          default"
    );
    assert_eq!(
        lines[2],
        "reviews.shop.svc.cluster.local   9080   v1       outbound    EDS    reviews.shop       ROUND_ROBIN     ISTIO_MUTUAL (mesh default)   5xx=3 eject=30s max=100%   conn=10"
    );
}

#[test]
fn endpoints_with_health_and_outlier_check() {
    let out = render(&dump(), Section::Endpoints, 0).unwrap();
    assert_eq!(
        out,
        "ENDPOINT          STATUS      OUTLIER CHECK   CLUSTER\n\
         10.244.1.2:9080   HEALTHY     OK              outbound|9080||reviews.shop.svc.cluster.local\n\
         10.244.2.2:9080   HEALTHY     FAILED          outbound|9080|v1|reviews.shop.svc.cluster.local\n\
         -                 UNHEALTHY   OK              outbound|9080|v1|reviews.shop.svc.cluster.local\n"
    );
    let json = section_json(&dump(), Section::Endpoints).unwrap();
    assert_eq!(
        json[1]["cluster"],
        "outbound|9080|v1|reviews.shop.svc.cluster.local"
    );
    assert_eq!(json[1]["outlier_ejected"], true);
}

#[test]
fn listeners_of_the_agent_and_its_pods() {
    let out = render(&dump(), Section::Listeners, 0).unwrap();
    assert_eq!(
        out,
        "POD               LISTENER   ADDRESS              PORT\n\
         (agent)           admin      127.0.0.1:15000      15000\n\
         (agent)           CNI        /run/weft/cni.sock   -\n\
         shop/reviews-v1   outbound   127.0.0.1:15001      15001\n\
         shop/reviews-v1   HBONE      10.244.2.2:15008     15008\n"
    );
}

#[test]
fn secret_shows_serial_validity_and_root() {
    let out = render(&dump(), Section::Secret, 1_764_700_100).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "RESOURCE NAME                               TYPE         STATUS   SERIAL NUMBER   NOT BEFORE             NOT AFTER              ROOT",
            "spiffe://cluster.local/ns/shop/sa/reviews   Cert Chain   VALID    0a:1b           2025-12-02T18:25:40Z   2025-12-03T18:26:40Z   O=cluster.local, CN=weft root",
        ]
    );
    let expired = render(&dump(), Section::Secret, 1_764_786_400).unwrap();
    assert!(expired.contains("   EXPIRED   "), "{expired}");
}

#[test]
fn all_says_when_an_older_agent_lacks_a_section() {
    let dump = json!({
        "workloadState": {"workloads": [], "services": [], "policies": []},
        "pods": null,
        "certificates": null,
    });
    let out = render(&dump, Section::All, 0).unwrap();
    assert!(
        out.contains("ROUTES:\nnot in this agent's dump (an older weft-agent?)\n"),
        "{out}"
    );
    assert!(out.contains("WORKLOADS:\nno workloads\n"), "{out}");
}

#[test]
fn utc_dates() {
    assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc(1_764_705_845), "2025-12-02T20:04:05Z");
}
