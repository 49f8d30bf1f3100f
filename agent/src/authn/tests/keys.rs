//! Keys and tokens for the tests, made with ring. RSA keys cannot be
//! generated with ring, so the RSA key is a fixed 2048-bit test key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::{
    rand::SystemRandom,
    rsa::PublicKeyComponents,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair},
};
use serde_json::{Value, json};

use crate::authn::{Jwks, jwt::BASE64URL};

/// A 2048-bit RSA private key (PKCS#8 DER, base64), made with `openssl
/// genpkey` for these tests only.
const RSA_TEST_KEY: &str = "
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCnCQC1U5HcHa4XPpYatn8sXMx6
K5oxJhbvlYVJUVGPQKPHbOau7mQhhYw0eLYHOEoQ8Q4jq8Suf7c1zR7tm1enC2MvWMULD+irkkgh
gjxQx5cpqfCm+2ddsQ66D3Xmv1OUxlkOydsieGO0V+oxq72cBul3gYBJSffvsQFz4SWzSfeBv2Fd
yWY0rI4GuJGE2Jgm+7UBzrx9Fw84YrDvtVLIn7BDQ1HteGuWr47+aq/xHXbb6+j2d7keD1VOdXyQ
383uBhUVXloYkQukPOPbuDDGQ8fffIfGPGTp8c7dhRyiVLkb6hQdHGP07NGS2lT8oxIWLmwRGfVd
HIHzsKrot69XAgMBAAECggEADxdY1iK3eWsnD1heVT1RLrYw25+n3f8cFsfsBsx1iw58hAHA5jCJ
bgWAvgoWUn9EvDrpm57WKMV6M76u2vaffzfTEMDuhvBuuMQBIO60bPONCTy4Dn+4flygwRexGWI5
qdkXzIzy1i6JV47GQBGaEm6fb+aMq1Jz0T1geh874D+A9+nf3LtfiqFrEIjjN8CkfkYLfUhtj4+L
Gx6qABMP272kObSZE+LUOHPbZk90mcqVx3862A3yCgZJzynIgvsBXy0FJWPtl0/yJbdO+G7Opo1/
njmE70+w5tHOK8Af5lBzYlvt0slbd8qTmFtUl/u+DwYxcBX280hYclbIII77xQKBgQDrlzo9SXKS
UmEbCNYbgdATszEes/EexsngbqX3VwZGYqgiIK3ZZ4N+xhLM9itO3ST00DUTouBzMDwahGcNNvcZ
2rHtmMQm2UeNrZD0NPB5IKSkj5BLi9AUnxL7r9zz3Kj6EB/ZMJ3CS+VCmjpvaSHr2aBba00y21DE
snfHbDgGPQKBgQC1gWVpYp1vrXRS71M3VQATbjHwK/JpCgWgKBuloyuCGgqqqN8Vc1JzgIQIplJf
OKBL5Pmc1glMMww+EZA8nt5Q6XtR8F2g4rkk9yzRCgcMjLdNqPs8PWe8Boc43pWNkJE1ZLPdh9/K
p18nUm1mc3uhd4wRt2sHhFsGGR7OaEx5IwKBgChuMIl6BFaGGrIYBx57Xakz1FcvjE660MRaWNMk
tSf5IF+S+iLYN+HWvj08ddw36XK2FJXFGv3JplbqqADFkQx30pcy417DZRs0US8Hsskmx/qRxLKi
UNhpIEnfOW0ETl9zyvNr+3bvrW2LqEGcajzegT2PIZV7u9W1xwaLVOYFAoGAcJEYmPxdEbbsjsb4
wDdKPcK42/AVfkmF5acaRmblA+IsvVzQRhhoiVOqD0c/jOismYUfvcIMsCJ0tEXmQ4Jv9JRpNA8z
siUKmD9nnxlt972JrXNgpSKcJEOUN5PsAoknVYrn9jtfcurMm7GGQeTbRu/CgfZUPaw7W5PWxEJx
MysCgYAxQnMRKGswe+jOlMSU2s7/Xy757vg8dj+cmMJD1J++CJR6cVvsKghKvTLBTWB8k/cSOnE1
EDXwBbwMYREl3jwpOUkkYxzZOAQ+3Blj9FhqH3DiiAKdmgdIvmCkk3HNzwdz+4heqjQQP+Nunm74
SfYaY4wN4wJ5AxQwMQexkdt2vQ==
";

/// The issuer of the tests' tokens.
pub(super) const ISSUER: &str = "https://issuer.example.com";

/// Signs tokens with one key and describes its public half as a JWK.
pub(super) struct Signer {
    alg: &'static str,
    kid: Option<String>,
    key: Key,
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed25519(Ed25519KeyPair),
}

impl Signer {
    /// The fixed RSA test key, signing with `alg` (RS* or PS*).
    pub(super) fn rsa(alg: &'static str) -> Signer {
        let der = base64::engine::general_purpose::STANDARD
            .decode(RSA_TEST_KEY.split_whitespace().collect::<String>())
            .unwrap();
        Signer {
            alg,
            kid: Some("rsa".into()),
            key: Key::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap()),
        }
    }

    pub(super) fn es256() -> Signer {
        Signer::ec(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            "ES256",
            "P-256",
        )
    }

    pub(super) fn es384() -> Signer {
        Signer::ec(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            "ES384",
            "P-384",
        )
    }

    fn ec(
        algorithm: &'static signature::EcdsaSigningAlgorithm,
        alg: &'static str,
        crv: &'static str,
    ) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(algorithm, pkcs8.as_ref(), &rng).unwrap();
        Signer {
            alg,
            kid: Some(alg.to_lowercase()),
            key: Key::Ec(key, crv),
        }
    }

    pub(super) fn eddsa() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer {
            alg: "EdDSA",
            kid: Some("ed25519".into()),
            key: Key::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()),
        }
    }

    /// The same key with another `kid` (`None`: no `kid`).
    pub(super) fn kid(mut self, kid: Option<&str>) -> Signer {
        self.kid = kid.map(str::to_string);
        self
    }

    /// The public key as a JWK.
    pub(super) fn jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| BASE64URL.encode(bytes);
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
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }

    /// A key set holding this key.
    pub(super) fn jwks(&self) -> Jwks {
        Jwks::parse(jwks_json(&[self])).unwrap()
    }

    /// A token with these claims, signed with this key.
    pub(super) fn token(&self, claims: &Value) -> String {
        let mut header = json!({"alg": self.alg, "typ": "JWT"});
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        self.token_with_header(&header, claims)
    }

    /// A token with this header and claims, signed with this key whatever
    /// the header's `alg` says.
    pub(super) fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let signed = format!("{}.{}", encode_json(header), encode_json(claims));
        let signature = self.sign(signed.as_bytes());
        format!("{signed}.{}", BASE64URL.encode(signature))
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Rsa(key) => {
                let padding: &dyn signature::RsaEncoding = match self.alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("no RSA signing for {other}"),
                };
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(padding, &rng, message, &mut signature).unwrap();
                signature
            }
            Key::Ec(key, _) => key.sign(&rng, message).unwrap().as_ref().to_vec(),
            Key::Ed25519(key) => key.sign(message).as_ref().to_vec(),
        }
    }
}

/// `{"keys": [...]}` of these signers' public keys.
pub(super) fn jwks_json(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

pub(super) fn encode_json(value: &Value) -> String {
    BASE64URL.encode(value.to_string())
}

pub(super) fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The tests' clock: a fixed instant, so time checks are exact.
pub(super) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Claims of a valid token from [`ISSUER`] for subject `alice`.
pub(super) fn claims() -> Value {
    let now = unix(now());
    json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": "api.example.com",
        "azp": "web-client",
        "iat": now - 10,
        "exp": now + 3600,
    })
}
