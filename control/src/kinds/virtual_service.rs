//! networking.istio.io VirtualService: how requests to hosts are routed.
//! Fields follow istio/api `networking/v1alpha3/virtual_service.proto`.

use std::collections::BTreeMap;

use serde::Deserialize;

mod redirect;

use super::{
    Ignored, Invalid, ObjectMeta, Validate,
    authorization_policy::check_cidr,
    invalid,
    istio::{
        Destination, Duration, Headers, Percent, StringMatch, check_dns_label, check_duration,
        check_host, check_percent, check_port,
    },
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: VirtualServiceSpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `mesh` (the default when empty), or `[<ns>/]<gateway>`.
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default)]
    pub name: String,
    /// OR-ed; none matches everything.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default)]
    pub redirect: Option<HttpRedirect>,
    #[serde(default)]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default)]
    pub delegate: Option<Delegate>,
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    #[serde(default)]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default)]
    pub mirror: Option<Destination>,
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer form of `mirrorPercentage`.
    #[serde(default)]
    pub mirror_percent: Option<u32>,
    #[serde(default)]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub authority: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub ignore_uri_case: bool,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub source_namespace: String,
    #[serde(default)]
    pub stat_prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    #[serde(default)]
    pub destination: Option<Destination>,
    #[serde(default)]
    pub weight: Option<i32>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub authority: String,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub derive_port: Option<DerivePort>,
    #[serde(default)]
    pub scheme: String,
    #[serde(default)]
    pub redirect_code: Option<u32>,
    #[serde(default)]
    pub prefix_rewrite: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    #[serde(default)]
    pub status: u32,
    #[serde(default)]
    pub body: Option<HttpBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBody {
    #[serde(default)]
    pub string: Option<String>,
    /// Base64.
    #[serde(default)]
    pub bytes: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegate {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub authority: String,
    #[serde(default)]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub rewrite: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    #[serde(default)]
    pub attempts: i32,
    #[serde(default)]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated Envoy retry policies (`5xx`, `connect-failure`, ...)
    /// and status codes.
    #[serde(default)]
    pub retry_on: String,
    #[serde(default)]
    pub retry_remote_localities: Option<bool>,
    /// Unset: a retry avoids the hosts already tried, unless the
    /// destination balances by consistent hash (Istio's default).
    #[serde(default)]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default)]
    pub backoff: Option<Duration>,
}

impl HttpRetry {
    /// Istio's checks of a VirtualService route's retry policy
    /// (`ValidateHTTPRetry`), at `at`; MeshConfig's
    /// `defaultInboundHttpRetryPolicy` too. Its `defaultHttpRetryPolicy`
    /// is not checked: istiod does not check it.
    pub fn check(&self, at: &str, e: &mut Vec<Invalid>) {
        if self.attempts < 0 {
            e.push(invalid(format!("{at}.attempts"), "must not be negative"));
        }
        if self.attempts == 0
            && (self.per_try_timeout.is_some()
                || !self.retry_on.is_empty()
                || self.retry_remote_localities.is_some())
        {
            e.push(invalid(
                at,
                "`perTryTimeout`, `retryOn` or `retryRemoteLocalities` set with `attempts: 0` \
                 (retries off)",
            ));
        }
        check_duration(self.per_try_timeout, &format!("{at}.perTryTimeout"), e);
        check_duration(self.backoff, &format!("{at}.backoff"), e);
        for policy in self
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let code = policy
                .parse::<u32>()
                .is_ok_and(|c| (100..=599).contains(&c));
            if !code && !RETRY_ON.contains(&policy) {
                e.push(invalid(
                    format!("{at}.retryOn"),
                    format!(
                        "`{policy}` is not a retry policy or HTTP status; known: {}",
                        RETRY_ON.join(", ")
                    ),
                ));
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    #[serde(default)]
    pub fixed_delay: Option<Duration>,
    #[serde(default)]
    pub exponential_delay: Option<Duration>,
    #[serde(default)]
    pub percentage: Option<Percent>,
    /// Deprecated integer form of `percentage`.
    #[serde(default)]
    pub percent: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(default)]
    pub http_status: Option<u32>,
    #[serde(default)]
    pub grpc_status: Option<String>,
    #[serde(default)]
    pub http2_error: Option<String>,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    #[serde(default)]
    pub destination: Option<Destination>,
    #[serde(default)]
    pub percentage: Option<Percent>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub allow_credentials: Option<bool>,
    #[serde(default)]
    pub unmatched_preflights: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_subnet: String,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    #[serde(default)]
    pub destination: Option<Destination>,
    #[serde(default)]
    pub weight: Option<i32>,
}

/// Envoy's retry policies Istio accepts in `retryOn`, besides status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl Validate for VirtualService {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        let spec = &self.spec;
        let delegate = spec.hosts.is_empty() && !spec.http.is_empty();
        if spec.hosts.is_empty() && !delegate {
            e.push(invalid("spec.hosts", "at least one host is required"));
        }
        for (i, h) in spec.hosts.iter().enumerate() {
            check_host(h, true, &format!("spec.hosts[{i}]"), &mut e);
        }
        for (i, g) in spec.gateways.iter().enumerate() {
            check_gateway_ref(g, &format!("spec.gateways[{i}]"), &mut e);
        }
        if spec.http.is_empty() && spec.tls.is_empty() && spec.tcp.is_empty() {
            e.push(invalid(
                "spec",
                "at least one of `http`, `tls` or `tcp` routes is required",
            ));
        }
        for (i, r) in spec.http.iter().enumerate() {
            r.check(&format!("spec.http[{i}]"), &mut e);
        }
        for (i, r) in spec.tls.iter().enumerate() {
            let at = format!("spec.tls[{i}]");
            if r.matches.is_empty() {
                e.push(invalid(
                    format!("{at}.match"),
                    "a TLS route needs a match with `sniHosts`",
                ));
            }
            for (j, m) in r.matches.iter().enumerate() {
                if m.sni_hosts.is_empty() {
                    e.push(invalid(
                        format!("{at}.match[{j}].sniHosts"),
                        "at least one SNI host is required",
                    ));
                }
                for (k, h) in m.sni_hosts.iter().enumerate() {
                    check_host(h, true, &format!("{at}.match[{j}].sniHosts[{k}]"), &mut e);
                }
                if let Some(p) = m.port {
                    check_port(p, &format!("{at}.match[{j}].port"), &mut e);
                }
                check_subnets(&m.destination_subnets, &format!("{at}.match[{j}]"), &mut e);
            }
            check_weights(
                r.route.iter().map(|d| (d.weight, d.destination.as_ref())),
                &format!("{at}.route"),
                &mut e,
            );
        }
        for (i, r) in spec.tcp.iter().enumerate() {
            let at = format!("spec.tcp[{i}]");
            for (j, m) in r.matches.iter().enumerate() {
                if let Some(p) = m.port {
                    check_port(p, &format!("{at}.match[{j}].port"), &mut e);
                }
                check_subnets(&m.destination_subnets, &format!("{at}.match[{j}]"), &mut e);
                if !m.source_subnet.is_empty()
                    && let Err(reason) = check_cidr(&m.source_subnet)
                {
                    e.push(invalid(format!("{at}.match[{j}].sourceSubnet"), reason));
                }
            }
            check_weights(
                r.route.iter().map(|d| (d.weight, d.destination.as_ref())),
                &format!("{at}.route"),
                &mut e,
            );
        }
        e
    }
}

impl HttpRoute {
    fn check(&self, at: &str, e: &mut Vec<Invalid>) {
        let actions = [
            !self.route.is_empty(),
            self.redirect.is_some(),
            self.direct_response.is_some(),
            self.delegate.is_some(),
        ];
        match actions.iter().filter(|a| **a).count() {
            0 => e.push(invalid(
                at,
                "a route needs one of `route`, `redirect`, `directResponse` or `delegate`",
            )),
            1 => {}
            _ => e.push(invalid(
                at,
                "`route`, `redirect`, `directResponse` and `delegate` are mutually exclusive",
            )),
        }
        if !self.name.is_empty() && self.name.contains(' ') {
            e.push(invalid(format!("{at}.name"), "must not contain spaces"));
        }
        for (j, m) in self.matches.iter().enumerate() {
            let at = format!("{at}.match[{j}]");
            for (field, sm) in [
                ("uri", &m.uri),
                ("scheme", &m.scheme),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    sm.check(&format!("{at}.{field}"), e);
                }
            }
            for (field, map) in [
                ("headers", &m.headers),
                ("queryParams", &m.query_params),
                ("withoutHeaders", &m.without_headers),
            ] {
                for (name, sm) in map {
                    let path = format!("{at}.{field}[\"{name}\"]");
                    if field != "queryParams" && name.bytes().any(|b| b.is_ascii_uppercase()) {
                        e.push(invalid(
                            &path,
                            format!("header names must be lowercase (`{}`)", name.to_lowercase()),
                        ));
                    }
                    if *sm != StringMatch::default() {
                        sm.check(&path, e);
                    }
                }
            }
            if let Some(p) = m.port {
                check_port(p, &format!("{at}.port"), e);
            }
        }
        check_weights(
            self.route
                .iter()
                .map(|d| (d.weight, d.destination.as_ref())),
            &format!("{at}.route"),
            e,
        );
        for (j, d) in self.route.iter().enumerate() {
            if let Some(h) = &d.headers {
                h.check(&format!("{at}.route[{j}].headers"), e);
            }
        }
        if let Some(r) = &self.redirect {
            r.check(&self.matches, &format!("{at}.redirect"), e);
        }
        if let Some(d) = &self.direct_response {
            if !(200..=599).contains(&d.status) {
                e.push(invalid(
                    format!("{at}.directResponse.status"),
                    format!("{} is not an HTTP status (200-599)", d.status),
                ));
            }
            if let Some(b) = &d.body
                && b.string.is_some() == b.bytes.is_some()
            {
                e.push(invalid(
                    format!("{at}.directResponse.body"),
                    "set exactly one of `string` and `bytes`",
                ));
            }
            if let Some(b64) = d.body.as_ref().and_then(|b| b.bytes.as_ref()) {
                use base64::Engine as _;
                if let Err(err) = base64::engine::general_purpose::STANDARD.decode(b64) {
                    e.push(invalid(
                        format!("{at}.directResponse.body.bytes"),
                        format!("not base64: {err}"),
                    ));
                }
            }
        }
        if let Some(rw) = &self.rewrite {
            if let Some(re) = &rw.uri_regex_rewrite {
                super::istio::check_regex(
                    &re.pattern,
                    &format!("{at}.rewrite.uriRegexRewrite.match"),
                    e,
                );
                if !rw.uri.is_empty() {
                    e.push(invalid(
                        format!("{at}.rewrite"),
                        "`uri` and `uriRegexRewrite` are mutually exclusive",
                    ));
                }
            }
            if self.redirect.is_some() {
                e.push(invalid(
                    format!("{at}.rewrite"),
                    "`rewrite` cannot be combined with `redirect`",
                ));
            }
        }
        check_duration(self.timeout, &format!("{at}.timeout"), e);
        if let Some(r) = &self.retries {
            r.check(&format!("{at}.retries"), e);
        }
        if let Some(f) = &self.fault {
            if f.delay.is_none() && f.abort.is_none() {
                e.push(invalid(format!("{at}.fault"), "set `delay` and/or `abort`"));
            }
            if let Some(d) = &f.delay {
                if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
                    e.push(invalid(
                        format!("{at}.fault.delay"),
                        "`fixedDelay` is required",
                    ));
                }
                check_duration(d.fixed_delay, &format!("{at}.fault.delay.fixedDelay"), e);
                check_percent(d.percentage, &format!("{at}.fault.delay.percentage"), e);
                if d.percent.is_some_and(|p| p > 100) {
                    e.push(invalid(
                        format!("{at}.fault.delay.percent"),
                        "must be 0-100",
                    ));
                }
            }
            if let Some(a) = &f.abort {
                let set = [
                    a.http_status.is_some(),
                    a.grpc_status.is_some(),
                    a.http2_error.is_some(),
                ];
                if set.iter().filter(|s| **s).count() != 1 {
                    e.push(invalid(
                        format!("{at}.fault.abort"),
                        "set exactly one of `httpStatus`, `grpcStatus` and `http2Error`",
                    ));
                }
                if let Some(s) = a.http_status
                    && !(200..=599).contains(&s)
                {
                    e.push(invalid(
                        format!("{at}.fault.abort.httpStatus"),
                        format!("{s} is not an HTTP status (200-599)"),
                    ));
                }
                check_percent(a.percentage, &format!("{at}.fault.abort.percentage"), e);
            }
        }
        if let Some(m) = &self.mirror {
            m.check(&format!("{at}.mirror"), e);
            if !self.mirrors.is_empty() {
                e.push(invalid(
                    format!("{at}.mirror"),
                    "`mirror` and `mirrors` are mutually exclusive",
                ));
            }
        }
        for (j, m) in self.mirrors.iter().enumerate() {
            match &m.destination {
                Some(d) => d.check(&format!("{at}.mirrors[{j}].destination"), e),
                None => e.push(invalid(
                    format!("{at}.mirrors[{j}].destination"),
                    "must be set",
                )),
            }
            check_percent(m.percentage, &format!("{at}.mirrors[{j}].percentage"), e);
        }
        check_percent(self.mirror_percentage, &format!("{at}.mirrorPercentage"), e);
        if self.mirror_percent.is_some_and(|p| p > 100) {
            e.push(invalid(format!("{at}.mirrorPercent"), "must be 0-100"));
        }
        if let Some(h) = &self.headers {
            h.check(&format!("{at}.headers"), e);
        }
        if let Some(c) = &self.cors_policy {
            for (j, o) in c.allow_origins.iter().enumerate() {
                o.check(&format!("{at}.corsPolicy.allowOrigins[{j}]"), e);
            }
        }
    }
}

/// `destinationSubnets`: each an IP address or CIDR.
fn check_subnets(subnets: &[String], at: &str, e: &mut Vec<Invalid>) {
    for (k, subnet) in subnets.iter().enumerate() {
        if let Err(reason) = check_cidr(subnet) {
            e.push(invalid(format!("{at}.destinationSubnets[{k}]"), reason));
        }
    }
}

/// Every destination set; weights not negative; with more than one
/// destination (or any weight given) they sum to 100.
fn check_weights<'a>(
    routes: impl Iterator<Item = (Option<i32>, Option<&'a Destination>)>,
    at: &str,
    e: &mut Vec<Invalid>,
) {
    let routes: Vec<_> = routes.collect();
    let mut sum: i64 = 0;
    let mut any_weight = false;
    for (j, (weight, destination)) in routes.iter().enumerate() {
        match destination {
            Some(d) => d.check(&format!("{at}[{j}].destination"), e),
            None => e.push(invalid(format!("{at}[{j}].destination"), "must be set")),
        }
        if let Some(w) = weight {
            any_weight = true;
            if *w < 0 {
                e.push(invalid(
                    format!("{at}[{j}].weight"),
                    format!("{w} is negative"),
                ));
            }
            sum += i64::from(*w);
        }
    }
    if routes.len() > 1 || (any_weight && sum != 0) {
        if routes.len() > 1 && !any_weight {
            e.push(invalid(
                at,
                "with more than one destination, give each a `weight`; they must sum to 100",
            ));
        } else if sum != 100 && !(routes.len() == 1 && sum == 0) {
            let weights: Vec<String> = routes
                .iter()
                .map(|(w, _)| w.unwrap_or(0).to_string())
                .collect();
            e.push(invalid(
                at,
                format!(
                    "route weights sum to {sum} ({}), must be 100",
                    weights.join(" + ")
                ),
            ));
        }
    }
}

/// `mesh`, `<gateway>` or `<namespace>/<gateway>`.
pub fn check_gateway_ref(g: &str, at: &str, e: &mut Vec<Invalid>) {
    if g == "mesh" {
        return;
    }
    let (ns, name) = g.split_once('/').unwrap_or(("", g));
    if (!ns.is_empty() && super::check_label_value_name(ns).is_some())
        || super::check_name(name).is_some()
    {
        e.push(invalid(
            at,
            format!("`{g}` is not `mesh`, `<gateway>` or `<namespace>/<gateway>`"),
        ));
    }
}

/// Subset names used (for analysis).
pub fn subset_ok(name: &str) -> bool {
    let mut e = Vec::new();
    check_dns_label(name, "", &mut e);
    e.is_empty()
}
