//! Which route a request selects.

use super::*;

#[test]
fn first_matching_route_wins() {
    let t = table(vec![
        route("a", vec![uri(prefix("/a"))]),
        route("ab", vec![uri(prefix("/ab"))]),
        route("all", vec![]),
        route("never", vec![]),
    ]);
    assert_eq!(selected(&t, &Req::path("/abc")), "a");
    assert_eq!(selected(&t, &Req::path("/x")), "all");
    let s = t.select(&Req::path("/x").view()).unwrap();
    assert_eq!(s.matched, None);
    assert_eq!(t.name(), "default/reviews.default.svc.cluster.local");
    assert_eq!(t.hostname(), "reviews.default.svc.cluster.local");
    assert_eq!(t.routes().len(), 4);
    assert_eq!(t.routes()[0].virtual_service, "default/vs");
}

#[test]
fn no_route_applies() {
    let t = table(vec![route("a", vec![uri(exact("/a"))])]);
    assert_eq!(selected(&t, &Req::path("/b")), "-");
    // No HTTP route at all (a VirtualService with only `tcp` routes): the
    // service's default route, as istiod builds it.
    assert_eq!(selected(&table(vec![]), &Req::path("/b")), "(default)");
}

#[test]
fn matches_or_and_conditions_and() {
    let both = pb::HttpMatchRequest {
        uri: Some(prefix("/api")),
        method: Some(exact("POST")),
        ..Default::default()
    };
    let t = table(vec![route("r", vec![uri(exact("/health")), both])]);
    let post = |path| Req {
        method: Method::POST,
        ..Req::path(path)
    };
    assert_eq!(selected(&t, &post("/api/x")), "r");
    assert_eq!(t.select(&post("/api/x").view()).unwrap().matched, Some(1));
    assert_eq!(
        t.select(&Req::path("/health").view()).unwrap().matched,
        Some(0)
    );
    assert_eq!(selected(&t, &Req::path("/api/x")), "-");
    assert_eq!(selected(&t, &post("/other")), "-");
}

#[test]
fn ignore_uri_case() {
    let ci = |m| pb::HttpMatchRequest {
        uri: Some(m),
        ignore_uri_case: true,
        ..Default::default()
    };
    let t = table(vec![
        route("exact", vec![ci(exact("/Exact"))]),
        route("prefix", vec![ci(prefix("/Pre"))]),
        route("regex", vec![ci(regex("/re"))]),
    ]);
    assert_eq!(selected(&t, &Req::path("/eXACT?q=1")), "exact");
    assert_eq!(selected(&t, &Req::path("/prefixed")), "prefix");
    assert_eq!(selected(&t, &Req::path("/re")), "regex");
    // Regexes stay case-sensitive.
    assert_eq!(selected(&t, &Req::path("/RE")), "-");
    let cs = table(vec![route("exact", vec![uri(exact("/Exact"))])]);
    assert_eq!(selected(&cs, &Req::path("/exact")), "-");
}

#[test]
fn prefix_sees_the_query_exact_and_regex_do_not() {
    let t = table(vec![route("p", vec![uri(prefix("/api?debug"))])]);
    assert_eq!(selected(&t, &Req::path("/api?debug=1")), "p");
    let t = table(vec![route("e", vec![uri(exact("/api"))])]);
    assert_eq!(selected(&t, &Req::path("/api?x=1")), "e");
    assert_eq!(selected(&t, &Req::path("/api#frag")), "e");
    assert_eq!(selected(&t, &Req::path("/api/")), "-");
    let t = table(vec![route("r", vec![uri(regex("/api/[a-z]+"))])]);
    assert_eq!(selected(&t, &Req::path("/api/users?id=7")), "r");
    // Anchored: a match inside the path is not enough.
    assert_eq!(selected(&t, &Req::path("/v1/api/users")), "-");
    assert_eq!(selected(&t, &Req::path("/api/users/7")), "-");
}

#[test]
fn header_matches() {
    let hm = |pairs: Vec<(&str, pb::StringMatch)>| pb::HttpMatchRequest {
        headers: pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    };
    let t = table(vec![
        route("exact", vec![hm(vec![("x-user", exact("jason"))])]),
        route("present", vec![hm(vec![("x-debug", present())])]),
        route("star", vec![hm(vec![("x-star", regex("*"))])]),
        route("multi", vec![hm(vec![("x-multi", exact("a,b"))])]),
        route(
            "both",
            vec![hm(vec![("x-1", prefix("o")), ("x-2", regex("t.o"))])],
        ),
    ]);
    let with = |pairs: &[(&str, &str)]| Req {
        headers: headers(pairs),
        ..Req::default()
    };
    assert_eq!(selected(&t, &with(&[("x-user", "jason")])), "exact");
    assert_eq!(selected(&t, &with(&[("x-user", "jasonx")])), "-");
    assert_eq!(selected(&t, &with(&[("x-debug", "")])), "present");
    assert_eq!(selected(&t, &with(&[("x-star", "anything")])), "star");
    // Several values are joined with ",".
    assert_eq!(
        selected(&t, &with(&[("x-multi", "a"), ("x-multi", "b")])),
        "multi"
    );
    assert_eq!(selected(&t, &with(&[("x-multi", "a")])), "-");
    assert_eq!(
        selected(&t, &with(&[("x-1", "one"), ("x-2", "two")])),
        "both"
    );
    assert_eq!(selected(&t, &with(&[("x-1", "one")])), "-");
    assert_eq!(selected(&t, &with(&[])), "-");
}

#[test]
fn pseudo_headers_method_authority_scheme() {
    let hm = |k: &str, v| pb::HttpMatchRequest {
        headers: [(k.to_string(), v)].into(),
        ..Default::default()
    };
    let t = table(vec![
        route(
            "m",
            vec![pb::HttpMatchRequest {
                method: Some(exact("PUT")),
                ..Default::default()
            }],
        ),
        route(
            "a",
            vec![pb::HttpMatchRequest {
                authority: Some(regex(r"reviews(:\d+)?")),
                scheme: Some(exact("http")),
                port: 1,
                ..Default::default()
            }],
        ),
        route("pa", vec![hm(":authority", exact("ratings:9080"))]),
        route("host", vec![hm("host", exact("details"))]),
        route("path", vec![hm(":path", prefix("/p?"))]),
        route("method", vec![hm(":method", exact("DELETE"))]),
        route("scheme", vec![hm(":scheme", exact("https"))]),
        route("status", vec![hm(":status", present())]),
    ]);
    let put = Req {
        method: Method::PUT,
        ..Req::default()
    };
    assert_eq!(selected(&t, &put), "m");
    let on_port_1 = Req {
        port: 1,
        ..Req::default()
    };
    assert_eq!(selected(&t, &on_port_1), "a");
    let auth = |authority| Req {
        authority,
        ..Req::default()
    };
    assert_eq!(selected(&t, &auth("ratings:9080")), "pa");
    assert_eq!(selected(&t, &auth("details")), "host");
    assert_eq!(selected(&t, &Req::path("/p?x")), "path");
    let delete = Req {
        method: Method::DELETE,
        ..Req::default()
    };
    assert_eq!(selected(&t, &delete), "method");
    let https = Req {
        scheme: "https",
        ..Req::default()
    };
    assert_eq!(selected(&t, &https), "scheme");
    assert_eq!(selected(&t, &Req::default()), "-");
    // Envoy's `:scheme` of an HTTP/1.1 request is the app's
    // `x-forwarded-proto` when it is http or https.
    let forwarded = Req {
        headers: headers(&[("x-forwarded-proto", "https")]),
        ..Req::default()
    };
    assert_eq!(selected(&t, &forwarded), "scheme");
}

#[test]
fn without_headers() {
    let wm = |k: &str, v| pb::HttpMatchRequest {
        without_headers: [(k.to_string(), v)].into(),
        ..Default::default()
    };
    let with = |pairs: &[(&str, &str)]| Req {
        headers: headers(pairs),
        ..Req::default()
    };
    let not_jason = table(vec![route("r", vec![wm("x-user", exact("jason"))])]);
    assert_eq!(selected(&not_jason, &with(&[("x-user", "mary")])), "r");
    assert_eq!(selected(&not_jason, &with(&[("x-user", "jason")])), "-");
    // A missing header is "" for a value match (Istio sets
    // treat_missing_header_as_empty).
    assert_eq!(selected(&not_jason, &with(&[])), "r");
    let no_prefix = table(vec![route("r", vec![wm("x-user", prefix(""))])]);
    assert_eq!(selected(&no_prefix, &with(&[])), "-");
    assert_eq!(selected(&no_prefix, &with(&[("x-user", "a")])), "-");
    // Presence: the header must be absent.
    let absent = table(vec![route("r", vec![wm("x-debug", present())])]);
    assert_eq!(selected(&absent, &with(&[])), "r");
    assert_eq!(selected(&absent, &with(&[("x-debug", "1")])), "-");
    let star = table(vec![route("r", vec![wm("x-debug", regex("*"))])]);
    assert_eq!(selected(&star, &with(&[])), "r");
    assert_eq!(selected(&star, &with(&[("x-debug", "1")])), "-");
}

#[test]
fn query_params() {
    let qm = |pairs: Vec<(&str, pb::StringMatch)>| pb::HttpMatchRequest {
        query_params: pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    };
    let t = table(vec![
        route("exact", vec![qm(vec![("v", exact("2"))])]),
        route("regex", vec![qm(vec![("id", regex(r"\d+"))])]),
        route("prefix", vec![qm(vec![("lang", prefix("en"))])]),
        route("present", vec![qm(vec![("debug", present())])]),
        route("two", vec![qm(vec![("a", exact("1")), ("b", exact(""))])]),
    ]);
    assert_eq!(selected(&t, &Req::path("/?v=2")), "exact");
    assert_eq!(selected(&t, &Req::path("/?x=1&v=2")), "exact");
    // The first value counts.
    assert_eq!(selected(&t, &Req::path("/?v=1&v=2")), "-");
    assert_eq!(selected(&t, &Req::path("/?id=123")), "regex");
    assert_eq!(selected(&t, &Req::path("/?id=123a")), "-");
    assert_eq!(selected(&t, &Req::path("/?lang=en-US")), "prefix");
    assert_eq!(selected(&t, &Req::path("/?debug")), "present");
    assert_eq!(selected(&t, &Req::path("/?debug=")), "present");
    assert_eq!(selected(&t, &Req::path("/?a=1&b")), "two");
    assert_eq!(selected(&t, &Req::path("/?a=1")), "-");
    // Not decoded, as in Envoy.
    assert_eq!(selected(&t, &Req::path("/?%76=2")), "-");
    assert_eq!(selected(&t, &Req::path("/v=2")), "-");
}

#[test]
fn port_source_namespace_and_labels() {
    let t = table(vec![
        route(
            "port",
            vec![pb::HttpMatchRequest {
                port: 8080,
                ..Default::default()
            }],
        ),
        route(
            "ns",
            vec![pb::HttpMatchRequest {
                source_namespace: "prod".into(),
                ..Default::default()
            }],
        ),
        route(
            "labels",
            vec![pb::HttpMatchRequest {
                source_labels: BTreeMap::from([("app".into(), "ui".into())]),
                source_workloads: vec!["uid-z".into(), "uid-ui-1".into(), "uid-a".into()],
                ..Default::default()
            }],
        ),
        route(
            "nobody",
            vec![pb::HttpMatchRequest {
                source_labels: BTreeMap::from([("app".into(), "ghost".into())]),
                ..Default::default()
            }],
        ),
    ]);
    let on = |port| Req {
        port,
        ..Req::default()
    };
    assert_eq!(selected(&t, &on(8080)), "port");
    // No route is for a client outside `prod` without the labels on 9080:
    // istiod leaves the VirtualService out, the default route applies.
    assert_eq!(selected(&t, &on(9080)), "(default)");
    let from = |ns, workload| Req {
        ns,
        workload,
        ..Req::default()
    };
    assert_eq!(selected(&t, &from("prod", "x")), "ns");
    assert_eq!(selected(&t, &from("default", "uid-ui-1")), "labels");
    assert_eq!(selected(&t, &from("default", "uid-a")), "labels");
    assert_eq!(selected(&t, &from("default", "uid-other")), "(default)");
    // A route for this client whose request conditions fail: 404.
    let t = table(vec![
        route(
            "labels-api",
            vec![pb::HttpMatchRequest {
                source_labels: BTreeMap::from([("app".into(), "ui".into())]),
                source_workloads: vec!["uid-ui-1".into()],
                uri: Some(prefix("/api")),
                ..Default::default()
            }],
        ),
        route(
            "other-port",
            vec![pb::HttpMatchRequest {
                port: 8080,
                ..Default::default()
            }],
        ),
    ]);
    let asks = |workload, path: &'static str| Req {
        workload,
        ..Req::path(path)
    };
    assert_eq!(selected(&t, &asks("uid-ui-1", "/api/x")), "labels-api");
    assert_eq!(selected(&t, &asks("uid-ui-1", "/x")), "-");
    assert_eq!(selected(&t, &asks("uid-other", "/x")), "(default)");
    // Without source_labels, source_workloads is not consulted.
    let any = table(vec![route(
        "any",
        vec![pb::HttpMatchRequest {
            source_workloads: vec!["uid-x".into()],
            ..Default::default()
        }],
    )]);
    assert_eq!(selected(&any, &from("default", "uid-other")), "any");
}

#[test]
fn export_to() {
    let visible = |namespaces: &[&str]| pb::HttpRoute {
        export_to: Some(pb::Visibility {
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        }),
        ..route("only", vec![])
    };
    let from = |ns| Req {
        ns,
        ..Req::default()
    };
    let t = table(vec![
        visible(&["prod", "default"]),
        route("fallback", vec![]),
    ]);
    assert_eq!(selected(&t, &from("default")), "only");
    assert_eq!(selected(&t, &from("prod")), "only");
    assert_eq!(selected(&t, &from("dev")), "fallback");
    // Exported to other namespaces only: the default route for "dev".
    let t = table(vec![visible(&["prod"])]);
    assert_eq!(selected(&t, &from("dev")), "(default)");
    // Empty: every namespace.
    let t = table(vec![visible(&[])]);
    assert_eq!(selected(&t, &from("dev")), "only");
    assert!(t.routes()[0].visible_to("anything"));
}

#[test]
fn request_view_path_and_query() {
    let r = Req::path("/a/b?x=1&y#frag");
    assert_eq!(r.view().path(), "/a/b");
    assert_eq!(r.view().query(), Some("x=1&y"));
    let r = Req::path("/a#f?x");
    assert_eq!(r.view().path(), "/a");
    assert_eq!(r.view().query(), None);
    assert_eq!(Req::path("/a").view().query(), None);
}
