//! What a route does to a request besides choosing where it goes: rewrites
//! (Istio's `HTTPRewrite`), and the two actions that answer without an
//! upstream, redirects (`HTTPRedirect`) and direct responses
//! (`HTTPDirectResponse`).

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use http::StatusCode;
use weft_proto::route::{self as pb, http_body::Specifier};

use super::RequestView;
use super::RouteError;
use super::matcher::{HttpMatch, REGEX_SIZE_LIMIT, StringMatcher};

/// The path part of a `:path` (before `?` or `#`), and the rest.
fn split_path(path_and_query: &str) -> (&str, &str) {
    let end = path_and_query
        .find(['?', '#'])
        .unwrap_or(path_and_query.len());
    path_and_query.split_at(end)
}

/// A route's rewrite, applied to the request forwarded upstream.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Replaces the matched prefix or path (Envoy's `prefix_rewrite`); ""
    /// for none.
    pub uri: String,
    /// Replaces the authority; "" for none.
    pub authority: String,
    /// `uri_regex_rewrite`: every match in the path is replaced; the
    /// replacement is already in the `regex` crate's syntax (`${1}`).
    pub uri_regex: Option<(regex::Regex, String)>,
}

impl Rewrite {
    /// Compiles the route's `rewrite`; `None` when it rewrites nothing.
    pub(crate) fn compile(
        r: Option<&pb::HttpRewrite>,
        route: &str,
    ) -> Result<Option<Self>, RouteError> {
        let Some(r) = r else { return Ok(None) };
        let uri_regex = match &r.uri_regex_rewrite {
            None => None,
            Some(rr) => {
                let invalid = |reason: String| RouteError::Invalid {
                    route: route.to_string(),
                    field: "rewrite.uri_regex_rewrite".to_string(),
                    reason,
                };
                if rr.r#match.is_empty() {
                    return Err(invalid("empty match".to_string()));
                }
                let re = regex::RegexBuilder::new(&rr.r#match)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|error| RouteError::Regex {
                        route: route.to_string(),
                        field: "rewrite.uri_regex_rewrite.match".to_string(),
                        error,
                    })?;
                let replacement =
                    translate_replacement(&rr.rewrite, re.captures_len()).map_err(invalid)?;
                Some((re, replacement))
            }
        };
        if r.uri.is_empty() && r.authority.is_empty() && uri_regex.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            // Istio ignores `uri` when `uri_regex_rewrite` is set.
            uri: if uri_regex.is_some() {
                String::new()
            } else {
                r.uri.clone()
            },
            authority: r.authority.clone(),
            uri_regex,
        }))
    }

    /// The path to forward, or `None` to forward it unchanged. `matched` is
    /// the match that selected the route ([`super::Selected::http_match`]).
    ///
    /// Envoy's `prefix_rewrite`: with a `prefix` uri match, the matched
    /// prefix is replaced and the rest kept; with `exact` or `regex`, the
    /// whole path, keeping the query. Without a uri match Istio matches the
    /// prefix "/", so that "/" is what gets replaced ("/a" with uri "/v2"
    /// becomes "/v2a"). A regex rewrite replaces every match in the path,
    /// never in the query, and yields the path even when nothing matched.
    pub fn rewrite_path(
        &self,
        path_and_query: &str,
        matched: Option<&HttpMatch>,
    ) -> Option<String> {
        if let Some((re, replacement)) = &self.uri_regex {
            let (path, rest) = split_path(path_and_query);
            // A path the pattern does not match is sent as it is, but
            // still counts as rewritten (Envoy's regex rewrite always
            // yields a path: `x-envoy-original-path` goes with it).
            let mut new = re.replace_all(path, replacement.as_str()).into_owned();
            new.push_str(rest);
            return Some(new);
        }
        if self.uri.is_empty() {
            return None;
        }
        replace_matched(path_and_query, matched, &self.uri)
    }

    /// The authority to forward instead of the request's, if any.
    pub fn rewrite_authority(&self) -> Option<&str> {
        (!self.authority.is_empty()).then_some(self.authority.as_str())
    }
}

/// Envoy's `prefix_rewrite` of `path_and_query` under `matched`: with a
/// `prefix` uri match the matched prefix is replaced by `with` and the
/// rest kept; with `exact` or `regex`, the whole path, keeping the query;
/// without a uri match (Istio's prefix "/"), the leading "/". `None` when
/// the match did not select this path.
fn replace_matched(
    path_and_query: &str,
    matched: Option<&HttpMatch>,
    with: &str,
) -> Option<String> {
    let replaced = match matched.and_then(HttpMatch::uri) {
        Some(StringMatcher::Prefix(p)) => p.len(),
        Some(StringMatcher::Exact(_) | StringMatcher::Regex(_)) => {
            split_path(path_and_query).0.len()
        }
        None => usize::from(path_and_query.starts_with('/')),
    };
    // A match that did not select this path (a caller's mistake) can
    // leave `replaced` past the end or inside a character.
    let rest = path_and_query.get(replaced..)?;
    let mut out = String::with_capacity(with.len() + rest.len());
    out.push_str(with);
    out.push_str(rest);
    Some(out)
}

/// An RE2 rewrite string (`\1` groups, `\\` a backslash) in the `regex`
/// crate's syntax (`${1}`, `$$` a dollar). RE2 refuses any other escape and
/// groups the pattern does not have; so does this.
fn translate_replacement(rewrite: &str, captures_len: usize) -> Result<String, String> {
    let mut out = String::with_capacity(rewrite.len() + 8);
    let mut chars = rewrite.chars();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some(d @ '0'..='9') => {
                    let group = d as usize - '0' as usize;
                    if group >= captures_len {
                        return Err(format!(
                            "rewrite {rewrite:?} refers to group {group}, the pattern has {}",
                            captures_len - 1
                        ));
                    }
                    let _ = write!(out, "${{{group}}}");
                }
                _ => return Err(format!("rewrite {rewrite:?}: invalid escape after `\\`")),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Where a redirect's port comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    /// Envoy's default: the request's authority as is, except that its
    /// port goes when the scheme changes away from the default scheme of
    /// that port (`http://h:80` → `https://h`), the request's scheme being
    /// its `x-forwarded-proto`. A replaced authority is used as given.
    /// `derivePort: FROM_PROTOCOL_DEFAULT` is this: istiod sets no port for
    /// it.
    Keep,
    /// This port.
    Port(u16),
    /// The port the request was sent to (the service port).
    FromRequestPort,
}

/// A route answering with a redirect.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// Replaces the path; `None`: keep it.
    pub uri: Option<String>,
    /// Replaces the matched prefix of the path (`prefixRewrite`).
    pub prefix_rewrite: Option<String>,
    /// Replaces the authority, written as given, a port after it if the
    /// redirect has one (Envoy: `b:8080` with port 9090 is `b:8080:9090`);
    /// `None`: keep the request's.
    pub authority: Option<String>,
    /// Replaces the scheme; `None`: keep the request's (see
    /// [`Redirect::location`]).
    pub scheme: Option<String>,
    /// The port.
    pub port: RedirectPort,
    /// 301 (default), 302, 303, 307 or 308.
    pub code: StatusCode,
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// `host[:port]` → (`host`, `port`), IPv6 literals in brackets included.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let colon = if authority.starts_with('[') {
        authority.rfind("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    }
}

impl Redirect {
    /// Compiles the route's `redirect`.
    pub(crate) fn compile(r: &pb::HttpRedirect, route: &str) -> Result<Self, RouteError> {
        let invalid = |field: &str, reason: String| RouteError::Invalid {
            route: route.to_string(),
            field: format!("redirect.{field}"),
            reason,
        };
        let code = match r.redirect_code {
            0 | 301 => StatusCode::MOVED_PERMANENTLY,
            302 => StatusCode::FOUND,
            303 => StatusCode::SEE_OTHER,
            307 => StatusCode::TEMPORARY_REDIRECT,
            308 => StatusCode::PERMANENT_REDIRECT,
            c => {
                return Err(invalid(
                    "redirect_code",
                    format!("{c} is not one of 301, 302, 303, 307, 308"),
                ));
            }
        };
        let port = match pb::DerivePort::try_from(r.derive_port) {
            Ok(pb::DerivePort::FromRequestPort) => RedirectPort::FromRequestPort,
            Ok(pb::DerivePort::FromProtocolDefault) => RedirectPort::Keep,
            _ if r.port == 0 => RedirectPort::Keep,
            _ => RedirectPort::Port(
                u16::try_from(r.port)
                    .map_err(|_| invalid("port", format!("{} is not a port", r.port)))?,
            ),
        };
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(Self {
            uri: nonempty(&r.uri),
            prefix_rewrite: nonempty(&r.prefix_rewrite),
            authority: nonempty(&r.authority),
            scheme: nonempty(&r.scheme),
            port,
            code,
        })
    }

    /// The redirect's status and `Location` for `req`.
    ///
    /// The request's query string is kept unless the new `uri` has its own
    /// (Envoy). Without a `scheme` the request's is kept: Envoy's
    /// `:scheme`, `req.request_scheme()` (an HTTP/2 app's own; for HTTP/1,
    /// the `x-forwarded-proto` the client sent if it is "http" or "https",
    /// which a sidecar keeps on the outbound side, else the connection's).
    ///
    /// A port equal to the default of the redirect's scheme (80 for http,
    /// 443 for https; with no scheme, of the listener's, `req.scheme`) is
    /// not sent to Envoy by istiod, so the request's authority is kept as
    /// for no port: `Host: b:80` gives `http://b:80/…`, `Host: b` gives
    /// `http://b/…` (Istio's own routing tests). Any other port replaces
    /// the request's, or follows a replaced authority as written.
    ///
    /// `matched` is the match that selected the route, for
    /// `prefixRewrite`.
    pub fn location(
        &self,
        req: &RequestView<'_>,
        matched: Option<&HttpMatch>,
    ) -> (StatusCode, String) {
        let forwarded = forwarded_proto(req);
        let scheme = self
            .scheme
            .as_deref()
            .unwrap_or_else(|| req.request_scheme());
        let mut out = String::with_capacity(64 + req.path_and_query.len());
        out.push_str(scheme);
        out.push_str("://");
        let istiod_scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let port = match self.port {
            RedirectPort::Keep => None,
            RedirectPort::Port(p) => Some(p),
            RedirectPort::FromRequestPort => Some(req.port),
        }
        .filter(|p| default_port(istiod_scheme) != Some(*p));
        match (port, &self.authority) {
            (None, None) => out.push_str(keep_authority(req.authority, scheme, &forwarded)),
            (_, Some(authority)) => out.push_str(authority),
            (Some(_), None) => out.push_str(split_port(req.authority).0),
        }
        if let Some(port) = port {
            let _ = write!(out, ":{port}");
        }
        let start = out.len();
        let rewritten = self
            .prefix_rewrite
            .as_deref()
            .and_then(|with| replace_matched(req.path_and_query, matched, with));
        match &self.uri {
            _ if let Some(path) = &rewritten => out.push_str(path),
            Some(uri) if uri.contains('?') => out.push_str(uri),
            Some(uri) => {
                out.push_str(uri);
                if let Some(q) = req.path_and_query.find('?') {
                    out.push_str(&req.path_and_query[q..]);
                }
            }
            None => out.push_str(req.path_and_query),
        }
        if !out[start..].starts_with('/') {
            out.insert(start, '/');
        }
        (self.code, out)
    }
}

/// `x-forwarded-proto` as Envoy's connection manager has it when routing
/// with `use_remote_address` off (Istio's sidecar outbound): the client's,
/// several joined by ",", else the connection's scheme.
fn forwarded_proto<'a>(req: &RequestView<'a>) -> Cow<'a, str> {
    let mut values = req.headers.get_all("x-forwarded-proto").iter();
    let Some(first) = values.next() else {
        return Cow::Borrowed(req.scheme);
    };
    let mut joined = String::from_utf8_lossy(first.as_bytes());
    for v in values {
        let joined = joined.to_mut();
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    joined
}

/// Envoy's `processRequestHost`: the request's authority, without its port
/// when the new scheme is not the request's `x-forwarded-proto` and the
/// port (as written) is that scheme's default.
fn keep_authority<'a>(authority: &'a str, new_scheme: &str, forwarded_proto: &str) -> &'a str {
    let (host, port) = split_port(authority);
    let is_default = |p: &str| default_port(forwarded_proto).is_some_and(|d| p == d.to_string());
    if new_scheme != forwarded_proto && port.is_some_and(is_default) {
        host
    } else {
        authority
    }
}

/// A route answering by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    /// The status, 200-599.
    pub status: StatusCode,
    /// The body, if any.
    pub body: Option<Bytes>,
}

impl DirectResponse {
    /// Compiles the route's `direct_response`.
    pub(crate) fn compile(d: &pb::HttpDirectResponse, route: &str) -> Result<Self, RouteError> {
        let status = u16::try_from(d.status)
            .ok()
            .filter(|s| (200..600).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| RouteError::Invalid {
                route: route.to_string(),
                field: "direct_response.status".to_string(),
                reason: format!("{} is not in [200, 600)", d.status),
            })?;
        let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
            None => None,
            Some(Specifier::String(s)) => Some(Bytes::from(s.clone())),
            Some(Specifier::Bytes(b)) => Some(Bytes::from(b.clone())),
        };
        Ok(Self { status, body })
    }

    /// The `Location` Envoy gives a direct response of 201 or 3xx
    /// (RFC 7231 7.1.2): the request's own URL, as a redirect that
    /// replaces nothing makes it.
    pub fn location(&self, req: &RequestView<'_>) -> Option<String> {
        if self.status != StatusCode::CREATED && !self.status.is_redirection() {
            return None;
        }
        let to_itself = Redirect {
            uri: None,
            prefix_rewrite: None,
            authority: None,
            scheme: None,
            port: RedirectPort::Keep,
            code: StatusCode::MOVED_PERMANENTLY,
        };
        Some(to_itself.location(req, None).1)
    }
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
