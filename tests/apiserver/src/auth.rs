//! Bearer-token authentication and the TokenReview API. Every known token
//! may do everything: authorization (RBAC) is not modelled.

use std::collections::HashMap;

use serde_json::{Value, json};

/// What a TokenReview reports for a token registered with `ApiServer::add_token`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenInfo {
    /// `status.user.username`, e.g. `system:serviceaccount:ns:sa`.
    pub username: String,
    /// `status.user.uid`.
    pub uid: String,
    /// `status.user.groups`.
    pub groups: Vec<String>,
    /// Audiences the token is valid for; empty means "any".
    pub audiences: Vec<String>,
    /// An expired token authenticates nothing and fails review.
    pub expired: bool,
    /// `status.user.extra`: what a bound service-account token carries,
    /// e.g. `authentication.kubernetes.io/pod-name`, `.../node-name`.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// The tokens the server knows.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: HashMap<String, TokenInfo>,
}

impl Tokens {
    /// Registers (or replaces) a token.
    pub fn insert(&mut self, token: &str, info: TokenInfo) {
        self.tokens.insert(token.to_string(), info);
    }

    /// Whether a request bearing `token` is let in (known and not expired).
    pub fn accepts(&self, token: &str) -> bool {
        self.tokens.get(token).is_some_and(|info| !info.expired)
    }

    /// The `status` of a TokenReview of `spec.token` for `spec.audiences`.
    pub fn review(&self, spec: &Value) -> Value {
        let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
        let requested: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let Some(info) = self.tokens.get(token) else {
            return json!({"authenticated": false, "error": "[invalid bearer token, token lookup failed]"});
        };
        if info.expired {
            return json!({"authenticated": false, "error": "[invalid bearer token, service account token has expired]"});
        }
        let audiences: Vec<String> = if requested.is_empty() {
            info.audiences.clone()
        } else if info.audiences.is_empty() {
            requested.clone()
        } else {
            requested
                .iter()
                .filter(|a| info.audiences.contains(a))
                .cloned()
                .collect()
        };
        if !requested.is_empty() && audiences.is_empty() {
            return json!({
                "authenticated": false,
                "error": format!("[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]", info.audiences, requested),
            });
        }
        json!({
            "authenticated": true,
            "user": {"username": info.username, "uid": info.uid, "groups": info.groups, "extra": info.extra},
            "audiences": audiences,
        })
    }
}

/// The bearer token that may do everything.
pub const ADMIN_TOKEN: &str = "weft-standin-admin";
