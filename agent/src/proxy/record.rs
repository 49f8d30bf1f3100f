//! What a proxied L4 connection leaves behind when it ends, written in one
//! place whichever listener accepted it (15001, 15008 or 15006): Istio's
//! TCP metrics, the agent's log line, the access log line(s) and the span.
//! Bytes are always counted from the downstream's point of view, as Envoy
//! does: received from the client, sent to it.

use std::{fmt::Display, net::SocketAddr, sync::Arc, time::Instant};

use super::{PodContext, ProxyContext};
use crate::{
    access_log::{self, Cluster, Side},
    l7::reply::{Flag, Flags},
    metrics::traffic::{SecurityPolicy, TcpFailure, TcpRecord},
    policy::DenyReason,
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
    /// The RBAC policy that refused or closed it, as Envoy's log names it
    /// (the server side's `%CONNECTION_TERMINATION_DETAILS%`, see
    /// `DenyReason::matched_policy`).
    pub denied_rule: Option<String>,
    /// A denial closed a connection that was open (a policy change),
    /// rather than refusing it.
    pub revoked: bool,
    /// Why it was not made, for this side's TCP metrics; `None`: it was
    /// made, and broke.
    pub tcp: Option<TcpFailure>,
}

impl Failure {
    /// A relay that broke, or that a policy change closed.
    pub fn relay(err: &std::io::Error) -> Failure {
        let revoked = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<super::open::RevokedError>());
        match revoked {
            Some(revoked) => Failure {
                error: err.to_string(),
                revoked: true,
                ..Failure::denied(&revoked.0)
            },
            None => Failure::new(super::open::end_flag(err), err.to_string()),
        }
    }

    pub fn new(flag: Flag, error: String) -> Failure {
        Failure {
            flag,
            error,
            denied_rule: None,
            revoked: false,
            tcp: None,
        }
    }

    /// Counted in the TCP metrics as `tcp` (or as merely closed).
    pub fn counted_as(self, tcp: Option<TcpFailure>) -> Failure {
        Failure { tcp, ..self }
    }

    /// The flag of the client's own line of a same-node connection: a
    /// denial as a client on another node sees it, the peer's refusal
    /// (HBONE's 401: `UF`) or its close (`UC`); Envoy's RBAC filters set
    /// no flag of their own (see `Flag::names`).
    pub fn client_flag(&self) -> Flag {
        match self.flag {
            Flag::RbacDenied if self.revoked => Flag::UpstreamTerminated,
            Flag::RbacDenied => Flag::UpstreamConnectFailure,
            flag => flag,
        }
    }

    /// Refused, or closed, by the destination's policies.
    pub fn denied(reason: &DenyReason) -> Failure {
        Failure {
            flag: Flag::RbacDenied,
            error: reason.to_string(),
            denied_rule: Some(reason.matched_policy().to_owned()),
            revoked: false,
            tcp: Some(TcpFailure::Denied),
        }
    }
}

/// How a connection reached its destination's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Over HBONE's mutual TLS.
    Hbone,
    /// From a pod on this node: no TLS hop, the identities checked in
    /// process.
    SameNode,
    /// Plaintext, from outside the mesh.
    Plaintext,
}

impl Arrival {
    fn mtls(self) -> bool {
        self != Arrival::Plaintext
    }

    fn security(self) -> SecurityPolicy {
        match self.mtls() {
            true => SecurityPolicy::mutual_tls,
            false => SecurityPolicy::none,
        }
    }
}

/// A connection the destination's side never relayed: what it reports,
/// through [`NotRelayed::refused`] or [`NotRelayed::undelivered`], is its
/// TCP metrics, opened and closed at once as failed, and its access-log
/// line (no bytes).
pub struct NotRelayed<'a> {
    pub pod: &'a PodContext,
    pub ctx: &'a ProxyContext,
    pub client: SocketAddr,
    /// The address it was for.
    pub local: SocketAddr,
    pub client_identity: Option<&'a Identity>,
    pub arrival: Arrival,
}

impl NotRelayed<'_> {
    /// The destination's policies refused it when it arrived. The line is
    /// the one Envoy's network RBAC filter leaves: no upstream, no bytes,
    /// and the rule that denied it in `%CONNECTION_TERMINATION_DETAILS%`;
    /// the TCP metrics count it opened, then closed and failed with
    /// `DENY`, as ztunnel does. The denial itself has been logged and
    /// counted by `PodContext::authorize`.
    pub fn refused(&self, reason: &DenyReason) {
        self.report(
            TcpFailure::Denied,
            Flag::RbacDenied,
            None,
            None,
            Some(reason.matched_policy()),
        );
    }

    /// Its policies allowed it, but its app could not be connected
    /// (`error`): `UF`, as Envoy logs an upstream it could not connect,
    /// and closed and failed with `CONNECT`, as ztunnel counts it.
    pub fn undelivered(&self, error: &dyn Display) {
        self.report(
            TcpFailure::Connect,
            Flag::UpstreamConnectFailure,
            Some(self.local),
            Some(error),
            None,
        );
    }

    fn report(
        &self,
        failure: TcpFailure,
        flag: Flag,
        upstream_host: Option<SocketAddr>,
        error: Option<&dyn Display>,
        denied_rule: Option<&str>,
    ) {
        if let Some(record) = self.pod.inbound_record(
            self.ctx,
            self.client,
            self.client_identity,
            self.local.port(),
            self.arrival.security(),
        ) {
            record.close(Some(failure));
        }
        access_log::tcp(&access_log::Tcp {
            side: Side::Server,
            workload: &self.pod.workload,
            started: Instant::now(),
            bytes_received: 0,
            bytes_sent: 0,
            upstream_host,
            upstream_local: None,
            upstream_workload: None,
            cluster: Cluster::Inbound(self.local.port()),
            downstream_local: Some(self.local),
            downstream_remote: Some(self.client),
            peer_identity: self.client_identity,
            mtls: self.arrival.mtls(),
            downstream_tls: self.arrival == Arrival::Hbone,
            upstream_tls: false,
            flags: Flags::from(flag),
            failure: error,
            denied_rule,
        });
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
    /// The local address of the connection made to `upstream` (the HBONE
    /// connection's, or the app connection's), when one was made.
    pub upstream_local: Option<SocketAddr>,
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
        if let Some(metrics) = self.metrics {
            metrics.close(result.as_ref().err().and_then(|f| f.tcp));
        }
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
        let (flags, failure, denied_rule) = match &result {
            Ok(_) => (Flags::default(), None, None),
            Err(failure) => (
                Flags::from(failure.flag),
                Some(&failure.error as &dyn Display),
                failure.denied_rule.as_deref(),
            ),
        };
        let client_flags = match &result {
            Err(failure) => Flags::from(failure.client_flag()),
            Ok(_) => flags,
        };
        let mtls = self.protocol != "TCP";
        let line = |side, workload, upstream_workload, cluster, peer_identity| access_log::Tcp {
            side,
            workload,
            started: self.started,
            bytes_received: moved.from_client,
            bytes_sent: moved.to_client,
            upstream_host: Some(self.upstream),
            upstream_local: self.upstream_local,
            upstream_workload,
            cluster,
            downstream_local: Some(self.local),
            downstream_remote: Some(self.client),
            peer_identity,
            mtls,
            downstream_tls: self.tls && side == Side::Server,
            upstream_tls: self.tls && side == Side::Client,
            flags: match side {
                Side::Client => client_flags,
                Side::Server => flags,
            },
            failure,
            // The rule is the server's to name: a same-node client's side
            // knows only that it was refused, as a remote one does.
            denied_rule: denied_rule.filter(|_| side == Side::Server),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_a_policy_closed_names_the_rule() {
        let reason = DenyReason::DeniedBy {
            policy: "db/deny".into(),
            rule: "ns[db]-policy[deny]-rule[1]".into(),
            l7_ignored: Vec::new(),
        };
        let revoked = std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            super::super::open::RevokedError(reason),
        );
        let failure = Failure::relay(&revoked);
        assert_eq!(failure.flag, Flag::RbacDenied);
        assert_eq!(
            failure.denied_rule.as_deref(),
            Some("ns[db]-policy[deny]-rule[1]")
        );
        assert!(failure.error.contains("policy change"), "{}", failure.error);
        let broken = Failure::relay(&std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(broken.flag, Flag::UpstreamTerminated);
        assert_eq!(broken.denied_rule, None);
        // No ALLOW policy matched: no rule to name.
        let none = Failure::denied(&DenyReason::NoAllowMatch);
        assert_eq!(none.denied_rule.as_deref(), Some("none"));
        // A same-node client's own line: refused is UF, closed by a policy
        // change UC, as a client on another node sees them; anything else
        // keeps its flag.
        assert_eq!(
            (
                none.client_flag(),
                failure.client_flag(),
                broken.client_flag()
            ),
            (
                Flag::UpstreamConnectFailure,
                Flag::UpstreamTerminated,
                Flag::UpstreamTerminated
            )
        );
        assert_eq!(
            Failure::new(Flag::UpstreamConnectFailure, "refused".into()).client_flag(),
            Flag::UpstreamConnectFailure
        );
    }
}
