//! Running a workload's JWT rules over a request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderValue, request::Parts};
use serde_json::Value;

use super::{
    AuthnError, JwtRule, MAX_TOKEN_LEN,
    cache::{TokenCache, Verified},
    extract::{self, Found},
    jwks::PublicKey,
    jwt::{self, Jwt},
};

/// Envoy's default clock skew for `exp` and `nbf`.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How many verified tokens are kept by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// The identity a valid token gives a request: Istio's `request.auth.*`
/// attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// `request.auth.principal`: `<iss>/<sub>`, what AuthorizationPolicy's
    /// `requestPrincipals` match.
    pub principal: String,
    pub issuer: String,
    pub subject: String,
    /// `request.auth.audiences`: the token's `aud`.
    pub audiences: Vec<String>,
    /// `request.auth.presenter`: the token's `azp`.
    pub presenter: Option<String>,
    /// `request.auth.claims`: the whole payload, a JSON object.
    pub claims: Value,
}

impl Authenticated {
    /// The claim at `path`: `["groups"]` is `request.auth.claims[groups]`,
    /// `["a", "b"]` is `request.auth.claims[a][b]`.
    pub fn claim(&self, path: &[&str]) -> Option<&Value> {
        path.iter()
            .try_fold(&self.claims, |value, name| value.as_object()?.get(*name))
    }

    /// The claim's values as AuthorizationPolicy compares them: a string
    /// claim is one value, a list gives its strings, and the top-level
    /// `scope` and `permission` strings are split at spaces (Istio's
    /// default `spaceDelimitedClaims`). Other types give nothing.
    pub fn claim_strings(&self, path: &[&str]) -> Vec<&str> {
        match self.claim(path) {
            Some(Value::String(value)) if matches!(path, ["scope"] | ["permission"]) => {
                value.split_whitespace().collect()
            }
            Some(Value::String(value)) => vec![value.as_str()],
            Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// Verifies requests' tokens against JWT rules, keeping tokens that
/// verified. One per proxy; shared by all workloads and rules.
#[derive(Debug)]
pub struct Authenticator {
    cache: TokenCache,
    clock_skew: Duration,
    signature_checks: AtomicU64,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new(DEFAULT_CACHE_CAPACITY, DEFAULT_CLOCK_SKEW)
    }
}

impl Authenticator {
    /// An authenticator keeping up to `cache_capacity` verified tokens
    /// (0 disables the cache) and allowing `clock_skew` on `exp`/`nbf`.
    pub fn new(cache_capacity: usize, clock_skew: Duration) -> Authenticator {
        Authenticator {
            cache: TokenCache::new(cache_capacity),
            clock_skew,
            signature_checks: AtomicU64::new(0),
        }
    }

    /// How many signature verifications were run (cache misses).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// How many verified tokens are cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Runs `rules` (those of every RequestAuthentication that applies to
    /// the destination workload) over the request head `parts` at `now`.
    ///
    /// * `Ok(None)`: the request carries no token where a rule looks; it
    ///   passes, and AuthorizationPolicies decide.
    /// * `Ok(Some(_))`: every token found is valid; the first one's
    ///   identity is returned. The request has been edited as the rules
    ///   say (token removed, payload and claims copied to headers).
    /// * `Err(_)`: a token is present but invalid. Answer with
    ///   [`AuthnError::status`] and the error's text as the body.
    ///
    /// Before anything, the rules' output headers are removed from the
    /// request, so a client cannot forge them (Envoy does the same).
    ///
    /// Envoy, given several rules, accepts a request when one rule
    /// accepts all tokens in its locations even if a token elsewhere is
    /// invalid; here every token found must be valid.
    pub fn authenticate(
        &self,
        rules: &[Arc<JwtRule>],
        parts: &mut Parts,
        now: SystemTime,
    ) -> Result<Option<Arc<Authenticated>>, AuthnError> {
        if rules.is_empty() {
            return Ok(None);
        }
        for rule in rules {
            if let Some(header) = &rule.output_payload_to_header {
                parts.headers.remove(header);
            }
            for output in &rule.output_claim_to_headers {
                parts.headers.remove(&output.header);
            }
        }
        let found = extract::find_tokens(rules, parts);
        if found.is_empty() {
            return Ok(None);
        }
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let verified = found
            .iter()
            .map(|f| self.verify(f, rules, now))
            .collect::<Result<Vec<_>, _>>()?;

        for (found, (rule, verified)) in found.iter().zip(&verified) {
            let rule = &rules[*rule];
            if let Some(header) = &rule.output_payload_to_header
                && let Ok(value) = HeaderValue::from_str(&verified.payload_b64)
            {
                parts.headers.append(header.clone(), value);
            }
            for output in &rule.output_claim_to_headers {
                if let Some(value) = claim_header_value(&verified.auth, &output.claim) {
                    parts.headers.append(output.header.clone(), value);
                }
            }
            if !rule.forward_original_token {
                extract::remove_token(found.location, parts);
            }
        }
        Ok(verified.first().map(|(_, v)| v.auth.clone()))
    }

    /// Verifies one token for the rules that read its location, returning
    /// the index of the rule that accepted it.
    fn verify(
        &self,
        found: &Found<'_>,
        rules: &[Arc<JwtRule>],
        now: u64,
    ) -> Result<(usize, Arc<Verified>), AuthnError> {
        let token = found.token.as_str();
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthnError::TooLarge);
        }
        let skew = self.clock_skew.as_secs();
        if let Some(cached) = self.cache.get(token)
            && let Some(result) = check_cached(&cached, rules, &found.rules, now, skew)
        {
            return result;
        }

        let jwt = Jwt::parse(token)?;
        let mut first_error = None;
        for &index in &found.rules {
            let rule = &rules[index];
            if !rule.accepts_issuer(&jwt.claims.iss) {
                continue;
            }
            match self.verify_for_rule(&jwt, rule, now, skew) {
                Ok(key) => {
                    let verified = Arc::new(verified(&jwt, key));
                    self.cache.insert(token, verified.clone(), now);
                    return Ok((index, verified));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or(AuthnError::UnknownIssuer))
    }

    /// Envoy's order: time, audiences, then the signature.
    fn verify_for_rule(
        &self,
        jwt: &Jwt<'_>,
        rule: &JwtRule,
        now: u64,
        skew: u64,
    ) -> Result<Arc<PublicKey>, AuthnError> {
        jwt::check_time(jwt.claims.nbf, jwt.claims.exp, now, skew)?;
        if !rule.allows_audiences(&jwt.claims.aud) {
            return Err(AuthnError::AudienceNotAllowed);
        }
        let keys = rule.keys.current()?;
        if keys.is_empty() {
            return Err(AuthnError::NoValidKeys);
        }
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        keys.verify(
            jwt.alg,
            jwt.kid.as_deref(),
            jwt.signed.as_bytes(),
            &jwt.signature,
        )
    }
}

/// Re-checks a cached token for the rules reading its location: issuer,
/// time, audiences, and that the key which verified it is still one of the
/// rule's keys. `None` when the key is gone from every rule that would
/// otherwise accept the token: verify it again with the current keys.
fn check_cached(
    cached: &Arc<Verified>,
    rules: &[Arc<JwtRule>],
    readers: &[usize],
    now: u64,
    skew: u64,
) -> Option<Result<(usize, Arc<Verified>), AuthnError>> {
    let mut first_error = None;
    let mut key_gone = false;
    let mut issuer_known = false;
    for &index in readers {
        let rule = &rules[index];
        if !rule.accepts_issuer(&cached.auth.issuer) {
            continue;
        }
        issuer_known = true;
        let check = || {
            jwt::check_time(cached.nbf, cached.exp, now, skew)?;
            if !rule.allows_audiences(&cached.auth.audiences) {
                return Err(AuthnError::AudienceNotAllowed);
            }
            Ok(rule.keys.current()?.contains(&cached.key))
        };
        match check() {
            Ok(true) => return Some(Ok((index, cached.clone()))),
            Ok(false) => key_gone = true,
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if !issuer_known {
        return Some(Err(AuthnError::UnknownIssuer));
    }
    if key_gone {
        return None;
    }
    first_error.map(Err)
}

fn verified(jwt: &Jwt<'_>, key: Arc<PublicKey>) -> Verified {
    let claims = &jwt.claims;
    Verified {
        auth: Arc::new(Authenticated {
            principal: format!("{}/{}", claims.iss, claims.sub),
            issuer: claims.iss.clone(),
            subject: claims.sub.clone(),
            audiences: claims.aud.clone(),
            presenter: claims.azp.clone(),
            claims: claims.payload.clone(),
        }),
        key,
        nbf: claims.nbf,
        exp: claims.exp,
        payload_b64: jwt.payload_b64.trim_end_matches('=').into(),
    }
}

/// An `outputClaimToHeaders` value, as Envoy writes it: strings as they
/// are (empty ones are not written), integral non-negative numbers as
/// integers and other numbers with six decimals, booleans as
/// `true`/`false`; nothing for other types or values a header cannot hold.
fn claim_header_value(auth: &Authenticated, claim: &str) -> Option<HeaderValue> {
    let path: Vec<&str> = claim.split('.').collect();
    let text = match auth.claim(&path)? {
        Value::String(value) if !value.is_empty() => value.clone(),
        Value::Number(number) => match (number.as_u64(), number.as_f64()) {
            (Some(integer), _) => integer.to_string(),
            (None, Some(float)) if float >= 0.0 && float.fract() == 0.0 && float < 1.8e19 => {
                (float as u64).to_string()
            }
            (None, Some(float)) => format!("{float:.6}"),
            (None, None) => return None,
        },
        Value::Bool(value) => value.to_string(),
        _ => return None,
    };
    HeaderValue::from_str(&text).ok()
}

/// The request's authority: the URI's (HTTP/2 `:authority`), else the
/// `Host` header, else empty.
pub fn authority(parts: &Parts) -> &str {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// The realm of Envoy's `www-authenticate` reply: the request's URL as
/// `<scheme>://<host><path and query>`, the path cut at 256 bytes.
pub fn realm(scheme: &str, parts: &Parts) -> String {
    let host = authority(parts);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{scheme}://{host}{}", &path[..end])
}
