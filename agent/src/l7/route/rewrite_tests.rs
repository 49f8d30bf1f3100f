use http::{HeaderMap, Method};
use weft_proto::route::string_match::MatchType;

use super::*;

fn uri_match(t: MatchType) -> HttpMatch {
    let m = pb::HttpMatchRequest {
        uri: Some(pb::StringMatch {
            match_type: Some(t),
        }),
        ..Default::default()
    };
    HttpMatch::compile(&m, "r", "match[0]").unwrap()
}

fn rewrite(uri: &str) -> Rewrite {
    Rewrite::compile(
        Some(&pb::HttpRewrite {
            uri: uri.into(),
            ..Default::default()
        }),
        "r",
    )
    .unwrap()
    .unwrap()
}

fn regex_rewrite(pattern: &str, rewrite: &str) -> Result<Option<Rewrite>, RouteError> {
    Rewrite::compile(
        Some(&pb::HttpRewrite {
            uri_regex_rewrite: Some(pb::RegexRewrite {
                r#match: pattern.into(),
                rewrite: rewrite.into(),
            }),
            ..Default::default()
        }),
        "route 3 of ns/vs",
    )
}

#[test]
fn prefix_rewrite_replaces_the_matched_prefix() {
    let m = uri_match(MatchType::Prefix("/api/v1".into()));
    let r = rewrite("/v2");
    assert_eq!(
        r.rewrite_path("/api/v1/users?x=1", Some(&m)).as_deref(),
        Some("/v2/users?x=1")
    );
    assert_eq!(r.rewrite_path("/api/v1", Some(&m)).as_deref(), Some("/v2"));
    // Whatever the case the prefix matched in.
    assert_eq!(
        r.rewrite_path("/API/V1/x", Some(&m)).as_deref(),
        Some("/v2/x")
    );
    let r = rewrite("/");
    assert_eq!(
        r.rewrite_path("/api/v1/x", Some(&m)).as_deref(),
        Some("//x")
    );
}

#[test]
fn exact_and_regex_matches_replace_the_whole_path() {
    let r = rewrite("/new");
    let m = uri_match(MatchType::Exact("/old".into()));
    assert_eq!(
        r.rewrite_path("/old?a=b", Some(&m)).as_deref(),
        Some("/new?a=b")
    );
    assert_eq!(r.rewrite_path("/old", Some(&m)).as_deref(), Some("/new"));
    let m = uri_match(MatchType::Regex("/o.d".into()));
    assert_eq!(
        r.rewrite_path("/old?q", Some(&m)).as_deref(),
        Some("/new?q")
    );
}

#[test]
fn no_uri_match_replaces_the_leading_slash() {
    // Istio matches the prefix "/" then.
    let r = rewrite("/v2/");
    assert_eq!(r.rewrite_path("/a/b?c", None).as_deref(), Some("/v2/a/b?c"));
    let header_only = HttpMatch::compile(&pb::HttpMatchRequest::default(), "r", "m").unwrap();
    assert_eq!(
        r.rewrite_path("/a", Some(&header_only)).as_deref(),
        Some("/v2/a")
    );
}

#[test]
fn mismatched_match_does_not_panic() {
    let m = uri_match(MatchType::Prefix("/very/long/prefix".into()));
    assert_eq!(rewrite("/x").rewrite_path("/v", Some(&m)), None);
    // Inside the two bytes of "é".
    let m = uri_match(MatchType::Prefix("/a".into()));
    assert_eq!(rewrite("/x").rewrite_path("/é", Some(&m)), None);
}

#[test]
fn regex_rewrite_with_groups() {
    let r = regex_rewrite(r"^/service/([^/]+)(/.*)$", r"\2/instance/\1")
        .unwrap()
        .unwrap();
    assert_eq!(
        r.rewrite_path("/service/foo/v1/api?x=/service/y/z", None)
            .as_deref(),
        Some("/v1/api/instance/foo?x=/service/y/z")
    );
    // Every match is replaced; the query is left alone.
    let r = regex_rewrite("a", "b").unwrap().unwrap();
    assert_eq!(
        r.rewrite_path("/aaa?a=a", None).as_deref(),
        Some("/bbb?a=a")
    );
    // No match: unchanged, but rewritten all the same (Envoy's regex
    // rewrite always yields a path).
    assert_eq!(r.rewrite_path("/xyz?a", None).as_deref(), Some("/xyz?a"));
    // `$` is literal in RE2 rewrites, `\\` a backslash, `\0` the match.
    let r = regex_rewrite("/p", r"/$1\\\0").unwrap().unwrap();
    assert_eq!(r.rewrite_path("/p", None).as_deref(), Some(r"/$1\/p"));
}

#[test]
fn regex_rewrite_errors() {
    let err = regex_rewrite("/(a)", r"\2").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"route 3 of ns/vs: rewrite.uri_regex_rewrite: rewrite "\\2" refers to group 2, the pattern has 1"#
    );
    assert!(regex_rewrite("/a", r"\x").is_err());
    assert!(regex_rewrite("/a", "\\").is_err());
    assert!(regex_rewrite("", "/").is_err());
    let err = regex_rewrite("(", "/").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("route 3 of ns/vs: rewrite.uri_regex_rewrite.match: regex parse error"),
        "{err}"
    );
}

#[test]
fn authority_rewrite() {
    let r = Rewrite::compile(
        Some(&pb::HttpRewrite {
            authority: "new.example".into(),
            ..Default::default()
        }),
        "r",
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.rewrite_authority(), Some("new.example"));
    assert_eq!(r.rewrite_path("/a", None), None);
    assert_eq!(rewrite("/x").rewrite_authority(), None);
    assert!(
        Rewrite::compile(Some(&pb::HttpRewrite::default()), "r")
            .unwrap()
            .is_none()
    );
}

fn req<'a>(
    headers: &'a HeaderMap,
    path: &'a str,
    authority: &'a str,
    scheme: &'a str,
) -> RequestView<'a> {
    RequestView {
        method: &Method::GET,
        path_and_query: path,
        authority,
        scheme,
        uri_scheme: None,
        headers,
        port: 9080,
        source_namespace: "default",
        source_workload: "w",
    }
}

fn redirect(r: pb::HttpRedirect) -> Redirect {
    Redirect::compile(&r, "r").unwrap()
}

#[test]
fn redirect_defaults_keep_everything_but_what_is_replaced() {
    let h = HeaderMap::new();
    let r = redirect(pb::HttpRedirect {
        uri: "/new".into(),
        ..Default::default()
    });
    assert_eq!(
        r.location(&req(&h, "/old?x=1", "reviews:9080", "http"), None),
        (
            StatusCode::MOVED_PERMANENTLY,
            "http://reviews:9080/new?x=1".into()
        )
    );
    // The new uri's own query wins.
    let r = redirect(pb::HttpRedirect {
        uri: "/new?y=2".into(),
        redirect_code: 302,
        ..Default::default()
    });
    assert_eq!(
        r.location(&req(&h, "/old?x=1", "reviews", "http"), None),
        (StatusCode::FOUND, "http://reviews/new?y=2".into())
    );
    // Authority only: path and query kept.
    let r = redirect(pb::HttpRedirect {
        authority: "other.example".into(),
        redirect_code: 307,
        ..Default::default()
    });
    assert_eq!(
        r.location(&req(&h, "/p?q", "reviews:9080", "http"), None),
        (
            StatusCode::TEMPORARY_REDIRECT,
            "http://other.example/p?q".into()
        )
    );
    // A uri without a leading slash gets one.
    let r = redirect(pb::HttpRedirect {
        uri: "rel".into(),
        ..Default::default()
    });
    assert_eq!(
        r.location(&req(&h, "/", "h", "http"), None).1,
        "http://h/rel"
    );
}

#[test]
fn redirect_scheme_change() {
    let h = HeaderMap::new();
    let r = redirect(pb::HttpRedirect {
        scheme: "https".into(),
        redirect_code: 308,
        ..Default::default()
    });
    // The old scheme's default port goes, any other stays (Envoy).
    assert_eq!(
        r.location(&req(&h, "/p", "h:80", "http"), None),
        (StatusCode::PERMANENT_REDIRECT, "https://h/p".into())
    );
    assert_eq!(
        r.location(&req(&h, "/p", "h:9080", "http"), None).1,
        "https://h:9080/p"
    );
    assert_eq!(
        r.location(&req(&h, "/p", "h", "http"), None).1,
        "https://h/p"
    );
    assert_eq!(
        r.location(&req(&h, "/p", "[fd00::1]:80", "http"), None).1,
        "https://[fd00::1]/p"
    );
}

#[test]
fn redirect_ports() {
    let h = HeaderMap::new();
    let port = |port, scheme: &str| {
        redirect(pb::HttpRedirect {
            port,
            scheme: scheme.into(),
            ..Default::default()
        })
    };
    assert_eq!(
        port(8443, "")
            .location(&req(&h, "/p", "h:9080", "http"), None)
            .1,
        "http://h:8443/p"
    );
    // The scheme's default port is not sent to Envoy: the request's
    // authority stays as it came (its port goes only when the scheme
    // changes away from that port's default).
    assert_eq!(
        port(443, "https")
            .location(&req(&h, "/p", "h:9080", "http"), None)
            .1,
        "https://h:9080/p"
    );
    assert_eq!(
        port(443, "https")
            .location(&req(&h, "/p", "h:80", "http"), None)
            .1,
        "https://h/p"
    );
    assert_eq!(
        port(80, "")
            .location(&req(&h, "/p", "h:9080", "http"), None)
            .1,
        "http://h:9080/p"
    );
    assert_eq!(
        port(80, "").location(&req(&h, "/p", "h", "http"), None).1,
        "http://h/p"
    );
    assert_eq!(
        port(80, "https")
            .location(&req(&h, "/p", "h", "http"), None)
            .1,
        "https://h:80/p"
    );
    assert_eq!(
        port(5000, "")
            .location(&req(&h, "/", "[::1]:9080", "http"), None)
            .1,
        "http://[::1]:5000/"
    );
}

#[test]
fn redirect_port_follows_the_authority_as_written() {
    // Envoy appends `:port` to `host_redirect` without looking into it.
    let h = HeaderMap::new();
    let with = |authority: &str, port, derive: pb::DerivePort| {
        redirect(pb::HttpRedirect {
            authority: authority.into(),
            port,
            derive_port: derive as i32,
            ..Default::default()
        })
        .location(&req(&h, "/p", "h:1", "http"), None)
        .1
    };
    let unset = pb::DerivePort::Unset;
    assert_eq!(with("b:8080", 9090, unset), "http://b:8080:9090/p");
    assert_eq!(with("b", 9090, unset), "http://b:9090/p");
    assert_eq!(with("[::1]:8080", 9090, unset), "http://[::1]:8080:9090/p");
    // A default port istiod drops leaves the authority alone.
    assert_eq!(with("b:8080", 80, unset), "http://b:8080/p");
    // The request's port (9080) likewise.
    let from_request = pb::DerivePort::FromRequestPort;
    assert_eq!(with("b:8080", 0, from_request), "http://b:8080:9080/p");
}

#[test]
fn redirect_without_scheme_keeps_the_forwarded_one() {
    let forwarded = |values: &[&'static str]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-proto", http::HeaderValue::from_static(v));
        }
        h
    };
    let https = forwarded(&["https"]);
    let to = |r: pb::HttpRedirect, h: &HeaderMap, authority: &str| {
        redirect(r)
            .location(&req(h, "/p", authority, "http"), None)
            .1
    };
    let uri = || pb::HttpRedirect {
        uri: "/n".into(),
        ..Default::default()
    };
    // Envoy's `:scheme` is the app's `x-forwarded-proto`; the Host's port
    // stays, being that scheme's default.
    assert_eq!(to(uri(), &https, "h:443"), "https://h:443/n");
    assert_eq!(to(uri(), &https, "h"), "https://h/n");
    // Not "http" or "https" (several are joined by ","): the connection's
    // scheme, and no port goes.
    assert_eq!(to(uri(), &forwarded(&["ftp"]), "h:80"), "http://h:80/n");
    let both = forwarded(&["https", "http"]);
    assert_eq!(to(uri(), &both, "h:443"), "http://h:443/n");
    // An HTTP/2 app's own `:scheme` wins over its `x-forwarded-proto`.
    let h2 = RequestView {
        uri_scheme: Some("http"),
        ..req(&https, "/p", "h", "http")
    };
    assert_eq!(redirect(uri()).location(&h2, None).1, "http://h/n");
    // A port goes only when the new scheme is not the forwarded one and
    // the port is the forwarded scheme's default.
    let scheme = |s: &str| pb::HttpRedirect {
        scheme: s.into(),
        ..Default::default()
    };
    assert_eq!(to(scheme("http"), &https, "h:443"), "http://h/p");
    assert_eq!(to(scheme("http"), &https, "h:80"), "http://h:80/p");
    assert_eq!(to(scheme("https"), &https, "h:80"), "https://h:80/p");
    // Written otherwise, it is another port.
    assert_eq!(to(scheme("http"), &https, "h:0443"), "http://h:0443/p");
    // With no scheme istiod drops only the listener's default port (80
    // for plain HTTP), whatever the request's scheme.
    let port = |p| pb::HttpRedirect {
        port: p,
        ..Default::default()
    };
    assert_eq!(to(port(443), &https, "h"), "https://h:443/p");
    assert_eq!(to(port(80), &https, "h:80"), "https://h:80/p");
    assert_eq!(to(port(80), &https, "h"), "https://h/p");
}

#[test]
fn redirect_derive_port() {
    let h = HeaderMap::new();
    let derive = |d: pb::DerivePort, scheme: &str| {
        redirect(pb::HttpRedirect {
            derive_port: d as i32,
            scheme: scheme.into(),
            // derive_port wins over a port.
            port: 1,
            ..Default::default()
        })
    };
    let from_request = derive(pb::DerivePort::FromRequestPort, "");
    // The port the request was sent to (9080), not the Host header's.
    assert_eq!(
        from_request.location(&req(&h, "/p", "h", "http"), None).1,
        "http://h:9080/p"
    );
    assert_eq!(
        from_request
            .location(&req(&h, "/p", "h:1234", "http"), None)
            .1,
        "http://h:9080/p"
    );
    // To the scheme's default port: as Istio's routing tests have it,
    // `Host: b` gives no port and `Host: b:80` keeps it.
    let on_80 = |authority| {
        let mut r = req(&h, "/p", authority, "http");
        r.port = 80;
        from_request.location(&r, None).1
    };
    assert_eq!(on_80("b"), "http://b/p");
    assert_eq!(on_80("b:80"), "http://b:80/p");
    // FROM_PROTOCOL_DEFAULT is Envoy's default (istiod sets no port): the
    // authority as it came, its port dropped only with a scheme change
    // away from the port's default.
    let default = derive(pb::DerivePort::FromProtocolDefault, "https");
    assert_eq!(
        default.location(&req(&h, "/p", "h:9080", "http"), None).1,
        "https://h:9080/p"
    );
    assert_eq!(
        default.location(&req(&h, "/p", "h:80", "http"), None).1,
        "https://h/p"
    );
    let default = derive(pb::DerivePort::FromProtocolDefault, "");
    assert_eq!(
        default.location(&req(&h, "/p", "h:9080", "http"), None).1,
        "http://h:9080/p"
    );
}

#[test]
fn redirect_prefix_rewrite() {
    let h = HeaderMap::new();
    let r = redirect(pb::HttpRedirect {
        prefix_rewrite: "/new/".into(),
        ..Default::default()
    });
    // The matched prefix is replaced; the rest and the query kept.
    let m = uri_match(MatchType::Prefix("/foo/".into()));
    assert_eq!(
        r.location(&req(&h, "/foo/bar?a=1", "h", "http"), Some(&m))
            .1,
        "http://h/new/bar?a=1"
    );
    // Without a uri match: Istio's prefix "/".
    assert_eq!(
        r.location(&req(&h, "/foo/bar", "h", "http"), None).1,
        "http://h/new/foo/bar"
    );
}

#[test]
fn redirect_codes() {
    for (code, want) in [
        (0, 301),
        (301, 301),
        (302, 302),
        (303, 303),
        (307, 307),
        (308, 308),
    ] {
        let r = redirect(pb::HttpRedirect {
            redirect_code: code,
            ..Default::default()
        });
        assert_eq!(r.code.as_u16(), want);
    }
    let err = Redirect::compile(
        &pb::HttpRedirect {
            redirect_code: 304,
            ..Default::default()
        },
        "route 0 of a/b",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "route 0 of a/b: redirect.redirect_code: 304 is not one of 301, 302, 303, 307, 308"
    );
}

#[test]
fn direct_responses() {
    let d = DirectResponse::compile(
        &pb::HttpDirectResponse {
            status: 418,
            body: Some(pb::HttpBody {
                specifier: Some(Specifier::String("teapot".into())),
            }),
        },
        "r",
    )
    .unwrap();
    assert_eq!(d.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(d.body.as_deref(), Some(&b"teapot"[..]));
    let d = DirectResponse::compile(
        &pb::HttpDirectResponse {
            status: 200,
            body: Some(pb::HttpBody {
                specifier: Some(Specifier::Bytes(vec![0, 159, 255])),
            }),
        },
        "r",
    )
    .unwrap();
    assert_eq!(d.body.as_deref(), Some(&[0u8, 159, 255][..]));
    let d = DirectResponse::compile(
        &pb::HttpDirectResponse {
            status: 503,
            body: None,
        },
        "r",
    )
    .unwrap();
    assert_eq!(d.body, None);
    for status in [0, 100, 199, 600] {
        assert!(
            DirectResponse::compile(&pb::HttpDirectResponse { status, body: None }, "r").is_err()
        );
    }
}

#[test]
fn direct_responses_of_201_and_3xx_locate_the_request() {
    let headers = HeaderMap::new();
    let view = req(&headers, "/made?id=1", "api:8080", "http");
    let direct = |status| {
        DirectResponse::compile(&pb::HttpDirectResponse { status, body: None }, "r").unwrap()
    };
    for status in [201, 301, 302, 304, 399] {
        assert_eq!(
            direct(status).location(&view).as_deref(),
            Some("http://api:8080/made?id=1"),
            "{status}"
        );
    }
    for status in [200, 204, 404, 503] {
        assert_eq!(direct(status).location(&view), None, "{status}");
    }
}
