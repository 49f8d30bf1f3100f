//! The parts of Istio's MeshConfig weft-control reads (`--mesh-config`,
//! the YAML of the `istio` ConfigMap's `mesh` key): `extensionProviders`,
//! which CUSTOM AuthorizationPolicies and Telemetry `tracing` name, the
//! access log (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`),
//! tracing (`enableTracing`, `defaultConfig.tracing.sampling`,
//! `defaultProviders.tracing`) and `defaultProviders.metrics`. Every other
//! MeshConfig field is accepted and ignored.

use std::path::Path;

use serde::Deserialize;

use crate::{
    kinds::istio::Duration,
    yaml::{self, Limits, de::from_node, path::FieldPath},
};

/// What weft reads of MeshConfig.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// `accessLogFile`: where proxies write access logs. Unset: weft's
    /// default, `/dev/stdout` (Istio's is off); `""`: off, unless a
    /// Telemetry turns the `envoy` provider on.
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
    /// `defaultProviders`: weft reads `tracing` and `metrics`.
    #[serde(default)]
    pub default_providers: Option<DefaultProviders>,
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

/// `defaultProviders`: `tracing` and `metrics` are read (`accessLogging`
/// is accepted and ignored).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProviders {
    #[serde(default)]
    pub tracing: Vec<String>,
    /// Unset: Istio's default, `[prometheus]`; `[]` turns the default
    /// metrics off.
    #[serde(default)]
    pub metrics: Option<Vec<String>>,
}

/// One `extensionProviders` entry: a name and one provider kind.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
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
        let mesh: MeshConfig =
            from_node(&doc.root, FieldPath::root()).map_err(|e| e.to_string())?;
        mesh.check()?;
        Ok(mesh)
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

    /// `defaultConfig.tracing.sampling` is a percentage, and an
    /// `opentelemetry` provider names its collector.
    fn check_tracing(&self) -> Result<(), String> {
        let sampling = self.tracing_sampling();
        if !(0.0..=100.0).contains(&sampling) {
            return Err(format!(
                "defaultConfig.tracing.sampling: {sampling} is not a percentage (0-100)"
            ));
        }
        for (i, p) in self.extension_providers.iter().enumerate() {
            let Some(otel) = &p.opentelemetry else {
                continue;
            };
            let at = format!("extensionProviders[{i}].opentelemetry");
            if otel.service.is_empty() {
                return Err(format!("{at}.service: must be set"));
            }
            if !(1..=65535).contains(&otel.port) {
                return Err(format!("{at}.port: {} is not a port (1-65535)", otel.port));
            }
        }
        Ok(())
    }

    /// `accessLogEncoding` and `accessLogFormat`: the format must parse
    /// with the operators weft's agent renders.
    fn check_access_log(&self) -> Result<(), String> {
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
        use crate::model::access_log::format;
        if self.access_log_json() {
            format::parse_json(format).map(|_| ())
        } else {
            format::parse(format).map(|_| ())
        }
        .map_err(|e| format!("accessLogFormat: {e}"))
    }

    fn check(&self) -> Result<(), String> {
        self.check_access_log()?;
        self.check_tracing()?;
        for (i, p) in self.extension_providers.iter().enumerate() {
            let at = format!("extensionProviders[{i}]");
            if p.name.is_empty() {
                return Err(format!("{at}.name: must be set"));
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

    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<MeshConfig, String> {
        let dir = std::env::temp_dir().join(format!("weft-mesh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.yaml", text.len()));
        std::fs::write(&file, text).unwrap();
        let out = MeshConfig::load(&file);
        let _ = std::fs::remove_file(&file);
        out
    }

    #[test]
    fn reads_ext_authz_providers_and_ignores_the_rest() {
        let mesh = load("accessLogFile: /dev/stdout\nextensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa.authz.svc.cluster.local\n    port: 9191\n    timeout: 250ms\n    failOpen: true\n    statusOnError: '503'\n- name: web\n  envoyExtAuthzHttp:\n    service: web\n    port: 80\n").unwrap();
        let grpc = mesh
            .provider("opa")
            .unwrap()
            .envoy_ext_authz_grpc
            .clone()
            .unwrap();
        assert_eq!(grpc.port, 9191);
        assert_eq!(grpc.timeout.unwrap().0.as_millis(), 250);
        assert!(grpc.fail_open);
        assert!(mesh.provider("web").unwrap().envoy_ext_authz_http.is_some());
        assert!(mesh.provider("none").is_none());
    }

    #[test]
    fn reads_http_providers_and_request_bodies() {
        let mesh = load("extensionProviders:\n- name: web\n  envoyExtAuthzHttp:\n    service: authz.foo.svc.cluster.local\n    port: 8000\n    timeout: 1s\n    pathPrefix: /check\n    failOpen: true\n    statusOnError: '502'\n    includeRequestHeadersInCheck: [x-user, 'x-ext-*']\n    includeHeadersInCheck: [old]\n    includeAdditionalHeadersInCheck: {x-from: weft}\n    includeRequestBodyInCheck: {maxRequestBytes: 100, allowPartialMessage: true}\n    headersToUpstreamOnAllow: ['*-id']\n    headersToDownstreamOnDeny: [x-why]\n    headersToDownstreamOnAllow: [x-ok]\n- name: grpc\n  envoyExtAuthzGrpc:\n    service: 10.0.0.1\n    port: 9000\n    includeRequestBodyInCheck: {maxRequestBytes: 10, packAsBytes: true}\n").unwrap();
        let http = mesh
            .provider("web")
            .unwrap()
            .envoy_ext_authz_http
            .clone()
            .unwrap();
        assert_eq!(http.path_prefix.as_deref(), Some("/check"));
        assert_eq!(http.include_request_headers_in_check, ["x-user", "x-ext-*"]);
        assert_eq!(http.include_headers_in_check, ["old"]);
        assert_eq!(http.include_additional_headers_in_check["x-from"], "weft");
        let body = http.include_request_body_in_check.unwrap();
        assert!(body.max_request_bytes == 100 && body.allow_partial_message && !body.pack_as_bytes);
        assert_eq!(http.headers_to_upstream_on_allow, ["*-id"]);
        assert_eq!(http.headers_to_downstream_on_deny, ["x-why"]);
        assert_eq!(http.headers_to_downstream_on_allow, ["x-ok"]);
        assert!(http.fail_open && http.status_on_error.as_deref() == Some("502"));
        let grpc = mesh
            .provider("grpc")
            .unwrap()
            .envoy_ext_authz_grpc
            .clone()
            .unwrap();
        assert!(grpc.include_request_body_in_check.unwrap().pack_as_bytes);
    }

    #[test]
    fn bad_http_providers_are_refused_with_the_field() {
        let http = |extra: &str| {
            load(&format!(
                "extensionProviders:\n- name: web\n  envoyExtAuthzHttp:\n    service: web\n    port: 80\n{extra}"
            ))
        };
        for (extra, field) in [
            ("    pathPrefix: check\n", "envoyExtAuthzHttp.pathPrefix"),
            (
                "    statusOnError: '99'\n",
                "envoyExtAuthzHttp.statusOnError",
            ),
            (
                "    includeRequestHeadersInCheck: [a, '*']\n",
                "envoyExtAuthzHttp.includeRequestHeadersInCheck[1]",
            ),
            (
                "    headersToDownstreamOnDeny: ['']\n",
                "headersToDownstreamOnDeny[0]",
            ),
            (
                "    includeAdditionalHeadersInCheck: {'bad name': x}\n",
                "includeAdditionalHeadersInCheck",
            ),
            (
                "    includeRequestBodyInCheck: {allowPartialMessage: true}\n",
                "envoyExtAuthzHttp.includeRequestBodyInCheck.maxRequestBytes",
            ),
        ] {
            let err = http(extra).unwrap_err();
            assert!(err.contains(field), "{extra}: {err}");
        }
        assert!(http("").is_ok());
        let err = load("extensionProviders:\n- name: web\n  envoyExtAuthzHttp:\n    port: 80\n")
            .unwrap_err();
        assert!(err.contains("service"), "{err}");
    }

    #[test]
    fn reads_and_checks_the_access_log() {
        let mesh = load("extensionProviders: []\n").unwrap();
        assert_eq!(mesh.access_log_file(), "/dev/stdout");
        assert!(!mesh.access_log_json());
        let mesh = load("accessLogFile: \"\"\naccessLogEncoding: JSON\naccessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'\n").unwrap();
        assert_eq!(mesh.access_log_file(), "");
        assert!(mesh.access_log_json());
        for (text, wanted) in [
            ("accessLogEncoding: XML\n", "accessLogEncoding: `XML`"),
            (
                "accessLogFormat: '[%START_TIME%] %NOT_AN_OPERATOR%'\n",
                "accessLogFormat: position 15: unknown command operator `%NOT_AN_OPERATOR%`",
            ),
            (
                "accessLogEncoding: JSON\naccessLogFormat: '%DURATION%'\n",
                "accessLogFormat: a JSON access log format",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }

    #[test]
    fn tracing_defaults_are_istios() {
        let mesh = MeshConfig::parse("extensionProviders: []\n").unwrap();
        assert!(mesh.tracing_enabled());
        assert_eq!(mesh.tracing_sampling(), 1.0);
        assert!(mesh.default_tracing_providers().is_empty());
        assert!(MeshConfig::default().tracing_enabled());
    }

    #[test]
    fn reads_tracing_and_ignores_the_other_proxy_defaults() {
        let mesh = MeshConfig::parse("enableTracing: false\ndefaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  holdApplicationUntilProxyStarts: true\n  tracing:\n    sampling: 12.5\n    maxPathTagLength: 99\n    zipkin: {address: zipkin:9411}\ndefaultProviders:\n  tracing: [otel]\n  metrics: [prometheus]\n  accessLogging: [envoy]\nextensionProviders:\n- name: otel\n  opentelemetry:\n    service: otel-collector.observability.svc.cluster.local\n    port: 4317\n    maxTagLength: 100\n    http: {path: /v1/traces, timeout: 5s}\n    resourceDetectors: {environment: {}}\n    dynatraceSampler: {tenant: t, clusterId: 1}\n- name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, enable64bitTraceId: true}\n- name: sd\n  stackdriver: {maxNumberOfAttributes: 10}\n- name: dd\n  datadog: {service: dd.agent, port: 8126}\n- name: sw\n  skywalking: {service: sw, port: 11800}\n- name: ls\n  lightstep: {service: ls, port: 8080, accessToken: x}\n- name: opa\n  envoyExtAuthzGrpc: {service: opa, port: 9191}\n").unwrap();
        assert!(!mesh.tracing_enabled());
        assert_eq!(mesh.tracing_sampling(), 12.5);
        assert_eq!(mesh.default_tracing_providers(), ["otel"]);
        let otel = mesh.provider("otel").unwrap().tracer().unwrap();
        assert!(otel.opentelemetry);
        assert_eq!(
            (otel.service, otel.port, otel.max_tag_length),
            ("otel-collector.observability.svc.cluster.local", 4317, 100)
        );
        let zipkin = mesh.provider("zipkin").unwrap().tracer().unwrap();
        assert!(!zipkin.opentelemetry && zipkin.kind == "zipkin" && zipkin.port == 9411);
        let sd = mesh.provider("sd").unwrap().tracer().unwrap();
        assert!(sd.kind == "stackdriver" && sd.service.is_empty() && sd.port == 0);
        for (name, kind) in [("dd", "datadog"), ("sw", "skywalking"), ("ls", "lightstep")] {
            assert_eq!(mesh.provider(name).unwrap().tracer().unwrap().kind, kind);
        }
        assert!(mesh.provider("opa").unwrap().tracer().is_none());
    }

    #[test]
    fn default_metrics_providers_are_prometheus_unless_written() {
        for (text, wanted) in [
            ("extensionProviders: []\n", &["prometheus"][..]),
            (
                "defaultProviders:\n  tracing: [otel]\n",
                &["prometheus"][..],
            ),
            (
                "defaultProviders:\n  metrics: [prometheus, stackdriver]\n",
                &["prometheus", "stackdriver"][..],
            ),
            ("defaultProviders:\n  metrics: []\n", &[][..]),
        ] {
            let mesh = MeshConfig::parse(text).unwrap();
            assert_eq!(mesh.default_metrics_providers(), wanted, "{text}");
        }
        assert_eq!(
            MeshConfig::default().default_metrics_providers(),
            ["prometheus"]
        );
    }

    #[test]
    fn bad_tracing_is_refused_with_the_field() {
        for (text, wanted) in [
            (
                "defaultConfig:\n  tracing:\n    sampling: 100.5\n",
                "defaultConfig.tracing.sampling: 100.5 is not a percentage",
            ),
            (
                "defaultConfig:\n  tracing:\n    sampling: -1\n",
                "defaultConfig.tracing.sampling: -1 is not a percentage",
            ),
            (
                "extensionProviders:\n- name: otel\n  opentelemetry: {port: 4317}\n",
                "extensionProviders[0].opentelemetry.service: must be set",
            ),
            (
                "extensionProviders:\n- name: otel\n  opentelemetry: {service: otel}\n",
                "extensionProviders[0].opentelemetry.port: 0 is not a port",
            ),
            (
                "extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa, port: 1}\n- name: otel\n  opentelemetry: {service: otel, port: 70000}\n",
                "extensionProviders[1].opentelemetry.port: 70000 is not a port",
            ),
        ] {
            let err = MeshConfig::parse(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
        assert!(MeshConfig::parse("defaultConfig:\n  tracing:\n    sampling: 100\n").is_ok());
        assert!(MeshConfig::parse("defaultConfig:\n  tracing:\n    sampling: 0\n").is_ok());
    }

    #[test]
    fn bad_files_are_refused_with_the_field() {
        let err = load("extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa\n    port: 70000\n").unwrap_err();
        assert!(err.contains("port"), "{err}");
        let err = load("extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa\n    port: 1\n    statusOnError: nope\n").unwrap_err();
        assert!(err.contains("statusOnError"), "{err}");
    }
}
