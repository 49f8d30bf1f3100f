//! Inbound plaintext on the pod's `127.0.0.1:15006`: connections to any
//! other port of an enrolled pod, steered here by the sk_lookup program.
//! The accepted socket's local address is the original destination and its
//! peer the real client; the connection is delivered to the app from that
//! client address.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{PodContext, ProxyContext, delivery, limits, open::Scope};
use crate::{metrics::traffic::SecurityPolicy, policy::Connection};

/// Accepts steered connections until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    pod: Arc<PodContext>,
    ctx: Arc<ProxyContext>,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(pod = %pod.name(), error = %err, "inbound plaintext accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // No span per connection: entering one on every poll costs more
        // than the relay; events carry their own context.
        tokio::spawn(handle(stream, peer, pod.clone(), ctx.clone()));
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, pod: Arc<PodContext>, ctx: Arc<ProxyContext>) {
    let _active = ctx.metrics.track();
    let target = match stream.local_addr() {
        Ok(target) => target,
        Err(err) => {
            tracing::warn!(dst = %pod.name(), src.addr = %peer, error = %err, "cannot read the original destination");
            return;
        }
    };
    let conn = Connection {
        src_identity: None,
        src_ip: peer.ip(),
        dst_ip: target.ip(),
        dst_port: target.port(),
    };
    // An HTTP port: mutual TLS required (PeerAuthentication) is decided
    // for the connection, everything else per request.
    let http = pod.http_port(&ctx, target.port()).is_some();
    let mut policies = pod.policies(&ctx);
    if http {
        policies.retain(|p| p.is_peer_authentication());
    }
    if pod.authorize_with(&ctx, &conn, &policies).is_err() {
        // A prompt reset, so the client fails fast and knows.
        return super::outbound::reset(stream);
    }
    // Closed if a policy change denies it: an HTTP connection by its
    // PeerAuthentication (its requests are authorized one by one).
    let scope = match http {
        true => Scope::PeerAuthentication,
        false => Scope::Connection,
    };
    let tracked = ctx.open.register(&pod, conn, scope);
    if http {
        let inbound = crate::l7::inbound::Inbound {
            pod,
            peer,
            target,
            client: None,
            sni: None,
            cluster: Default::default(),
        };
        let served = async {
            crate::l7::inbound::serve(stream, inbound, ctx.clone()).await;
            Ok(())
        };
        let _ = tracked.relay(served).await;
        return;
    }
    let started = std::time::Instant::now();
    let app = match delivery::connect(&pod, &ctx, peer.ip(), target).await {
        Ok(app) => app,
        Err(err) => {
            tracing::info!(src.addr = %peer, %target, error = %err, "delivery to the app failed");
            return super::outbound::reset(stream);
        }
    };
    let record = pod.inbound_record(&ctx, peer.ip(), None, target.port(), SecurityPolicy::none);
    let progress = limits::Progress::default();
    let relay = crate::sys::splice::relay(&stream, &app.stream, &progress);
    let result = tracked
        .relay(limits::relay_until_idle(&ctx, &progress, relay))
        .await;
    if let (Some(record), Ok((from_client, to_client))) = (record, &result) {
        record.close(*from_client, *to_client);
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok((from_client, to_client)) => tracing::debug!(
            src.addr = %peer, dst.identity = %pod.identity(), dst = %target, protocol = "TCP",
            bytes_received = from_client, bytes_sent = to_client, duration_ms,
            "inbound connection complete"
        ),
        Err(err) => tracing::info!(
            src.addr = %peer, dst.identity = %pod.identity(), dst = %target, protocol = "TCP",
            duration_ms, error = %err, "inbound connection ended with an error"
        ),
    }
    let ((from_client, to_client), flags) = match &result {
        Ok(moved) => (*moved, Default::default()),
        Err(err) => ((0, 0), super::open::end_flag(err).into()),
    };
    crate::access_log::tcp(&crate::access_log::Tcp {
        side: crate::access_log::Side::Server,
        workload: &pod.workload,
        started,
        bytes_received: from_client,
        bytes_sent: to_client,
        upstream_host: Some(target),
        cluster: crate::access_log::Cluster::Inbound(target.port()),
        downstream_local: Some(target),
        downstream_remote: Some(peer),
        peer_identity: None,
        mtls: false,
        flags,
        failure: result
            .as_ref()
            .err()
            .map(|err| err as &dyn std::fmt::Display),
    });
}
