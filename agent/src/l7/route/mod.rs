//! A service's VirtualService routes (`weft.route.v1.RouteConfig`),
//! compiled for matching requests.
//!
//! [`RouteTable::compile`] turns one `RouteConfig` into [`HttpRoute`]s with
//! regexes compiled, names and values validated and defaults filled in; a
//! config with anything Envoy would refuse is refused whole, with a
//! [`RouteError`] naming the route and the field. Per request,
//! [`RouteTable::select`] finds the route (the first one visible to the
//! client's namespace whose match applies, as Envoy walks a virtual host's
//! routes) and the route's parts say what to do: [`HttpRoute::pick`] a
//! destination, [`Rewrite`], [`Redirect`], [`DirectResponse`],
//! [`RetryPolicy`], [`Fault`], [`Mirror`], [`CorsPolicy`], [`HeaderOps`].
//!
//! Everything here is a pure function of the configuration and the
//! request: no I/O, no clock, no randomness (callers pass random numbers
//! in), and matching does not allocate (but to join a header's several
//! values).
//!
//! Semantics are Envoy's as Istio configures it (Istio's pilot
//! `route.go`, `retry.go`), which is what a VirtualService author gets
//! from a sidecar.

mod cors;
mod destination;
mod fault;
mod headers;
mod l4;
mod matcher;
mod retry;
mod rewrite;
#[cfg(test)]
mod tests;

pub use cors::{CorsPolicy, Preflight};
pub use destination::{AddressEndpoint, Destination, EndpointSet, Mirror, WeightedDestination};
pub use fault::{Abort, Fault, roll};
pub use headers::{Formatting, HeaderEdits, HeaderOps, Unformatted};
pub use l4::{ConnectionView, L4Route};
pub use matcher::{HttpMatch, REGEX_SIZE_LIMIT, StringMatcher};
pub use retry::{DEFAULT_BACKOFF_BASE, Outcome, RetryOn, RetryPolicy};
pub use rewrite::{DirectResponse, Redirect, RedirectPort, Rewrite};

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_proto::route as pb;

/// Why a `RouteConfig` cannot be used. `route` names the route ("route 2
/// of bookinfo/reviews", with its name if it has one), `field` the field
/// within it (`match[0].uri.regex`).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A regex does not compile, or compiles bigger than
    /// [`REGEX_SIZE_LIMIT`].
    #[error("{route}: {field}: {error}")]
    Regex {
        /// The route, e.g. "route 2 of bookinfo/reviews".
        route: String,
        /// The field, e.g. `match[0].uri.regex`.
        field: String,
        /// What the regex crate says.
        error: regex::Error,
    },
    /// Any other value Envoy or Istio would refuse.
    #[error("{route}: {field}: {reason}")]
    Invalid {
        /// The route, e.g. "route 2 of bookinfo/reviews".
        route: String,
        /// The field, e.g. "redirect.redirect_code".
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What matching reads from a request; borrowed, no allocation.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request's method.
    pub method: &'a http::Method,
    /// The path and query as received, e.g. "/api/v1?x=1".
    pub path_and_query: &'a str,
    /// The Host header or :authority as received (may include the port).
    pub authority: &'a str,
    /// The connection's scheme: "http" in the mesh.
    pub scheme: &'a str,
    /// The scheme of the request's own URI (an HTTP/2 request's
    /// `:scheme`, an absolute URI's), if it has one: see
    /// [`RequestView::request_scheme`].
    pub uri_scheme: Option<&'a str>,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The service port the client connected to.
    pub port: u16,
    /// The client's namespace.
    pub source_namespace: &'a str,
    /// The client's workload uid (`istio.workload.Workload.uid`).
    pub source_workload: &'a str,
}

impl<'a> RequestView<'a> {
    /// The request's `:scheme` as Envoy's connection manager sets it on a
    /// sidecar's outbound listener: what a route's `scheme` match reads,
    /// and a redirect without a `scheme` keeps. The request's own
    /// ([`RequestView::uri_scheme`]), else the `x-forwarded-proto` the
    /// client sent when it is `http` or `https`, else the connection's.
    /// Read only when a route asks (a header lookup).
    pub fn request_scheme(&self) -> &'a str {
        if let Some(scheme) = self.uri_scheme {
            return scheme;
        }
        let mut forwarded = self.headers.get_all("x-forwarded-proto").iter();
        match (
            forwarded.next().map(HeaderValue::as_bytes),
            forwarded.next(),
        ) {
            (Some(b"http"), None) => "http",
            (Some(b"https"), None) => "https",
            _ => self.scheme,
        }
    }

    /// The path without query string and fragment.
    pub fn path(&self) -> &'a str {
        let end = self
            .path_and_query
            .find(['?', '#'])
            .unwrap_or(self.path_and_query.len());
        &self.path_and_query[..end]
    }

    /// The query string (after `?`, before any `#`), if the path has one.
    pub fn query(&self) -> Option<&'a str> {
        let rest = &self.path_and_query[self.path().len()..];
        let query = rest.strip_prefix('?')?;
        Some(query.split_once('#').map_or(query, |(q, _)| q))
    }
}

/// The compiled routes of one `RouteConfig`.
#[derive(Debug, Clone)]
pub struct RouteTable {
    name: String,
    hostname: String,
    routes: Vec<HttpRoute>,
    /// `tcp` routes, for the service's L4 ports.
    tcp: Vec<L4Route>,
    /// `tls` routes, for its L4 ports that carry TLS (matched by SNI).
    tls: Vec<L4Route>,
    /// For the RouteConfig [`weft_proto::MESH_INBOUND_ROUTE`] only: its
    /// retries, as the destinations' sides take them.
    inbound_retry: Option<RetryPolicy>,
}

/// The route a request selected.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    /// The route.
    pub route: &'a HttpRoute,
    /// The index of the match that applied; `None` when the route has no
    /// match list.
    pub matched: Option<usize>,
}

impl<'a> Selected<'a> {
    /// The match that applied, if the route has a match list.
    pub fn http_match(&self) -> Option<&'a HttpMatch> {
        self.route.matches.get(self.matched?)
    }

    /// The path to forward after the route's rewrite; `None`: unchanged.
    pub fn rewritten_path(&self, path_and_query: &str) -> Option<String> {
        self.route
            .rewrite
            .as_ref()?
            .rewrite_path(path_and_query, self.http_match())
    }
}

impl RouteTable {
    /// Compiles `config`, refusing it whole if any route is invalid.
    pub fn compile(config: &pb::RouteConfig) -> Result<RouteTable, RouteError> {
        let name = if config.name.is_empty() {
            format!("{}/{}", config.namespace, config.hostname)
        } else {
            config.name.clone()
        };
        let routes = config
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| HttpRoute::compile(r, i, &name))
            .collect::<Result<_, _>>()?;
        let tcp = config
            .tcp
            .iter()
            .enumerate()
            .map(|(i, r)| L4Route::compile_tcp(r, i, &name))
            .collect::<Result<_, _>>()?;
        let tls = config
            .tls
            .iter()
            .enumerate()
            .map(|(i, r)| L4Route::compile_tls(r, i, &name))
            .collect::<Result<_, _>>()?;
        let inbound_retry = (name == weft_proto::MESH_INBOUND_ROUTE)
            .then(|| {
                let retries = config.http.first().and_then(|r| r.retries.as_ref());
                RetryPolicy::inbound(retries, &name)
            })
            .transpose()?;
        Ok(RouteTable {
            name,
            hostname: config.hostname.clone(),
            routes,
            tcp,
            tls,
            inbound_retry,
        })
    }

    /// `<namespace>/<hostname>`, the resource name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The retries its first HTTP route carries, else Istio's default:
    /// the default route's, when this is the RouteConfig
    /// [`weft_proto::MESH_DEFAULT_ROUTE`].
    pub fn default_retry(&self) -> RetryPolicy {
        self.routes
            .first()
            .map_or_else(RetryPolicy::default, |r| r.retry.clone())
    }

    /// The retries of requests to the apps, when this is the RouteConfig
    /// [`weft_proto::MESH_INBOUND_ROUTE`].
    pub fn inbound_retry(&self) -> Option<&RetryPolicy> {
        self.inbound_retry.as_ref()
    }

    /// The fully qualified host the routes are for.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The first route whose `export_to` admits `req.source_namespace` and
    /// one of whose matches applies (a route without matches applies to
    /// every request). `None`: no route applies: Envoy answers 404 when a
    /// route is for this client and port ([`RouteTable::routes_client`]),
    /// else the service's default route applies.
    pub fn select(&self, req: &RequestView<'_>) -> Option<Selected<'_>> {
        self.routes.iter().find_map(|route| {
            if !route.visible_to(req.source_namespace) {
                return None;
            }
            if route.matches.is_empty() {
                return Some(Selected {
                    route,
                    matched: None,
                });
            }
            let i = route.matches.iter().position(|m| m.matches(req))?;
            Some(Selected {
                route,
                matched: Some(i),
            })
        })
    }

    /// Whether any route is for this client and port: visible to its
    /// namespace, with no match list or a match whose `port`,
    /// `sourceNamespace` and `sourceLabels` hold. When none is, istiod
    /// leaves the VirtualService out of the client's routes and the
    /// service keeps its default route; when one is and
    /// [`RouteTable::select`] finds none for the request, Envoy answers
    /// 404 (`NR`).
    pub fn routes_client(&self, req: &RequestView<'_>) -> bool {
        self.routes.iter().any(|route| {
            route.visible_to(req.source_namespace)
                && (route.matches.is_empty() || route.matches.iter().any(|m| m.applies_to(req)))
        })
    }

    /// The routes, in evaluation order.
    pub fn routes(&self) -> &[HttpRoute] {
        &self.routes
    }

    /// Whether an L4 connection to the service is routed here (by a `tcp`
    /// or `tls` route) rather than to the service itself.
    pub fn routes_l4(&self) -> bool {
        !self.tcp.is_empty() || !self.tls.is_empty()
    }

    /// Whether `tls` routes need the client's SNI.
    pub fn wants_sni(&self) -> bool {
        !self.tls.is_empty()
    }

    /// The route for an L4 connection: the first `tls` route that applies
    /// when the client sent an SNI, else the first `tcp` route that
    /// applies. `None`: the service itself.
    pub fn select_l4(&self, conn: &ConnectionView<'_>) -> Option<&L4Route> {
        let tls = conn
            .sni
            .and_then(|_| self.tls.iter().find(|r| r.applies(conn)));
        tls.or_else(|| self.tcp.iter().find(|r| r.applies(conn)))
    }
}

/// What a route does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to one of these (see [`HttpRoute::pick`]). Empty when the
    /// VirtualService gave no usable destination.
    Route(Vec<WeightedDestination>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    DirectResponse(DirectResponse),
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    /// The route's name, or "".
    pub name: String,
    /// The VirtualService it comes from, "ns/name".
    pub virtual_service: String,
    /// OR-ed; empty: every request.
    pub matches: Vec<HttpMatch>,
    /// Client namespaces that see the route, sorted; `None`: all.
    pub export_to: Option<Vec<String>>,
    /// What to do.
    pub action: Action,
    /// Path and authority rewrites.
    pub rewrite: Option<Rewrite>,
    /// `None`: no timeout.
    pub timeout: Option<Duration>,
    /// Istio's default policy when the VirtualService sets none.
    pub retry: RetryPolicy,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Mirrors (a percentage of 0 is left out, as Istio does).
    pub mirrors: Vec<Mirror>,
    /// CORS.
    pub cors: Option<CorsPolicy>,
    /// Route-level header edits.
    pub headers: HeaderOps,
}

impl HttpRoute {
    fn compile(r: &pb::HttpRoute, index: usize, config: &str) -> Result<Self, RouteError> {
        let virtual_service = r
            .virtual_service
            .as_ref()
            .map(|v| format!("{}/{}", v.namespace, v.name))
            .unwrap_or_default();
        let source = if virtual_service.is_empty() {
            config
        } else {
            &virtual_service
        };
        let route = if r.name.is_empty() {
            format!("route {index} of {source}")
        } else {
            format!("route {index} ({}) of {source}", r.name)
        };
        let route = route.as_str();
        let matches = r
            .r#match
            .iter()
            .enumerate()
            .map(|(i, m)| HttpMatch::compile(m, route, &format!("match[{i}]")))
            .collect::<Result<_, _>>()?;
        let export_to = r
            .export_to
            .as_ref()
            .filter(|v| !v.namespaces.is_empty())
            .map(|v| {
                let mut ns = v.namespaces.clone();
                ns.sort_unstable();
                ns
            });
        // Istio's order of precedence when several are set.
        let action = if let Some(redirect) = &r.redirect {
            Action::Redirect(Redirect::compile(redirect, route)?)
        } else if let Some(direct) = &r.direct_response {
            Action::DirectResponse(DirectResponse::compile(direct, route)?)
        } else {
            Action::Route(
                r.route
                    .iter()
                    .enumerate()
                    .map(|(i, d)| WeightedDestination::compile(d, route, &format!("route[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        };
        let mirrors = r
            .mirrors
            .iter()
            .enumerate()
            .filter(|(_, m)| m.percentage > 0.0)
            .map(|(i, m)| {
                Ok(Mirror {
                    destination: Destination::compile(
                        m.destination.as_ref(),
                        route,
                        &format!("mirrors[{i}].destination"),
                    )?,
                    percentage: m.percentage,
                })
            })
            .collect::<Result<_, RouteError>>()?;
        Ok(Self {
            name: r.name.clone(),
            virtual_service,
            matches,
            export_to,
            action,
            rewrite: Rewrite::compile(r.rewrite.as_ref(), route)?,
            timeout: duration(r.timeout.as_ref(), route, "timeout")?,
            retry: RetryPolicy::compile(r.retries.as_ref(), r.route.len() == 1, route)?,
            fault: Fault::compile(r.fault.as_ref(), route)?,
            mirrors,
            cors: CorsPolicy::compile(r.cors_policy.as_ref(), route)?,
            headers: HeaderOps::compile(r.headers.as_ref(), route, "headers")?,
        })
    }

    /// Whether clients in `namespace` see this route (`export_to`).
    pub fn visible_to(&self, namespace: &str) -> bool {
        self.export_to
            .as_ref()
            .is_none_or(|ns| ns.binary_search_by(|n| n.as_str().cmp(namespace)).is_ok())
    }

    /// Weighted choice of a destination: `roll` is a uniform random u32
    /// from the caller. Weights need not sum to 100; zero-weight
    /// destinations are never chosen (but a lone destination always is).
    /// `None` for redirects, direct responses, and routes without a usable
    /// destination.
    pub fn pick(&self, roll: u32) -> Option<&WeightedDestination> {
        match &self.action {
            Action::Route(dests) => destination::pick(dests, roll),
            Action::Redirect(_) | Action::DirectResponse(_) => None,
        }
    }

    /// The authority to send upstream instead of the request's, if any:
    /// the rewrite's, else the route's `host` header edit, else the
    /// destination's (Envoy lets the route's host rewrite win).
    pub fn authority<'s>(&'s self, dest: Option<&'s WeightedDestination>) -> Option<&'s str> {
        self.rewrite
            .as_ref()
            .and_then(Rewrite::rewrite_authority)
            .or(self.headers.authority.as_deref())
            .or(dest.and_then(|d| d.headers.authority.as_deref()))
    }

    /// The request headers the route's and `dest`'s edits set, add or
    /// remove.
    pub fn request_headers_edited<'s>(
        &'s self,
        dest: Option<&'s WeightedDestination>,
    ) -> impl Iterator<Item = &'s HeaderName> {
        fn names(edits: &HeaderEdits) -> impl Iterator<Item = &HeaderName> {
            let formatted = edits.set_formatted.iter().chain(&edits.add_formatted);
            edits
                .set
                .iter()
                .chain(&edits.add)
                .map(|(name, _)| name)
                .chain(formatted.map(|(name, _)| name))
                .chain(&edits.remove)
        }
        names(&self.headers.request).chain(dest.into_iter().flat_map(|d| names(&d.headers.request)))
    }

    /// Applies the route's and `dest`'s request header edits in Envoy's
    /// order for what Istio generates: for a lone destination, one list
    /// (all removals, then every value with command operators rendered,
    /// then the replacements, then the appends);
    /// for weighted destinations, the destination's edits and then the
    /// route's, so that the route's win.
    pub fn edit_request(
        &self,
        dest: Option<&WeightedDestination>,
        headers: &mut HeaderMap,
        formatting: &dyn Formatting,
    ) {
        self.edit(
            dest.map(|d| &d.headers.request),
            &self.headers.request,
            headers,
            formatting,
        );
    }

    /// Applies the route's and `dest`'s response header edits (same order
    /// as [`Self::edit_request`]). `dest` is `None` for redirects and direct
    /// responses, which get the route's edits.
    pub fn edit_response(
        &self,
        dest: Option<&WeightedDestination>,
        headers: &mut HeaderMap,
        formatting: &dyn Formatting,
    ) {
        self.edit(
            dest.map(|d| &d.headers.response),
            &self.headers.response,
            headers,
            formatting,
        );
    }

    fn edit(
        &self,
        dest: Option<&HeaderEdits>,
        route: &HeaderEdits,
        headers: &mut HeaderMap,
        formatting: &dyn Formatting,
    ) {
        let Some(dest) = dest else {
            route.apply(headers, formatting);
            return;
        };
        let lone = matches!(&self.action, Action::Route(d) if d.len() == 1);
        if lone {
            // One list in Envoy: every removal, every value rendered,
            // every replacement, every append.
            route.apply_removals(headers);
            dest.apply_removals(headers);
            let (on_route, on_dest) = (
                route.render(headers, formatting),
                dest.render(headers, formatting),
            );
            route.apply_sets(headers, &on_route);
            dest.apply_sets(headers, &on_dest);
            route.apply_adds(headers, &on_route);
            dest.apply_adds(headers, &on_dest);
        } else {
            dest.apply(headers, formatting);
            route.apply(headers, formatting);
        }
    }
}

/// A proto duration; `None` when unset or zero (Envoy's "disabled").
pub(crate) fn duration(
    d: Option<&prost_types::Duration>,
    route: &str,
    field: &str,
) -> Result<Option<Duration>, RouteError> {
    let Some(d) = d else { return Ok(None) };
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => {
            let d = Duration::new(secs, nanos);
            Ok((!d.is_zero()).then_some(d))
        }
        _ => Err(RouteError::Invalid {
            route: route.to_string(),
            field: field.to_string(),
            reason: format!("invalid duration {}s {}ns", d.seconds, d.nanos),
        }),
    }
}

// === impl dump (the admin API's config dump) ===

/// `5s`, `250ms`: how a duration reads in the dump.
pub(crate) fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

impl RouteTable {
    /// The routes as compiled: what requests to the host are matched
    /// against, in order.
    pub fn dump(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "hostname": self.hostname,
            "http": self.routes.iter().map(HttpRoute::dump).collect::<Vec<_>>(),
            "tcp": self.tcp.iter().map(L4Route::dump).collect::<Vec<_>>(),
            "tls": self.tls.iter().map(L4Route::dump).collect::<Vec<_>>(),
        })
    }
}

impl HttpRoute {
    /// The route's matches, action and policies (timeout, retries, fault,
    /// mirrors, rewrite); parts it does not set are left out.
    pub fn dump(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "name": self.name,
            "virtual_service": self.virtual_service,
            "match": self.matches.iter().map(HttpMatch::dump).collect::<Vec<_>>(),
            "export_to": self.export_to,
            "timeout": self.timeout.map(duration_text),
            "retries": {
                "attempts": self.retry.attempts,
                "per_try_timeout": self.retry.per_try_timeout.map(duration_text),
                "retry_on": self.retry.retry_on.to_string(),
                "retriable_status_codes": self.retry.retriable_status_codes,
                "previous_hosts": format!("{:?}", self.retry.previous_hosts),
            },
        });
        match &self.action {
            Action::Route(dests) => {
                out["route"] = dests
                    .iter()
                    .map(WeightedDestination::dump)
                    .collect::<Vec<_>>()
                    .into();
            }
            Action::Redirect(r) => {
                out["redirect"] = serde_json::json!({
                    "uri": r.uri,
                    "authority": r.authority,
                    "scheme": r.scheme,
                    "port": format!("{:?}", r.port),
                    "code": r.code.as_u16(),
                });
            }
            Action::DirectResponse(d) => {
                out["direct_response"] = serde_json::json!({ "status": d.status.as_u16() });
            }
        }
        if let Some(rewrite) = &self.rewrite {
            out["rewrite"] = serde_json::json!({
                "uri": rewrite.uri,
                "authority": rewrite.authority,
                "uri_regex": rewrite.uri_regex.as_ref().map(|(re, with)| {
                    serde_json::json!({ "match": re.as_str(), "rewrite": with })
                }),
            });
        }
        if let Some(fault) = &self.fault {
            out["fault"] = serde_json::json!({
                "delay": fault.delay.map(|(d, pct)| serde_json::json!({
                    "fixed_delay": duration_text(d), "percentage": pct,
                })),
                "abort": fault.abort.as_ref().map(|(a, pct)| serde_json::json!({
                    "abort": format!("{a:?}"), "percentage": pct,
                })),
            });
        }
        if !self.mirrors.is_empty() {
            out["mirrors"] = self
                .mirrors
                .iter()
                .map(|m| {
                    let mut d = m.destination.dump();
                    d["percentage"] = m.percentage.into();
                    d
                })
                .collect::<Vec<_>>()
                .into();
        }
        if self.cors.is_some() {
            out["cors_policy"] = true.into();
        }
        out
    }
}
