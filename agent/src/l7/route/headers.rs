//! Header edits (Istio's `Headers`), applied the way Envoy applies the
//! `*_headers_to_add` / `*_headers_to_remove` Istio generates from them.
//!
//! Order: Envoy removes first, then sets, then appends (its header parser
//! makes "remove-before-add the default"), so a header both removed and
//! set ends up set. Values are literal: Envoy would expand `%VAR%` command
//! operators in them, which is not done here. Empty values are skipped,
//! as Envoy does unless told to keep them.

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_proto::route as pb;

use super::RouteError;

/// Edits to one header map (a request's or a response's).
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Replace the header's values with this one (create it if absent).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append a value.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove the header.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the edits: remove, then set, then add (Envoy's order).
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.apply_removals(headers);
        self.apply_additions(headers);
    }

    pub(crate) fn apply_removals(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
    }

    pub(crate) fn apply_additions(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
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
        }
        if let Some(resp) = &headers.response {
            let at = |op: &str| format!("{field}.response.{op}");
            ops.response.set = values(&resp.set, route, &at("set"), None)?;
            ops.response.add = values(&resp.add, route, &at("add"), None)?;
            ops.response.remove = names(&resp.remove, route, &at("remove"))?;
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
        ops.request.apply(&mut h);
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

    #[test]
    fn response_edits() {
        let h = pb::Headers {
            request: None,
            response: Some(ops(&[("x-r", "1")], &[], &["server"])),
        };
        let ops = HeaderOps::compile(Some(&h), "r", "headers").unwrap();
        let mut resp = HeaderMap::new();
        resp.insert("server", "app".parse().unwrap());
        ops.response.apply(&mut resp);
        assert!(resp.get("server").is_none());
        assert_eq!(resp.get("x-r").unwrap(), "1");
        assert!(HeaderOps::compile(None, "r", "headers").unwrap().is_empty());
    }
}
