//! Connections to destinations without HBONE (outside the mesh, or a
//! workload not enrolled): the pod's own socket, so the pod's address
//! stays on the wire, in plaintext, or in the TLS its DestinationRule
//! originates (`tls.mode: SIMPLE` or `MUTUAL`, as Envoy originates it on
//! a TCP cluster: no ALPN).

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    PodContext, ProxyContext,
    limits::{self, Forward, Progress, Stage},
    outbound::{OutboundError, connect_from_pod},
    waited::Waited,
};
use crate::{l7::tls::TlsError, metrics::traffic::TcpBytes, sys};

/// Relays `stream` to `addr` until both ends are done; returns (bytes
/// sent, bytes received).
pub(super) async fn relay(
    stream: TcpStream,
    pod: &PodContext,
    ctx: &ProxyContext,
    addr: SocketAddr,
    waits: Waited,
    counters: Option<TcpBytes>,
    upstream_local: &mut Option<SocketAddr>,
) -> Result<(u64, u64), OutboundError> {
    // Bounded, as Envoy bounds every connect (a blackholed address would
    // otherwise hold the app for the kernel's SYN retries, minutes). One
    // deadline covers the TLS handshake too, as Envoy's connect timer
    // stops only when the TLS socket says it is connected.
    let limit = waits.connect_timeout.unwrap_or(ctx.limits.connect_timeout);
    let deadline = tokio::time::Instant::now() + limit;
    let timed_out = |ctx: &ProxyContext| {
        ctx.metrics.timed_out(Stage::Connect);
        OutboundError::Connect {
            addr,
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            ),
        }
    };
    let upstream = match tokio::time::timeout_at(deadline, connect_from_pod(pod, addr)).await {
        Ok(connected) => connected?,
        Err(_) => return Err(timed_out(ctx)),
    };
    *upstream_local = upstream.local_addr().ok();
    if waits.tls.is_none() {
        let progress = waits
            .upstream_connected()
            .counting(counters, Forward::FromClient);
        let relay = sys::splice::relay(&stream, &upstream, &progress);
        return Ok(limits::relay_until_idle(ctx, &progress, relay).await?);
    }
    // Boxed: the handshake's state stays out of the plaintext relay's
    // future.
    Box::pin(async move {
        let Some((cluster, host)) = &waits.tls else {
            unreachable!("checked above");
        };
        let Some(tls) = cluster.policy().tls.as_ref() else {
            return Err(OutboundError::TlsConfig(
                "the DestinationRule no longer originates TLS".into(),
            ));
        };
        let handshake = ctx.l7.upstreams.tls.connect(upstream, tls, host, None);
        let upstream = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(upstream)) => upstream,
            // The endpoint's failure (outlier detection counts it).
            Ok(Err(TlsError::Handshake(source))) => {
                return Err(OutboundError::Tls { addr, source });
            }
            // This agent's settings: not the endpoint's.
            Ok(Err(err)) => return Err(OutboundError::TlsConfig(err.to_string())),
            Err(_) => return Err(timed_out(ctx)),
        };
        let progress = waits
            .upstream_connected()
            .counting(counters, Forward::FromClient);
        let relay = copy_both_ways(stream, upstream, &progress);
        Ok(limits::relay_until_idle(ctx, &progress, relay).await?)
    })
    .await
}

/// Moves bytes both ways between the app's connection and `upstream`
/// (a TLS stream: no splice) until both directions are done, carrying
/// each side's end to the other; every chunk is reported to `progress`.
async fn copy_both_ways(
    app: TcpStream,
    upstream: impl AsyncRead + AsyncWrite,
    progress: &Progress,
) -> std::io::Result<(u64, u64)> {
    let (mut from_app, mut to_app) = app.into_split();
    let (mut from_upstream, mut to_upstream) = tokio::io::split(upstream);
    tokio::try_join!(
        async {
            let sent = copy(&mut from_app, &mut to_upstream, |n| progress.moved(n)).await?;
            to_upstream.shutdown().await?;
            Ok(sent)
        },
        async {
            let received =
                copy(&mut from_upstream, &mut to_app, |n| progress.moved_back(n)).await?;
            to_app.shutdown().await?;
            Ok(received)
        },
    )
}

async fn copy(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    moved: impl Fn(usize),
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closed without `close_notify` (many do): its
            // stream ended, as Envoy's TCP proxy takes it.
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(err) => return Err(err),
        };
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        moved(n);
        total += n as u64;
    }
}
