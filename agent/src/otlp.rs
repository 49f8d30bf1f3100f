//! Sending OTLP over gRPC to the collectors the mesh config names: trace
//! spans ([`crate::trace`]) and access-log records (`envoyOtelAls`,
//! [`crate::access_log::otel`]); and, the same way, access-log entries
//! to Envoy's gRPC access-log service (`envoyHttpAls`, `envoyTcpAls`,
//! [`crate::access_log::als`]). What is sent goes into a bounded queue
//! (full: the item is dropped and counted; a request never waits for a
//! collector); one task batches the items per provider and sends each
//! batch as one `Export` request, one at a time per provider (see
//! [`run`]).
//!
//! A collector is named by a hostname, `<namespace>/<hostname>` or an IP
//! and a port; it is looked up in the workload store when a batch is
//! sent, so that a collector that moves is followed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::{
    sync::{mpsc, oneshot},
    task::{self, JoinSet},
};
use tonic::transport::{Channel, Endpoint};

use crate::state::WorkloadStore;

/// Items waiting to be taken by the task, across providers; and items
/// waiting for a provider's send in flight.
const QUEUE: usize = 4096;
/// A batch is sent when it has this many items (a request carries at
/// most this many)...
const MAX_BATCH: usize = 512;
/// ...or this long after its first item.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Export failures are logged at most this often per provider.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A provider's collector: where its batches go.
pub trait Collector: Send + Sync + 'static {
    /// The provider's name: batches are per provider.
    fn provider(&self) -> &str;
    /// The collector's host (a hostname, `<namespace>/<hostname>` or an
    /// IP) and port.
    fn address(&self) -> (&str, u16);
}

/// What an exporter sends: spans, log records, or access-log entries for
/// Envoy's access-log service; with what every send of it shares.
pub trait Signal: Send + Sync + 'static {
    type Collector: Collector;
    type Item: Send + 'static;
    type Request: Send + 'static;
    /// What an item is, for the agent's log ("spans").
    const ITEMS: &'static str;
    /// One request carrying `items`.
    fn request(items: Vec<Self::Item>) -> Self::Request;
    /// Sends `request` over `channel`, to `collector` at `addr`.
    fn export(
        &self,
        channel: Channel,
        collector: &Self::Collector,
        addr: SocketAddr,
        request: Self::Request,
    ) -> impl Future<Output = Result<(), tonic::Status>> + Send;
}

/// Counts, for the agent's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Items a collector accepted.
    pub exported: AtomicU64,
    /// Items dropped because the queue was full, or [`QUEUE`] items of
    /// the provider already waited for its collector.
    pub dropped: AtomicU64,
    /// Items lost to a failed export (no endpoint, refused, timed out).
    pub failed: AtomicU64,
}

impl Stats {
    /// [exported, dropped, failed].
    pub fn snapshot(&self) -> [u64; 3] {
        [
            self.exported.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        ]
    }
}

/// An item on its way, with where it goes.
type Queued<S> = (Arc<<S as Signal>::Collector>, <S as Signal>::Item);

/// A request to send everything waiting; answered when it is sent.
type Flush = oneshot::Sender<()>;

/// The task's ends of the item and flush queues.
type Receivers<S> = (mpsc::Receiver<Queued<S>>, mpsc::Receiver<Flush>);

/// The queue's sending end; the task starts with the first item.
pub struct Exporter<S: Signal> {
    queue: mpsc::Sender<Queued<S>>,
    flushes: mpsc::Sender<Flush>,
    /// The task's ends of the queues, until it starts.
    receivers: Mutex<Option<Receivers<S>>>,
    started: AtomicBool,
    store: Arc<WorkloadStore>,
    signal: Arc<S>,
    pub stats: Arc<Stats>,
}

impl<S: Signal + Default> Exporter<S> {
    pub fn new(store: Arc<WorkloadStore>) -> Exporter<S> {
        Exporter::with(store, S::default())
    }
}

impl<S: Signal> Exporter<S> {
    /// An exporter of `signal`'s items.
    pub fn with(store: Arc<WorkloadStore>, signal: S) -> Exporter<S> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (flushes, flush_receiver) = mpsc::channel(4);
        Exporter {
            queue,
            flushes,
            receivers: Mutex::new(Some((receiver, flush_receiver))),
            started: AtomicBool::new(false),
            store,
            signal: Arc::new(signal),
            stats: Arc::default(),
        }
    }

    /// Queues `item` for `collector`; never waits. Call from within the
    /// runtime.
    pub fn submit(&self, collector: Arc<S::Collector>, item: S::Item) {
        if !self.started.load(Ordering::Acquire) {
            self.start();
        }
        if self.queue.try_send((collector, item)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts the task, on the caller's runtime, unless it runs.
    fn start(&self) {
        let Some((items, flushes)) = self.receivers.lock().expect("exporter lock").take() else {
            return;
        };
        let shared = Arc::new(Shared {
            signal: self.signal.clone(),
            store: self.store.clone(),
            stats: self.stats.clone(),
            channels: Mutex::default(),
            warned: Mutex::default(),
        });
        tokio::spawn(run::<S>(shared, items, flushes));
        self.started.store(true, Ordering::Release);
    }

    /// Sends what is queued now, without waiting for the batches' time,
    /// and waits until it is sent (or failed) or `within` has passed (at
    /// exit: the last second's items would be lost).
    pub async fn flush(&self, within: Duration) {
        if !self.started.load(Ordering::Acquire) {
            // Nothing was ever queued.
            return;
        }
        let (done, sent) = oneshot::channel();
        let _ = tokio::time::timeout(within, async {
            if self.flushes.send(done).await.is_ok() {
                let _ = sent.await;
            }
        })
        .await;
    }
}

/// The task's state that its sends share.
struct Shared<S> {
    signal: Arc<S>,
    store: Arc<WorkloadStore>,
    stats: Arc<Stats>,
    channels: Mutex<HashMap<SocketAddr, Channel>>,
    warned: Mutex<HashMap<String, Instant>>,
}

/// Items for one provider, waiting to be sent.
struct Batch<S: Signal> {
    collector: Arc<S::Collector>,
    since: Instant,
    items: Vec<S::Item>,
}

/// Batches items per provider and sends each provider's batches one at a
/// time, providers side by side: a collector that is slow or silent
/// (each send may wait [`EXPORT_TIMEOUT`]) holds up its own provider
/// only. While a provider's send is in flight its items wait, up to
/// [`QUEUE`] of them (a burst fits, as it fits the queue), and go
/// [`MAX_BATCH`] at a time once the send ends; beyond that, they are
/// dropped and counted, so that memory stays bounded whatever the
/// collector does.
///
/// A flush takes what is queued when it comes, sends every batch at
/// once (a provider's after its send in flight, if any) and answers when
/// none is left.
async fn run<S: Signal>(
    shared: Arc<Shared<S>>,
    mut receiver: mpsc::Receiver<Queued<S>>,
    mut flushes: mpsc::Receiver<Flush>,
) {
    let mut batches: HashMap<String, Batch<S>> = HashMap::new();
    // The sends in flight: each task's provider.
    let mut in_flight: HashMap<task::Id, String> = HashMap::new();
    let mut sending: JoinSet<()> = JoinSet::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Starts the send of `name`'s batch (its first MAX_BATCH items), if
    // it has one and no send of it is in flight.
    let start = |name: &str,
                 batches: &mut HashMap<String, Batch<S>>,
                 in_flight: &mut HashMap<task::Id, String>,
                 sending: &mut JoinSet<()>| {
        if in_flight.values().any(|n| n == name) {
            return;
        }
        let batch = match batches.get_mut(name) {
            None => return,
            Some(waiting) if waiting.items.len() > MAX_BATCH => Batch {
                collector: waiting.collector.clone(),
                since: waiting.since,
                items: waiting.items.drain(..MAX_BATCH).collect(),
            },
            Some(_) => batches.remove(name).expect("just found"),
        };
        let shared = shared.clone();
        let task = sending.spawn(async move { send::<S>(&shared, batch).await });
        in_flight.insert(task.id(), name.to_string());
    };
    // The provider whose send ended (or failed to run).
    let ended = |done: Result<(task::Id, ()), task::JoinError>,
                 in_flight: &mut HashMap<task::Id, String>| {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => e.id(),
        };
        in_flight.remove(&id)
    };
    loop {
        tokio::select! {
            received = receiver.recv() => {
                let Some(queued) = received else { break };
                if let Some(full) = add(&mut batches, queued, &shared.stats) {
                    start(&full, &mut batches, &mut in_flight, &mut sending);
                }
            }
            _ = tick.tick() => {
                let due: Vec<String> = batches
                    .iter()
                    .filter(|(_, b)| b.since.elapsed() >= FLUSH_EVERY)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in due {
                    start(&name, &mut batches, &mut in_flight, &mut sending);
                }
            }
            Some(done) = sending.join_next_with_id(), if !sending.is_empty() => {
                // A full or due batch waited for this send.
                if let Some(name) = ended(done, &mut in_flight)
                    && batches.get(&name).is_some_and(|b| {
                        b.items.len() >= MAX_BATCH || b.since.elapsed() >= FLUSH_EVERY
                    })
                {
                    start(&name, &mut batches, &mut in_flight, &mut sending);
                }
            }
            Some(flush) = flushes.recv() => {
                // What is queued now, then every batch, each after its
                // provider's send in flight.
                while let Ok(queued) = receiver.try_recv() {
                    if let Some(full) = add(&mut batches, queued, &shared.stats) {
                        start(&full, &mut batches, &mut in_flight, &mut sending);
                    }
                }
                while !(batches.is_empty() && sending.is_empty()) {
                    let waiting: Vec<String> = batches.keys().cloned().collect();
                    for name in waiting {
                        start(&name, &mut batches, &mut in_flight, &mut sending);
                    }
                    if let Some(done) = sending.join_next_with_id().await {
                        ended(done, &mut in_flight);
                    }
                }
                let _ = flush.send(());
            }
        }
    }
}

/// Adds an item to its provider's batch; the provider's name when the
/// batch is full. An item beyond [`QUEUE`] waiting for the provider's
/// send in flight is dropped and counted.
fn add<S: Signal>(
    batches: &mut HashMap<String, Batch<S>>,
    (collector, item): Queued<S>,
    stats: &Stats,
) -> Option<String> {
    let name = collector.provider();
    let batch = match batches.get_mut(name) {
        Some(batch) => batch,
        None => batches.entry(name.to_string()).or_insert_with(|| Batch {
            collector: collector.clone(),
            since: Instant::now(),
            items: Vec::new(),
        }),
    };
    if batch.items.len() >= QUEUE {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    batch.items.push(item);
    // The newest provider settings win (a mesh config change).
    batch.collector = collector.clone();
    (batch.items.len() >= MAX_BATCH).then(|| collector.provider().to_string())
}

async fn send<S: Signal>(shared: &Shared<S>, batch: Batch<S>) {
    let count = batch.items.len() as u64;
    let collector = batch.collector;
    let (host, port) = collector.address();
    let result = match shared.store.service_address(host, port) {
        None => Err(format!("no endpoint of {host}:{port} is known")),
        Some(addr) => export(shared, &collector, addr, S::request(batch.items)).await,
    };
    match result {
        Ok(()) => {
            shared.stats.exported.fetch_add(count, Ordering::Relaxed);
        }
        Err(reason) => {
            shared.stats.failed.fetch_add(count, Ordering::Relaxed);
            let provider = collector.provider();
            let now = Instant::now();
            let mut warned = shared.warned.lock().expect("exporter lock");
            let last = warned.get(provider);
            if last.is_none_or(|at| now.duration_since(*at) >= WARN_EVERY) {
                warned.insert(provider.to_string(), now);
                drop(warned);
                tracing::warn!(provider, lost = count, what = S::ITEMS, %reason, "export failed");
            }
        }
    }
}

async fn export<S: Signal>(
    shared: &Shared<S>,
    collector: &S::Collector,
    addr: SocketAddr,
    request: S::Request,
) -> Result<(), String> {
    let channel = {
        let mut channels = shared.channels.lock().expect("exporter lock");
        match channels.get(&addr) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| e.to_string())?
                    .connect_timeout(EXPORT_TIMEOUT);
                let channel = endpoint.connect_lazy();
                channels.insert(addr, channel.clone());
                channel
            }
        }
    };
    let forget = || {
        // A new connection next time.
        shared.channels.lock().expect("exporter lock").remove(&addr);
    };
    let sent = shared.signal.export(channel, collector, addr, request);
    match tokio::time::timeout(EXPORT_TIMEOUT, sent).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => {
            forget();
            Err(format!("{addr}: {}", status.message()))
        }
        Err(_) => {
            forget();
            Err(format!("{addr}: no answer within {EXPORT_TIMEOUT:?}"))
        }
    }
}

/// A string attribute.
pub fn attribute(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    /// Polls `done` every 20 ms for up to 10 s; fails naming `what`.
    pub async fn wait_for(done: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what} within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
