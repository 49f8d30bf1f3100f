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
use crate::{metrics::traffic::TcpBytes, sys};

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
    // otherwise hold the app for the kernel's SYN retries, minutes).
    let limit = waits.connect_timeout.unwrap_or(ctx.limits.connect_timeout);
    let upstream = match limits::bounded(Stage::Connect, limit, connect_from_pod(pod, addr)).await {
        Ok(connected) => connected?,
        Err(timed_out) => {
            ctx.metrics.timed_out(Stage::Connect);
            return Err(OutboundError::Connect {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", timed_out.limit),
                ),
            });
        }
    };
    *upstream_local = upstream.local_addr().ok();
    let originated = waits
        .tls
        .as_ref()
        .and_then(|(cluster, host)| Some((cluster.policy().tls.clone()?, host.clone())));
    let Some((tls, host)) = originated else {
        let progress = waits
            .upstream_connected()
            .counting(counters, Forward::FromClient);
        let relay = sys::splice::relay(&stream, &upstream, &progress);
        return Ok(limits::relay_until_idle(ctx, &progress, relay).await?);
    };
    // The handshake is part of the connect: its failure is the endpoint's.
    let handshake = ctx.l7.upstreams.tls.connect(upstream, &tls, &host, None);
    let upstream = match limits::bounded(Stage::Connect, limit, handshake).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => {
            return Err(OutboundError::Tls {
                addr,
                source: std::io::Error::other(err),
            });
        }
        Err(timed_out) => {
            ctx.metrics.timed_out(Stage::Connect);
            return Err(OutboundError::Tls {
                addr,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, timed_out),
            });
        }
    };
    let progress = waits
        .upstream_connected()
        .counting(counters, Forward::FromClient);
    let relay = copy_both_ways(stream, upstream, &progress);
    Ok(limits::relay_until_idle(ctx, &progress, relay).await?)
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
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        moved(n);
        total += n as u64;
    }
}
