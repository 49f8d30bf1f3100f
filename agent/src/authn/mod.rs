//! End-user authentication: Istio's `RequestAuthentication`, with the
//! semantics Envoy's `jwt_authn` filter gives it in an Istio proxy.
//!
//! Each `jwtRules` entry of the RequestAuthentications that apply to a
//! workload compiles to a [`JwtRule`]; [`Authenticator::authenticate`] runs
//! them over a request's head:
//!
//! * **Where tokens come from** (`extract.rs`): a rule's `fromHeaders`
//!   (with their value prefix), `fromParams` and `fromCookies`; a rule that
//!   names none of them reads `Authorization: Bearer <token>` and the
//!   `access_token` query parameter, as Envoy does.
//! * **No token, no decision**: a request that carries no token passes
//!   (`Ok(None)`) and only AuthorizationPolicies can refuse it — Istio's
//!   `allow_missing` requirement.
//! * **A token must be valid**: every token found must be valid for a rule
//!   whose `issuer` is the token's `iss` and which reads the location the
//!   token came from; otherwise the request is refused (401, or 403 for a
//!   disallowed audience, with Envoy's body text, see [`AuthnError`]).
//!   Validity (`jwt.rs`, `jwks.rs`): `alg` one of RS/PS 256/384/512, ES256,
//!   ES384, EdDSA (never `none` or HMAC); the signature checked with ring
//!   against the rule's keys (by `kid` when both sides have one); `exp` and
//!   `nbf` with Envoy's 60 s clock skew; `aud` against the rule's
//!   `audiences`, compared as Envoy does (scheme and trailing `/` ignored).
//! * **What a valid token yields** ([`Authenticated`]): the principal
//!   `<iss>/<sub>` (`request.auth.principal`), audiences, presenter (`azp`)
//!   and claims for AuthorizationPolicy; the token removed from its header
//!   or query parameter unless `forwardOriginalToken`; its payload
//!   (`outputPayloadToHeader`) and claims (`outputClaimToHeaders`) copied
//!   to headers — which are stripped from every request first, so a client
//!   cannot forge them.
//! * **Keys** (`jwks.rs`, `fetch.rs`): inline `jwks`, or `jwksUri` fetched
//!   in the background by a [`JwksRegistry`] shared by all rules naming the
//!   same URI. A request never waits for a fetch: until the first fetch
//!   succeeds a token of that issuer fails ("Jwks remote fetch is failed");
//!   after that a failing refresh keeps the last good keys.
//! * **Cost**: tokens that verified are kept in a bounded cache keyed by the
//!   token (`cache.rs`), so a repeated token costs a hash lookup and the
//!   time, audience and key checks, not a signature verification.
//!
//! Use: one [`Authenticator`] and one [`JwksRegistry`] per proxy; compile
//! each `jwtRules` entry to a [`JwtRule`] (a `jwksUri` through
//! [`JwksRegistry::get`], so rules naming one URI share a fetcher), and
//! call [`Authenticator::authenticate`] with the rules of the destination
//! workload. On `Err`, reply with [`AuthnError::status`], the error's text
//! as the body, and [`AuthnError::www_authenticate`].
//!
//! Where this differs from Envoy (each said again at its place):
//!
//! * every token found must be valid; Envoy, given several rules, lets a
//!   request through when one rule accepts the tokens in its own
//!   locations, even beside an invalid token elsewhere;
//! * `HS*` and `ES512` are refused, RSA keys under 2048 bits are skipped
//!   (ring's limits), tokens over [`MAX_TOKEN_LEN`] are refused;
//! * `exp` is refused from `exp + skew` on, one second before Envoy;
//! * a request never waits for a `jwksUri` fetch;
//! * a key of a type that cannot make the token's `alg` is not tried, so
//!   such a token fails with "kid or alg" mismatch rather than
//!   "verification fails".

mod authenticator;
mod cache;
mod extract;
mod fetch;
mod jwks;
mod jwt;
mod rule;
#[cfg(test)]
mod tests;
mod workload;

pub use authenticator::{
    Authenticated, Authenticator, DEFAULT_CACHE_CAPACITY, DEFAULT_CLOCK_SKEW, authority, realm,
};
pub use fetch::{FetchConfig, FetchError, JwksRegistry, JwksState, RemoteJwks};
pub use jwks::{Jwks, JwksError};
pub use rule::{ClaimToHeader, HeaderLocation, JwtRule, KeySource};
pub use workload::Authn;

use http::{HeaderValue, StatusCode};

/// The longest token accepted, in bytes. Real tokens are a few KiB; a
/// larger one is refused before it is decoded.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a request's token was refused. The `Display` text is Envoy's
/// (jwt_verify_lib's status strings), which Envoy sends as the body of its
/// 401/403 reply; the caller should send it the same way, with
/// [`AuthnError::status`] and [`AuthnError::www_authenticate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    /// Not in Envoy: tokens longer than [`MAX_TOKEN_LEN`] are refused.
    #[error("Jwt is larger than {max} bytes", max = MAX_TOKEN_LEN)]
    TooLarge,
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt header is an invalid Base64url encoded")]
    HeaderBadBase64,
    #[error("Jwt header is an invalid JSON")]
    HeaderBadJson,
    #[error("Jwt header [alg] field is required and must be a string")]
    HeaderBadAlg,
    /// `none`, HMAC (`HS*`, Envoy would take it with an `oct` key, which no
    /// Istio JWKS should hold) and ES512 (ring has no P-521) are refused.
    #[error("Jwt header [alg] is not supported")]
    AlgNotSupported,
    #[error("Jwt header [kid] field is not a string")]
    HeaderBadKid,
    #[error("Jwt payload is an invalid Base64url encoded")]
    PayloadBadBase64,
    /// Also for claims nested deeper than serde_json's limit (128).
    #[error("Jwt payload is an invalid JSON")]
    PayloadBadJson,
    /// A registered claim of the wrong type, e.g. `exp` that is a string.
    #[error("Jwt payload [{claim}] field is not {expected}")]
    ClaimType {
        claim: &'static str,
        expected: &'static str,
    },
    #[error("Jwt signature is an invalid Base64url encoded")]
    SignatureBadBase64,
    #[error("Jwt ED25519 signature is wrong length")]
    Ed25519SignatureLength,
    /// No rule has the token's issuer, or none that reads the location the
    /// token came from.
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    KidAlgMismatch,
    #[error("Jwks doesn't have any valid public key")]
    NoValidKeys,
    #[error("Jwt verification fails")]
    VerificationFail,
    /// The rule's `jwksUri` has not been fetched successfully yet.
    #[error("Jwks remote fetch is failed")]
    JwksFetchFail,
}

impl AuthnError {
    /// The status Envoy answers with: 403 for a disallowed audience, 401
    /// for everything else.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthnError::AudienceNotAllowed => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// Envoy's `www-authenticate` value for this failure:
    /// `Bearer realm="<realm>", error="invalid_token"`, where `realm` is
    /// the request's URL as [`realm`] builds it.
    pub fn www_authenticate(&self, realm: &str) -> HeaderValue {
        let value = format!("Bearer realm=\"{realm}\", error=\"invalid_token\"");
        // The realm comes from the request's own (valid) header values, but
        // a quote or control byte must not break the reply.
        HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
    }
}
