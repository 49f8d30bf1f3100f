//! Kubernetes mode: agents prove their node with a projected
//! service-account token that the API server reviews (TokenReview,
//! audience istio-ca), and get certificates only for pods on that node.

mod common;

use common::{kube::*, *};
use serde_json::json;
use tonic::Code;
use weft_apiserver::{ApiServer, Options, TokenInfo};

const WEB_ID: &str = "spiffe://cluster.local/ns/mesh/sa/web";
const AGENT: &str = "system:serviceaccount:istio-system:weft-agent";

/// A service-account token of `username`, bound to `claims`
/// (`node-name`, `pod-name`), for `audiences`. Tokens are opaque to
/// weft-control: the stand-in's token table is what makes them valid.
fn token(
    api: &ApiServer,
    id: &str,
    username: &str,
    claims: &[(&str, &str)],
    audiences: &[&str],
) -> String {
    let token = format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.{id}");
    api.add_token(
        &token,
        TokenInfo {
            username: username.into(),
            uid: format!("uid-{id}"),
            groups: vec!["system:serviceaccounts".into()],
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            extra: claims
                .iter()
                .map(|(k, v)| {
                    (
                        format!("authentication.kubernetes.io/{k}"),
                        vec![v.to_string()],
                    )
                })
                .collect(),
            ..TokenInfo::default()
        },
    );
    token
}

async fn certificate(cp: &ControlPlane, token: &str) -> Result<(), tonic::Status> {
    cp.ca_client(token)
        .await
        .create_certificate(ca_request(WEB_ID, Some(WEB_ID)))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn an_agents_token_proves_its_node_and_only_that_node() {
    let api = api_server(Options::default()).await;
    // The agent pod on node-2, for a token bound to a pod only.
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "weft-agent-x7k2p", "namespace": "istio-system"},
        "spec": {"nodeName": "node-2", "serviceAccountName": "weft-agent", "containers": [{"name": "agent"}]},
    }));
    let cp = control_plane(&api).await;
    let node1 = token(&api, "n1", AGENT, &[("node-name", "node-1")], &["istio-ca"]);
    let node2 = token(
        &api,
        "n2",
        AGENT,
        &[("pod-name", "weft-agent-x7k2p")],
        &["istio-ca"],
    );

    // Pod `a` (mesh/web) runs on node-1.
    certificate(&cp, &node1)
        .await
        .expect("node-1's agent gets node-1's identities");
    let refused = certificate(&cp, &node2).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    assert!(
        refused.message().contains("node `node-2` runs no pod"),
        "the pod-bound token proved node-2: {refused}"
    );

    // The same token works for xDS.
    let mut xds = XdsSession::open(cp.xds_client(&node1).await, request("node-1"))
        .await
        .unwrap();
    let names = names(&xds.recv_and_ack().await);
    assert!(names.contains(&uid("a")), "{names:?}");
}

#[tokio::test]
async fn tokens_that_prove_nothing_are_refused() {
    let api = api_server(Options::default()).await;
    let cp = control_plane(&api).await;
    let node1 = [("node-name", "node-1")];
    let cases = [
        (
            "wrong audience",
            token(&api, "aud", AGENT, &node1, &["vault"]),
            Code::Unauthenticated,
        ),
        (
            "unknown",
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.forged".to_string(),
            Code::Unauthenticated,
        ),
        (
            "an app's service account",
            token(
                &api,
                "app",
                "system:serviceaccount:mesh:web",
                &node1,
                &["istio-ca"],
            ),
            Code::PermissionDenied,
        ),
        (
            "not bound to a pod",
            token(&api, "unbound", AGENT, &[], &["istio-ca"]),
            Code::PermissionDenied,
        ),
        (
            "bound to a pod that does not exist",
            token(&api, "ghost", AGENT, &[("pod-name", "gone")], &["istio-ca"]),
            Code::PermissionDenied,
        ),
    ];
    for (what, token, code) in cases {
        let refused = certificate(&cp, &token).await.expect_err(what);
        assert_eq!(refused.code(), code, "{what}: {refused}");
    }
    let expired = token(&api, "old", AGENT, &node1, &["istio-ca"]);
    api.add_token(
        &expired,
        TokenInfo {
            username: AGENT.into(),
            expired: true,
            ..TokenInfo::default()
        },
    );
    let refused = certificate(&cp, &expired).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "expired: {refused}");
    assert!(refused.message().contains("expired"), "{refused}");

    // Bootstrap tokens keep working in Kubernetes mode.
    certificate(&cp, &cp.token("node-1")).await.unwrap();
}
