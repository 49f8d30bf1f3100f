//! VirtualService chaining: a root VirtualService's HTTP route that names
//! a `delegate` stands for the delegate VirtualService's HTTP routes, each
//! merged with the root route, as istiod merges them
//! (`pilot/pkg/model/virtualservice.go`: `mergeVirtualServices`,
//! `MergeHTTPRoutes`, `mergeHTTPRoute`, `mergeHTTPMatchRequests`,
//! `mergeHTTPMatchRequest`, `hasConflict`, `stringMatchConflict`).
//!
//! - A delegate is a VirtualService without `hosts`, named by `name` and
//!   `namespace` (the root's namespace when empty); one that does not
//!   exist, has hosts, or is not exported to the root's namespace
//!   contributes nothing.
//! - Every delegate route becomes one route: its matches combined with
//!   the root route's (each delegate match with each root match it does
//!   not conflict with, see [`merge_matches`]; a delegate route with a
//!   match that fits no root match is left out), and the root route's
//!   `name` (prefixed), `rewrite`, `directResponse`, `timeout`,
//!   `retries`, `fault`, `mirror`, `mirrorPercent`, `mirrorPercentage`,
//!   `corsPolicy`, `mirrors` and `headers` wherever the delegate route
//!   leaves them unset.
//! - One level only: a delegate's route that delegates again (istiod's
//!   validation rejects it) is left out.
//! - Hosts resolve in the namespace of the object that wrote them: a
//!   delegate's destinations in the delegate's, an inherited mirror in the
//!   root's.

use std::collections::BTreeMap;

use crate::kinds::{
    VirtualService,
    istio::StringMatch,
    virtual_service::{Delegate, HttpMatchRequest, HttpRoute},
};

/// The namespace a root route's `delegate` names: its own, else the
/// root's.
pub fn delegate_namespace<'a>(delegate: &'a Delegate, root_namespace: &'a str) -> &'a str {
    if delegate.namespace.is_empty() {
        root_namespace
    } else {
        &delegate.namespace
    }
}

/// Whether `delegate` (a VirtualService without hosts) is exported to
/// `namespace`: `exportTo` empty (Istio's default, everywhere), `*`, the
/// namespace, or `.` in the delegate's own namespace.
pub fn exported_to(delegate: &VirtualService, namespace: &str) -> bool {
    let export_to = &delegate.spec.export_to;
    let own = delegate.metadata.namespace();
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == namespace || (e == "." && own == namespace))
}

/// A delegate route merged with its root route.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub route: HttpRoute,
    /// `mirror` comes from the root route (resolve it in the root's
    /// namespace).
    pub mirror_from_root: bool,
    /// `mirrors` comes from the root route.
    pub mirrors_from_root: bool,
}

/// Why a delegate route is left out of a root route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// It delegates again.
    Nested,
    /// One of its matches conflicts with every match of the root route.
    Conflict,
}

/// The delegate's routes merged into `root` (a route with `delegate`), in
/// the delegate's order; each left out is `Err` with why.
pub fn merge_routes(root: &HttpRoute, delegate: &[HttpRoute]) -> Vec<Result<Merged, Dropped>> {
    delegate.iter().map(|d| merge_route(root, d)).collect()
}

fn merge_route(root: &HttpRoute, delegate: &HttpRoute) -> Result<Merged, Dropped> {
    if delegate.delegate.is_some() {
        return Err(Dropped::Nested);
    }
    let matches = merge_matches(&root.matches, &delegate.matches).ok_or(Dropped::Conflict)?;
    let mut route = delegate.clone();
    route.matches = matches;
    route.name = joined_name(&root.name, &delegate.name);
    inherit(&mut route.rewrite, &root.rewrite);
    inherit(&mut route.direct_response, &root.direct_response);
    inherit(&mut route.timeout, &root.timeout);
    inherit(&mut route.retries, &root.retries);
    inherit(&mut route.fault, &root.fault);
    let mirror_from_root = route.mirror.is_none() && root.mirror.is_some();
    inherit(&mut route.mirror, &root.mirror);
    inherit(&mut route.mirror_percent, &root.mirror_percent);
    inherit(&mut route.mirror_percentage, &root.mirror_percentage);
    inherit(&mut route.cors_policy, &root.cors_policy);
    let mirrors_from_root = route.mirrors.is_empty() && !root.mirrors.is_empty();
    if mirrors_from_root {
        route.mirrors = root.mirrors.clone();
    }
    inherit(&mut route.headers, &root.headers);
    Ok(Merged {
        route,
        mirror_from_root,
        mirrors_from_root,
    })
}

fn inherit<T: Clone>(field: &mut Option<T>, root: &Option<T>) {
    if field.is_none() {
        field.clone_from(root);
    }
}

/// istiod names a merged route or match `<root>-<delegate>`, or whichever
/// of the two is set.
fn joined_name(root: &str, delegate: &str) -> String {
    match (root.is_empty(), delegate.is_empty()) {
        (_, true) => root.to_string(),
        (true, false) => delegate.to_string(),
        (false, false) => format!("{root}-{delegate}"),
    }
}

/// The matches of a delegate route within a root route: the root's when
/// the delegate has none, the delegate's when the root has none, else, for
/// each delegate match in order, its combination with each root match it
/// does not conflict with. `None` (the route is left out) when a delegate
/// match conflicts with every root match.
pub fn merge_matches(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in delegate {
        let before = out.len();
        for r in root {
            if !has_conflict(r, leaf) {
                out.push(merge_match(r, leaf));
            }
        }
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// A delegate match within a root match: what the delegate sets, else the
/// root's; header, query parameter and source label maps combined (the
/// delegate's entry wins on a shared key).
fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = joined_name(&root.name, &leaf.name);
    inherit(&mut out.uri, &root.uri);
    inherit(&mut out.scheme, &root.scheme);
    inherit(&mut out.method, &root.method);
    inherit(&mut out.authority, &root.authority);
    out.headers = combined(&root.headers, &leaf.headers);
    out.without_headers = combined(&root.without_headers, &leaf.without_headers);
    out.query_params = combined(&root.query_params, &leaf.query_params);
    if port(leaf.port).is_none() {
        out.port = root.port;
    }
    out.source_labels = combined(&root.source_labels, &leaf.source_labels);
    if out.source_namespace.is_empty() {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    if out.stat_prefix.is_empty() {
        out.stat_prefix.clone_from(&root.stat_prefix);
    }
    out
}

fn combined<V: Clone>(
    root: &BTreeMap<String, V>,
    leaf: &BTreeMap<String, V>,
) -> BTreeMap<String, V> {
    let mut out = root.clone();
    out.extend(leaf.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// A port, `0` being unset as in the proto.
fn port(p: Option<u32>) -> Option<u32> {
    p.filter(|p| *p != 0)
}

/// Whether a delegate match cannot be within a root match: a string
/// match, header, query parameter (or absent header) that the root also
/// constrains and the delegate's does not narrow, different
/// `ignoreUriCase`, ports, source namespaces or source labels, gateways
/// the root's do not include.
pub fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let fields = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if fields
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    for (roots, leaves) in [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ] {
        if leaves
            .iter()
            .any(|(k, l)| string_match_conflict(roots.get(k), Some(l)))
        {
            return true;
        }
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if let (Some(r), Some(l)) = (port(root.port), port(leaf.port))
        && r != l
    {
        return true;
    }
    // A root source namespace must be the delegate's too (istiod: an
    // unset one in the delegate conflicts).
    if !root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
    {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        if root.gateways.len() < leaf.gateways.len() {
            return true;
        }
        if leaf.gateways.iter().any(|g| !root.gateways.contains(g)) {
            return true;
        }
    }
    false
}

/// Whether a delegate's string match is not within the root's: no
/// conflict when either is unset; a regex on either side conflicts; an
/// exact root admits only the same exact value; a prefix root admits a
/// prefix or exact value that starts with it. Anything else (an empty
/// match on both sides) conflicts. An empty string counts as unset, as
/// in the proto.
fn string_match_conflict<'a>(root: Option<&'a StringMatch>, leaf: Option<&'a StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let get = |s: &'a Option<String>| s.as_deref().unwrap_or("");
    let (r_exact, r_prefix, r_regex) = (get(&root.exact), get(&root.prefix), get(&root.regex));
    let (l_exact, l_prefix, l_regex) = (get(&leaf.exact), get(&leaf.prefix), get(&leaf.regex));
    let any = |exact: &str, prefix: &str, regex: &str| {
        !exact.is_empty() || !prefix.is_empty() || !regex.is_empty()
    };
    // A regex on one side, anything on the other.
    if !r_regex.is_empty() && any(l_exact, l_prefix, l_regex) {
        return true;
    }
    if !l_regex.is_empty() && any(r_exact, r_prefix, r_regex) {
        return true;
    }
    if !r_exact.is_empty() {
        return !l_prefix.is_empty() || l_exact != r_exact;
    }
    if !r_prefix.is_empty() {
        if !l_prefix.is_empty() {
            return !l_prefix.starts_with(r_prefix);
        }
        if !l_exact.is_empty() {
            return !l_exact.starts_with(r_prefix);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(kind: &str, v: &str) -> StringMatch {
        let mut m = StringMatch::default();
        let v = Some(v.to_string());
        match kind {
            "exact" => m.exact = v,
            "prefix" => m.prefix = v,
            _ => m.regex = v,
        }
        m
    }

    #[test]
    fn string_match_conflicts_as_istiod() {
        let c = |r: Option<StringMatch>, l: Option<StringMatch>| {
            string_match_conflict(r.as_ref(), l.as_ref())
        };
        let (p, e, re) = (
            |v| Some(sm("prefix", v)),
            |v| Some(sm("exact", v)),
            |v| Some(sm("regex", v)),
        );
        assert!(!c(None, p("/a")));
        assert!(!c(p("/a"), None));
        assert!(!c(p("/a"), p("/a/b")));
        assert!(!c(p("/a"), p("/a")));
        assert!(c(p("/a/b"), p("/a")), "wider than the root");
        assert!(!c(p("/a"), e("/a/x")));
        assert!(c(p("/a"), e("/b")));
        assert!(!c(e("/a"), e("/a")));
        assert!(c(e("/a"), e("/a/b")));
        assert!(c(e("/a"), p("/a")));
        assert!(c(re(".*"), p("/a")));
        assert!(c(p("/a"), re("/a.*")));
        assert!(c(re(".*"), re(".*")));
        assert!(c(re(".*"), Some(StringMatch::default())));
        assert!(
            c(Some(StringMatch::default()), Some(StringMatch::default())),
            "empty on both sides"
        );
        assert!(c(p(""), e("/a")), "an empty prefix is unset");
    }

    #[test]
    fn match_fields_conflict_as_istiod() {
        let m = |f: &dyn Fn(&mut HttpMatchRequest)| {
            let mut m = HttpMatchRequest::default();
            f(&mut m);
            m
        };
        let any = HttpMatchRequest::default();
        assert!(!has_conflict(&any, &any));
        let case = m(&|m| m.ignore_uri_case = true);
        assert!(has_conflict(&any, &case));
        let p80 = m(&|m| m.port = Some(80));
        let p81 = m(&|m| m.port = Some(81));
        assert!(!has_conflict(&any, &p80));
        assert!(has_conflict(&p80, &p81));
        let from_a = m(&|m| m.source_namespace = "a".into());
        assert!(has_conflict(&from_a, &any), "the root's source namespace");
        assert!(!has_conflict(&any, &from_a));
        let v1 = m(&|m| {
            m.source_labels.insert("v".into(), "1".into());
        });
        let v2 = m(&|m| {
            m.source_labels.insert("v".into(), "2".into());
        });
        assert!(has_conflict(&v1, &v2));
        assert!(!has_conflict(&v1, &any));
        let gw = |g: &[&str]| {
            let g: Vec<String> = g.iter().map(|s| s.to_string()).collect();
            m(&|m| m.gateways = g.clone())
        };
        assert!(!has_conflict(&gw(&["mesh", "g"]), &gw(&["mesh"])));
        assert!(has_conflict(&gw(&["mesh"]), &gw(&["mesh", "g"])));
        assert!(has_conflict(&gw(&["mesh"]), &gw(&["g"])));
        let header = |k: &str, v: StringMatch| {
            m(&|m| {
                m.headers.insert(k.into(), v.clone());
            })
        };
        assert!(!has_conflict(
            &header("x", sm("prefix", "a")),
            &header("x", sm("exact", "ab"))
        ));
        assert!(has_conflict(
            &header("x", sm("exact", "a")),
            &header("x", sm("exact", "b"))
        ));
        assert!(!has_conflict(
            &header("x", sm("exact", "a")),
            &header("y", sm("exact", "b"))
        ));
    }
}
