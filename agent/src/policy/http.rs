//! The HTTP side of authorization: what a request is matched on
//! ([`Request`]), Istio's path normalisation ([`normalize_path`]), path
//! templates ([`PathTemplate`]) and `when` keys on HTTP attributes
//! ([`AttributeKey`]).

use std::borrow::Cow;

use http::HeaderMap;

/// A request, as authorization sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The authority (`:authority` or `Host`), as sent.
    pub host: &'a str,
    /// The normalised path, without its query ([`normalize_path`]).
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The request's validated JWT, if it carried one.
    pub auth: Option<&'a RequestAuth>,
    /// The SNI of the TLS connection the request came in on.
    pub sni: Option<&'a str>,
}

/// What a validated JWT tells authorization (RequestAuthentication):
/// `request.auth.principal` (`iss/sub`), audiences, presenter, claims.
pub type RequestAuth = crate::authn::Authenticated;

/// An HTTP attribute a `when` condition names, parsed from Istio's key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum AttributeKey {
    /// `request.headers[name]` (name lower-cased).
    Header(String),
    /// `request.auth.principal`.
    AuthPrincipal,
    /// `request.auth.audiences`.
    AuthAudiences,
    /// `request.auth.presenter`.
    AuthPresenter,
    /// `request.auth.claims[a][b]...`: a claim, nested claims by path.
    AuthClaim(Vec<String>),
    /// `connection.sni`.
    ConnectionSni,
    /// A key this agent cannot evaluate (e.g. `experimental.envoy...`):
    /// the attribute is absent, so `values` never match.
    Unsupported(String),
}

impl AttributeKey {
    pub fn parse(key: &str) -> AttributeKey {
        let bracketed = |rest: &str| -> Option<Vec<String>> {
            let mut parts = Vec::new();
            let mut rest = rest;
            while !rest.is_empty() {
                let inner = rest.strip_prefix('[')?;
                let end = inner.find(']')?;
                parts.push(inner[..end].to_string());
                rest = &inner[end + 1..];
            }
            (!parts.is_empty()).then_some(parts)
        };
        match key {
            "request.auth.principal" => Self::AuthPrincipal,
            "request.auth.audiences" => Self::AuthAudiences,
            "request.auth.presenter" => Self::AuthPresenter,
            "connection.sni" => Self::ConnectionSni,
            _ => {
                if let Some(rest) = key.strip_prefix("request.headers")
                    && let Some(parts) = bracketed(rest)
                    && parts.len() == 1
                {
                    return Self::Header(parts[0].to_ascii_lowercase());
                }
                if let Some(rest) = key.strip_prefix("request.auth.claims")
                    && let Some(parts) = bracketed(rest)
                {
                    return Self::AuthClaim(parts);
                }
                Self::Unsupported(key.to_string())
            }
        }
    }

    /// The attribute's values in `request` (empty: absent).
    pub fn values<'a>(&self, request: &Request<'a>) -> Vec<Cow<'a, str>> {
        match self {
            Self::Header(name) => request
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(Cow::Borrowed)
                .collect(),
            Self::AuthPrincipal => request
                .auth
                .map(|a| Cow::Borrowed(a.principal.as_str()))
                .into_iter()
                .collect(),
            Self::AuthAudiences => request
                .auth
                .map(|a| {
                    a.audiences
                        .iter()
                        .map(|v| Cow::Borrowed(v.as_str()))
                        .collect()
                })
                .unwrap_or_default(),
            Self::AuthPresenter => request
                .auth
                .and_then(|a| a.presenter.as_deref())
                .map(Cow::Borrowed)
                .into_iter()
                .collect(),
            Self::AuthClaim(path) => request
                .auth
                .and_then(|a| {
                    path.iter()
                        .try_fold(&a.claims, |value, part| value.get(part.as_str()))
                })
                .map(claim_values)
                .unwrap_or_default(),
            Self::ConnectionSni => request.sni.map(Cow::Borrowed).into_iter().collect(),
            Self::Unsupported(_) => Vec::new(),
        }
    }
}

/// A claim's values as strings: a string, each string (or scalar) of a
/// list, or a scalar printed (`true`, `42`). Objects have no string value.
fn claim_values<'a>(value: &'a serde_json::Value) -> Vec<Cow<'a, str>> {
    use serde_json::Value;
    let scalar = |v: &'a Value| match v {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    };
    match value {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// Why a request path is refused before any policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path contains an encoded slash or backslash (%2F, %5C)")]
    EncodedSlash,
    #[error("the path contains an invalid percent-encoding")]
    BadEscape,
    #[error("the path does not start with `/`")]
    NotAbsolute,
}

/// Istio's path normalisation, as Envoy applies it before authorization
/// and routing (`normalize_path`, `merge_slashes`, and escaped slashes
/// rejected): the query is set aside; percent-encoded unreserved
/// characters are decoded (`%2e` is `.`, `%41` is `A`) and other escapes
/// upper-cased; an encoded `/` or `\` is refused; `\` becomes `/`;
/// repeated slashes are merged; `.` and `..` segments are resolved (never
/// above the root). Returns the normalised path, without the query.
/// Paths are case-sensitive, as in Istio.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Decode unreserved characters; keep (upper-cased) the other escapes.
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
            match value {
                b'/' | b'\\' => return Err(PathError::EncodedSlash),
                v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    decoded.push(v)
                }
                v => decoded.extend_from_slice(format!("%{v:02X}").as_bytes()),
            }
            i += 3;
        } else {
            decoded.push(if b == b'\\' { b'/' } else { b });
            i += 1;
        }
    }
    // Only ASCII was decoded, so the bytes are still the path's UTF-8.
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    // A trailing slash (or a trailing `.`/`..`) is kept, as Envoy does.
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

/// [`normalize_path`] of `raw`, a path without its query, borrowed when
/// it is already normal, as most paths are: what the destination side
/// authorizes, without an allocation for the common case.
pub fn normalized(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(raw) {
        Ok(Cow::Borrowed(raw))
    } else {
        normalize_path(raw).map(Cow::Owned)
    }
}

/// Whether [`normalize_path`] would leave `path` (no query) as it is: it
/// is absolute and has no escape, backslash, empty or dot segment.
fn is_normal(path: &str) -> bool {
    path.starts_with('/')
        && !path
            .bytes()
            .any(|b| matches!(b, b'%' | b'\\' | b'?' | b'#'))
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// `raw`, a request's path and query, with the path normalised as
/// [`normalize_path`] does and the query kept: what Envoy's connection
/// manager routes on. Borrowed when nothing changes, as for most paths
/// (no escape, backslash, empty or dot segment).
pub fn normalize_path_and_query(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    if is_normal(path) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = normalize_path(path)?;
    if let Some(query) = raw[end..].strip_prefix('?') {
        out.push('?');
        out.push_str(query.split('#').next().unwrap_or(""));
    }
    Ok(Cow::Owned(out))
}

/// An Istio path template (Envoy's URI template): `{*}` matches exactly
/// one path segment, `{**}` one or more; every other segment literally.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PathTemplate {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
enum Segment {
    Literal(String),
    One,
    Many,
}

impl PathTemplate {
    pub fn parse(template: &str) -> PathTemplate {
        let segments = template
            .trim_start_matches('/')
            .split('/')
            .map(|s| match s {
                "{*}" => Segment::One,
                "{**}" => Segment::Many,
                literal => Segment::Literal(literal.to_string()),
            })
            .collect();
        PathTemplate { segments }
    }

    pub fn matches(&self, path: &str) -> bool {
        let Some(path) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = path.split('/').collect();
        match_segments(&self.segments, &parts)
    }
}

fn match_segments(template: &[Segment], parts: &[&str]) -> bool {
    match template.split_first() {
        None => parts.is_empty(),
        Some((Segment::Literal(want), rest)) => {
            parts.first().is_some_and(|p| p == want) && match_segments(rest, &parts[1..])
        }
        Some((Segment::One, rest)) => {
            parts.first().is_some_and(|p| !p.is_empty()) && match_segments(rest, &parts[1..])
        }
        // One or more non-empty segments, then the rest (literals only).
        Some((Segment::Many, rest)) => (1..=parts.len().saturating_sub(rest.len()))
            .any(|n| parts[..n].iter().all(|p| !p.is_empty()) && match_segments(rest, &parts[n..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_closes_the_usual_tricks() {
        for (raw, want) in [
            ("/api/users", "/api/users"),
            ("/api/users?x=/admin", "/api/users"),
            ("/api/../admin", "/admin"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/%2E%2e/%61dmin", "/admin"),
            ("//api///v1", "/api/v1"),
            ("/api/./v1/", "/api/v1/"),
            ("/../../etc", "/etc"),
            ("/api\\..\\admin", "/admin"),
            ("/", "/"),
            ("/a/b/..", "/a/"),
            ("/x%20y", "/x%20y"),
            ("/x%3fy", "/x%3Fy"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
        for (raw, err) in [
            ("/api%2Fadmin", PathError::EncodedSlash),
            ("/api%2fadmin", PathError::EncodedSlash),
            ("/api%5cadmin", PathError::EncodedSlash),
            ("/api%zz", PathError::BadEscape),
            ("/api%2", PathError::BadEscape),
            ("api", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ] {
            assert_eq!(normalize_path(raw), Err(err), "{raw}");
        }
    }

    #[test]
    fn path_and_query_keeps_the_query_and_borrows_a_clean_path() {
        for raw in ["/", "/api/users", "/api/users/?q=a/../b", "/a.b/c..d/.e"] {
            let out = normalize_path_and_query(raw).unwrap();
            assert!(matches!(out, Cow::Borrowed(_)), "{raw}");
            assert_eq!(out, raw);
        }
        for (raw, want) in [
            ("/x/../admin?k=v", "/admin?k=v"),
            ("//api?a=1#frag", "/api?a=1"),
            ("/api/.", "/api/"),
            ("/%61pi?q=%2F", "/api?q=%2F"),
        ] {
            assert_eq!(normalize_path_and_query(raw).unwrap(), want, "{raw}");
        }
        assert_eq!(
            normalize_path_and_query("/a%2Fb?x"),
            Err(PathError::EncodedSlash)
        );
    }

    #[test]
    fn normalized_borrows_only_what_normalize_path_keeps() {
        for raw in [
            "/",
            "/api/users",
            "/a.b/c..d/.e",
            "/a/",
            "/x/../y",
            "//a",
            "/%61",
            "/a\\b",
            "/a/.",
            "/a%2Fb",
            "api",
        ] {
            let fast = normalized(raw);
            assert_eq!(fast.as_deref(), normalize_path(raw).as_deref(), "{raw}");
            if let Ok(Cow::Borrowed(_)) = fast {
                assert_eq!(normalize_path(raw).as_deref(), Ok(raw), "{raw}");
            }
        }
        assert!(matches!(normalized("/api/users"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn templates_match_whole_segments() {
        let one = PathTemplate::parse("/v1/{*}/items");
        assert!(one.matches("/v1/shop/items"));
        assert!(!one.matches("/v1/items"));
        assert!(!one.matches("/v1/a/b/items"));
        assert!(!one.matches("/v1//items"));
        let many = PathTemplate::parse("/files/{**}");
        assert!(many.matches("/files/a"));
        assert!(many.matches("/files/a/b/c"));
        assert!(!many.matches("/files/"));
        assert!(!many.matches("/files"));
        let middle = PathTemplate::parse("/a/{**}/edit");
        assert!(middle.matches("/a/x/y/edit"));
        assert!(!middle.matches("/a/edit"));
        assert!(!middle.matches("/a/x/y"));
    }

    #[test]
    fn attribute_keys_and_values() {
        assert_eq!(
            AttributeKey::parse("request.headers[X-User]"),
            AttributeKey::Header("x-user".into())
        );
        assert_eq!(
            AttributeKey::parse("request.auth.claims[groups][team]"),
            AttributeKey::AuthClaim(vec!["groups".into(), "team".into()])
        );
        assert!(matches!(
            AttributeKey::parse("experimental.envoy.filters.x[y]"),
            AttributeKey::Unsupported(_)
        ));
        let auth = RequestAuth {
            principal: "iss/sub".into(),
            issuer: "iss".into(),
            subject: "sub".into(),
            audiences: vec!["a".into(), "b".into()],
            presenter: None,
            claims: serde_json::json!({"roles": ["dev", "ops"], "org": {"team": "mesh"}, "admin": true}),
        };
        let mut headers = HeaderMap::new();
        headers.append("x-user", "bob".parse().unwrap());
        headers.append("x-user", "alice".parse().unwrap());
        let request = Request {
            method: "GET",
            host: "h",
            path: "/",
            headers: &headers,
            auth: Some(&auth),
            sni: None,
        };
        let values = |key: &str| {
            AttributeKey::parse(key)
                .values(&request)
                .into_iter()
                .map(|v| v.into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(values("request.headers[x-user]"), ["bob", "alice"]);
        assert_eq!(values("request.auth.claims[roles]"), ["dev", "ops"]);
        assert_eq!(values("request.auth.claims[org][team]"), ["mesh"]);
        assert_eq!(values("request.auth.claims[admin]"), ["true"]);
        assert!(values("request.auth.claims[org]").is_empty());
        assert_eq!(values("request.auth.audiences"), ["a", "b"]);
        assert!(values("request.auth.presenter").is_empty());
        assert!(values("connection.sni").is_empty());
    }
}
