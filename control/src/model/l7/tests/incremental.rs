//! Incremental updates: only the hosts a change touches recompile, and
//! the result matches a full build.

use super::*;

/// Applies the objects of `yaml` as changes (what the directory source
/// reports) and returns the (type, name) pairs that changed.
fn apply(builder: &mut Builder, before: &[Object], yaml: &str) -> Vec<(&'static str, String)> {
    let after = objects(yaml);
    let mut changes: Vec<(ObjectKey, Option<Object>)> = Vec::new();
    for o in &after {
        if !before.contains(o) {
            changes.push((o.key(), Some(o.clone())));
        }
    }
    for o in before {
        if !after.iter().any(|n| n.key() == o.key()) {
            changes.push((o.key(), None));
        }
    }
    let from = builder.model().version.clone();
    builder.update(Delta::Changes(&changes));
    let model = builder.model();
    // The incremental model equals a full build of the same objects.
    let full = build(&after, &config());
    for t in [ROUTE_CONFIG_TYPE_URL, DESTINATION_POLICY_TYPE_URL] {
        let (a, b) = (model.of_type(t).unwrap(), full.of_type(t).unwrap());
        assert_eq!(a.keys(), b.keys(), "{t}");
        for (name, r) in a.iter() {
            assert_eq!(r.version, b[name].version, "{name}");
        }
    }
    let mut changed: Vec<(&'static str, String)> = model
        .changed_since(&from)
        .unwrap()
        .into_iter()
        .map(|(t, n)| (t, n.to_string()))
        .filter(|(t, _)| *t == ROUTE_CONFIG_TYPE_URL || *t == DESTINATION_POLICY_TYPE_URL)
        .collect();
    changed.sort();
    changed
}

fn route_changed(name: &str) -> (&'static str, String) {
    (ROUTE_CONFIG_TYPE_URL, name.to_string())
}

#[test]
fn subsets_follow_pod_changes_and_only_affected_hosts_recompile() {
    let ratings_vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
"#;
    let base = bookinfo() + REVIEWS_DR + CANARY_VS + ratings_vs;
    let first = objects(&base);
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&first));
    let v1_endpoints = |m: &Model| {
        route(m, REVIEWS).http[1].route[0]
            .destination
            .as_ref()
            .unwrap()
            .endpoints
            .as_ref()
            .unwrap()
            .workload_uids
            .clone()
    };
    assert_eq!(
        v1_endpoints(builder.model()),
        [uid("bookinfo", "reviews-v1")]
    );

    // reviews-v3 is relabelled v1: it joins subset v1 and leaves v3; only
    // the reviews routes change.
    let relabelled = base.replace("app: reviews, version: v3", "app: reviews, version: v1");
    let changed = apply(&mut builder, &first, &relabelled);
    assert_eq!(changed, [route_changed(REVIEWS)]);
    assert_eq!(
        v1_endpoints(builder.model()),
        [uid("bookinfo", "reviews-v1"), uid("bookinfo", "reviews-v3")]
    );

    // A new v1 pod joins; a pod moving its IP changes nothing at L7.
    let before = objects(&relabelled);
    let grown = relabelled.clone()
        + &pod(
            "reviews-v1b",
            "bookinfo",
            "app: reviews, version: v1",
            "10.1.0.9",
        );
    assert_eq!(
        apply(&mut builder, &before, &grown),
        [route_changed(REVIEWS)]
    );
    let before = objects(&grown);
    let moved = grown.replace("10.1.0.9", "10.1.0.10");
    assert_eq!(apply(&mut builder, &before, &moved), []);

    // A VirtualService change pushes only its own host's RouteConfig.
    let before = objects(&moved);
    let rerouted = moved
        .replace("weight: 90", "weight: 50")
        .replace("weight: 10", "weight: 50");
    assert_eq!(
        apply(&mut builder, &before, &rerouted),
        [route_changed(REVIEWS)]
    );

    // The DestinationRule's subset labels change: its policy and the
    // routes that use its subsets.
    let before = objects(&rerouted);
    let redefined = rerouted.replace(
        "{name: v3, labels: {version: v3}}",
        "{name: v3, labels: {version: v2}}",
    );
    assert_eq!(
        apply(&mut builder, &before, &redefined),
        [
            (DESTINATION_POLICY_TYPE_URL, REVIEWS.to_string()),
            route_changed(REVIEWS)
        ]
    );

    // The reviews Service goes: its route and policy are removed, and
    // ratings (unrelated) is untouched.
    let before = objects(&redefined);
    let gone = redefined.replace(
        "metadata: {name: reviews, namespace: bookinfo}\nspec:\n  selector",
        "metadata: {name: reviews-renamed, namespace: bookinfo}\nspec:\n  selector",
    );
    let changed = apply(&mut builder, &before, &gone);
    assert!(changed.contains(&route_changed(REVIEWS)), "{changed:?}");
    assert!(changed.contains(&(DESTINATION_POLICY_TYPE_URL, REVIEWS.to_string())));
    assert!(!changed.contains(&route_changed(
        "bookinfo/ratings.bookinfo.svc.cluster.local"
    )));
    assert!(builder.model().routes.get(REVIEWS).is_none());
}

#[test]
fn a_destination_service_appearing_resolves_routes_that_named_it() {
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: details}}]}]
"#;
    let base = bookinfo() + vs;
    let first = objects(&base);
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&first));
    let service = |m: &Model| {
        route(m, "bookinfo/ratings.bookinfo.svc.cluster.local").http[0].route[0]
            .destination
            .as_ref()
            .unwrap()
            .service
            .clone()
    };
    assert_eq!(service(builder.model()), "");
    let details = base.clone()
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: bookinfo}\nspec: {selector: {app: details}, ports: [{port: 80}]}\n";
    let changed = apply(&mut builder, &first, &details);
    assert_eq!(
        changed,
        [route_changed("bookinfo/ratings.bookinfo.svc.cluster.local")]
    );
    assert_eq!(
        service(builder.model()),
        "bookinfo/details.bookinfo.svc.cluster.local"
    );
}

#[test]
fn source_labels_follow_pods() {
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {canary: "yes"}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    let base = bookinfo() + REVIEWS_DR + vs;
    let first = objects(&base);
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&first));
    let sources = |m: &Model| {
        route(m, REVIEWS).http[0].r#match[0]
            .source_workloads
            .clone()
    };
    assert_eq!(sources(builder.model()), [uid("front", "client")]);
    let more = base.replace("app: other", "app: other, canary: 'yes'");
    assert_eq!(apply(&mut builder, &first, &more), [route_changed(REVIEWS)]);
    assert_eq!(
        sources(builder.model()),
        [uid("front", "client"), uid("front", "other")]
    );
}

#[test]
fn editing_a_delegate_recompiles_the_hosts_of_its_roots() {
    let root = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api}}]
    delegate: {name: api, namespace: team}
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    let ratings_vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
"#;
    let delegate = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}}]
"#;
    let base = bookinfo() + REVIEWS_DR + root + ratings_vs;
    // The root comes first, its delegate later.
    let first = objects(&base);
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&first));
    assert_eq!(route(builder.model(), REVIEWS).http.len(), 1);

    let with_delegate = base.clone() + delegate;
    assert_eq!(
        apply(&mut builder, &first, &with_delegate),
        [route_changed(REVIEWS)]
    );
    let subsets = |m: &Model| {
        route(m, REVIEWS)
            .http
            .iter()
            .map(|h| h.route[0].destination.as_ref().unwrap().subset.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(subsets(builder.model()), ["v2", "v1"]);

    // Only the delegate changes: the root's host is pushed, nothing else.
    let before = objects(&with_delegate);
    let edited = with_delegate.replace("subset: v2}}]\n", "subset: v3}}]\n");
    assert_ne!(edited, with_delegate);
    assert_eq!(
        apply(&mut builder, &before, &edited),
        [route_changed(REVIEWS)]
    );
    assert_eq!(subsets(builder.model()), ["v3", "v1"]);

    // Exported to the root's namespace by name: the same routes. Then
    // not exported to it.
    let before = objects(&edited);
    let exported = edited.replace(
        "metadata: {name: api, namespace: team}\nspec:\n",
        "metadata: {name: api, namespace: team}\nspec:\n  exportTo: [bookinfo]\n",
    );
    assert_ne!(exported, edited);
    assert_eq!(apply(&mut builder, &before, &exported), []);
    let before = objects(&exported);
    let hidden = exported.replace("exportTo: [bookinfo]", "exportTo: [.]");
    assert_eq!(
        apply(&mut builder, &before, &hidden),
        [route_changed(REVIEWS)]
    );
    assert_eq!(subsets(builder.model()), ["v1"]);

    // (Each builder below starts afresh: a model version seen before, as
    // when the routes are back to those of `base`, confuses
    // `changed_since`.)
    // The delegate goes.
    let first = objects(&edited);
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&first));
    assert_eq!(apply(&mut builder, &first, &base), [route_changed(REVIEWS)]);
    assert_eq!(subsets(builder.model()), ["v1"]);

    // Once the root no longer delegates, the delegate is nothing to it.
    let first = objects(&with_delegate);
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&first));
    let undelegated = |y: &str| {
        y.replace(
            "  - match: [{uri: {prefix: /api}}]\n    delegate: {name: api, namespace: team}\n",
            "",
        )
    };
    let plain = undelegated(&with_delegate);
    assert_eq!(
        apply(&mut builder, &first, &plain),
        [route_changed(REVIEWS)]
    );
    let before = objects(&plain);
    assert_eq!(apply(&mut builder, &before, &undelegated(&edited)), []);
}

#[test]
fn the_mesh_default_retry_policy_reaches_every_route_without_its_own() {
    use weft_proto::MESH_DEFAULT_ROUTE;
    let mesh = |policy: &str| {
        format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    defaultHttpRetryPolicy: {policy}\n"
        )
    };
    // The canary's first route keeps its own retries; the second has none.
    let own = CANARY_VS.replace(
        "    route: [{destination: {host: reviews, subset: v2}}]\n",
        "    route: [{destination: {host: reviews, subset: v2}}]\n    retries: {attempts: 5}\n",
    );
    assert_ne!(own, CANARY_VS);
    let base = bookinfo() + REVIEWS_DR + &own;
    let first = objects(&base);
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&first));
    let attempts = |m: &Model| {
        route(m, REVIEWS)
            .http
            .iter()
            .map(|h| h.retries.as_ref().map(|r| (r.attempts, r.retry_on.clone())))
            .collect::<Vec<_>>()
    };
    assert_eq!(attempts(builder.model()), [Some((5, String::new())), None]);
    assert!(builder.model().routes.get(MESH_DEFAULT_ROUTE).is_none());

    // The mesh's policy: every host's routes are compiled again, and the
    // default route's RouteConfig appears.
    let with_mesh =
        base.clone() + &mesh("{attempts: 3, retryOn: 5xx, retryIgnorePreviousHosts: false}");
    let changed = apply(&mut builder, &first, &with_mesh);
    assert_eq!(
        changed,
        [route_changed(REVIEWS), route_changed(MESH_DEFAULT_ROUTE)]
    );
    assert_eq!(
        attempts(builder.model()),
        [Some((5, String::new())), Some((3, "5xx".into()))]
    );
    let default = route(builder.model(), MESH_DEFAULT_ROUTE);
    assert_eq!(default.http.len(), 1);
    let retries = default.http[0].retries.as_ref().unwrap();
    assert_eq!((retries.attempts, retries.retry_on.as_str()), (3, "5xx"));
    assert_eq!(retries.retry_ignore_previous_hosts, Some(false));

    // Another policy: the same again; none: Istio's default back, the
    // default route's RouteConfig gone.
    let before = objects(&with_mesh);
    let off = base.clone() + &mesh("{attempts: 0}");
    assert_eq!(
        apply(&mut builder, &before, &off),
        [route_changed(REVIEWS), route_changed(MESH_DEFAULT_ROUTE)]
    );
    assert_eq!(
        attempts(builder.model()),
        [Some((5, String::new())), Some((0, String::new()))]
    );
    let before = objects(&off);
    assert_eq!(
        apply(&mut builder, &before, &base),
        [route_changed(REVIEWS), route_changed(MESH_DEFAULT_ROUTE)]
    );
    assert_eq!(attempts(builder.model()), [Some((5, String::new())), None]);
    assert!(builder.model().routes.get(MESH_DEFAULT_ROUTE).is_none());
}

#[test]
fn the_mesh_inbound_retry_policy_is_its_own_route_config_and_recompiles_nothing() {
    use weft_proto::MESH_INBOUND_ROUTE;
    let mesh = |policy: &str| {
        format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    defaultInboundHttpRetryPolicy: {policy}\n"
        )
    };
    let base = bookinfo() + REVIEWS_DR + CANARY_VS;
    let first = objects(&base);
    let mut builder = Builder::new(config());
    builder.update(Delta::Full(&first));
    assert!(builder.model().routes.get(MESH_INBOUND_ROUTE).is_none());

    // Set: only its own RouteConfig changes (no host's routes carry it).
    let with_mesh = base.clone() + &mesh("{attempts: 4, retryOn: connect-failure, backoff: 5ms}");
    assert_eq!(
        apply(&mut builder, &first, &with_mesh),
        [route_changed(MESH_INBOUND_ROUTE)]
    );
    let inbound = route(builder.model(), MESH_INBOUND_ROUTE);
    let retries = inbound.http[0].retries.as_ref().unwrap();
    assert_eq!(
        (retries.attempts, retries.retry_on.as_str()),
        (4, "connect-failure")
    );
    assert_eq!(retries.backoff.as_ref().map(|b| b.nanos), Some(5_000_000));

    // Turned off (`attempts: 0` is carried, for the agents to read as
    // none), then unset: gone, Istio's default again.
    let before = objects(&with_mesh);
    let off = base.clone() + &mesh("{attempts: 0}");
    assert_eq!(
        apply(&mut builder, &before, &off),
        [route_changed(MESH_INBOUND_ROUTE)]
    );
    assert_eq!(
        route(builder.model(), MESH_INBOUND_ROUTE).http[0]
            .retries
            .as_ref()
            .map(|r| r.attempts),
        Some(0)
    );
    let before = objects(&off);
    assert_eq!(
        apply(&mut builder, &before, &base),
        [route_changed(MESH_INBOUND_ROUTE)]
    );
    assert!(builder.model().routes.get(MESH_INBOUND_ROUTE).is_none());
}
