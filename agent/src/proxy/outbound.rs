//! Outbound: connections a pod's app made, captured by eBPF to the pod's
//! `127.0.0.1:15001`. The proxy learns the original destination from the
//! redirection maps and carries the connection there: over HBONE to a mesh
//! workload, in plaintext to anything else.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use weft_ebpf_common::{HBONE_PORT, OUTBOUND_MARK};

use super::{
    PodContext, ProxyContext, hbone,
    limits::{self, Forward, Stage},
    pool::PoolKey,
    record::{Arrival, ConnectionRecord, Failure, Moved, NotRelayed},
    waited::Waited,
};
use crate::{
    access_log::{Cluster, Side},
    l7::{
        l4::{Hold, Steered},
        reply::Flag,
    },
    metrics::{
        Denial,
        traffic::{
            Peer, Reporter, RequestProtocol, SecurityPolicy, TcpFailure, TcpRecord, TrafficLabels,
        },
    },
    state::{Resolved, Workload},
    sys::sockopt,
    trace::context::SpanContext,
};

/// Closes with a reset, so that the app sees a prompt failure, not a hang.
pub(super) fn reset(stream: TcpStream) {
    // Linger 0: close() sends RST at once (it does not block).
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// One captured connection, from accept to close. `accepted_ns`: when
/// the accept returned ([`sys::monotonic_ns`]; `0`: waits not recorded).
pub(super) async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    accepted_ns: u64,
    pod: Arc<PodContext>,
    ctx: Arc<ProxyContext>,
) {
    let _active = ctx.metrics.track();
    let Some(capture) = ctx
        .redirection
        .take_capture(pod.netns_cookie, peer.port(), accepted_ns)
    else {
        tracing::warn!(src = %pod.name(), src.addr = %peer, "no original destination recorded for this connection; closing");
        ctx.metrics.deny(Denial::NoDestination);
        return reset(stream);
    };
    let original = capture.original_dst;
    let waits = Waited::new(&pod, accepted_ns, capture.syn_sent_ns);
    let started = std::time::Instant::now();
    // `protocol` in the access log: HBONE, same-node (in-process, no TLS
    // hop) or TCP (plaintext passthrough).
    let mut resolved = ctx.store.resolve(original);
    // A VirtualService `tcp`/`tls` route may send the connection
    // elsewhere, and a DestinationRule picks the endpoint; the connection
    // keeps its place at the cluster (`hold`) while it lives.
    let mut hold = None;
    let mut overflow = false;
    if let Resolved::Workload {
        service: Some(service),
        ..
    }
    | Resolved::NoEndpoints(service) = &resolved
        && let Some(steered) = Box::pin(crate::l7::l4::steer(
            &ctx,
            &pod,
            &stream,
            original,
            &service.clone(),
        ))
        .await
    {
        match steered {
            Steered::To(to, held) => {
                resolved = to;
                hold = held;
            }
            Steered::Overflow => overflow = true,
        }
    }
    // A ServiceEntry with `resolution: NONE` that neither a route nor a
    // rule steered: the address the app dialed, in plaintext (Envoy's
    // `ORIGINAL_DST` cluster). With either, a connection `steer` left is
    // refused, not sent past them.
    if let Resolved::NoEndpoints(service) = &resolved
        && service.original_dst
        && !ctx.l7.config.steers(&service.key())
    {
        resolved = Resolved::Passthrough {
            addr: service.original_dst_addr(original),
            service: Some(service.clone()),
        };
    }
    let mut waits = waits;
    let outcome = hold.as_deref().map(|h: &Hold| h.outcome.clone());
    if let Some(hold) = hold.as_deref_mut() {
        waits.steered_by(hold);
    }
    let connect_timeout = waits.connect_timeout;
    // Istio's TCP metrics, `reporter="source"` (HTTP ports count requests
    // instead, in the L7 proxy).
    let record = ctx
        .metrics
        .traffic
        .enabled()
        .then(|| source_labels(&pod, &ctx, &resolved, !overflow))
        .flatten()
        .map(|l| {
            let mtls = l.connection_security_policy == SecurityPolicy::mutual_tls;
            // The app's address as a sidecar would see it (its pod's IP,
            // not the loopback address eBPF redirected it through).
            let app = crate::access_log::app_address(peer, &pod.workload);
            let l = l.with_connection_values(Some(original), Some(app), mtls);
            ctx.metrics.traffic.tcp_open(&l)
        });
    // Counted by the relay as the bytes move.
    let counters = record.as_ref().map(TcpRecord::bytes);
    // The service, for the access log's cluster name.
    let via_service = match &resolved {
        Resolved::Workload {
            service: Some(s), ..
        }
        | Resolved::Passthrough {
            service: Some(s), ..
        } => Some(s.clone()),
        // Refused at the rule's `maxConnections` before anything was
        // picked: still the service's cluster.
        Resolved::NoEndpoints(s) if overflow => Some(s.clone()),
        _ => None,
    };
    // The connection's span, when it goes over HBONE and is traced.
    let mut span = None;
    // The paths other than HBONE's relay are boxed (and the tunnel's
    // opening, in `open_tunnel`): inline, the largest of them set the size
    // of every connection's task for its whole life (9.8 KiB; 2.7 KiB
    // boxed, measured with `size_of_val` on the task's future).
    // `tunnelled`: an HBONE tunnel to the destination was opened.
    let mut tunnelled = false;
    // The local address of the connection that carried it.
    let mut upstream_local = None;
    let (result, dst, dst_workload, protocol) = match resolved {
        // The DestinationRule's `maxConnections` are all open.
        _ if overflow => {
            reset(stream);
            (Err(OutboundError::Overflow), original, None, "TCP")
        }
        // A Service port declared HTTP: terminated here, routed per request.
        Resolved::Http { service, protocol } => {
            let ctx = ctx.clone();
            return Box::pin(crate::l7::outbound::serve(
                stream, peer, original, pod, service, protocol, ctx,
            ))
            .await;
        }
        // Both ends on this node: no TLS hop; the destination's policy is
        // enforced here, as its inbound proxy would (per request on an
        // HTTP port).
        Resolved::Workload { workload, addr, .. }
            if workload.hbone
                && let Some(local) = ctx.local_pods.get(addr.ip()) =>
        {
            let result = Box::pin(super::same_node::carry(
                stream,
                peer,
                &pod,
                &local,
                &ctx,
                addr,
                waits,
                counters,
                &mut upstream_local,
            ))
            .await;
            (result, addr, Some(workload), "same-node")
        }
        Resolved::Workload { workload, addr, .. } if workload.hbone => {
            span = ctx.tracer.connection(&pod.workload, || pod.current(&ctx));
            let trace = span.as_ref().map(|s| s.context());
            let opened = open_tunnel(
                Some(&stream),
                peer,
                &pod,
                &ctx,
                &workload,
                addr,
                trace,
                connect_timeout,
            );
            let result = match opened.await {
                Ok((tunnel, early)) => {
                    tunnelled = true;
                    upstream_local = tunnel.local_addr();
                    // The app's first bytes went with the CONNECT.
                    if let Some(counters) = &counters {
                        counters.from_client(early);
                    }
                    let progress = waits
                        .upstream_connected()
                        .counting(counters, Forward::FromClient);
                    let relay = hbone::splice(stream, tunnel, &progress);
                    limits::relay_until_idle(&ctx, &progress, relay)
                        .await
                        .map(|(sent, received)| (sent + early, received))
                        .map_err(OutboundError::from)
                }
                Err(err) => {
                    // Refused or unreachable: the app gets a prompt reset.
                    reset(stream);
                    Err(err)
                }
            };
            (result, addr, Some(workload), "HBONE")
        }
        // Not in the mesh: plaintext, with no identity to prove.
        Resolved::Workload { workload, addr, .. } => {
            let result = Box::pin(super::plain::relay(
                stream,
                &pod,
                &ctx,
                addr,
                waits,
                counters,
                &mut upstream_local,
            ))
            .await;
            (result, addr, Some(workload), "TCP")
        }
        Resolved::Passthrough { addr, .. } => {
            let result = Box::pin(super::plain::relay(
                stream,
                &pod,
                &ctx,
                addr,
                waits,
                counters,
                &mut upstream_local,
            ))
            .await;
            (result, addr, None, "TCP")
        }
        Resolved::NoEndpoints(service) => {
            tracing::warn!(src = %pod.name(), src.addr = %peer, service = %service.hostname, "service has no endpoints; closing");
            ctx.metrics.deny(Denial::NoDestination);
            return reset(stream);
        }
    };
    let mut same_node_server = (protocol == "same-node")
        .then(|| ctx.local_pods.get(dst.ip()))
        .flatten();
    // Refused by a same-node destination's policy, or its app not
    // connected, before anything was relayed: the server's reports are the
    // ones such a connection gets from any client.
    if let (Err(err @ (OutboundError::Denied(_) | OutboundError::Delivery(_))), Some(server)) =
        (&result, &same_node_server)
    {
        let server_side = NotRelayed {
            pod: server,
            ctx: &ctx,
            client: crate::access_log::app_address(peer, &pod.workload),
            local: dst,
            client_identity: Some(&pod.workload.identity),
            arrival: Arrival::SameNode,
        };
        match err {
            OutboundError::Denied(reason) => server_side.refused(reason),
            _ => server_side.undelivered(err),
        }
        same_node_server = None;
    }
    // A connection the cluster's endpoint did not take counts against it
    // (made ones were counted as they were made, by `Waited`).
    if let (Some(outcome), Err(err)) = (&outcome, &result)
        && err.endpoint_failed()
    {
        outcome.report(false);
    }
    let result = result
        .map(|(sent, received)| Moved {
            from_client: sent,
            to_client: received,
        })
        .map_err(|err| {
            match &err {
                // A same-node destination's policy (this agent decided for
                // the server): the rule on the server's line, the client's
                // as a remote client's (`Failure::client_flag`).
                OutboundError::Denied(reason) | OutboundError::Revoked(reason) => Failure {
                    error: err.to_string(),
                    revoked: matches!(err, OutboundError::Revoked(_)),
                    ..Failure::denied(reason)
                },
                _ => Failure::new(
                    match err {
                        OutboundError::Io(_) => Flag::UpstreamTerminated,
                        OutboundError::Overflow => Flag::UpstreamOverflow,
                        _ => Flag::UpstreamConnectFailure,
                    },
                    err.to_string(),
                ),
            }
            .counted_as(err.tcp_failure())
        });
    let span = span.map(|span| {
        let operation = match &via_service {
            Some(s) => format!("{}:{}", s.hostname, original.port()),
            None => original.to_string(),
        };
        (span, operation)
    });
    ConnectionRecord {
        side: Side::Client,
        workload: &pod.workload,
        started,
        client: crate::access_log::app_address(peer, &pod.workload),
        local: original,
        upstream: dst,
        upstream_local,
        client_identity: None,
        upstream_workload: dst_workload.as_ref(),
        protocol,
        tls: tunnelled,
        cluster: match via_service.as_deref() {
            Some(s) => Cluster::Outbound(original.port(), &s.hostname),
            None => Cluster::Passthrough,
        },
        metrics: record,
        span,
        same_node_server: same_node_server.as_deref().map(|p| p.workload.as_ref()),
    }
    .finish(result);
}

/// Istio's labels for a TCP connection `pod` made (`reporter="source"`);
/// `None` for the connections that are not counted as TCP: HTTP ports
/// (counted per request) and services without endpoints (refused).
/// `reached`: false for one refused before an endpoint was picked, which
/// names no destination workload.
fn source_labels(
    pod: &PodContext,
    ctx: &ProxyContext,
    resolved: &Resolved,
    reached: bool,
) -> Option<TrafficLabels> {
    let me = pod.current(ctx);
    let (destination, service, security) = match resolved {
        // Refused before any endpoint was picked (`UO`): the service only.
        Resolved::Workload { service, .. } if !reached => {
            (None, service.as_deref(), SecurityPolicy::unknown)
        }
        Resolved::Workload {
            workload, service, ..
        } => {
            let security = if workload.hbone {
                SecurityPolicy::mutual_tls
            } else {
                SecurityPolicy::unknown
            };
            (Some(workload.as_ref()), service.as_deref(), security)
        }
        Resolved::Passthrough { service, .. } => {
            (None, service.as_deref(), SecurityPolicy::unknown)
        }
        // Refused at `maxConnections` (`UO`), before the service's
        // connections were placed: the service only.
        Resolved::NoEndpoints(service) if !reached => {
            (None, Some(service.as_ref()), SecurityPolicy::unknown)
        }
        Resolved::Http { .. } | Resolved::NoEndpoints(_) => return None,
    };
    Some(TrafficLabels::new(
        Reporter::source,
        Peer::workload(&me),
        destination.map(Peer::workload).unwrap_or_default(),
        service,
        RequestProtocol::tcp,
        security,
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("no certificate for {0} on this node")]
    NoCertificate(String),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot create a socket in the pod's namespace: {0}")]
    Netns(#[from] crate::sys::netns::NetnsError),
    #[error(
        "connecting to {addr}: {source}; maybe a NetworkPolicy blocks port 15008, or the destination node is down"
    )]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {source}; maybe the destination node is overloaded or unreachable")]
    TimedOut {
        addr: SocketAddr,
        source: limits::TimedOut,
    },
    #[error(transparent)]
    Hbone(#[from] hbone::HboneError),
    #[error("the pod has no IP address")]
    NoAddress,
    /// (Which rule is the destination's to log, not the client's.)
    #[error("denied by the destination's policy")]
    Denied(crate::policy::DenyReason),
    #[error("closed: a policy change denies it ({0})")]
    Revoked(crate::policy::DenyReason),
    #[error(transparent)]
    Delivery(#[from] super::delivery::DeliveryError),
    #[error("copying: {0}")]
    Io(#[from] std::io::Error),
    #[error("the DestinationRule's maxConnections are all open")]
    Overflow,
    /// The DestinationRule's TLS settings could not be used here (a file
    /// missing, `credentialName`, a host that is no server name).
    #[error("TLS origination: {0}")]
    TlsConfig(String),
}

impl OutboundError {
    /// How the client's side counts the failure in its TCP metrics, as
    /// ztunnel's `response_flags` name it: the tunnel or connection that
    /// could not be made (a destination's refusal is HBONE's 401, a
    /// `CONNECT` failure to the client); `None` for a connection that was
    /// made and then broke or was closed.
    pub fn tcp_failure(&self) -> Option<TcpFailure> {
        Some(match self {
            OutboundError::NoCertificate(_) | OutboundError::Identity(_) => TcpFailure::Identity,
            // The destination node's 15008 did not answer in time, as a
            // NetworkPolicy that drops it makes it (ztunnel's label); a
            // passthrough's timeout is a plain `CONNECT`.
            OutboundError::Connect { addr, source }
                if addr.port() == HBONE_PORT && source.kind() == std::io::ErrorKind::TimedOut =>
            {
                TcpFailure::NetworkPolicy
            }
            OutboundError::TimedOut { .. } => TcpFailure::NetworkPolicy,
            OutboundError::Tls { .. } => TcpFailure::Tls,
            OutboundError::Hbone(
                hbone::HboneError::Handshake(_) | hbone::HboneError::Connect { .. },
            ) => TcpFailure::H2Handshake,
            OutboundError::Hbone(hbone::HboneError::Refused { .. })
            | OutboundError::Denied(_)
            | OutboundError::Connect { .. }
            | OutboundError::Netns(_)
            | OutboundError::NoAddress
            | OutboundError::Delivery(_) => TcpFailure::Connect,
            OutboundError::Overflow => TcpFailure::Overflow,
            OutboundError::TlsConfig(_) => TcpFailure::Tls,
            OutboundError::Revoked(_) | OutboundError::Io(_) => return None,
        })
    }

    /// Whether the endpoint did not take the connection (refused it, did
    /// not answer, failed its handshake): what outlier detection counts.
    /// Not the client's own failures (no certificate, no socket) nor a
    /// refusal before any endpoint was tried.
    pub(crate) fn endpoint_failed(&self) -> bool {
        match self {
            // The destination's policy refused this client (HBONE's 401,
            // or this agent deciding for a same-node server): the endpoint
            // is healthy, as an Envoy sidecar's RBAC denial comes after a
            // connect that succeeded.
            OutboundError::Hbone(hbone::HboneError::Refused { status, .. }) => !matches!(
                *status,
                http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN
            ),
            OutboundError::Denied(_)
            | OutboundError::NoCertificate(_)
            | OutboundError::Identity(_)
            | OutboundError::Netns(_)
            | OutboundError::NoAddress
            | OutboundError::Overflow
            | OutboundError::TlsConfig(_)
            | OutboundError::Revoked(_)
            | OutboundError::Io(_) => false,
            _ => true,
        }
    }
}

/// A socket in the pod's namespace, marked so eBPF doesn't capture it,
/// connected to `addr`: the pod's own source IP stays on the wire.
pub(crate) async fn connect_from_pod(
    pod: &PodContext,
    addr: SocketAddr,
) -> Result<TcpStream, OutboundError> {
    let socket = pod
        .netns
        .run(|| sockopt::outbound_socket(addr, OUTBOUND_MARK))?
        .map_err(|source| OutboundError::Connect { addr, source })?;
    socket
        .connect(addr)
        .await
        .map_err(|source| OutboundError::Connect { addr, source })
}

/// A CONNECT stream to `target` on a pooled connection to the destination
/// pod's 15008, or on a new one (TLS from the client pod's namespace, with
/// its identity) when none has room. With `app`, its first bytes may go
/// with the CONNECT; returns how many did (see [`connect_stream`]). With
/// `trace`, the CONNECT's `traceparent` is that span (an L4 connection
/// being traced). Within `connect_timeout` (a DestinationRule's), else
/// the agent's.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_tunnel(
    app: Option<&TcpStream>,
    peer: SocketAddr,
    pod: &PodContext,
    ctx: &ProxyContext,
    destination: &Workload,
    target: SocketAddr,
    trace: Option<&SpanContext>,
    connect_timeout: Option<Duration>,
) -> Result<(hbone::H2Stream, u64), OutboundError> {
    let limit = connect_timeout.unwrap_or(ctx.limits.connect_timeout);
    // Boxed: the handshake's state is large and is freed once the tunnel
    // is up, instead of staying in the connection's task for its life.
    let opened = Box::pin(open_tunnel_unbounded(
        app,
        peer,
        pod,
        ctx,
        destination,
        target,
        trace,
    ));
    match limits::bounded(Stage::Connect, limit, opened).await {
        Ok(opened) => opened,
        Err(timed_out) => {
            ctx.metrics.timed_out(Stage::Connect);
            Err(OutboundError::TimedOut {
                addr: SocketAddr::new(target.ip(), HBONE_PORT),
                source: timed_out,
            })
        }
    }
}

/// [`open_tunnel`], however long it takes.
async fn open_tunnel_unbounded(
    app: Option<&TcpStream>,
    peer: SocketAddr,
    pod: &PodContext,
    ctx: &ProxyContext,
    destination: &Workload,
    target: SocketAddr,
    trace: Option<&SpanContext>,
) -> Result<(hbone::H2Stream, u64), OutboundError> {
    let hbone_addr = SocketAddr::new(target.ip(), HBONE_PORT);
    let key = PoolKey {
        src_netns_cookie: pod.netns_cookie,
        dst_identity: destination.identity.clone(),
        dst: hbone_addr,
    };
    let source_ip = pod.workload.ips.first().copied().unwrap_or(peer.ip());
    let headers = request_headers(pod, source_ip, peer.port(), trace);
    let mut early = None;
    // A stream on a pooled connection with room; else one task opens a
    // new connection for the key while the others wait for it (see
    // `Pool::opening`) and then take streams on it.
    let mut opening = None;
    loop {
        if let Some(lease) = ctx.pool.checkout(&key) {
            match connect_stream(
                lease.send_request(),
                target,
                headers.clone(),
                app,
                &mut early,
            )
            .await
            {
                Ok(mut stream) => {
                    stream.lease = Some(lease);
                    return Ok((stream, early_len(&early)));
                }
                // The peer refused the stream: that is the answer.
                Err(err @ hbone::HboneError::Refused { .. }) => return Err(err.into()),
                // The connection broke before the peer could have acted on
                // the stream (or said GOAWAY): never reuse it, try another
                // (with the same bytes).
                Err(err) if early.is_none() || err.unprocessed() => {
                    tracing::debug!(error = %err, "pooled HBONE connection failed; trying another");
                    lease.connection().mark_closed();
                    continue;
                }
                // Broken after the app's bytes may have reached the app:
                // not repeated, the app sees its connection reset.
                Err(err) => {
                    lease.connection().mark_closed();
                    return Err(err.into());
                }
            }
        }
        if opening.is_some() {
            break;
        }
        opening = Some(ctx.pool.opening(&key).lock_owned().await);
    }
    let cert = ctx
        .secrets
        .cached(pod.identity())
        .ok_or_else(|| OutboundError::NoCertificate(pod.identity().to_string()))?;
    let config = ctx
        .tls
        .client(&cert, ctx.trust.roots(), &destination.identity)?;
    let tcp = connect_from_pod(pod, hbone_addr).await?;
    let local = tcp.local_addr().ok();
    let tls_stream = TlsConnector::from(config)
        .connect(ServerName::IpAddress(target.ip().into()), tcp)
        .await
        .map_err(|source| OutboundError::Tls {
            addr: hbone_addr,
            source,
        })?;
    let (send_request, closed) = hbone::client_handshake_watched(tls_stream).await?;
    let lease = ctx.pool.insert(key, send_request, closed, local);
    // Those waiting may take streams on it now.
    drop(opening);
    let mut stream = connect_stream(lease.send_request(), target, headers, app, &mut early).await?;
    stream.lease = Some(lease);
    Ok((stream, early_len(&early)))
}

fn early_len(early: &Option<Bytes>) -> u64 {
    early.as_ref().map_or(0, |bytes| bytes.len() as u64)
}

/// Sends the CONNECT and, when the app speaks before the peer has answered
/// (a client-first protocol such as HTTP), its first bytes right behind it:
/// the request reaches the destination a round trip sooner. The bytes are
/// kept in `early`, to go again if the stream must be retried elsewhere.
async fn connect_stream(
    send_request: SendRequest<Bytes>,
    target: SocketAddr,
    headers: HeaderMap,
    app: Option<&TcpStream>,
    early: &mut Option<Bytes>,
) -> Result<hbone::H2Stream, hbone::HboneError> {
    let mut opening = hbone::open(send_request, target, headers).await?;
    if let Some(bytes) = early {
        opening.send_early(bytes.clone())?;
        return opening.established().await;
    }
    // Nothing to send ahead (the L7 proxy writes its request once the
    // stream is up).
    let Some(app) = app else {
        return opening.established().await;
    };
    let answer = tokio::select! {
        biased;
        answer = &mut opening.response => Some(answer),
        _ = app.readable() => None,
    };
    if let Some(answer) = answer {
        return opening.answered(answer);
    }
    let mut buf = BytesMut::with_capacity(hbone::READ_CHUNK);
    // End of stream or a spurious wake-up: nothing to send early; the
    // relay reads the app from here on.
    if let Ok(n) = app.try_read_buf(&mut buf)
        && n > 0
    {
        let bytes = buf.freeze();
        opening.send_early(bytes.clone())?;
        *early = Some(bytes);
    }
    opening.established().await
}

/// Headers ztunnel sends with CONNECT. `traceparent` is the connection's
/// span when it is traced, else a made-up context marked not sampled.
fn request_headers(
    pod: &PodContext,
    source_ip: std::net::IpAddr,
    source_port: u16,
    trace: Option<&SpanContext>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put(
        "forwarded",
        format!("for=\"{}\"", SocketAddr::new(source_ip, source_port)),
    );
    put(
        "baggage",
        format!(
            "k8s.namespace.name={},k8s.pod.name={},service.name={}",
            pod.workload.namespace, pod.workload.name, pod.workload.name
        ),
    );
    let traceparent = match trace {
        Some(span) => span.traceparent(),
        None => SpanContext {
            trace_id: fastrand::u128(1..),
            span_id: fastrand::u64(1..),
            sampled: false,
        }
        .traceparent(),
    };
    put("traceparent", traceparent);
    headers
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    /// The client side's flag in the TCP metrics, as ztunnel names it.
    #[test]
    fn failures_map_to_ztunnels_flags() {
        let hbone = SocketAddr::from(([10, 0, 0, 2], HBONE_PORT));
        let app = SocketAddr::from(([10, 0, 0, 2], 8080));
        let connect = |addr, kind| OutboundError::Connect {
            addr,
            source: Error::from(kind),
        };
        let cases = [
            (
                connect(hbone, ErrorKind::TimedOut),
                Some(TcpFailure::NetworkPolicy),
            ),
            // A passthrough that timed out is an ordinary failure.
            (connect(app, ErrorKind::TimedOut), Some(TcpFailure::Connect)),
            (
                connect(hbone, ErrorKind::ConnectionRefused),
                Some(TcpFailure::Connect),
            ),
            (
                OutboundError::Tls {
                    addr: hbone,
                    source: Error::from(ErrorKind::InvalidData),
                },
                Some(TcpFailure::Tls),
            ),
            (
                OutboundError::Hbone(hbone::HboneError::Refused {
                    target: app,
                    status: http::StatusCode::UNAUTHORIZED,
                }),
                Some(TcpFailure::Connect),
            ),
            (
                OutboundError::Denied(crate::policy::DenyReason::NoAllowMatch),
                Some(TcpFailure::Connect),
            ),
            (
                OutboundError::NoCertificate("spiffe://cluster.local/ns/a/sa/b".into()),
                Some(TcpFailure::Identity),
            ),
            // Made, then broken or closed: no flag.
            (
                OutboundError::Revoked(crate::policy::DenyReason::NoAllowMatch),
                None,
            ),
            (OutboundError::Io(Error::from(ErrorKind::BrokenPipe)), None),
        ];
        for (err, flag) in cases {
            assert_eq!(err.tcp_failure(), flag, "{err}");
        }
    }
}
