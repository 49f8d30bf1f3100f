//! Both ends on this node: a captured connection carried into a
//! destination pod of the same agent without the TLS hop. The agent does
//! what the destination's inbound proxy would: its policy decides the
//! connection (an HTTP port's requests go through its HTTP side, one by
//! one), and the delivery comes from the client pod's own address.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpStream;

use super::{
    PodContext, ProxyContext, delivery,
    limits::{self, Forward},
    open,
    outbound::{OutboundError, reset},
    waited::Waited,
};
use crate::{
    metrics::traffic::{SecurityPolicy, TcpBytes, TcpFailure, TcpRecord},
    sys,
};

/// Carries a connection into a destination pod on this node, from the
/// client pod's address ([`connect_same_node`]), counting its bytes into
/// the client side's `counters` and the destination side's own; the
/// delivery's local address goes to `upstream_local`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn carry(
    stream: TcpStream,
    peer: SocketAddr,
    pod: &PodContext,
    destination: &Arc<PodContext>,
    ctx: &ProxyContext,
    target: SocketAddr,
    waits: Waited,
    counters: Option<TcpBytes>,
    upstream_local: &mut Option<SocketAddr>,
) -> Result<(u64, u64), OutboundError> {
    let connect_timeout = waits.connect_timeout;
    match connect_same_node(pod, destination, ctx, target, connect_timeout).await {
        Ok(SameNode::App(app, tracked)) => {
            *upstream_local = app.stream.local_addr().ok();
            // The destination's side of the metrics, as its inbound proxy
            // would report them: from the client pod's address (as the
            // connection is delivered, `connect_same_node`) and the app's
            // port.
            let client = pod.current(ctx);
            let source_ip = client.ips.first().copied().unwrap_or(target.ip());
            let record = destination.inbound_record(
                ctx,
                SocketAddr::new(source_ip, peer.port()),
                Some(&client.identity),
                target.port(),
                SecurityPolicy::mutual_tls,
            );
            let progress = waits
                .upstream_connected()
                .counting(counters, Forward::FromClient)
                .counting(record.as_ref().map(TcpRecord::bytes), Forward::FromClient);
            let relay = sys::splice::relay(&stream, &app.stream, &progress);
            let moved = tokio::select! {
                moved = limits::relay_until_idle(ctx, &progress, relay) => moved?,
                reason = tracked.revoked() => {
                    // Closed by the destination's policy: its side's DENY.
                    if let Some(record) = record {
                        record.close(Some(TcpFailure::Denied));
                    }
                    return Err(OutboundError::Revoked(reason));
                }
            };
            drop(record);
            Ok(moved)
        }
        Ok(SameNode::Http(mut http)) => {
            // Requests are counted by the destination's HTTP side; the
            // first byte back is not watched here.
            drop(waits.upstream_connected());
            let mut stream = CountedStream {
                stream,
                progress: limits::Progress::default().counting(counters, Forward::FromClient),
            };
            Ok(tokio::io::copy_bidirectional(&mut stream, &mut http).await?)
        }
        Err(err) => {
            reset(stream);
            Err(err)
        }
    }
}

/// The client's connection, reporting what is read from it (the relay's
/// first direction) and written to it (back) to a [`limits::Progress`],
/// for a relay that reports no progress of its own (`copy_bidirectional`).
struct CountedStream {
    stream: TcpStream,
    progress: limits::Progress,
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.progress.moved(read);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            self.progress.moved_back(*n);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Where a same-node connection goes.
pub(crate) enum SameNode {
    /// Straight to the app: the port is not HTTP, and the destination's
    /// policy allowed the connection. It is registered with the open
    /// connections: `Tracked::revoked` resolves when a policy change denies
    /// it (as the destination's inbound proxy would close it).
    App(delivery::Delivered, open::Tracked),
    /// Into the destination's HTTP side ([`crate::l7::inbound`]), which
    /// decides each request as it does for HBONE.
    Http(tokio::io::DuplexStream),
}

/// How much an in-memory same-node HTTP connection buffers each way.
const SAME_NODE_HTTP_BUFFER: usize = 64 * 1024;

/// A connection into `destination`, a pod on this node, from the client
/// pod's address: what the destination's inbound proxy would do, without
/// the TLS hop. To an HTTP port, through the destination's HTTP side; to
/// any other port, straight to the app if the destination's policy allows
/// the connection; either way the app is connected to within
/// `connect_timeout` (the client's DestinationRule's: this connect is the
/// client's upstream connect), else the agent's.
pub(crate) async fn connect_same_node(
    pod: &PodContext,
    destination: &Arc<PodContext>,
    ctx: &ProxyContext,
    target: SocketAddr,
    connect_timeout: Option<Duration>,
) -> Result<SameNode, OutboundError> {
    let source_ip = pod
        .workload
        .ips
        .first()
        .copied()
        .ok_or(OutboundError::NoAddress)?;
    if let Some(protocol) = destination.http_port(ctx, target.port()) {
        let (client, server) = tokio::io::duplex(SAME_NODE_HTTP_BUFFER);
        let inbound = crate::l7::inbound::Inbound {
            pod: destination.clone(),
            peer: SocketAddr::new(source_ip, 0),
            target,
            client: Some(Arc::new(pod.identity().clone())),
            sni: None,
            tls: false,
            cluster: Default::default(),
            connect_timeout,
            grpc_port: protocol == crate::state::AppProtocol::Grpc,
        };
        ctx.tasks
            .spawn(crate::l7::inbound::serve(server, inbound, ctx.shared()));
        return Ok(SameNode::Http(client));
    }
    let conn = crate::policy::Connection {
        src_identity: Some(Arc::new(pod.identity().clone())),
        src_ip: source_ip,
        dst_ip: target.ip(),
        dst_port: target.port(),
    };
    if let Err(reason) = destination.authorize(ctx, &conn) {
        return Err(OutboundError::Denied(reason));
    }
    // Registered before the connect, so that a policy change while it is
    // under way reaches it (it unregisters if the connect fails).
    let tracked = ctx
        .open
        .register(destination, conn, open::Scope::Connection);
    let delivered = delivery::connect(destination, ctx, source_ip, target, connect_timeout).await?;
    Ok(SameNode::App(delivered, tracked))
}
