//! One compiled `jwtRules` entry of a RequestAuthentication.

use std::sync::Arc;

use http::HeaderName;

use super::{AuthnError, Jwks, RemoteJwks};

/// One `jwtRules` entry of a RequestAuthentication, ready to run.
///
/// Build it with [`JwtRule::new`] and set the fields the rule sets; the
/// defaults are Istio's.
#[derive(Debug, Clone)]
pub struct JwtRule {
    /// `issuer`: the `iss` a token must carry to be checked by this rule.
    /// Empty accepts any issuer (Envoy's behaviour for a provider without
    /// one; Istio requires it).
    pub issuer: String,
    /// `audiences`: a token's `aud` must hold one of them. Empty accepts
    /// any audience.
    pub audiences: Vec<String>,
    /// `jwks` or `jwksUri`.
    pub keys: KeySource,
    /// `fromHeaders`.
    pub from_headers: Vec<HeaderLocation>,
    /// `fromParams`: query parameter names.
    pub from_params: Vec<String>,
    /// `fromCookies`: cookie names.
    pub from_cookies: Vec<String>,
    /// `forwardOriginalToken`: keep the token in the request. False (the
    /// default) removes it from the header or query parameter it came in;
    /// a cookie is left alone, as Envoy does.
    pub forward_original_token: bool,
    /// `outputPayloadToHeader`: the header that receives the token's
    /// payload, base64url-encoded as it was in the token.
    pub output_payload_to_header: Option<HeaderName>,
    /// `outputClaimToHeaders`.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
}

/// A `fromHeaders` entry: the header and the prefix before the token in
/// its value (`Bearer ` for `Authorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLocation {
    pub name: HeaderName,
    pub prefix: String,
}

/// An `outputClaimToHeaders` entry. `claim` may name a nested claim with
/// dots (`a.b`); string, number and boolean claims are copied, others are
/// not (Envoy's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToHeader {
    pub header: HeaderName,
    pub claim: String,
}

/// Where a rule's verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `jwks`: a key set given in the rule.
    Inline(Arc<Jwks>),
    /// `jwksUri`: a key set fetched and refreshed in the background.
    Remote(Arc<RemoteJwks>),
}

impl KeySource {
    /// The keys to verify with now. A remote set that was never fetched
    /// fails the token; a request never waits for a fetch.
    pub(crate) fn current(&self) -> Result<Arc<Jwks>, AuthnError> {
        match self {
            KeySource::Inline(jwks) => Ok(jwks.clone()),
            KeySource::Remote(remote) => remote.keys().ok_or(AuthnError::JwksFetchFail),
        }
    }
}

/// A place a token is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Location<'a> {
    Header {
        name: &'a HeaderName,
        prefix: &'a str,
    },
    Param(&'a str),
    Cookie(&'a str),
}

static AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;

/// Envoy's default locations, used by a rule that names none.
fn default_locations() -> Vec<Location<'static>> {
    vec![
        Location::Header {
            name: &AUTHORIZATION,
            prefix: "Bearer ",
        },
        Location::Param("access_token"),
    ]
}

impl JwtRule {
    /// A rule for `issuer` with keys from `keys` and Istio's defaults: any
    /// audience, the default token locations, the token not forwarded, no
    /// output headers.
    pub fn new(issuer: impl Into<String>, keys: KeySource) -> JwtRule {
        JwtRule {
            issuer: issuer.into(),
            audiences: Vec::new(),
            keys,
            from_headers: Vec::new(),
            from_params: Vec::new(),
            from_cookies: Vec::new(),
            forward_original_token: false,
            output_payload_to_header: None,
            output_claim_to_headers: Vec::new(),
        }
    }

    /// The locations this rule reads tokens from.
    pub(crate) fn locations(&self) -> Vec<Location<'_>> {
        if self.from_headers.is_empty()
            && self.from_params.is_empty()
            && self.from_cookies.is_empty()
        {
            return default_locations();
        }
        let headers = self.from_headers.iter().map(|h| Location::Header {
            name: &h.name,
            prefix: &h.prefix,
        });
        let params = self.from_params.iter().map(|p| Location::Param(p));
        let cookies = self.from_cookies.iter().map(|c| Location::Cookie(c));
        headers.chain(params).chain(cookies).collect()
    }

    /// Whether this rule checks tokens of issuer `iss`.
    pub(crate) fn accepts_issuer(&self, iss: &str) -> bool {
        self.issuer.is_empty() || self.issuer == iss
    }

    /// Whether a token with audiences `token_audiences` may pass. Envoy
    /// (jwt_verify_lib's `CheckAudience`) compares audiences without an
    /// `http://` or `https://` prefix and without a trailing `/`.
    pub(crate) fn allows_audiences(&self, token_audiences: &[String]) -> bool {
        self.audiences.is_empty()
            || token_audiences.iter().any(|aud| {
                let aud = sanitize_audience(aud);
                self.audiences.iter().any(|a| sanitize_audience(a) == aud)
            })
    }
}

fn sanitize_audience(aud: &str) -> &str {
    let aud = aud
        .strip_prefix("http://")
        .or_else(|| aud.strip_prefix("https://"))
        .unwrap_or(aud);
    aud.strip_suffix('/').unwrap_or(aud)
}
