//! Compiling routes: errors, actions, settings, header edits.

use super::*;

#[test]
fn route_error_names_route_and_field() {
    let config = pb::RouteConfig {
        name: "bookinfo/reviews.bookinfo.svc.cluster.local".into(),
        http: vec![
            route("a", vec![]),
            route("b", vec![]),
            pb::HttpRoute {
                name: String::new(),
                virtual_service: Some(pb::ConfigRef {
                    namespace: "bookinfo".into(),
                    name: "reviews".into(),
                }),
                r#match: vec![uri(regex("/v[1-"))],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let err = RouteTable::compile(&config).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("route 2 of bookinfo/reviews: match[0].uri.regex: regex parse error"),
        "{text}"
    );
    assert!(matches!(err, RouteError::Regex { .. }));

    let mut config = config;
    config.http.truncate(2);
    config.http[1].headers = Some(pb::Headers {
        request: Some(pb::HeaderOperations {
            set: [("x-a".to_string(), "bad\r\nvalue".to_string())].into(),
            ..Default::default()
        }),
        response: None,
    });
    let err = RouteTable::compile(&config).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"route 1 (b) of default/vs: headers.request.set["x-a"]: invalid header value "bad\r\nvalue""#
    );
}

#[test]
fn route_without_virtual_service_is_named_by_the_config() {
    let err = RouteTable::compile(&pb::RouteConfig {
        namespace: "ns".into(),
        hostname: "h".into(),
        http: vec![pb::HttpRoute {
            r#match: vec![pb::HttpMatchRequest {
                port: 70_000,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route 0 of ns/h: match[0].port: 70000 is not a port"
    );
}

#[test]
fn oversized_regex_error() {
    let t = RouteTable::compile(&pb::RouteConfig {
        name: "ns/h".into(),
        http: vec![pb::HttpRoute {
            r#match: vec![pb::HttpMatchRequest {
                headers: [("x-a".to_string(), regex(r"\w{500}\w{500}\w{500}\w{500}"))].into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    let text = t.unwrap_err().to_string();
    assert!(
        text.starts_with(r#"route 0 of ns/h: match[0].headers["x-a"].regex: "#)
            && text.contains("exceeds size limit"),
        "{text}"
    );
}

#[test]
fn pathological_uri_regex_on_a_long_path() {
    let t = table(vec![route("r", vec![uri(regex("/(a+)+$"))])]);
    let mut path = String::from("/");
    path.push_str(&"a".repeat(100 * 1024));
    let ok: &'static str = Box::leak(path.clone().into_boxed_str());
    path.push('b');
    let bad: &'static str = Box::leak(path.into_boxed_str());
    assert_eq!(selected(&t, &Req::path(bad)), "-");
    assert_eq!(selected(&t, &Req::path(ok)), "r");
}

#[test]
fn actions_and_route_settings() {
    let mut r = route("all", vec![]);
    r.timeout = Some(prost_types::Duration {
        seconds: 3,
        nanos: 0,
    });
    r.mirrors = vec![
        pb::HttpMirrorPolicy {
            destination: dest("m1").destination,
            percentage: 0.0,
        },
        pb::HttpMirrorPolicy {
            destination: dest("m2").destination,
            percentage: 12.5,
        },
    ];
    let mut zero = route("zero", vec![]);
    zero.timeout = Some(prost_types::Duration::default());
    let mut redirect = route("redirect", vec![]);
    redirect.redirect = Some(pb::HttpRedirect::default());
    redirect.direct_response = Some(pb::HttpDirectResponse {
        status: 200,
        body: None,
    });
    let mut direct = route("direct", vec![]);
    direct.direct_response = Some(pb::HttpDirectResponse {
        status: 204,
        body: None,
    });
    let t = table(vec![r, zero, redirect, direct]);
    let [all, zero, redirect, direct] = t.routes() else {
        panic!("four routes");
    };
    assert_eq!(all.timeout, Some(std::time::Duration::from_secs(3)));
    assert_eq!(all.mirrors.len(), 1);
    assert_eq!(all.mirrors[0].destination.host, "m2");
    assert!(all.mirrors[0].sampled(0));
    assert!(!all.mirrors[0].sampled(u32::MAX));
    // Istio's default policy, for a route with one destination.
    assert_eq!(all.retry, RetryPolicy::compile(None, true, "r").unwrap());
    assert!(all.fault.is_none() && all.cors.is_none() && all.rewrite.is_none());
    assert_eq!(all.pick(7).unwrap().destination.host, "all");
    assert_eq!(zero.timeout, None);
    // A redirect wins over the rest, as in Istio.
    assert!(matches!(redirect.action, Action::Redirect(_)));
    assert!(redirect.pick(0).is_none());
    assert!(matches!(direct.action, Action::DirectResponse(_)));
}

#[test]
fn invalid_settings_are_refused() {
    let mut r = route("r", vec![]);
    r.timeout = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    let err = RouteTable::compile(&pb::RouteConfig {
        http: vec![r],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route 0 (r) of default/vs: timeout: invalid duration -1s 0ns"
    );
    let mut r = route("r", vec![]);
    r.route[0].weight = -5;
    let err = RouteTable::compile(&pb::RouteConfig {
        http: vec![r],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route 0 (r) of default/vs: route[0].weight: negative weight -5"
    );
}

#[test]
fn selected_rewrites_with_its_match() {
    let mut r = route("r", vec![uri(exact("/exact")), uri(prefix("/pre"))]);
    r.rewrite = Some(pb::HttpRewrite {
        uri: "/new".into(),
        ..Default::default()
    });
    let t = table(vec![r]);
    let req = Req::path("/prefix/x?q");
    let s = t.select(&req.view()).unwrap();
    assert!(matches!(
        s.http_match().unwrap().uri(),
        Some(StringMatcher::Prefix(_))
    ));
    assert_eq!(s.rewritten_path(req.path).as_deref(), Some("/newfix/x?q"));
    let req = Req::path("/exact?q");
    let s = t.select(&req.view()).unwrap();
    assert_eq!(s.rewritten_path(req.path).as_deref(), Some("/new?q"));
}

fn ops(set: &[(&str, &str)], remove: &[&str]) -> pb::Headers {
    pb::Headers {
        request: Some(pb::HeaderOperations {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            add: BTreeMap::new(),
            remove: remove.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }),
        response: Some(pb::HeaderOperations {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
    }
}

#[test]
fn header_edit_order_lone_and_weighted() {
    // Lone destination: one list, all removals first, the destination's
    // sets last.
    let mut lone = route("lone", vec![]);
    lone.headers = Some(ops(&[("x-a", "route"), ("x-r", "1")], &["x-d"]));
    lone.route[0].headers = Some(ops(&[("x-a", "dest"), ("x-d", "2")], &["x-r"]));
    // Weighted: the destination's edits, then the route's.
    let mut weighted = lone.clone();
    weighted.name = "weighted".into();
    weighted.route.push(dest("other"));
    let t = table(vec![lone, weighted]);
    let [lone, weighted] = t.routes() else {
        panic!("two routes");
    };
    let mut h = HeaderMap::new();
    lone.edit_request(lone.pick(0), &mut h, &Unformatted);
    assert_eq!(h["x-a"], "dest");
    assert_eq!(h["x-r"], "1");
    assert_eq!(h["x-d"], "2");
    let mut h = HeaderMap::new();
    weighted.edit_request(weighted.pick(0), &mut h, &Unformatted);
    assert_eq!(h["x-a"], "route");
    assert!(h.get("x-d").is_none());
    assert_eq!(h["x-r"], "1");
    let mut h = HeaderMap::new();
    weighted.edit_response(None, &mut h, &Unformatted);
    assert_eq!(h["x-a"], "route");
    assert!(h.get("x-d").is_none());
}

fn set_host(key: &str, value: &str) -> pb::Headers {
    pb::Headers {
        request: Some(pb::HeaderOperations {
            set: [(key.to_string(), value.to_string())].into(),
            ..Default::default()
        }),
        response: None,
    }
}

#[test]
fn authority_precedence() {
    let mut r = route("r", vec![]);
    r.route[0].headers = Some(set_host("host", "from-dest"));
    let t = table(vec![r.clone()]);
    let route0 = &t.routes()[0];
    assert_eq!(route0.authority(route0.pick(0)), Some("from-dest"));
    assert_eq!(route0.authority(None), None);
    r.headers = Some(set_host(":authority", "from-route"));
    let t = table(vec![r.clone()]);
    let route0 = &t.routes()[0];
    assert_eq!(route0.authority(route0.pick(0)), Some("from-route"));
    r.rewrite = Some(pb::HttpRewrite {
        authority: "from-rewrite".into(),
        ..Default::default()
    });
    let t = table(vec![r]);
    let route0 = &t.routes()[0];
    assert_eq!(route0.authority(route0.pick(0)), Some("from-rewrite"));
}
