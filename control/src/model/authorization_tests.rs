//! AuthorizationPolicy → Authorization, checked against istiod's
//! compilation for ztunnel.

use std::path::Path;

use weft_proto::security::{
    Action, Address, Authorization, Group, Match, Rules, Scope, ServiceAccountMatch,
    string_match::MatchType,
};

use super::*;
use crate::{
    kinds::Object,
    model::{Model, ModelConfig, build},
    source::parse::parse_file,
};

fn config() -> ModelConfig {
    ModelConfig {
        cluster_id: "Kubernetes".into(),
        trust_domain: "cluster.local".into(),
        domain_suffix: "cluster.local".into(),
        root_namespace: "istio-system".into(),
        mesh: Default::default(),
    }
}

fn model(yaml: &str) -> Model {
    build(
        &parse_file(Path::new("t.yaml"), yaml).expect("valid"),
        &config(),
    )
}

fn compiled(yaml: &str) -> (Option<CompiledAuthorization>, Vec<Finding>) {
    let objects = parse_file(Path::new("t.yaml"), yaml).expect("valid");
    let Some(Object::AuthorizationPolicy(p)) = objects.first() else {
        panic!("not a policy");
    };
    let mut findings = Vec::new();
    (compile(p, "istio-system", &mut findings), findings)
}

fn authz(yaml: &str) -> Authorization {
    compiled(yaml).0.expect("compiled").authorization
}

fn policy(ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: {ns}\nspec:\n{spec}"
    )
}

#[test]
fn scope_follows_selector_and_root_namespace() {
    let a = authz(&policy("mesh", "  action: DENY\n"));
    assert_eq!(a.scope, Scope::Namespace as i32);
    assert_eq!(a.action, Action::Deny as i32);
    assert_eq!((a.name.as_str(), a.namespace.as_str()), ("p", "mesh"));
    assert_eq!(
        authz(&policy("istio-system", "  {}\n")).scope,
        Scope::Global as i32
    );
    let selected = compiled(&policy(
        "mesh",
        "  selector:\n    matchLabels: {app: web}\n",
    ))
    .0
    .unwrap();
    assert_eq!(selected.authorization.scope, Scope::WorkloadSelector as i32);
    assert_eq!(selected.resource_name(), "mesh/p");
    // ALLOW with no rules: no groups, which allows nothing.
    assert!(selected.authorization.groups.is_empty());
    assert_eq!(selected.authorization.action, Action::Allow as i32);
}

#[test]
fn from_to_when_compile_like_istiod() {
    let a = authz(&policy(
        "mesh",
        r#"  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/mesh/sa/client", "*"]
        notNamespaces: ["bad*"]
        ipBlocks: ["10.0.0.0/8", "192.168.1.1"]
        notIpBlocks: ["10.1.0.0/16"]
        remoteIpBlocks: ["10.2.0.0/16", "203.0.113.0/24"]
    - source:
        serviceAccounts: ["web", "other/sa"]
    to:
    - operation:
        ports: ["8080"]
        notPorts: ["9090"]
    when:
    - key: destination.port
      values: ["80"]
    - key: source.namespace
      notValues: ["*-test"]
"#,
    ));
    assert_eq!(a.groups.len(), 1);
    let rules = &a.groups[0].rules;
    assert_eq!(rules.len(), 4, "to, from, and one per condition");
    assert_eq!(
        rules[0],
        Rules {
            matches: vec![Match {
                destination_ports: vec![8080],
                not_destination_ports: vec![9090],
                ..Default::default()
            }]
        }
    );
    let from = &rules[1].matches[0];
    assert_eq!(
        from.principals[0].match_type,
        Some(MatchType::Exact("cluster.local/ns/mesh/sa/client".into()))
    );
    assert_eq!(from.principals[1].match_type, Some(MatchType::Presence(())));
    assert_eq!(
        from.not_namespaces[0].match_type,
        Some(MatchType::Prefix("bad".into()))
    );
    assert_eq!(rules[1].matches.len(), 2, "two sources, OR-ed");
    assert_eq!(
        rules[1].matches[1].service_accounts,
        vec![
            ServiceAccountMatch {
                namespace: "mesh".into(),
                service_account: "web".into()
            },
            ServiceAccountMatch {
                namespace: "other".into(),
                service_account: "sa".into()
            },
        ]
    );
    // ipBlocks ∩ remoteIpBlocks: at L4 both constrain the source IP.
    assert_eq!(
        from.source_ips,
        vec![Address {
            address: vec![10, 2, 0, 0],
            length: 16
        }]
    );
    assert_eq!(from.not_source_ips[0].length, 16);
    assert_eq!(rules[2].matches[0].destination_ports, vec![80]);
    assert_eq!(
        rules[3].matches[0].not_namespaces[0].match_type,
        Some(MatchType::Suffix("-test".into()))
    );
    assert!(a.l7_attributes_ignored.is_empty());
}

#[test]
fn invalid_values_are_rejected_with_their_path() {
    for (spec, path) in [
        (
            "  rules: [{from: [{source: {ipBlocks: [10.0.0.300]}}]}]\n",
            "spec.rules[0].from[0].source.ipBlocks[0]",
        ),
        (
            "  rules: [{to: [{operation: {ports: ['http']}}]}]\n",
            "spec.rules[0].to[0].operation.ports[0]",
        ),
        (
            "  rules: [{when: [{key: source.ip}]}]\n",
            "spec.rules[0].when[0]",
        ),
        (
            "  rules: [{when: [{key: source.color, values: [x]}]}]\n",
            "spec.rules[0].when[0].key",
        ),
        ("  rules: [{from: [{}]}]\n", "spec.rules[0].from[0].source"),
        (
            "  rules: [{from: [{source: {principals: ['a*b']}}]}]\n",
            "spec.rules[0].from[0].source.principals[0]",
        ),
        ("  action: CUSTOM\n", "spec.provider"),
        (
            "  selector: {matchLabels: {a: b}}\n  targetRefs: [{kind: Service, name: s}]\n",
            "spec.selector",
        ),
    ] {
        let err = parse_file(Path::new("t.yaml"), &policy("mesh", spec)).unwrap_err();
        assert_eq!(err.path, path, "{spec}: {err}");
        assert_eq!(err.object.as_deref(), Some("AuthorizationPolicy mesh/p"));
    }
}

#[test]
fn empty_rule_matches_everything_and_rules_are_groups() {
    let a = authz(&policy(
        "mesh",
        "  action: DENY\n  rules:\n  - {}\n  - to: [{operation: {ports: ['1']}}]\n",
    ));
    assert_eq!(a.groups.len(), 2);
    assert_eq!(
        a.groups[0],
        Group {
            rules: vec![],
            rule: Some(0)
        }
    );
    assert_eq!(a.groups[1].rule, Some(1));
}

#[test]
fn l7_attributes_drop_allow_rules_and_widen_deny_rules() {
    let spec = |action| {
        format!(
            "  action: {action}\n  rules:\n  - to: [{{operation: {{methods: [GET], ports: ['80']}}}}]\n  - from: [{{source: {{namespaces: [a]}}}}]\n    when: [{{key: 'request.headers[x-user]', values: [bob]}}]\n  - from: [{{source: {{namespaces: [ok]}}}}]\n"
        )
    };
    let (allow, findings) = compiled(&policy("mesh", &spec("ALLOW")));
    let allow = allow.unwrap().authorization;
    assert_eq!(allow.groups.len(), 1, "only the L4 rule survives");
    assert_eq!(
        allow.groups[0].rules[0].matches[0].namespaces[0].match_type,
        Some(MatchType::Exact("ok".into()))
    );
    assert_eq!(
        allow.l7_attributes_ignored,
        ["methods", "request.headers[x-user]"]
    );
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].code, codes::AUTHZ_L7_ATTRIBUTES);
    assert!(
        findings[0].message.contains("never match"),
        "{}",
        findings[0]
    );

    let deny = authz(&policy("mesh", &spec("DENY")));
    assert_eq!(
        deny.groups.len(),
        3,
        "DENY keeps every rule, minus L7 parts"
    );
    assert_eq!(deny.groups[0].rules[0].matches[0].destination_ports, [80]);
    assert_eq!(deny.groups[1].rules.len(), 2, "from + the (L7) condition");
    assert_eq!(deny.groups[1].rules[1].matches[0], Match::default());
}

#[test]
fn http_groups_keep_every_http_attribute_for_the_agent() {
    let spec = "  rules:\n  - to: [{operation: {hosts: [Api.Example.COM], notMethods: [DELETE], methods: [GET], paths: ['/api/*', '/v1/{*}/items/{**}'], notPaths: ['/api/admin'], ports: ['8080']}}]\n    from: [{source: {requestPrincipals: ['https://issuer/*'], notRequestPrincipals: ['*/bad'], namespaces: [frontend]}}]\n    when:\n    - {key: 'request.headers[x-user]', values: [bob], notValues: ['mallory*']}\n    - {key: 'request.auth.claims[groups][team]', values: [mesh]}\n    - {key: source.serviceAccount, values: [web]}\n  - from: [{source: {namespaces: [ops]}}]\n";
    let a = authz(&policy("mesh", spec));
    assert_eq!(a.groups.len(), 1, "at L4 only the rule without HTTP fields");
    assert_eq!(a.http_groups.len(), 2, "every rule, with its HTTP fields");
    let rules = &a.http_groups[0].rules;
    let (to, from) = (&rules[0].matches[0], &rules[1].matches[0]);
    let exact = |v: &str| Some(MatchType::Exact(v.into()));
    assert_eq!(
        to.hosts[0].match_type,
        exact("api.example.com"),
        "hosts are case-insensitive"
    );
    assert_eq!(to.methods[0].match_type, exact("GET"));
    assert_eq!(to.not_methods[0].match_type, exact("DELETE"));
    assert_eq!(
        to.paths[0].match_type,
        Some(MatchType::Prefix("/api/".into()))
    );
    assert_eq!(
        to.paths[1].match_type,
        Some(MatchType::PathTemplate("/v1/{*}/items/{**}".into()))
    );
    assert_eq!(to.not_paths[0].match_type, exact("/api/admin"));
    assert_eq!(to.destination_ports, [8080]);
    assert_eq!(
        from.request_principals[0].match_type,
        Some(MatchType::Prefix("https://issuer/".into()))
    );
    assert_eq!(
        from.not_request_principals[0].match_type,
        Some(MatchType::Suffix("/bad".into()))
    );
    assert_eq!(from.namespaces[0].match_type, exact("frontend"));
    let header = &rules[2].matches[0].attributes[0];
    assert_eq!(header.key, "request.headers[x-user]");
    assert_eq!(header.values[0].match_type, exact("bob"));
    assert_eq!(
        header.not_values[0].match_type,
        Some(MatchType::Prefix("mallory".into()))
    );
    assert_eq!(
        rules[3].matches[0].attributes[0].key,
        "request.auth.claims[groups][team]"
    );
    assert_eq!(
        rules[4].matches[0].service_accounts,
        [ServiceAccountMatch {
            namespace: "mesh".into(),
            service_account: "web".into()
        }],
        "source.serviceAccount is an L4 attribute"
    );

    // A policy without HTTP fields sends no second copy.
    let l4 = authz(&policy(
        "mesh",
        "  rules:\n  - from: [{source: {namespaces: [a]}}]\n",
    ));
    assert!(l4.http_groups.is_empty() && l4.l7_attributes_ignored.is_empty());
}

#[test]
fn audit_dry_run_custom_and_target_ref() {
    // AUDIT: a dry-run DENY every client logs and none enforces, flagged
    // as an audit for weft's agent.
    let a = authz(&policy("mesh", "  action: AUDIT\n  rules: [{}]\n"));
    assert_eq!(a.action, Action::Deny as i32);
    assert!(a.dry_run && a.audit);
    let dry = authz(&policy("mesh", "  action: DENY\n").replace(
        "  name: p\n",
        "  name: p\n  annotations: {istio.io/dry-run: \"true\"}\n",
    ));
    assert!(dry.dry_run);
    let (custom, findings) = compiled(&policy(
        "mesh",
        "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n",
    ));
    assert!(custom.is_none());
    assert_eq!(findings[0].code, codes::AUTHZ_UNSUPPORTED_ACTION);
    let (waypoint, findings) = compiled(&policy(
        "mesh",
        "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]\n",
    ));
    assert!(waypoint.is_none());
    assert_eq!(findings[0].code, codes::AUTHZ_TARGET_REF);
}

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: mesh, labels: {app: web}}
spec: {nodeName: n}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: mesh, labels: {app: db}}
spec: {nodeName: n}
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: other, labels: {app: web}}
spec: {nodeName: n}
status: {podIP: 10.1.0.3}
"#;

fn workload_policies(m: &Model, ns: &str, name: &str) -> Vec<String> {
    let uid = format!("Kubernetes//Pod/{ns}/{name}");
    match m.resources[&uid].address().unwrap().r#type {
        Some(weft_proto::workload::address::Type::Workload(w)) => w.authorization_policies,
        other => panic!("{other:?}"),
    }
}

#[test]
fn selected_workloads_list_the_policy_and_it_is_served() {
    let yaml = format!(
        "{PODS}---\n{}---\n{}---\n{}",
        policy("mesh", "  selector: {matchLabels: {app: web}}\n"),
        policy("istio-system", "  selector: {matchLabels: {app: web}}\n")
            .replace("name: p", "name: root"),
        policy("mesh", "  action: DENY\n").replace("name: p", "name: ns-wide"),
    );
    let m = model(&yaml);
    assert_eq!(
        workload_policies(&m, "mesh", "web"),
        ["istio-system/root", "mesh/p"]
    );
    assert!(workload_policies(&m, "mesh", "db").is_empty());
    assert_eq!(
        workload_policies(&m, "other", "web"),
        ["istio-system/root"],
        "a selector outside the root namespace stays in its namespace"
    );
    let names: Vec<&String> = m.authorizations.keys();
    assert_eq!(names, ["istio-system/root", "mesh/ns-wide", "mesh/p"]);
    let served = m.authorizations["mesh/p"].authorization().unwrap();
    assert_eq!(served.scope, Scope::WorkloadSelector as i32);
    assert!(
        !m.type_version(weft_proto::AUTHORIZATION_TYPE_URL)
            .is_empty()
    );
}

#[test]
fn remote_ip_blocks_compile_into_source_ips_that_every_client_enforces() {
    let only_remote = authz(&policy(
        "mesh",
        "  action: DENY\n  rules:\n  - from:\n    - source: {remoteIpBlocks: [\"203.0.113.0/24\"], notRemoteIpBlocks: [\"203.0.113.7\"], notIpBlocks: [\"203.0.113.8\"]}\n",
    ));
    let from = &only_remote.groups[0].rules[0].matches[0];
    assert_eq!(from.source_ips[0].address, vec![203, 0, 113, 0]);
    assert_eq!(from.not_source_ips.len(), 2, "both exclusions");

    let condition = authz(&policy(
        "mesh",
        "  action: DENY\n  rules:\n  - when:\n    - key: remote.ip\n      values: [\"198.51.100.0/24\"]\n",
    ));
    let when = &condition.groups[0].rules[0].matches[0];
    assert_eq!(when.source_ips[0].address, vec![198, 51, 100, 0]);

    // Disjoint blocks: that source can never match; a rule whose sources
    // all cannot match is dropped (an ALLOW then allows nothing more, a
    // DENY denies nothing more).
    let disjoint = "  rules:\n  - from:\n    - source: {ipBlocks: [\"10.0.0.0/8\"], remoteIpBlocks: [\"192.0.2.0/24\"]}\n";
    for action in ["ALLOW", "DENY"] {
        let a = authz(&policy("mesh", &format!("  action: {action}\n{disjoint}")));
        assert!(a.groups.is_empty(), "{action}: {a:?}");
    }
    let one_left = authz(&policy(
        "mesh",
        "  action: ALLOW\n  rules:\n  - from:\n    - source: {ipBlocks: [\"10.0.0.0/8\"], remoteIpBlocks: [\"192.0.2.0/24\"]}\n    - source: {namespaces: [\"mesh\"]}\n",
    ));
    assert_eq!(one_left.groups[0].rules[0].matches.len(), 1);

    // A dropped rule shifts the groups after it: each keeps its rule's
    // index, as the access log names a DENY policy's matched rule by it.
    let shifted = authz(&policy(
        "mesh",
        &format!("  action: DENY\n{disjoint}  - to: [{{operation: {{methods: [\"POST\"]}}}}]\n"),
    ));
    assert_eq!(shifted.groups.len(), 1);
    assert_eq!(shifted.groups[0].rule, Some(1));
    assert_eq!(shifted.http_groups[0].rule, Some(1));
}

#[test]
fn every_action_and_enum_is_one_upstream_istio_knows() {
    // Upstream istio.security: Action ALLOW=0, DENY=1; Scope 0..=2. A stock
    // ztunnel rejects a whole response carrying any other value.
    for action in ["ALLOW", "DENY", "AUDIT"] {
        for annotation in ["", "  annotations: {istio.io/dry-run: \"true\"}\n"] {
            let yaml = policy("mesh", &format!("  action: {action}\n  rules: [{{}}]\n"))
                .replace("  name: p\n", &format!("  name: p\n{annotation}"));
            let a = authz(&yaml);
            assert!([0, 1].contains(&a.action), "{action}: {}", a.action);
            assert!((0..=2).contains(&a.scope), "{action}: {}", a.scope);
        }
    }
}

/// A CUSTOM policy naming `provider`, compiled with `mesh`.
fn custom_with(
    provider: &str,
    mesh: &crate::mesh::MeshConfig,
) -> (Option<Authorization>, Vec<crate::analysis::Finding>) {
    let objects = parse_file(
        Path::new("t.yaml"),
        &policy("mesh", &format!("  action: CUSTOM\n  provider: {{name: {provider}}}\n  rules:\n  - to: [{{operation: {{paths: ['/admin/*']}}}}]\n")),
    )
    .expect("valid");
    let Some(Object::AuthorizationPolicy(p)) = objects.first() else {
        panic!("not a policy")
    };
    let mut findings = Vec::new();
    let a = compile_with(p, "istio-system", mesh, &mut findings).map(|c| c.authorization);
    (a, findings)
}

#[test]
fn custom_compiles_with_its_provider_and_only_for_requests() {
    use weft_proto::security::ExtAuthzKind;
    let mesh = crate::mesh::MeshConfig::parse("extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa.authz.svc.cluster.local\n    port: 9191\n    timeout: 250ms\n    failOpen: true\n    statusOnError: '503'\n    includeRequestBodyInCheck: {maxRequestBytes: 512, packAsBytes: true}\n- name: other\n").unwrap();
    let (a, findings) = custom_with("opa", &mesh);
    let a = a.expect("compiled");
    assert!(findings.is_empty(), "{findings:?}");
    // Nothing for an L4 client to enforce; the rules for weft's agent.
    assert_eq!(a.action, Action::Deny as i32);
    assert!(a.dry_run && a.groups.is_empty());
    assert_eq!(a.http_groups.len(), 1);
    let provider = a.ext_authz.expect("provider");
    assert_eq!(
        (
            provider.service.as_str(),
            provider.port,
            provider.timeout_ms
        ),
        ("opa.authz.svc.cluster.local", 9191, 250)
    );
    assert!(provider.fail_open && provider.status_on_error == 503);
    assert_eq!(provider.kind, ExtAuthzKind::ExtAuthzGrpc as i32);
    let body = provider.request_body.expect("body settings");
    assert!(body.max_request_bytes == 512 && body.pack_as_bytes && !body.allow_partial_message);

    for (name, why) in [
        (
            "other",
            "neither `envoyExtAuthzGrpc` nor `envoyExtAuthzHttp`",
        ),
        ("nowhere", "no extension provider"),
    ] {
        let (a, findings) = custom_with(name, &mesh);
        assert!(a.is_none());
        assert!(findings[0].message.contains(why), "{}", findings[0].message);
    }
}

#[test]
fn custom_compiles_an_http_provider_with_its_header_lists() {
    use weft_proto::security::ExtAuthzKind;
    let mesh = crate::mesh::MeshConfig::parse("extensionProviders:\n- name: web\n  envoyExtAuthzHttp:\n    service: authz.foo.svc.cluster.local\n    port: 8000\n    pathPrefix: /check\n    statusOnError: '502'\n    includeRequestHeadersInCheck: [x-user, 'x-ext-*']\n    includeHeadersInCheck: [ignored]\n    includeAdditionalHeadersInCheck: {x-z: last, x-a: first}\n    includeRequestBodyInCheck: {maxRequestBytes: 100, allowPartialMessage: true}\n    headersToUpstreamOnAllow: ['*-id']\n    headersToDownstreamOnDeny: [x-why]\n    headersToDownstreamOnAllow: [x-ok]\n- name: old\n  envoyExtAuthzHttp:\n    service: 10.0.0.1\n    port: 80\n    includeHeadersInCheck: [x-old]\n").unwrap();
    let (a, findings) = custom_with("web", &mesh);
    assert!(findings.is_empty(), "{findings:?}");
    let p = a.expect("compiled").ext_authz.expect("provider");
    assert_eq!(p.kind, ExtAuthzKind::ExtAuthzHttp as i32);
    assert_eq!(
        (p.service.as_str(), p.port),
        ("authz.foo.svc.cluster.local", 8000)
    );
    assert_eq!((p.path_prefix.as_str(), p.status_on_error), ("/check", 502));
    assert_eq!(p.timeout_ms, 0, "unset: the agent's 600 s");
    assert_eq!(p.include_request_headers, ["x-user", "x-ext-*"]);
    let added: Vec<_> = p
        .include_additional_headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(added, [("x-a", "first"), ("x-z", "last")]);
    let body = p.request_body.expect("body settings");
    assert!(body.max_request_bytes == 100 && body.allow_partial_message);
    assert_eq!(p.headers_to_upstream_on_allow, ["*-id"]);
    assert_eq!(p.headers_to_downstream_on_deny, ["x-why"]);
    assert_eq!(p.headers_to_downstream_on_allow, ["x-ok"]);
    // The deprecated list when the new one is empty.
    let (a, _) = custom_with("old", &mesh);
    let p = a.expect("compiled").ext_authz.expect("provider");
    assert_eq!(p.include_request_headers, ["x-old"]);
    assert!(p.request_body.is_none());
}
