//! Directory mode end to end: hot reload, rejected files with their line,
//! the last good version serving on, and the debug endpoints.

mod common;

use common::*;
use serde_json::Value;

/// The seed's DestinationRule, as printed (no space after `kind:`).
const SEED_DESTINATION_RULE: &str = "apiVersion: networking.istio.io/v1alpha3
kind:DestinationRule
metadata:
name:my-service
spec:
host:my-service.default.svc.cluster.local
trafficPolicy:
    loadBalancer:
      simple:ROUND_ROBIN
";

async fn config_errors(cp: &ControlPlane) -> Vec<Value> {
    let (code, body) = cp.debug_get("/debug/config_errors").await;
    assert_eq!(code, 200);
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn malformed_file_keeps_its_last_good_version_while_the_rest_applies() {
    let cp = ControlPlane::start(&[
        ("ns.yaml", MESH_NS),
        ("pods.yaml", &pod("a", "node-1", "web", "10.1.0.1")),
    ])
    .await;
    let (code, body) = cp.debug_get("/ready").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let mut xds = cp.subscribe("node-1", &[]).await.unwrap();
    assert_eq!(names(&xds.recv_and_ack().await), [uid("a")]);

    // pods.yaml breaks: pod a gets a bad IP (it would have moved), a new
    // pod c has a glued key, pod d is fine; another file adds b.
    let broken = format!(
        "{}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name:c\n---\n{}",
        pod("a", "node-1", "web", "10.1.0.300"),
        pod("d", "node-1", "web", "10.1.0.4"),
    );
    cp.write("pods.yaml", &broken);
    cp.write("other/b.yaml", &pod("b", "node-1", "web", "10.1.0.2"));

    let mut seen = Vec::new();
    while !(seen.contains(&uid("b")) && seen.contains(&uid("d"))) {
        let response = xds.recv_and_ack().await;
        assert!(response.removed_resources.is_empty(), "{response:?}");
        seen.extend(names(&response));
    }
    assert!(
        !seen.contains(&uid("a")),
        "pod a keeps its last good version"
    );
    let model = cp.handle.model();
    let a = model.borrow().resources[&uid("a")].address().unwrap();
    let Some(weft_proto::workload::address::Type::Workload(a)) = a.r#type else {
        panic!("a is a workload");
    };
    assert_eq!(a.addresses, vec![vec![10, 1, 0, 1]]);

    let errors = config_errors(&cp).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["file"], "pods.yaml");
    let line_of_ip = broken
        .lines()
        .position(|l| l.contains("10.1.0.300"))
        .unwrap()
        + 1;
    assert_eq!(errors[0]["line"], line_of_ip);
    assert_eq!(errors[0]["object"], "Pod mesh/a");
    assert_eq!(errors[0]["path"], "status.podIP");
    let line_of_glued = broken.lines().position(|l| l == "  name:c").unwrap() + 1;
    assert_eq!(errors[1]["line"], line_of_glued);
    assert_eq!(errors[1]["column"], 3);
    assert!(
        errors[1]["message"]
            .as_str()
            .unwrap()
            .contains("no space after ':'")
    );

    // Fixed: the new version applies and the error goes away.
    cp.write("pods.yaml", &pod("a", "node-1", "web", "10.1.0.99"));
    let fixed = xds.recv_and_ack().await;
    assert_eq!(names(&fixed), [uid("a")]);
    eventually("the error to clear", || async {
        config_errors(&cp).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn seed_destination_rule_is_rejected_at_its_line() {
    let cp = ControlPlane::start(&[
        ("ns.yaml", MESH_NS),
        (
            "istio.yaml",
            &format!("# from the interview guide\n---\n{SEED_DESTINATION_RULE}"),
        ),
    ])
    .await;
    let errors = config_errors(&cp).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["file"], "istio.yaml");
    assert_eq!(errors[0]["line"], 4, "the `kind:DestinationRule` line");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("`kind:DestinationRule`"), "{message}");

    // The corrected version loads (and is ignored until Istio kinds land).
    cp.write(
        "istio.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: my-service\nspec:\n  host: my-service.default.svc.cluster.local\n",
    );
    eventually("the corrected file to be accepted", || async {
        config_errors(&cp).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn debug_endpoints() {
    let cp = ControlPlane::start(&[("ns.yaml", MESH_NS), ("svc.yaml", WEB_SVC)]).await;
    let (code, body) = cp.debug_get("/debug/config").await;
    assert_eq!(code, 200);
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["trust_domain"], "cluster.local");
    assert_eq!(config["ca"], "generate");

    let (code, body) = cp.debug_get("/debug/resources").await;
    assert_eq!(code, 200);
    let resources: Value = serde_json::from_str(&body).unwrap();
    assert!(
        resources[weft_proto::ADDRESS_TYPE_URL][WEB_SVC_NAME].is_string(),
        "{resources}"
    );
    assert!(resources[weft_proto::AUTHORIZATION_TYPE_URL].is_object());
    // The root namespace always has a MetricsPolicy (Istio's default
    // provider, prometheus).
    assert!(
        resources[weft_proto::METRICS_POLICY_TYPE_URL]["istio-system"].is_string(),
        "{resources}"
    );

    // The web service's port `http` is fine; nothing references a
    // missing host: no findings.
    let (code, body) = cp.debug_get("/debug/analysis").await;
    assert_eq!((code, body.trim()), (200, "[]"));

    assert_eq!(cp.debug_get("/nope").await.0, 404);
    let (code, body) = cp.debug_get("/debug/syncz").await;
    let syncz: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, syncz),
        (
            200,
            serde_json::json!({"source": {"mode": "directory", "synced": true}, "agents": []})
        )
    );
}
