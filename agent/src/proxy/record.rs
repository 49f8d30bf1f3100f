//! What a proxied L4 connection leaves behind when it ends, written in one
//! place whichever listener accepted it (15001, 15008 or 15006): Istio's
//! TCP metrics, the agent's log line, the access log line(s) and the span.
//! Bytes are always counted from the downstream's point of view, as Envoy
//! does: received from the client, sent to it.

use std::{fmt::Display, net::SocketAddr, sync::Arc, time::Instant};

use crate::{
    access_log::{self, Cluster, Side},
    l7::reply::{Flag, Flags},
    metrics::traffic::TcpRecord,
    state::{Identity, Workload},
    trace::{ActiveSpan, TcpEnd},
};

/// The bytes a connection carried.
#[derive(Clone, Copy, Debug, Default)]
pub struct Moved {
    pub from_client: u64,
    pub to_client: u64,
}

/// How a connection failed: the access log's flag and the reason.
pub struct Failure {
    pub flag: Flag,
    pub error: String,
}

impl Failure {
    /// A relay that broke, or that a policy change closed.
    pub fn relay(err: &std::io::Error) -> Failure {
        Failure {
            flag: super::open::end_flag(err),
            error: err.to_string(),
        }
    }
}

/// One connection, as its reports describe it.
pub struct ConnectionRecord<'a> {
    /// The client's side (the app's outbound connection) or the server's.
    pub side: Side,
    /// The pod whose side this is.
    pub workload: &'a Workload,
    pub started: Instant,
    /// The downstream: the app (outbound) or the client (inbound).
    pub client: SocketAddr,
    /// The address the client asked for.
    pub local: SocketAddr,
    /// Where the bytes went.
    pub upstream: SocketAddr,
    /// The client's proven identity (server side, over mutual TLS).
    pub client_identity: Option<&'a Identity>,
    /// The workload the client side chose, when it is one (in the mesh:
    /// the identity it proves).
    pub upstream_workload: Option<&'a Arc<Workload>>,
    /// `HBONE`, `same-node` or `TCP`.
    pub protocol: &'static str,
    /// HBONE's mutual TLS carried it: the server side's inbound, or the
    /// client side's tunnel, once opened (however the relay then ended).
    pub tls: bool,
    pub cluster: Cluster<'a>,
    /// Istio's TCP metrics, opened at accept (`None` when they are off).
    pub metrics: Option<TcpRecord>,
    /// The span, with its operation name, when the connection is traced.
    pub span: Option<(ActiveSpan, String)>,
    /// A same-node connection has no inbound proxy: its destination's
    /// server-side line is written here too.
    pub same_node_server: Option<&'a Workload>,
}

impl ConnectionRecord<'_> {
    /// Writes every report of the connection's end.
    pub fn finish(self, result: Result<Moved, Failure>) {
        self.log_line(&result);
        let moved = result.as_ref().map_or(Moved::default(), |moved| *moved);
        // Its bytes were counted as they moved; this counts it closed.
        drop(self.metrics);
        if let Some((span, operation)) = self.span {
            // The local app's point of view: the client side's app sent
            // what came from the client.
            let (sent, received) = match self.side {
                Side::Client => (moved.from_client, moved.to_client),
                Side::Server => (moved.to_client, moved.from_client),
            };
            let cluster = match self.cluster {
                Cluster::Passthrough => {
                    format!("outbound|{}||{}", self.local.port(), self.local.ip())
                }
                named => named.to_string(),
            };
            span.finish_tcp(TcpEnd {
                operation,
                protocol: self.protocol,
                bytes_sent: sent,
                bytes_received: received,
                upstream_cluster: &cluster,
                peer: Some(match self.side {
                    Side::Client => self.upstream,
                    Side::Server => self.client,
                }),
                error: result.as_ref().err().map(|f| f.error.as_str()),
            });
        }
        let (flags, failure) = match &result {
            Ok(_) => (Flags::default(), None),
            Err(failure) => (
                Flags::from(failure.flag),
                Some(&failure.error as &dyn Display),
            ),
        };
        let mtls = self.protocol != "TCP";
        let line = |side, workload, upstream_workload, cluster, peer_identity| access_log::Tcp {
            side,
            workload,
            started: self.started,
            bytes_received: moved.from_client,
            bytes_sent: moved.to_client,
            upstream_host: Some(self.upstream),
            upstream_workload,
            cluster,
            downstream_local: Some(self.local),
            downstream_remote: Some(self.client),
            peer_identity,
            mtls,
            downstream_tls: self.tls && side == Side::Server,
            upstream_tls: self.tls && side == Side::Client,
            flags,
            failure,
        };
        access_log::tcp(&line(
            self.side,
            self.workload,
            self.upstream_workload,
            self.cluster,
            self.client_identity,
        ));
        // The destination's side of a same-node connection: its upstream
        // is its own app.
        if let Some(server) = self.same_node_server {
            access_log::tcp(&line(
                Side::Server,
                server,
                None,
                Cluster::Inbound(self.upstream.port()),
                Some(&self.workload.identity),
            ));
        }
    }

    /// The agent's own line: debug when the connection ended well.
    fn log_line(&self, result: &Result<Moved, Failure>) {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let side = match self.side {
            Side::Client => "outbound",
            Side::Server => "inbound",
        };
        let src_identity = match self.side {
            Side::Client => Some(&self.workload.identity),
            Side::Server => self.client_identity,
        };
        let dst_identity = match self.side {
            Side::Client => self
                .upstream_workload
                .filter(|w| w.hbone)
                .map(|w| &w.identity),
            Side::Server => Some(&self.workload.identity),
        };
        let src_identity = src_identity.map(ToString::to_string).unwrap_or_default();
        let dst_identity = dst_identity.map(ToString::to_string).unwrap_or_default();
        match result {
            Ok(moved) => tracing::debug!(
                side, src.identity = %src_identity, src.addr = %self.client, dst.identity = %dst_identity,
                dst.original = %self.local, dst = %self.upstream, protocol = self.protocol,
                bytes_received = moved.from_client, bytes_sent = moved.to_client, duration_ms,
                "connection complete"
            ),
            // A failed outbound connection is the app's failure: worth a
            // warning. Inbound, the client often just went away.
            Err(failure) if self.side == Side::Client => tracing::warn!(
                side, src.identity = %src_identity, src.addr = %self.client, dst.identity = %dst_identity,
                dst.original = %self.local, dst = %self.upstream, protocol = self.protocol,
                duration_ms, error = %failure.error, "connection failed"
            ),
            Err(failure) => tracing::info!(
                side, src.identity = %src_identity, src.addr = %self.client, dst.identity = %dst_identity,
                dst.original = %self.local, dst = %self.upstream, protocol = self.protocol,
                duration_ms, error = %failure.error, "connection ended with an error"
            ),
        }
    }
}
