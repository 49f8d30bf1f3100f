//! The parts of Istio's MeshConfig weft-control reads (`--mesh-config`,
//! the YAML of the `istio` ConfigMap's `mesh` key): `extensionProviders`,
//! which CUSTOM AuthorizationPolicies and Telemetry `tracing`, `metrics`
//! and `accessLogging` name, the access log (`accessLogFile`,
//! `accessLogEncoding`, `accessLogFormat`), tracing (`enableTracing`,
//! `defaultConfig.tracing.sampling`, `defaultProviders.tracing`) and
//! `defaultProviders.metrics` and `.accessLogging`, and
//! `defaultHttpRetryPolicy`. Every other MeshConfig field is accepted and
//! ignored.
//!
//! Telemetry provider names resolve as istiod resolves them (see
//! [`MeshConfig::resolve_provider`]): against `extensionProviders` after
//! Istio's built-in `prometheus`, `stackdriver` and `envoy`, ignoring
//! case, then by the provider's kind.

mod access_log;

use std::{path::Path, sync::LazyLock};

use serde::Deserialize;

pub use self::access_log::{
    ENVOY_PROVIDER, EnvoyFileAccessLog, EnvoyGrpcAls, EnvoyOtelAls, Labels, LogFormat, STDOUT,
};
use crate::{
    kinds::{Ignored, istio::Duration, virtual_service::HttpRetry},
    yaml::{self, Limits, de::from_node, path::FieldPath},
};

/// Istio's built-in providers (`DefaultMeshConfig`), in its order: an
/// `extensionProviders` entry of the same name (exactly) replaces one in
/// place; the others come after them.
static BUILT_IN: LazyLock<[ExtensionProvider; 3]> = LazyLock::new(|| {
    [
        ExtensionProvider {
            name: "prometheus".into(),
            prometheus: Some(Ignored),
            ..Default::default()
        },
        ExtensionProvider {
            name: "stackdriver".into(),
            stackdriver: Some(OtherTracer::default()),
            ..Default::default()
        },
        ExtensionProvider {
            name: ENVOY_PROVIDER.into(),
            envoy_file_access_log: Some(EnvoyFileAccessLog {
                path: STDOUT.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
});

/// What weft reads of MeshConfig.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// `accessLogFile`: where proxies write access logs when no Telemetry
    /// provider applies. Unset: weft's default, `/dev/stdout` (Istio's is
    /// off); `""`: off, unless a Telemetry entry that names no provider
    /// turns it on (it then writes to stdout).
    #[serde(default)]
    pub access_log_file: Option<String>,
    /// `accessLogEncoding`: `TEXT` (the default) or `JSON`.
    #[serde(default)]
    pub access_log_encoding: Option<String>,
    /// `accessLogFormat`: an Envoy format string (TEXT) or a JSON object
    /// of key to format string (JSON); unset or empty: Istio's default.
    #[serde(default)]
    pub access_log_format: Option<String>,
    /// `enableTracing`: unset means Istio's default, true.
    #[serde(default)]
    pub enable_tracing: Option<bool>,
    /// `defaultConfig`: the proxies' defaults; weft reads only
    /// `tracing.sampling`.
    #[serde(default)]
    pub default_config: Option<ProxyConfig>,
    /// `defaultProviders`: weft reads `tracing`, `metrics` and
    /// `accessLogging`.
    #[serde(default)]
    pub default_providers: Option<DefaultProviders>,
    /// `defaultHttpRetryPolicy`: the retries of every HTTP route without
    /// its own `retries` (a VirtualService route's, and the default route
    /// of a host no VirtualService routes), in place of Istio's default
    /// policy; a route's own `retries` replaces it whole. Unknown fields
    /// and wrong types are refused; its values are not checked (istiod
    /// does not check them).
    #[serde(default)]
    pub default_http_retry_policy: Option<HttpRetry>,
    /// `defaultInboundHttpRetryPolicy`: the retries of every request a
    /// destination's side sends to its app, on a port that is not gRPC,
    /// in place of Istio's default (2 retries on `reset-before-request`).
    /// Checked as istiod checks it (a VirtualService's retry checks, and
    /// no `backoff` with `attempts: 0`): a bad one refuses the mesh config.
    #[serde(default)]
    pub default_inbound_http_retry_policy: Option<HttpRetry>,
}

/// `defaultConfig` (Istio's ProxyConfig): only `tracing` is read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    #[serde(default)]
    pub tracing: Option<ProxyTracing>,
}

/// `defaultConfig.tracing`: only `sampling` is read (the per-tracer
/// blocks, `customTags`, `maxPathTagLength` and `tlsSettings` are
/// accepted and ignored).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTracing {
    /// A percentage, 0 to 100; unset means Istio's default, 1.
    #[serde(default)]
    pub sampling: Option<f64>,
}

/// `defaultProviders`: `tracing`, `metrics` and `accessLogging`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProviders {
    #[serde(default)]
    pub tracing: Vec<String>,
    /// Unset: Istio's default, `[prometheus]`; `[]` turns the default
    /// metrics off.
    #[serde(default)]
    pub metrics: Option<Vec<String>>,
    /// The access-log providers of a workload no Telemetry `accessLogging`
    /// names any for; empty: MeshConfig's own `accessLogFile`.
    #[serde(default)]
    pub access_logging: Vec<String>,
}

/// One `extensionProviders` entry: a name and one provider kind (kinds
/// weft does not know, `sds`, `opencensus`, ..., are accepted and leave
/// it without one).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    /// Where the entry stood in the YAML's `extensionProviders`, for
    /// errors: merging (see `merge_providers`) can put an entry in an
    /// earlier one's place.
    #[serde(skip)]
    pub index: usize,
    #[serde(default)]
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpc>,
    #[serde(default)]
    pub envoy_ext_authz_http: Option<ExtAuthzHttp>,
    /// `opentelemetry`: spans over OTLP/gRPC, the one tracing kind weft
    /// exports to.
    #[serde(default)]
    pub opentelemetry: Option<OpenTelemetry>,
    /// The other tracing kinds: accepted, but no spans are sent to them.
    #[serde(default)]
    pub zipkin: Option<OtherTracer>,
    #[serde(default)]
    pub datadog: Option<OtherTracer>,
    #[serde(default)]
    pub skywalking: Option<OtherTracer>,
    #[serde(default)]
    pub stackdriver: Option<OtherTracer>,
    #[serde(default)]
    pub lightstep: Option<OtherTracer>,
    /// `prometheus`: the metrics weft's agents serve (its settings are
    /// accepted and ignored).
    #[serde(default)]
    pub prometheus: Option<Ignored>,
    /// `envoyFileAccessLog`: access logs written to a file.
    #[serde(default)]
    pub envoy_file_access_log: Option<EnvoyFileAccessLog>,
    /// `envoyOtelAls`: access-log records sent to an OpenTelemetry
    /// collector.
    #[serde(default)]
    pub envoy_otel_als: Option<EnvoyOtelAls>,
    /// Envoy's own gRPC Access Log Service: an entry per request and
    /// per connection, streamed to it.
    #[serde(default)]
    pub envoy_http_als: Option<EnvoyGrpcAls>,
    #[serde(default)]
    pub envoy_tcp_als: Option<EnvoyGrpcAls>,
}

/// An `extensionProviders` entry's kind: the field it is set in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    EnvoyExtAuthzGrpc,
    EnvoyExtAuthzHttp,
    Opentelemetry,
    Zipkin,
    Datadog,
    Skywalking,
    Stackdriver,
    Lightstep,
    Prometheus,
    EnvoyFileAccessLog,
    EnvoyOtelAls,
    EnvoyHttpAls,
    EnvoyTcpAls,
}

impl ProviderKind {
    /// The MeshConfig field, as written in YAML.
    pub fn field(self) -> &'static str {
        match self {
            ProviderKind::EnvoyExtAuthzGrpc => "envoyExtAuthzGrpc",
            ProviderKind::EnvoyExtAuthzHttp => "envoyExtAuthzHttp",
            ProviderKind::Opentelemetry => "opentelemetry",
            ProviderKind::Zipkin => "zipkin",
            ProviderKind::Datadog => "datadog",
            ProviderKind::Skywalking => "skywalking",
            ProviderKind::Stackdriver => "stackdriver",
            ProviderKind::Lightstep => "lightstep",
            ProviderKind::Prometheus => "prometheus",
            ProviderKind::EnvoyFileAccessLog => "envoyFileAccessLog",
            ProviderKind::EnvoyOtelAls => "envoyOtelAls",
            ProviderKind::EnvoyHttpAls => "envoyHttpAls",
            ProviderKind::EnvoyTcpAls => "envoyTcpAls",
        }
    }
}

/// `opentelemetry`: `service`, `port` and `maxTagLength` are read; `http`,
/// `resourceDetectors`, `dynatraceSampler` and the rest are accepted and
/// ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenTelemetry {
    /// The collector: a hostname, `<namespace>/<hostname>`, or an IP.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    /// Tag values are cut to this many bytes (0: Istio's default, 256).
    #[serde(default)]
    pub max_tag_length: u32,
}

/// `zipkin`, `datadog`, `skywalking`, `stackdriver`, `lightstep`: the
/// service and port when the kind has them; everything else is accepted
/// and ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtherTracer {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub max_tag_length: u32,
}

/// A tracing provider's kind and collector, as [`ExtensionProvider::tracer`]
/// reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracer<'a> {
    /// Whether it is `opentelemetry` (else a kind weft does not export to).
    pub opentelemetry: bool,
    /// The field the kind is set in (`opentelemetry`, `zipkin`, ...).
    pub kind: &'static str,
    pub service: &'a str,
    pub port: u32,
    pub max_tag_length: u32,
}

impl ExtensionProvider {
    /// The kinds set, in the order of [`ProviderKind`].
    fn kinds(&self) -> impl Iterator<Item = ProviderKind> {
        [
            (
                self.envoy_ext_authz_grpc.is_some(),
                ProviderKind::EnvoyExtAuthzGrpc,
            ),
            (
                self.envoy_ext_authz_http.is_some(),
                ProviderKind::EnvoyExtAuthzHttp,
            ),
            (self.opentelemetry.is_some(), ProviderKind::Opentelemetry),
            (self.zipkin.is_some(), ProviderKind::Zipkin),
            (self.datadog.is_some(), ProviderKind::Datadog),
            (self.skywalking.is_some(), ProviderKind::Skywalking),
            (self.stackdriver.is_some(), ProviderKind::Stackdriver),
            (self.lightstep.is_some(), ProviderKind::Lightstep),
            (self.prometheus.is_some(), ProviderKind::Prometheus),
            (
                self.envoy_file_access_log.is_some(),
                ProviderKind::EnvoyFileAccessLog,
            ),
            (self.envoy_otel_als.is_some(), ProviderKind::EnvoyOtelAls),
            (self.envoy_http_als.is_some(), ProviderKind::EnvoyHttpAls),
            (self.envoy_tcp_als.is_some(), ProviderKind::EnvoyTcpAls),
        ]
        .into_iter()
        .filter_map(|(set, kind)| set.then_some(kind))
    }

    /// Its kind; `None` for a kind weft does not know (validation refuses
    /// an entry with two).
    pub fn kind(&self) -> Option<ProviderKind> {
        self.kinds().next()
    }

    /// The tracing kind this provider is, if it is one.
    pub fn tracer(&self) -> Option<Tracer<'_>> {
        if let Some(o) = &self.opentelemetry {
            return Some(Tracer {
                opentelemetry: true,
                kind: "opentelemetry",
                service: &o.service,
                port: o.port,
                max_tag_length: o.max_tag_length,
            });
        }
        [
            ("zipkin", &self.zipkin),
            ("datadog", &self.datadog),
            ("skywalking", &self.skywalking),
            ("stackdriver", &self.stackdriver),
            ("lightstep", &self.lightstep),
        ]
        .into_iter()
        .find_map(|(kind, t)| {
            t.as_ref().map(|t| Tracer {
                opentelemetry: false,
                kind,
                service: &t.service,
                port: t.port,
                max_tag_length: t.max_tag_length,
            })
        })
    }
}

/// `envoyExtAuthzGrpc`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzGrpc {
    /// A service hostname (`ext-authz.foo.svc.cluster.local`) or an IP.
    pub service: String,
    pub port: u16,
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub fail_open: bool,
    /// The status sent when the provider fails and `failOpen` is false.
    #[serde(default)]
    pub status_on_error: Option<String>,
    #[serde(default)]
    pub include_request_body_in_check: Option<RequestBody>,
}

/// `envoyExtAuthzHttp`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzHttp {
    /// A service hostname (`ext-authz.foo.svc.cluster.local`) or an IP.
    pub service: String,
    pub port: u16,
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Prepended to the request's path in the check request.
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub status_on_error: Option<String>,
    /// Header name patterns (`name`, `x-*`, `*-id`; case-insensitive).
    #[serde(default)]
    pub include_request_headers_in_check: Vec<String>,
    /// Deprecated; used only when `includeRequestHeadersInCheck` is empty.
    #[serde(default)]
    pub include_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_additional_headers_in_check: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub include_request_body_in_check: Option<RequestBody>,
    #[serde(default)]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `includeRequestBodyInCheck`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestBody {
    #[serde(default)]
    pub max_request_bytes: u32,
    #[serde(default)]
    pub allow_partial_message: bool,
    #[serde(default)]
    pub pack_as_bytes: bool,
}

/// What both provider kinds need: a service and a valid `statusOnError`.
fn check_common(at: &str, service: &str, status_on_error: Option<&str>) -> Result<(), String> {
    if service.is_empty() {
        return Err(format!("{at}.service: must be set"));
    }
    if let Some(status) = status_on_error
        && !status
            .parse::<u16>()
            .is_ok_and(|s| (200..=599).contains(&s))
    {
        return Err(format!(
            "{at}.statusOnError: `{status}` is not an HTTP status"
        ));
    }
    Ok(())
}

/// `includeRequestBodyInCheck.maxRequestBytes` must be set (Envoy's
/// `BufferSettings` refuses 0).
fn check_body(at: &str, body: Option<&RequestBody>) -> Result<(), String> {
    if body.is_some_and(|b| b.max_request_bytes == 0) {
        return Err(format!(
            "{at}.includeRequestBodyInCheck.maxRequestBytes: must be greater than 0"
        ));
    }
    Ok(())
}

impl MeshConfig {
    /// Reads and checks a MeshConfig file; the error names the file, the
    /// field and the reason.
    pub fn load(path: &Path) -> Result<MeshConfig, String> {
        let at = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{at}: {e}"))?;
        MeshConfig::parse(&text).map_err(|e| format!("{at}: {e}"))
    }

    /// Reads and checks MeshConfig YAML (a file's text, or the `istio`
    /// ConfigMap's `mesh` key); the error names the line and column of
    /// malformed YAML, or the field at fault, and the reason.
    pub fn parse(text: &str) -> Result<MeshConfig, String> {
        let docs = yaml::parse(text, Limits::default()).map_err(|e| {
            format!(
                "line {} column {}: {}",
                e.mark.line, e.mark.column, e.message
            )
        })?;
        let Some(doc) = docs.first() else {
            return Ok(MeshConfig::default());
        };
        let mut mesh: MeshConfig =
            from_node(&doc.root, FieldPath::root()).map_err(|e| e.to_string())?;
        mesh.merge_providers();
        mesh.check()?;
        Ok(mesh)
    }

    /// Merges `extensionProviders` as istiod does before it validates
    /// them (`ApplyMeshConfig`): an entry named exactly as an earlier one
    /// replaces it in place, so a name used twice means its last entry.
    fn merge_providers(&mut self) {
        let mut merged: Vec<ExtensionProvider> = Vec::with_capacity(self.extension_providers.len());
        for (index, mut provider) in std::mem::take(&mut self.extension_providers)
            .into_iter()
            .enumerate()
        {
            provider.index = index;
            match merged.iter_mut().find(|e| e.name == provider.name) {
                Some(earlier) => *earlier = provider,
                None => merged.push(provider),
            }
        }
        self.extension_providers = merged;
    }

    /// `accessLogFile` in force (see the field).
    pub fn access_log_file(&self) -> String {
        self.access_log_file
            .clone()
            .unwrap_or_else(|| "/dev/stdout".to_string())
    }

    /// Whether `accessLogEncoding` is JSON.
    pub fn access_log_json(&self) -> bool {
        self.access_log_encoding
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("JSON"))
    }

    /// `enableTracing` in force (see the field).
    pub fn tracing_enabled(&self) -> bool {
        self.enable_tracing.unwrap_or(true)
    }

    /// `defaultConfig.tracing.sampling` in force: a percentage, 1 when
    /// unset (Istio's default).
    pub fn tracing_sampling(&self) -> f64 {
        self.default_config
            .as_ref()
            .and_then(|c| c.tracing.as_ref())
            .and_then(|t| t.sampling)
            .unwrap_or(1.0)
    }

    /// `defaultProviders.tracing`.
    pub fn default_tracing_providers(&self) -> &[String] {
        self.default_providers
            .as_ref()
            .map(|d| d.tracing.as_slice())
            .unwrap_or_default()
    }

    /// `defaultProviders.metrics` in force: as written, or Istio's
    /// default `[prometheus]` when it is not set.
    pub fn default_metrics_providers(&self) -> Vec<String> {
        self.default_providers
            .as_ref()
            .and_then(|d| d.metrics.clone())
            .unwrap_or_else(|| vec!["prometheus".to_string()])
    }

    /// The providers as istiod holds them: Istio's built-in `prometheus`,
    /// `stackdriver` and `envoy` first, each replaced in place by an
    /// `extensionProviders` entry of exactly its name, then the other
    /// entries in order (`ApplyMeshConfig`).
    pub fn providers(&self) -> Vec<&ExtensionProvider> {
        let mut providers: Vec<&ExtensionProvider> = BUILT_IN
            .iter()
            .map(|b| {
                self.extension_providers
                    .iter()
                    .find(|p| p.name == b.name)
                    .unwrap_or(b)
            })
            .collect();
        providers.extend(
            self.extension_providers
                .iter()
                .filter(|p| !BUILT_IN.iter().any(|b| b.name == p.name)),
        );
        providers
    }

    /// The provider a Telemetry or `defaultProviders` name means: the
    /// first of [`MeshConfig::providers`] whose name equals it ignoring
    /// case (istiod's `fetchProvider`). So `Envoy` and `ENVOY` mean the
    /// built-in `envoy` (or the entry named exactly `envoy`), even when an
    /// entry is named `Envoy`.
    pub fn resolve_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.providers()
            .into_iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Whether a metrics provider name means a provider of kind
    /// `prometheus` (the built-in `prometheus`, unless an entry of that
    /// name gives it another kind).
    pub fn is_prometheus(&self, name: &str) -> bool {
        self.resolve_provider(name)
            .is_some_and(|p| p.kind() == Some(ProviderKind::Prometheus))
    }

    /// `defaultConfig.tracing.sampling` is a percentage, and an
    /// `opentelemetry` provider names its collector.
    fn check_tracing(&self) -> Result<(), String> {
        let sampling = self.tracing_sampling();
        if !(0.0..=100.0).contains(&sampling) {
            return Err(format!(
                "defaultConfig.tracing.sampling: {sampling} is not a percentage (0-100)"
            ));
        }
        for p in &self.extension_providers {
            let Some(otel) = &p.opentelemetry else {
                continue;
            };
            let at = format!("extensionProviders[{}].opentelemetry", p.index);
            if otel.service.is_empty() {
                return Err(format!("{at}.service: must be set"));
            }
            if !(1..=65535).contains(&otel.port) {
                return Err(format!("{at}.port: {} is not a port (1-65535)", otel.port));
            }
        }
        Ok(())
    }

    /// `defaultInboundHttpRetryPolicy`, as istiod checks it
    /// (`validateMeshConfigDefaultInboundHTTPRetryPolicy`): a
    /// VirtualService's retry checks, and no `backoff` with `attempts: 0`.
    /// The fields it ignores (`perTryTimeout`, `retryRemoteLocalities`,
    /// `retryIgnorePreviousHosts`) are warned about, not refused.
    fn check_inbound_retries(&self) -> Result<(), String> {
        let Some(retry) = &self.default_inbound_http_retry_policy else {
            return Ok(());
        };
        let at = "defaultInboundHttpRetryPolicy";
        let mut refused = Vec::new();
        retry.check(at, &mut refused);
        if retry.attempts == 0 && retry.backoff.is_some() {
            refused.push(crate::kinds::invalid(
                at,
                "`backoff` set with `attempts: 0` (retries off)",
            ));
        }
        if let Some(first) = refused.first() {
            return Err(format!("{}: {}", first.path, first.message));
        }
        for (set, field) in [
            (retry.per_try_timeout.is_some(), "perTryTimeout"),
            (
                retry.retry_remote_localities.is_some(),
                "retryRemoteLocalities",
            ),
            (
                retry.retry_ignore_previous_hosts.is_some(),
                "retryIgnorePreviousHosts",
            ),
        ] {
            if set {
                tracing::warn!("{at}.{field} is ignored: the retries to an app have none");
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        // `defaultHttpRetryPolicy` is not checked beyond its types, as
        // istiod does not check it: `attempts` of 0 or less means no
        // retries, and `retryOn` conditions Envoy does not know are
        // ignored (by the agent too).
        self.check_inbound_retries()?;
        self.check_access_log()?;
        self.check_tracing()?;
        for p in &self.extension_providers {
            let at = format!("extensionProviders[{}]", p.index);
            if p.name.is_empty() {
                return Err(format!("{at}.name: must be set"));
            }
            let kinds: Vec<&str> = p.kinds().map(ProviderKind::field).collect();
            if kinds.len() > 1 {
                return Err(format!(
                    "{at}: sets {}; a provider has one kind",
                    kinds
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ));
            }
            if let Some(log_format) = p
                .envoy_file_access_log
                .as_ref()
                .and_then(|f| f.log_format.as_ref())
            {
                MeshConfig::check_log_format(&at, log_format)?;
            }
            if let Some(als) = &p.envoy_otel_als {
                MeshConfig::check_otel_als(&at, als)?;
            }
            if let Some(als) = &p.envoy_http_als {
                MeshConfig::check_grpc_als(&format!("{at}.envoyHttpAls"), als)?;
            }
            if let Some(als) = &p.envoy_tcp_als {
                MeshConfig::check_grpc_als(&format!("{at}.envoyTcpAls"), als)?;
            }
            if let Some(grpc) = &p.envoy_ext_authz_grpc {
                let at = format!("{at}.envoyExtAuthzGrpc");
                check_common(&at, &grpc.service, grpc.status_on_error.as_deref())?;
                check_body(&at, grpc.include_request_body_in_check.as_ref())?;
            }
            if let Some(http) = &p.envoy_ext_authz_http {
                let at = format!("{at}.envoyExtAuthzHttp");
                check_common(&at, &http.service, http.status_on_error.as_deref())?;
                check_body(&at, http.include_request_body_in_check.as_ref())?;
                if let Some(prefix) = &http.path_prefix
                    && !prefix.is_empty()
                    && (!prefix.starts_with('/')
                        || http::uri::PathAndQuery::try_from(prefix.as_str()).is_err())
                {
                    return Err(format!(
                        "{at}.pathPrefix: `{prefix}` must be a path beginning with `/`"
                    ));
                }
                for (field, names) in [
                    (
                        "includeRequestHeadersInCheck",
                        &http.include_request_headers_in_check,
                    ),
                    ("includeHeadersInCheck", &http.include_headers_in_check),
                    (
                        "headersToUpstreamOnAllow",
                        &http.headers_to_upstream_on_allow,
                    ),
                    (
                        "headersToDownstreamOnDeny",
                        &http.headers_to_downstream_on_deny,
                    ),
                    (
                        "headersToDownstreamOnAllow",
                        &http.headers_to_downstream_on_allow,
                    ),
                ] {
                    for (j, name) in names.iter().enumerate() {
                        if name.is_empty() || name == "*" {
                            return Err(format!(
                                "{at}.{field}[{j}]: `{name}` is not a header name or a prefix (`x-*`) or suffix (`*-id`) pattern"
                            ));
                        }
                    }
                }
                for (name, value) in &http.include_additional_headers_in_check {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                        || http::HeaderValue::from_str(value).is_err()
                    {
                        return Err(format!(
                            "{at}.includeAdditionalHeadersInCheck.{name}: not a valid header"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The `extensionProviders` entry named exactly `name` (CUSTOM
    /// authorization and tracing look providers up this way).
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;
