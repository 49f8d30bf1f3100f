//! Reads and writes through kube-rs: typed and dynamic APIs, selectors,
//! paging, errors, server-side apply, optimistic concurrency, CRDs and
//! TokenReview.

mod common;

use std::collections::BTreeMap;

use common::{api_code, client, client_with_token, eventually, server};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;
use serde_json::json;
use weft_apiserver::TokenInfo;

fn pod(name: &str, app: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    items
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn typed_pods_create_get_list_with_selectors() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(client(&server).await, "default");
    let created = pods
        .create(&PostParams::default(), &pod("a", "web", "node-1"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(
        meta.uid.as_deref().is_some_and(|u| u.len() == 36),
        "uid filled: {meta:?}"
    );
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let rv_a: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    pods.create(&PostParams::default(), &pod("b", "db", "node-1"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("c", "web", "node-2"))
        .await
        .unwrap();

    let fetched = pods.get("a").await.unwrap();
    assert_eq!(fetched.spec.unwrap().node_name.as_deref(), Some("node-1"));

    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(names(&web.items), ["a", "c"]);
    let list_rv: u64 = web.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        list_rv >= rv_a + 2,
        "list rv {list_rv} is the global counter after three creates"
    );
    let not_web = pods
        .list(&ListParams::default().labels("app notin (web)"))
        .await
        .unwrap();
    assert_eq!(names(&not_web.items), ["b"]);
    let on_node1 = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap();
    assert_eq!(names(&on_node1.items), ["a", "b"]);
    let both = ListParams::default()
        .labels("app=web")
        .fields("spec.nodeName!=node-1");
    assert_eq!(names(&pods.list(&both).await.unwrap().items), ["c"]);

    // A duplicate name is 409 AlreadyExists; a missing object is 404.
    assert_eq!(
        api_code(
            pods.create(&PostParams::default(), &pod("a", "x", "n"))
                .await
        ),
        409
    );
    assert_eq!(api_code(pods.get("nope").await), 404);

    // All-namespace list through the cluster path; the stored object is there too.
    let all: Api<Pod> = Api::all(client(&server).await);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    assert!(server.get("v1", "Pod", Some("default"), "b").is_some());

    // Delete returns the object and removes it.
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_code(pods.get("b").await), 404);
    assert!(server.request_count("create") >= 4 && server.request_count("list") >= 5);
}

#[tokio::test]
async fn list_paging_over_five_objects() {
    let server = server().await;
    for i in 0..5 {
        server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}"), "namespace": "paging"}}));
    }
    let maps: Api<ConfigMap> = Api::namespaced(client(&server).await, "paging");
    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(2);
    let mut pages = 0;
    let first_rv = loop {
        let page = maps.list(&params).await.unwrap();
        pages += 1;
        seen.extend(names(&page.items));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break page.metadata.resource_version.unwrap(),
        }
    };
    assert_eq!(pages, 3);
    assert_eq!(seen, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);
    assert!(!first_rv.is_empty());

    // A continue token from before a compaction is 410 Expired.
    let page = maps.list(&ListParams::default().limit(2)).await.unwrap();
    let token = page.metadata.continue_.unwrap();
    server.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later", "namespace": "paging"}}));
    server.compact();
    assert_eq!(
        api_code(
            maps.list(&ListParams::default().limit(2).continue_token(&token))
                .await
        ),
        410
    );
}

#[tokio::test]
async fn istio_object_written_via_v1beta1_reads_back_via_v1() {
    let server = server().await;
    let client = client(&server).await;
    let gvk =
        |version: &str| GroupVersionKind::gvk("networking.istio.io", version, "VirtualService");
    let beta: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk(&gvk("v1beta1")),
    );
    let v1: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk(&gvk("v1")),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]},
    }))
    .unwrap();
    beta.create(&PostParams::default(), &object).await.unwrap();
    let read = v1.get("reviews").await.unwrap();
    assert_eq!(
        read.types.as_ref().unwrap().api_version,
        "networking.istio.io/v1"
    );
    assert_eq!(read.data["spec"]["hosts"][0], "reviews");
    let listed = v1.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].types.as_ref().unwrap().api_version,
        "networking.istio.io/v1"
    );

    // Discovery sees the group with v1 preferred.
    let discovery = Discovery::new(client).run().await.unwrap();
    let group = discovery
        .groups()
        .find(|g| g.name() == "networking.istio.io")
        .expect("networking.istio.io discovered");
    assert_eq!(group.preferred_version_or_latest(), "v1");
}

#[tokio::test]
async fn missing_resource_is_404_and_bad_token_is_401() {
    let server = server().await;
    let gvk = GroupVersionKind::gvk("example.weft.dev", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::all_with(client(&server).await, &ApiResource::from_gvk(&gvk));
    assert_eq!(api_code(widgets.list(&ListParams::default()).await), 404);

    // Removing a served resource makes it 404 too; serving it again restores it.
    let telemetry = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "telemetry.istio.io",
        "v1",
        "Telemetry",
    ));
    let telemetries: Api<DynamicObject> = Api::all_with(client(&server).await, &telemetry);
    telemetries.list(&ListParams::default()).await.unwrap();
    server.remove_resource("telemetry.istio.io", "telemetries");
    assert_eq!(
        api_code(telemetries.list(&ListParams::default()).await),
        404
    );
    server.serve_resource(weft_apiserver::Resource {
        group: "telemetry.istio.io".into(),
        versions: vec!["v1".into()],
        plural: "telemetries".into(),
        kind: "Telemetry".into(),
        namespaced: true,
    });
    telemetries.list(&ListParams::default()).await.unwrap();

    let stranger: Api<Pod> =
        Api::namespaced(client_with_token(&server, "not-a-token").await, "default");
    match stranger.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 401);
            assert_eq!(status.reason, "Unauthorized");
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn token_review_authenticated_wrong_audience_unknown() {
    let server = server().await;
    server.add_token(
        "sa-token",
        TokenInfo {
            username: "system:serviceaccount:default:app".into(),
            uid: "uid-1".into(),
            groups: vec!["system:serviceaccounts".into()],
            audiences: vec!["weft".into(), "istio-ca".into()],
            ..TokenInfo::default()
        },
    );
    server.add_token(
        "old-token",
        TokenInfo {
            expired: true,
            ..TokenInfo::default()
        },
    );
    let reviews: Api<TokenReview> = Api::all(client(&server).await);
    let review = |token: &str, audiences: &[&str]| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        },
        ..TokenReview::default()
    };
    let ok = reviews
        .create(
            &PostParams::default(),
            &review("sa-token", &["weft", "other"]),
        )
        .await
        .unwrap();
    let status = ok.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:app")
    );
    assert_eq!(user.uid.as_deref(), Some("uid-1"));
    assert_eq!(user.groups.unwrap(), ["system:serviceaccounts"]);
    assert_eq!(status.audiences.unwrap(), ["weft"]);

    for (token, audiences) in [
        ("sa-token", &["kubernetes"][..]),
        ("unknown", &[][..]),
        ("old-token", &[][..]),
    ] {
        let denied = reviews
            .create(&PostParams::default(), &review(token, audiences))
            .await
            .unwrap();
        let status = denied.status.unwrap();
        assert_eq!(status.authenticated, Some(false), "{token} {audiences:?}");
        assert!(
            status.error.is_some_and(|e| !e.is_empty()),
            "{token} gets an error text"
        );
    }

    // A token added with add_token may call the API; an expired one may not.
    let pods: Api<Pod> = Api::namespaced(client_with_token(&server, "sa-token").await, "default");
    pods.list(&ListParams::default()).await.unwrap();
    let expired: Api<Pod> =
        Api::namespaced(client_with_token(&server, "old-token").await, "default");
    assert_eq!(api_code(expired.list(&ListParams::default()).await), 401);
}

#[tokio::test]
async fn server_side_apply_creates_then_updates() {
    let server = server().await;
    let maps: Api<ConfigMap> = Api::namespaced(client(&server).await, "default");
    let params = PatchParams::apply("weft").force();
    let apply = |value: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mesh", "labels": {"v": value}}, "data": {"key": value}});
    let created = maps
        .patch("mesh", &params, &Patch::Apply(apply("1")))
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["key"], "1");
    let uid = created.metadata.uid.clone();
    let updated = maps
        .patch("mesh", &params, &Patch::Apply(apply("2")))
        .await
        .unwrap();
    assert_eq!(updated.data.unwrap()["key"], "2");
    assert_eq!(updated.metadata.uid, uid, "same object, updated in place");
    assert!(updated.metadata.resource_version > created.metadata.resource_version);

    // Merge and JSON patches too.
    let merged = maps
        .patch(
            "mesh",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"extra": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.as_ref().unwrap().len(), 2);
    // kube's Patch::Json needs a feature weft does not enable: send it raw.
    let request = http::Request::patch("/api/v1/namespaces/default/configmaps/mesh")
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(&json!([{"op": "remove", "path": "/data/extra"}])).unwrap())
        .unwrap();
    let patched: ConfigMap = client(&server).await.request(request).await.unwrap();
    assert_eq!(patched.data.unwrap().len(), 1);
    let labels: BTreeMap<String, String> = patched.metadata.labels.unwrap();
    assert_eq!(labels["v"], "2");
}

#[tokio::test]
async fn lease_replace_with_stale_resource_version_is_409() {
    let server = server().await;
    let leases: Api<Lease> = Api::namespaced(client(&server).await, "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "weft-control"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    let first = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut mine = first.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let second = leases
        .replace("weft-control", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_eq!(
        second.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );
    // `mine` still carries the first resourceVersion: a competing replace loses.
    let mut stale = first;
    stale.spec.as_mut().unwrap().holder_identity = Some("c".into());
    match leases
        .replace("weft-control", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409);
            assert_eq!(status.reason, "Conflict");
        }
        other => panic!("expected 409 Conflict, got {other:?}"),
    }
    let current = leases.get("weft-control").await.unwrap();
    assert_eq!(current.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn crd_create_registers_a_new_resource() {
    let server = server().await;
    let client = client(&server).await;
    let gvk = GroupVersionKind::gvk("example.weft.dev", "v1alpha1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
    assert_eq!(api_code(widgets.list(&ListParams::default()).await), 404);

    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.weft.dev"},
        "spec": {
            "group": "example.weft.dev",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1alpha1", "served": true, "storage": true}],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let widget: DynamicObject =
        serde_json::from_value(json!({"apiVersion": "example.weft.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}))
            .unwrap();
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    assert_eq!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // The Istio CRD objects are there too, as in a cluster with Istio installed.
    let all = crds.list(&ListParams::default()).await.unwrap();
    assert!(
        all.items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("virtualservices.networking.istio.io"))
    );

    crds.delete("widgets.example.weft.dev", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_code(widgets.list(&ListParams::default()).await), 404);
}

#[tokio::test]
async fn status_subresource_and_namespace_cascade() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(client(&server).await, "team");
    pods.create(&PostParams::default(), &pod("p", "web", "n"))
        .await
        .unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": "10.0.0.7"}});
    pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    // A write to the main resource keeps the stored status.
    let relabel = json!({"metadata": {"labels": {"app": "api"}}, "status": {"phase": "Failed"}});
    let after = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().phase.as_deref(), Some("Running"));
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(names(&running.items), ["p"]);

    // Deleting a namespace deletes what is in it.
    server.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client(&server).await);
    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    eventually("pods of the deleted namespace are gone", || {
        server.list("v1", "Pod").is_empty()
    })
    .await;
}
