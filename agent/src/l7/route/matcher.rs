//! Istio's `StringMatch` and `HTTPMatchRequest`, evaluated the way Envoy
//! evaluates the `RouteMatch` Istio translates them into.
//!
//! Regexes are the `regex` crate's (linear time, RE2 syntax for all
//! practical purposes), compiled once with a size limit and anchored:
//! Envoy's `safe_regex` must match the whole value. Perl classes (`\d`,
//! `\w`, `\s`) are Unicode-aware here and ASCII in RE2; they agree on ASCII.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use regex::bytes::{Regex, RegexBuilder};
use weft_proto::route::{self as pb, string_match::MatchType};

use super::{RequestView, RouteError};

/// The largest a compiled regex may grow (`RegexBuilder::size_limit`); a
/// pattern over it is refused with a [`RouteError::Regex`].
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern` to match whole values (`^(?:pattern)$`).
pub(crate) fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    // Alone first, so that a pattern such as `a)|(b` cannot escape the
    // anchoring group and become valid.
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()?;
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// One compiled `StringMatch`.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    /// The value equals this.
    Exact(Box<str>),
    /// The value starts with this.
    Prefix(Box<str>),
    /// The whole value matches this (anchored) regex.
    Regex(Regex),
}

impl StringMatcher {
    /// Compiles a `StringMatch`; `None` when it has no match type.
    pub fn compile(m: &pb::StringMatch) -> Result<Option<Self>, regex::Error> {
        Ok(match &m.match_type {
            None => None,
            Some(MatchType::Exact(v)) => Some(Self::Exact(v.as_str().into())),
            Some(MatchType::Prefix(v)) => Some(Self::Prefix(v.as_str().into())),
            Some(MatchType::Regex(v)) => Some(Self::Regex(anchored_regex(v)?)),
        })
    }

    /// Compiles a `StringMatch` used on a header, a pseudo-header or a query
    /// parameter: `None` (presence) when it has no match type or is the
    /// regex `*`, which Istio turns into Envoy's `present_match`.
    pub(crate) fn compile_presence(m: &pb::StringMatch) -> Result<Option<Self>, regex::Error> {
        match &m.match_type {
            Some(MatchType::Regex(v)) if v == "*" => Ok(None),
            _ => Self::compile(m),
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(e) => value == e.as_bytes(),
            Self::Prefix(p) => value.starts_with(p.as_bytes()),
            Self::Regex(r) => r.is_match(value),
        }
    }

    /// Whether `value` matches, exact and prefix comparing ASCII letters
    /// case-insensitively (Envoy's `case_sensitive: false`, which leaves
    /// regexes alone).
    pub fn matches_ignore_ascii_case(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(e) => value.eq_ignore_ascii_case(e.as_bytes()),
            Self::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            Self::Regex(r) => r.is_match(value),
        }
    }
}

/// Where a header match reads its value.
#[derive(Debug, Clone)]
enum Source {
    Authority,
    Method,
    Path,
    Scheme,
    Header(HeaderName),
    /// A pseudo-header requests do not have (`:status`, ...).
    Never,
}

impl Source {
    /// `name` as written in a VirtualService (lowercase by Istio's rules).
    fn parse(name: &str) -> Result<Self, http::header::InvalidHeaderName> {
        Ok(match name {
            ":authority" => Self::Authority,
            // Envoy keeps Host as :authority; matching `host` would never
            // hold there, which is surely not what the author meant.
            "host" => Self::Authority,
            ":method" => Self::Method,
            ":path" => Self::Path,
            ":scheme" => Self::Scheme,
            _ if name.starts_with(':') => Self::Never,
            _ => Self::Header(HeaderName::from_bytes(name.as_bytes())?),
        })
    }

    fn value<'r>(&self, req: &RequestView<'r>) -> Option<Cow<'r, [u8]>> {
        match self {
            Self::Authority if req.authority.is_empty() => None,
            Self::Authority => Some(Cow::Borrowed(req.authority.as_bytes())),
            Self::Method => Some(Cow::Borrowed(req.method.as_str().as_bytes())),
            Self::Path => Some(Cow::Borrowed(req.path_and_query.as_bytes())),
            Self::Scheme => Some(Cow::Borrowed(req.request_scheme().as_bytes())),
            Self::Header(name) => joined(req.headers, name),
            Self::Never => None,
        }
    }
}

/// A header's value; several values joined with "," as Envoy does. Only
/// that case allocates.
fn joined<'r>(headers: &'r HeaderMap, name: &HeaderName) -> Option<Cow<'r, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut all = Vec::with_capacity(first.len() + second.len() + 1);
    all.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        all.push(b',');
        all.extend_from_slice(v.as_bytes());
    }
    Some(Cow::Owned(all))
}

/// A header (or pseudo-header) condition.
#[derive(Debug, Clone)]
struct HeaderMatch {
    source: Source,
    /// `None`: the header must be present.
    matcher: Option<StringMatcher>,
}

impl HeaderMatch {
    fn holds(&self, req: &RequestView<'_>) -> bool {
        match (self.source.value(req), &self.matcher) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(m)) => m.matches(&v),
        }
    }

    /// Istio's `withoutHeaders`: Envoy's `invert_match`, with
    /// `treat_missing_header_as_empty` unless it is a presence match.
    fn holds_inverted(&self, req: &RequestView<'_>) -> bool {
        match (self.source.value(req), &self.matcher) {
            (None, None) => true,
            (Some(_), None) => false,
            (None, Some(m)) => !m.matches(b""),
            (Some(v), Some(m)) => !m.matches(&v),
        }
    }
}

/// A query parameter condition.
#[derive(Debug, Clone)]
struct QueryMatch {
    name: Box<str>,
    /// `None`: the parameter must be present.
    matcher: Option<StringMatcher>,
}

/// The first value of the query parameter `name` (Envoy's
/// `getFirstValue`); not percent-decoded, as in Envoy. A parameter without
/// `=` has the value "".
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// One compiled `HTTPMatchRequest`: every condition it sets must hold.
#[derive(Debug, Clone)]
pub struct HttpMatch {
    /// The match's `name`, or "".
    pub name: String,
    uri: Option<StringMatcher>,
    ignore_uri_case: bool,
    /// `headers`, plus `method`, `authority` and `scheme` as Istio sends
    /// them: header matches on the pseudo-headers.
    headers: Vec<HeaderMatch>,
    without_headers: Vec<HeaderMatch>,
    query_params: Vec<QueryMatch>,
    /// 0: any.
    port: u16,
    source_namespace: Option<Box<str>>,
    /// Sorted, for binary search; `None` when `source_labels` is empty.
    source_workloads: Option<Vec<String>>,
}

impl HttpMatch {
    /// Compiles `m`; `route` (e.g. "route 2 of bookinfo/reviews") and
    /// `field` (e.g. "match[0]") name it in errors.
    pub(crate) fn compile(
        m: &pb::HttpMatchRequest,
        route: &str,
        field: &str,
    ) -> Result<Self, RouteError> {
        let regex_err = |sub: &str, error| RouteError::Regex {
            route: route.to_string(),
            field: format!("{field}.{sub}"),
            error,
        };
        let uri = match &m.uri {
            Some(u) => StringMatcher::compile(u).map_err(|e| regex_err("uri.regex", e))?,
            None => None,
        };
        let mut headers = Vec::with_capacity(m.headers.len() + 3);
        for (sub, source, sm) in [
            ("method", Source::Method, &m.method),
            ("authority", Source::Authority, &m.authority),
            ("scheme", Source::Scheme, &m.scheme),
        ] {
            if let Some(sm) = sm {
                headers.push(HeaderMatch {
                    source,
                    matcher: StringMatcher::compile_presence(sm)
                        .map_err(|e| regex_err(&format!("{sub}.regex"), e))?,
                });
            }
        }
        let header_matches = |map: &std::collections::BTreeMap<String, pb::StringMatch>,
                              what: &str|
         -> Result<Vec<HeaderMatch>, RouteError> {
            map.iter()
                .map(|(name, sm)| {
                    let source = Source::parse(name).map_err(|_| RouteError::Invalid {
                        route: route.to_string(),
                        field: format!("{field}.{what}[{name:?}]"),
                        reason: "invalid header name".to_string(),
                    })?;
                    let matcher = StringMatcher::compile_presence(sm)
                        .map_err(|e| regex_err(&format!("{what}[{name:?}].regex"), e))?;
                    Ok(HeaderMatch { source, matcher })
                })
                .collect()
        };
        headers.extend(header_matches(&m.headers, "headers")?);
        let without_headers = header_matches(&m.without_headers, "without_headers")?;
        let query_params = m
            .query_params
            .iter()
            .map(|(name, sm)| {
                Ok(QueryMatch {
                    name: name.as_str().into(),
                    matcher: StringMatcher::compile_presence(sm)
                        .map_err(|e| regex_err(&format!("query_params[{name:?}].regex"), e))?,
                })
            })
            .collect::<Result<_, RouteError>>()?;
        let port = u16::try_from(m.port).map_err(|_| RouteError::Invalid {
            route: route.to_string(),
            field: format!("{field}.port"),
            reason: format!("{} is not a port", m.port),
        })?;
        let source_workloads = (!m.source_labels.is_empty()).then(|| {
            let mut w = m.source_workloads.clone();
            w.sort_unstable();
            w
        });
        Ok(Self {
            name: m.name.clone(),
            uri,
            ignore_uri_case: m.ignore_uri_case,
            headers,
            without_headers,
            query_params,
            port,
            source_namespace: (!m.source_namespace.is_empty())
                .then(|| m.source_namespace.as_str().into()),
            source_workloads,
        })
    }

    /// The `uri` condition, if any (rewrites need to know what it matched).
    pub fn uri(&self) -> Option<&StringMatcher> {
        self.uri.as_ref()
    }

    /// Whether every condition holds for `req`.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.applies_to(req) && self.matches_request(req)
    }

    /// Whether the conditions on the client and the port hold (`port`,
    /// `sourceNamespace`, `sourceLabels`): istiod applies these when it
    /// builds a proxy's routes, and leaves out a match they rule out.
    pub fn applies_to(&self, req: &RequestView<'_>) -> bool {
        if self.port != 0 && self.port != req.port {
            return false;
        }
        if let Some(ns) = &self.source_namespace
            && **ns != *req.source_namespace
        {
            return false;
        }
        if let Some(w) = &self.source_workloads
            && w.binary_search_by(|uid| uid.as_str().cmp(req.source_workload))
                .is_err()
        {
            return false;
        }
        true
    }

    /// Whether the conditions on the request itself hold (URI, headers,
    /// query parameters).
    fn matches_request(&self, req: &RequestView<'_>) -> bool {
        if let Some(uri) = &self.uri
            && !self.uri_matches(uri, req)
        {
            return false;
        }
        if !self.headers.iter().all(|h| h.holds(req)) {
            return false;
        }
        if !self.without_headers.iter().all(|h| h.holds_inverted(req)) {
            return false;
        }
        if !self.query_params.is_empty() {
            let query = req.query().unwrap_or("");
            let all =
                self.query_params
                    .iter()
                    .all(|q| match (query_value(query, &q.name), &q.matcher) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(v), Some(m)) => m.matches(v.as_bytes()),
                    });
            if !all {
                return false;
            }
        }
        true
    }

    /// Envoy: `path` and `safe_regex` compare the path without query and
    /// fragment, `prefix` the beginning of the whole `:path`.
    fn uri_matches(&self, uri: &StringMatcher, req: &RequestView<'_>) -> bool {
        let value = match uri {
            StringMatcher::Prefix(_) => req.path_and_query,
            StringMatcher::Exact(_) | StringMatcher::Regex(_) => req.path(),
        };
        if self.ignore_uri_case {
            uri.matches_ignore_ascii_case(value.as_bytes())
        } else {
            uri.matches(value.as_bytes())
        }
    }
}

// === impl dump (the admin API's config dump) ===

impl StringMatcher {
    /// `{"exact": v}`, `{"prefix": v}` or `{"regex": pattern}` (the
    /// pattern as written, without the anchoring added to it).
    pub fn dump(&self) -> serde_json::Value {
        match self {
            Self::Exact(v) => serde_json::json!({ "exact": &**v }),
            Self::Prefix(v) => serde_json::json!({ "prefix": &**v }),
            Self::Regex(r) => {
                let anchored = r.as_str();
                let pattern = anchored
                    .strip_prefix("^(?:")
                    .and_then(|p| p.strip_suffix(")$"))
                    .unwrap_or(anchored);
                serde_json::json!({ "regex": pattern })
            }
        }
    }
}

impl Source {
    fn name(&self) -> &str {
        match self {
            Self::Authority => ":authority",
            Self::Method => ":method",
            Self::Path => ":path",
            Self::Scheme => ":scheme",
            Self::Header(name) => name.as_str(),
            Self::Never => ":never",
        }
    }
}

/// Header conditions by name; a presence match is `{"present": true}`.
fn dump_headers(list: &[HeaderMatch]) -> serde_json::Map<String, serde_json::Value> {
    list.iter()
        .map(|h| {
            let m = h.matcher.as_ref().map_or_else(
                || serde_json::json!({ "present": true }),
                StringMatcher::dump,
            );
            (h.source.name().to_string(), m)
        })
        .collect()
}

impl HttpMatch {
    /// The conditions this match holds, only those set.
    pub fn dump(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if !self.name.is_empty() {
            out.insert("name".into(), self.name.clone().into());
        }
        if let Some(uri) = &self.uri {
            out.insert("uri".into(), uri.dump());
        }
        if self.ignore_uri_case {
            out.insert("ignore_uri_case".into(), true.into());
        }
        if !self.headers.is_empty() {
            out.insert("headers".into(), dump_headers(&self.headers).into());
        }
        if !self.without_headers.is_empty() {
            out.insert(
                "without_headers".into(),
                dump_headers(&self.without_headers).into(),
            );
        }
        if !self.query_params.is_empty() {
            let params: serde_json::Map<String, serde_json::Value> = self
                .query_params
                .iter()
                .map(|q| {
                    let m = q.matcher.as_ref().map_or_else(
                        || serde_json::json!({ "present": true }),
                        StringMatcher::dump,
                    );
                    (q.name.to_string(), m)
                })
                .collect();
            out.insert("query_params".into(), params.into());
        }
        if self.port != 0 {
            out.insert("port".into(), self.port.into());
        }
        if let Some(ns) = &self.source_namespace {
            out.insert("source_namespace".into(), ns.to_string().into());
        }
        if let Some(w) = &self.source_workloads {
            out.insert("source_workloads".into(), w.clone().into());
        }
        serde_json::Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(t: MatchType) -> pb::StringMatch {
        pb::StringMatch {
            match_type: Some(t),
        }
    }

    #[test]
    fn exact_prefix_regex() {
        let m = StringMatcher::compile(&sm(MatchType::Exact("/a".into())))
            .unwrap()
            .unwrap();
        assert!(m.matches(b"/a"));
        assert!(!m.matches(b"/ab"));
        assert!(m.matches_ignore_ascii_case(b"/A"));
        let m = StringMatcher::compile(&sm(MatchType::Prefix("/api".into())))
            .unwrap()
            .unwrap();
        assert!(m.matches(b"/api/v1"));
        assert!(!m.matches(b"/ap"));
        assert!(!m.matches(b"/API"));
        assert!(m.matches_ignore_ascii_case(b"/API/x"));
        assert!(!m.matches_ignore_ascii_case(b"/AP"));
        let m = StringMatcher::compile(&sm(MatchType::Regex("/v[0-9]+".into())))
            .unwrap()
            .unwrap();
        assert!(m.matches(b"/v12"));
        // Anchored at both ends.
        assert!(!m.matches(b"/v12/x"));
        assert!(!m.matches(b"x/v12"));
        // Case-insensitivity leaves regexes alone.
        assert!(!m.matches_ignore_ascii_case(b"/V1"));
        assert!(
            StringMatcher::compile(&pb::StringMatch { match_type: None })
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn alternation_is_anchored_as_a_whole() {
        let m = anchored_regex("a|ab").unwrap();
        assert!(m.is_match(b"ab"));
        assert!(m.is_match(b"a"));
        assert!(!m.is_match(b"abc"));
        assert!(!m.is_match(b"xa"));
    }

    #[test]
    fn pattern_cannot_escape_the_anchors() {
        assert!(anchored_regex("a)|(b").is_err());
    }

    #[test]
    fn star_regex_is_presence_for_headers() {
        let m = sm(MatchType::Regex("*".into()));
        assert!(StringMatcher::compile_presence(&m).unwrap().is_none());
        assert!(StringMatcher::compile(&m).is_err());
    }

    #[test]
    fn oversized_regex_is_refused() {
        let err = anchored_regex(r"\w{1000}\w{1000}\w{1000}").unwrap_err();
        assert!(matches!(
            err,
            regex::Error::CompiledTooBig(REGEX_SIZE_LIMIT)
        ));
    }

    #[test]
    fn pathological_regex_runs_in_linear_time() {
        // Exponential in a backtracking engine; the input is 100 KB.
        let m = anchored_regex("(a+)+$").unwrap();
        let mut input = vec![b'a'; 100 * 1024];
        input.push(b'b');
        assert!(!m.is_match(&input));
        input.pop();
        assert!(m.is_match(&input));
        let m = anchored_regex("(a|aa)+").unwrap();
        input.push(b'b');
        assert!(!m.is_match(&input));
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value("a=1&b=2", "b"), Some("2"));
        assert_eq!(query_value("a=1&a=2", "a"), Some("1"));
        assert_eq!(query_value("flag&b=2", "flag"), Some(""));
        assert_eq!(query_value("a=x%20y", "a"), Some("x%20y"));
        assert_eq!(query_value("ab=1", "a"), None);
        assert_eq!(query_value("a=b=c", "a"), Some("b=c"));
    }

    #[test]
    fn multiple_header_values_are_joined() {
        let mut h = HeaderMap::new();
        let name = HeaderName::from_static("x-a");
        assert!(joined(&h, &name).is_none());
        h.append("x-a", "1".parse().unwrap());
        assert!(matches!(joined(&h, &name), Some(Cow::Borrowed(b"1"))));
        h.append("x-a", "2".parse().unwrap());
        h.append("x-a", "3".parse().unwrap());
        assert_eq!(joined(&h, &name).unwrap().as_ref(), b"1,2,3");
    }
}
