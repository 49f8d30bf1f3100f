//! Each feature's compiled form, resolution of hosts, ports and subsets,
//! and precedence.

use super::*;

#[test]
fn canary_split_with_subsets_resolved_to_endpoints() {
    let m = model(&(bookinfo() + REVIEWS_DR + CANARY_VS));
    let r = route(&m, REVIEWS);
    assert_eq!(r.hostname, "reviews.bookinfo.svc.cluster.local");
    assert_eq!(r.namespace, "bookinfo");
    assert_eq!(
        r.virtual_services,
        [pb::ConfigRef {
            namespace: "bookinfo".into(),
            name: "reviews".into()
        }]
    );
    assert_eq!(r.http.len(), 2);

    let jason = &r.http[0];
    assert_eq!(
        jason.r#match[0].headers["end-user"],
        exact("jason").unwrap()
    );
    let d = jason.route[0].destination.as_ref().unwrap();
    assert_eq!(jason.route[0].weight, 100);
    assert_eq!(d.host, "reviews.bookinfo.svc.cluster.local");
    assert_eq!(d.subset, "v2");
    assert_eq!(d.port, 9080, "the service's only port");
    assert_eq!(d.service, REVIEWS);
    assert_eq!(
        d.endpoints.as_ref().unwrap().workload_uids,
        [uid("bookinfo", "reviews-v2")]
    );

    let split = &r.http[1];
    assert!(split.r#match.is_empty());
    let targets: Vec<(i32, String, Vec<String>)> = split
        .route
        .iter()
        .map(|d| {
            let dest = d.destination.as_ref().unwrap();
            (
                d.weight,
                dest.subset.clone(),
                dest.endpoints.as_ref().unwrap().workload_uids.clone(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            (90, "v1".into(), vec![uid("bookinfo", "reviews-v1")]),
            (10, "v3".into(), vec![uid("bookinfo", "reviews-v3")]),
        ]
    );

    // The DestinationRule: a policy per host, subsets with effective policies.
    let p = policy(&m, REVIEWS);
    assert_eq!(p.policies.len(), 1);
    let scoped = &p.policies[0];
    assert_eq!(scoped.namespace, "bookinfo");
    assert_eq!(scoped.host, "reviews.bookinfo.svc.cluster.local");
    let lb = |tp: &Option<pb::TrafficPolicy>| {
        tp.as_ref()
            .and_then(|t| t.load_balancer.as_ref())
            .and_then(|l| l.lb_policy.clone())
    };
    assert_eq!(
        lb(&scoped.traffic_policy),
        Some(LbPolicy::Simple(SimpleLb::RoundRobin as i32))
    );
    let subsets: Vec<(&str, Option<LbPolicy>)> = scoped
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), lb(&s.traffic_policy)))
        .collect();
    assert_eq!(
        subsets,
        [
            ("v1", Some(LbPolicy::Simple(SimpleLb::RoundRobin as i32))),
            ("v2", Some(LbPolicy::Simple(SimpleLb::Random as i32))),
            ("v3", Some(LbPolicy::Simple(SimpleLb::RoundRobin as i32))),
        ]
    );
    assert_eq!(scoped.subsets[0].labels["version"], "v1");

    // Hosts without a VirtualService or DestinationRule have none.
    assert_eq!(m.routes.len(), 1);
    assert_eq!(m.destinations.len(), 1);
}

#[test]
fn http_route_features() {
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  exportTo: [".", front]
  http:
  - name: everything
    match:
    - name: m
      uri: {prefix: /api}
      method: {exact: GET}
      scheme: {exact: http}
      authority: {regex: "ratings(:9080)?"}
      headers: {x-a: {prefix: b}, x-present: {}}
      queryParams: {debug: {exact: "1"}}
      withoutHeaders: {x-skip: {}}
      ignoreUriCase: true
      port: 9080
      sourceLabels: {app: client}
      sourceNamespace: front
    - uri: {regex: "/v[0-9]+/.*"}
      gateways: [some-gateway]
    route:
    - destination: {host: ratings, port: {number: 9090}}
      headers:
        request: {set: {x-dest: grpc}}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure", retryRemoteLocalities: true}
    fault:
      delay: {fixedDelay: 2s, percent: 5}
      abort: {httpStatus: 503, percentage: {value: 0.5}}
    mirror: {host: reviews, subset: v1}
    mirrorPercentage: {value: 25}
    rewrite: {uri: /v2, authority: ratings-v2}
    headers:
      request: {set: {x-req: "1", x-client: "ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", x-pct: "100%%"}, add: {x-add: "2"}, remove: [x-drop]}
      response: {remove: [server], add: {x-upstream: "%UPSTREAM_HOST%"}}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}]
      allowMethods: [GET]
      maxAge: 24h
      allowCredentials: false
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: example.com, redirectCode: 308}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {bytes: aGVsbG8=}}
  - match: [{uri: {exact: /gw}, gateways: [some-gateway]}]
    directResponse: {status: 404}
  - route: [{destination: {host: ratings}}]
    fault:
      delay: {fixedDelay: 1s}
      abort: {httpStatus: 500}
    mirrors:
    - destination: {host: reviews}
    rewrite:
      uriRegexRewrite: {match: "^/a/(.*)", rewrite: "/b/\\1"}
"#;
    let m = model(&(bookinfo() + REVIEWS_DR + vs));
    let r = route(&m, "bookinfo/ratings.bookinfo.svc.cluster.local");
    assert_eq!(r.http.len(), 4, "the gateway-only rule is left out");
    let first = &r.http[0];
    assert_eq!(first.name, "everything");
    assert_eq!(
        first.export_to,
        Some(pb::Visibility {
            namespaces: vec!["bookinfo".into(), "front".into()]
        })
    );
    assert_eq!(
        first.r#match.len(),
        1,
        "the gateway-bound match is left out"
    );
    let mm = &first.r#match[0];
    assert_eq!(mm.name, "m");
    assert_eq!(
        mm.uri,
        Some(pb::StringMatch {
            match_type: Some(MatchType::Prefix("/api".into()))
        })
    );
    assert_eq!(mm.method, exact("GET"));
    assert_eq!(mm.scheme, exact("http"));
    assert_eq!(
        mm.authority,
        Some(pb::StringMatch {
            match_type: Some(MatchType::Regex("ratings(:9080)?".into()))
        })
    );
    assert_eq!(
        mm.headers["x-present"],
        pb::StringMatch::default(),
        "presence"
    );
    assert_eq!(mm.query_params["debug"], exact("1").unwrap());
    assert!(mm.without_headers.contains_key("x-skip"));
    assert!(mm.ignore_uri_case);
    assert_eq!(mm.port, 9080);
    assert_eq!(mm.source_namespace, "front");
    assert_eq!(mm.source_labels["app"], "client");
    assert_eq!(mm.source_workloads, [uid("front", "client")]);

    let d = first.route[0].destination.as_ref().unwrap();
    assert_eq!((d.port, d.endpoints.is_none()), (9090, true));
    assert_eq!(
        first.route[0]
            .headers
            .as_ref()
            .unwrap()
            .request
            .as_ref()
            .unwrap()
            .set["x-dest"],
        "grpc"
    );
    assert_eq!(first.timeout, secs(1, 500));
    let retries = first.retries.as_ref().unwrap();
    assert_eq!(
        (
            retries.attempts,
            retries.per_try_timeout,
            retries.retry_on.as_str()
        ),
        (3, secs(0, 500), "5xx,connect-failure")
    );
    assert_eq!(retries.retry_remote_localities, Some(true));
    let fault = first.fault.as_ref().unwrap();
    let delay = fault.delay.as_ref().unwrap();
    assert_eq!((delay.fixed_delay, delay.percentage), (secs(2, 0), 5.0));
    let abort = fault.abort.as_ref().unwrap();
    assert_eq!(abort.error_type, Some(ErrorType::HttpStatus(503)));
    assert_eq!(abort.percentage, 0.5);
    assert_eq!(first.mirrors.len(), 1);
    assert_eq!(first.mirrors[0].percentage, 25.0);
    let mirror = first.mirrors[0].destination.as_ref().unwrap();
    assert_eq!(mirror.service, REVIEWS);
    assert_eq!(
        mirror.endpoints.as_ref().unwrap().workload_uids,
        [uid("bookinfo", "reviews-v1")]
    );
    let rw = first.rewrite.as_ref().unwrap();
    assert_eq!(
        (rw.uri.as_str(), rw.authority.as_str()),
        ("/v2", "ratings-v2")
    );
    let h = first.headers.as_ref().unwrap();
    let req = h.request.as_ref().unwrap();
    assert_eq!(
        (&req.set["x-req"], &req.add["x-add"], &req.remove),
        (
            &"1".to_string(),
            &"2".to_string(),
            &vec!["x-drop".to_string()]
        )
    );
    // Values with command operators go parsed; `%%` alone is a literal.
    assert_eq!(req.set["x-pct"], "100%");
    let client = &req.set_formatted["x-client"].tokens;
    assert_eq!(
        client
            .iter()
            .map(|t| (t.literal.as_str(), t.operator.as_str()))
            .collect::<Vec<_>>(),
        [("ip=", ""), ("", "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT")]
    );
    assert!(!req.set.contains_key("x-client"));
    let resp = h.response.as_ref().unwrap();
    assert_eq!(resp.remove, ["server"]);
    assert_eq!(
        resp.add_formatted["x-upstream"].tokens[0].operator,
        "UPSTREAM_HOST"
    );
    let cors = first.cors_policy.as_ref().unwrap();
    assert_eq!(cors.allow_origins, [exact("https://a.example").unwrap()]);
    assert_eq!(cors.allow_methods, ["GET"]);
    assert_eq!(cors.max_age, secs(86_400, 0));
    assert_eq!(cors.allow_credentials, Some(false));

    let redirect = r.http[1].redirect.as_ref().unwrap();
    assert_eq!(
        (
            redirect.uri.as_str(),
            redirect.authority.as_str(),
            redirect.redirect_code
        ),
        ("/new", "example.com", 308)
    );
    assert!(r.http[1].route.is_empty());
    let direct = r.http[2].direct_response.as_ref().unwrap();
    assert_eq!(direct.status, 418);
    assert_eq!(
        direct.body.as_ref().unwrap().specifier,
        Some(Specifier::Bytes(b"hello".to_vec()))
    );

    let last = &r.http[3];
    let d = last.route[0].destination.as_ref().unwrap();
    assert_eq!(d.port, 0, "two ports, none named: the request's port");
    assert_eq!(last.route[0].weight, 100);
    assert_eq!(last.mirrors[0].percentage, 100.0);
    // A fault without a percentage touches no request, as istiod leaves
    // Envoy's at 0 (a mirror's, at 100).
    let fault = last.fault.as_ref().unwrap();
    assert_eq!(fault.delay.as_ref().unwrap().percentage, 0.0);
    assert_eq!(fault.abort.as_ref().unwrap().percentage, 0.0);
    assert!(
        last.mirrors[0]
            .destination
            .as_ref()
            .unwrap()
            .endpoints
            .is_none()
    );
    let re = last
        .rewrite
        .as_ref()
        .unwrap()
        .uri_regex_rewrite
        .as_ref()
        .unwrap();
    assert_eq!(
        (re.r#match.as_str(), re.rewrite.as_str()),
        ("^/a/(.*)", "/b/\\1")
    );
}

#[test]
fn tcp_and_tls_routes_and_unknown_hosts() {
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-l4, namespace: bookinfo}
spec:
  hosts: [ratings]
  tcp:
  - match: [{port: 9090, sourceLabels: {app: other}, sourceSubnet: 10.0.0.0/8}]
    route:
    - {destination: {host: ratings, port: {number: 9090}}, weight: 80}
    - {destination: {host: nowhere.example.com}, weight: 20}
  tls:
  - match: [{sniHosts: [ratings.example.com], port: 443}]
    route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gateway-only, namespace: bookinfo}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway]
  http: [{route: [{destination: {host: reviews}}]}]
"#;
    let m = model(&(bookinfo() + REVIEWS_DR + vs));
    assert!(
        m.routes.get(REVIEWS).is_none(),
        "a VirtualService bound to a gateway only does not apply to the mesh"
    );
    let r = route(&m, "bookinfo/ratings.bookinfo.svc.cluster.local");
    assert!(r.http.is_empty());
    let tcp = &r.tcp[0];
    let mm = &tcp.r#match[0];
    assert_eq!((mm.port, mm.source_subnet.as_str()), (9090, "10.0.0.0/8"));
    assert_eq!(mm.source_workloads, [uid("front", "other")]);
    assert_eq!(tcp.route[0].weight, 80);
    let unknown = tcp.route[1].destination.as_ref().unwrap();
    assert_eq!(
        (
            unknown.host.as_str(),
            unknown.service.as_str(),
            tcp.route[1].weight
        ),
        ("nowhere.example.com", "", 20)
    );
    let tls = &r.tls[0];
    assert_eq!(tls.r#match[0].sni_hosts, ["ratings.example.com"]);
    assert_eq!(
        tls.route[0]
            .destination
            .as_ref()
            .unwrap()
            .endpoints
            .as_ref()
            .unwrap()
            .workload_uids,
        [uid("bookinfo", "reviews-v2")]
    );
}

#[test]
fn service_entry_hosts_and_endpoints() {
    let yaml = r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: ext}
spec:
  hosts: [payments.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS, targetPort: 8443}]
  resolution: STATIC
  endpoints:
  - {address: 192.0.2.1, labels: {tier: gold}, ports: {https: 9443}, weight: 3}
  - {address: 192.0.2.2, labels: {tier: silver}, locality: eu/west}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments, namespace: ext}
spec:
  host: payments.example.com
  subsets: [{name: gold, labels: {tier: gold}}]
  trafficPolicy:
    tls: {mode: SIMPLE, sni: payments.example.com, subjectAltNames: [payments.example.com]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments, namespace: ext}
spec:
  hosts: [payments.example.com]
  http:
  - match: [{headers: {x-tier: {exact: gold}}}]
    route: [{destination: {host: payments.example.com, subset: gold}}]
  - route: [{destination: {host: payments.example.com}}]
"#;
    let m = model(yaml);
    let r = route(&m, "ext/payments.example.com");
    let gold = r.http[0].route[0].destination.as_ref().unwrap();
    assert_eq!(gold.port, 443);
    let eps = &gold.endpoints.as_ref().unwrap().addresses;
    assert_eq!(eps.len(), 1);
    assert_eq!(
        (eps[0].address.as_str(), eps[0].port, eps[0].weight),
        ("192.0.2.1", 9443, 3)
    );
    let all = &r.http[1].route[0].destination.as_ref().unwrap().endpoints;
    let all = &all.as_ref().unwrap().addresses;
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[1].port, all[1].locality.as_str()),
        (8443, "eu/west"),
        "the entry's targetPort"
    );
    let p = policy(&m, "ext/payments.example.com");
    let tls = p.policies[0]
        .traffic_policy
        .as_ref()
        .unwrap()
        .tls
        .as_ref()
        .unwrap();
    assert_eq!(tls.mode, TlsMode::Simple as i32);
    assert_eq!(tls.sni, "payments.example.com");
    assert_eq!(tls.subject_alt_names, ["payments.example.com"]);
}

#[test]
fn virtual_services_merge_in_creation_order_and_exact_hosts_win() {
    let vs = |name: &str, created: &str, host: &str, uri: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: bookinfo, creationTimestamp: '{created}'}}\nspec:\n  hosts: ['{host}']\n  http: [{{match: [{{uri: {{exact: {uri}}}}}], route: [{{destination: {{host: reviews}}}}]}}]\n"
        )
    };
    let yaml = bookinfo()
        + &vs("late", "2024-06-01T00:00:00Z", "reviews", "/late")
        + &vs("early", "2024-01-01T00:00:00Z", "reviews", "/early")
        + &vs(
            "wild",
            "2023-01-01T00:00:00Z",
            "*.bookinfo.svc.cluster.local",
            "/wild",
        )
        + &vs("wider", "2023-01-01T00:00:00Z", "*.cluster.local", "/wider");
    let m = model(&yaml);
    let uris = |r: &RouteConfig| -> Vec<String> {
        r.http
            .iter()
            .map(|h| match &h.r#match[0].uri.as_ref().unwrap().match_type {
                Some(MatchType::Exact(u)) => u.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(uris(&route(&m, REVIEWS)), ["/early", "/late"]);
    // ratings has no exact VirtualService: the most specific wildcard.
    let ratings = route(&m, "bookinfo/ratings.bookinfo.svc.cluster.local");
    assert_eq!(uris(&ratings), ["/wild"]);
    assert_eq!(ratings.virtual_services[0].name, "wild");
}

#[test]
fn destination_rule_lookup_path_merging_and_settings() {
    let yaml = bookinfo()
        + r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b-second, namespace: bookinfo, creationTimestamp: '2024-02-01T00:00:00Z'}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: other}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-first, namespace: bookinfo, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  host: ratings.bookinfo.svc.cluster.local
  exportTo: ["."]
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 10s}, ringHash: {minimumRingSize: 1024}}
      localityLbSetting:
        enabled: true
        distribute: [{from: eu/*, to: {"eu/*": 80, "us/*": 20}}]
        failover: [{from: eu, to: us}]
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1, h2UpgradePolicy: UPGRADE}
    outlierDetection: {consecutiveErrors: 7, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50}
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: LEAST_REQUEST}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: everything, namespace: istio-system}
spec:
  host: "*.cluster.local"
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: client-side, namespace: front}
spec:
  host: ratings.bookinfo.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: sidecar-only, namespace: front}
spec:
  host: reviews.bookinfo.svc.cluster.local
  workloadSelector: {matchLabels: {app: client}}
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}
"#;
    let m = model(&yaml);
    let p = policy(&m, "bookinfo/ratings.bookinfo.svc.cluster.local");
    let order: Vec<&str> = p.policies.iter().map(|s| s.namespace.as_str()).collect();
    assert_eq!(order, ["bookinfo", "istio-system", "front"]);
    let own = &p.policies[0];
    let names: Vec<&str> = own
        .destination_rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["a-first", "b-second"], "merged, oldest first");
    assert_eq!(own.export_to, ["bookinfo"]);
    let subsets: Vec<(&str, &str)> = own
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), s.labels["version"].as_str()))
        .collect();
    assert_eq!(
        subsets,
        [("v1", "v1"), ("v2", "v2")],
        "first definition wins"
    );
    let tp = own.traffic_policy.as_ref().unwrap();
    let lb = tp.load_balancer.as_ref().unwrap();
    let Some(LbPolicy::ConsistentHash(ch)) = &lb.lb_policy else {
        panic!("{lb:?}")
    };
    let Some(HashKey::HttpCookie(cookie)) = &ch.hash_key else {
        panic!("{ch:?}")
    };
    assert_eq!((cookie.name.as_str(), cookie.ttl), ("user", secs(10, 0)));
    let locality = lb.locality_lb_setting.as_ref().unwrap();
    assert_eq!(locality.enabled, Some(true));
    assert_eq!(locality.distribute[0].to["us/*"], 20);
    assert_eq!(locality.failover[0].to, "us");
    let pool = tp.connection_pool.as_ref().unwrap();
    let tcp = pool.tcp.as_ref().unwrap();
    assert_eq!(
        (tcp.max_connections, tcp.connect_timeout),
        (100, secs(0, 30))
    );
    let http = pool.http.as_ref().unwrap();
    assert_eq!(
        (
            http.http1_max_pending_requests,
            http.max_requests_per_connection,
            http.h2_upgrade_policy
        ),
        (10, 1, 2)
    );
    let od = tp.outlier_detection.as_ref().unwrap();
    assert_eq!(
        od.consecutive_5xx_errors,
        Some(7),
        "consecutiveErrors folded in"
    );
    assert_eq!(
        (od.interval, od.base_ejection_time),
        (secs(5, 0), secs(60, 0))
    );
    assert_eq!(od.max_ejection_percent, Some(50));
    assert_eq!(tp.tls.as_ref().unwrap().mode, TlsMode::IstioMutual as i32);
    assert_eq!(tp.port_level_settings[0].port, 9090);
    assert_eq!(p.policies[1].host, "*.cluster.local");
    assert_eq!(p.policies[2].destination_rules[0].name, "client-side");
    // istiod never looks in `front` for a client of another namespace:
    // its rule serves `front`'s clients alone, though exported to all.
    assert_eq!(p.policies[2].export_to, ["front"]);
    assert!(
        p.policies[1].export_to.is_empty(),
        "the root namespace's: all"
    );

    // reviews: only the root namespace's wildcard (the workloadSelector
    // rule is not compiled).
    let reviews = policy(&m, REVIEWS);
    assert_eq!(reviews.policies.len(), 1);
    assert_eq!(reviews.policies[0].namespace, "istio-system");
}

#[test]
fn subset_policies_merge_with_the_rules_port_by_port() {
    let dr = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {http: {http2MaxRequests: 50}}
    portLevelSettings:
    - port: {number: 9080}
      connectionPool: {http: {http2MaxRequests: 100}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {simple: RANDOM}
      - port: {number: 9443}
        outlierDetection: {consecutive5xxErrors: 3}
"#;
    let m = model(&(bookinfo() + dr));
    let p = policy(&m, REVIEWS);
    let subset = |name: &str| {
        p.policies[0]
            .subsets
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.traffic_policy.clone())
            .unwrap_or_else(|| panic!("subset {name}'s policy"))
    };
    let max_requests = |pool: &Option<pb::ConnectionPoolSettings>| {
        pool.as_ref()
            .and_then(|p| p.http.as_ref())
            .map(|h| h.http2_max_requests)
    };
    let simple =
        |lb: &Option<pb::LoadBalancerSettings>| lb.as_ref().and_then(|l| l.lb_policy.clone());
    // v1 sets only a pool: on its own ports, the rule's load balancer and
    // its pool; on 9080, the rule's port settings (whole: no load
    // balancer) with v1's pool over them.
    let v1 = subset("v1");
    assert_eq!(max_requests(&v1.connection_pool), Some(1));
    assert_eq!(
        simple(&v1.load_balancer),
        Some(LbPolicy::Simple(SimpleLb::RoundRobin as i32))
    );
    let ports: Vec<u32> = v1.port_level_settings.iter().map(|s| s.port).collect();
    assert_eq!(ports, [9080]);
    let on_9080 = &v1.port_level_settings[0];
    assert_eq!(
        max_requests(&on_9080.connection_pool),
        Some(1),
        "the subset's part wins"
    );
    assert_eq!(
        simple(&on_9080.load_balancer),
        None,
        "the rule's port settings are whole"
    );
    // v2's own port settings, whole, on both of its ports.
    let v2 = subset("v2");
    let ports: Vec<u32> = v2.port_level_settings.iter().map(|s| s.port).collect();
    assert_eq!(ports, [9080, 9443]);
    assert_eq!(
        simple(&v2.port_level_settings[0].load_balancer),
        Some(LbPolicy::Simple(SimpleLb::Random as i32))
    );
    assert_eq!(
        max_requests(&v2.port_level_settings[0].connection_pool),
        None
    );
    assert!(v2.port_level_settings[1].outlier_detection.is_some());
    assert_eq!(
        max_requests(&v2.connection_pool),
        Some(50),
        "elsewhere, the rule's"
    );
}

#[test]
fn the_first_traffic_policy_of_merged_rules_is_the_hosts_and_its_subsets_base() {
    // The older rule has only subsets; the newer one the traffic policy.
    let yaml = bookinfo()
        + r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: subsets, namespace: bookinfo, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: policy, namespace: bookinfo, creationTimestamp: '2024-02-01T00:00:00Z'}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
"#;
    let m = model(&yaml);
    let p = policy(&m, REVIEWS);
    let own = &p.policies[0];
    let names: Vec<&str> = own
        .destination_rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["subsets", "policy"]);
    let od = |tp: Option<&pb::TrafficPolicy>| {
        tp.and_then(|t| t.outlier_detection.as_ref())
            .and_then(|o| o.consecutive_5xx_errors)
    };
    assert_eq!(od(own.traffic_policy.as_ref()), Some(3), "the newer rule's");
    for s in &own.subsets {
        assert_eq!(od(s.traffic_policy.as_ref()), Some(3), "subset {}", s.name);
    }
    let v2 = own.subsets[1].traffic_policy.as_ref().unwrap();
    let lb = v2.load_balancer.as_ref().unwrap();
    assert_eq!(
        lb.lb_policy,
        Some(LbPolicy::Simple(SimpleLb::Random as i32))
    );
}
