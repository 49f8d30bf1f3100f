//! MeshConfig's access logging: `accessLogEncoding` and `accessLogFormat`
//! checked, the `envoyFileAccessLog`, `envoyOtelAls`, `envoyHttpAls` and
//! `envoyTcpAls` providers read and compiled into the outputs, collectors
//! and access-log services agents write to, and
//! `defaultProviders.accessLogging`.

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use weft_proto::telemetry::{
    AccessLogProvider, Encoding, GrpcAccessLog, MeshAccessLog, OtelAccessLog,
    grpc_access_log::Kind as GrpcKind,
};

use super::{MeshConfig, ProviderKind};
use crate::model::access_log::{format, mesh_access_log};

/// Where a file access-log provider without a `path` writes (Istio's
/// `DevStdout`).
pub const STDOUT: &str = "/dev/stdout";

/// The name of Istio's built-in file access-log provider, which
/// MeshConfig's `accessLogEncoding` and `accessLogFormat` shape.
pub const ENVOY_PROVIDER: &str = "envoy";

/// `envoyFileAccessLog`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyFileAccessLog {
    /// Empty: `/dev/stdout`.
    #[serde(default)]
    pub path: String,
    /// Unset: Envoy's default format as Istio sets it (for `envoy`:
    /// MeshConfig's `accessLogEncoding` and `accessLogFormat`).
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    /// Accepted; weft writes empty values as Envoy does without it. (As
    /// in Istio, it makes `envoy` without a `logFormat` take the default
    /// format rather than MeshConfig's.)
    #[serde(default)]
    pub omit_empty_values: bool,
}

/// `envoyOtelAls`: access-log records sent to an OpenTelemetry collector
/// over OTLP/gRPC.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyOtelAls {
    /// The collector: a hostname, `<namespace>/<hostname>`, or an IP.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    /// Accepted: Envoy puts it only in resource labels that istiod turns
    /// off.
    #[serde(default)]
    pub log_name: String,
    /// `text`: the record's body, as written (empty: Istio's default text
    /// format); `labels`: its attributes. Both may be set.
    #[serde(default)]
    pub log_format: Option<LogFormat>,
}

/// `envoyHttpAls` and `envoyTcpAls`: entries streamed to Envoy's gRPC
/// Access Log Service (the additional headers are `envoyHttpAls`'s only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyGrpcAls {
    /// The service: a hostname, `<namespace>/<hostname>`, or an IP.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    /// The stream's `identifier.log_name`; empty: istiod's default.
    #[serde(default)]
    pub log_name: String,
    /// Empty: the peers' metadata (`upstream_peer`, `downstream_peer`,
    /// which istiod's default names beside legacy `wasm.*` keys), the
    /// only filter state weft has.
    #[serde(default)]
    pub filter_state_objects_to_log: Vec<String>,
    #[serde(default)]
    pub additional_request_headers_to_log: Vec<String>,
    #[serde(default)]
    pub additional_response_headers_to_log: Vec<String>,
    /// Accepted: weft's agent does not keep a response's trailers for
    /// its logs (weft-control warns).
    #[serde(default)]
    pub additional_response_trailers_to_log: Vec<String>,
}

impl EnvoyGrpcAls {
    /// The additional header names that are no header name (nor one of
    /// the request line's pseudo-headers), each with its field: left out.
    pub fn not_headers(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for (field, names) in [
            (
                "additionalRequestHeadersToLog",
                &self.additional_request_headers_to_log,
            ),
            (
                "additionalResponseHeadersToLog",
                &self.additional_response_headers_to_log,
            ),
        ] {
            for name in names.iter().filter(|n| !is_header(field, n)) {
                bad.push(format!("{field}: `{name}`"));
            }
        }
        bad
    }
}

/// Whether `name` is one a `field` of additional headers logs: a header
/// name, or (a request's) `:authority`, `:path`, `:method`, `:scheme`.
fn is_header(field: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let pseudo = [":authority", ":path", ":method", ":scheme"];
    (field == "additionalRequestHeadersToLog" && pseudo.contains(&name.as_str()))
        || http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// `envoyFileAccessLog.logFormat`: `text` or `labels`, not both (checked
/// by [`MeshConfig::parse`]); for `envoyOtelAls`, the body and the
/// attributes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFormat {
    /// An Envoy format string; empty: Istio's default text format. A
    /// trailing newline ends the line (Istio adds one when missing).
    #[serde(default)]
    pub text: Option<String>,
    /// JSON lines: key to format string; empty: Istio's default JSON
    /// keys.
    #[serde(default)]
    pub labels: Option<Labels>,
}

/// `logFormat.labels`: JSON key to format string, in the order written
/// (the YAML reader keeps a mapping's order, and a line's keys follow
/// it). Values must be strings (a plain scalar such as `1` is read as the
/// string `1`); Istio would also take numbers and nested objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Labels;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of JSON key to format string")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    labels.push(entry);
                }
                Ok(Labels(labels))
            }
        }
        d.deserialize_map(InOrder)
    }
}

impl LogFormat {
    /// `text`, without the newline that ends the line.
    pub(super) fn text_line(&self) -> Option<&str> {
        let text = self.text.as_deref()?;
        Some(
            text.strip_suffix("\r\n")
                .or_else(|| text.strip_suffix('\n'))
                .unwrap_or(text),
        )
    }
}

impl MeshConfig {
    /// `defaultProviders.accessLogging`, lower-cased (Istio matches
    /// provider names ignoring case).
    pub fn default_access_log_providers(&self) -> Vec<String> {
        self.default_providers
            .as_ref()
            .map(|d| {
                d.access_logging
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The access-log providers a name can resolve to, each under its
    /// name lower-cased: every `envoyFileAccessLog` provider of
    /// [`MeshConfig::providers`] with its output (the built-in `envoy`, at
    /// `/dev/stdout`, among them unless an entry named `envoy` replaces
    /// it), every `envoyOtelAls` with its collector, and every
    /// `envoyHttpAls` and `envoyTcpAls` with its access-log service;
    /// except one whose name, ignoring case, an earlier provider takes (a
    /// name never resolves to it).
    ///
    /// Formats are Istio's (`telemetryAccessLog`): `envoy` without a
    /// `logFormat` (nor `omitEmptyValues`) takes MeshConfig's
    /// `accessLogEncoding` and `accessLogFormat`; any other provider
    /// without one, or with an empty `text`, Envoy's default text format
    /// as Istio sets it; `labels` make JSON lines with those keys (none:
    /// Istio's default JSON keys); a `logFormat` with neither, Envoy's own
    /// default (istiod sets no format).
    pub fn access_log_providers(&self) -> Vec<AccessLogProvider> {
        let mut seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for p in self.providers() {
            let name = p.name.to_ascii_lowercase();
            if seen.contains(&name) {
                continue;
            }
            seen.push(name.clone());
            let mut provider = AccessLogProvider {
                name,
                ..Default::default()
            };
            match p.kind() {
                Some(ProviderKind::EnvoyFileAccessLog) => {
                    let Some(file) = &p.envoy_file_access_log else {
                        continue;
                    };
                    provider.output = Some(self.file_output(p.name == ENVOY_PROVIDER, file));
                }
                Some(ProviderKind::EnvoyOtelAls) => {
                    let Some(als) = &p.envoy_otel_als else {
                        continue;
                    };
                    provider.otel = Some(otel_output(als));
                }
                Some(ProviderKind::EnvoyHttpAls) => {
                    let Some(als) = &p.envoy_http_als else {
                        continue;
                    };
                    provider.grpc = Some(grpc_output(GrpcKind::Http, als));
                }
                Some(ProviderKind::EnvoyTcpAls) => {
                    let Some(als) = &p.envoy_tcp_als else {
                        continue;
                    };
                    provider.grpc = Some(grpc_output(GrpcKind::Tcp, als));
                }
                _ => continue,
            }
            out.push(provider);
        }
        out
    }

    /// One file provider's output (see [`MeshConfig::access_log_providers`]).
    fn file_output(&self, envoy: bool, file: &EnvoyFileAccessLog) -> MeshAccessLog {
        let path = if file.path.is_empty() {
            STDOUT.to_string()
        } else {
            file.path.clone()
        };
        let text = |format: &str| MeshAccessLog {
            file: path.clone(),
            encoding: Encoding::Text as i32,
            // Validation parsed it already.
            text: format::parse(format).unwrap_or_default(),
            json: Vec::new(),
        };
        let Some(log_format) = &file.log_format else {
            if envoy && !file.omit_empty_values {
                return MeshAccessLog {
                    file: path.clone(),
                    ..mesh_access_log(self)
                };
            }
            return text(format::DEFAULT_TEXT);
        };
        if let Some(labels) = &log_format.labels {
            return MeshAccessLog {
                file: path.clone(),
                encoding: Encoding::Json as i32,
                text: Vec::new(),
                json: if labels.0.is_empty() {
                    format::default_json()
                } else {
                    format::parse_fields(labels.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                        .unwrap_or_default()
                },
            };
        }
        match log_format.text_line() {
            Some(line) if !line.is_empty() => text(line),
            Some(_) => text(format::DEFAULT_TEXT),
            // `logFormat: {}`: istiod sets no format, so Envoy's own.
            None => text(format::ENVOY_DEFAULT_TEXT),
        }
    }

    /// An `envoyOtelAls` names its collector, and its format strings
    /// parse with the operators weft's agent renders.
    pub(super) fn check_otel_als(at: &str, als: &EnvoyOtelAls) -> Result<(), String> {
        let at = format!("{at}.envoyOtelAls");
        if als.service.is_empty() {
            return Err(format!("{at}.service: must be set"));
        }
        if !(1..=65535).contains(&als.port) {
            return Err(format!("{at}.port: {} is not a port (1-65535)", als.port));
        }
        let Some(log_format) = &als.log_format else {
            return Ok(());
        };
        if let Some(text) = &log_format.text {
            format::parse(text).map_err(|e| format!("{at}.logFormat.text: {e}"))?;
        }
        if let Some(labels) = &log_format.labels {
            format::parse_fields(labels.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|(key, e)| format!("{at}.logFormat.labels.{key}: {e}"))?;
        }
        Ok(())
    }

    /// An `envoyHttpAls` or `envoyTcpAls` (`at` names it) names its
    /// service. (Header names are not checked: Istio does not, and a
    /// name that is none is left out with a warning, see
    /// [`EnvoyGrpcAls::not_headers`].)
    pub(super) fn check_grpc_als(at: &str, als: &EnvoyGrpcAls) -> Result<(), String> {
        if als.service.is_empty() {
            return Err(format!("{at}.service: must be set"));
        }
        if !(1..=65535).contains(&als.port) {
            return Err(format!("{at}.port: {} is not a port (1-65535)", als.port));
        }
        Ok(())
    }

    /// An `envoyFileAccessLog.logFormat` sets `text` or `labels`, and its
    /// format strings parse with the operators weft's agent renders.
    pub(super) fn check_log_format(at: &str, log_format: &LogFormat) -> Result<(), String> {
        let at = format!("{at}.envoyFileAccessLog.logFormat");
        match (log_format.text_line(), &log_format.labels) {
            (Some(_), Some(_)) => Err(format!("{at}: set `text` or `labels`, not both")),
            (Some(text), None) => format::parse(text)
                .map(|_| ())
                .map_err(|e| format!("{at}.text: {e}")),
            (None, Some(labels)) => {
                format::parse_fields(labels.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map(|_| ())
                    .map_err(|(key, e)| format!("{at}.labels.{key}: {e}"))
            }
            (None, None) => Ok(()),
        }
    }

    /// `accessLogEncoding` and `accessLogFormat`: the format must parse
    /// with the operators weft's agent renders.
    pub(super) fn check_access_log(&self) -> Result<(), String> {
        if let Some(encoding) = &self.access_log_encoding
            && !encoding.eq_ignore_ascii_case("TEXT")
            && !encoding.eq_ignore_ascii_case("JSON")
        {
            return Err(format!(
                "accessLogEncoding: `{encoding}` is not TEXT or JSON"
            ));
        }
        let Some(format) = self
            .access_log_format
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
        else {
            return Ok(());
        };
        if self.access_log_json() {
            format::parse_json(format).map(|_| ())
        } else {
            format::parse(format).map(|_| ())
        }
        .map_err(|e| format!("accessLogFormat: {e}"))
    }
}

/// An `envoyOtelAls` provider's collector and record, as istiod sets
/// Envoy's OpenTelemetry access logger: the body is `logFormat.text` as
/// written, or Istio's default text format (newline included) when it is
/// missing or empty; the attributes are `logFormat.labels`, sorted by
/// key.
fn otel_output(als: &EnvoyOtelAls) -> OtelAccessLog {
    let default = format!("{}\n", format::DEFAULT_TEXT);
    let body = als
        .log_format
        .as_ref()
        .and_then(|f| f.text.as_deref())
        .filter(|text| !text.is_empty())
        .unwrap_or(&default);
    let mut labels: Vec<(&str, &str)> = als
        .log_format
        .as_ref()
        .and_then(|f| f.labels.as_ref())
        .map(|l| l.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .unwrap_or_default();
    labels.sort_by(|a, b| a.0.cmp(b.0));
    OtelAccessLog {
        service: als.service.clone(),
        port: als.port,
        // Validation parsed them already.
        body: format::parse(body).unwrap_or_default(),
        attributes: format::parse_fields(labels).unwrap_or_default(),
    }
}

/// An `envoyHttpAls` or `envoyTcpAls` provider's service and entries, as
/// istiod sets Envoy's `http_grpc` and `tcp_grpc` access loggers: the log
/// name defaults to `http_envoy_accesslog` or `tcp_envoy_accesslog`, the
/// filter state to the peers' metadata, and only `envoyHttpAls` logs
/// additional headers.
fn grpc_output(kind: GrpcKind, als: &EnvoyGrpcAls) -> GrpcAccessLog {
    let (default_name, request_headers, response_headers) = match kind {
        GrpcKind::Http => (
            "http_envoy_accesslog",
            &als.additional_request_headers_to_log[..],
            &als.additional_response_headers_to_log[..],
        ),
        GrpcKind::Tcp => ("tcp_envoy_accesslog", &[][..], &[][..]),
    };
    let lower = |field: &str, names: &[String]| {
        names
            .iter()
            .filter(|n| is_header(field, n))
            .map(|n| n.to_ascii_lowercase())
            .collect()
    };
    GrpcAccessLog {
        kind: kind as i32,
        service: als.service.clone(),
        port: als.port,
        log_name: if als.log_name.is_empty() {
            default_name.to_string()
        } else {
            als.log_name.clone()
        },
        request_headers: lower("additionalRequestHeadersToLog", request_headers),
        response_headers: lower("additionalResponseHeadersToLog", response_headers),
        filter_state_objects: if als.filter_state_objects_to_log.is_empty() {
            vec!["upstream_peer".to_string(), "downstream_peer".to_string()]
        } else {
            als.filter_state_objects_to_log.clone()
        },
    }
}
