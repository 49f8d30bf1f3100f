//! Inbound plaintext on the pod's `127.0.0.1:15006`: connections to any
//! other port of an enrolled pod, steered here by the sk_lookup program.
//! The accepted socket's local address is the original destination and its
//! peer the real client; the connection is delivered to the app from that
//! client address.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpStream;

use super::{
    PodContext, ProxyContext, delivery, limits,
    open::Scope,
    record::{Arrival, ConnectionRecord, Failure, Moved, NotRelayed},
};
use crate::{
    access_log::{Cluster, Side},
    metrics::traffic::{SecurityPolicy, TcpRecord},
    policy::Connection,
};

/// One steered connection, from accept to close.
pub(super) async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    pod: Arc<PodContext>,
    ctx: Arc<ProxyContext>,
) {
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
    let protocol = pod.http_port(&ctx, target.port());
    let http = protocol.is_some();
    let mut policies = pod.policies(&ctx);
    if http {
        policies.retain(|p| p.is_peer_authentication());
    }
    let not_relayed = || NotRelayed {
        pod: &pod,
        ctx: &ctx,
        client: peer,
        local: target,
        client_identity: None,
        arrival: Arrival::Plaintext,
    };
    if let Err(reason) = pod.authorize_with(&ctx, &conn, &policies) {
        not_relayed().refused(&reason);
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
            tls: false,
            cluster: Default::default(),
            connect_timeout: None,
            grpc_port: protocol == Some(crate::state::AppProtocol::Grpc),
        };
        // Boxed, so that a plaintext L4 connection's task does not carry
        // the L7 server's state inline for its whole life.
        let served = Box::pin(async {
            crate::l7::inbound::serve(stream, inbound, ctx.clone()).await;
            Ok(())
        });
        let _ = tracked.relay(served).await;
        return;
    }
    let started = std::time::Instant::now();
    let app = match delivery::connect(&pod, &ctx, peer.ip(), target, None).await {
        Ok(app) => app,
        Err(err) => {
            tracing::info!(src.addr = %peer, %target, error = %err, "delivery to the app failed");
            not_relayed().undelivered(&err);
            return super::outbound::reset(stream);
        }
    };
    let upstream_local = app.stream.local_addr().ok();
    let record = pod.inbound_record(&ctx, peer, None, target.port(), SecurityPolicy::none);
    let progress = limits::Progress::default().counting(
        record.as_ref().map(TcpRecord::bytes),
        limits::Forward::FromClient,
    );
    let relay = crate::sys::splice::relay(&stream, &app.stream, &progress);
    let result = tracked
        .relay(limits::relay_until_idle(&ctx, &progress, relay))
        .await;
    let result = result
        .map(|(from_client, to_client)| Moved {
            from_client,
            to_client,
        })
        .map_err(|err| Failure::relay(&err));
    ConnectionRecord {
        side: Side::Server,
        workload: &pod.workload,
        started,
        client: peer,
        local: target,
        upstream: target,
        upstream_local,
        client_identity: None,
        upstream_workload: None,
        protocol: "TCP",
        tls: false,
        cluster: Cluster::Inbound(target.port()),
        metrics: record,
        span: None,
        same_node_server: None,
    }
    .finish(result);
}
