//! Span export over OTLP/gRPC ([`crate::otlp`]): each batch is one
//! `ExportTraceServiceRequest`, grouped by the workload that made the
//! spans (one OTLP resource per workload, `service.name` as Istio names
//! it).
//!
//! The OpenTelemetry SDK's tracer has one resource per provider, which
//! does not fit a node proxy that reports for every pod on its node, so
//! the agent builds OTLP's messages itself (`opentelemetry-proto`) and
//! uses its generated tonic client.

use std::sync::Arc;

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use tonic::transport::Channel;

use super::policy::Provider;
pub use crate::otlp::{Stats, attribute, int_attribute};

/// The span exporter.
pub type Exporter = crate::otlp::Exporter<Spans>;

/// One finished span, with its workload's OTLP resource attributes.
pub struct Finished {
    pub resource: Arc<Vec<KeyValue>>,
    pub span: Span,
}

/// Spans, sent to a tracing provider's collector.
#[derive(Default)]
pub struct Spans;

impl crate::otlp::Collector for Provider {
    fn provider(&self) -> &str {
        &self.name
    }

    fn address(&self) -> (&str, u16) {
        (&self.service, self.port)
    }
}

impl crate::otlp::Signal for Spans {
    type Collector = Provider;
    type Item = Finished;
    type Request = ExportTraceServiceRequest;
    const ITEMS: &'static str = "spans";

    fn request(spans: Vec<Finished>) -> ExportTraceServiceRequest {
        request(spans)
    }

    async fn export(
        &self,
        channel: Channel,
        _: &Provider,
        _: std::net::SocketAddr,
        request: ExportTraceServiceRequest,
    ) -> Result<(), tonic::Status> {
        TraceServiceClient::new(channel)
            .export(request)
            .await
            .map(|_| ())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::{otlp::tests::wait_for, state::WorkloadStore};

    fn provider(service: &str, port: u16) -> Arc<Provider> {
        Arc::new(Provider {
            name: service.into(),
            exports: true,
            service: service.into(),
            port,
            max_tag_length: 256,
        })
    }

    fn finished(resource: &Arc<Vec<KeyValue>>, name: &str) -> Finished {
        Finished {
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
        exporter.submit(
            provider("127.0.0.1", port),
            finished(&resource, "reviews.shop.svc.cluster.local:9080/*"),
        );
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
        exporter.submit(
            provider("collector.nowhere.svc.cluster.local", 4317),
            finished(&resource, "lost"),
        );
        wait_for(
            || exporter.stats.snapshot()[2] == 1,
            "the failure was not counted",
        )
        .await;
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
