//! The destination side of L7: a connection to a port a Service declares
//! HTTP (an HBONE CONNECT stream, or plaintext steered to 15006) is served
//! here as HTTP/1.1 or HTTP/2 instead of being spliced to the app, so that
//! each request is checked on its own:
//!
//! 1. its path is normalised as Istio's default does
//!    ([`crate::policy::http::normalized`]); a path that cannot be
//!    normalised safely (an encoded slash) gets `400`;
//! 2. its JWT, if it carries one, is validated with the workload's
//!    RequestAuthentications ([`crate::authn`]): an invalid token gets
//!    Envoy's `401` (`403` for a disallowed audience); a request without
//!    one goes on, and only a policy that asks for a request principal
//!    can refuse it;
//! 3. a CUSTOM policy that matches sends it to its external provider
//!    ([`super::ext_authz`]), which may refuse it or edit it; when the
//!    provider asks for the body (`includeRequestBodyInCheck`), it is
//!    buffered first, up to `maxRequestBytes` (a longer one is `413`,
//!    or cut for the check with `allowPartialMessage`), and the app still
//!    gets all of it;
//! 4. the workload's authorization policies decide with every HTTP
//!    attribute ([`crate::policy::evaluate_request`]); a denied request
//!    gets Envoy's `403 RBAC: access denied` and the connection stays open
//!    for the next one;
//! 5. an allowed request goes to the app, with its normalised path, over
//!    a connection of the same protocol opened from the client's own
//!    address (one per downstream connection, opened on the first allowed
//!    request); an `Upgrade` (WebSocket) or CONNECT gets an app connection
//!    of its own, and the bytes are relayed once both sides switch.
//!
//! Every decision is logged with the policy that made it and counted
//! ([`crate::metrics::RequestVerdict`]).

use std::{
    borrow::Cow,
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use http_body::Body as _;

use http::{Request, Response, StatusCode, Uri, header, uri::PathAndQuery};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    body::{self, Body},
    envoy_headers,
    ext_authz::{
        CheckBody,
        buffer::{BufferError, buffer},
    },
    reply::{self, LocalReply},
};
use crate::{
    access_log::Side,
    metrics::{
        RequestVerdict,
        traffic::{
            RequestOutcome, RequestProtocol, SecurityPolicy, TrafficLabels,
            overrides::{self, View},
        },
    },
    policy::{self, Decision, http::normalized},
    proxy::{PodContext, ProxyContext},
    state::Identity,
};

mod app;

use self::app::AppConn;
pub use self::app::Upstream;

/// One downstream connection to an HTTP port of a local pod.
pub struct Inbound {
    pub pod: Arc<PodContext>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The pod's address and port the client asked for.
    pub target: SocketAddr,
    /// The client's verified identity; `None` for plaintext.
    pub client: Option<Arc<Identity>>,
    /// The SNI the client's TLS connection carried (HBONE).
    pub sni: Option<String>,
    /// The connection is HBONE's mutual TLS (not a plaintext client, nor
    /// a same-node client handed over in the process).
    pub tls: bool,
    /// Istio's name of the cluster, `inbound|<port>||`: made for the
    /// first request logged or traced, kept for the next.
    pub cluster: std::sync::OnceLock<String>,
    /// The bound on connecting to the app: a same-node client's
    /// DestinationRule `connectTimeout` (this connect is that client's
    /// upstream connect); `None`: the agent's own.
    pub connect_timeout: Option<std::time::Duration>,
    /// The port is declared gRPC: istiod gives its requests no retries to
    /// the app (a stream cannot be sent again).
    pub grpc_port: bool,
}

impl Inbound {
    /// `inbound|<port>||`, as the access log and the span name it.
    pub fn cluster(&self) -> &str {
        self.cluster
            .get_or_init(|| format!("inbound|{}||", self.target.port()))
    }
}

/// An [`Inbound`] connection and its connection to the app.
struct Served {
    inbound: Arc<Inbound>,
    app: tokio::sync::Mutex<Option<AppConn>>,
    /// Istio's labels of this connection's requests, built at the first.
    labels: std::sync::OnceLock<TrafficLabels>,
    /// The metric series its requests recorded, for the next ones.
    series: Arc<crate::metrics::traffic::SeriesCache>,
}

impl Served {
    /// The labels of a request on this connection with its protocol,
    /// response flags and the workload's metric overrides now (`view`:
    /// a connection outlives policy changes).
    fn labels(
        &self,
        ctx: &ProxyContext,
        grpc: bool,
        flags: reply::Flags,
        view: Option<Arc<View>>,
    ) -> TrafficLabels {
        let mut labels = self.connection_labels(ctx).clone().under(view);
        if grpc {
            labels.request_protocol = RequestProtocol::grpc;
        }
        if flags.is_empty() {
            labels
        } else {
            labels.with_flags(&flags.to_string())
        }
    }

    fn connection_labels(&self, ctx: &ProxyContext) -> &TrafficLabels {
        self.labels.get_or_init(|| {
            let inbound = &self.inbound;
            let security = match inbound.client {
                Some(_) => SecurityPolicy::mutual_tls,
                None => SecurityPolicy::none,
            };
            inbound.pod.inbound_labels(
                ctx,
                inbound.peer.ip(),
                inbound.client.as_deref(),
                inbound.target.port(),
                RequestProtocol::http,
                security,
            )
        })
    }
}

/// Serves one connection until it closes.
pub async fn serve<IO>(io: IO, inbound: Inbound, ctx: Arc<ProxyContext>)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let served = Arc::new(Served {
        inbound: Arc::new(inbound),
        app: tokio::sync::Mutex::new(None),
        labels: std::sync::OnceLock::new(),
        series: Arc::default(),
    });
    let activity = super::idle::Activity::new();
    let handler = {
        let (served, ctx, activity) = (served.clone(), ctx.clone(), activity.clone());
        service_fn(move |request| {
            let (served, ctx) = (served.clone(), ctx.clone());
            let in_flight = activity.begin();
            async move {
                let version = request.version();
                let response = handle(request, &served, &ctx).await;
                let response = super::drain::close_if_draining(version, &ctx.drain, response);
                Ok::<_, Infallible>(super::idle::Activity::hold(in_flight, response))
            }
        })
    };
    let builder = super::outbound::http_server();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), handler);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = super::idle::closing(&activity, &ctx) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        let inbound = &served.inbound;
        tracing::debug!(dst = %inbound.pod.name(), src.addr = %inbound.peer, error = %err, "inbound HTTP connection ended with an error");
    }
}

/// Handles one request and records Istio's request metrics for it
/// (`reporter="destination"`) when its response has been sent.
async fn handle(
    mut request: Request<Incoming>,
    served: &Served,
    ctx: &ProxyContext,
) -> Response<Body> {
    let started = Instant::now();
    // Not an internal request to Envoy's inbound listener either.
    envoy_headers::strip_internal(request.headers_mut());
    let grpc = reply::is_grpc(request.headers());
    let traffic = ctx.metrics.traffic.enabled();
    // The workload's metric overrides, and what they read of the request
    // when they add labels with values.
    let view = traffic
        .then(|| {
            let workload = &served.inbound.pod.workload;
            overrides::global().resolve(&workload.namespace, &workload.uid, Side::Server)
        })
        .flatten();
    let mut tags = super::log::RequestTags::capture(
        &request,
        view.as_deref(),
        Some(served.inbound.target),
        Some(served.inbound.peer),
    );
    // The server side's access-log line and span (`l7/log.rs`).
    let request_head = traffic
        .then(|| super::wire::request_head(request.method(), request.uri(), request.headers()));
    let mut record = super::log::ServerRecord::start(&mut request, started, &served.inbound, ctx);
    // Its body's bytes, messages and end, as `Served::send` sees them go
    // to the app (`None`: it has none). Observed whatever records the
    // request: its end also times `x-envoy-upstream-service-time`.
    let request_body = (!request.body().is_end_stream()).then(|| {
        let seen = body::RequestBody::new(started, request.headers(), traffic && grpc);
        request.extensions_mut().insert(SeenBody(seen.clone()));
        seen
    });
    if let Some(record) = record.as_mut() {
        record.request_body.clone_from(&request_body);
    }
    let mut upstream = Upstream::default();
    let response = decide_and_forward(request, served, ctx, &mut upstream).await;
    if let Some(record) = record.as_mut() {
        record.responded(&response, &upstream);
    }
    if let (Some(tags), Some(view)) = (tags.as_mut(), view.as_deref()) {
        tags.responded(response.headers(), view);
    }
    let metrics = traffic.then(|| {
        let mut flags = response
            .extensions()
            .get::<reply::Replied>()
            .map(|replied| replied.flags)
            .unwrap_or_default();
        if upstream.retry_limit_exceeded {
            flags.set(reply::Flag::RetryLimitExceeded);
        }
        RequestMetrics {
            started,
            labels: served.labels(ctx, grpc, flags, view),
            flags,
            tags,
            status: response.status().as_u16(),
            grpc: grpc.then_some(0),
            grpc_status: reply::grpc_status(response.headers()),
            request_body,
            heads: (
                request_head.unwrap_or(0),
                super::wire::response_head(response.status(), response.headers()),
            ),
            metrics: ctx.metrics.clone(),
            series: served.series.clone(),
        }
    });
    if record.is_none() && metrics.is_none() {
        return response;
    }
    // One wrapper on the body for both: when it ends, the metrics are
    // recorded and the line written.
    super::log::on_end(response, ServerEnd { record, metrics })
}

/// Istio's request metrics of one request, recorded when its response
/// has been sent.
struct RequestMetrics {
    started: Instant,
    labels: TrafficLabels,
    /// The response's flags (in `labels` too), for UPSERT values.
    flags: reply::Flags,
    /// What UPSERT values read of the request (`None`: no such values).
    tags: Option<super::log::RequestTags>,
    status: u16,
    /// The response's gRPC messages, counted when the request is gRPC.
    grpc: Option<u64>,
    /// From the response's headers, or its trailers.
    grpc_status: Option<u32>,
    /// `None`: the request had no body.
    request_body: Option<Arc<body::RequestBody>>,
    /// The request's and the response's heads, counted with the bodies
    /// (`l7/wire.rs`).
    heads: (u64, u64),
    metrics: Arc<crate::metrics::Metrics>,
    series: Arc<crate::metrics::traffic::SeriesCache>,
}

/// What the server side does when a response has been sent.
struct ServerEnd {
    record: Option<Box<super::log::ServerRecord>>,
    metrics: Option<RequestMetrics>,
}

impl super::log::Ending for ServerEnd {
    fn grpc_status(&mut self, status: u32) {
        if let Some(record) = self.record.as_mut() {
            record.grpc_status(status);
        }
        if let Some(metrics) = self.metrics.as_mut() {
            metrics.grpc_status = Some(status);
        }
    }

    fn flag(&mut self, flag: reply::Flag) {
        // The metrics' labels were set with the response (as Envoy's).
        if let Some(record) = self.record.as_mut() {
            record.flag(flag);
        }
    }

    fn counts_messages(&self) -> bool {
        self.metrics.as_ref().is_some_and(|m| m.grpc.is_some())
    }

    fn messages(&mut self, count: u64) {
        if let Some(metrics) = self.metrics.as_mut() {
            metrics.grpc = Some(count);
        }
    }

    fn end(self, bytes_sent: u64) {
        if let Some(m) = self.metrics {
            let seen = m.request_body.as_deref();
            let request_bytes = seen.map_or(0, body::RequestBody::bytes);
            let outcome = RequestOutcome {
                duration: m.started.elapsed(),
                request_bytes: m.heads.0 + request_bytes,
                response_bytes: m.heads.1 + bytes_sent,
                request_messages: seen.map_or(0, body::RequestBody::messages),
                response_messages: m.grpc.unwrap_or(0),
            };
            let labels = match &m.tags {
                Some(tags) => tags.label(
                    m.labels,
                    &super::log::Answer {
                        status: m.status,
                        grpc_status: m.grpc_status,
                        flags: m.flags,
                        request_bytes,
                        response_bytes: bytes_sent,
                        duration: outcome.duration,
                    },
                ),
                None => m.labels,
            };
            m.series
                .get(&m.metrics.traffic, &labels, m.status, m.grpc_status)
                .record(&outcome);
        }
        if let Some(record) = self.record {
            record.end(bytes_sent);
        }
    }
}

async fn decide_and_forward(
    request: Request<Incoming>,
    served: &Served,
    ctx: &ProxyContext,
    upstream: &mut Upstream,
) -> Response<Body> {
    let started = Instant::now();
    let inbound = &served.inbound;
    let grpc = reply::is_grpc(request.headers());
    let (mut parts, body) = request.into_parts();
    let method = parts.method.clone();
    // The URI as it came (a share of its buffer, not a copy): the policies
    // may see its path normalised, and the request's own URI may change.
    let raw_uri = parts.uri.clone();
    let raw_path = raw_uri.path();
    // Every decision, with its policy: refusals at info, what is allowed
    // at debug (the access log has each request already).
    let log = |status: StatusCode, verdict: RequestVerdict, policy: Option<&str>, reason: &str| {
        ctx.metrics.request(verdict);
        macro_rules! decision {
            ($level:ident) => {
                tracing::$level!(
                    src.identity = %inbound.client.as_ref().map(ToString::to_string).unwrap_or_else(|| "(plaintext)".into()),
                    src.addr = %inbound.peer, dst.identity = %inbound.pod.identity(), dst = %inbound.target,
                    method = %method, path = %raw_path, status = status.as_u16(), verdict = %verdict.name(),
                    policy = %policy.unwrap_or("-"), reason, duration_ms = started.elapsed().as_millis() as u64,
                    "inbound request"
                )
            };
        }
        if matches!(verdict, RequestVerdict::Allowed) {
            decision!(debug);
        } else {
            decision!(info);
        }
    };

    let path = match normalized(raw_path) {
        Ok(path) => path,
        Err(err) => {
            log(
                StatusCode::BAD_REQUEST,
                RequestVerdict::BadPath,
                None,
                &err.to_string(),
            );
            return LocalReply::path_normalization_failed().into_response(grpc);
        }
    };
    if let Cow::Owned(path) = &path {
        // The app sees the path the policies saw.
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        match with_path(&parts.uri, &format!("{path}{query}")) {
            Ok(uri) => parts.uri = uri,
            // Never let the app see another path than the policies did.
            Err(err) => {
                let reason = format!("the normalised path is not a valid URI: {err}");
                log(
                    StatusCode::BAD_REQUEST,
                    RequestVerdict::BadPath,
                    None,
                    &reason,
                );
                return LocalReply::path_normalization_failed().into_response(grpc);
            }
        }
    }

    // RequestAuthentication: an invalid token is refused; no token passes.
    let policies = inbound.pod.policies(ctx);
    let rules = ctx.authn.rules(&policies);
    let auth = if rules.is_empty() {
        None
    } else {
        match ctx
            .authn
            .authenticator
            .authenticate(&rules, &mut parts, SystemTime::now())
        {
            Ok(auth) => auth,
            Err(err) => {
                log(
                    err.status(),
                    RequestVerdict::Unauthenticated,
                    None,
                    &err.to_string(),
                );
                let realm = crate::authn::realm("http", &parts);
                let mut response = Response::new(body::full(err.to_string()));
                *response.status_mut() = err.status();
                let headers = response.headers_mut();
                headers.insert(header::WWW_AUTHENTICATE, err.www_authenticate(&realm));
                headers.insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain"),
                );
                let details = reply::details::jwt_denied(&err.to_string());
                return reply::Replied::mark(response, reply::Flags::default(), Some(details));
            }
        }
    };

    let conn = policy::Connection {
        src_identity: inbound.client.clone(),
        src_ip: inbound.peer.ip(),
        dst_ip: inbound.target.ip(),
        dst_port: inbound.target.port(),
    };
    // CUSTOM: the provider decides first.
    let custom = {
        let attributes = policy::Request {
            method: parts.method.as_str(),
            host: crate::authn::authority(&parts),
            path: &path,
            headers: &parts.headers,
            auth: auth.as_deref(),
            sni: inbound.sni.as_deref(),
        };
        policies
            .iter()
            .find(|p| p.action == policy::Action::Custom && p.matches_request(&conn, &attributes))
            .cloned()
    };
    let upgrade = is_upgrade(&parts);
    let mut body = AppBody::Raw(body);
    let mut buffered_whole = false;
    let mut response_headers = Vec::new();
    if let Some(custom) = custom {
        let provider = custom
            .ext_authz
            .as_ref()
            .expect("a CUSTOM policy has a provider");
        // The body, when the provider wants it and there is one (Envoy
        // does not buffer upgrades or a request that ended with its head).
        let mut check_body = None;
        if let Some(settings) = &provider.request_body
            && !upgrade
            && matches!(&body, AppBody::Raw(raw) if !raw.is_end_stream())
        {
            let AppBody::Raw(raw) = body else {
                unreachable!("matched above")
            };
            match buffer(
                raw,
                settings.max_request_bytes as usize,
                settings.allow_partial_message,
            )
            .await
            {
                Ok((checked, app, ended)) => {
                    // Read whole before the check: the request is
                    // complete when it goes to the app, as Envoy's router
                    // sees it (`x-envoy-upstream-service-time`).
                    buffered_whole = ended;
                    check_body = Some(checked);
                    body = AppBody::Buffered(app);
                }
                Err(BufferError::TooLarge) => {
                    let reason = format!(
                        "the request body is larger than extension provider {}'s maxRequestBytes ({})",
                        provider.provider, settings.max_request_bytes
                    );
                    log(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        RequestVerdict::Denied,
                        Some(&custom.key()),
                        &reason,
                    );
                    return LocalReply::payload_too_large().into_response(grpc);
                }
                Err(BufferError::Read(err)) => {
                    let reason =
                        format!("reading the request body for the extension provider: {err}");
                    log(
                        StatusCode::BAD_REQUEST,
                        RequestVerdict::Denied,
                        Some(&custom.key()),
                        &reason,
                    );
                    return LocalReply::request_body_unread().into_response(grpc);
                }
            }
        }
        match external(&custom, &mut parts, check_body.as_ref(), inbound, ctx).await {
            Ok(added) => response_headers = added,
            Err((status, reason, response)) => {
                log(status, RequestVerdict::Denied, Some(&custom.key()), &reason);
                return response;
            }
        }
    }

    let host = crate::authn::authority(&parts);
    let attributes = policy::Request {
        method: parts.method.as_str(),
        host,
        path: &path,
        headers: &parts.headers,
        auth: auth.as_deref(),
        sni: inbound.sni.as_deref(),
    };
    let allowed_by = match policy::evaluate_request(&policies, &conn, &attributes) {
        Decision::Allow { by } => by,
        Decision::Deny(reason) => {
            let policy = match &reason {
                policy::DenyReason::DeniedBy { policy, .. } => Some(policy.as_str()),
                policy::DenyReason::NoAllowMatch => None,
            };
            log(
                StatusCode::FORBIDDEN,
                RequestVerdict::Denied,
                policy,
                &reason.to_string(),
            );
            return LocalReply::rbac_denied(reason.matched_policy()).into_response(grpc);
        }
    };

    let sent_at = Instant::now();
    // Where its body's end will be seen, unless it was read whole already.
    let seen = parts
        .extensions
        .get::<SeenBody>()
        .filter(|_| !buffered_whole)
        .map(|seen| seen.0.clone());
    let sent = match body {
        AppBody::Raw(body) if upgrade => {
            upstream.attempts = 1;
            let upgraded = served.upgrade(ctx, Request::from_parts(parts, body)).await;
            upgraded.map(|(response, local)| {
                upstream.local = local;
                response
            })
        }
        AppBody::Raw(body) => {
            let request = Request::from_parts(parts, body::boxed(body));
            served.send(ctx, request, upstream).await
        }
        AppBody::Buffered(body) => {
            served
                .send(ctx, Request::from_parts(parts, body), upstream)
                .await
        }
    };
    let by = allowed_by.as_deref();
    match sent {
        Ok(mut response) => {
            log(response.status(), RequestVerdict::Allowed, by, "allowed");
            if !upgrade {
                envoy_headers::set_service_time(response.headers_mut(), sent_at, seen.as_deref());
            }
            for (name, value) in response_headers {
                response.headers_mut().append(name, value);
            }
            response.map(body::boxed)
        }
        Err(local) => {
            log(local.status, RequestVerdict::Allowed, by, local.body);
            local.into_response(grpc)
        }
    }
}

/// A denial: its status, the reason logged, the answer.
type Refusal = (StatusCode, String, Response<Body>);

/// Asks a CUSTOM policy's provider ([`super::ext_authz`]); `Ok`: go on
/// (the request edited), with headers for the answer.
async fn external(
    custom: &policy::Policy,
    parts: &mut http::request::Parts,
    body: Option<&CheckBody>,
    inbound: &Inbound,
    ctx: &ProxyContext,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, Refusal> {
    use super::ext_authz::{Peers, Verdict};
    let provider = custom
        .ext_authz
        .as_ref()
        .expect("a CUSTOM policy has a provider");
    let peers = Peers {
        source: inbound.peer,
        source_identity: inbound.client.as_deref(),
        destination: inbound.target,
        destination_identity: inbound.pod.identity(),
    };
    // Envoy's UAEX, for a denial and for a provider that failed alike.
    let answer = |status: StatusCode, headers: Vec<_>, text: Bytes, details| {
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        for (name, value) in headers {
            response.headers_mut().append(name, value);
        }
        reply::Replied::mark(
            response,
            reply::Flag::ExternalDenied.into(),
            Some(Cow::Borrowed(details)),
        )
    };
    match ctx
        .ext_authz
        .check(&ctx.store, provider, parts, body, &peers)
        .await
    {
        Ok(Verdict::Allow { response_headers }) => Ok(response_headers),
        Ok(Verdict::Deny {
            status,
            headers,
            body,
        }) => Err((
            status,
            format!("denied by extension provider {}", provider.provider),
            answer(status, headers, body, reply::details::EXT_AUTHZ_DENIED),
        )),
        Err(err) if provider.fail_open => {
            tracing::warn!(policy = %custom.key(), error = %err, "extension provider failed; failOpen lets the request through");
            Ok(Vec::new())
        }
        Err(err) => {
            let status = u16::try_from(provider.status_on_error)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| s.as_u16() >= 200)
                .unwrap_or(StatusCode::FORBIDDEN);
            Err((
                status,
                err.to_string(),
                answer(
                    status,
                    Vec::new(),
                    Bytes::new(),
                    reply::details::EXT_AUTHZ_ERROR,
                ),
            ))
        }
    }
}

/// Where a request's body is counted as it goes to the app (see
/// [`handle`]), carried in the request's extensions to `Served::send`.
#[derive(Clone)]
struct SeenBody(Arc<body::RequestBody>);

/// The request body on its way to the app: as it comes, or what was
/// buffered for the provider followed by the rest.
enum AppBody {
    Raw(Incoming),
    Buffered(Body),
}

/// An HTTP/1.1 `Upgrade` (WebSocket...) or a CONNECT: after it the
/// connection carries bytes, not requests.
fn is_upgrade(request: &http::request::Parts) -> bool {
    let headers = &request.headers;
    request.method == http::Method::CONNECT
        || (headers.contains_key(header::UPGRADE)
            && headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade")))
}

/// `uri` with another path and query.
pub(super) fn with_path(uri: &Uri, path_and_query: &str) -> Result<Uri, http::Error> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query)?);
    Ok(Uri::from_parts(parts)?)
}
