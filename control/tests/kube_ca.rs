//! Kubernetes mode: the CA's key lives in the cluster as Istio keeps it. A
//! self-signed root is stored in `istio-ca-secret` by the first replica
//! and used by every other; a plugged CA in `cacerts` wins; the root is
//! published to every namespace as the `istio-ca-root-cert` ConfigMap.

mod common;

use base64::Engine;
use common::{kube::*, *};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;
use weft_apiserver::{ApiServer, Options};

fn trust_bundle(cp: &ControlPlane) -> String {
    std::fs::read_to_string(cp.handle.trust_bundle_path()).unwrap()
}

fn secret_value(api: &ApiServer, name: &str, key: &str) -> Option<String> {
    let secret = api.get("v1", "Secret", Some("istio-system"), name)?;
    let encoded = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(String::from_utf8(bytes).unwrap())
}

/// Waits for `istio-ca-root-cert` in `namespace`; its `root-cert.pem`.
async fn published_root(api: &ApiServer, namespace: &str) -> String {
    eventually(&format!("istio-ca-root-cert in {namespace}"), || async {
        let configmap = api.get("v1", "ConfigMap", Some(namespace), "istio-ca-root-cert")?;
        configmap["data"]["root-cert.pem"]
            .as_str()
            .map(str::to_string)
    })
    .await
}

#[tokio::test]
async fn replicas_share_the_root_stored_by_the_first() {
    let api = api_server(Options::default()).await;
    let first = control_plane(&api).await;
    let stored = secret_value(&api, "istio-ca-secret", "ca-cert.pem").expect("the root is stored");
    assert_eq!(trust_bundle(&first).trim(), stored.trim());

    // A second replica (or a restart on a new node: an empty state
    // directory) signs with the same root.
    let second = control_plane(&api).await;
    assert_eq!(trust_bundle(&second), trust_bundle(&first));
    second
        .ca_client(&second.token("node-1"))
        .await
        .create_certificate(ca_request("spiffe://cluster.local/ns/mesh/sa/web", None))
        .await
        .expect("the second replica signs");

    // Every namespace gets the root, new ones too.
    assert_eq!(published_root(&api, "mesh").await, trust_bundle(&first));
    assert_eq!(published_root(&api, "default").await, trust_bundle(&first));
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "late"}}));
    assert_eq!(published_root(&api, "late").await, trust_bundle(&first));
}

#[tokio::test]
async fn a_plugged_ca_in_cacerts_wins() {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "corp root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = params.self_signed(&key).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    let api = api_server(Options::default()).await;
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "data": {
            "ca-cert.pem": b64(&root.pem()),
            "ca-key.pem": b64(&key.serialize_pem()),
            "root-cert.pem": b64(&root.pem()),
            "cert-chain.pem": b64(&root.pem()),
        },
    }));
    let cp = control_plane(&api).await;
    assert_eq!(trust_bundle(&cp).trim(), root.pem().trim());
    assert!(
        api.get("v1", "Secret", Some("istio-system"), "istio-ca-secret")
            .is_none(),
        "no self-signed root is made when one is plugged"
    );
    assert_eq!(published_root(&api, "mesh").await.trim(), root.pem().trim());
}
