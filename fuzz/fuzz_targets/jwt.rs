//! End-user JWT authentication: `Jwks::parse` on a key set from the input,
//! and `Authenticator::authenticate` on a request head, which finds the
//! tokens (headers, query parameters, cookies), takes them apart
//! (`jwt.rs`: base64url sections, JSON header and claims), checks time,
//! audience and signature (ring) against the rules' keys, and edits the
//! request (token removed, payload and claims copied to headers). The
//! claims then go through AuthorizationPolicy's `request.auth.*` keys.
//!
//! Input: a request head (see `weft_fuzz::Head`); after an empty line, a
//! JWKS for the second rule. The first rule's keys are fixed
//! (`jwt_keys.json`), so that seed tokens signed with them verify.
#![no_main]

use std::{
    sync::{Arc, LazyLock},
    time::{Duration, UNIX_EPOCH},
};

use http::{HeaderName, Request};
use libfuzzer_sys::fuzz_target;
use weft_agent::{
    authn::{Authenticator, ClaimToHeader, HeaderLocation, Jwks, JwtRule, KeySource},
    policy::http::{self as policy_http, AttributeKey},
};
use weft_fuzz::Head;

static KEYS: LazyLock<Arc<Jwks>> = LazyLock::new(|| {
    Arc::new(Jwks::parse(include_str!("jwt_keys.json")).expect("the fixed key set parses"))
});

/// Inside the seed tokens' `nbf`..`exp`.
const NOW: Duration = Duration::from_secs(1_750_000_000);

fn rules(extra: Option<Arc<Jwks>>) -> Vec<Arc<JwtRule>> {
    let mut fixed = JwtRule::new(
        "https://issuer.example.com",
        KeySource::Inline(KEYS.clone()),
    );
    fixed.audiences = vec!["web".into(), "api.example.com".into()];
    fixed.output_payload_to_header = Some(HeaderName::from_static("x-jwt-payload"));
    fixed.output_claim_to_headers = vec![
        ClaimToHeader {
            header: HeaderName::from_static("x-jwt-team"),
            claim: "nested.team".into(),
        },
        ClaimToHeader {
            header: HeaderName::from_static("x-jwt-sub"),
            claim: "sub".into(),
        },
    ];
    let mut rules = vec![Arc::new(fixed)];
    if let Some(keys) = extra {
        let mut anyone = JwtRule::new("", KeySource::Inline(keys));
        anyone.from_headers = vec![HeaderLocation {
            name: HeaderName::from_static("x-token"),
            prefix: String::new(),
        }];
        anyone.from_params = vec!["token".into()];
        anyone.from_cookies = vec!["session".into()];
        anyone.forward_original_token = true;
        rules.push(Arc::new(anyone));
    }
    rules
}

fuzz_target!(|data: &[u8]| {
    let Some(head) = Head::parse(data) else {
        return;
    };
    let extra = Jwks::parse(&head.body).ok().map(Arc::new);
    let rules = rules(extra);
    let (mut parts, ()) = Request::builder()
        .method(head.method)
        .uri(head.uri)
        .body(())
        .expect("a method and URI that parsed")
        .into_parts();
    parts.headers = head.headers;
    let original = parts.clone();

    let now = UNIX_EPOCH + NOW;
    let authenticator = Authenticator::new(4, Duration::from_secs(60));
    let first = authenticator.authenticate(&rules, &mut parts, now);
    // Again, from the cache when it verified: the same answer.
    let mut again = original.clone();
    let second = authenticator.authenticate(&rules, &mut again, now);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the cache changed the answer: {first:?} then {second:?}"),
    }
    if let Err(error) = &first {
        let _ = error.status();
        let _ = error.www_authenticate("fuzz");
    }

    // What AuthorizationPolicy reads of the result.
    let auth = first.ok().flatten();
    let path = policy_http::normalize_path(parts.uri.path()).unwrap_or_default();
    let request = policy_http::Request {
        method: parts.method.as_str(),
        host: "web.default",
        path: &path,
        headers: &parts.headers,
        auth: auth.as_deref(),
        sni: None,
    };
    for key in [
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "request.auth.claims[groups]",
        "request.auth.claims[nested][team]",
        "request.headers[x-jwt-sub]",
    ] {
        let _ = AttributeKey::parse(key).values(&request);
    }
});
