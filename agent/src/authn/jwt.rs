//! Parsing a compact JWS token (RFC 7515/7519) and checking its time
//! claims, with jwt_verify_lib's rules and error texts.

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use serde_json::{Map, Value};

use super::{AuthnError, MAX_TOKEN_LEN};

/// base64url, with or without padding (jwt_verify_lib takes both).
pub(crate) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The signature algorithms accepted: the asymmetric ones Envoy
/// implements and ring verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }
}

/// A token taken apart, its signature not yet checked.
#[derive(Debug)]
pub(crate) struct Jwt<'t> {
    /// `<header>.<payload>`: what the signature covers.
    pub signed: &'t str,
    /// The payload as it was in the token, for `outputPayloadToHeader`.
    pub payload_b64: &'t str,
    pub alg: Alg,
    pub kid: Option<String>,
    pub signature: Vec<u8>,
    pub claims: Claims,
}

/// The registered claims Istio uses, and the whole payload.
#[derive(Debug)]
pub(crate) struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub azp: Option<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub payload: Value,
}

impl<'t> Jwt<'t> {
    /// Takes `token` apart: three non-empty base64url sections, a JSON
    /// header with a supported `alg`, a JSON object payload whose
    /// registered claims have the right types.
    pub(crate) fn parse(token: &'t str) -> Result<Jwt<'t>, AuthnError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthnError::TooLarge);
        }
        let mut sections = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            sections.next(),
            sections.next(),
            sections.next(),
            sections.next(),
        ) else {
            return Err(AuthnError::BadFormat);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(AuthnError::BadFormat);
        }

        let header_json = BASE64URL
            .decode(header)
            .map_err(|_| AuthnError::HeaderBadBase64)?;
        let Ok(Value::Object(header_json)) = serde_json::from_slice::<Value>(&header_json) else {
            return Err(AuthnError::HeaderBadJson);
        };
        let alg = match header_json.get("alg") {
            Some(Value::String(alg)) => Alg::from_name(alg).ok_or(AuthnError::AlgNotSupported)?,
            _ => return Err(AuthnError::HeaderBadAlg),
        };
        let kid = match header_json.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(AuthnError::HeaderBadKid),
        };

        let payload_json = BASE64URL
            .decode(payload)
            .map_err(|_| AuthnError::PayloadBadBase64)?;
        // serde_json stops at 128 levels of nesting with an error, so a
        // hostile payload cannot exhaust the stack.
        let Ok(payload_json @ Value::Object(_)) = serde_json::from_slice::<Value>(&payload_json)
        else {
            return Err(AuthnError::PayloadBadJson);
        };
        let claims = Claims::from_payload(payload_json)?;

        let signature = BASE64URL
            .decode(signature)
            .map_err(|_| AuthnError::SignatureBadBase64)?;
        Ok(Jwt {
            signed: &token[..header.len() + 1 + payload.len()],
            payload_b64: payload,
            alg,
            kid,
            signature,
            claims,
        })
    }
}

impl Claims {
    fn from_payload(payload: Value) -> Result<Claims, AuthnError> {
        let Value::Object(object) = &payload else {
            return Err(AuthnError::PayloadBadJson);
        };
        let iss = string_claim(object, "iss")?.unwrap_or_default();
        let sub = string_claim(object, "sub")?.unwrap_or_default();
        string_claim(object, "jti")?;
        numeric_date(object, "iat")?;
        let nbf = numeric_date(object, "nbf")?;
        let exp = numeric_date(object, "exp")?;
        let aud = match object.get("aud") {
            None => Vec::new(),
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(auds)) => auds
                .iter()
                .map(|aud| aud.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(AuthnError::ClaimType {
                    claim: "aud",
                    expected: "a string or string list",
                })?,
            Some(_) => {
                return Err(AuthnError::ClaimType {
                    claim: "aud",
                    expected: "a string or string list",
                });
            }
        };
        // Envoy does not look at `azp`; Istio's `request.auth.presenter`
        // is it when it is a string.
        let azp = object
            .get("azp")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Claims {
            iss,
            sub,
            aud,
            azp,
            exp,
            nbf,
            payload,
        })
    }
}

fn string_claim(
    object: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<String>, AuthnError> {
    match object.get(claim) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(AuthnError::ClaimType {
            claim,
            expected: "a string",
        }),
    }
}

/// A NumericDate claim in whole seconds. Fractions are dropped (RFC 7519
/// allows them); negative or huge values are refused as jwt_verify_lib
/// does.
fn numeric_date(
    object: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<u64>, AuthnError> {
    match object.get(claim) {
        None => Ok(None),
        Some(Value::Number(number)) => {
            if let Some(seconds) = number.as_u64() {
                return Ok(Some(seconds));
            }
            match number.as_f64() {
                Some(seconds) if (0.0..1.8e19).contains(&seconds) => Ok(Some(seconds as u64)),
                _ => Err(AuthnError::ClaimType {
                    claim,
                    expected: "a positive 64 bit integer",
                }),
            }
        }
        Some(_) => Err(AuthnError::ClaimType {
            claim,
            expected: "an integer",
        }),
    }
}

/// Checks `nbf` and `exp` at `now` (Unix seconds) allowing `skew` seconds
/// of clock difference either way. The token is refused from `exp + skew`
/// on (RFC 7519: "on or after"; Envoy refuses one second later), and
/// before `nbf - skew`.
pub(crate) fn check_time(
    nbf: Option<u64>,
    exp: Option<u64>,
    now: u64,
    skew: u64,
) -> Result<(), AuthnError> {
    if let Some(nbf) = nbf
        && now.saturating_add(skew) < nbf
    {
        return Err(AuthnError::NotYetValid);
    }
    if let Some(exp) = exp
        && now >= exp.saturating_add(skew)
    {
        return Err(AuthnError::Expired);
    }
    Ok(())
}
