//! VirtualService chaining: a root route with `delegate` stands for the
//! delegate VirtualService's routes merged with it, as istiod merges them.

use super::*;

fn prefix(s: &str) -> Option<pb::StringMatch> {
    Some(pb::StringMatch {
        match_type: Some(MatchType::Prefix(s.into())),
    })
}

/// A VirtualService `name` in `ns` without hosts, with `spec` (indented
/// two spaces) after `spec:`.
fn delegate_vs(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

/// The root for reviews: `/api` and `/v2/api` delegate to `target`
/// (`name` or `namespace/name`), the rest goes to v1.
fn root_vs(target: &str) -> String {
    let delegate = match target.split_once('/') {
        Some((ns, name)) => format!("{{name: {name}, namespace: {ns}}}"),
        None => format!("{{name: {target}}}"),
    };
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  hosts: [reviews]
  http:
  - name: api
    match: [{{uri: {{prefix: /api}}}}, {{uri: {{prefix: /v2/api}}}}]
    delegate: {delegate}
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
"#
    )
}

/// The routes' names and destinations' hosts and subsets.
fn summary(r: &RouteConfig) -> Vec<(String, Vec<(String, String)>)> {
    r.http
        .iter()
        .map(|h| {
            let d = h
                .route
                .iter()
                .map(|d| {
                    let d = d.destination.as_ref().unwrap();
                    (d.host.clone(), d.subset.clone())
                })
                .collect();
            (h.name.clone(), d)
        })
        .collect()
}

fn reviews(subset: &str) -> (String, String) {
    ("reviews.bookinfo.svc.cluster.local".into(), subset.into())
}

const API_DELEGATE: &str = r#"  http:
  - name: users
    match: [{uri: {prefix: /api/users}, headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}}]
  - name: health
    match: [{uri: {exact: /api/health}}]
    route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v3}}]
  - name: elsewhere
    match: [{uri: {prefix: /other}}]
    route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v3}}]
  - name: beta
    match: [{headers: {x-beta: {exact: "1"}}}]
    route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v3}}]
  - name: wider
    match: [{uri: {prefix: /api/x}}, {uri: {prefix: /"}}]
    route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v1}}]
"#;

#[test]
fn delegate_routes_merge_their_matches_into_the_root_route() {
    let yaml =
        bookinfo() + REVIEWS_DR + &root_vs("team/api") + &delegate_vs("api", "team", API_DELEGATE);
    let r = route(&model(&yaml), REVIEWS);
    assert_eq!(
        summary(&r),
        [
            ("api-users".into(), vec![reviews("v2")]),
            ("api-health".into(), vec![reviews("v3")]),
            ("api-beta".into(), vec![reviews("v3")]),
            ("".into(), vec![reviews("v1")]),
        ],
        "`elsewhere` is outside /api and /v2/api, `wider` has a match outside: both left out"
    );
    // The delegated routes are the root's, as in istiod.
    let root = pb::ConfigRef {
        namespace: "bookinfo".into(),
        name: "reviews".into(),
    };
    assert!(
        r.http
            .iter()
            .all(|h| h.virtual_service.as_ref() == Some(&root))
    );
    assert_eq!(r.virtual_services, [root]);

    // Prefix within prefix, with the delegate's header: only /api admits
    // /api/users.
    let users = &r.http[0].r#match;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].uri, prefix("/api/users"));
    assert_eq!(users[0].headers["end-user"], exact("jason").unwrap());
    // Exact within prefix.
    let health = &r.http[1].r#match;
    assert_eq!(health.len(), 1);
    assert_eq!(health[0].uri, exact("/api/health"));
    // No uri of its own: one match per root match, each with the root's
    // uri and the delegate's header.
    let beta = &r.http[2].r#match;
    let uris: Vec<_> = beta.iter().map(|m| m.uri.clone()).collect();
    assert_eq!(uris, [prefix("/api"), prefix("/v2/api")]);
    assert!(
        beta.iter()
            .all(|m| m.headers["x-beta"] == exact("1").unwrap())
    );
}

#[test]
fn header_matches_merge_and_conflict() {
    let root = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match:
    - {name: web, uri: {prefix: /web}, headers: {tenant: {prefix: acme}}, queryParams: {v: {exact: "2"}}}
    - {name: ping, uri: {exact: /ping}}
    delegate: {name: tenants}
"#;
    let delegate = r#"  http:
  - match: [{name: east, headers: {tenant: {exact: acme-east}, zone: {exact: a}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{headers: {tenant: {exact: other}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {prefix: /ping}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {regex: "/a.*"}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    let yaml = bookinfo() + REVIEWS_DR + root + &delegate_vs("tenants", "bookinfo", delegate);
    let r = route(&model(&yaml), REVIEWS);
    assert_eq!(
        summary(&r),
        [
            ("".into(), vec![reviews("v2")]),
            ("".into(), vec![reviews("v3")]),
            ("".into(), vec![reviews("v1")]),
        ]
    );
    // acme-east is within the root's `acme` prefix; merged with the root's
    // query parameter and uri. The exact /ping root match has no `tenant`
    // header, so it admits the delegate's match too.
    let east = &r.http[0].r#match;
    assert_eq!(east.len(), 2);
    assert_eq!(east[0].name, "web-east");
    assert_eq!(east[0].uri, prefix("/web"));
    assert_eq!(east[0].headers["tenant"], exact("acme-east").unwrap());
    assert_eq!(east[0].headers["zone"], exact("a").unwrap());
    assert_eq!(east[0].query_params["v"], exact("2").unwrap());
    assert_eq!(east[1].name, "ping-east");
    assert_eq!(east[1].uri, exact("/ping"));
    assert_eq!(east[1].headers["tenant"], exact("acme-east").unwrap());
    // `tenant: other` conflicts with the `acme` prefix, so that
    // combination is dropped; with /ping it stands.
    let other = &r.http[1].r#match;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].name, "ping");
    assert_eq!(other[0].uri, exact("/ping"));
    // /ping is outside /web and wider than the exact /ping; a regex never
    // combines: no combination, the route is left out. No match at all: the root's matches as they are.
    let all = &r.http[2].r#match;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].name, "web");
    assert_eq!(all[1].name, "ping");
}

#[test]
fn unset_fields_are_inherited_from_the_root_route() {
    let root = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - name: api
    timeout: 3s
    retries: {attempts: 2, perTryTimeout: 1s}
    rewrite: {uri: /v1}
    headers: {request: {set: {x-root: "1"}}}
    corsPolicy: {allowMethods: [GET]}
    mirror: {host: ratings}
    mirrorPercentage: {value: 5}
    delegate: {name: api, namespace: team}
"#;
    // `ratings` in the delegate is `ratings.team`, which does not exist;
    // the root's mirror `ratings` is `ratings.bookinfo`.
    let delegate = r#"  http:
  - name: own
    timeout: 1s
    headers: {request: {set: {x-own: "1"}}}
    mirror: {host: ratings}
    route: [{destination: {host: reviews.bookinfo.svc.cluster.local}}]
  - route: [{destination: {host: reviews.bookinfo.svc.cluster.local}}]
"#;
    let yaml = bookinfo() + root + &delegate_vs("api", "team", delegate);
    let r = route(&model(&yaml), REVIEWS);
    assert_eq!(r.http.len(), 2);
    let (own, inherited) = (&r.http[0], &r.http[1]);
    assert_eq!(own.name, "api-own");
    assert_eq!(inherited.name, "api");

    assert_eq!(own.timeout, secs(1, 0));
    assert_eq!(inherited.timeout, secs(3, 0));
    for h in [own, inherited] {
        let retries = h.retries.as_ref().unwrap();
        assert_eq!((retries.attempts, retries.per_try_timeout), (2, secs(1, 0)));
        assert_eq!(h.rewrite.as_ref().unwrap().uri, "/v1");
        assert_eq!(h.cors_policy.as_ref().unwrap().allow_methods, ["GET"]);
    }
    let set = |h: &pb::HttpRoute| {
        h.headers
            .as_ref()
            .unwrap()
            .request
            .as_ref()
            .unwrap()
            .set
            .clone()
    };
    assert_eq!(set(own).keys().collect::<Vec<_>>(), ["x-own"], "not merged");
    assert_eq!(set(inherited).keys().collect::<Vec<_>>(), ["x-root"]);

    // The delegate's own mirror resolves in its namespace; it takes the
    // root's mirrorPercentage, which it leaves unset.
    let mirror = |h: &pb::HttpRoute| {
        let m = &h.mirrors[0];
        let d = m.destination.as_ref().unwrap();
        (d.host.clone(), d.service.clone(), m.percentage)
    };
    assert_eq!(
        mirror(own),
        ("ratings.team.svc.cluster.local".into(), "".into(), 5.0)
    );
    assert_eq!(
        mirror(inherited),
        (
            "ratings.bookinfo.svc.cluster.local".into(),
            "bookinfo/ratings.bookinfo.svc.cluster.local".into(),
            5.0
        )
    );
}

#[test]
fn missing_or_hosted_delegates_contribute_nothing() {
    let base = bookinfo() + REVIEWS_DR;
    let routes = |yaml: &str| summary(&route(&model(yaml), REVIEWS));
    let rest = [("".to_string(), vec![reviews("v1")])];

    // Not there.
    assert_eq!(routes(&(base.clone() + &root_vs("team/api"))), rest);
    // In the root's namespace when the delegate names none; a
    // VirtualService in another namespace of that name is not it.
    let catch_all = "  http:\n  - route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}}]\n";
    assert_eq!(
        routes(&(base.clone() + &root_vs("api") + &delegate_vs("api", "team", catch_all))),
        rest
    );
    let found =
        routes(&(base.clone() + &root_vs("api") + &delegate_vs("api", "bookinfo", catch_all)));
    assert_eq!(found[0], ("api".into(), vec![reviews("v2")]));
    // A VirtualService with hosts is not a delegate.
    let hosted = "  hosts: [ratings]\n".to_string() + catch_all;
    assert_eq!(
        routes(&(base + &root_vs("team/api") + &delegate_vs("api", "team", &hosted))),
        rest
    );
}

#[test]
fn a_delegate_cannot_delegate_again() {
    let nested = r#"  http:
  - match: [{uri: {prefix: /api/deeper}}]
    delegate: {name: deeper, namespace: team}
  - route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}}]
"#;
    let deeper = "  http:\n  - route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v3}}]\n";
    let yaml = bookinfo()
        + REVIEWS_DR
        + &root_vs("team/api")
        + &delegate_vs("api", "team", nested)
        + &delegate_vs("deeper", "team", deeper);
    let r = route(&model(&yaml), REVIEWS);
    assert_eq!(
        summary(&r),
        [
            ("api".into(), vec![reviews("v2")]),
            ("".into(), vec![reviews("v1")]),
        ]
    );
}

#[test]
fn a_delegate_must_be_exported_to_the_root_namespace() {
    let routes = |export_to: &str, delegate_ns: &str| {
        let spec = format!(
            "  exportTo: {export_to}\n  http:\n  - route: [{{destination: {{host: reviews.bookinfo.svc.cluster.local, subset: v2}}}}]\n"
        );
        let yaml = bookinfo()
            + REVIEWS_DR
            + &root_vs(&format!("{delegate_ns}/api"))
            + &delegate_vs("api", delegate_ns, &spec);
        summary(&route(&model(&yaml), REVIEWS)).len()
    };
    assert_eq!(routes("[.]", "team"), 1, "only its own namespace");
    assert_eq!(routes("[other]", "team"), 1);
    assert_eq!(routes("['~']", "team"), 1, "nowhere");
    assert_eq!(routes("[bookinfo]", "team"), 2);
    assert_eq!(routes("['*']", "team"), 2);
    assert_eq!(
        routes("[.]", "bookinfo"),
        2,
        "the root's namespace is its own"
    );
}
