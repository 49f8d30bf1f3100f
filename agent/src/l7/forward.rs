//! One request, from the app to the response it gets: route selection,
//! the route's own answers (redirect, direct response, CORS preflight,
//! fault injection), the destination, rewrites and header edits, mirrors;
//! then [`super::send`] for the upstream part.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
};
use hyper::body::Incoming;

use super::{
    body::{self, Body, BoxError, Replay},
    envoy_headers,
    log::Record,
    reply::{self, Flag, Flags, LocalReply, Replied, details},
    route::{Abort, Action, Destination, HttpRoute, Preflight, RequestView},
    send,
    upstream::Protocol,
};
use crate::{
    policy::http::normalize_path_and_query,
    proxy::{PodContext, ProxyContext},
    state::{AppProtocol, Service},
};

/// One app connection terminated at L7: who sent it, to which service.
pub struct Downstream {
    pub pod: Arc<PodContext>,
    /// The app's address.
    pub peer: SocketAddr,
    /// The address the app connected to (the service's VIP and port).
    pub original: SocketAddr,
    pub service: Arc<Service>,
    /// The service key, `<namespace>/<hostname>`.
    pub service_key: String,
    /// What the port speaks.
    pub protocol: AppProtocol,
    /// The request metric series this connection's requests recorded,
    /// for the next ones.
    pub series: Arc<crate::metrics::traffic::SeriesCache>,
}

/// The parts of a request every attempt (and mirror) is built from.
#[derive(Clone)]
pub struct Head {
    pub method: Method,
    /// Path and query, as sent upstream (after rewrites).
    pub path: String,
    pub authority: String,
    pub headers: HeaderMap,
    /// The headers the route edits, with their values as they came: the
    /// first attempt's hash reads these, as Envoy picks the first endpoint
    /// before it applies the route's edits (its retries see the edits).
    /// Empty when the route edits none.
    pub unedited: Vec<(HeaderName, Vec<HeaderValue>)>,
    /// The app spoke HTTP/2 (for `useClientProtocol`).
    pub http2: bool,
}

impl Head {
    /// An upstream request in `protocol`'s form: origin-form with `Host`
    /// for HTTP/1.1, absolute with `:authority` for HTTP/2; no hop-by-hop
    /// headers.
    pub fn request(&self, protocol: Protocol, body: Body) -> Result<Request<Body>, http::Error> {
        let mut headers = self.headers.clone();
        let (uri, version) = match protocol {
            Protocol::Http1 => {
                headers.insert(header::HOST, HeaderValue::from_str(&self.authority)?);
                (Uri::try_from(self.path.as_str())?, Version::HTTP_11)
            }
            Protocol::Http2 => {
                headers.remove(header::HOST);
                let uri = Uri::builder()
                    .scheme("http")
                    .authority(self.authority.as_str())
                    .path_and_query(self.path.as_str())
                    .build()?;
                (uri, Version::HTTP_2)
            }
        };
        strip_hop_by_hop(&mut headers, protocol == Protocol::Http2);
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .version(version)
            .body(body)?;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// Handles one request; never fails except to reset the stream (a fault
/// that injects an HTTP/2 error).
pub async fn handle(
    request: Request<Incoming>,
    down: Arc<Downstream>,
    ctx: Arc<ProxyContext>,
) -> Result<Response<Body>, BoxError> {
    let mut request = request;
    // The head as the app sent it: Istio's request sizes are wire bytes.
    let head_bytes = ctx
        .metrics
        .traffic
        .enabled()
        .then(|| super::wire::request_head(request.method(), request.uri(), request.headers()));
    // Envoy's connection manager adds these before anything else: routes
    // match them, the access log and local replies have them, the route's
    // edits apply after.
    add_proxy_headers(request.headers_mut());
    let mut record = Record::start(&request, &down, &ctx);
    if let Some(bytes) = head_bytes {
        record.request_head(bytes);
    }
    let grpc = super::reply::is_grpc(request.headers());
    match route(request, &down, &ctx, &mut record, grpc).await {
        Ok(response) => Ok(record.finish(response)),
        Err(reset) => {
            record.finish_reset();
            Err(reset)
        }
    }
}

/// A request whose answer is a stream reset (fault `http2Error`).
#[derive(Debug, thiserror::Error)]
#[error("stream reset by fault injection ({0})")]
struct FaultReset(String);

async fn route(
    mut request: Request<Incoming>,
    down: &Arc<Downstream>,
    ctx: &Arc<ProxyContext>,
    record: &mut Record,
    grpc: bool,
) -> Result<Response<Body>, BoxError> {
    // Envoy's connection manager normalises the path before routing:
    // routes match, and the request is sent with, the path normalised by
    // the rules the destination's side applies before its policies (Istio's
    // default, RFC 3986's dot segments and escapes, plus merged slashes: a
    // deliberate difference, so that both sides see one path). A path
    // those rules refuse (an escaped slash, a broken escape) is routed and
    // sent as it came: the destination's side answers it 400 and counts
    // it.
    let raw = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let path = match normalize_path_and_query(raw) {
        Ok(Cow::Owned(path)) => {
            record.normalized(&path);
            path
        }
        Ok(Cow::Borrowed(_)) | Err(_) => raw.to_string(),
    };
    let authority = authority_of(&request).to_string();
    let (table, mut default_retry) = match ctx.l7.config.http_routes(&down.service_key) {
        Ok(table) => (Some(table), None),
        Err(retry) => (None, Some(retry)),
    };
    let view = RequestView {
        method: request.method(),
        path_and_query: &path,
        authority: &authority,
        scheme: "http",
        uri_scheme: request.uri().scheme_str(),
        headers: request.headers(),
        port: down.original.port(),
        source_namespace: &down.pod.workload.namespace,
        source_workload: &down.pod.workload.uid,
    };
    // No RouteConfig, or none of its routes for this client and port (a
    // VirtualService istiod would leave out of the client's routes): the
    // default route sends everything to the service, with Istio's default
    // retries.
    let selected = match &table {
        None => None,
        Some(table) => match table.select(&view) {
            Some(selected) => Some(selected),
            None if !table.routes_client(&view) => None,
            None => return Ok(local(LocalReply::no_route(), grpc, record)),
        },
    };
    let route = selected.map(|s| s.route);
    if let Some(route) = route {
        record.route(route);
        match &route.action {
            Action::Redirect(redirect) => {
                let matched = selected.as_ref().and_then(|s| s.http_match());
                let (status, location) = redirect.location(&view, matched);
                let mut response = Response::new(body::empty());
                *response.status_mut() = status;
                if let Ok(location) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                return Ok(direct_response(route, record, request.headers(), response));
            }
            Action::DirectResponse(direct) => {
                // Envoy sends it as a local reply: `text/plain` with a
                // body, a trailers-only answer to a gRPC request.
                let grpc_status = grpc.then(|| reply::grpc_status_for(direct.status));
                let body = direct.body.clone().unwrap_or_default();
                let mut response = reply::local_response(direct.status, body, grpc_status);
                if let Some(location) = direct.location(&view)
                    && let Ok(location) = HeaderValue::from_str(&location)
                {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                return Ok(direct_response(route, record, request.headers(), response));
            }
            Action::Route(_) => {}
        }
        if let Some(cors) = &route.cors {
            match cors.preflight(request.headers(), request.method()) {
                Preflight::Respond(headers) => {
                    let mut response = Response::new(body::empty());
                    *response.headers_mut() = headers;
                    return Ok(Replied::mark(
                        response,
                        Flags::default(),
                        Some(details::CORS_RESPONSE.into()),
                    ));
                }
                Preflight::Forward | Preflight::NotPreflight => {}
            }
        }
        if let Some(fault) = &route.fault {
            if let Some(delay) = fault.delay_for(fastrand::u32(..)) {
                record.flags.set(Flag::DelayInjected);
                tokio::time::sleep(delay).await;
            }
            if let Some(abort) = fault.abort_for(fastrand::u32(..)) {
                let reply = match abort {
                    Abort::Http(status) => LocalReply::fault_abort(*status, None),
                    Abort::Grpc(code) => LocalReply::fault_abort(StatusCode::OK, Some(*code)),
                    Abort::Http2Error(reason) => {
                        record.flags.set(Flag::FaultInjected);
                        return Err(FaultReset(reason.clone()).into());
                    }
                };
                let grpc = grpc || reply.grpc_status.is_some();
                let mut response = local(reply, grpc, record);
                // Envoy's CORS filter runs before the fault filter: its
                // encoder decorates the abort too.
                if let Some(cors) = &route.cors {
                    cors.decorate(request.headers(), response.headers_mut());
                }
                return Ok(response);
            }
        }
    }

    let default_destination;
    let weighted = match route {
        Some(route) => match route.pick(fastrand::u32(..)) {
            Some(weighted) => Some(weighted),
            None => return Ok(local(LocalReply::no_healthy_upstream(), grpc, record)),
        },
        None => None,
    };
    let destination = match weighted {
        Some(weighted) => &weighted.destination,
        None => {
            default_destination = default_destination_for(down);
            &default_destination
        }
    };
    record.destination(destination);

    let mut head = Head {
        http2: request.version() == Version::HTTP_2,
        method: request.method().clone(),
        path,
        authority,
        headers: std::mem::take(request.headers_mut()),
        unedited: Vec::new(),
    };
    if let Some(selected) = &selected {
        let rewritten = selected.rewritten_path(&head.path);
        if let Some(authority) = selected.route.authority(weighted) {
            head.authority = authority.to_string();
        }
        head.unedited = selected
            .route
            .request_headers_edited(weighted)
            .map(|name| {
                let values = head.headers.get_all(name).iter().cloned().collect();
                (name.clone(), values)
            })
            .collect();
        selected
            .route
            .edit_request(weighted, &mut head.headers, &record.request_formatting());
        // After the route's own edits, as Envoy's route finalizes them.
        let edited = rewritten.is_some() || !head.unedited.is_empty();
        if let Some(path) = rewritten {
            let original = std::mem::replace(&mut head.path, path);
            if let Ok(original) = HeaderValue::try_from(original) {
                head.headers.insert(&envoy_headers::ORIGINAL_PATH, original);
            }
        }
        if edited || selected.route.authority(weighted).is_some() {
            record.routed(&head.path, &head.authority, &head.headers);
        }
    }
    record.forwarding(&mut head.headers);

    // Upgrades (WebSocket, CONNECT) become byte streams: no retries, no
    // mirrors.
    if is_upgrade(&head) {
        let upgrade = hyper::upgrade::on(&mut request);
        return Ok(send::upgrade(ctx, down, destination, head, upgrade, record, grpc).await);
    }

    let replay = Replay::new(record.counting(body::boxed(request.into_body())));
    let retry = match route {
        Some(route) => &route.retry,
        // A RouteConfig with no route for this client: the lookup above
        // did not bring the default's.
        None => &**default_retry.get_or_insert_with(|| ctx.l7.config.default_retry()),
    };
    // Envoy honours a gRPC client's deadline (`grpc-timeout`), capped by
    // the route's timeout (Istio sets `max_grpc_timeout` to it, 0 for
    // none: no cap).
    let timeout = match (
        grpc.then(|| grpc_timeout(&head.headers)).flatten(),
        route.and_then(|r| r.timeout),
    ) {
        (Some(deadline), Some(route)) => Some(deadline.min(route)),
        (deadline, route) => deadline.or(route),
    };
    if let Some(route) = route {
        for mirror in &route.mirrors {
            if mirror.sampled(fastrand::u32(..)) {
                send::mirror(
                    ctx,
                    down,
                    &mirror.destination,
                    &head,
                    &replay,
                    (timeout, retry.per_try_timeout, grpc),
                );
            }
        }
    }
    let mut response = send::send(
        ctx,
        down,
        destination,
        &head,
        &replay,
        retry,
        timeout,
        record,
        grpc,
    )
    .await;

    if let Some(route) = route {
        let status = response.status();
        route.edit_response(
            weighted,
            response.headers_mut(),
            &record.response_formatting(status, &head.headers),
        );
        if let Some(cors) = &route.cors {
            cors.decorate(&head.headers, response.headers_mut());
        }
    }
    Ok(response)
}

/// A redirect's or direct response's answer, with the route's response
/// edits (after its details are set, as Envoy's local reply has them).
fn direct_response(
    route: &HttpRoute,
    record: &Record,
    request: &HeaderMap,
    mut response: Response<Body>,
) -> Response<Body> {
    let formatting = record
        .response_formatting(response.status(), request)
        .answered_here(details::DIRECT_RESPONSE);
    route.edit_response(None, response.headers_mut(), &formatting);
    Replied::mark(
        response,
        Flags::default(),
        Some(details::DIRECT_RESPONSE.into()),
    )
}

/// The destination of a service no VirtualService routes: itself, on the
/// port the app connected to.
fn default_destination_for(down: &Downstream) -> Destination {
    Destination {
        host: down.service.hostname.clone(),
        subset: String::new(),
        port: down.original.port(),
        service: down.service_key.clone(),
        endpoints: None,
    }
}

fn local(reply: LocalReply, grpc: bool, record: &mut Record) -> Response<Body> {
    if let Some(flag) = reply.flag {
        record.flags.set(flag);
    }
    reply.into_response(grpc)
}

/// The request's authority: `:authority` (HTTP/2, absolute-form) or
/// `Host`.
fn authority_of<B>(request: &Request<B>) -> Cow<'_, str> {
    if let Some(authority) = request.uri().authority() {
        return Cow::Borrowed(authority.as_str());
    }
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or(Cow::Borrowed(""), Cow::Borrowed)
}

/// WebSocket or another `Upgrade`, or CONNECT.
fn is_upgrade(head: &Head) -> bool {
    head.method == Method::CONNECT
        || (head.headers.contains_key(header::UPGRADE)
            && head
                .headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade")))
}

/// A gRPC request's `grpc-timeout`: up to 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`), in whole milliseconds rounded up, as Envoy reads
/// it; `None` when absent, malformed (Envoy ignores it then) or 0 (no
/// deadline, for Envoy).
fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let millis = match unit {
        "H" => n * 3_600_000,
        "M" => n * 60_000,
        "S" => n * 1000,
        "m" => n,
        "u" => n.div_ceil(1000),
        "n" => n.div_ceil(1_000_000),
        _ => return None,
    };
    (millis > 0).then(|| std::time::Duration::from_millis(millis))
}

/// What Envoy's connection manager does to a request it forwards: adds
/// `x-forwarded-proto` and an `x-request-id`, each if the app sent none
/// (an outbound sidecar listener does not use the remote address, so
/// Envoy keeps the app's `x-forwarded-proto`, as a gateway in the mesh
/// forwards it), and, the request not being internal for the same
/// reason, removes the internal `x-envoy-*` headers.
fn add_proxy_headers(headers: &mut HeaderMap) {
    envoy_headers::strip_internal(headers);
    static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    if !headers.contains_key(&FORWARDED_PROTO) {
        headers.insert(&FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&REQUEST_ID) {
        headers.insert(&REQUEST_ID, request_id());
    }
}

/// A random (version 4) UUID, as Envoy makes an `x-request-id`.
fn request_id() -> HeaderValue {
    HeaderValue::from_bytes(&random_uuid()).expect("hex digits and dashes make a header value")
}

/// A random (version 4) UUID's text: written digit by digit (`format!`
/// took about 3,000 instructions).
pub fn random_uuid() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id = fastrand::u128(..);
    // Version 4 in bits 76..80, the RFC 4122 variant (0b10) in 62..64.
    let id = (id & !(0xf_u128 << 76)) | (0x4 << 76);
    let id = (id & !(0x3_u128 << 62)) | (0x2 << 62);
    let mut text = [0u8; 36];
    let mut at = 0;
    for nibble in 0..32 {
        if matches!(nibble, 8 | 12 | 16 | 20) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[((id >> (124 - 4 * nibble)) & 0xf) as usize];
        at += 1;
    }
    text
}

/// Removes connection-specific headers, which belong to one hop (and which
/// HTTP/2 forbids): `Connection` and what it names, `Keep-Alive`,
/// `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE` unless it
/// is `trailers` on HTTP/2 (gRPC sends it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, http2: bool) {
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    // Most requests carry none of them: one pass over the names (standard
    // ones compare as a tag) tells, where a removal each hashed its name.
    let hop_by_hop = |name: &HeaderName| {
        name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::TE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
    };
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    // Most requests carry no `Connection` header, or only `keep-alive`:
    // nothing to collect then.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !(http2 && te_trailers) {
        headers.remove(header::TE);
    }
}

/// Envoy's shadow host: `-shadow` appended to the host, before any port.
pub fn shadow_authority(authority: &str) -> String {
    if let Some(i) = authority.rfind(':') {
        let (host, port) = (&authority[..i], &authority[i + 1..]);
        let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        // An unbracketed IPv6 address has colons but no port.
        if is_port && (host.ends_with(']') || !host.contains(':')) {
            return format!("{host}-shadow:{port}");
        }
    }
    format!("{authority}-shadow")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_grpc_writes_them() {
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            grpc_timeout(&h)
        };
        let d = std::time::Duration::from_millis;
        assert_eq!(parse("1S"), Some(d(1000)));
        assert_eq!(parse("250m"), Some(d(250)));
        assert_eq!(parse("2M"), Some(d(120_000)));
        assert_eq!(parse("1H"), Some(d(3_600_000)));
        // Envoy's milliseconds, rounded up; 0 is no deadline.
        assert_eq!(parse("1500u"), Some(d(2)));
        assert_eq!(parse("7n"), Some(d(1)));
        assert_eq!(parse("99999999H"), Some(d(99_999_999 * 3_600_000)));
        for bad in [
            "",
            "S",
            "1",
            "1s",
            "123456789S",
            "-1S",
            "1.5S",
            "0m",
            "0S",
            "0n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        let mut h2 = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1, "{headers:?}");
        strip_hop_by_hop(&mut h2, true);
        assert!(h2.contains_key(header::TE) && h2.contains_key("x-kept") && h2.len() == 2);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "te",
            "keep-alive",
            "proxy-connection",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("x"));
            headers.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut headers, true);
            assert_eq!(
                headers.keys().collect::<Vec<_>>(),
                ["x-kept"],
                "{name} alone"
            );
        }
        let mut none = HeaderMap::new();
        none.insert("x-kept", HeaderValue::from_static("1"));
        none.insert(header::HOST, HeaderValue::from_static("a"));
        let before = none.clone();
        strip_hop_by_hop(&mut none, false);
        assert_eq!(none, before);
    }

    #[test]
    fn shadow_host_keeps_the_port() {
        assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_authority("reviews"), "reviews-shadow");
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let mut headers = HeaderMap::new();
        add_proxy_headers(&mut headers);
        let id = headers["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]), "variant: {id}");
        for (at, c) in id.char_indices() {
            match at {
                8 | 13 | 18 | 23 => assert_eq!(c, '-', "{id}"),
                _ => assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{id}"),
            }
        }
        let mut again = HeaderMap::new();
        add_proxy_headers(&mut again);
        assert_ne!(again["x-request-id"], id, "ids are random");
        assert_eq!(headers["x-forwarded-proto"], "http");
        // The app's own are kept (a gateway pod forwarding an HTTPS
        // client's request says so in it).
        let mut from_gateway = HeaderMap::new();
        from_gateway.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        from_gateway.insert("x-request-id", HeaderValue::from_static("abc"));
        add_proxy_headers(&mut from_gateway);
        assert_eq!(from_gateway["x-forwarded-proto"], "https");
        assert_eq!(from_gateway["x-request-id"], "abc");
    }
}
