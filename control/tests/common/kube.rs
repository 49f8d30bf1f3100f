//! Kubernetes mode: the API-server stand-in (`weft-apiserver`) with a
//! mesh namespace, a Service and a pod, and a control plane watching it.

use serde_json::{Value, json};
use weft_apiserver::{ApiServer, Options};
use weft_control::{Config, config::ConfigSource};

use super::{ControlPlane, eventually};

/// The control plane in Kubernetes mode against `api`, once synced.
pub async fn control_plane(api: &ApiServer) -> ControlPlane {
    let cp = unsynced_control_plane(api, ApiServer::ADMIN_TOKEN).await;
    eventually("/ready", || async {
        (cp.debug_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    cp
}

/// The control plane in Kubernetes mode against `api`, with a kubeconfig
/// carrying `token`, as soon as it serves (before it has synced).
pub async fn unsynced_control_plane(api: &ApiServer, token: &str) -> ControlPlane {
    control_plane_with(api, token, |_| {}).await
}

/// Like [`unsynced_control_plane`], with `adjust` applied to the config.
pub async fn control_plane_with(
    api: &ApiServer,
    token: &str,
    adjust: impl FnOnce(&mut Config),
) -> ControlPlane {
    let config_dir = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let kubeconfig = state_dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, token).unwrap();
    let mut config = Config {
        source: ConfigSource::Kubernetes {
            kubeconfig: Some(kubeconfig),
        },
        ..Config::for_tests(config_dir.path(), state_dir.path())
    };
    adjust(&mut config);
    ControlPlane::start_with(config, config_dir, state_dir).await
}

pub async fn api_server(options: Options) -> ApiServer {
    let api = ApiServer::start(options)
        .await
        .expect("API-server stand-in starts");
    api.apply(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "mesh", "labels": {"istio.io/dataplane-mode": "ambient"}},
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "mesh"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }));
    api.apply(api_pod("a", "10.1.0.1"));
    api
}

pub fn api_pod(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "mesh", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "web",
                 "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"podIP": ip, "phase": "Running"},
    })
}

pub async fn syncz(cp: &ControlPlane) -> Value {
    let (code, body) = cp.debug_get("/debug/syncz").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The status of one watched resource in `/debug/syncz`.
pub fn resource<'a>(syncz: &'a Value, name: &str) -> &'a Value {
    syncz["source"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == name)
        .unwrap_or_else(|| panic!("{name} not in {syncz}"))
}
