//! Upstream HTTP connections: from a client pod to one endpoint, HTTP/1.1
//! or HTTP/2, kept and reused across requests (and across the pod's app
//! connections). Each runs over what the endpoint needs:
//!
//! * a mesh workload on another node: a CONNECT stream on the pooled HBONE
//!   connection to its 15008 (the destination's agent delivers it, with
//!   its identity checks and policy, exactly as for L4 traffic);
//! * a mesh workload on this node: a delivery connection straight into the
//!   pod, after its policy allowed the client (no TLS hop);
//! * anything else: TCP from the client pod's namespace, with TLS when the
//!   DestinationRule originates it.
//!
//! Envoy's connection-pool limits apply per cluster: a request that finds
//! no ready connection is pending (while a connection is made for it, or
//! while it waits for one when it may not open one), or overflows (503,
//! `UO`) when too many are already pending.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;

use super::{
    body::{Body, BoxError},
    cluster::{Cluster, Endpoint, LimitGuard, PoolLimits, TlsOrigination},
    tls::{TlsError, TlsOriginator},
};
use crate::metrics::waits::Wait;
use crate::proxy::{
    PodContext, ProxyContext,
    open::Tracked,
    outbound::{OutboundError, connect_from_pod, open_tunnel},
    same_node::{SameNode, connect_same_node},
    tunnel_io::TunnelIo,
};

mod h2_conn;
mod stream;

use h2_conn::{H2Conn, H2Stream, StreamBody};
pub use stream::UpstreamIo;
use stream::revoked;

/// The HTTP version spoken to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Where one request goes.
pub struct Target<'a> {
    /// The client pod: connections leave from its namespace and address.
    pub pod: &'a Arc<PodContext>,
    /// The app's address, for the HBONE `forwarded` header.
    pub peer: SocketAddr,
    pub endpoint: &'a Endpoint,
    /// The cluster state this request counts against (its connections
    /// are its own).
    pub cluster_id: u64,
    pub protocol: Protocol,
    /// TLS to originate (DestinationRule `tls` SIMPLE or MUTUAL).
    pub tls: Option<&'a TlsOrigination>,
    /// The destination's host name: the TLS server name unless `tls.sni`.
    pub host: &'a str,
    pub limits: &'a PoolLimits,
    /// Whether the client pod waits for this request: its waits are
    /// recorded ([`crate::metrics::waits`]); not for a mirror.
    pub client_waits: bool,
    /// Set once the request has a connection to the endpoint (when
    /// Envoy attaches the host to it): from then on, a route timeout that
    /// cuts it counts against the endpoint.
    pub attached: Option<&'a AtomicBool>,
}

/// Why a request could not be sent, or got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: ConnectError,
    },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("too many connections and pending requests (connection pool limits)")]
    Overflow,
    #[error("the upstream refused the stream")]
    RefusedStream,
    /// The TLS peer refused us after our side of the handshake was done
    /// (TLS 1.3: a client certificate the server did not accept shows up
    /// with the first read). A failure to connect, as Envoy counts it.
    #[error("TLS with the destination: {0}")]
    TlsRefused(String),
    #[error("the upstream connection ended before the response: {0}")]
    Reset(hyper::Error),
}

/// How connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    cluster: u64,
    src: u64,
    addr: SocketAddr,
    protocol: Protocol,
    /// TLS origination settings, as text (rare: only egress to TLS hosts).
    tls: Option<String>,
}

/// An idle HTTP/1.1 connection.
struct IdleH1 {
    send: http1::SendRequest<Body>,
    local: Option<SocketAddr>,
    requests: u32,
    since: Instant,
    opened: Instant,
}

#[derive(Default)]
struct Slot {
    /// How long a connection may stay idle (the cluster's policy).
    idle_timeout: Option<Duration>,
    idle: Vec<IdleH1>,
    h2: Vec<Arc<H2Conn>>,
    /// Woken when a connection comes back or closes.
    changed: Arc<Notify>,
}

/// A request's waits, recorded into its client pod's histograms once it
/// is answered: `upstream_connect` from `send` to the connection it went
/// on being ready, `first_byte` from then to the response's head.
struct RequestWaits<'a> {
    pod: &'a PodContext,
    /// [`Target::attached`].
    attached: Option<&'a AtomicBool>,
    /// When `send` was called (monotonic ns); `0`: not recorded.
    since_ns: u64,
    /// When the last connection tried was ready (a kept HTTP/1.1
    /// connection found closed is replaced: the last one counts).
    ready_ns: u64,
}

impl RequestWaits<'_> {
    fn ready(&mut self) {
        if let Some(attached) = self.attached {
            attached.store(true, Ordering::Relaxed);
        }
        if self.since_ns != 0 {
            self.ready_ns = crate::sys::monotonic_ns();
        }
    }

    fn answered(&self) {
        if self.since_ns != 0 && self.ready_ns != 0 {
            let waits = &self.pod.waits;
            waits.record(
                Wait::UpstreamConnect,
                self.ready_ns.saturating_sub(self.since_ns),
            );
            waits.record_since(Wait::FirstByte, self.ready_ns);
        }
    }
}

/// The node's upstream HTTP connections.
#[derive(Default)]
pub struct Upstreams {
    slots: Mutex<HashMap<Key, Slot>>,
    /// Cluster states replaced or dropped: their connections are not
    /// kept when their requests end.
    retired: Mutex<std::collections::HashSet<u64>>,
    /// TLS origination's client configs, also for TCP ports
    /// (`proxy/outbound.rs`).
    pub(crate) tls: TlsOriginator,
}

/// How often a pending request looks again for a free connection slot in
/// its cluster (a slot freed by another endpoint's connection wakes nobody
/// here).
const PENDING_RECHECK: Duration = Duration::from_millis(50);

impl Upstreams {
    /// Sends `request` to the target, on an idle or shared connection, or
    /// on a new one within the cluster's limits. Records the client pod's
    /// waits: for a connection, then for the response's head
    /// ([`crate::metrics::waits`]). With the response, the local address
    /// of the connection it came on (the access log's
    /// `%UPSTREAM_LOCAL_ADDRESS%`: the client pod's IP and a port; for
    /// HBONE, the pooled connection's to the destination's 15008; none for
    /// a same-node HTTP port, handed over in the process).
    pub async fn send(
        self: &Arc<Self>,
        ctx: &ProxyContext,
        target: &Target<'_>,
        cluster: &Cluster,
        request: Request<Body>,
    ) -> Result<(Response<Body>, Option<SocketAddr>), UpstreamError> {
        let mut waited = RequestWaits {
            pod: target.pod,
            attached: target.attached,
            since_ns: match ctx.metrics.waits_on() && target.client_waits {
                true => crate::sys::monotonic_ns(),
                false => 0,
            },
            ready_ns: 0,
        };
        let key = Key {
            cluster: target.cluster_id,
            src: target.pod.netns_cookie,
            addr: target.endpoint.addr,
            protocol: target.protocol,
            tls: target.tls.map(|tls| format!("{tls:?}")),
        };
        match target.protocol {
            Protocol::Http1 => {
                self.send_h1(ctx, target, cluster, key, request, &mut waited)
                    .await
            }
            Protocol::Http2 => {
                self.send_h2(ctx, target, cluster, key, request, &mut waited)
                    .await
            }
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        ctx: &ProxyContext,
        target: &Target<'_>,
        cluster: &Cluster,
        key: Key,
        mut request: Request<Body>,
        waited: &mut RequestWaits<'_>,
    ) -> Result<(Response<Body>, Option<SocketAddr>), UpstreamError> {
        let mut resends = 0;
        let (conn, response) = loop {
            let (mut conn, kept) = self.h1_connection(ctx, target, cluster, &key).await?;
            waited.ready();
            conn.requests += 1;
            match conn.send.try_send_request(request).await {
                Ok(response) => {
                    waited.answered();
                    break (conn, response);
                }
                Err(mut err) => match err.take_message() {
                    // A kept connection the peer closed (idle, or
                    // draining) before the request went out: it never
                    // left, so it goes again on another connection.
                    Some(unsent) if kept && resends < MAX_RESENDS => {
                        resends += 1;
                        request = unsent;
                    }
                    _ => return Err(classify(err.into_error())),
                },
            }
        };
        let max = target.limits.max_requests_per_connection;
        let reusable = max == 0 || conn.requests < max;
        let local = conn.local;
        let (parts, incoming) = response.into_parts();
        let body = ReturnToPool {
            inner: incoming,
            conn: reusable.then_some(conn),
            pool: self.clone(),
            key,
            idle_timeout: target.limits.idle_timeout,
            ended: false,
        };
        Ok((Response::from_parts(parts, super::body::boxed(body)), local))
    }

    /// A kept HTTP/1.1 connection to `key` (`true`), or a new one.
    async fn h1_connection(
        self: &Arc<Self>,
        ctx: &ProxyContext,
        target: &Target<'_>,
        cluster: &Cluster,
        key: &Key,
    ) -> Result<(IdleH1, bool), UpstreamError> {
        let mut pending: Option<LimitGuard> = None;
        loop {
            if let Some(mut idle) = self.take_idle(key, target.limits) {
                // A kept connection the peer closed meanwhile fails here.
                if idle.send.ready().await.is_ok() {
                    return Ok((idle, true));
                }
                continue;
            }
            // No ready connection: the request is pending (Envoy counts
            // it against `http1MaxPendingRequests` while a connection is
            // made for it, too).
            if pending.is_none() {
                pending = Some(cluster.try_pending().ok_or(UpstreamError::Overflow)?);
            }
            if let Some(guard) = cluster.try_connection() {
                let (send, local) = self.connect_h1(ctx, target, key, guard).await?;
                let conn = IdleH1 {
                    send,
                    local,
                    requests: 0,
                    since: Instant::now(),
                    opened: Instant::now(),
                };
                return Ok((conn, false));
            }
            self.wait_for_change(key).await;
        }
    }

    async fn send_h2(
        self: &Arc<Self>,
        ctx: &ProxyContext,
        target: &Target<'_>,
        cluster: &Cluster,
        key: Key,
        request: Request<Body>,
        waited: &mut RequestWaits<'_>,
    ) -> Result<(Response<Body>, Option<SocketAddr>), UpstreamError> {
        let mut pending: Option<LimitGuard> = None;
        let (mut send, local, stream) = loop {
            if let Some(shared) = self.shared_h2(&key, target.limits) {
                break shared;
            }
            // Pending, as for HTTP/1.1, while a connection is made.
            if pending.is_none() {
                pending = Some(cluster.try_pending().ok_or(UpstreamError::Overflow)?);
            }
            if let Some(guard) = cluster.try_connection() {
                let conn = self.connect_h2(ctx, target, &key, guard).await?;
                if self.is_retired(key.cluster) {
                    // Its cluster state was dropped meanwhile: the
                    // connection serves this request and is not kept.
                    let stream = H2Stream::start(&conn);
                    break (conn.send.clone(), conn.local, stream);
                }
                self.slot(&key, |slot| {
                    slot.idle_timeout = Some(target.limits.idle_timeout);
                    slot.h2.push(conn);
                });
                continue;
            }
            self.wait_for_change(&key).await;
        };
        drop(pending);
        send.ready().await.map_err(classify)?;
        waited.ready();
        let response = send.send_request(request).await.map_err(classify)?;
        waited.answered();
        let response = response.map(|inner| {
            super::body::boxed(StreamBody {
                inner,
                _stream: stream,
            })
        });
        Ok((response, local))
    }

    /// Sends a request that upgrades the connection (WebSocket, CONNECT)
    /// on a connection of its own, never pooled. With the response, the
    /// connection's registration with the open connections, if it has one
    /// (to a same-node pod's non-HTTP port): whoever relays the upgraded
    /// connection closes it when a policy change revokes it; and the
    /// connection's local address, as [`Upstreams::send`] gives it.
    pub async fn send_upgrade(
        &self,
        ctx: &ProxyContext,
        target: &Target<'_>,
        cluster: &Cluster,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Tracked>, Option<SocketAddr>), UpstreamError> {
        let guard = cluster.try_connection().ok_or(UpstreamError::Overflow)?;
        let mut io = self.connect(ctx, target).await?;
        let tracked = io.take_tracked();
        let local = io.local_addr();
        let (mut send, conn) = http1::Builder::new()
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|err| UpstreamError::Connect {
                addr: target.endpoint.addr,
                source: ConnectError::Handshake(err),
            })?;
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(error = %err, "upgraded upstream connection ended");
            }
        });
        let response = send.send_request(request).await.map_err(classify)?;
        Ok((response, tracked, local))
    }

    fn slot<T>(&self, key: &Key, f: impl FnOnce(&mut Slot) -> T) -> T {
        let mut slots = self.slots.lock().expect("upstream lock");
        f(slots.entry(key.clone()).or_default())
    }

    fn take_idle(&self, key: &Key, limits: &PoolLimits) -> Option<IdleH1> {
        let mut slots = self.slots.lock().expect("upstream lock");
        let slot = slots.get_mut(key)?;
        while let Some(idle) = slot.idle.pop() {
            if !idle.send.is_closed()
                && idle.since.elapsed() < limits.idle_timeout
                && !too_old(idle.opened, limits)
            {
                return Some(idle);
            }
        }
        None
    }

    fn shared_h2(
        &self,
        key: &Key,
        limits: &PoolLimits,
    ) -> Option<(http2::SendRequest<Body>, Option<SocketAddr>, H2Stream)> {
        let max_requests = limits.max_requests_per_connection;
        let mut slots = self.slots.lock().expect("upstream lock");
        let slot = slots.get_mut(key)?;
        slot.h2.retain(|c| {
            !c.send.is_closed()
                && !c.retired.load(Ordering::Acquire)
                && !too_old(c.opened, limits)
                && !c.idle_for(limits.idle_timeout)
        });
        let conn = slot.h2.first()?;
        let stream = H2Stream::start(conn);
        let served = conn.requests.fetch_add(1, Ordering::AcqRel) + 1;
        if max_requests != 0 && served >= max_requests {
            conn.retired.store(true, Ordering::Release);
        }
        Some((conn.send.clone(), conn.local, stream))
    }

    /// Closes the idle connections of a cluster state that was replaced;
    /// the busy ones close when their requests end.
    pub fn retire(&self, cluster: u64) {
        self.retired.lock().expect("retired lock").insert(cluster);
        self.slots
            .lock()
            .expect("upstream lock")
            .retain(|key, _| key.cluster != cluster);
    }

    fn is_retired(&self, cluster: u64) -> bool {
        self.retired
            .lock()
            .expect("retired lock")
            .contains(&cluster)
    }

    /// Drops closed connections and those idle past their cluster's idle
    /// timeout, and slots left empty.
    pub fn sweep(&self) {
        let mut slots = self.slots.lock().expect("upstream lock");
        slots.retain(|_, slot| {
            let timeout = slot.idle_timeout.unwrap_or(Duration::MAX);
            slot.idle
                .retain(|c| !c.send.is_closed() && c.since.elapsed() < timeout);
            slot.h2
                .retain(|c| !c.send.is_closed() && !c.idle_for(timeout));
            !slot.idle.is_empty() || !slot.h2.is_empty() || Arc::strong_count(&slot.changed) > 1
        });
    }

    fn put_back(&self, key: Key, conn: IdleH1, idle_timeout: Duration) {
        if self.is_retired(key.cluster) {
            return;
        }
        let mut slots = self.slots.lock().expect("upstream lock");
        let slot = slots.entry(key).or_default();
        slot.idle_timeout = Some(idle_timeout);
        slot.idle.push(IdleH1 {
            since: Instant::now(),
            ..conn
        });
        slot.changed.notify_one();
    }

    async fn wait_for_change(&self, key: &Key) {
        let changed = self.slot(key, |slot| slot.changed.clone());
        let _ = tokio::time::timeout(PENDING_RECHECK, changed.notified()).await;
    }

    fn changed(&self, key: &Key) -> Arc<Notify> {
        self.slot(key, |slot| slot.changed.clone())
    }

    async fn connect_h1(
        &self,
        ctx: &ProxyContext,
        target: &Target<'_>,
        key: &Key,
        guard: LimitGuard,
    ) -> Result<(http1::SendRequest<Body>, Option<SocketAddr>), UpstreamError> {
        let mut io = self.connect(ctx, target).await?;
        let tracked = io.take_tracked();
        let local = io.local_addr();
        let (send, conn) = http1::Builder::new()
            .max_buf_size(MAX_HEADERS_BYTES)
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|err| UpstreamError::Connect {
                addr: target.endpoint.addr,
                source: ConnectError::Handshake(err),
            })?;
        let changed = self.changed(key);
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                ended = conn => if let Err(err) = ended {
                    tracing::debug!(error = %err, "upstream HTTP/1.1 connection ended");
                },
                // Dropping the connection closes it: its requests fail,
                // the next ones are authorized on a new connection.
                () = revoked(tracked) => {}
            }
            changed.notify_one();
        });
        Ok((send, local))
    }

    async fn connect_h2(
        &self,
        ctx: &ProxyContext,
        target: &Target<'_>,
        key: &Key,
        guard: LimitGuard,
    ) -> Result<Arc<H2Conn>, UpstreamError> {
        let mut io = self.connect(ctx, target).await?;
        let tracked = io.take_tracked();
        let local = io.local_addr();
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .initial_stream_window_size(crate::proxy::hbone::STREAM_WINDOW)
            .initial_connection_window_size(crate::proxy::hbone::CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADERS_BYTES as u32);
        let (send, conn) = builder
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|err| UpstreamError::Connect {
                addr: target.endpoint.addr,
                source: ConnectError::Handshake(err),
            })?;
        let changed = self.changed(key);
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                ended = conn => if let Err(err) = ended {
                    tracing::debug!(error = %err, "upstream HTTP/2 connection ended");
                },
                () = revoked(tracked) => {}
            }
            changed.notify_waiters();
        });
        Ok(Arc::new(H2Conn {
            send,
            local,
            opened: Instant::now(),
            requests: Default::default(),
            retired: AtomicBool::new(false),
            active: AtomicU32::new(0),
            used: AtomicU64::new(0),
        }))
    }

    /// A byte stream to the endpoint, within the connect timeout.
    async fn connect(
        &self,
        ctx: &ProxyContext,
        target: &Target<'_>,
    ) -> Result<UpstreamIo, UpstreamError> {
        let addr = target.endpoint.addr;
        let timeout = target
            .limits
            .connect_timeout
            .unwrap_or(ctx.limits.connect_timeout);
        match tokio::time::timeout(timeout, self.connect_io(ctx, target)).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
            Err(_) => Err(UpstreamError::ConnectTimeout { addr, timeout }),
        }
    }

    async fn connect_io(
        &self,
        ctx: &ProxyContext,
        target: &Target<'_>,
    ) -> Result<UpstreamIo, ConnectError> {
        let addr = target.endpoint.addr;
        match &target.endpoint.workload {
            Some(workload) if workload.hbone => {
                if let Some(local) = ctx.local_pods.get(addr.ip()) {
                    return Ok(
                        match connect_same_node(
                            target.pod,
                            &local,
                            ctx,
                            addr,
                            target.limits.connect_timeout,
                        )
                        .await?
                        {
                            SameNode::App(delivered, tracked) => {
                                UpstreamIo::Local(delivered, Some(tracked))
                            }
                            SameNode::Http(duplex) => UpstreamIo::LocalHttp(duplex),
                        },
                    );
                }
                let (stream, _) = open_tunnel(
                    None,
                    target.peer,
                    target.pod,
                    ctx,
                    workload,
                    addr,
                    None,
                    None,
                )
                .await?;
                Ok(UpstreamIo::Tunnel(TunnelIo::from(stream)))
            }
            _ => {
                let tcp = connect_from_pod(target.pod, addr).await?;
                match target.tls {
                    Some(tls) => {
                        let stream = self
                            .tls
                            .connect(tcp, tls, target.host, Some(target.protocol))
                            .await?;
                        Ok(UpstreamIo::Tls(Box::new(stream)))
                    }
                    None => Ok(UpstreamIo::Tcp(tcp)),
                }
            }
        }
    }
}

/// Past the pool's `maxConnectionDuration`: not used for new requests.
fn too_old(opened: Instant, limits: &PoolLimits) -> bool {
    limits
        .max_connection_duration
        .is_some_and(|max| opened.elapsed() >= max)
}

/// Largest response head (HTTP/1.1) or header list (HTTP/2) accepted from
/// an upstream: Envoy's default of 60 KiB, plus room for the request line.
pub const MAX_HEADERS_BYTES: usize = 64 * 1024;

/// Turns a client error into what retries and the access log need.
/// How many times a request that never left is sent again on another
/// kept connection.
const MAX_RESENDS: u32 = 2;

fn classify(err: hyper::Error) -> UpstreamError {
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return UpstreamError::RefusedStream;
        }
        let tls = cause
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(tls) = tls {
            return UpstreamError::TlsRefused(tls.to_string());
        }
        source = cause.source();
    }
    UpstreamError::Reset(err)
}

/// A response body that gives its HTTP/1.1 connection back to the pool
/// once the response has been read to its end.
struct ReturnToPool {
    inner: Incoming,
    conn: Option<IdleH1>,
    pool: Arc<Upstreams>,
    key: Key,
    idle_timeout: Duration,
    ended: bool,
}

impl ReturnToPool {
    fn give_back(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .put_back(self.key.clone(), conn, self.idle_timeout);
        }
    }
}

impl HttpBody for ReturnToPool {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                self.ended = true;
                self.give_back();
            }
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ReturnToPool {
    fn drop(&mut self) {
        // A response without a body may never be polled.
        if !self.ended && self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
