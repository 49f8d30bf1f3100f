//! Key set parsing: which keys are used, which are skipped and why.

use serde_json::json;

use super::keys::{Signer, jwks_json};
use crate::authn::{Jwks, JwksError, jwt::BASE64URL};
use base64::Engine as _;

#[test]
fn a_key_set_of_every_supported_type_parses() {
    let (rsa, es256, es384, ed) = (
        Signer::rsa("RS256"),
        Signer::es256(),
        Signer::es384(),
        Signer::eddsa(),
    );
    let jwks = Jwks::parse(jwks_json(&[&rsa, &es256, &es384, &ed])).unwrap();
    assert_eq!(jwks.len(), 4);
    assert!(jwks.skipped().is_empty());
    // A single JWK is taken as a set of one.
    let single = Jwks::parse(es256.jwk().to_string()).unwrap();
    assert_eq!(single.len(), 1);
}

#[test]
fn unusable_keys_are_skipped_with_a_reason() {
    let good = Signer::es256().jwk();
    let short_rsa = json!({
        "kty": "RSA", "kid": "short",
        "n": BASE64URL.encode([0xc5u8; 128]), "e": "AQAB",
    });
    let set = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0"},
        short_rsa,
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "P-256", "alg": "ES384", "x": good["x"], "y": good["y"]},
        {"kty": "OKP", "crv": "X25519", "x": good["x"]},
        {"kty": "RSA", "e": "AQAB"},
        {"kid": "no-type"},
        "not an object",
        good,
    ]});
    let jwks = Jwks::parse(set.to_string()).unwrap();
    assert_eq!(jwks.len(), 1);
    let skipped = jwks.skipped().join("\n");
    for reason in [
        "key 0: symmetric (oct) keys are not supported",
        "key 1 (kid \"short\"): the RSA modulus has 1024 bits; 2048 to 8192 are supported",
        "key 2: [crv] \"P-521\" is not supported (P-256, P-384)",
        "key 3: [alg] \"ES384\" does not fit [crv] of an EC key",
        "key 4: [crv] \"X25519\" is not supported (Ed25519)",
        "key 5: [n] is missing for an RSA key",
        "key 6 (kid \"no-type\"): [kty] is missing",
        "key 7: not a JSON object",
    ] {
        assert!(skipped.contains(reason), "{reason:?} not in:\n{skipped}");
    }
}

#[test]
fn a_set_without_usable_keys_says_why() {
    let error = Jwks::parse(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap_err();
    assert!(matches!(error, JwksError::NoUsableKey(_)));
    assert_eq!(
        error.to_string(),
        "the JWKS has no usable key: key 0: symmetric (oct) keys are not supported"
    );
    let empty = Jwks::parse(r#"{"keys": []}"#).unwrap_err();
    assert_eq!(
        empty.to_string(),
        "the JWKS has no usable key: [keys] is empty"
    );
    assert!(matches!(Jwks::parse("<html>"), Err(JwksError::Json(_))));
    assert!(matches!(Jwks::parse("[1]"), Err(JwksError::NotAKeySet)));
    assert!(matches!(
        Jwks::parse(r#"{"keys": {}}"#),
        Err(JwksError::NotAKeySet)
    ));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(Jwks::parse(deep), Err(JwksError::Json(_))));
}
