//! VirtualService → `weft.route.v1.RouteConfig`: the routes that apply to
//! one host for mesh traffic, field by field, with hosts, subsets,
//! source labels and delegate VirtualServices resolved through a
//! [`Resolve`].

use std::{collections::BTreeMap, sync::Arc};

use base64::Engine as _;
use weft_proto::{
    MESH_INBOUND_ROUTE,
    route::{
        self as pb, ConfigRef, RouteConfig, Visibility, http_body, http_fault_injection,
        string_match::MatchType,
    },
};

use super::delegate;
use crate::kinds::{
    VirtualService,
    istio::{self, Duration, HeaderOperations, Percent},
    virtual_service::{self as vs, DerivePort, HttpRetry},
};

/// What compiling routes needs from the rest of the configuration.
pub trait Resolve {
    /// A destination as written in a VirtualService in `namespace`.
    fn destination(&mut self, d: &istio::Destination, namespace: &str) -> pb::Destination;
    /// The uids of the workloads whose labels include `labels`, in
    /// `namespace` (every namespace when empty), sorted.
    fn source_workloads(
        &mut self,
        labels: &BTreeMap<String, String>,
        namespace: &str,
    ) -> Vec<String>;
    /// The VirtualService `namespace/name` if it is a delegate (has no
    /// `hosts`). Asked whether or not it exists: what is compiled depends
    /// on it either way.
    fn delegate(&mut self, namespace: &str, name: &str) -> Option<Arc<VirtualService>>;
}

/// The namespaces the hosts of one compiled HTTP route resolve in: the
/// VirtualService's, except for what a delegated route inherited from
/// its root.
#[derive(Debug, Clone, Copy)]
struct Namespaces<'a> {
    route: &'a str,
    mirror: &'a str,
    mirrors: &'a str,
}

impl<'a> Namespaces<'a> {
    fn of(namespace: &'a str) -> Self {
        Namespaces {
            route: namespace,
            mirror: namespace,
            mirrors: namespace,
        }
    }
}

/// Whether a VirtualService applies to mesh traffic (`gateways` empty or
/// listing `mesh`) and is visible anywhere (`exportTo` not only `~`).
pub fn applies_to_mesh(vs: &VirtualService) -> bool {
    let gateways = &vs.spec.gateways;
    let mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
    let hidden = !vs.spec.export_to.is_empty() && vs.spec.export_to.iter().all(|e| e == "~");
    mesh && !hidden
}

/// A retry policy as the agent takes it.
pub fn retry(t: &HttpRetry) -> pb::HttpRetry {
    pb::HttpRetry {
        attempts: t.attempts,
        per_try_timeout: t.per_try_timeout.map(duration),
        retry_on: t.retry_on.clone(),
        retry_remote_localities: t.retry_remote_localities,
        backoff: t.backoff.map(duration),
        retry_ignore_previous_hosts: t.retry_ignore_previous_hosts,
    }
}

/// A RouteConfig of MeshConfig's, named `name`
/// ([`weft_proto::MESH_DEFAULT_ROUTE`]:
/// `defaultHttpRetryPolicy`, for the default route of hosts without one;
/// [`MESH_INBOUND_ROUTE`]: `defaultInboundHttpRetryPolicy`, for the
/// requests the destinations' sides send to their apps): one HTTP route
/// with only `retries`.
pub fn mesh_retries(name: &str, retries: &HttpRetry, root_namespace: &str) -> RouteConfig {
    let route = match name {
        MESH_INBOUND_ROUTE => "inbound",
        _ => "default",
    };
    RouteConfig {
        name: name.to_string(),
        namespace: root_namespace.to_string(),
        http: vec![pb::HttpRoute {
            name: route.to_string(),
            retries: Some(retry(retries)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The routes of `virtual_services` (already in precedence order) for the
/// host `hostname` of the service in `namespace`. A route without
/// `retries` gets `default_retries` (MeshConfig's
/// `defaultHttpRetryPolicy`), as istiod gives it.
pub fn compile(
    name: String,
    hostname: &str,
    namespace: &str,
    virtual_services: &[&VirtualService],
    default_retries: Option<&HttpRetry>,
    resolve: &mut impl Resolve,
) -> RouteConfig {
    let mut config = RouteConfig {
        name,
        hostname: hostname.to_string(),
        namespace: namespace.to_string(),
        ..Default::default()
    };
    for v in virtual_services {
        let ns = v.metadata.namespace();
        let source = ConfigRef {
            namespace: ns.to_string(),
            name: v.metadata.name.clone(),
        };
        let export_to = visibility(&v.spec.export_to, ns);
        for route in &v.spec.http {
            let compiled = match &route.delegate {
                None => vec![http_route(route, Namespaces::of(ns), resolve)],
                Some(d) => delegated(route, d, ns, resolve),
            };
            // A delegated route is the root's, as in istiod (its
            // VirtualService is the root merged with its delegates).
            for r in compiled.into_iter().flatten() {
                config.http.push(pb::HttpRoute {
                    virtual_service: Some(source.clone()),
                    export_to: export_to.clone(),
                    retries: r.retries.clone().or_else(|| default_retries.map(retry)),
                    ..r
                });
            }
        }
        for route in &v.spec.tls {
            let Some(matches) = mesh_matches(&route.matches, |m| &m.gateways) else {
                continue;
            };
            config.tls.push(pb::TlsRoute {
                virtual_service: Some(source.clone()),
                export_to: export_to.clone(),
                r#match: matches
                    .into_iter()
                    .map(|m| pb::TlsMatchAttributes {
                        sni_hosts: m.sni_hosts.clone(),
                        destination_subnets: m.destination_subnets.clone(),
                        port: m.port.unwrap_or(0),
                        source_namespace: m.source_namespace.clone(),
                        source_labels: m.source_labels.clone(),
                        source_workloads: sources(&m.source_labels, &m.source_namespace, resolve),
                    })
                    .collect(),
                route: l4_destinations(&route.route, ns, resolve),
            });
        }
        for route in &v.spec.tcp {
            let Some(matches) = mesh_matches(&route.matches, |m| &m.gateways) else {
                continue;
            };
            config.tcp.push(pb::TcpRoute {
                virtual_service: Some(source.clone()),
                export_to: export_to.clone(),
                r#match: matches
                    .into_iter()
                    .map(|m| pb::L4MatchAttributes {
                        destination_subnets: m.destination_subnets.clone(),
                        port: m.port.unwrap_or(0),
                        source_subnet: m.source_subnet.clone(),
                        source_namespace: m.source_namespace.clone(),
                        source_labels: m.source_labels.clone(),
                        source_workloads: sources(&m.source_labels, &m.source_namespace, resolve),
                    })
                    .collect(),
                route: l4_destinations(&route.route, ns, resolve),
            });
        }
        config.virtual_services.push(source);
    }
    config
}

/// The routes a root route with `delegate` stands for: the delegate's,
/// merged with it (see [`delegate`]). None when the delegate does not
/// exist, is not a delegate or is not exported to the root's namespace.
fn delegated(
    root: &vs::HttpRoute,
    d: &vs::Delegate,
    root_ns: &str,
    resolve: &mut impl Resolve,
) -> Vec<Option<pb::HttpRoute>> {
    let delegate_ns = delegate::delegate_namespace(d, root_ns);
    let Some(target) = resolve.delegate(delegate_ns, &d.name) else {
        return Vec::new();
    };
    if !delegate::exported_to(&target, root_ns) {
        return Vec::new();
    }
    delegate::merge_routes(root, &target.spec.http)
        .into_iter()
        .filter_map(Result::ok)
        .map(|m| {
            let from = |root: bool| if root { root_ns } else { delegate_ns };
            let namespaces = Namespaces {
                route: delegate_ns,
                mirror: from(m.mirror_from_root),
                mirrors: from(m.mirrors_from_root),
            };
            http_route(&m.route, namespaces, resolve)
        })
        .collect()
}

/// `exportTo` as client namespaces: `None` for everywhere.
fn visibility(export_to: &[String], namespace: &str) -> Option<Visibility> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return None;
    }
    let mut namespaces: Vec<String> = export_to
        .iter()
        .filter(|e| *e != "~")
        .map(|e| if e == "." { namespace } else { e }.to_string())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    Some(Visibility { namespaces })
}

/// The matches that apply to mesh traffic: a match bound to gateways
/// that do not include `mesh` is dropped. `None` when every match was
/// (the route does not apply); an empty list matches everything.
fn mesh_matches<M>(matches: &[M], gateways: impl Fn(&M) -> &Vec<String>) -> Option<Vec<&M>> {
    let kept: Vec<&M> = matches
        .iter()
        .filter(|m| {
            let g = gateways(m);
            g.is_empty() || g.iter().any(|g| g == "mesh")
        })
        .collect();
    (kept.len() == matches.len() || !kept.is_empty()).then_some(kept)
}

fn sources(
    labels: &BTreeMap<String, String>,
    namespace: &str,
    resolve: &mut impl Resolve,
) -> Vec<String> {
    if labels.is_empty() {
        Vec::new()
    } else {
        resolve.source_workloads(labels, namespace)
    }
}

fn http_route(
    r: &vs::HttpRoute,
    ns: Namespaces<'_>,
    resolve: &mut impl Resolve,
) -> Option<pb::HttpRoute> {
    // Merged away before (a delegate's own delegating routes are left out).
    if r.delegate.is_some() {
        return None;
    }
    let matches = mesh_matches(&r.matches, |m| &m.gateways)?;
    let single = r.route.len() == 1;
    let route = r
        .route
        .iter()
        .filter_map(|d| {
            Some(pb::HttpRouteDestination {
                destination: Some(resolve.destination(d.destination.as_ref()?, ns.route)),
                weight: weight(d.weight, single),
                headers: d.headers.as_ref().map(headers),
            })
        })
        .collect();
    let mut mirrors: Vec<pb::HttpMirrorPolicy> = Vec::new();
    if let Some(m) = &r.mirror {
        let percentage = match (r.mirror_percentage, r.mirror_percent) {
            (Some(p), _) => p.value,
            (None, Some(p)) => f64::from(p),
            (None, None) => 100.0,
        };
        mirrors.push(pb::HttpMirrorPolicy {
            destination: Some(resolve.destination(m, ns.mirror)),
            percentage,
        });
    }
    for m in &r.mirrors {
        if let Some(d) = &m.destination {
            mirrors.push(pb::HttpMirrorPolicy {
                destination: Some(resolve.destination(d, ns.mirrors)),
                percentage: percent(m.percentage),
            });
        }
    }
    Some(pb::HttpRoute {
        name: r.name.clone(),
        r#match: matches
            .into_iter()
            .map(|m| http_match(m, resolve))
            .collect(),
        route,
        redirect: r.redirect.as_ref().map(|d| pb::HttpRedirect {
            uri: d.uri.clone(),
            authority: d.authority.clone(),
            port: d.port.unwrap_or(0),
            derive_port: match d.derive_port {
                None => pb::DerivePort::Unset,
                Some(DerivePort::FromProtocolDefault) => pb::DerivePort::FromProtocolDefault,
                Some(DerivePort::FromRequestPort) => pb::DerivePort::FromRequestPort,
            } as i32,
            scheme: d.scheme.clone(),
            redirect_code: d.redirect_code.unwrap_or(301),
            prefix_rewrite: d.prefix_rewrite.clone(),
        }),
        direct_response: r.direct_response.as_ref().map(|d| pb::HttpDirectResponse {
            status: d.status,
            body: d.body.as_ref().and_then(|b| {
                let specifier = match (&b.string, &b.bytes) {
                    (Some(s), _) => http_body::Specifier::String(s.clone()),
                    (None, Some(b64)) => http_body::Specifier::Bytes(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap_or_default(),
                    ),
                    (None, None) => return None,
                };
                Some(pb::HttpBody {
                    specifier: Some(specifier),
                })
            }),
        }),
        rewrite: r.rewrite.as_ref().map(|w| pb::HttpRewrite {
            uri: w.uri.clone(),
            authority: w.authority.clone(),
            uri_regex_rewrite: w.uri_regex_rewrite.as_ref().map(|re| pb::RegexRewrite {
                r#match: re.pattern.clone(),
                rewrite: re.rewrite.clone(),
            }),
        }),
        timeout: r.timeout.map(duration),
        retries: r.retries.as_ref().map(retry),
        fault: r.fault.as_ref().map(|f| pb::HttpFaultInjection {
            delay: f.delay.as_ref().map(|d| http_fault_injection::Delay {
                fixed_delay: d.fixed_delay.or(d.exponential_delay).map(duration),
                // Unset: no request is delayed (istiod leaves Envoy's
                // percentage at its default, 0).
                percentage: match (d.percentage, d.percent) {
                    (Some(p), _) => p.value,
                    (None, Some(p)) => f64::from(p),
                    (None, None) => 0.0,
                },
            }),
            abort: f.abort.as_ref().map(|a| http_fault_injection::Abort {
                error_type: if let Some(s) = a.http_status {
                    Some(http_fault_injection::abort::ErrorType::HttpStatus(s))
                } else if let Some(s) = &a.grpc_status {
                    Some(http_fault_injection::abort::ErrorType::GrpcStatus(
                        s.clone(),
                    ))
                } else {
                    a.http2_error
                        .clone()
                        .map(http_fault_injection::abort::ErrorType::Http2Error)
                },
                // Unset: no request is aborted, as for the delay.
                percentage: a.percentage.map_or(0.0, |p| p.value),
            }),
        }),
        mirrors,
        cors_policy: r.cors_policy.as_ref().map(|c| pb::CorsPolicy {
            allow_origins: c
                .allow_origins
                .iter()
                .map(string_match)
                .chain(c.allow_origin.iter().map(|o| pb::StringMatch {
                    match_type: Some(MatchType::Exact(o.clone())),
                }))
                .collect(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age: c.max_age.map(duration),
            allow_credentials: c.allow_credentials,
            unmatched_preflights: c.unmatched_preflights.clone().unwrap_or_default(),
        }),
        headers: r.headers.as_ref().map(headers),
        ..Default::default()
    })
}

fn http_match(m: &vs::HttpMatchRequest, resolve: &mut impl Resolve) -> pb::HttpMatchRequest {
    let map = |m: &BTreeMap<String, istio::StringMatch>| {
        m.iter()
            .map(|(k, v)| (k.clone(), string_match(v)))
            .collect()
    };
    pb::HttpMatchRequest {
        name: m.name.clone(),
        uri: m.uri.as_ref().map(string_match),
        scheme: m.scheme.as_ref().map(string_match),
        method: m.method.as_ref().map(string_match),
        authority: m.authority.as_ref().map(string_match),
        headers: map(&m.headers),
        port: m.port.unwrap_or(0),
        query_params: map(&m.query_params),
        ignore_uri_case: m.ignore_uri_case,
        without_headers: map(&m.without_headers),
        source_namespace: m.source_namespace.clone(),
        source_labels: m.source_labels.clone(),
        source_workloads: sources(&m.source_labels, &m.source_namespace, resolve),
    }
}

fn l4_destinations(
    routes: &[vs::RouteDestination],
    ns: &str,
    resolve: &mut impl Resolve,
) -> Vec<pb::RouteDestination> {
    let single = routes.len() == 1;
    routes
        .iter()
        .filter_map(|d| {
            Some(pb::RouteDestination {
                destination: Some(resolve.destination(d.destination.as_ref()?, ns)),
                weight: weight(d.weight, single),
            })
        })
        .collect()
}

/// A lone destination takes all traffic whatever its weight says.
fn weight(weight: Option<i32>, single: bool) -> i32 {
    if single { 100 } else { weight.unwrap_or(0) }
}

/// A mirror's percentage: 100 when not given.
fn percent(p: Option<Percent>) -> f64 {
    p.map_or(100.0, |p| p.value)
}

pub fn string_match(m: &istio::StringMatch) -> pb::StringMatch {
    let match_type = if let Some(v) = &m.exact {
        Some(MatchType::Exact(v.clone()))
    } else if let Some(v) = &m.prefix {
        Some(MatchType::Prefix(v.clone()))
    } else {
        m.regex.clone().map(MatchType::Regex)
    };
    pb::StringMatch { match_type }
}

/// Header values split as Envoy reads them: literal ones, and ones with
/// command operators, parsed (checked with the VirtualService: a value
/// that does not parse never gets here). `%%` alone makes a literal `%`.
fn header_values(
    values: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, pb::HeaderFormat>) {
    let mut literal = BTreeMap::new();
    let mut formatted = BTreeMap::new();
    for (name, value) in values {
        // Istio makes `host`/`:authority` Envoy's `host_rewrite_literal`.
        let authority =
            name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case(":authority");
        if !value.contains('%') || authority {
            literal.insert(name.clone(), value.clone());
            continue;
        }
        let tokens =
            crate::model::access_log::format::parse_header_value(value).unwrap_or_default();
        if tokens.iter().all(|t| t.operator.is_empty()) {
            let text = tokens.into_iter().map(|t| t.literal).collect();
            literal.insert(name.clone(), text);
        } else {
            formatted.insert(name.clone(), pb::HeaderFormat { tokens });
        }
    }
    (literal, formatted)
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.0.as_secs() as i64,
        nanos: d.0.subsec_nanos() as i32,
    }
}

fn headers(h: &istio::Headers) -> pb::Headers {
    let ops = |o: &HeaderOperations| {
        let (set, set_formatted) = header_values(&o.set);
        let (add, add_formatted) = header_values(&o.add);
        pb::HeaderOperations {
            set,
            add,
            remove: o.remove.clone(),
            set_formatted,
            add_formatted,
        }
    };
    pb::Headers {
        request: h.request.as_ref().map(ops),
        response: h.response.as_ref().map(ops),
    }
}
