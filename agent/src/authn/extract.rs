//! Finding tokens in a request and taking them out again, as Envoy's
//! `jwt_authn` extractor does.

use std::{borrow::Cow, sync::Arc};

use http::{HeaderMap, Uri, request::Parts, uri::PathAndQuery};

use super::{JwtRule, rule::Location};

/// A token found in a request.
#[derive(Debug)]
pub(crate) struct Found<'r> {
    pub token: String,
    /// Where it was found.
    pub location: Location<'r>,
    /// The rules (indexes into the rule list) that read that location: only
    /// they may accept the token.
    pub rules: Vec<usize>,
}

/// Every token in `parts` at a location some rule reads. Like Envoy:
/// headers first (every value of a header), then query parameters (the
/// first of each name), then cookies (the first of each name).
pub(crate) fn find_tokens<'r>(rules: &'r [Arc<JwtRule>], parts: &Parts) -> Vec<Found<'r>> {
    let mut locations: Vec<(Location<'r>, Vec<usize>)> = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        for location in rule.locations() {
            match locations.iter_mut().find(|(l, _)| *l == location) {
                Some((_, readers)) if !readers.contains(&index) => readers.push(index),
                Some(_) => {}
                None => locations.push((location, vec![index])),
            }
        }
    }
    locations.sort_by_key(|(location, _)| match location {
        Location::Header { .. } => 0,
        Location::Param(_) => 1,
        Location::Cookie(_) => 2,
    });

    let mut found = Vec::new();
    for (location, rules) in locations {
        match location {
            Location::Header { name, prefix } => {
                for value in parts.headers.get_all(name) {
                    if let Some(token) = header_token(value.as_bytes(), prefix) {
                        found.push(Found {
                            token,
                            location,
                            rules: rules.clone(),
                        });
                    }
                }
            }
            Location::Param(name) => {
                if let Some(token) = query_param(parts.uri.query(), name) {
                    found.push(Found {
                        token,
                        location,
                        rules,
                    });
                }
            }
            Location::Cookie(name) => {
                if let Some(token) = cookie(&parts.headers, name) {
                    found.push(Found {
                        token,
                        location,
                        rules,
                    });
                }
            }
        }
    }
    found
}

/// Takes a verified token out of the request (`forwardOriginalToken:
/// false`): the whole header, or the query parameter. Envoy leaves cookies
/// alone, and so does this.
pub(crate) fn remove_token(location: Location<'_>, parts: &mut Parts) {
    match location {
        Location::Header { name, .. } => {
            parts.headers.remove(name);
        }
        Location::Param(name) => remove_query_param(parts, name),
        Location::Cookie(_) => {}
    }
}

/// The characters of a JWT: base64url and the dots.
fn is_jwt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// The token in one header value. With a prefix, Envoy looks for it
/// anywhere in the value (case-sensitively; a value without it holds no
/// token) and takes the rest of the value from the first JWT character on.
fn header_token(value: &[u8], prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some(String::from_utf8_lossy(value).into_owned());
    }
    let prefix = prefix.as_bytes();
    let at = value
        .windows(prefix.len())
        .position(|window| window == prefix)?;
    let rest = &value[at + prefix.len()..];
    let token = match rest.iter().position(|b| is_jwt_char(*b)) {
        Some(start) => &rest[start..],
        // Envoy then takes the whole value, which fails as a token.
        None => value,
    };
    Some(String::from_utf8_lossy(token).into_owned())
}

/// The first value of query parameter `name`, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value).into_owned())
    })
}

/// Removes every `name` parameter from the request's query.
fn remove_query_param(parts: &mut Parts, name: &str) {
    let Some(query) = parts.uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| percent_decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) != name)
        .collect();
    let mut path_and_query = parts.uri.path().to_string();
    if !kept.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&kept.join("&"));
    }
    let mut uri = parts.uri.clone().into_parts();
    let Ok(pq) = PathAndQuery::try_from(path_and_query) else {
        return;
    };
    uri.path_and_query = Some(pq);
    if let Ok(uri) = Uri::from_parts(uri) {
        parts.uri = uri;
    }
}

/// The value of the first cookie called `name`, without surrounding
/// quotes.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                value.to_string()
            })
        })
}

/// `%XX` decoding; anything malformed is kept as it is.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_token_follows_envoy() {
        assert_eq!(
            header_token(b"Bearer a.b.c", "Bearer ").as_deref(),
            Some("a.b.c")
        );
        // The prefix may be anywhere; characters outside a JWT are skipped.
        assert_eq!(
            header_token(b"x Bearer   a.b.c", "Bearer ").as_deref(),
            Some("a.b.c")
        );
        // Case matters, as in Envoy: no prefix, no token.
        assert_eq!(header_token(b"bearer a.b.c", "Bearer "), None);
        // No prefix configured: the whole value.
        assert_eq!(header_token(b"a.b.c", "").as_deref(), Some("a.b.c"));
        // Prefix but nothing after it: the whole value, which will fail.
        assert_eq!(
            header_token(b"Bearer ", "Bearer ").as_deref(),
            Some("Bearer ")
        );
    }

    #[test]
    fn query_params_and_cookies() {
        assert_eq!(
            query_param(
                Some("a=1&access_token=x.y.z&access_token=2"),
                "access_token"
            )
            .as_deref(),
            Some("x.y.z")
        );
        assert_eq!(
            query_param(Some("tok%65n=a%2Eb.c"), "token").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(query_param(Some("a=1"), "access_token"), None);
        assert_eq!(query_param(None, "access_token"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");

        let mut headers = HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "a=1; session=\"x.y.z\"".parse().unwrap(),
        );
        headers.append(http::header::COOKIE, "jwt=p.q.r".parse().unwrap());
        assert_eq!(cookie(&headers, "session").as_deref(), Some("x.y.z"));
        assert_eq!(cookie(&headers, "jwt").as_deref(), Some("p.q.r"));
        assert_eq!(cookie(&headers, "none"), None);
    }

    #[test]
    fn removing_a_query_param_keeps_the_others() {
        let (mut parts, ()) = http::Request::get("http://h/p?a=1&access_token=t&b=2")
            .body(())
            .unwrap()
            .into_parts();
        remove_query_param(&mut parts, "access_token");
        assert_eq!(parts.uri.to_string(), "http://h/p?a=1&b=2");
        remove_query_param(&mut parts, "a");
        remove_query_param(&mut parts, "b");
        assert_eq!(parts.uri.to_string(), "http://h/p");
    }
}
