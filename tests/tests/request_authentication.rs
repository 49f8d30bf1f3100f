//! RequestAuthentication end to end on a 2-node simulated cluster with
//! weft's real binaries: the destination's node agent validates each
//! request's JWT against keys given inline or fetched from a `jwksUri`
//! over TLS (and fetched again when they rotate), rejects a bad token
//! with 401, and hands the token's claims to AuthorizationPolicy
//! (`requestPrincipals`, `request.auth.*`). Needs root and the binaries
//! (`cargo xtask test` builds them).

mod common;

use anyhow::{Context as _, Result, ensure};
use common::*;
use weft_sim::{Cluster, ServicePort, httpapp, jwt};

/// A directory of its own under the system's temporary directory, removed
/// when dropped (the agents' flags name a file in it before the cluster
/// exists).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ISSUER: &str = "https://issuer.test";

/// Claims for `subject`, valid for an hour, with audience and a nested
/// team claim; `edit` changes them.
fn claims(subject: &str, edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut claims = jwt::claims(ISSUER, subject, 3600);
    claims["aud"] = serde_json::json!(["shop"]);
    claims["org"] = serde_json::json!({"team": "mesh"});
    edit(&mut claims);
    claims
}

#[test]
fn request_authentication_validates_tokens_fetched_keys_and_feeds_policies() -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

    // The JWKS server's CA, trusted by the agents for `jwksUri`.
    let pki = Scratch::new("weft-jwks-pki")?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = pki.0.join("ca.pem");
    std::fs::write(&ca_pem, ca_params.self_signed(&ca_key)?.pem())?;
    let ca = Issuer::new(ca_params, ca_key);
    let ca_arg = ca_pem.to_string_lossy().into_owned();

    let cluster = Cluster::builder()
        .nodes(2)
        .agent_args(&["--jwks-ca-bundle", &ca_arg, "--jwks-refresh", "1s"])
        .build()?;
    cluster.with_logs(|cluster| {
        json_access_log(cluster)?;
        cluster.add_namespace("shop", &[AMBIENT])?;
        cluster.add_namespace("keys", &[])?;
        // The identity provider's key set, served over HTTPS by a pod.
        let keys = cluster.add_pod(weft_sim::PodSpec::new("node-1", "keys", "idp"))?;
        let leaf_key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(Vec::<String>::new())?;
        leaf.subject_alt_names = vec![SanType::IpAddress(keys.ip().into())];
        let (cert, key) = (pki.0.join("idp.pem"), pki.0.join("idp-key.pem"));
        std::fs::write(&cert, leaf.signed_by(&leaf_key, &ca)?.pem())?;
        std::fs::write(&key, leaf_key.serialize_pem())?;
        let (first, second) = (jwt::Signer::es256()?.with_kid("one"), jwt::Signer::rs256()?.with_kid("two"));
        let jwks = pki.0.join("jwks.json");
        std::fs::write(&jwks, jwt::jwks_json(&[&first]))?;
        let route = format!("/jwks.json={}", jwks.display());
        let _idp = keys.spawn_http(&[
            "serve", "--port", "8443", "--tls-cert", &cert.to_string_lossy(), "--tls-key",
            &key.to_string_lossy(), "--file", &route,
        ])?;

        let _api = backend(cluster, "node-2", "shop", "api", &[("app", "api")], 8080, &[])?;
        let web = client(cluster, "node-1", "shop", "web")?;
        let vip = cluster.add_service("shop", "api", &[("app", "api")], &[ServicePort::http("http", 8080, 8080)])?;
        let url = format!("http://{vip}:8080/api/items");
        apply(
            cluster,
            "jwt",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  jwtRules:\n  - issuer: {ISSUER}\n    audiences: [shop]\n    jwksUri: https://{}:8443/jwks.json\n    outputClaimToHeaders:\n    - header: x-jwt-sub\n      claim: sub\n",
                keys.ip()
            ),
        )?;
        api_policy(
            cluster,
            "require-jwt",
            "",
            &format!("  action: ALLOW\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"{ISSUER}/*\"]\n    when:\n    - key: request.auth.claims[org][team]\n      values: [mesh]\n"),
        )?;
        let call = |token: Option<&str>| -> Result<httpapp::Reply> {
            let header = token.map(|t| format!("Authorization: Bearer {t}"));
            let args: Vec<&str> = header.iter().flat_map(|h| ["--header", h.as_str()]).collect();
            httpapp::get_one(&web, &url, &args)
        };

        let alice = first.token(&claims("alice", |_| {}));
        converge("the key set fetched by node-2 and alice let in", || Ok(call(Some(&alice))?.status == 200))?;
        let seen = call(Some(&alice))?.seen()?;
        ensure!(seen["headers"]["x-jwt-sub"] == "alice", "outputClaimToHeaders: {seen}");
        ensure!(seen["headers"].get("authorization").is_none(), "the token was forwarded: {seen}");

        let now = jwt::claims(ISSUER, "x", 0)["iat"].as_i64().context("iat")?;
        let cases: Vec<(&str, String, u16)> = vec![
            ("no token: the policy needs a request principal", String::new(), 403),
            ("another team", first.token(&claims("bob", |c| c["org"]["team"] = "red".into())), 403),
            ("expired", first.token(&claims("alice", |c| c["exp"] = (now - 600).into())), 401),
            ("not yet valid", first.token(&claims("alice", |c| c["nbf"] = (now + 600).into())), 401),
            ("another issuer", first.token(&claims("alice", |c| c["iss"] = "https://evil.test".into())), 401),
            ("another audience", first.token(&claims("alice", |c| c["aud"] = "bank".into())), 403),
            ("a key the set does not hold", second.token(&claims("alice", |_| {})), 401),
            ("alg none", jwt::unsigned_token(&claims("alice", |_| {})), 401),
            ("HS256", jwt::hs256_token(b"secret", &claims("alice", |_| {})), 401),
            ("not a token", "not-a-jwt".into(), 401),
        ];
        for (what, token, want) in &cases {
            let reply = call((!token.is_empty()).then_some(token.as_str()))?;
            ensure!(reply.status == *want, "{what}: got {} ({}), want {want}", reply.status, reply.body);
        }
        let refused = call(Some("not-a-jwt"))?;
        ensure!(
            refused.header("www-authenticate").is_some_and(|v| v.contains("invalid_token")),
            "a 401 says why: {refused:?}"
        );
        // The server side's lines say why as Envoy's jwt_authn and RBAC
        // filters do, spaces made underscores.
        let lines: Vec<_> = access_log_entries(cluster, "node-2")?
            .into_iter()
            .filter(|e| is_http(e) && !is_client(e))
            .collect();
        for (status, details) in [
            (401, "jwt_authn_access_denied{Jwt_is_expired}"),
            (401, "jwt_authn_access_denied{Jwt_not_yet_valid}"),
            (
                401,
                "jwt_authn_access_denied{Jwt_is_not_in_the_form_of_Header.Payload.Signature_with_two_dots_and_3_sections}",
            ),
            (403, "rbac_access_denied_matched_policy[none]"),
            (200, "via_upstream"),
        ] {
            ensure!(
                lines.iter().any(|e| e["response_code"] == status
                    && e["response_code_details"] == details
                    && (status == 200 || e["upstream_host"].is_null())),
                "no {status} line with the details {details}:\n{}",
                last_entries(&lines, 12)
            );
        }

        // Key rotation: the set now holds only the second key.
        std::fs::write(&jwks, jwt::jwks_json(&[&second]))?;
        let bob = second.token(&claims("bob", |_| {}));
        converge("the rotated key set picked up", || {
            Ok(call(Some(&bob))?.status == 200 && call(Some(&alice))?.status == 401)
        })?;
        // The key server breaks: the last good keys stay in use.
        std::fs::write(&jwks, "garbage")?;
        std::thread::sleep(std::time::Duration::from_secs(3));
        ensure!(call(Some(&bob))?.status == 200, "a failed refresh dropped the keys");
        let stats = cluster.node("node-2")?.admin_json("/stats")?;
        ensure!(
            stats["http_requests_authorized"]["unauthenticated"].as_u64().unwrap_or(0) > 0,
            "401s not counted: {stats}"
        );

        // Where the token is: a header of its own (with its prefix) or a
        // query parameter, and then not `Authorization` (Istio's rule);
        // the payload handed to the app, and the token kept for it.
        std::fs::write(&jwks, jwt::jwks_json(&[&second]))?;
        apply(
            cluster,
            "jwt",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  jwtRules:\n  - issuer: {ISSUER}\n    audiences: [shop]\n    jwksUri: https://{}:8443/jwks.json\n    fromHeaders:\n    - name: x-jwt\n      prefix: \"Bearer \"\n    fromParams: [access_token]\n    outputPayloadToHeader: x-jwt-payload\n    forwardOriginalToken: true\n",
                keys.ip()
            ),
        )?;
        let in_header = format!("x-jwt: Bearer {bob}");
        let by_header = || httpapp::get_one(&web, &url, &["--header", &in_header]);
        converge("the token looked for in x-jwt", || Ok(by_header()?.status == 200))?;
        let seen = by_header()?.seen()?;
        let payload = bob.split('.').nth(1).context("a JWT's payload")?;
        ensure!(
            seen["headers"]["x-jwt-payload"] == payload && seen["headers"]["x-jwt"] == in_header["x-jwt: ".len()..],
            "outputPayloadToHeader and forwardOriginalToken: {seen}"
        );
        let by_param = httpapp::get_one(&web, &format!("{url}?access_token={bob}"), &[])?;
        ensure!(by_param.status == 200, "the token in a query parameter: {by_param:?}");
        ensure!(
            call(Some(&bob))?.status == 403,
            "with fromHeaders and fromParams, Authorization is not looked at: no principal"
        );

        // The key set inline (`jwks`), no key server: the first key only.
        apply(
            cluster,
            "jwt",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  jwtRules:\n  - issuer: {ISSUER}\n    audiences: [shop]\n    jwks: '{}'\n",
                jwt::jwks_json(&[&first])
            ),
        )?;
        converge("the inline key set", || {
            Ok(call(Some(&alice))?.status == 200 && call(Some(&bob))?.status == 401)
        })?;

        // Conditions on the request's principal and audiences.
        api_policy(
            cluster,
            "deny-principals",
            "",
            &format!(
                "  action: DENY\n  rules:\n  - when:\n    - key: request.auth.principal\n      values: [\"{ISSUER}/mallory\"]\n  - when:\n    - key: request.auth.audiences\n      values: [shop]\n    - key: request.headers[x-aud]\n      values: [\"yes\"]\n  - when:\n    - key: request.auth.presenter\n      values: [evil-app]\n"
            ),
        )?;
        let mallory = first.token(&claims("mallory", |_| {}));
        converge("the principals' DENY", || Ok(call(Some(&mallory))?.status == 403))?;
        ensure!(call(Some(&alice))?.status == 200, "another principal is let in");
        let header = format!("Authorization: Bearer {alice}");
        let with_aud = httpapp::get_one(&web, &url, &["--header", &header, "--header", "x-aud: yes"])?;
        ensure!(with_aud.status == 403, "the token's audience and the header: {with_aud:?}");
        // The presenter is the token's `azp`: a token presented by another
        // party (the same subject) is let in.
        let evil = first.token(&claims("alice", |c| c["azp"] = "evil-app".into()));
        ensure!(call(Some(&evil))?.status == 403, "a token presented by evil-app");
        let fair = first.token(&claims("alice", |c| c["azp"] = "web-app".into()));
        ensure!(call(Some(&fair))?.status == 200, "a token presented by web-app");

        // The token in a cookie (`fromCookies`): once set, the
        // `Authorization` header is not read.
        apply(
            cluster,
            "jwt",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  jwtRules:\n  - issuer: {ISSUER}\n    audiences: [shop]\n    jwks: '{}'\n    fromCookies: [session]\n",
                jwt::jwks_json(&[&first])
            ),
        )?;
        let in_cookie = format!("Cookie: theme=dark; session={alice}");
        let by_cookie = || -> Result<u16> { Ok(httpapp::get_one(&web, &url, &["--header", &in_cookie])?.status) };
        converge("the token read from the cookie", || Ok(by_cookie()? == 200))?;
        ensure!(call(Some(&alice))?.status == 403, "the Authorization header is read beside fromCookies");
        let bad_cookie = format!("Cookie: session={}", second.token(&claims("alice", |_| {})));
        let bad = httpapp::get_one(&web, &url, &["--header", &bad_cookie])?;
        ensure!(bad.status == 401, "a cookie's token signed by an unknown key: {bad:?}");
        Ok(())
    })
}
