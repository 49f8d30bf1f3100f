//! PeerAuthentication → Authorization and workload references, checked
//! against istiod's ambient conversion (its testdata cases).

use std::path::Path;

use weft_proto::security::{Action, Group, Match, Rules, Scope};

use super::*;
use crate::{
    kinds::Object,
    model::{ModelConfig, build},
    source::parse::parse_file,
};

const ROOT: &str = "istio-system";

fn pas(yaml: &str) -> Vec<PeerAuthentication> {
    parse_file(Path::new("t.yaml"), yaml)
        .expect("valid")
        .into_iter()
        .filter_map(|o| match o {
            Object::PeerAuthentication(p) => Some((*p).clone()),
            _ => None,
        })
        .collect()
}

fn pa(ns: &str, name: &str, selector: bool, mode: &str, ports: &[(u32, &str)]) -> String {
    let mut s = format!(
        "---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
    );
    if selector {
        s.push_str("  selector: {matchLabels: {app: a}}\n");
    }
    if !mode.is_empty() {
        s.push_str(&format!("  mtls: {{mode: {mode}}}\n"));
    }
    if !ports.is_empty() {
        s.push_str("  portLevelMtls:\n");
        for (p, m) in ports {
            s.push_str(&format!("    {p}: {{mode: {m}}}\n"));
        }
    }
    s
}

fn labels() -> BTreeMap<String, String> {
    [("app".to_string(), "a".to_string())].into()
}

/// (compiled policy names, keys of a workload `app=a` in `ns`).
fn run(yaml: &str) -> (Vec<Authorization>, Vec<String>) {
    let all = pas(yaml);
    let refs: Vec<&PeerAuthentication> = all.iter().collect();
    let index = PeerAuthIndex::new(&refs, ROOT);
    let compiled = index
        .compile()
        .into_iter()
        .map(|c| c.authorization)
        .collect();
    (compiled, index.workload_keys("ns", &labels()))
}

const STATIC: &str = "istio-system/istio_converted_static_strict";

fn deny_plaintext(ports: Vec<u32>) -> Rules {
    Rules {
        matches: vec![Match {
            not_principals: vec![weft_proto::security::StringMatch {
                match_type: Some(weft_proto::security::string_match::MatchType::Presence(())),
            }],
            destination_ports: ports,
            ..Default::default()
        }],
    }
}

fn not_port(port: u32) -> Rules {
    Rules {
        matches: vec![Match {
            not_destination_ports: vec![port],
            ..Default::default()
        }],
    }
}

#[test]
fn nothing_without_peer_authentication() {
    let (compiled, keys) = run("");
    assert!(compiled.is_empty());
    assert!(keys.is_empty());
}

#[test]
fn static_strict_policy_shape() {
    let (compiled, keys) = run(&pa(ROOT, "mesh", false, "STRICT", &[]));
    assert_eq!(compiled.len(), 1);
    let a = &compiled[0];
    assert_eq!(a.name, "istio_converted_static_strict");
    assert_eq!(a.namespace, ROOT);
    assert_eq!(a.scope, Scope::WorkloadSelector as i32);
    assert_eq!(a.action, Action::Deny as i32);
    assert_eq!(
        a.groups,
        vec![Group {
            rules: vec![deny_plaintext(vec![])],
            rule: None,
        }]
    );
    assert_eq!(keys, [STATIC]);
}

#[test]
fn precedence_workload_over_namespace_over_mesh() {
    // Mesh STRICT, namespace PERMISSIVE: not strict.
    let (_, keys) =
        run(&(pa(ROOT, "m", false, "STRICT", &[]) + &pa("ns", "n", false, "PERMISSIVE", &[])));
    assert!(keys.is_empty());
    // Namespace UNSET inherits the mesh's STRICT.
    let (_, keys) = run(&(pa(ROOT, "m", false, "STRICT", &[]) + &pa("ns", "n", false, "", &[])));
    assert_eq!(keys, [STATIC]);
    // Mesh PERMISSIVE, workload STRICT.
    let (_, keys) =
        run(&(pa(ROOT, "m", false, "PERMISSIVE", &[]) + &pa("ns", "w", true, "STRICT", &[])));
    assert_eq!(keys, [STATIC]);
    // Namespace STRICT, workload DISABLE.
    let (_, keys) =
        run(&(pa("ns", "n", false, "STRICT", &[]) + &pa("ns", "w", true, "DISABLE", &[])));
    assert!(keys.is_empty());
    // A namespace policy elsewhere does not apply.
    let (_, keys) = run(&pa("other", "n", false, "STRICT", &[]));
    assert!(keys.is_empty());
}

#[test]
fn strict_with_a_permissive_port() {
    // istiod testdata peer-authn-strict-and-permissive-port-mtls.
    let (compiled, keys) = run(&pa("ns", "w", true, "STRICT", &[(9090, "PERMISSIVE")]));
    let converted = compiled
        .iter()
        .find(|a| a.name == "converted_peer_authentication_w")
        .expect("converted");
    assert_eq!(converted.namespace, "ns");
    assert_eq!(converted.action, Action::Deny as i32);
    assert_eq!(
        converted.groups,
        vec![Group {
            rules: vec![deny_plaintext(vec![]), not_port(9090)],
            rule: None,
        }]
    );
    assert_eq!(
        keys,
        ["ns/converted_peer_authentication_w"],
        "instead of the static policy"
    );
}

#[test]
fn permissive_with_a_strict_port() {
    let (compiled, keys) = run(&pa("ns", "w", true, "PERMISSIVE", &[(8080, "STRICT")]));
    let converted = compiled
        .iter()
        .find(|a| a.name.starts_with("converted"))
        .unwrap();
    assert_eq!(
        converted.groups,
        vec![Group {
            rules: vec![deny_plaintext(vec![8080])],
            rule: None,
        }]
    );
    assert_eq!(keys, ["ns/converted_peer_authentication_w"]);
}

#[test]
fn unset_workload_under_strict_namespace_merges_strict() {
    let yaml = pa("ns", "n", false, "STRICT", &[])
        + &pa(
            "ns",
            "w",
            true,
            "",
            &[(9090, "PERMISSIVE"), (8080, "STRICT")],
        );
    let (compiled, keys) = run(&yaml);
    let converted = compiled
        .iter()
        .find(|a| a.name.starts_with("converted"))
        .unwrap();
    // 8080 STRICT is already covered by the inherited STRICT; 9090 is the
    // exception, with STRICT merged in.
    assert_eq!(
        converted.groups,
        vec![Group {
            rules: vec![not_port(9090), deny_plaintext(vec![])],
            rule: None,
        }]
    );
    assert_eq!(keys, ["ns/converted_peer_authentication_w"]);
}

#[test]
fn all_strict_ports_under_strict_is_plain_strict() {
    let (compiled, keys) = run(&pa("ns", "w", true, "STRICT", &[(8080, "STRICT")]));
    assert_eq!(compiled.len(), 1, "only the static policy");
    assert_eq!(keys, [STATIC]);
}

#[test]
fn oldest_namespace_policy_wins() {
    let yaml = pa("ns", "b", false, "STRICT", &[]).replace(
        "name: b,",
        "name: b, creationTimestamp: '2024-01-01T00:00:00Z',",
    ) + &pa("ns", "a", false, "PERMISSIVE", &[]).replace(
        "name: a,",
        "name: a, creationTimestamp: '2024-06-01T00:00:00Z',",
    );
    let (_, keys) = run(&yaml);
    assert_eq!(keys, [STATIC], "b is older");
}

#[test]
fn workloads_carry_the_keys_in_the_model() {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns, labels: {{app: a}}}}\nspec: {{nodeName: n}}\nstatus: {{podIP: 10.0.0.1}}\n{}",
        pa(ROOT, "m", false, "STRICT", &[])
    );
    let objects = parse_file(Path::new("t.yaml"), &yaml).unwrap();
    let m = build(
        &objects,
        &ModelConfig {
            cluster_id: "Kubernetes".into(),
            trust_domain: "cluster.local".into(),
            domain_suffix: "cluster.local".into(),
            root_namespace: ROOT.into(),
            mesh: Default::default(),
        },
    );
    let Some(weft_proto::workload::address::Type::Workload(w)) =
        m.resources["Kubernetes//Pod/ns/p"]
            .address()
            .unwrap()
            .r#type
    else {
        panic!("workload");
    };
    assert_eq!(w.authorization_policies, [STATIC]);
    assert!(m.authorizations.contains_key(STATIC));
}
