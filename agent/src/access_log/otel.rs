//! The `envoyOtelAls` providers: each line becomes an OpenTelemetry log
//! record, sent over OTLP/gRPC (`LogsService/Export`, [`crate::otlp`]) to
//! the provider's collector, as Envoy's OpenTelemetry access logger sends
//! it when istiod configures it: the record's time is the request's (or
//! connection's) start, its body the formatted line (Istio's default
//! text format unless `logFormat.text` says otherwise), its attributes
//! `logFormat.labels`, each a string, and the trace and span ids of this
//! side's span when the request is traced; the resource is empty and the
//! scope unnamed (istiod turns Envoy's built-in resource labels off).

use std::time::UNIX_EPOCH;

use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, logs_service_client::LogsServiceClient},
    common::v1::{AnyValue, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use tonic::transport::Channel;
use weft_proto::telemetry::OtelAccessLog;

use super::{entry::Entry, format::Format};
use crate::otlp::attribute;

/// The exporter of access-log records.
pub type Exporter = crate::otlp::Exporter<Records>;

/// An `envoyOtelAls` provider: its collector and its record's format.
#[derive(Debug)]
pub struct Collector {
    /// The provider's name, lower-cased.
    pub provider: String,
    /// A hostname, `<namespace>/<hostname>`, or an IP.
    pub service: String,
    pub port: u16,
}

impl Collector {
    /// Converts a provider; the error names what the agent cannot
    /// render.
    pub fn compile(provider: &str, otel: &OtelAccessLog) -> Result<(Collector, Format), String> {
        let port = u16::try_from(otel.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {} is not a port", otel.port))?;
        let format = Format::otel(&otel.body, &otel.attributes)?;
        Ok((
            Collector {
                provider: provider.to_string(),
                service: otel.service.clone(),
                port,
            },
            format,
        ))
    }
}

impl crate::otlp::Collector for Collector {
    fn provider(&self) -> &str {
        &self.provider
    }

    fn address(&self) -> (&str, u16) {
        (&self.service, self.port)
    }
}

/// The record of `e` in `format` (an OpenTelemetry one); `buffer` is
/// scratch space for the body.
pub fn record(format: &Format, e: &Entry<'_>, buffer: &mut Vec<u8>) -> LogRecord {
    buffer.clear();
    format.render_into(e, buffer);
    let mut attributes = Vec::new();
    format.render_attributes(e, |key, value| {
        attributes.push(attribute(key, String::from_utf8_lossy(value)));
    });
    LogRecord {
        time_unix_nano: e
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(
                String::from_utf8_lossy(buffer).into_owned(),
            )),
        }),
        attributes,
        trace_id: e
            .trace
            .map_or_else(Vec::new, |(trace, _)| trace.to_be_bytes().to_vec()),
        span_id: e
            .trace
            .map_or_else(Vec::new, |(_, span)| span.to_be_bytes().to_vec()),
        ..Default::default()
    }
}

/// Access-log records, sent to an `envoyOtelAls` provider's collector.
#[derive(Default)]
pub struct Records;

impl crate::otlp::Signal for Records {
    type Collector = Collector;
    type Item = LogRecord;
    type Request = ExportLogsServiceRequest;
    const ITEMS: &'static str = "access-log records";

    /// One resource (empty) with one scope (unnamed), as Envoy sends
    /// them.
    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource::default()),
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    async fn export(
        &self,
        channel: Channel,
        _: &Collector,
        _: std::net::SocketAddr,
        request: ExportLogsServiceRequest,
    ) -> Result<(), tonic::Status> {
        LogsServiceClient::new(channel)
            .export(request)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
#[path = "otel_tests.rs"]
mod tests;
