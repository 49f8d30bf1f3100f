//! The authorization server of [`AUTHZ_SCENARIO`]: `server-authz`, its
//! L7 Service, RequestAuthentication and 10-rule ALLOW policy.

use super::*;
use crate::jwt;

/// `server-authz` on node-2 (mesh), its servers, its L7 Service (with the
/// same VirtualService as the others), and its RequestAuthentication and
/// AuthorizationPolicy.
pub(super) fn add_authz(
    cluster: &Cluster,
    load_bin: &PathBuf,
    settings: &Settings,
) -> Result<(Authz, Vec<Process>)> {
    let ns = Variant::WeftL7Authz.namespace();
    let server = cluster.add_pod(
        PodSpec::new("node-2", ns, "server-authz")
            .service_account("bench-server")
            .label(SERVER_LABEL, "authz"),
    )?;
    tune(&server)?;
    let processes = start_servers(&server, load_bin, settings)?;
    let name = "bench-l7-authz";
    let vip = cluster.add_service(
        ns,
        name,
        &[(SERVER_LABEL, "authz")],
        &[ServicePort::http("http", HTTP_PORT, HTTP_PORT)],
    )?;
    cluster.write_config_file(
        &format!("virtualservice-{ns}-{name}.yaml"),
        &virtual_service(ns, name),
    )?;
    let signer = jwt::Signer::es256()?.with_kid("bench");
    cluster.write_config_file(
        &format!("requestauthentication-{ns}-{name}.yaml"),
        &request_authentication(ns, &signer.jwks_json()),
    )?;
    cluster.write_config_file(
        &format!("authorizationpolicy-{ns}-{name}.yaml"),
        &authorization_policy(ns),
    )?;
    let token = signer.token(&jwt::claims(AUTHZ_ISSUER, "bench-client", 3600));
    let header = format!("Authorization: Bearer {token}");
    Ok((
        Authz {
            _server: server,
            vip,
            header,
        },
        processes,
    ))
}

/// Tokens of [`AUTHZ_ISSUER`] signed by the key of `jwks`, for
/// `server-authz`.
fn request_authentication(ns: &str, jwks: &str) -> String {
    // A JSON string in YAML single quotes: no `'` in a JWKS.
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: bench-authz
  namespace: {ns}
spec:
  selector:
    matchLabels:
      {SERVER_LABEL}: authz
  jwtRules:
  - issuer: {AUTHZ_ISSUER}
    jwks: '{jwks}'
"#
    )
}

/// `server-authz`'s ALLOW policy: [`AUTHZ_RULES`] HTTP rules, each request
/// of the load (`POST /bench` with a token of [`AUTHZ_ISSUER`]) missing the
/// first nine (another method, path, header, principal, host or port) and
/// matching the last, so that every rule is evaluated.
fn authorization_policy(ns: &str) -> String {
    let rules = [
        // 1-3: operations close to the load's, not it.
        r#"  - to:
    - operation:
        methods: [GET, HEAD]
        paths: ["/bench*"]"#,
        r#"  - to:
    - operation:
        methods: [POST]
        paths: ["/admin*", "/internal/*"]"#,
        r#"  - to:
    - operation:
        methods: [PUT, DELETE, PATCH]
        paths: ["/bench/items/*"]"#,
        // 4: another issuer's principals.
        r#"  - from:
    - source:
        requestPrincipals: ["https://other-issuer.test/*"]
    to:
    - operation:
        methods: [POST]"#,
        // 5: other path prefixes and a suffix.
        r#"  - to:
    - operation:
        paths: ["/api/*", "/v1/*", "*.json"]"#,
        // 6: a header the load does not send.
        r#"  - when:
    - key: request.headers[x-bench-tenant]
      values: ["blue", "green"]"#,
        // 7: the load's operation, but only with a debug header.
        r#"  - to:
    - operation:
        methods: [POST]
        paths: ["/bench*"]
    when:
    - key: request.headers[x-debug]
      values: ["1"]"#,
        // 8: another host.
        r#"  - to:
    - operation:
        hosts: ["admin.bench.test"]
        methods: [POST]"#,
        // 9: another port.
        r#"  - to:
    - operation:
        ports: ["9999"]
        paths: ["/bench*"]"#,
        // 10: the load's requests.
        r#"  - from:
    - source:
        requestPrincipals: ["https://issuer.weft-bench.test/*"]
    to:
    - operation:
        methods: [POST]
        paths: ["/bench*"]"#,
    ];
    debug_assert_eq!(rules.len(), AUTHZ_RULES);
    debug_assert!(rules[AUTHZ_RULES - 1].contains(AUTHZ_ISSUER));
    format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: bench-authz
  namespace: {ns}
spec:
  selector:
    matchLabels:
      {SERVER_LABEL}: authz
  action: ALLOW
  rules:
{}
"#,
        rules.join("\n")
    )
}
