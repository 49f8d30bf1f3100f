//! Kubernetes mode against the API-server stand-in (`weft-apiserver`:
//! HTTPS on loopback, list/watch with resourceVersions, bookmarks,
//! in-stream `410 Gone`): objects reach agents over xDS as in directory
//! mode, and relists, dropped watches and an API-server restart push
//! nothing that did not change.

mod common;

use std::time::Duration;

use common::{kube::*, *};
use serde_json::{Value, json};
use weft_apiserver::{ApiServer, Options};

/// Waits until `pods` has been listed more than `lists` times and the
/// source is synced again.
async fn relisted(cp: &ControlPlane, lists: u64) {
    eventually("the pods relist", || async {
        let syncz = syncz(cp).await;
        let pods = resource(&syncz, "pods");
        (pods["lists"].as_u64()? > lists && syncz["source"]["synced"] == true).then_some(())
    })
    .await;
}

/// Nothing arrives on the stream for a while.
async fn quiet(xds: &mut XdsSession) {
    match tokio::time::timeout(Duration::from_millis(700), xds.recv()).await {
        Err(_) => {}
        Ok(response) => panic!("a push that nothing changed: {response:?}"),
    }
}

#[tokio::test]
async fn objects_in_the_api_reach_agents_and_changes_are_pushed() {
    let api = api_server(Options::default()).await;
    let cp = control_plane(&api).await;
    let syncz = syncz(&cp).await;
    assert_eq!(syncz["source"]["mode"], "kubernetes");
    assert_eq!(resource(&syncz, "pods")["version"], "v1");
    assert_eq!(
        resource(&syncz, "virtualservices.networking.istio.io")["version"],
        "v1"
    );

    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    let first = xds.recv_and_ack().await;
    assert_eq!(names(&first), [uid("a"), WEB_SVC_NAME.to_string()]);

    api.apply(api_pod("b", "10.1.0.2"));
    assert_eq!(names(&xds.recv_and_ack().await), [uid("b")]);

    assert!(api.delete("v1", "Pod", Some("mesh"), "b"));
    assert_eq!(xds.recv_and_ack().await.removed_resources, [uid("b")]);

    // A change that agents do not see (a label no selector reads) is no push.
    let mut relabelled = api_pod("a", "10.1.0.1");
    relabelled["metadata"]["labels"]["unrelated"] = json!("x");
    api.apply(relabelled);
    quiet(&mut xds).await;

    api.apply(api_pod("a", "10.1.0.9"));
    assert_eq!(names(&xds.recv_and_ack().await), [uid("a")]);
}

#[tokio::test]
async fn relists_dropped_watches_and_restarts_push_only_real_changes() {
    let api = api_server(Options::default()).await;
    api.apply(api_pod("b", "10.1.0.2"));
    let cp = control_plane(&api).await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    xds.recv_and_ack().await;
    let version = cp.handle.model().borrow().version.clone();
    let lists = resource(&syncz(&cp).await, "pods")["lists"]
        .as_u64()
        .unwrap();

    // 410 Gone inside every watch: everything is listed again, nothing
    // changed, nothing is pushed.
    api.compact();
    relisted(&cp, lists).await;
    quiet(&mut xds).await;
    assert_eq!(cp.handle.model().borrow().version, version);

    // Watches cut mid-stream resume from their resourceVersion.
    api.drop_watches();
    api.apply(api_pod("c", "10.1.0.3"));
    assert_eq!(names(&xds.recv_and_ack().await), [uid("c")]);

    // The API server goes away; what changes meanwhile arrives after it
    // comes back, and only that.
    let lists = resource(&syncz(&cp).await, "pods")["lists"]
        .as_u64()
        .unwrap();
    api.stop().await;
    assert!(api.delete("v1", "Pod", Some("mesh"), "b"));
    api.apply(api_pod("d", "10.1.0.4"));
    api.compact();
    api.restart().await.unwrap();
    relisted(&cp, lists).await;
    let mut added = Vec::new();
    let mut removed = Vec::new();
    while added.is_empty() || removed.is_empty() {
        let response = xds.recv_and_ack().await;
        added.extend(names(&response));
        removed.extend(response.removed_resources);
    }
    assert_eq!((added, removed), (vec![uid("d")], vec![uid("b")]));
    quiet(&mut xds).await;
}

#[tokio::test]
async fn a_rejected_object_keeps_its_last_good_version() {
    let api = api_server(Options::default()).await;
    let route = |weight: u32| {
        json!({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "mesh"},
            "spec": {"hosts": ["web"], "http": [{"route": [
                {"destination": {"host": "web"}, "weight": weight}]}]},
        })
    };
    api.apply(route(100));
    let cp = control_plane(&api).await;
    let good = cp.handle.model().borrow().version.clone();
    let (_, errors) = cp.debug_get("/debug/config_errors").await;
    assert_eq!(errors.trim(), "[]");

    api.apply(route(101));
    let errors = eventually("the rejection in /debug/config_errors", || async {
        let (_, body) = cp.debug_get("/debug/config_errors").await;
        let errors: Value = serde_json::from_str(&body).unwrap();
        (errors.as_array()?.len() == 1).then_some(errors)
    })
    .await;
    assert_eq!(
        errors[0]["file"],
        "/apis/networking.istio.io/v1/namespaces/mesh/virtualservices/web"
    );
    assert_eq!(errors[0]["path"], "spec.http[0].route");
    assert_eq!(errors[0]["object"], "VirtualService mesh/web");
    assert_eq!(
        cp.handle.model().borrow().version,
        good,
        "the last good version serves"
    );

    // Deleted: the error and the route go.
    api.delete(
        "networking.istio.io/v1",
        "VirtualService",
        Some("mesh"),
        "web",
    );
    eventually("the route removed", || async {
        (cp.handle.model().borrow().version != good).then_some(())
    })
    .await;
    let (_, errors) = cp.debug_get("/debug/config_errors").await;
    assert_eq!(errors.trim(), "[]");
}

#[tokio::test]
async fn a_missing_crd_is_empty_until_it_is_installed() {
    let api = api_server(Options {
        istio_crds: false,
        ..Options::default()
    })
    .await;
    let cp = control_plane(&api).await;
    let syncz = syncz(&cp).await;
    let vs = resource(&syncz, "virtualservices.networking.istio.io");
    assert_eq!(
        (vs["synced"].as_bool(), vs["absent"].as_bool()),
        (Some(true), Some(true))
    );
    let version = cp.handle.model().borrow().version.clone();

    api.serve_resource(weft_apiserver::Resource {
        group: "security.istio.io".into(),
        versions: vec!["v1".into()],
        plural: "authorizationpolicies".into(),
        kind: "AuthorizationPolicy".into(),
        namespaced: true,
    });
    api.apply(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "mesh"},
        "spec": {},
    }));
    eventually("the policy from the new CRD", || async {
        (cp.handle.model().borrow().authorizations.len() == 1).then_some(())
    })
    .await;
    assert_ne!(cp.handle.model().borrow().version, version);
    let syncz = self::syncz(&cp).await;
    assert_eq!(
        resource(&syncz, "authorizationpolicies.security.istio.io")["absent"],
        false
    );
}

#[tokio::test]
async fn agents_wait_while_the_api_server_is_unreachable() {
    let api = api_server(Options::default()).await;
    api.stop().await;
    let cp = unsynced_control_plane(&api, ApiServer::ADMIN_TOKEN).await;
    let (code, body) = cp.debug_get("/ready").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not ready: the CA is not loaded"), "{body}");
    let syncz = syncz(&cp).await;
    assert_eq!(syncz["source"]["synced"], false);

    api.restart().await.unwrap();
    eventually("/ready once the API server is back", || async {
        (cp.debug_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    assert_eq!(
        names(&xds.recv_and_ack().await),
        [uid("a"), WEB_SVC_NAME.to_string()]
    );
}

#[tokio::test]
async fn refused_credentials_are_reported_and_nothing_is_served() {
    let api = api_server(Options::default()).await;
    let cp = unsynced_control_plane(&api, "not-a-token").await;
    let error = eventually("the 401 in /debug/syncz", || async {
        let syncz = syncz(&cp).await;
        resource(&syncz, "pods")["error"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    assert!(error.contains("401"), "{error}");
    assert_eq!(cp.debug_get("/ready").await.0, 503);
}

#[tokio::test]
async fn the_root_namespaces_istio_config_map_is_the_mesh_config_and_applies_live() {
    let api = api_server(Options::default()).await;
    let mesh_config = |namespace: &str, mesh: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": namespace},
            "data": {"mesh": mesh},
        })
    };
    let provider = |port: u16| {
        format!(
            "accessLogFile: /dev/stdout\nextensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa.mesh.svc.cluster.local\n    port: {port}\n"
        )
    };
    api.apply(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "ext", "namespace": "mesh"},
        "spec": {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]},
    }));
    // Neither another namespace's `istio` nor a sibling ConfigMap counts.
    api.apply(mesh_config("mesh", &provider(1)));
    let cp = control_plane(&api).await;
    let ext_authz_port = || {
        let model = cp.handle.model().borrow().clone();
        let authorization = model.authorizations.get("mesh/ext")?.authorization()?;
        authorization.ext_authz.map(|e| e.port)
    };
    assert_eq!(ext_authz_port(), None, "no provider `opa` yet");

    api.apply(mesh_config("istio-system", &provider(9191)));
    eventually("the provider from the ConfigMap", || async {
        (ext_authz_port() == Some(9191)).then_some(())
    })
    .await;

    // A broken edit is refused with its field; the last good one serves.
    api.apply(mesh_config(
        "istio-system",
        "extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa, port: 9191, statusOnError: nope}\n",
    ));
    let errors = eventually("the rejection in /debug/config_errors", || async {
        let (_, body) = cp.debug_get("/debug/config_errors").await;
        let errors: Value = serde_json::from_str(&body).unwrap();
        (errors.as_array()?.len() == 1).then_some(errors)
    })
    .await;
    assert_eq!(errors[0]["object"], "ConfigMap istio-system/istio");
    assert_eq!(errors[0]["path"], "data.mesh");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("statusOnError"),
        "{errors}"
    );
    assert_eq!(ext_authz_port(), Some(9191));

    api.apply(mesh_config("istio-system", &provider(9292)));
    eventually("the edited provider", || async {
        (ext_authz_port() == Some(9292)).then_some(())
    })
    .await;
    // Deleted: back to the `--mesh-config` file's (here: none).
    assert!(api.delete("v1", "ConfigMap", Some("istio-system"), "istio"));
    eventually("the provider gone with the ConfigMap", || async {
        (ext_authz_port().is_none()).then_some(())
    })
    .await;
    let syncz = syncz(&cp).await;
    assert_eq!(resource(&syncz, "configmaps")["synced"], true);
}
