//! Keys and tokens for end-to-end tests of RequestAuthentication.
//!
//! A [`Signer`] holds a fresh private key: its public half goes into a
//! RequestAuthentication's `jwks` (or is served at a `jwksUri`) with
//! [`Signer::jwks_json`], and [`Signer::token`] mints tokens a client pod
//! sends. EC and Ed25519 keys come from ring; RSA keys from `openssl
//! genpkey` (ring cannot generate them), then sign with ring.
//!
//! ```no_run
//! use weft_sim::jwt::{Signer, claims};
//! # fn main() -> anyhow::Result<()> {
//! let signer = Signer::es256()?;
//! let jwks = signer.jwks_json(); // RequestAuthentication jwtRules[].jwks
//! let token = signer.token(&claims("https://issuer.test", "alice", 3600));
//! # let _ = (jwks, token);
//! # Ok(()) }
//! ```

use std::{
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::SystemRandom,
    rsa::PublicKeyComponents,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair},
};
use rustls::pki_types::PrivateKeyDer;
use serde_json::{Value, json};

/// A private key that signs tokens, with the `alg` and `kid` it puts in
/// their header.
pub struct Signer {
    alg: &'static str,
    kid: String,
    key: Key,
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed25519(Ed25519KeyPair),
}

impl Signer {
    /// A new P-256 key signing ES256, `kid` "es256-<n>".
    pub fn es256() -> anyhow::Result<Signer> {
        Signer::ec(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            "ES256",
            "P-256",
        )
    }

    /// A new P-384 key signing ES384.
    pub fn es384() -> anyhow::Result<Signer> {
        Signer::ec(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            "ES384",
            "P-384",
        )
    }

    /// A new Ed25519 key signing EdDSA.
    pub fn eddsa() -> anyhow::Result<Signer> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("generating an Ed25519 key"))?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("loading the Ed25519 key: {e}"))?;
        Ok(Signer::new("EdDSA", Key::Ed25519(key)))
    }

    /// A new 2048-bit RSA key (from `openssl genpkey`) signing RS256.
    pub fn rs256() -> anyhow::Result<Signer> {
        Ok(Signer::new("RS256", Key::Rsa(generate_rsa()?)))
    }

    /// A new 2048-bit RSA key signing PS256 (RSASSA-PSS).
    pub fn ps256() -> anyhow::Result<Signer> {
        Ok(Signer::new("PS256", Key::Rsa(generate_rsa()?)))
    }

    fn ec(
        algorithm: &'static signature::EcdsaSigningAlgorithm,
        alg: &'static str,
        crv: &'static str,
    ) -> anyhow::Result<Signer> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm, &rng)
            .map_err(|_| anyhow::anyhow!("generating a {crv} key"))?;
        let key = EcdsaKeyPair::from_pkcs8(algorithm, pkcs8.as_ref(), &rng)
            .map_err(|e| anyhow::anyhow!("loading the {crv} key: {e}"))?;
        Ok(Signer::new(alg, Key::Ec(key, crv)))
    }

    fn new(alg: &'static str, key: Key) -> Signer {
        let kid = format!("{}-{:08x}", alg.to_lowercase(), random_u32());
        Signer { alg, kid, key }
    }

    /// The same key under another `kid` (e.g. to impersonate a key).
    pub fn with_kid(mut self, kid: &str) -> Signer {
        self.kid = kid.to_string();
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> &str {
        self.alg
    }

    /// The public key as a JWK, with `kid`, `alg` and `use: sig`.
    pub fn jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &self.key {
            Key::Rsa(key) => {
                let public = PublicKeyComponents::<Vec<u8>>::from(key.public());
                json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)})
            }
            Key::Ec(key, crv) => {
                let point = key.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                json!({
                    "kty": "EC",
                    "crv": crv,
                    "x": b64(&point[1..1 + half]),
                    "y": b64(&point[1 + half..]),
                })
            }
            Key::Ed25519(key) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().as_ref())})
            }
        };
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.alg);
        jwk["use"] = json!("sig");
        jwk
    }

    /// `{"keys": [<this key>]}`, for a rule's `jwks` or a `jwksUri` server.
    pub fn jwks_json(&self) -> String {
        jwks_json(&[self])
    }

    /// A token with `claims`, its header `{"alg", "kid", "typ": "JWT"}`.
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"});
        self.token_with_header(&header, claims)
    }

    /// A token with this header and claims, signed with this key whatever
    /// the header says (for tokens that lie about their `alg` or `kid`).
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let signed = format!("{}.{}", encode(header), encode(claims));
        let signature = self.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        // Signing with a key ring loaded itself only fails on a broken
        // random source, which no test can go on without.
        match &self.key {
            Key::Rsa(key) => {
                let padding: &dyn signature::RsaEncoding = if self.alg == "PS256" {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(padding, &rng, message, &mut signature)
                    .expect("RSA signing");
                signature
            }
            Key::Ec(key, _) => key
                .sign(&rng, message)
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
            Key::Ed25519(key) => key.sign(message).as_ref().to_vec(),
        }
    }
}

/// `{"keys": [...]}` holding these signers' public keys (a key set during
/// a rotation holds two).
pub fn jwks_json(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Claims of a token from `issuer` for `subject`, issued now and valid for
/// `ttl_secs` seconds (negative: already expired).
pub fn claims(issuer: &str, subject: &str, ttl_secs: i64) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    json!({
        "iss": issuer,
        "sub": subject,
        "iat": now,
        "exp": (now + ttl_secs).max(0),
    })
}

/// An unsecured token (`alg: none`, empty signature) with these claims,
/// which a mesh must refuse.
pub fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"})),
        encode(claims)
    )
}

/// An HS256 token (a shared secret, which Istio's key sets never hold).
pub fn hs256_token(secret: &[u8], claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        encode(&json!({"alg": "HS256", "typ": "JWT"})),
        encode(claims)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A few random bits for `kid`s, so two signers never share one.
fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).unwrap_or_default();
    u32::from_be_bytes(bytes)
}

/// A 2048-bit RSA key pair made by `openssl genpkey`.
fn generate_rsa() -> anyhow::Result<RsaKeyPair> {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .context("running `openssl genpkey` to make an RSA key (is the openssl CLI installed?)")?;
    if !out.status.success() {
        bail!(
            "`openssl genpkey` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let key = rustls_pemfile::private_key(&mut out.stdout.as_slice())
        .context("reading openssl's PEM key")?
        .context("openssl printed no private key")?;
    let pair = match key {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => bail!("openssl printed a key that is not RSA"),
    };
    pair.map_err(|e| anyhow::anyhow!("loading openssl's RSA key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tokens verify with ring against the JWK's own public key.
    #[test]
    fn tokens_verify_against_their_jwk() -> anyhow::Result<()> {
        for signer in [
            Signer::es256()?,
            Signer::es384()?,
            Signer::eddsa()?,
            Signer::rs256()?,
            Signer::ps256()?,
        ] {
            let token = signer.token(&claims("https://issuer.test", "alice", 60));
            let (signed, sig) = token.rsplit_once('.').unwrap();
            let sig = URL_SAFE_NO_PAD.decode(sig)?;
            let jwk = signer.jwk();
            let field = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap());
            let verified = match signer.alg() {
                "ES256" | "ES384" => {
                    let mut point = vec![4];
                    point.extend(field("x")?);
                    point.extend(field("y")?);
                    let alg = if signer.alg() == "ES256" {
                        &signature::ECDSA_P256_SHA256_FIXED
                    } else {
                        &signature::ECDSA_P384_SHA384_FIXED
                    };
                    signature::UnparsedPublicKey::new(alg, point).verify(signed.as_bytes(), &sig)
                }
                "EdDSA" => signature::UnparsedPublicKey::new(&signature::ED25519, field("x")?)
                    .verify(signed.as_bytes(), &sig),
                alg => {
                    let params = if alg == "PS256" {
                        &signature::RSA_PSS_2048_8192_SHA256
                    } else {
                        &signature::RSA_PKCS1_2048_8192_SHA256
                    };
                    signature::RsaPublicKeyComponents {
                        n: field("n")?,
                        e: field("e")?,
                    }
                    .verify(params, signed.as_bytes(), &sig)
                }
            };
            assert!(verified.is_ok(), "{} token does not verify", signer.alg());
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap())?)?;
            assert_eq!(header["kid"], jwk["kid"]);
        }
        let unsigned = unsigned_token(&claims("i", "s", 60));
        assert!(unsigned.ends_with('.') && unsigned.matches('.').count() == 2);
        Ok(())
    }
}
