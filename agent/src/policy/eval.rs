//! The decision, per connection (L4) or per request (HTTP ports).

use std::sync::Arc;

use super::{Action, AttributeMatch, Connection, Group, Match, Policy, Request, StringMatch};

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// A DENY policy matched (`namespace/name`). `rule`: which of its
    /// rules, as Istio names it for Envoy's RBAC filter
    /// (`ns[NS]-policy[NAME]-rule[N]`, see [`envoy_rule_name`]).
    /// `l7_ignored`: HTTP conditions of that policy a node proxy cannot
    /// see, so it denied the whole connection (as ztunnel does).
    DeniedBy {
        policy: String,
        rule: String,
        l7_ignored: Vec<String>,
    },
    /// ALLOW policies apply to the workload and none matched.
    NoAllowMatch,
}

impl DenyReason {
    /// The RBAC policy Envoy's access log names for this denial
    /// (`rbac_access_denied_matched_policy[` this `]`): the DENY rule, or
    /// `none` when no ALLOW policy matched.
    pub fn matched_policy(&self) -> &str {
        match self {
            Self::DeniedBy { rule, .. } => rule,
            Self::NoAllowMatch => "none",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DeniedBy {
                policy, l7_ignored, ..
            } if l7_ignored.is_empty() => {
                write!(f, "denied by policy {policy}")
            }
            Self::DeniedBy {
                policy, l7_ignored, ..
            } => write!(
                f,
                "denied by policy {policy} (its HTTP conditions {} cannot be checked at L4, so the whole connection is denied)",
                l7_ignored.join(", ")
            ),
            Self::NoAllowMatch => f.write_str("no ALLOW policy matched"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `by`: the ALLOW policy that matched, if any applied.
    Allow {
        by: Option<String>,
    },
    Deny(DenyReason),
}

fn any_or_empty<T>(list: &[T], f: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(f)
}

fn none<T>(list: &[T], f: impl Fn(&T) -> bool) -> bool {
    !list.iter().any(f)
}

impl Match {
    /// `request`: `None` per connection, where HTTP attributes are absent.
    pub fn matches(&self, conn: &Connection, request: Option<&Request>) -> bool {
        self.matches_l4(conn) && self.matches_http(request)
    }

    fn matches_l4(&self, conn: &Connection) -> bool {
        let id = conn.src_identity.as_ref();
        // Istio's principal form: the SPIFFE ID without `spiffe://`;
        // formatted only for a rule that matches principals.
        let by_principal = !self.principals.is_empty() || !self.not_principals.is_empty();
        let principal = id.filter(|_| by_principal).map(|id| {
            format!(
                "{}/ns/{}/sa/{}",
                id.trust_domain, id.namespace, id.service_account
            )
        });
        let principal = principal.as_deref();
        let namespace = id.map(|id| id.namespace.as_str());
        let account = |(ns, sa): &(String, String)| {
            id.is_some_and(|id| &id.namespace == ns && &id.service_account == sa)
        };
        any_or_empty(&self.namespaces, |m| m.matches(namespace))
            && none(&self.not_namespaces, |m| m.matches(namespace))
            && any_or_empty(&self.service_accounts, account)
            && none(&self.not_service_accounts, account)
            && any_or_empty(&self.principals, |m| m.matches(principal))
            && none(&self.not_principals, |m| m.matches(principal))
            && any_or_empty(&self.source_ips, |c| c.contains(conn.src_ip))
            && none(&self.not_source_ips, |c| c.contains(conn.src_ip))
            && any_or_empty(&self.destination_ips, |c| c.contains(conn.dst_ip))
            && none(&self.not_destination_ips, |c| c.contains(conn.dst_ip))
            && any_or_empty(&self.destination_ports, |p| *p == conn.dst_port)
            && none(&self.not_destination_ports, |p| *p == conn.dst_port)
    }

    fn matches_http(&self, request: Option<&Request>) -> bool {
        let host = request.map(|r| r.host.to_ascii_lowercase());
        let host = host.as_deref();
        // Also without its port: `hosts: [example.com]` matches
        // `example.com:8080`.
        let bare = host.map(strip_port);
        let host_matches = |m: &StringMatch| m.matches(host) || m.matches(bare);
        let method = request.map(|r| r.method);
        let path = request.map(|r| r.path);
        let principal = request.and_then(|r| r.auth).map(|a| a.principal.as_str());
        any_or_empty(&self.hosts, host_matches)
            && none(&self.not_hosts, host_matches)
            && any_or_empty(&self.methods, |m| m.matches(method))
            && none(&self.not_methods, |m| m.matches(method))
            && any_or_empty(&self.paths, |m| m.matches(path))
            && none(&self.not_paths, |m| m.matches(path))
            && any_or_empty(&self.request_principals, |m| m.matches(principal))
            && none(&self.not_request_principals, |m| m.matches(principal))
            && self.attributes.iter().all(|a| a.matches(request))
    }
}

/// `host:port` → `host` (`[v6]:port` → `[v6]`); anything else unchanged.
fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => authority,
    }
}

impl AttributeMatch {
    fn matches(&self, request: Option<&Request>) -> bool {
        let values = request.map(|r| self.key.values(r)).unwrap_or_default();
        let hit = |m: &StringMatch| values.iter().any(|v| m.matches(Some(v)));
        any_or_empty(&self.values, hit) && none(&self.not_values, hit)
    }
}

impl Group {
    /// Every rule holds; a rule holds when one of its matches does.
    fn matches(&self, conn: &Connection, request: Option<&Request>) -> bool {
        self.rules
            .iter()
            .all(|rule| rule.is_empty() || rule.iter().any(|m| m.matches(conn, request)))
    }
}

impl Policy {
    /// Whether the connection matches (one group does). A policy without
    /// groups matches nothing.
    pub fn matches(&self, conn: &Connection) -> bool {
        self.groups.iter().any(|g| g.matches(conn, None))
    }

    /// Whether the request matches, HTTP attributes included.
    pub fn matches_request(&self, conn: &Connection, request: &Request) -> bool {
        self.groups_for(Some(request))
            .iter()
            .any(|g| g.matches(conn, Some(request)))
    }

    /// The groups that decide: with the HTTP attributes for a request.
    fn groups_for(&self, request: Option<&Request>) -> &[Group] {
        match (request, &self.http_groups) {
            (Some(_), Some(http)) => http,
            _ => &self.groups,
        }
    }

    /// The indices of the rules that match (each group's own, else its
    /// position).
    fn matching_rules<'a>(
        &'a self,
        conn: &'a Connection,
        request: Option<&'a Request>,
    ) -> impl Iterator<Item = u32> + 'a {
        self.groups_for(request)
            .iter()
            .zip(0u32..)
            .filter(move |(g, _)| g.matches(conn, request))
            .map(|(g, position)| g.rule.unwrap_or(position))
    }
}

/// What Istio names rule `rule` of `policy` in Envoy's RBAC filter, and so
/// what Envoy's access log says of a request it denied:
/// `ns[NS]-policy[NAME]-rule[N]`.
fn envoy_rule_name(policy: &Policy, rule: u32) -> String {
    format!(
        "ns[{}]-policy[{}]-rule[{rule}]",
        policy.namespace, policy.name
    )
}

/// Decides on a connection to a port that is not HTTP, with Istio's
/// order: a matching DENY refuses; then, if ALLOW policies apply, one must
/// match. AUDIT and dry-run policies are logged.
pub fn evaluate(policies: &[Arc<Policy>], conn: &Connection) -> Decision {
    decide(policies, conn, None)
}

/// Decides on one request to an HTTP port: the same order, with every
/// policy's HTTP attributes. A DENY policy's HTTP conditions are all seen
/// here, so a denial never names ignored ones.
pub fn evaluate_request(
    policies: &[Arc<Policy>],
    conn: &Connection,
    request: &Request,
) -> Decision {
    decide(policies, conn, Some(request))
}

fn decide(policies: &[Arc<Policy>], conn: &Connection, request: Option<&Request>) -> Decision {
    // RequestAuthentications travel with the policies and decide nothing;
    // CUSTOM policies are decided before, by their provider.
    let policies: Vec<&Arc<Policy>> = policies
        .iter()
        .filter(|p| !p.is_request_authentication() && p.action != Action::Custom)
        .collect();
    let matches = |policy: &Policy| match request {
        Some(request) => policy.matches_request(conn, request),
        None => policy.matches(conn),
    };
    let method = request.map(|r| r.method);
    let path = request.map(|r| r.path);
    let log_dry_run = |policy: &Policy, matched: bool| {
        tracing::info!(
            policy = %policy.key(), action = ?policy.action, matched,
            src.identity = ?conn.src_identity.as_ref().map(ToString::to_string),
            src.ip = %conn.src_ip, dst.port = conn.dst_port, method, path,
            "dry-run policy evaluated (not enforced)"
        );
    };
    for policy in policies.iter().filter(|p| p.action == Action::Audit) {
        if matches(policy) {
            tracing::info!(
                policy = %policy.key(),
                src.identity = ?conn.src_identity.as_ref().map(ToString::to_string),
                src.ip = %conn.src_ip, dst.ip = %conn.dst_ip, dst.port = conn.dst_port,
                method, path,
                "audit: {} matched", if request.is_some() { "request" } else { "connection" }
            );
        }
    }
    // Dry-run policies are evaluated whatever the verdict, as Envoy's
    // shadow rules are.
    for policy in policies.iter().filter(|p| p.dry_run) {
        log_dry_run(policy, matches(policy));
    }
    // Envoy's RBAC filter keeps its policies (one per rule) in a map
    // ordered by name and reports the first that matches: of the rules
    // that match, the one whose name sorts first is the one named. (A
    // denial evaluates every DENY group; letting one through already did.)
    let mut denied: Option<(&Arc<Policy>, String)> = None;
    for policy in policies
        .iter()
        .filter(|p| p.action == Action::Deny && !p.dry_run)
    {
        for rule in policy.matching_rules(conn, request) {
            let name = envoy_rule_name(policy, rule);
            if denied.as_ref().is_none_or(|(_, first)| name < *first) {
                denied = Some((*policy, name));
            }
        }
    }
    if let Some((policy, rule)) = denied {
        return Decision::Deny(DenyReason::DeniedBy {
            policy: policy.key(),
            rule,
            l7_ignored: if request.is_some() {
                Vec::new()
            } else {
                policy.l7_ignored.clone()
            },
        });
    }
    let mut enforced_allows = 0;
    let mut allowed_by = None;
    for policy in policies
        .iter()
        .filter(|p| p.action == Action::Allow && !p.dry_run)
    {
        enforced_allows += 1;
        if allowed_by.is_none() && matches(policy) {
            allowed_by = Some(policy.key());
        }
    }
    match (enforced_allows, allowed_by) {
        (0, _) => Decision::Allow { by: None },
        (_, Some(by)) => Decision::Allow { by: Some(by) },
        (_, None) => Decision::Deny(DenyReason::NoAllowMatch),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::policy::{Cidr, Scope, StringMatch};
    use crate::state::Identity;

    fn policy(name: &str, action: Action, groups: Vec<Group>) -> Arc<Policy> {
        Arc::new(Policy {
            name: name.into(),
            namespace: "demo".into(),
            scope: Scope::Namespace,
            action,
            groups,
            http_groups: None,
            dry_run: false,
            l7_ignored: vec![],
            jwt_rules: vec![],
            ext_authz: None,
        })
    }

    fn one(m: Match) -> Vec<Group> {
        vec![Group {
            rules: vec![vec![m]],
            rule: None,
        }]
    }

    /// A group of one match, compiled from rule `rule`.
    fn rule(rule: u32, m: Match) -> Group {
        Group {
            rules: vec![vec![m]],
            rule: Some(rule),
        }
    }

    fn conn(sa: Option<&str>, ns: &str, src: &str, port: u16) -> Connection {
        Connection {
            src_identity: sa.map(|sa| {
                Arc::new(Identity {
                    trust_domain: "cluster.local".into(),
                    namespace: ns.into(),
                    service_account: sa.into(),
                })
            }),
            src_ip: src.parse().unwrap(),
            dst_ip: "10.0.2.2".parse().unwrap(),
            dst_port: port,
        }
    }

    #[test]
    fn no_policy_allows() {
        assert_eq!(
            evaluate(&[], &conn(None, "x", "10.0.1.2", 80)),
            Decision::Allow { by: None }
        );
    }

    #[test]
    fn allow_by_principal_and_default_deny_for_others() {
        let allow = policy(
            "allow-client",
            Action::Allow,
            one(Match {
                principals: vec![StringMatch::Exact("cluster.local/ns/demo/sa/client".into())],
                ..Default::default()
            }),
        );
        let policies = [allow];
        assert_eq!(
            evaluate(&policies, &conn(Some("client"), "demo", "10.0.1.2", 80)),
            Decision::Allow {
                by: Some("demo/allow-client".into())
            }
        );
        assert_eq!(
            evaluate(&policies, &conn(Some("other"), "demo", "10.0.1.2", 80)),
            Decision::Deny(DenyReason::NoAllowMatch)
        );
        assert_eq!(
            evaluate(&policies, &conn(None, "demo", "10.0.1.2", 80)),
            Decision::Deny(DenyReason::NoAllowMatch),
            "plaintext has no principal"
        );
    }

    #[test]
    fn a_denial_names_the_rule_as_envoy_does() {
        let port = |p: u16| Match {
            destination_ports: vec![p],
            ..Default::default()
        };
        let denied = |policies: &[Arc<Policy>], dst_port| match evaluate(
            policies,
            &conn(Some("a"), "demo", "10.0.1.2", dst_port),
        ) {
            Decision::Deny(DenyReason::DeniedBy { policy, rule, .. }) => (policy, rule),
            other => panic!("port {dst_port}: {other:?}"),
        };
        // The group's own rule index, not its position (rule 0 could
        // never match and was left out by the control plane).
        let a = policy(
            "a",
            Action::Deny,
            vec![rule(1, port(80)), rule(2, port(81))],
        );
        assert_eq!(
            denied(std::slice::from_ref(&a), 81),
            ("demo/a".into(), "ns[demo]-policy[a]-rule[2]".into())
        );
        // Without indices, the position.
        let b = policy("b", Action::Deny, vec![rule(0, port(1)), port_group(80)]);
        fn port_group(p: u16) -> Group {
            Group {
                rules: vec![vec![Match {
                    destination_ports: vec![p],
                    ..Default::default()
                }]],
                rule: None,
            }
        }
        assert_eq!(
            denied(std::slice::from_ref(&b), 80).1,
            "ns[demo]-policy[b]-rule[1]"
        );
        // Of several matching rules, the name that sorts first, as
        // Envoy's map of policies orders them: `a` before `b`, whichever
        // comes first here, and rule 10 before rule 2.
        assert_eq!(denied(&[b, a.clone()], 80).1, "ns[demo]-policy[a]-rule[1]");
        let c = policy(
            "c",
            Action::Deny,
            vec![rule(2, port(80)), rule(10, port(80))],
        );
        assert_eq!(denied(&[c], 80).1, "ns[demo]-policy[c]-rule[10]");
    }

    #[test]
    fn deny_overrides_allow_and_empty_allow_denies_all() {
        let allow_all = policy(
            "allow-all",
            Action::Allow,
            vec![Group {
                rules: vec![],
                rule: None,
            }],
        );
        let deny_ns = policy(
            "deny-legacy",
            Action::Deny,
            one(Match {
                namespaces: vec![StringMatch::Exact("legacy".into())],
                ..Default::default()
            }),
        );
        let policies = [allow_all.clone(), deny_ns];
        assert!(matches!(
            evaluate(&policies, &conn(Some("a"), "legacy", "10.0.1.2", 80)),
            Decision::Deny(DenyReason::DeniedBy { policy, .. }) if policy == "demo/deny-legacy"
        ));
        assert!(matches!(
            evaluate(&policies, &conn(Some("a"), "demo", "10.0.1.2", 80)),
            Decision::Allow { .. }
        ));
        let empty_allow = policy("nothing", Action::Allow, vec![]);
        assert_eq!(
            evaluate(&[empty_allow], &conn(Some("a"), "demo", "10.0.1.2", 80)),
            Decision::Deny(DenyReason::NoAllowMatch)
        );
    }

    #[test]
    fn ip_blocks_ports_and_not_fields() {
        let m = Match {
            source_ips: vec![Cidr {
                addr: "10.0.1.0".parse::<IpAddr>().unwrap(),
                prefix: 24,
            }],
            not_destination_ports: vec![9090],
            ..Default::default()
        };
        let allow = policy("allow-subnet", Action::Allow, one(m));
        let policies = [allow];
        assert!(matches!(
            evaluate(&policies, &conn(None, "x", "10.0.1.7", 80)),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            evaluate(&policies, &conn(None, "x", "10.0.3.7", 80)),
            Decision::Deny(_)
        ));
        assert!(matches!(
            evaluate(&policies, &conn(None, "x", "10.0.1.7", 9090)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn strict_mtls_as_compiled_denies_plaintext_only() {
        // PeerAuthentication STRICT → DENY where not_principals: presence.
        let strict = policy(
            "istio_converted_static_strict",
            Action::Deny,
            one(Match {
                not_principals: vec![StringMatch::Presence],
                ..Default::default()
            }),
        );
        let policies = [strict];
        assert!(matches!(
            evaluate(&policies, &conn(None, "x", "10.0.1.7", 80)),
            Decision::Deny(_)
        ));
        assert!(matches!(
            evaluate(&policies, &conn(Some("a"), "x", "10.0.1.7", 80)),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn dry_run_is_never_enforced() {
        let mut deny = (*policy(
            "deny-all",
            Action::Deny,
            vec![Group {
                rules: vec![],
                rule: None,
            }],
        ))
        .clone();
        deny.dry_run = true;
        assert!(matches!(
            evaluate(&[Arc::new(deny)], &conn(None, "x", "10.0.1.7", 80)),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn service_accounts_and_not_principals() {
        let deny_sa = policy(
            "deny-sleep",
            Action::Deny,
            one(Match {
                service_accounts: vec![("demo".into(), "sleep".into())],
                ..Default::default()
            }),
        );
        let allow_not_admin = policy(
            "allow-non-admin",
            Action::Allow,
            one(Match {
                not_principals: vec![StringMatch::Suffix("/sa/admin".into())],
                ..Default::default()
            }),
        );
        let policies = [deny_sa, allow_not_admin];
        assert!(matches!(
            evaluate(&policies, &conn(Some("sleep"), "demo", "10.0.1.2", 80)),
            Decision::Deny(DenyReason::DeniedBy { .. })
        ));
        assert!(matches!(
            evaluate(&policies, &conn(Some("sleep"), "other", "10.0.1.2", 80)),
            Decision::Allow { .. }
        ));
        assert_eq!(
            evaluate(&policies, &conn(Some("admin"), "demo", "10.0.1.2", 80)),
            Decision::Deny(DenyReason::NoAllowMatch)
        );
    }

    #[test]
    fn a_deny_with_ignored_http_conditions_says_so() {
        let mut deny = (*policy(
            "deny-get",
            Action::Deny,
            vec![Group {
                rules: vec![],
                rule: None,
            }],
        ))
        .clone();
        deny.l7_ignored = vec!["methods".into()];
        let decision = evaluate(&[Arc::new(deny)], &conn(Some("a"), "demo", "10.0.1.2", 80));
        let Decision::Deny(reason) = decision else {
            panic!("{decision:?}")
        };
        assert!(
            reason.to_string().contains("HTTP conditions methods"),
            "{reason}"
        );
    }

    #[test]
    fn requests_are_matched_on_their_http_attributes() {
        use crate::policy::http::{AttributeKey, PathTemplate, Request, RequestAuth};
        let mut allow = (*policy(
            "allow-get-api",
            Action::Allow,
            vec![Group {
                rules: vec![],
                rule: None,
            }],
        ))
        .clone();
        // At L4 the rule needs HTTP attributes: it never matches there.
        allow.groups = vec![];
        allow.l7_ignored = vec!["methods".into()];
        allow.http_groups = Some(one(Match {
            hosts: vec![StringMatch::Exact("api.shop".into())],
            methods: vec![StringMatch::Exact("GET".into())],
            paths: vec![
                StringMatch::Prefix("/api/".into()),
                StringMatch::Template(PathTemplate::parse("/v1/{*}/items")),
            ],
            not_request_principals: vec![StringMatch::Suffix("/banned".into())],
            attributes: vec![AttributeMatch {
                key: AttributeKey::parse("request.auth.claims[org][team]"),
                values: vec![],
                not_values: vec![StringMatch::Exact("red".into())],
            }],
            ..Default::default()
        }));
        let policies = [Arc::new(allow)];
        let c = conn(Some("web"), "frontend", "10.0.1.2", 8080);
        let headers = http::HeaderMap::new();
        let request = |method, host, path, auth| Request {
            method,
            host,
            path,
            headers: &headers,
            auth,
            sni: None,
        };
        let allowed =
            |r: &Request| matches!(evaluate_request(&policies, &c, r), Decision::Allow { .. });
        assert!(allowed(&request("GET", "api.shop", "/api/x", None)));
        assert!(
            allowed(&request("GET", "API.shop:8080", "/v1/a/items", None)),
            "case and port"
        );
        assert!(!allowed(&request("POST", "api.shop", "/api/x", None)));
        assert!(!allowed(&request("GET", "other", "/api/x", None)));
        assert!(!allowed(&request("GET", "api.shop", "/v1/a/b/items", None)));
        let auth = |principal: &str, team: &str| RequestAuth {
            principal: principal.into(),
            issuer: "iss".into(),
            subject: principal.trim_start_matches("iss/").into(),
            audiences: vec![],
            presenter: None,
            claims: serde_json::json!({ "org": { "team": team } }),
        };
        let (ok, banned, red) = (
            auth("iss/alice", "blue"),
            auth("iss/banned", "blue"),
            auth("iss/bob", "red"),
        );
        assert!(allowed(&request("GET", "api.shop", "/api/x", Some(&ok))));
        assert!(!allowed(&request(
            "GET",
            "api.shop",
            "/api/x",
            Some(&banned)
        )));
        assert!(!allowed(&request("GET", "api.shop", "/api/x", Some(&red))));
        assert_eq!(
            evaluate(&policies, &c),
            Decision::Deny(DenyReason::NoAllowMatch),
            "per connection the rule cannot match"
        );
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr {
            addr: "10.1.0.0".parse().unwrap(),
            prefix: 16,
        };
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all = Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            prefix: 0,
        };
        assert!(all.contains("192.0.2.1".parse().unwrap()));
    }
}
