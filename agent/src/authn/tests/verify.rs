//! Token validity: algorithms, time, issuer, audiences, keys, hostile
//! tokens, and the verified-token cache.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    bearer, check,
    keys::{ISSUER, Signer, claims, encode_json, now, unix},
    rule,
};
use crate::authn::{
    Authenticator, AuthnError, Jwks, JwtRule, KeySource, MAX_TOKEN_LEN, jwt::BASE64URL,
};
use base64::Engine as _;

#[test]
fn every_algorithm_family_verifies() {
    let signers = [
        Signer::rsa("RS256"),
        Signer::rsa("RS384"),
        Signer::rsa("RS512"),
        Signer::rsa("PS256"),
        Signer::rsa("PS384"),
        Signer::rsa("PS512"),
        Signer::es256(),
        Signer::es384(),
        Signer::eddsa(),
    ];
    let authn = Authenticator::default();
    for signer in &signers {
        let auth = check(&authn, &rule(signer), &signer.token(&claims()))
            .unwrap_or_else(|e| panic!("{}: {e}", signer.jwk()))
            .expect("a token was present");
        assert_eq!(auth.principal, format!("{ISSUER}/alice"));
        assert_eq!(auth.issuer, ISSUER);
        assert_eq!(auth.subject, "alice");
        assert_eq!(auth.audiences, ["api.example.com"]);
        assert_eq!(auth.presenter.as_deref(), Some("web-client"));
        assert_eq!(auth.claims["azp"], "web-client");
    }
    assert_eq!(authn.signature_checks(), signers.len() as u64);
}

#[test]
fn time_claims_allow_sixty_seconds_of_skew() {
    let signer = Signer::es256();
    let rule = rule(&signer);
    let authn = Authenticator::default();
    let now = unix(now());
    let with = |field: &str, value: u64| {
        let mut claims = claims();
        claims[field] = json!(value);
        signer.token(&claims)
    };
    assert_eq!(
        check(&authn, &rule, &with("exp", now - 3600)),
        Err(AuthnError::Expired)
    );
    assert_eq!(
        check(&authn, &rule, &with("exp", now - 60)),
        Err(AuthnError::Expired)
    );
    assert!(
        check(&authn, &rule, &with("exp", now - 59))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        check(&authn, &rule, &with("nbf", now + 3600)),
        Err(AuthnError::NotYetValid)
    );
    assert!(
        check(&authn, &rule, &with("nbf", now + 60))
            .unwrap()
            .is_some()
    );

    // Without skew: refused from `exp` on, accepted from `nbf` on.
    let strict = Authenticator::new(16, Duration::ZERO);
    assert_eq!(
        check(&strict, &rule, &with("exp", now)),
        Err(AuthnError::Expired)
    );
    assert!(
        check(&strict, &rule, &with("exp", now + 1))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        check(&strict, &rule, &with("nbf", now + 1)),
        Err(AuthnError::NotYetValid)
    );
    assert!(check(&strict, &rule, &with("nbf", now)).unwrap().is_some());

    // A token without `exp` does not expire (Istio sets no
    // `require_expiration`).
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert!(
        check(&authn, &rule, &signer.token(&claims))
            .unwrap()
            .is_some()
    );
}

#[test]
fn an_issuer_without_a_rule_is_refused() {
    let signer = Signer::es256();
    let mut claims = claims();
    claims["iss"] = json!("https://other.example.com");
    let result = check(
        &Authenticator::default(),
        &rule(&signer),
        &signer.token(&claims),
    );
    assert_eq!(result, Err(AuthnError::UnknownIssuer));
    assert_eq!(
        result.unwrap_err().to_string(),
        "Jwt issuer is not configured"
    );
}

#[test]
fn audiences_must_intersect_when_the_rule_lists_some() {
    let signer = Signer::es256();
    let mut rule = rule(&signer);
    rule.audiences = vec!["https://api.example.com/".into(), "other".into()];
    let authn = Authenticator::default();
    let with_aud = |aud: Value| {
        let mut claims = claims();
        claims["aud"] = aud;
        signer.token(&claims)
    };
    // Compared without scheme and trailing slash, as Envoy does.
    assert!(
        check(&authn, &rule, &with_aud(json!("api.example.com")))
            .unwrap()
            .is_some()
    );
    assert!(
        check(&authn, &rule, &with_aud(json!(["x", "other"])))
            .unwrap()
            .is_some()
    );
    let refused = check(&authn, &rule, &with_aud(json!(["x", "y"]))).unwrap_err();
    assert_eq!(refused, AuthnError::AudienceNotAllowed);
    assert_eq!(refused.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(refused.to_string(), "Audiences in Jwt are not allowed");

    let mut no_aud = claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        check(&authn, &rule, &signer.token(&no_aud)),
        Err(AuthnError::AudienceNotAllowed)
    );
    assert_eq!(
        check(&authn, &rule, &with_aud(json!(7))),
        Err(AuthnError::ClaimType {
            claim: "aud",
            expected: "a string or string list"
        })
    );
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let trusted = Signer::es256().kid(Some("k1"));
    let impostor = Signer::es256().kid(Some("k1"));
    let rule = rule(&trusted);
    let authn = Authenticator::default();
    let refused = check(&authn, &rule, &impostor.token(&claims())).unwrap_err();
    assert_eq!(refused, AuthnError::VerificationFail);
    assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
    assert_eq!(refused.to_string(), "Jwt verification fails");

    // Another kid: no key to try.
    let other_kid = Signer::es256().kid(Some("k2"));
    assert_eq!(
        check(&authn, &rule, &other_kid.token(&claims())),
        Err(AuthnError::KidAlgMismatch)
    );
    // No kid: every key of the right type is tried.
    let no_kid = Signer::es256().kid(None);
    assert_eq!(
        check(&authn, &rule, &no_kid.token(&claims())),
        Err(AuthnError::VerificationFail)
    );
    // A key of another type: nothing to try.
    let rsa = Signer::rsa("RS256").kid(None);
    assert_eq!(
        check(&authn, &rule, &rsa.token(&claims())),
        Err(AuthnError::KidAlgMismatch)
    );
    // A rule whose key set is unusable refuses every token.
    let empty = JwtRule::new(ISSUER, KeySource::Inline(Arc::new(Jwks::default())));
    assert_eq!(
        check(&authn, &empty, &trusted.token(&claims())),
        Err(AuthnError::NoValidKeys)
    );
    // The trusted key without kid in the set still verifies a token with one.
    let keyless = JwtRule::new(
        ISSUER,
        KeySource::Inline(Arc::new(Signer::rsa("RS256").kid(None).jwks())),
    );
    assert!(
        check(&authn, &keyless, &Signer::rsa("RS256").token(&claims()))
            .unwrap()
            .is_some()
    );
}

#[test]
fn alg_none_and_hmac_are_refused() {
    let signer = Signer::es256();
    let rule = rule(&signer);
    let authn = Authenticator::default();
    let header = encode_json(&json!({"alg": "none", "typ": "JWT"}));
    let payload = encode_json(&claims());
    // An unsecured JWT has an empty signature: not three sections.
    assert_eq!(
        check(&authn, &rule, &format!("{header}.{payload}.")),
        Err(AuthnError::BadFormat)
    );
    assert_eq!(
        check(&authn, &rule, &format!("{header}.{payload}.c2ln")),
        Err(AuthnError::AlgNotSupported)
    );
    for alg in ["HS256", "HS384", "HS512", "ES512", "RS1", "", "NONE"] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
        let header = encode_json(&json!({"alg": alg, "kid": "es256"}));
        let signed = format!("{header}.{payload}");
        let tag = ring::hmac::sign(&key, signed.as_bytes());
        let token = format!("{signed}.{}", BASE64URL.encode(tag.as_ref()));
        assert_eq!(
            check(&authn, &rule, &token),
            Err(AuthnError::AlgNotSupported),
            "{alg}"
        );
    }
    // The key's signature under a header claiming another alg is refused.
    let lying = signer.token_with_header(&json!({"alg": "ES384", "kid": "es256"}), &claims());
    assert_eq!(
        check(&authn, &rule, &lying),
        Err(AuthnError::KidAlgMismatch)
    );
    assert_eq!(authn.signature_checks(), 1);
}

#[test]
fn hostile_tokens_are_refused_without_panicking() {
    let signer = Signer::es256();
    let rule = rule(&signer);
    let authn = Authenticator::default();
    let valid = signer.token(&claims());
    let (header, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let b64 = |s: &str| BASE64URL.encode(s);
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    let cases: Vec<(String, AuthnError)> = vec![
        ("".into(), AuthnError::BadFormat),
        ("abc".into(), AuthnError::BadFormat),
        ("a.b".into(), AuthnError::BadFormat),
        ("a.b.c.d".into(), AuthnError::BadFormat),
        ("..".into(), AuthnError::BadFormat),
        (
            format!("{header}.{payload}.{signature}."),
            AuthnError::BadFormat,
        ),
        ("!!!.###.$$$".into(), AuthnError::BadFormat),
        ("ab!.cd.ef".into(), AuthnError::HeaderBadBase64),
        (
            format!("{}.{payload}.{signature}", b64("not json")),
            AuthnError::HeaderBadJson,
        ),
        (
            format!("{}.{payload}.{signature}", b64("[1,2]")),
            AuthnError::HeaderBadJson,
        ),
        (
            format!("{}.{payload}.{signature}", b64(&nested(20_000))),
            AuthnError::HeaderBadJson,
        ),
        (
            format!("{}.{payload}.{signature}", b64("{}")),
            AuthnError::HeaderBadAlg,
        ),
        (
            format!("{}.{payload}.{signature}", b64(r#"{"alg":7}"#)),
            AuthnError::HeaderBadAlg,
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                b64(r#"{"alg":"ES256","kid":[1]}"#)
            ),
            AuthnError::HeaderBadKid,
        ),
        (
            format!("{header}.%%%.{signature}"),
            AuthnError::PayloadBadBase64,
        ),
        (
            format!("{header}.{}.{signature}", b64("\"str\"")),
            AuthnError::PayloadBadJson,
        ),
        (
            format!("{header}.{}.{signature}", b64("{")),
            AuthnError::PayloadBadJson,
        ),
        (
            format!(
                "{header}.{}.{signature}",
                b64(&format!("{{\"a\":{}}}", nested(20_000)))
            ),
            AuthnError::PayloadBadJson,
        ),
        (
            format!("{header}.{}.{signature}", b64(r#"{"exp":"soon"}"#)),
            AuthnError::ClaimType {
                claim: "exp",
                expected: "an integer",
            },
        ),
        (
            format!("{header}.{}.{signature}", b64(r#"{"nbf":-5}"#)),
            AuthnError::ClaimType {
                claim: "nbf",
                expected: "a positive 64 bit integer",
            },
        ),
        (
            format!("{header}.{}.{signature}", b64(r#"{"iss":{"a":1}}"#)),
            AuthnError::ClaimType {
                claim: "iss",
                expected: "a string",
            },
        ),
        (
            format!("{header}.{payload}.***"),
            AuthnError::SignatureBadBase64,
        ),
        (
            format!("{header}.{payload}.AAAA"),
            AuthnError::VerificationFail,
        ),
        ("a".repeat(MAX_TOKEN_LEN + 1), AuthnError::TooLarge),
        (
            format!("{header}.{}.{signature}", "A".repeat(1 << 20)),
            AuthnError::TooLarge,
        ),
    ];
    for (token, expected) in cases {
        let shown: String = token.chars().take(60).collect();
        assert_eq!(check(&authn, &rule, &token), Err(expected), "{shown}");
    }

    // Non-UTF-8 bytes in the header value are not a token either.
    let mut parts = bearer("x");
    parts.headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_bytes(b"Bearer \xff\xfe.a.b").unwrap(),
    );
    assert!(
        authn
            .authenticate(&[Arc::new(rule.clone())], &mut parts, now())
            .is_err()
    );

    // Nesting within serde_json's limit is an ordinary claim.
    let mut deep = claims();
    deep["deep"] = serde_json::from_str(&nested(100)).unwrap();
    let auth = check(&authn, &rule, &signer.token(&deep)).unwrap().unwrap();
    assert!(auth.claims["deep"].is_array());
}

#[test]
fn a_cached_token_skips_the_signature_but_not_the_checks() {
    let signer = Signer::rsa("RS256");
    let rule = rule(&signer);
    let authn = Authenticator::new(16, Duration::ZERO);
    let token = signer.token(&claims());
    let first = check(&authn, &rule, &token).unwrap().unwrap();
    for _ in 0..5 {
        let again = check(&authn, &rule, &token).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }
    assert_eq!(authn.signature_checks(), 1);
    assert_eq!(authn.cached_tokens(), 1);

    // Time is checked on every hit.
    let exp = claims()["exp"].as_u64().unwrap();
    let at_exp = keys_time(exp);
    let rules = [Arc::new(rule.clone())];
    assert_eq!(
        authn.authenticate(&rules, &mut bearer(&token), at_exp),
        Err(AuthnError::Expired)
    );
    // So are the rule's audiences...
    let mut narrower = rule.clone();
    narrower.audiences = vec!["elsewhere".into()];
    assert_eq!(
        check(&authn, &narrower, &token),
        Err(AuthnError::AudienceNotAllowed)
    );
    // ...and its keys: a rule that no longer trusts the key verifies again.
    let rotated = super::rule(&Signer::rsa("RS256").kid(Some("other")));
    assert_eq!(
        check(&authn, &rotated, &token),
        Err(AuthnError::KidAlgMismatch)
    );
    assert_eq!(authn.signature_checks(), 2);
    // A failed token is not cached.
    let bad = Signer::es256().token(&claims());
    for _ in 0..3 {
        assert!(check(&authn, &rule, &bad).is_err());
    }
    assert_eq!(authn.cached_tokens(), 1);
}

fn keys_time(unix_seconds: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(unix_seconds)
}

#[test]
fn the_cache_is_bounded_and_evicts_expired_tokens_first() {
    let signer = Signer::es256();
    let rule = rule(&signer);
    let authn = Authenticator::new(4, Duration::ZERO);
    let now = unix(now());
    let token_expiring = |exp: u64, n: u64| {
        let mut claims = claims();
        claims["exp"] = json!(exp);
        claims["n"] = json!(n);
        signer.token(&claims)
    };
    let soon = token_expiring(now + 1, 0);
    let tokens: Vec<String> = (1..4).map(|n| token_expiring(now + 3600, n)).collect();
    assert!(check(&authn, &rule, &soon).unwrap().is_some());
    for token in &tokens {
        assert!(check(&authn, &rule, token).unwrap().is_some());
    }
    assert_eq!(authn.cached_tokens(), 4);
    // Later, the expired token makes room.
    let later = keys_time(now + 10);
    let rules = [Arc::new(rule.clone())];
    let fifth = token_expiring(now + 3600, 5);
    assert!(
        authn
            .authenticate(&rules, &mut bearer(&fifth), later)
            .unwrap()
            .is_some()
    );
    assert_eq!(authn.cached_tokens(), 4);
    let checks = authn.signature_checks();
    for token in &tokens {
        assert!(
            authn
                .authenticate(&rules, &mut bearer(token), later)
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(
        authn.signature_checks(),
        checks,
        "the live tokens stayed cached"
    );
    // Full of live tokens: the oldest goes.
    let sixth = token_expiring(now + 3600, 6);
    assert!(
        authn
            .authenticate(&rules, &mut bearer(&sixth), later)
            .unwrap()
            .is_some()
    );
    assert_eq!(authn.cached_tokens(), 4);
    assert!(
        authn
            .authenticate(&rules, &mut bearer(&tokens[0]), later)
            .unwrap()
            .is_some()
    );
    assert_eq!(authn.signature_checks(), checks + 2);
}

/// The hot path: a cached token, one rule, the default locations. The
/// target is a median under 10 µs in an optimised build; the bound here
/// leaves room for the test profile and a busy machine.
#[test]
fn a_cached_token_is_cheap() {
    let signer = Signer::rsa("RS256");
    let rules = [Arc::new(rule(&signer))];
    let authn = Authenticator::default();
    let token = signer.token(&claims());
    let template = bearer(&token);
    let mut samples = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.uri = template.uri.clone();
        parts.headers = template.headers.clone();
        let start = Instant::now();
        let auth = authn.authenticate(&rules, &mut parts, now());
        samples.push(start.elapsed());
        assert!(auth.unwrap().is_some());
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    println!(
        "cached token: p50 {p50:?}, p99 {:?}",
        samples[samples.len() * 99 / 100]
    );
    assert!(p50 < Duration::from_micros(10), "p50 {p50:?}");
    assert_eq!(authn.signature_checks(), 1);
}
