//! Tests over whole `RouteConfig`s: route selection ([`matching`]) and
//! what ties a route's parts together ([`routes`]). Shared builders here.

use std::collections::BTreeMap;

use http::{HeaderMap, Method};
use weft_proto::route::string_match::MatchType;

use super::*;

mod matching;
mod routes;

fn sm(t: MatchType) -> pb::StringMatch {
    pb::StringMatch {
        match_type: Some(t),
    }
}

fn exact(v: &str) -> pb::StringMatch {
    sm(MatchType::Exact(v.into()))
}

fn prefix(v: &str) -> pb::StringMatch {
    sm(MatchType::Prefix(v.into()))
}

fn regex(v: &str) -> pb::StringMatch {
    sm(MatchType::Regex(v.into()))
}

fn present() -> pb::StringMatch {
    pb::StringMatch { match_type: None }
}

fn dest(host: &str) -> pb::HttpRouteDestination {
    pb::HttpRouteDestination {
        destination: Some(pb::Destination {
            host: host.into(),
            service: format!("default/{host}"),
            ..Default::default()
        }),
        weight: 100,
        headers: None,
    }
}

/// A route named `name` to the host `name`, with these matches.
fn route(name: &str, matches: Vec<pb::HttpMatchRequest>) -> pb::HttpRoute {
    pb::HttpRoute {
        name: name.into(),
        virtual_service: Some(pb::ConfigRef {
            namespace: "default".into(),
            name: "vs".into(),
        }),
        r#match: matches,
        route: vec![dest(name)],
        ..Default::default()
    }
}

fn table(routes: Vec<pb::HttpRoute>) -> RouteTable {
    RouteTable::compile(&pb::RouteConfig {
        name: "default/reviews.default.svc.cluster.local".into(),
        hostname: "reviews.default.svc.cluster.local".into(),
        namespace: "default".into(),
        http: routes,
        ..Default::default()
    })
    .unwrap()
}

fn uri(m: pb::StringMatch) -> pb::HttpMatchRequest {
    pb::HttpMatchRequest {
        uri: Some(m),
        ..Default::default()
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

/// A request; tweak the fields tests care about.
struct Req {
    method: Method,
    path: &'static str,
    authority: &'static str,
    scheme: &'static str,
    headers: HeaderMap,
    port: u16,
    ns: &'static str,
    workload: &'static str,
}

impl Default for Req {
    fn default() -> Self {
        Self {
            method: Method::GET,
            path: "/",
            authority: "reviews:9080",
            scheme: "http",
            headers: HeaderMap::new(),
            port: 9080,
            ns: "default",
            workload: "uid-client",
        }
    }
}

impl Req {
    fn path(path: &'static str) -> Self {
        Self {
            path,
            ..Self::default()
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path_and_query: self.path,
            authority: self.authority,
            scheme: self.scheme,
            uri_scheme: None,
            headers: &self.headers,
            port: self.port,
            source_namespace: self.ns,
            source_workload: self.workload,
        }
    }
}

/// The name of the route `req` selects in `t`; else "-" when a route is
/// for this client and port (Envoy's 404, `NR`), or "(default)" when none
/// is (the service's default route, as `forward` decides).
fn selected(t: &RouteTable, req: &Req) -> String {
    match t.select(&req.view()) {
        Some(s) => s.route.name.clone(),
        None if t.routes_client(&req.view()) => "-".to_string(),
        None => "(default)".to_string(),
    }
}
