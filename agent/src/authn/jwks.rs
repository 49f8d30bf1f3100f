//! JSON Web Key Sets (RFC 7517, keys as RFC 7518 and RFC 8037 define
//! them) and signature verification with ring.

use std::sync::Arc;

use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use super::{
    AuthnError,
    jwt::{Alg, BASE64URL},
};

/// The public keys of a JWKS that can verify tokens.
///
/// `Jwks::default()` is the empty set: every token checked against it
/// fails ("Jwks doesn't have any valid public key"), which is what a rule
/// whose `jwks` is unusable should do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Arc<PublicKey>>,
    /// Why keys of the set were left out (unsupported type, too short...).
    skipped: Vec<String>,
}

/// Why a JWKS cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the JWKS is neither a key set ({{\"keys\": [...]}}) nor a single JWK")]
    NotAKeySet,
    #[error("the JWKS has no usable key: {}", .0.join("; "))]
    NoUsableKey(Vec<String>),
}

/// One usable public key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PublicKey {
    kid: Option<String>,
    alg: Option<String>,
    material: Material,
}

#[derive(Debug, PartialEq, Eq)]
enum Material {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

impl Jwks {
    /// Parses a JWKS (`{"keys": [...]}`) or a single JWK. Keys this module
    /// cannot use (`oct`, P-521, RSA under 2048 bits, malformed ones) are
    /// skipped and listed by [`Jwks::skipped`]; a set left with no key is
    /// an error that says why each was skipped.
    pub fn parse(json: impl AsRef<[u8]>) -> Result<Jwks, JwksError> {
        let value: Value = serde_json::from_slice(json.as_ref()).map_err(JwksError::Json)?;
        let entries: Vec<&Value> = match &value {
            Value::Object(object) if object.contains_key("keys") => match &object["keys"] {
                Value::Array(keys) => keys.iter().collect(),
                _ => return Err(JwksError::NotAKeySet),
            },
            Value::Object(object) if object.contains_key("kty") => vec![&value],
            _ => return Err(JwksError::NotAKeySet),
        };
        let mut jwks = Jwks::default();
        for (index, entry) in entries.into_iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => jwks.keys.push(Arc::new(key)),
                Err(why) => {
                    let kid = entry
                        .get("kid")
                        .and_then(Value::as_str)
                        .map(|kid| format!(" (kid {kid:?})"))
                        .unwrap_or_default();
                    jwks.skipped.push(format!("key {index}{kid}: {why}"));
                }
            }
        }
        if jwks.keys.is_empty() {
            if jwks.skipped.is_empty() {
                jwks.skipped.push("[keys] is empty".to_string());
            }
            return Err(JwksError::NoUsableKey(jwks.skipped));
        }
        Ok(jwks)
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Why keys of the set were left out, one line per key.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Whether `key` is still one of this set's keys.
    pub(crate) fn contains(&self, key: &Arc<PublicKey>) -> bool {
        self.keys
            .iter()
            .any(|k| Arc::ptr_eq(k, key) || **k == **key)
    }

    /// Verifies `signature` over `signed` and returns the key that did. As
    /// jwt_verify_lib: a key whose `kid` differs from the token's (when
    /// both have one) or whose `alg` differs is not tried; "kid or alg"
    /// mismatch if no key was tried, "verification fails" otherwise. Unlike
    /// it, a key of a type that cannot produce `alg` is not tried either.
    pub(crate) fn verify(
        &self,
        alg: Alg,
        kid: Option<&str>,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<Arc<PublicKey>, AuthnError> {
        let mut tried = false;
        for key in &self.keys {
            if let (Some(want), Some(have)) = (kid, key.kid.as_deref())
                && want != have
            {
                continue;
            }
            if key.alg.as_deref().is_some_and(|have| have != alg.name()) {
                continue;
            }
            let Some(verified) = key.verify(alg, signed, signature)? else {
                continue;
            };
            tried = true;
            if verified {
                return Ok(key.clone());
            }
        }
        Err(if tried {
            AuthnError::VerificationFail
        } else {
            AuthnError::KidAlgMismatch
        })
    }
}

impl PublicKey {
    /// `None` if this key cannot make `alg` signatures, else whether the
    /// signature verifies.
    fn verify(&self, alg: Alg, signed: &[u8], sig: &[u8]) -> Result<Option<bool>, AuthnError> {
        let ok = match (&self.material, alg) {
            (Material::Rsa { n, e }, _) => {
                let params: &signature::RsaParameters = match alg {
                    Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return Ok(None),
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, signed, sig)
                    .is_ok()
            }
            (Material::Ec { curve, point }, Alg::ES256 | Alg::ES384) => {
                let algorithm = match (curve, alg) {
                    (Curve::P256, Alg::ES256) => &signature::ECDSA_P256_SHA256_FIXED,
                    (Curve::P384, Alg::ES384) => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return Ok(None),
                };
                UnparsedPublicKey::new(algorithm, point)
                    .verify(signed, sig)
                    .is_ok()
            }
            (Material::Ed25519(x), Alg::EdDSA) => {
                if sig.len() != 64 {
                    return Err(AuthnError::Ed25519SignatureLength);
                }
                UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(signed, sig)
                    .is_ok()
            }
            _ => return Ok(None),
        };
        Ok(Some(ok))
    }
}

/// One JWK, or why it cannot be used.
fn parse_key(entry: &Value) -> Result<PublicKey, String> {
    let Value::Object(jwk) = entry else {
        return Err("not a JSON object".to_string());
    };
    let kid = optional_string(jwk, "kid")?;
    let alg = optional_string(jwk, "alg")?;
    let kty = match jwk.get("kty") {
        Some(Value::String(kty)) => kty.as_str(),
        Some(_) => return Err("[kty] is not a string".to_string()),
        None => return Err("[kty] is missing".to_string()),
    };
    let material = match kty {
        "RSA" => {
            if let Some(alg) = &alg
                && !(alg.starts_with("RS") || alg.starts_with("PS"))
            {
                return Err(format!("[alg] {alg:?} is not RS* or PS* for an RSA key"));
            }
            let n = strip_zeros(bytes_field(jwk, "n", kty)?);
            let e = strip_zeros(bytes_field(jwk, "e", kty)?);
            let bits = n
                .first()
                .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "the RSA modulus has {bits} bits; 2048 to 8192 are supported"
                ));
            }
            // ring takes odd exponents from 3 to 2^33 - 1.
            let exponent = (e.len() <= 5).then(|| e.iter().fold(0u64, |v, b| v << 8 | *b as u64));
            if !exponent.is_some_and(|e| e >= 3 && e % 2 == 1 && e < 1 << 33) {
                return Err("the RSA exponent [e] is not supported".to_string());
            }
            Material::Rsa { n, e }
        }
        "EC" => {
            let curve = match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                Some(crv) => return Err(format!("[crv] {crv:?} is not supported (P-256, P-384)")),
                None => return Err("[crv] is missing or not a string for an EC key".to_string()),
            };
            let fits = match curve {
                Curve::P256 => "ES256",
                Curve::P384 => "ES384",
            };
            if let Some(alg) = &alg
                && alg != fits
            {
                return Err(format!("[alg] {alg:?} does not fit [crv] of an EC key"));
            }
            let size = curve.coordinate_len();
            let mut point = vec![4u8];
            for coordinate in ["x", "y"] {
                let value = strip_zeros(bytes_field(jwk, coordinate, kty)?);
                if value.len() > size {
                    return Err(format!("[{coordinate}] is too long for the curve"));
                }
                point.resize(point.len() + size - value.len(), 0);
                point.extend_from_slice(&value);
            }
            Material::Ec { curve, point }
        }
        "OKP" => {
            match jwk.get("crv").and_then(Value::as_str) {
                Some("Ed25519") => {}
                Some(crv) => return Err(format!("[crv] {crv:?} is not supported (Ed25519)")),
                None => return Err("[crv] is missing or not a string for an OKP key".to_string()),
            }
            if let Some(alg) = &alg
                && alg != "EdDSA"
            {
                return Err(format!("[alg] {alg:?} is not EdDSA for an OKP key"));
            }
            let x = bytes_field(jwk, "x", kty)?;
            if x.len() != 32 {
                return Err("[x] is not 32 bytes for an Ed25519 key".to_string());
            }
            Material::Ed25519(x)
        }
        "oct" => return Err("symmetric (oct) keys are not supported".to_string()),
        other => return Err(format!("[kty] {other:?} is not supported (RSA, EC, OKP)")),
    };
    Ok(PublicKey { kid, alg, material })
}

fn optional_string(jwk: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match jwk.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(format!("[{field}] is not a string")),
    }
}

fn bytes_field(jwk: &Map<String, Value>, field: &str, kty: &str) -> Result<Vec<u8>, String> {
    let value = match jwk.get(field) {
        Some(Value::String(value)) => value,
        Some(_) => return Err(format!("[{field}] is not a string for an {kty} key")),
        None => return Err(format!("[{field}] is missing for an {kty} key")),
    };
    BASE64URL
        .decode(value)
        .map_err(|_| format!("[{field}] is not base64url for an {kty} key"))
}

fn strip_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}
