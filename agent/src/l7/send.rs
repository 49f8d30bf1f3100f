//! The upstream half of a request: the destination's cluster (policy,
//! endpoints, state), then attempts with the route's retry policy within
//! its timeout; also mirrors and upgrades.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::{
    ClusterKey, ClusterRef,
    body::{self, Body, Replay},
    cluster::{
        AttemptResult, Cluster, EffectivePolicy, Endpoint, HashKey, InFlight, LbPolicy, Picked,
    },
    envoy_headers,
    forward::{Downstream, Head, shadow_authority},
    log::Record,
    reply::{Flag, LocalReply},
    route::{Destination, Outcome, RetryPolicy},
    tls::TlsError,
    upstream::{ConnectError, Protocol, Target, UpstreamError},
};
use crate::{
    proxy::{PodContext, ProxyContext},
    state::AppProtocol,
};

/// How many times a retry looks for an endpoint it has not tried yet:
/// once, then again up to 5 times (Istio's
/// `host_selection_retry_max_attempts` for the `previous_hosts`
/// predicate).
const HOST_SELECTION_ATTEMPTS: u32 = 6;

/// A mirror gets at most this long when its route has no timeout.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// The destination's cluster, resolved for one request.
pub(super) struct Resolved {
    pub(super) cluster: Arc<Cluster>,
    /// Keys the cluster's upstream connections.
    cluster_id: u64,
    pub(super) endpoints: Vec<Endpoint>,
    protocol: Protocol,
    /// Its addresses are the destinations (a ServiceEntry with
    /// `resolution: NONE`): the service, which maps the port dialed.
    pub(super) original_dst: Option<Arc<crate::state::Service>>,
}

impl Resolved {
    /// Where the request or connection goes when it goes to the address
    /// the client dialed (`dialed`), endpoints or not: a service whose
    /// addresses are the destinations (at its ports' `targetPort`), or
    /// the rule's `PASSTHROUGH` balancer.
    pub(super) fn original_dst(&self, dialed: SocketAddr) -> Option<SocketAddr> {
        match &self.original_dst {
            Some(service) => Some(service.original_dst_addr(dialed)),
            None => matches!(self.cluster.policy().lb, LbPolicy::Passthrough).then_some(dialed),
        }
    }
}

/// Sends the request to `destination`, retrying as `retry` says, within
/// `timeout`; the response, or the proxy's own answer.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    ctx: &ProxyContext,
    down: &Downstream,
    destination: &Destination,
    head: &Head,
    replay: &Replay,
    retry: &RetryPolicy,
    timeout: Option<Duration>,
    record: &mut Record,
    grpc: bool,
) -> Response<Body> {
    let sent_at = Instant::now();
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    // The attempt awaiting its answer when the route's timeout cuts it is
    // counted at its endpoint's outlier detection, as a per-try timeout
    // is (Envoy's router: a local-origin timeout), if it had a
    // connection there.
    let mut awaited = Awaited::default();
    let attempts = attempts(
        ctx,
        down,
        destination,
        head,
        replay,
        retry,
        record,
        grpc,
        (timeout, sent_at),
        deadline.is_some().then_some(&mut awaited),
    );
    let result = match deadline {
        Some(deadline) => {
            let cut = tokio::time::timeout_at(deadline, attempts).await;
            match cut {
                Ok(result) => result,
                Err(_) => {
                    if let Some((cluster, addr)) = awaited.attempt.take()
                        && awaited.attached.load(Ordering::Relaxed)
                    {
                        cluster.report(addr, AttemptResult::LocalOriginFailure, Instant::now());
                    }
                    Err(LocalReply::timeout())
                }
            }
        }
        None => attempts.await,
    };
    match result {
        Ok(mut response) => {
            // From when the app's request was complete, its retries
            // included.
            envoy_headers::set_service_time(response.headers_mut(), sent_at, record.request_body());
            // The timeout covers the response's body too.
            match deadline {
                Some(deadline) => response.map(|b| body::with_deadline(b, deadline)),
                None => response,
            }
        }
        Err(reply) => {
            if let Some(flag) = reply.flag {
                record.flags.set(flag);
            }
            reply.into_response(grpc)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempts(
    ctx: &ProxyContext,
    down: &Downstream,
    destination: &Destination,
    head: &Head,
    replay: &Replay,
    retry: &RetryPolicy,
    record: &mut Record,
    grpc: bool,
    (timeout, sent_at): (Option<Duration>, Instant),
    mut awaited: Option<&mut Awaited>,
) -> Result<Response<Body>, LocalReply> {
    let resolved = resolve(ctx, down, destination, head.http2)?;
    let cluster = &resolved.cluster;
    let policy = cluster.policy().clone();
    let request_slot = cluster.try_request().ok_or_else(LocalReply::overflow)?;
    // To the address dialed, no balancer runs: no hash, no cookie (Istio
    // gives an `ORIGINAL_DST` cluster Envoy's `CLUSTER_PROVIDED` policy,
    // whatever the rule's `loadBalancer`).
    let (first_hash, set_cookie) = match resolved.original_dst(down.original) {
        Some(_) => (None, None),
        None => request_hash(&policy, head, down, true),
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    // Without Envoy's `previous_hosts` predicate, a retry's endpoint is
    // picked as the first was, tried or not.
    let avoid_tried =
        retry.avoids_previous_hosts(matches!(policy.lb, LbPolicy::ConsistentHash { .. }));
    let mut retrying = None;
    let mut attempt = 0;
    loop {
        // Retries hash the headers as the route edited them (Envoy's
        // order).
        let hash = match attempt {
            0 => first_hash,
            _ if head.unedited.is_empty() => first_hash,
            _ => request_hash(&policy, head, down, false).0,
        };
        let picked = pick(
            &resolved,
            down,
            hash,
            if avoid_tried { &tried } else { &[] },
        )?;
        let endpoint = &picked.endpoint;
        record.attempt(endpoint, ctx);
        tried.push(endpoint.addr);
        if let Some(awaited) = awaited.as_deref_mut() {
            awaited.attempt = Some((cluster.clone(), endpoint.addr));
            awaited.attached.store(false, Ordering::Relaxed);
        }
        let target = Target {
            pod: &down.pod,
            peer: down.peer,
            endpoint,
            cluster_id: resolved.cluster_id,
            protocol: resolved.protocol,
            tls: policy.tls.as_ref(),
            host: &destination.host,
            limits: &policy.limits,
            client_waits: true,
            attached: awaited.as_deref().map(|a| &a.attached),
        };
        let mut request = head
            .request(resolved.protocol, replay.body())
            .map_err(|_| LocalReply::no_route())?;
        envoy_headers::mark_attempt(
            request.headers_mut(),
            attempt,
            retry.per_try_timeout,
            timeout,
            sent_at.elapsed(),
            grpc,
        );
        let sent = ctx.l7.upstreams.send(ctx, &target, cluster, request);
        let result = match retry.per_try_timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(result) => result.map_err(Failure::Upstream),
                Err(_) => Err(Failure::PerTryTimeout),
            },
            None => sent.await.map_err(Failure::Upstream),
        };
        if let Some(awaited) = awaited.as_deref_mut() {
            awaited.attempt = None;
        }
        let result = match result {
            Ok((response, local)) => {
                record.went_on(local);
                Ok(response)
            }
            Err(failure) => {
                record.went_on(None);
                Err(failure)
            }
        };
        let outcome = match &result {
            Ok(response) => Outcome::Response {
                status: response.status().as_u16(),
                grpc_status: super::reply::grpc_status(response.headers()),
            },
            Err(Failure::Upstream(UpstreamError::Overflow)) => {
                return Err(LocalReply::overflow());
            }
            Err(Failure::Upstream(UpstreamError::RefusedStream)) => Outcome::RefusedStream,
            Err(Failure::Upstream(UpstreamError::Reset(_))) => Outcome::Reset,
            Err(Failure::Upstream(_)) => Outcome::ConnectFailure,
            Err(Failure::PerTryTimeout) => Outcome::PerTryTimeout,
        };
        // A failure of this agent's own (a TLS setting it cannot use, no
        // certificate, a policy refusing this client) says nothing of the
        // endpoint's health.
        let against_endpoint = match &result {
            Err(Failure::Upstream(UpstreamError::Connect { source, .. })) => match source {
                ConnectError::Tls(err) => matches!(err, TlsError::Handshake(_)),
                ConnectError::Outbound(err) => err.endpoint_failed(),
                ConnectError::Handshake(_) => true,
            },
            _ => true,
        };
        if against_endpoint {
            cluster.report(
                endpoint.addr,
                match &outcome {
                    // A gRPC request's answer counts as the HTTP status its
                    // gRPC status stands for (Envoy's router).
                    Outcome::Response {
                        grpc_status: Some(code),
                        ..
                    } if grpc => AttemptResult::Status(super::reply::http_status_for_grpc(*code)),
                    Outcome::Response { status, .. } => AttemptResult::Status(*status),
                    _ => AttemptResult::LocalOriginFailure,
                },
                Instant::now(),
            );
        }
        if let Err(Failure::Upstream(err)) = &result {
            tracing::debug!(upstream = %endpoint.addr, error = %err, "upstream attempt failed");
        }
        let retriable = retry.retriable(&outcome);
        let more = attempt < retry.attempts && replay.can_replay();
        if retriable && more {
            // Each retry takes a unit of the cluster's budget (`maxRetries`)
            // that the retry before it held until its outcome, as Envoy's
            // retry state gives one back before it asks again.
            drop(retrying.take());
            retrying = cluster.try_retry();
            if retrying.is_some() {
                attempt += 1;
                tokio::time::sleep(retry.backoff(attempt, fastrand::u32(..))).await;
                continue;
            }
        }
        // Why a retriable answer is the last, as Envoy flags it: the
        // cluster's retry budget (`maxRetries`) is spent, `UO`; the
        // route's attempts are used up, `URX`; a body too large to replay,
        // no flag.
        if retriable && retry.attempts > 0 {
            if more {
                record.flags.set(Flag::UpstreamOverflow);
            } else if attempt >= retry.attempts {
                record.flags.set(Flag::RetryLimitExceeded);
            }
        }
        return match result {
            Ok(mut response) => {
                if let Some(cookie) = set_cookie {
                    response
                        .headers_mut()
                        .append(http::header::SET_COOKIE, cookie.header);
                }
                let http2_response = response.version() == http::Version::HTTP_2;
                super::forward::strip_hop_by_hop(response.headers_mut(), http2_response);
                record.hold(InFlight::new(request_slot, picked));
                Ok(response)
            }
            Err(Failure::PerTryTimeout) => Err(LocalReply::timeout()),
            Err(Failure::Upstream(UpstreamError::RefusedStream)) => Err(LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Flag::UpstreamReset,
                "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset",
            )),
            Err(Failure::Upstream(UpstreamError::Reset(_))) => Err(LocalReply::upstream_reset()),
            Err(Failure::Upstream(err)) => {
                tracing::info!(src = %down.pod.name(), upstream = %endpoint.addr, error = %err, grpc, "upstream connect failed");
                Err(LocalReply::connect_failure())
            }
        };
    }
}

enum Failure {
    Upstream(UpstreamError),
    PerTryTimeout,
}

/// The attempt a route timeout may cut: its endpoint, and whether the
/// request had a connection there (Envoy attaches the host to a request
/// only then, and reports the timeout only to an attached host).
#[derive(Default)]
struct Awaited {
    attempt: Option<(Arc<Cluster>, SocketAddr)>,
    attached: AtomicBool,
}

/// An endpoint for the next attempt: one not tried yet if the balancer
/// offers one within a few draws. It counts as an active request on the
/// endpoint for as long as the caller keeps it.
fn pick(
    resolved: &Resolved,
    down: &Downstream,
    hash: Option<u64>,
    tried: &[SocketAddr],
) -> Result<Picked, LocalReply> {
    if let Some(addr) = resolved.original_dst(down.original) {
        // The address the app asked for: no endpoint needed.
        return Ok(Picked::passthrough(Endpoint {
            addr,
            workload: None,
            weight: 1,
        }));
    }
    if resolved.endpoints.is_empty() {
        return Err(LocalReply::no_healthy_upstream());
    }
    let now = Instant::now();
    let mut last = None;
    for attempt in 0..HOST_SELECTION_ATTEMPTS {
        let picked = resolved
            .cluster
            .pick_attempt(&resolved.endpoints, hash, attempt, fastrand::u64(..), now)
            .ok_or_else(LocalReply::no_healthy_upstream)?;
        if !tried.contains(&picked.endpoint.addr) {
            return Ok(picked);
        }
        last = Some(picked);
    }
    last.ok_or_else(LocalReply::no_healthy_upstream)
}

/// The client's address for `useSourceIp`: its pod's first, else the
/// connection's.
fn source_ip(down: &Downstream) -> IpAddr {
    down.pod
        .workload
        .ips
        .first()
        .copied()
        .unwrap_or(down.peer.ip())
}

/// The request's hash under `policy`'s consistent hashing (`None`
/// otherwise), and a cookie to set when one is generated. A generated
/// cookie's value comes from the downstream connection's address, as
/// Envoy's does: the requests of one connection get the same one. The
/// first attempt's hash reads the headers as they came.
fn request_hash(
    policy: &EffectivePolicy,
    head: &Head,
    down: &Downstream,
    first: bool,
) -> (Option<u64>, Option<super::cluster::SetCookie>) {
    match &policy.lb {
        LbPolicy::ConsistentHash { key, .. } => {
            use std::hash::BuildHasher;
            // The address is the app's inside its pod: with the pod's
            // netns, two pods on one port do not share a value.
            let seed = foldhash::fast::FixedState::with_seed(0)
                .hash_one((down.peer, down.pod.netns_cookie));
            // The first attempt's: the hashed header as it came, if the
            // route edited it.
            let hashed = match key {
                HashKey::Header(name) => Some(name),
                HashKey::Cookie { .. } => Some(&http::header::COOKIE),
                _ => None,
            };
            let unedited = hashed
                .filter(|_| first)
                .and_then(|name| head.unedited.iter().find(|(edited, _)| edited == name));
            let restored;
            let headers = match unedited {
                Some((name, values)) => {
                    let mut headers = head.headers.clone();
                    headers.remove(name);
                    for value in values {
                        headers.append(name.clone(), value.clone());
                    }
                    restored = headers;
                    &restored
                }
                None => &head.headers,
            };
            super::cluster::request_hash(key, headers, &head.path, source_ip(down), seed)
        }
        _ => (None, None),
    }
}

/// Istio's defaults, for a destination no DestinationRule applies to.
fn default_policy() -> Arc<EffectivePolicy> {
    static DEFAULT: OnceLock<Arc<EffectivePolicy>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| Arc::new(EffectivePolicy::defaults()))
        .clone()
}

/// The cluster of `destination`: its effective policy for this client,
/// its state, its endpoints now, the protocol to speak to them.
fn resolve(
    ctx: &ProxyContext,
    down: &Downstream,
    destination: &Destination,
    client_http2: bool,
) -> Result<Resolved, LocalReply> {
    resolve_for(
        ctx,
        &down.pod,
        down.original.port(),
        down.protocol,
        destination,
        client_http2,
    )
}

/// [`resolve`] for a client in `pod` that connected to service port
/// `port` (which speaks `declared`, as far as the client's service says).
pub(super) fn resolve_for(
    ctx: &ProxyContext,
    pod: &PodContext,
    port: u16,
    declared: AppProtocol,
    destination: &Destination,
    client_http2: bool,
) -> Result<Resolved, LocalReply> {
    if destination.service.is_empty() {
        return Err(LocalReply::no_cluster());
    }
    let port = if destination.port != 0 {
        destination.port
    } else {
        port
    };
    let client_ns = &pod.workload.namespace;
    let policies = ctx.l7.config.policies(&destination.service);
    // istiod builds a subset's cluster (`outbound|port|subset|host`) only
    // when the client's DestinationRule defines the subset: a route to
    // any other has no cluster (Envoy: 503 `NC`, `cluster_not_found`).
    if !destination.subset.is_empty()
        && !policies
            .as_ref()
            .is_some_and(|p| p.has_subset(client_ns, &destination.subset))
    {
        return Err(LocalReply::no_cluster());
    }
    let policy = match &policies {
        Some(policies) => policies.effective(client_ns, &destination.subset, port),
        None => default_policy(),
    };
    let ClusterRef {
        id: cluster_id,
        cluster,
    } = ctx.l7.cluster(
        ClusterKey {
            service: destination.service.clone(),
            subset: destination.subset.clone(),
            port,
        },
        policy.clone(),
        policies.as_deref(),
    );
    let service = ctx.store.service(&destination.service);
    let target_port = |workload: &crate::state::Workload| {
        workload
            .services
            .get(&destination.service)
            .and_then(|ports| ports.get(&port))
            .copied()
            .filter(|&p| p != 0)
            .or_else(|| {
                service
                    .as_ref()
                    .and_then(|s| s.ports.get(&port).copied())
                    .filter(|&p| p != 0)
            })
            .unwrap_or(port)
    };
    let mut endpoints = Vec::new();
    match &destination.endpoints {
        None => {
            for workload in ctx.store.endpoints(&destination.service) {
                let addr = SocketAddr::new(workload.ips[0], target_port(&workload));
                endpoints.push(Endpoint {
                    addr,
                    workload: Some(workload),
                    weight: 1,
                });
            }
        }
        Some(set) => {
            for uid in &set.workload_uids {
                if let Some(workload) = ctx.store.workload(uid)
                    && let Some(ip) = workload.ips.first().copied()
                {
                    let addr = SocketAddr::new(ip, target_port(&workload));
                    endpoints.push(Endpoint {
                        addr,
                        workload: Some(workload),
                        weight: 1,
                    });
                }
            }
            for address in &set.addresses {
                // DNS names and unix sockets are not reachable from here.
                let Ok(ip) = address.address.parse::<IpAddr>() else {
                    continue;
                };
                let addr = SocketAddr::new(
                    ip,
                    if address.port != 0 {
                        address.port
                    } else {
                        port
                    },
                );
                endpoints.push(Endpoint {
                    addr,
                    workload: ctx.store.workload_by_ip(ip),
                    weight: address.weight.max(1),
                });
            }
        }
    }
    let declared = service
        .as_ref()
        .and_then(|s| s.http_ports.get(&port).copied())
        .unwrap_or(declared);
    // `useClientProtocol` keeps the client's protocol, and then no
    // `h2UpgradePolicy` applies (Istio's rule). The mesh-wide upgrade
    // policy is not sent to agents: Istio's default, DO_NOT_UPGRADE.
    let protocol = match declared {
        AppProtocol::Http2 | AppProtocol::Grpc => Protocol::Http2,
        AppProtocol::Http1 if policy.use_client_protocol && client_http2 => Protocol::Http2,
        AppProtocol::Http1 if policy.upgrades_h2(false) => Protocol::Http2,
        AppProtocol::Http1 => Protocol::Http1,
    };
    Ok(Resolved {
        cluster,
        cluster_id,
        endpoints,
        protocol,
        original_dst: service.clone().filter(|s| s.original_dst),
    })
}

/// Sends a copy of the request to a mirror destination, in the
/// background; its response is dropped. It never delays the request: its
/// body follows what the primary reads.
pub fn mirror(
    ctx: &Arc<ProxyContext>,
    down: &Arc<Downstream>,
    destination: &Destination,
    head: &Head,
    replay: &Replay,
    (timeout, per_try, grpc): (Option<Duration>, Option<Duration>, bool),
) {
    let Ok(resolved) = resolve(ctx, down, destination, head.http2) else {
        return;
    };
    let mut head = head.clone();
    head.authority = shadow_authority(&head.authority);
    let body = replay.follower();
    let (tasks, ctx, down, host) = (
        ctx.tasks.clone(),
        ctx.clone(),
        down.clone(),
        destination.host.clone(),
    );
    tasks.spawn(async move {
        let Some(_request_slot) = resolved.cluster.try_request() else {
            return;
        };
        let Ok(picked) = pick(&resolved, &down, None, &[]) else {
            return;
        };
        let endpoint = &picked.endpoint;
        let policy = resolved.cluster.policy().clone();
        let target = Target {
            pod: &down.pod,
            peer: down.peer,
            endpoint,
            cluster_id: resolved.cluster_id,
            protocol: resolved.protocol,
            tls: policy.tls.as_ref(),
            host: &host,
            limits: &policy.limits,
            client_waits: false,
            attached: None,
        };
        let Ok(mut request) = head.request(resolved.protocol, body) else {
            return;
        };
        // The first attempt's headers, as Envoy's shadow copies them.
        envoy_headers::mark_attempt(
            request.headers_mut(),
            0,
            per_try,
            timeout,
            Duration::ZERO,
            grpc,
        );
        let sent = ctx
            .l7
            .upstreams
            .send(&ctx, &target, &resolved.cluster, request);
        match tokio::time::timeout(timeout.unwrap_or(MIRROR_TIMEOUT), sent).await {
            Ok(Ok((response, _))) => {
                // Read it to its end so the connection can be reused.
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            }
            Ok(Err(err)) => {
                tracing::debug!(upstream = %endpoint.addr, error = %err, "mirror failed")
            }
            Err(_) => tracing::debug!(upstream = %endpoint.addr, "mirror timed out"),
        }
    });
}

/// A request that upgrades the connection (WebSocket, CONNECT): sent on a
/// connection of its own; once the upstream agrees, bytes flow both ways
/// between the app and the upstream until either side closes.
pub async fn upgrade(
    ctx: &ProxyContext,
    down: &Downstream,
    destination: &Destination,
    head: Head,
    downstream: OnUpgrade,
    record: &mut Record,
    grpc: bool,
) -> Response<Body> {
    let resolved = match resolve(ctx, down, destination, false) {
        Ok(resolved) => resolved,
        Err(reply) => return reply.flagged(record).into_response(grpc),
    };
    // An upgrade is a request like any other to the cluster: it takes a
    // unit of `http2MaxRequests` and is balanced by the request's hash.
    let Some(request_slot) = resolved.cluster.try_request() else {
        return LocalReply::overflow().flagged(record).into_response(grpc);
    };
    let (hash, _) = request_hash(resolved.cluster.policy(), &head, down, true);
    let picked = match pick(&resolved, down, hash, &[]) {
        Ok(picked) => picked,
        Err(reply) => return reply.flagged(record).into_response(grpc),
    };
    let endpoint = &picked.endpoint;
    record.attempt(endpoint, ctx);
    let policy = resolved.cluster.policy().clone();
    let target = Target {
        pod: &down.pod,
        peer: down.peer,
        endpoint,
        cluster_id: resolved.cluster_id,
        protocol: Protocol::Http1,
        tls: policy.tls.as_ref(),
        host: &destination.host,
        limits: &policy.limits,
        client_waits: true,
        attached: None,
    };
    // Upgrade headers go through as they are: this hop is the upgrade.
    let mut request = match head.request(Protocol::Http1, body::empty()) {
        Ok(mut request) => {
            envoy_headers::mark_attempt(
                request.headers_mut(),
                0,
                None,
                None,
                Duration::ZERO,
                false,
            );
            request
        }
        Err(_) => return LocalReply::no_route().flagged(record).into_response(grpc),
    };
    for name in [http::header::CONNECTION, http::header::UPGRADE] {
        if let Some(value) = head.headers.get(&name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    let (mut response, tracked, local) = match ctx
        .l7
        .upstreams
        .send_upgrade(ctx, &target, &resolved.cluster, request)
        .await
    {
        Ok(answered) => answered,
        Err(UpstreamError::Overflow) => {
            return LocalReply::overflow().flagged(record).into_response(grpc);
        }
        Err(err) => {
            tracing::info!(upstream = %endpoint.addr, error = %err, "upgrade: upstream connect failed");
            let failed = AttemptResult::LocalOriginFailure;
            resolved
                .cluster
                .report(endpoint.addr, failed, Instant::now());
            return LocalReply::connect_failure()
                .flagged(record)
                .into_response(grpc);
        }
    };
    let answered = AttemptResult::Status(response.status().as_u16());
    resolved
        .cluster
        .report(endpoint.addr, answered, Instant::now());
    record.went_on(local);
    let agreed = response.status() == StatusCode::SWITCHING_PROTOCOLS
        || (head.method == http::Method::CONNECT && response.status().is_success());
    // The upgraded connection is an active request on its endpoint, and
    // in the cluster, for as long as it lasts; a refused upgrade until its
    // answer's body ends.
    let in_flight = InFlight::new(request_slot, picked);
    if !agreed {
        record.hold(in_flight);
    } else {
        let upstream = hyper::upgrade::on(&mut response);
        ctx.tasks.spawn(async move {
            let _in_flight = in_flight;
            let (Ok(down_io), Ok(up_io)) = tokio::join!(downstream, upstream) else {
                tracing::debug!("upgrade: one side did not complete");
                return;
            };
            let mut down_io = TokioIo::new(down_io);
            let mut up_io = TokioIo::new(up_io);
            let relay = tokio::io::copy_bidirectional(&mut down_io, &mut up_io);
            // Closed (both sides dropped) if a policy change denies it.
            let ended = match &tracked {
                Some(tracked) => tracked.relay(relay).await,
                None => relay.await,
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "upgraded connection ended");
            }
        });
    }
    let (parts, incoming) = response.into_parts();
    Response::from_parts(parts, body::boxed(incoming))
}

impl LocalReply {
    /// Records the reply's flag.
    fn flagged(self, record: &mut Record) -> LocalReply {
        if let Some(flag) = self.flag {
            record.flags.set(flag);
        }
        self
    }
}
