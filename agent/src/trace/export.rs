//! Span export over OTLP/gRPC. Finished spans go into a bounded queue
//! (full: the span is dropped and counted; a request never waits for the
//! collector); one task batches them per provider and sends each batch as
//! an `ExportTraceServiceRequest`, grouped by the workload that made them
//! (one OTLP resource per workload, `service.name` as Istio names it).
//!
//! The OpenTelemetry SDK's tracer has one resource per provider, which
//! does not fit a node proxy that reports for every pod on its node, so
//! the agent builds OTLP's messages itself (`opentelemetry-proto`) and
//! uses its generated tonic client.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::policy::Provider;
use crate::state::WorkloadStore;

/// Spans waiting to be sent, across providers.
const QUEUE: usize = 4096;
/// A batch is sent when it has this many spans...
const MAX_BATCH: usize = 512;
/// ...or this long after its first span.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Export failures are logged at most this often per provider.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// One finished span on its way to a provider.
pub struct Finished {
    pub provider: Arc<Provider>,
    /// The workload's OTLP resource attributes.
    pub resource: Arc<Vec<KeyValue>>,
    pub span: Span,
}

/// Counts, for the agent's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Spans a collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans lost to a failed export (no endpoint, refused, timed out).
    pub failed: AtomicU64,
}

/// The queue's sending end; the task starts with the first span.
pub struct Exporter {
    queue: mpsc::Sender<Finished>,
    receiver: Mutex<Option<mpsc::Receiver<Finished>>>,
    store: Arc<WorkloadStore>,
    pub stats: Arc<Stats>,
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

impl Exporter {
    pub fn new(store: Arc<WorkloadStore>) -> Exporter {
        let (queue, receiver) = mpsc::channel(QUEUE);
        Exporter {
            queue,
            receiver: Mutex::new(Some(receiver)),
            store,
            stats: Arc::default(),
        }
    }

    /// Queues a span; never waits. Call from within the runtime.
    pub fn submit(&self, span: Finished) {
        if let Some(receiver) = self.receiver.lock().expect("exporter lock").take() {
            let task = Task {
                store: self.store.clone(),
                stats: self.stats.clone(),
                clients: HashMap::new(),
                warned: HashMap::new(),
            };
            tokio::spawn(task.run(receiver));
        }
        if self.queue.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Task {
    store: Arc<WorkloadStore>,
    stats: Arc<Stats>,
    clients: HashMap<SocketAddr, TraceServiceClient<Channel>>,
    warned: HashMap<String, Instant>,
}

/// Spans for one provider, waiting to be sent.
struct Batch {
    provider: Arc<Provider>,
    since: Instant,
    spans: Vec<Finished>,
}

impl Task {
    async fn run(mut self, mut receiver: mpsc::Receiver<Finished>) {
        let mut batches: HashMap<String, Batch> = HashMap::new();
        let mut tick = tokio::time::interval(FLUSH_EVERY / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = receiver.recv() => {
                    let Some(finished) = received else { break };
                    let name = finished.provider.name.clone();
                    let batch = batches.entry(name.clone()).or_insert_with(|| Batch {
                        provider: finished.provider.clone(),
                        since: Instant::now(),
                        spans: Vec::new(),
                    });
                    // The newest provider settings win (a mesh config change).
                    batch.provider = finished.provider.clone();
                    batch.spans.push(finished);
                    if batch.spans.len() >= MAX_BATCH
                        && let Some(batch) = batches.remove(&name)
                    {
                        self.send(batch).await;
                    }
                }
                _ = tick.tick() => {
                    let due: Vec<String> = batches
                        .iter()
                        .filter(|(_, b)| b.since.elapsed() >= FLUSH_EVERY)
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in due {
                        if let Some(batch) = batches.remove(&name) {
                            self.send(batch).await;
                        }
                    }
                }
            }
        }
    }

    async fn send(&mut self, batch: Batch) {
        let count = batch.spans.len() as u64;
        let provider = batch.provider.clone();
        let result = match self.store.service_address(&provider.service, provider.port) {
            None => Err(format!(
                "no endpoint of {}:{} is known",
                provider.service, provider.port
            )),
            Some(addr) => self.export(addr, request(batch.spans)).await,
        };
        match result {
            Ok(()) => {
                self.stats.exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(reason) => {
                self.stats.failed.fetch_add(count, Ordering::Relaxed);
                let now = Instant::now();
                let last = self.warned.get(&provider.name);
                if last.is_none_or(|at| now.duration_since(*at) >= WARN_EVERY) {
                    self.warned.insert(provider.name.clone(), now);
                    tracing::warn!(provider = %provider.name, spans = count, %reason, "span export failed");
                }
            }
        }
    }

    async fn export(
        &mut self,
        addr: SocketAddr,
        request: ExportTraceServiceRequest,
    ) -> Result<(), String> {
        let client = match self.clients.get(&addr) {
            Some(client) => client.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| e.to_string())?
                    .connect_timeout(EXPORT_TIMEOUT);
                let client = TraceServiceClient::new(endpoint.connect_lazy());
                self.clients.insert(addr, client.clone());
                client
            }
        };
        let mut client = client;
        match tokio::time::timeout(EXPORT_TIMEOUT, client.export(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => {
                // A new connection next time.
                self.clients.remove(&addr);
                Err(format!("{addr}: {}", status.message()))
            }
            Err(_) => {
                self.clients.remove(&addr);
                Err(format!("{addr}: no answer within {EXPORT_TIMEOUT:?}"))
            }
        }
    }
}

/// One request: a resource per workload, each with one scope.
fn request(spans: Vec<Finished>) -> ExportTraceServiceRequest {
    let mut by_resource: Vec<(Arc<Vec<KeyValue>>, Vec<Span>)> = Vec::new();
    for finished in spans {
        match by_resource
            .iter_mut()
            .find(|(r, _)| Arc::ptr_eq(r, &finished.resource) || **r == *finished.resource)
        {
            Some((_, list)) => list.push(finished.span),
            None => by_resource.push((finished.resource, vec![finished.span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_resource
            .into_iter()
            .map(|(resource, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: (*resource).clone(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "weft-agent".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
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
mod tests {
    use super::*;

    fn finished(resource: &Arc<Vec<KeyValue>>, name: &str) -> Finished {
        Finished {
            provider: Arc::new(Provider {
                name: "otel".into(),
                exports: true,
                service: "10.0.0.1".into(),
                port: 4317,
                max_tag_length: 256,
            }),
            resource: resource.clone(),
            span: Span {
                name: name.into(),
                ..Default::default()
            },
        }
    }

    /// A collector on loopback that hands each request it gets to a
    /// channel.
    struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

    #[tonic::async_trait]
    impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
        for Collector
    {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<
            tonic::Response<
                opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
            >,
            tonic::Status,
        > {
            let _ = self.0.send(request.into_inner());
            Ok(tonic::Response::new(Default::default()))
        }
    }

    #[tokio::test]
    async fn spans_reach_a_collector_and_failures_are_counted() {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Collector(tx)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let exporter = Exporter::new(Arc::new(WorkloadStore::default()));
        let resource = Arc::new(vec![attribute("service.name", "a.shop")]);
        let mut span = finished(&resource, "reviews.shop.svc.cluster.local:9080/*");
        span.provider = Arc::new(Provider {
            port,
            service: "127.0.0.1".into(),
            ..(*span.provider).clone()
        });
        exporter.submit(span);
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the collector got the span within 10 s")
            .unwrap();
        let spans = &got.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].name, "reviews.shop.svc.cluster.local:9080/*");
        wait_for(
            || exporter.stats.snapshot()[0] == 1,
            "the export was not counted",
        )
        .await;

        // A provider whose service has no endpoint: counted as failed.
        let mut lost = finished(&resource, "lost");
        lost.provider = Arc::new(Provider {
            service: "collector.nowhere.svc.cluster.local".into(),
            name: "elsewhere".into(),
            ..(*lost.provider).clone()
        });
        exporter.submit(lost);
        wait_for(
            || exporter.stats.snapshot()[2] == 1,
            "the failure was not counted",
        )
        .await;
    }

    async fn wait_for(done: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what} within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn spans_are_grouped_by_workload() {
        let a = Arc::new(vec![attribute("service.name", "a.shop")]);
        let b = Arc::new(vec![attribute("service.name", "b.shop")]);
        let req = request(vec![
            finished(&a, "1"),
            finished(&b, "2"),
            finished(&a, "3"),
        ]);
        assert_eq!(req.resource_spans.len(), 2);
        let names: Vec<&str> = req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["1", "3"]);
        assert_eq!(
            req.resource_spans[1].resource.as_ref().unwrap().attributes,
            *b
        );
    }
}
