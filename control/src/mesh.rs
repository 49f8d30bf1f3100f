//! The parts of Istio's MeshConfig weft-control reads (`--mesh-config`,
//! the YAML of the `istio` ConfigMap's `mesh` key): `extensionProviders`,
//! which CUSTOM AuthorizationPolicies name, and the access log
//! (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`). Every other
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
    fn bad_files_are_refused_with_the_field() {
        let err = load("extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa\n    port: 70000\n").unwrap_err();
        assert!(err.contains("port"), "{err}");
        let err = load("extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa\n    port: 1\n    statusOnError: nope\n").unwrap_err();
        assert!(err.contains("statusOnError"), "{err}");
    }
}
