//! Where tokens are read, what happens to the request after, and how
//! several rules share a request.

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderName;
use serde_json::{Value, json};

use super::{
    bearer,
    keys::{ISSUER, Signer, claims, now},
    request, rule,
};
use crate::authn::{
    Authenticator, AuthnError, ClaimToHeader, HeaderLocation, JwtRule, KeySource, jwt::BASE64URL,
    realm,
};

fn header<'p>(parts: &'p http::request::Parts, name: &str) -> Option<&'p str> {
    parts.headers.get(name).map(|v| v.to_str().unwrap())
}

#[test]
fn default_locations_are_bearer_and_access_token() {
    let signer = Signer::es256();
    let rules = [Arc::new(rule(&signer))];
    let authn = Authenticator::default();
    let token = signer.token(&claims());

    let mut parts = bearer(&token);
    let auth = authn
        .authenticate(&rules, &mut parts, now())
        .unwrap()
        .unwrap();
    assert_eq!(auth.principal, format!("{ISSUER}/alice"));
    // Not forwarded by default: the header is gone.
    assert_eq!(header(&parts, "authorization"), None);

    let mut parts = request(&format!("http://svc/p?a=1&access_token={token}&b=2"), &[]);
    assert!(
        authn
            .authenticate(&rules, &mut parts, now())
            .unwrap()
            .is_some()
    );
    assert_eq!(parts.uri.to_string(), "http://svc/p?a=1&b=2");

    // Anything else is no token at all.
    for headers in [
        vec![],
        vec![("authorization", format!("Basic {token}"))],
        vec![("authorization", format!("bearer {token}"))],
        vec![("x-jwt", token.clone())],
        vec![("cookie", format!("access_token={token}"))],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut parts = request(&format!("http://svc/p?token={token}"), &headers);
        let before = parts.headers.clone();
        assert_eq!(authn.authenticate(&rules, &mut parts, now()), Ok(None));
        assert_eq!(parts.headers, before);
    }
    // No rules: nothing is looked at.
    let mut parts = bearer("garbage");
    assert_eq!(authn.authenticate(&[], &mut parts, now()), Ok(None));
    assert!(header(&parts, "authorization").is_some());
}

#[test]
fn custom_header_param_and_cookie_locations() {
    let signer = Signer::eddsa();
    let mut custom = rule(&signer);
    custom.from_headers = vec![HeaderLocation {
        name: HeaderName::from_static("x-jwt-assertion"),
        prefix: "Istio ".into(),
    }];
    custom.from_params = vec!["token".into()];
    custom.from_cookies = vec!["session".into()];
    let rules = [Arc::new(custom)];
    let authn = Authenticator::default();
    let token = signer.token(&claims());

    let mut parts = request(
        "http://svc/",
        &[("x-jwt-assertion", &format!("Istio {token}"))],
    );
    assert!(
        authn
            .authenticate(&rules, &mut parts, now())
            .unwrap()
            .is_some()
    );
    assert_eq!(header(&parts, "x-jwt-assertion"), None);

    let mut parts = request(&format!("http://svc/q?token={token}"), &[]);
    assert!(
        authn
            .authenticate(&rules, &mut parts, now())
            .unwrap()
            .is_some()
    );
    assert_eq!(parts.uri.query(), None);

    let cookie = format!("theme=dark; session={token}");
    let mut parts = request("http://svc/", &[("cookie", &cookie)]);
    assert!(
        authn
            .authenticate(&rules, &mut parts, now())
            .unwrap()
            .is_some()
    );
    // Envoy leaves cookies alone.
    assert_eq!(header(&parts, "cookie"), Some(cookie.as_str()));

    // The default locations are not read by a rule that names its own.
    let mut parts = bearer(&token);
    assert_eq!(authn.authenticate(&rules, &mut parts, now()), Ok(None));
    assert!(header(&parts, "authorization").is_some());

    // A bad token in a custom location is refused like any other.
    let mut parts = request("http://svc/", &[("x-jwt-assertion", "Istio a.b.c")]);
    assert_eq!(
        authn.authenticate(&rules, &mut parts, now()),
        Err(AuthnError::HeaderBadBase64)
    );
}

#[test]
fn forward_original_token_keeps_it() {
    let signer = Signer::es384();
    let mut keep = rule(&signer);
    keep.forward_original_token = true;
    let rules = [Arc::new(keep)];
    let token = signer.token(&claims());
    let mut parts = bearer(&token);
    assert!(
        Authenticator::default()
            .authenticate(&rules, &mut parts, now())
            .unwrap()
            .is_some()
    );
    assert_eq!(
        header(&parts, "authorization"),
        Some(format!("Bearer {token}").as_str())
    );
}

#[test]
fn payload_and_claims_are_copied_to_headers_and_cannot_be_forged() {
    let signer = Signer::es256();
    let mut outputs = rule(&signer);
    outputs.output_payload_to_header = Some(HeaderName::from_static("x-jwt-payload"));
    outputs.output_claim_to_headers = [
        ("x-sub", "sub"),
        ("x-level", "level"),
        ("x-ratio", "ratio"),
        ("x-admin", "admin"),
        ("x-team", "org.team"),
        ("x-groups", "groups"),
        ("x-empty", "empty"),
        ("x-missing", "missing"),
    ]
    .into_iter()
    .map(|(header, claim)| ClaimToHeader {
        header: HeaderName::from_static(header),
        claim: claim.into(),
    })
    .collect();
    let rules = [Arc::new(outputs)];
    let authn = Authenticator::default();
    let mut claims = claims();
    for (name, value) in [
        ("level", json!(3)),
        ("ratio", json!(1.5)),
        ("admin", json!(true)),
        ("org", json!({"team": "payments"})),
        ("groups", json!(["a", "b"])),
        ("empty", json!("")),
    ] {
        claims[name] = value;
    }
    let token = signer.token(&claims);
    let forged = [
        ("x-jwt-payload", "forged"),
        ("x-sub", "mallory"),
        ("x-missing", "forged"),
    ];
    let mut parts = bearer(&token);
    for (name, value) in forged {
        parts.headers.insert(name, value.parse().unwrap());
    }
    authn
        .authenticate(&rules, &mut parts, now())
        .unwrap()
        .unwrap();

    let payload = BASE64URL
        .decode(header(&parts, "x-jwt-payload").unwrap())
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), claims);
    assert_eq!(parts.headers.get_all("x-jwt-payload").iter().count(), 1);
    assert_eq!(header(&parts, "x-sub"), Some("alice"));
    assert_eq!(parts.headers.get_all("x-sub").iter().count(), 1);
    assert_eq!(header(&parts, "x-level"), Some("3"));
    assert_eq!(header(&parts, "x-ratio"), Some("1.500000"));
    assert_eq!(header(&parts, "x-admin"), Some("true"));
    assert_eq!(header(&parts, "x-team"), Some("payments"));
    for absent in ["x-groups", "x-empty", "x-missing"] {
        assert_eq!(header(&parts, absent), None, "{absent}");
    }

    // Without a token the forged headers are removed all the same.
    let mut parts = request("http://svc/", &forged);
    assert_eq!(authn.authenticate(&rules, &mut parts, now()), Ok(None));
    assert!(parts.headers.is_empty());
}

#[test]
fn several_rules_each_take_their_issuers_tokens_where_they_read() {
    let (a, b) = (Signer::es256(), Signer::rsa("PS256"));
    let rule_a = JwtRule::new("issuer-a", KeySource::Inline(Arc::new(a.jwks())));
    let mut rule_b = JwtRule::new("issuer-b", KeySource::Inline(Arc::new(b.jwks())));
    rule_b.audiences = vec!["api.example.com".into()];
    let rules = [Arc::new(rule_a.clone()), Arc::new(rule_b)];
    let authn = Authenticator::default();
    let token = |signer: &Signer, iss: &str| {
        let mut claims = claims();
        claims["iss"] = json!(iss);
        signer.token(&claims)
    };

    let by_a = authn.authenticate(&rules, &mut bearer(&token(&a, "issuer-a")), now());
    assert_eq!(by_a.unwrap().unwrap().principal, "issuer-a/alice");
    let by_b = authn.authenticate(&rules, &mut bearer(&token(&b, "issuer-b")), now());
    assert_eq!(by_b.unwrap().unwrap().principal, "issuer-b/alice");
    // Issuer B's claim on A's key: B's rule checks it, and refuses it.
    assert_eq!(
        authn.authenticate(&rules, &mut bearer(&token(&a, "issuer-b")), now()),
        Err(AuthnError::KidAlgMismatch)
    );
    assert_eq!(
        authn.authenticate(&rules, &mut bearer(&token(&a, "issuer-c")), now()),
        Err(AuthnError::UnknownIssuer)
    );

    // A reads only x-a: its token in Authorization has no rule there.
    let mut only_x = rule_a;
    only_x.from_headers = vec![HeaderLocation {
        name: HeaderName::from_static("x-a"),
        prefix: String::new(),
    }];
    let b_rule = JwtRule::new("issuer-b", KeySource::Inline(Arc::new(b.jwks())));
    let rules = [Arc::new(only_x), Arc::new(b_rule)];
    assert_eq!(
        authn.authenticate(&rules, &mut bearer(&token(&a, "issuer-a")), now()),
        Err(AuthnError::UnknownIssuer)
    );
    // Both tokens where their rules read them: both must be valid, and the
    // first found (headers before parameters) is the identity.
    let uri = format!("http://svc/?access_token={}", token(&b, "issuer-b"));
    let a_token = token(&a, "issuer-a");
    let mut parts = request(&uri, &[("x-a", a_token.as_str())]);
    let auth = authn
        .authenticate(&rules, &mut parts, now())
        .unwrap()
        .unwrap();
    assert_eq!(auth.principal, "issuer-a/alice");
    assert_eq!(header(&parts, "x-a"), None);
    assert_eq!(parts.uri.query(), None);
    // A valid token does not excuse an invalid one.
    let uri = format!("http://svc/?access_token={}", token(&b, "issuer-a"));
    let mut parts = request(&uri, &[("x-a", a_token.as_str())]);
    assert_eq!(
        authn.authenticate(&rules, &mut parts, now()),
        Err(AuthnError::UnknownIssuer)
    );
}

#[test]
fn claims_read_as_authorization_policy_reads_them() {
    let signer = Signer::es256();
    let mut claims = claims();
    claims["scope"] = json!("read  write");
    claims["groups"] = json!(["dev", 7, "ops"]);
    claims["org"] = json!({"team": "payments", "scope": "a b"});
    let auth = super::check(
        &Authenticator::default(),
        &rule(&signer),
        &signer.token(&claims),
    )
    .unwrap()
    .unwrap();
    assert_eq!(auth.claim_strings(&["scope"]), ["read", "write"]);
    assert_eq!(auth.claim_strings(&["groups"]), ["dev", "ops"]);
    assert_eq!(auth.claim_strings(&["org", "team"]), ["payments"]);
    assert_eq!(auth.claim_strings(&["org", "scope"]), ["a b"]);
    assert_eq!(auth.claim_strings(&["org"]), Vec::<&str>::new());
    assert_eq!(auth.claim(&["missing"]), None);
}

#[test]
fn failures_carry_envoys_reply() {
    let error = AuthnError::Expired;
    assert_eq!(error.to_string(), "Jwt is expired");
    assert_eq!(error.status(), http::StatusCode::UNAUTHORIZED);
    let parts = request("http://svc.demo:8080/api/items?x=1", &[]);
    let realm = realm("http", &parts);
    assert_eq!(realm, "http://svc.demo:8080/api/items?x=1");
    assert_eq!(
        error.www_authenticate(&realm),
        "Bearer realm=\"http://svc.demo:8080/api/items?x=1\", error=\"invalid_token\""
    );
    let long = request(&format!("/{}", "p".repeat(400)), &[("host", "h")]);
    assert_eq!(realm_len(&long), "http://h".len() + 256);
}

fn realm_len(parts: &http::request::Parts) -> usize {
    realm("http", parts).len()
}
