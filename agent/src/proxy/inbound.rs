//! Inbound HBONE on `<pod IP>:15008`: mutual TLS (the client must present a
//! certificate of this mesh), then one HTTP/2 CONNECT per tunnelled
//! connection, delivered to the app from the client's real IP.

use std::{net::SocketAddr, sync::Arc};

use super::{
    PodContext, ProxyContext, delivery, hbone,
    limits::{self, Stage},
    record::{Arrival, ConnectionRecord, Failure, Moved, NotRelayed},
};
use crate::{
    access_log::{Cluster, Side},
    identity::tls,
    metrics::{
        Denial,
        traffic::{SecurityPolicy, TcpRecord},
    },
    policy::Connection,
    state::Identity,
};
use bytes::Bytes;
use h2::{RecvStream, server::SendResponse};
use http::{Request, Response, StatusCode};
use tokio_rustls::TlsAcceptor;

/// A slot for one more handshake from `peer`: a source flooding 15008
/// with handshakes it never finishes holds at most its share; past it,
/// its connections are closed at once (`None`).
pub(super) fn admit(
    peer: SocketAddr,
    pod: &PodContext,
    ctx: &ProxyContext,
) -> Option<limits::HandshakePermit> {
    let permit = ctx
        .handshakes
        .start(peer.ip(), ctx.limits.max_handshakes_per_source);
    if permit.is_none() {
        ctx.metrics.deny(Denial::HandshakeLimit);
        tracing::debug!(dst = %pod.name(), src.addr = %peer, "HBONE connection refused: too many handshakes in progress from this source");
    }
    permit
}

/// One HBONE connection, from accept to close: its handshake, then its
/// CONNECT streams.
pub(super) async fn handle(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: limits::HandshakePermit,
    pod: Arc<PodContext>,
    ctx: Arc<ProxyContext>,
) {
    let draining = ctx.drain.clone();
    if let Err(err) = connection(stream, peer, permit, pod.clone(), ctx).await {
        if draining.is_cancelled() {
            // Clients leave a connection that said GOAWAY as they please.
            tracing::debug!(dst = %pod.name(), src.addr = %peer, error = %err, "HBONE connection ended while draining");
        } else {
            tracing::warn!(dst = %pod.name(), src.addr = %peer, error = %err, "HBONE connection refused");
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error("no certificate for {0} on this node")]
    NoCertificate(String),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("client certificate: {0}")]
    ClientIdentity(#[from] crate::identity::spiffe::SpiffeError),
    #[error("client {client} is not in this mesh's trust domain {ours}")]
    ForeignTrustDomain { client: String, ours: String },
    #[error("client presented {client}, but the workload at {peer} is {expected}")]
    IdentityMismatch {
        client: String,
        peer: std::net::IpAddr,
        expected: String,
    },
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error(transparent)]
    TimedOut(#[from] limits::TimedOut),
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: limits::HandshakePermit,
    pod: Arc<PodContext>,
    ctx: Arc<ProxyContext>,
) -> Result<(), InboundError> {
    let limit = ctx.limits.handshake_timeout;
    let handshake = limits::bounded(Stage::Handshake, limit, handshake(stream, peer, &pod, &ctx));
    let (mut h2, client, sni) = match handshake.await {
        Ok(done) => done?,
        Err(timed_out) => {
            ctx.metrics.timed_out(Stage::Handshake);
            return Err(timed_out.into());
        }
    };
    let client = Arc::new(client);
    drop(permit);
    let mut draining = false;
    loop {
        let request = tokio::select! {
            request = h2.accept() => request,
            // The agent winds down: a GOAWAY tells the client to open new
            // streams elsewhere; the streams open carry on to their end.
            _ = ctx.drain.cancelled(), if !draining => {
                draining = true;
                h2.graceful_shutdown();
                continue;
            }
        };
        let Some(request) = request else { break };
        let (request, respond) = request?;
        ctx.tasks.spawn(stream_request(
            request,
            respond,
            Peer {
                addr: peer,
                identity: client.clone(),
                sni: sni.clone(),
            },
            pod.clone(),
            ctx.clone(),
        ));
    }
    Ok(())
}

/// A client's connection once authenticated: its HTTP/2 side, its
/// identity and the SNI it asked for.
type Authenticated = (
    h2::server::Connection<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Bytes>,
    Identity,
    Option<Arc<str>>,
);

/// TLS with the client's certificate checked, then HTTP/2's handshake.
async fn handshake(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    pod: &PodContext,
    ctx: &ProxyContext,
) -> Result<Authenticated, InboundError> {
    let cert = ctx
        .secrets
        .cached(pod.identity())
        .ok_or_else(|| InboundError::NoCertificate(pod.identity().to_string()))?;
    let config = ctx.tls.server(&cert, ctx.trust.roots())?;
    let tls_stream = match TlsAcceptor::from(config).accept(stream).await {
        Ok(tls_stream) => tls_stream,
        Err(err) => {
            ctx.metrics.deny(Denial::TlsHandshake);
            return Err(InboundError::Tls(err));
        }
    };
    let client = tls::peer_identity(tls_stream.get_ref().1)?;
    if client.trust_domain != pod.identity().trust_domain {
        ctx.metrics.deny(Denial::ForeignTrustDomain);
        return Err(InboundError::ForeignTrustDomain {
            client: client.to_string(),
            ours: pod.identity().trust_domain.clone(),
        });
    }
    // A mesh workload's connections come from its own address: a
    // certificate used from another workload's address is refused.
    if let Some(workload) = ctx.store.workload_by_ip(peer.ip())
        && workload.identity != client
    {
        ctx.metrics.deny(Denial::IdentityMismatch);
        return Err(InboundError::IdentityMismatch {
            client: client.to_string(),
            peer: peer.ip(),
            expected: workload.identity.to_string(),
        });
    }
    tracing::debug!(client = %client, src.addr = %peer, "HBONE connection authenticated");
    let sni: Option<Arc<str>> = tls_stream.get_ref().1.server_name().map(Arc::from);
    let h2 = hbone::server_builder().handshake(tls_stream).await?;
    Ok((h2, client, sni))
}

/// Answers a CONNECT with 200: the stream, both ways; `None` when the
/// client went away.
fn accept(
    mut responder: SendResponse<Bytes>,
    request: Request<RecvStream>,
    peer: SocketAddr,
) -> Option<hbone::H2Stream> {
    let response = Response::builder()
        .status(StatusCode::OK)
        .body(())
        .expect("static response");
    match responder.send_response(response, false) {
        Ok(send) => Some(hbone::H2Stream {
            send,
            recv: request.into_body(),
            lease: None,
        }),
        Err(err) => {
            tracing::debug!(src.addr = %peer, error = %err, "client went away before the 200");
            None
        }
    }
}

fn respond(mut respond: SendResponse<Bytes>, status: StatusCode) {
    let response = Response::builder()
        .status(status)
        .body(())
        .expect("static response");
    let _ = respond.send_response(response, true);
}

/// The client of an HBONE connection.
struct Peer {
    addr: SocketAddr,
    /// Shared by the connection's streams, and by their policy inputs
    /// and L7 connections: one copy per connection.
    identity: Arc<Identity>,
    /// The SNI of its TLS connection.
    sni: Option<Arc<str>>,
}

async fn stream_request(
    request: Request<RecvStream>,
    responder: SendResponse<Bytes>,
    client: Peer,
    pod: Arc<PodContext>,
    ctx: Arc<ProxyContext>,
) {
    let _active = ctx.metrics.track();
    let Peer {
        addr: peer,
        identity: client,
        sni,
    } = client;
    let target = match hbone::connect_target(request.method(), request.uri(), &pod.workload.ips) {
        Ok(target) => target,
        Err(bad) => {
            tracing::warn!(src.identity = %client, src.addr = %peer, uri = %request.uri(), error = %bad, "HBONE request refused");
            ctx.metrics.deny(Denial::BadTarget);
            return respond(responder, bad.status());
        }
    };
    // An HTTP port: accepted, then authorized per request.
    if let Some(protocol) = pod.http_port(&ctx, target.port()) {
        let Some(tunnel) = accept(responder, request, peer) else {
            return;
        };
        let inbound = crate::l7::inbound::Inbound {
            pod,
            peer,
            target,
            client: Some(client),
            sni: sni.map(|s| s.to_string()),
            tls: true,
            cluster: Default::default(),
            connect_timeout: None,
            grpc_port: protocol == crate::state::AppProtocol::Grpc,
        };
        // Boxed: inline, the L7 server's state would make every L4
        // stream's task as large as itself for the stream's whole life.
        return Box::pin(crate::l7::inbound::serve(
            super::tunnel_io::TunnelIo::from(tunnel),
            inbound,
            ctx.clone(),
        ))
        .await;
    }
    let conn = Connection {
        src_identity: Some(client.clone()),
        src_ip: peer.ip(),
        dst_ip: target.ip(),
        dst_port: target.port(),
    };
    let not_relayed = || NotRelayed {
        pod: &pod,
        ctx: &ctx,
        client: peer,
        local: target,
        client_identity: Some(&client),
        arrival: Arrival::Hbone,
    };
    if let Err(reason) = pod.authorize(&ctx, &conn) {
        respond(responder, StatusCode::UNAUTHORIZED);
        return not_relayed().refused(&reason);
    }
    // Closed if a policy change denies it.
    let tracked = ctx
        .open
        .register(&pod, conn, super::open::Scope::Connection);
    // Delivered from the client's own address: the app sees the real IP.
    let app = match delivery::connect(&pod, &ctx, peer.ip(), target, None).await {
        Ok(app) => app,
        Err(err) => {
            tracing::info!(src.identity = %client, src.addr = %peer, %target, error = %err, "delivery to the app failed");
            respond(responder, StatusCode::SERVICE_UNAVAILABLE);
            return not_relayed().undelivered(&err);
        }
    };
    // Traced when the client traced it (its CONNECT's `traceparent`).
    let span = ctx
        .tracer
        .accepted(&pod.workload, || pod.current(&ctx), request.headers());
    let Some(tunnel) = accept(responder, request, peer) else {
        return;
    };
    let record = pod.inbound_record(
        &ctx,
        peer,
        Some(&client),
        target.port(),
        SecurityPolicy::mutual_tls,
    );
    let started = std::time::Instant::now();
    let upstream_local = app.stream.local_addr().ok();
    // The relay reads the app first: its first direction is the answer.
    let progress = limits::Progress::default().counting(
        record.as_ref().map(TcpRecord::bytes),
        limits::Forward::ToClient,
    );
    let relay = hbone::splice(app.stream, tunnel, &progress);
    let result = tracked
        .relay(limits::relay_until_idle(&ctx, &progress, relay))
        .await;
    let result = result
        .map(|(to_client, from_client)| Moved {
            from_client,
            to_client,
        })
        .map_err(|err| Failure::relay(&err));
    let span = span.map(|span| {
        let operation = crate::trace::served_as(span.workload(), target.port())
            .unwrap_or_else(|| target.to_string());
        (span, operation)
    });
    ConnectionRecord {
        side: Side::Server,
        workload: &pod.workload,
        started,
        client: peer,
        local: target,
        upstream: target,
        upstream_local,
        client_identity: Some(&client),
        upstream_workload: None,
        protocol: "HBONE",
        tls: true,
        cluster: Cluster::Inbound(target.port()),
        metrics: record,
        span,
        same_node_server: None,
    }
    .finish(result);
}
