//! Header edits (Istio's `Headers`), applied the way Envoy applies the
//! `*_headers_to_add` / `*_headers_to_remove` Istio generates from them.
//!
//! Order: Envoy removes first, then sets, then appends (its header parser
//! makes "remove-before-add the default"), so a header both removed and
//! set ends up set. A value with command operators
//! (`%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`, `%REQ(x-user)%`) is
//! rendered for each request as Envoy's header formatters render it, from
//! the headers as they are after the removals and before any addition:
//! an operator without a value adds nothing, and a value that renders
//! empty is not added. Empty values are skipped, as Envoy does unless told
//! to keep them.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_proto::route as pb;

use super::RouteError;
use crate::access_log::format::Format;

/// Edits to one header map (a request's or a response's).
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Replace the header's values with this one (create it if absent).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append a value.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove the header.
    pub remove: Vec<HeaderName>,
    /// As `set` and `add`, for values with command operators.
    pub set_formatted: Vec<(HeaderName, Arc<Format>)>,
    pub add_formatted: Vec<(HeaderName, Arc<Format>)>,
}

/// What a value with command operators is rendered from: the request
/// (and, for a response's edits, the response) that is being edited.
pub trait Formatting {
    /// `format` rendered for the message whose headers are `headers`.
    fn render(&self, format: &Format, headers: &HeaderMap) -> Vec<u8>;
}

/// Nothing to render from: every value with command operators renders
/// empty, and is not added.
pub struct Unformatted;

impl Formatting for Unformatted {
    fn render(&self, _: &Format, _: &HeaderMap) -> Vec<u8> {
        Vec::new()
    }
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.add.is_empty()
            && self.remove.is_empty()
            && self.set_formatted.is_empty()
            && self.add_formatted.is_empty()
    }

    /// Applies the edits: remove, then set, then add (Envoy's order).
    pub fn apply(&self, headers: &mut HeaderMap, formatting: &dyn Formatting) {
        self.apply_removals(headers);
        self.apply_additions(headers, formatting);
    }

    pub(crate) fn apply_removals(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
    }

    pub(crate) fn apply_additions(&self, headers: &mut HeaderMap, formatting: &dyn Formatting) {
        let rendered = self.render(headers, formatting);
        self.apply_sets(headers, &rendered);
        self.apply_adds(headers, &rendered);
    }

    /// The values with command operators, rendered. Every value is
    /// rendered before any is added, as in Envoy: a value reads the
    /// headers as they came, not as the edits leave them.
    pub(crate) fn render(&self, headers: &HeaderMap, formatting: &dyn Formatting) -> Rendered {
        if self.set_formatted.is_empty() && self.add_formatted.is_empty() {
            return Rendered::default();
        }
        let render = |formatted: &[(HeaderName, Arc<Format>)]| {
            formatted
                .iter()
                .filter_map(|(name, format)| {
                    let text = formatting.render(format, headers);
                    if text.is_empty() {
                        return None;
                    }
                    match HeaderValue::from_bytes(&text) {
                        Ok(value) => Some((name.clone(), value)),
                        Err(_) => {
                            tracing::debug!(header = %name, "a rendered header value is not a valid one: not added");
                            None
                        }
                    }
                })
                .collect()
        };
        Rendered {
            set: render(&self.set_formatted),
            add: render(&self.add_formatted),
        }
    }

    /// The values that replace (Envoy applies every list's before any
    /// list's appends).
    pub(crate) fn apply_sets(&self, headers: &mut HeaderMap, rendered: &Rendered) {
        for (name, value) in self.set.iter().chain(&rendered.set) {
            headers.insert(name.clone(), value.clone());
        }
    }

    pub(crate) fn apply_adds(&self, headers: &mut HeaderMap, rendered: &Rendered) {
        for (name, value) in self.add.iter().chain(&rendered.add) {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Values with command operators, rendered for one request or response.
#[derive(Default)]
pub(crate) struct Rendered {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

/// A route's (or a destination's) header edits.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// Edits to the request sent upstream.
    pub request: HeaderEdits,
    /// Edits to the response returned to the client.
    pub response: HeaderEdits,
    /// The request's authority (Host) replaced, from a `host` or
    /// `:authority` key in `request.set` (or, failing that, `request.add`):
    /// Istio turns those into Envoy's `host_rewrite_literal`.
    pub authority: Option<String>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty() && self.authority.is_none()
    }

    /// Compiles Istio's `Headers`, refusing what Istio's validation
    /// refuses: `:`-prefixed names (but `:authority` in request set/add),
    /// `host` outside request set/add, invalid names and values.
    pub(crate) fn compile(
        headers: Option<&pb::Headers>,
        route: &str,
        field: &str,
    ) -> Result<Self, RouteError> {
        let Some(headers) = headers else {
            return Ok(Self::default());
        };
        let mut ops = Self::default();
        let mut set_authority = None;
        let mut add_authority = None;
        if let Some(req) = &headers.request {
            let at = |op: &str| format!("{field}.request.{op}");
            ops.request.set = values(&req.set, route, &at("set"), Some(&mut set_authority))?;
            ops.request.add = values(&req.add, route, &at("add"), Some(&mut add_authority))?;
            ops.request.remove = names(&req.remove, route, &at("remove"))?;
            ops.request.set_formatted = formatted(&req.set_formatted, route, &at("set"))?;
            ops.request.add_formatted = formatted(&req.add_formatted, route, &at("add"))?;
        }
        if let Some(resp) = &headers.response {
            let at = |op: &str| format!("{field}.response.{op}");
            ops.response.set = values(&resp.set, route, &at("set"), None)?;
            ops.response.add = values(&resp.add, route, &at("add"), None)?;
            ops.response.remove = names(&resp.remove, route, &at("remove"))?;
            ops.response.set_formatted = formatted(&resp.set_formatted, route, &at("set"))?;
            ops.response.add_formatted = formatted(&resp.add_formatted, route, &at("add"))?;
        }
        ops.authority = set_authority
            .or(add_authority)
            .filter(|a: &String| !a.is_empty());
        Ok(ops)
    }
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case(":authority")
}

fn bad(route: &str, field: &str, name: &str, reason: &str) -> RouteError {
    RouteError::Invalid {
        route: route.to_string(),
        field: format!("{field}[{name:?}]"),
        reason: reason.to_string(),
    }
}

/// A header name that may be edited (not `host`, not `:`-prefixed).
fn editable_name(name: &str, route: &str, field: &str) -> Result<HeaderName, RouteError> {
    if name.starts_with(':') {
        return Err(bad(
            route,
            field,
            name,
            "`:`-prefixed headers cannot be edited",
        ));
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(bad(
            route,
            field,
            name,
            "the Host header cannot be edited here",
        ));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| bad(route, field, name, "invalid header name"))
}

fn names(list: &[String], route: &str, field: &str) -> Result<Vec<HeaderName>, RouteError> {
    list.iter()
        .map(|n| editable_name(n, route, field))
        .collect()
}

/// `authority`: where a `host`/`:authority` entry goes; `None` where such
/// an entry is refused.
fn values(
    map: &std::collections::BTreeMap<String, String>,
    route: &str,
    field: &str,
    mut authority: Option<&mut Option<String>>,
) -> Result<Vec<(HeaderName, HeaderValue)>, RouteError> {
    let mut out = Vec::with_capacity(map.len());
    // A BTreeMap: in key order, as Istio sorts them.
    for (key, value) in map {
        if let Some(authority) = authority.as_deref_mut()
            && is_authority(key)
        {
            *authority = Some(value.clone());
            continue;
        }
        let header = editable_name(key, route, field)?;
        let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            bad(
                route,
                field,
                key,
                &format!("invalid header value {value:?}"),
            )
        })?;
        if !value.is_empty() {
            out.push((header, value));
        }
    }
    Ok(out)
}

/// Values with command operators, compiled for rendering.
fn formatted(
    map: &std::collections::BTreeMap<String, pb::HeaderFormat>,
    route: &str,
    field: &str,
) -> Result<Vec<(HeaderName, Arc<Format>)>, RouteError> {
    map.iter()
        .map(|(key, value)| {
            let header = editable_name(key, route, field)?;
            let format = Format::header(&value.tokens).map_err(|e| bad(route, field, key, &e))?;
            Ok((header, Arc::new(format)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> pb::HeaderOperations {
        pb::HeaderOperations {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            add: add
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remove: remove.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        }
    }

    fn compile(request: pb::HeaderOperations) -> Result<HeaderOps, RouteError> {
        let h = pb::Headers {
            request: Some(request),
            response: None,
        };
        HeaderOps::compile(Some(&h), "route 0 of ns/vs", "headers")
    }

    #[test]
    fn remove_then_set_then_add() {
        let ops = compile(ops(
            &[("x-set", "s"), ("x-both", "one")],
            &[("x-add", "a"), ("x-both", "two")],
            &["x-gone", "x-set"],
        ))
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-gone", "g".parse().unwrap());
        h.append("x-set", "old1".parse().unwrap());
        h.append("x-set", "old2".parse().unwrap());
        h.insert("x-add", "first".parse().unwrap());
        h.insert("x-keep", "k".parse().unwrap());
        ops.request.apply(&mut h, &Unformatted);
        assert!(h.get("x-gone").is_none());
        // Removed, then set: set wins (Envoy removes before adding).
        let set: Vec<_> = h.get_all("x-set").iter().collect();
        assert_eq!(set, ["s"]);
        let add: Vec<_> = h.get_all("x-add").iter().collect();
        assert_eq!(add, ["first", "a"]);
        let both: Vec<_> = h.get_all("x-both").iter().collect();
        assert_eq!(both, ["one", "two"]);
        assert_eq!(h.get("x-keep").unwrap(), "k");
    }

    #[test]
    fn names_are_lowercased_and_empty_values_skipped() {
        let ops = compile(ops(&[("User-Agent", "weft"), ("x-empty", "")], &[], &[])).unwrap();
        assert_eq!(ops.request.set.len(), 1);
        assert_eq!(ops.request.set[0].0, "user-agent");
    }

    #[test]
    fn host_in_request_set_rewrites_the_authority() {
        let both = compile(ops(&[("host", "a.example")], &[(":authority", "b")], &[])).unwrap();
        assert_eq!(both.authority.as_deref(), Some("a.example"));
        assert!(both.request.is_empty());
        let add = compile(ops(&[], &[(":authority", "b")], &[])).unwrap();
        assert_eq!(add.authority.as_deref(), Some("b"));
    }

    #[test]
    fn refused_names_and_values() {
        let err = compile(ops(&[("x-a", "a\nb")], &[], &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"route 0 of ns/vs: headers.request.set["x-a"]: invalid header value "a\nb""#
        );
        let err = compile(ops(&[(":path", "/x")], &[], &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"route 0 of ns/vs: headers.request.set[":path"]: `:`-prefixed headers cannot be edited"#
        );
        assert!(compile(ops(&[], &[], &["host"])).is_err());
        assert!(compile(ops(&[("bad name", "v")], &[], &[])).is_err());
        let h = pb::Headers {
            request: None,
            response: Some(ops(&[("host", "x")], &[], &[])),
        };
        assert!(HeaderOps::compile(Some(&h), "r", "headers").is_err());
    }

    /// Renders from a request from 10.0.0.7:5555 with `headers`.
    struct FromPeer;

    impl Formatting for FromPeer {
        fn render(&self, format: &Format, headers: &HeaderMap) -> Vec<u8> {
            use crate::access_log::{Entry, Headers, Http};
            let kept = Headers::capture(headers, format.request_headers(), &[]);
            let mut e = Entry::new(std::time::SystemTime::UNIX_EPOCH, Default::default());
            e.http = Some(Http {
                method: "GET",
                path: "/",
                authority: "svc",
                headers: Some(&kept),
                response_headers: None,
                status: 0,
                grpc_status: None,
            });
            e.downstream_remote = Some("10.0.0.7:5555".parse().unwrap());
            let mut out = Vec::new();
            format.render_header(&e, &mut out);
            out
        }
    }

    fn tokens(pieces: &[(&str, &str, &str)]) -> pb::HeaderFormat {
        use weft_proto::telemetry::FormatToken;
        pb::HeaderFormat {
            tokens: pieces
                .iter()
                .map(|(literal, operator, argument)| FormatToken {
                    literal: literal.to_string(),
                    operator: operator.to_string(),
                    argument: argument.to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn values_with_command_operators_are_rendered_before_any_is_added() {
        let mut request = ops(&[("x-user", "changed")], &[], &["x-gone"]);
        request.set_formatted = [
            (
                "x-client".to_string(),
                tokens(&[
                    ("ip=", "", ""),
                    ("", "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", ""),
                ]),
            ),
            // The value as it came, not as set above.
            ("x-user-was".to_string(), tokens(&[("", "REQ", "x-user")])),
            // Removed before the values are rendered.
            (
                "x-gone-was".to_string(),
                tokens(&[("was:", "", ""), ("", "REQ", "x-gone")]),
            ),
            // No upstream yet: renders empty, is not added.
            (
                "x-upstream".to_string(),
                tokens(&[("", "UPSTREAM_HOST", "")]),
            ),
        ]
        .into();
        request.add_formatted = [(
            "x-user".to_string(),
            tokens(&[("[", "", ""), ("", "REQ", "x-user"), ("]", "", "")]),
        )]
        .into();
        let ops = compile(request).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-user", "ann".parse().unwrap());
        h.insert("x-gone", "g".parse().unwrap());
        ops.request.apply(&mut h, &FromPeer);
        assert_eq!(h["x-client"], "ip=10.0.0.7");
        assert_eq!(h["x-user-was"], "ann");
        // An operator without a value adds nothing to its value.
        assert_eq!(h["x-gone-was"], "was:");
        assert!(h.get("x-gone").is_none());
        assert!(h.get("x-upstream").is_none());
        let users: Vec<_> = h.get_all("x-user").iter().collect();
        assert_eq!(users, ["changed", "[ann]"]);
        // Nothing to render from: not added.
        let mut h = HeaderMap::new();
        ops.request.apply(&mut h, &Unformatted);
        assert!(h.get("x-client").is_none());
    }

    #[test]
    fn response_edits() {
        let h = pb::Headers {
            request: None,
            response: Some(ops(&[("x-r", "1")], &[], &["server"])),
        };
        let ops = HeaderOps::compile(Some(&h), "r", "headers").unwrap();
        let mut resp = HeaderMap::new();
        resp.insert("server", "app".parse().unwrap());
        ops.response.apply(&mut resp, &Unformatted);
        assert!(resp.get("server").is_none());
        assert_eq!(resp.get("x-r").unwrap(), "1");
        assert!(HeaderOps::compile(None, "r", "headers").unwrap().is_empty());
    }
}
