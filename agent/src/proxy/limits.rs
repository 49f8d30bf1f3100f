//! Bounds on the proxy's waits: how long a peer may take over its TLS and
//! HTTP/2 handshake on 15008, how long a connection to a peer agent or to
//! an app may take, how long an L4 connection may stay idle, and how many
//! handshakes one source may hold open at once. A slow or silent peer is cut when its time is up and counted;
//! it never holds a connection slot, memory or anyone else's time beyond
//! that.

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use crate::metrics::{traffic::TcpBytes, waits::Wait};

/// The bounds, from the agent's flags.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client's TLS and HTTP/2 handshake on 15008 (`--handshake-timeout`).
    pub handshake_timeout: Duration,
    /// Connecting to a peer agent's 15008 (TCP, TLS, HTTP/2 and the
    /// CONNECT's answer), or to an app (`--connect-timeout`, Istio's
    /// `connectTimeout`).
    pub connect_timeout: Duration,
    /// An L4 connection that carries no byte either way for this long is
    /// closed (`--idle-timeout`, Istio's TCP `idleTimeout`).
    pub idle_timeout: Duration,
    /// Handshakes one source IP may have in progress on this node's
    /// 15008 listeners (`--max-handshakes-per-source`).
    pub max_handshakes_per_source: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            max_handshakes_per_source: 100,
        }
    }
}

/// The handshakes in progress, by source IP.
#[derive(Debug, Default)]
pub struct Handshakes {
    pending: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

/// One handshake in progress; its slot is freed when this drops.
#[derive(Debug)]
pub struct HandshakePermit {
    pending: Arc<Mutex<HashMap<IpAddr, u32>>>,
    source: IpAddr,
}

impl Handshakes {
    /// A slot for a handshake from `source`, or `None` when it already
    /// has `max` in progress.
    pub fn start(&self, source: IpAddr, max: u32) -> Option<HandshakePermit> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let count = pending.entry(source).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(HandshakePermit {
            pending: self.pending.clone(),
            source,
        })
    }

    /// Handshakes in progress from `source`.
    pub fn in_progress(&self, source: IpAddr) -> u32 {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.get(&source).copied().unwrap_or(0)
    }
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = pending.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.source);
            }
        }
    }
}

/// The wait that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A client's handshake on 15008.
    Handshake,
    /// Connecting to a peer agent's 15008, through the CONNECT's answer.
    Connect,
    /// Connecting to the app.
    Delivery,
    /// An L4 connection that carried nothing.
    Idle,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Handshake,
        Stage::Connect,
        Stage::Delivery,
        Stage::Idle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Handshake => "handshake",
            Stage::Connect => "connect",
            Stage::Delivery => "delivery",
            Stage::Idle => "idle",
        }
    }
}

/// A wait that ran longer than its limit.
#[derive(Debug, thiserror::Error)]
#[error("{} did not finish within {limit:?}", describe(*stage))]
pub struct TimedOut {
    pub stage: Stage,
    pub limit: Duration,
}

fn describe(stage: Stage) -> &'static str {
    match stage {
        Stage::Handshake => "the client's TLS and HTTP/2 handshake",
        Stage::Connect => "connecting to the destination's agent",
        Stage::Delivery => "connecting to the app",
        Stage::Idle => "the connection's idle time",
    }
}

/// Runs `work` for at most `limit`.
pub async fn bounded<T>(
    stage: Stage,
    limit: Duration,
    work: impl Future<Output = T>,
) -> Result<T, TimedOut> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| TimedOut { stage, limit })
}

/// The bytes a relay has moved, either way: what [`until_idle`] watches.
/// Bumped once per chunk moved, read only by the watch. It may also
/// record, into a pod's waits, when the first byte came back, and count
/// the bytes into the connection's Istio TCP metrics as they move.
#[derive(Debug, Default)]
pub struct Progress {
    moved: AtomicU64,
    first_back: Option<FirstBack>,
    counted: Counted,
    /// The connection's own limits, a DestinationRule's.
    limits: RelayLimits,
}

/// A DestinationRule's limits on one relayed connection, as Envoy's TCP
/// proxy applies them (`tcp.idleTimeout`, `tcp.maxConnectionDuration`);
/// `None`: the agent's idle timeout, no limit on the duration.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// `0s` turns the idle timeout off.
    pub idle: Option<Duration>,
    pub max_duration: Option<Duration>,
}

/// Long enough to stand for "never", short enough to add to an instant.
const NEVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Where the first byte back is recorded ([`Wait::FirstByte`]).
#[derive(Debug)]
struct FirstBack {
    pod: Arc<super::PodContext>,
    /// Monotonic ns the wait is counted from: the upstream connected.
    since_ns: u64,
    seen: AtomicBool,
}

/// Which way a relay's first direction (its [`Progress::moved`]) goes,
/// seen from the connection's client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Forward {
    /// From the client: the relay reads the client (outbound, plaintext
    /// inbound, same node).
    #[default]
    FromClient,
    /// To the client: the relay reads the app and writes the tunnel the
    /// client came through (inbound HBONE).
    ToClient,
}

/// The TCP byte counters a relay adds to: one connection's report, or
/// two (a same-node connection's client and server sides).
#[derive(Debug, Default)]
struct Counted {
    forward: Forward,
    into: [Option<TcpBytes>; 2],
}

impl Counted {
    fn add(&self, bytes: usize, forward: bool) {
        let from_client = forward == (self.forward == Forward::FromClient);
        for counters in self.into.iter().flatten() {
            if from_client {
                counters.from_client(bytes as u64);
            } else {
                counters.to_client(bytes as u64);
            }
        }
    }
}

impl Progress {
    /// A progress that records into `pod`'s waits how long after
    /// `since_ns` (monotonic) the first byte came back.
    pub fn first_byte_to(pod: Arc<super::PodContext>, since_ns: u64) -> Progress {
        Progress {
            first_back: Some(FirstBack {
                pod,
                since_ns,
                seen: Default::default(),
            }),
            ..Progress::default()
        }
    }

    /// Under `limits` instead of the agent's.
    pub fn limited(self, limits: RelayLimits) -> Progress {
        Progress { limits, ..self }
    }

    /// Also counts the bytes into `counters` (when traffic metrics are
    /// on), the relay's first direction going `forward`. Up to two sets
    /// of counters, in the same direction.
    pub fn counting(mut self, counters: Option<TcpBytes>, forward: Forward) -> Progress {
        if let Some(counters) = counters {
            debug_assert!(
                self.counted.into[0].is_none() || self.counted.forward == forward,
                "a relay's reports count the same way"
            );
            self.counted.forward = forward;
            let free = self.counted.into.iter_mut().find(|c| c.is_none());
            debug_assert!(free.is_some(), "a relay counts into two reports at most");
            if let Some(free) = free {
                *free = Some(counters);
            }
        }
        self
    }

    /// `bytes` more were moved in the relay's first direction.
    pub fn moved(&self, bytes: usize) {
        self.moved.fetch_add(bytes as u64, Ordering::Relaxed);
        self.counted.add(bytes, true);
    }

    /// `bytes` more were moved back, the other way (from the upstream to
    /// the client, on the client's side).
    pub fn moved_back(&self, bytes: usize) {
        self.moved.fetch_add(bytes as u64, Ordering::Relaxed);
        self.counted.add(bytes, false);
        if let Some(first) = &self.first_back
            && !first.seen.load(Ordering::Relaxed)
            && !first.seen.swap(true, Ordering::Relaxed)
        {
            first
                .pod
                .waits
                .record_since(Wait::FirstByte, first.since_ns);
        }
    }

    fn total(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// Runs `relay`, which reports to `progress`, until it ends, or until
    /// it has moved nothing for `idle` (give or take a quarter: the watch
    /// looks four times per `idle`, and the data path never reads a
    /// clock). Made by [`until_idle`].
    ///
    /// A future of its own, not an `async fn`: an `async fn` keeps the
    /// future it is given twice in its state (the argument, and the local
    /// it is moved into to be polled; rust-lang/rust#62958), and an idle
    /// connection's task holds its relay for its whole life.
    pub struct UntilIdle<'a, F> {
        #[pin]
        relay: F,
        #[pin]
        tick: tokio::time::Sleep,
        every: Duration,
        idle: Duration,
        progress: &'a Progress,
        seen: u64,
        still_since: tokio::time::Instant,
    }
}

/// See [`UntilIdle`].
pub fn until_idle<F: Future>(idle: Duration, progress: &Progress, relay: F) -> UntilIdle<'_, F> {
    let every = (idle / 4).max(Duration::from_millis(5));
    UntilIdle {
        relay,
        tick: tokio::time::sleep(every),
        every,
        idle,
        progress,
        seen: progress.total(),
        still_since: tokio::time::Instant::now(),
    }
}

impl<F: Future> Future for UntilIdle<'_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(done) = this.relay.poll(cx) {
            return Poll::Ready(Ok(done));
        }
        while this.tick.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            let total = this.progress.total();
            if total != *this.seen {
                *this.seen = total;
                *this.still_since = now;
            } else if now.duration_since(*this.still_since) >= *this.idle {
                return Poll::Ready(Err(TimedOut {
                    stage: Stage::Idle,
                    limit: *this.idle,
                }));
            }
            this.tick.as_mut().reset(now + *this.every);
        }
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// [`UntilIdle`] with the agent's `--idle-timeout`: a connection cut
    /// for its idleness is counted (`weft_agent_timeouts_total{stage="idle"}`)
    /// and ends with an error that says so. Made by [`relay_until_idle`].
    pub struct RelayUntilIdle<'a, F> {
        #[pin]
        relay: UntilIdle<'a, F>,
        // The progress's `max_duration`, from the relay's start.
        ended_by: Option<Pin<Box<tokio::time::Sleep>>>,
        ctx: &'a super::ProxyContext,
    }
}

/// See [`RelayUntilIdle`].
pub fn relay_until_idle<'a, T, F>(
    ctx: &'a super::ProxyContext,
    progress: &'a Progress,
    relay: F,
) -> RelayUntilIdle<'a, F>
where
    F: Future<Output = std::io::Result<T>>,
{
    let idle = match progress.limits.idle {
        Some(Duration::ZERO) => NEVER,
        Some(idle) => idle,
        None => ctx.limits.idle_timeout,
    };
    RelayUntilIdle {
        relay: until_idle(idle, progress, relay),
        ended_by: progress
            .limits
            .max_duration
            .map(|limit| Box::pin(tokio::time::sleep(limit.min(NEVER)))),
        ctx,
    }
}

impl<T, F> Future for RelayUntilIdle<'_, F>
where
    F: Future<Output = std::io::Result<T>>,
{
    type Output = std::io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(ended_by) = this.ended_by
            && ended_by.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "closed: the DestinationRule's maxConnectionDuration was reached",
            )));
        }
        Poll::Ready(match std::task::ready!(this.relay.poll(cx)) {
            Ok(done) => done,
            Err(timed_out) => {
                this.ctx.metrics.timed_out(Stage::Idle);
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, timed_out))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_max_handshakes_and_frees_them() {
        let handshakes = Handshakes::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = handshakes.start(a, 2).unwrap();
        let _second = handshakes.start(a, 2).unwrap();
        assert!(
            handshakes.start(a, 2).is_none(),
            "a third from the same source"
        );
        assert!(
            handshakes.start(b, 2).is_some(),
            "another source is not affected"
        );
        drop(first);
        assert_eq!(handshakes.in_progress(a), 1);
        assert!(handshakes.start(a, 2).is_some());
    }

    /// A relay's chunks reach the connection's TCP byte counters as they
    /// move, each direction to its side of the client's view, into both
    /// reports of a same-node connection.
    #[test]
    fn progress_counts_bytes_into_the_tcp_metrics_as_they_move() {
        use crate::metrics::traffic::{
            Peer, Reporter, RequestProtocol, SecurityPolicy, Traffic, TrafficLabels,
        };
        let traffic = Traffic::default();
        let labels = |reporter| {
            TrafficLabels::new(
                reporter,
                Peer::default(),
                Peer::default(),
                None,
                RequestProtocol::tcp,
                SecurityPolicy::mutual_tls,
            )
        };
        let (client, server) = (
            traffic.tcp_open(&labels(Reporter::source)),
            traffic.tcp_open(&labels(Reporter::destination)),
        );
        let both = Progress::default()
            .counting(Some(client.bytes()), Forward::FromClient)
            .counting(Some(server.bytes()), Forward::FromClient);
        both.moved(100);
        both.moved_back(7);
        assert_eq!(client.bytes().counted(), (100, 7));
        assert_eq!(server.bytes().counted(), (100, 7));
        // Inbound HBONE reads the app first: its first direction answers.
        let inbound = traffic.tcp_open(&labels(Reporter::destination));
        let progress = Progress::default().counting(Some(inbound.bytes()), Forward::ToClient);
        progress.moved(40);
        progress.moved_back(2);
        // The destination's series is shared with `server` (same labels).
        assert_eq!(inbound.bytes().counted(), (102, 47));
        assert_eq!(progress.total() + both.total(), 149);
        // Metrics off: only the idle watch's count.
        let off = Progress::default().counting(None, Forward::FromClient);
        off.moved(5);
        assert_eq!(off.total(), 5);
    }

    #[tokio::test]
    async fn a_relay_is_cut_when_it_moves_nothing_and_not_while_it_moves() {
        let idle = Duration::from_millis(80);
        let progress = Progress::default();
        let busy = async {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                progress.moved(1);
            }
            "done"
        };
        assert_eq!(until_idle(idle, &progress, busy).await.unwrap(), "done");
        let err = until_idle(idle, &progress, std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(err.stage, Stage::Idle);
    }

    #[tokio::test]
    async fn a_wait_past_its_limit_is_an_error_naming_it() {
        let err = bounded(
            Stage::Handshake,
            Duration::from_millis(10),
            std::future::pending::<()>(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.stage, Stage::Handshake);
        assert!(
            err.to_string()
                .contains("handshake did not finish within 10ms"),
            "{err}"
        );
        assert_eq!(
            bounded(Stage::Connect, Duration::from_secs(1), async { 7 })
                .await
                .unwrap(),
            7
        );
    }
}
