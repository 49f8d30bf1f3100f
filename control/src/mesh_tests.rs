//! Tests of [`super`]: reading and checking MeshConfig.

use weft_proto::telemetry::{
    AccessLogProvider, Encoding, GrpcAccessLog, MeshAccessLog, OtelAccessLog,
    grpc_access_log::Kind as GrpcKind,
};

use super::*;
use crate::model::access_log::format;

/// Loads `text` from a file of its own, in a directory removed afterwards.
fn load(text: &str) -> Result<MeshConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, text).unwrap();
    MeshConfig::load(&file)
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
    let err =
        load("extensionProviders:\n- name: web\n  envoyExtAuthzHttp:\n    port: 80\n").unwrap_err();
    assert!(err.contains("service"), "{err}");
}

#[test]
fn a_provider_name_used_twice_means_its_last_entry_in_the_first_place() {
    // As istiod's `ApplyMeshConfig`: the later entry replaces the earlier
    // one in place (and a bad earlier one is never checked).
    let mesh = load(
        "extensionProviders:\n- name: logs\n  envoyFileAccessLog: {logFormat: {text: '%BOGUS%'}}\n- name: otel\n  opentelemetry: {service: otel, port: 4317}\n- name: logs\n  envoyFileAccessLog: {path: /var/log/b}\n",
    )
    .unwrap();
    let names: Vec<&str> = mesh.providers().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["prometheus", "stackdriver", "envoy", "logs", "otel"]
    );
    assert_eq!(output(&mesh, "logs").unwrap().file, "/var/log/b");
    // Names differing in case are two names.
    let mesh = load(
        "extensionProviders:\n- name: logs\n  envoyFileAccessLog: {}\n- name: LOGS\n  envoyFileAccessLog: {}\n",
    )
    .unwrap();
    assert_eq!(mesh.providers().len(), 5);
    // An error names the entry where the YAML has it, though merging
    // moved it to the first one's place.
    let err = load(
        "extensionProviders:\n- name: logs\n  envoyFileAccessLog: {}\n- name: otel\n  opentelemetry: {service: otel, port: 4317}\n- name: logs\n  envoyFileAccessLog: {logFormat: {text: '%BOGUS%'}}\n",
    )
    .unwrap_err();
    assert!(err.contains("extensionProviders[2]"), "{err}");
}

#[test]
fn reads_and_checks_the_access_log() {
    let mesh = load("extensionProviders: []\n").unwrap();
    assert_eq!(mesh.access_log_file(), "/dev/stdout");
    assert!(!mesh.access_log_json());
    let mesh = load("accessLogFile: \"\"\naccessLogEncoding: JSON\naccessLogFormat: '{\"code\": \"%RESPONSE_CODE%\"}'\n").unwrap();
    assert_eq!(mesh.access_log_file(), "");
    assert!(mesh.access_log_json());
    // Envoy's operators weft has no value for: accepted (a line prints
    // `-`), not a refused mesh config.
    load("accessLogFormat: '%UPSTREAM_PEER_SUBJECT% %DURATION%'\n").unwrap();
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

/// A file provider's output as [`MeshConfig::access_log_providers`] gives
/// it.
fn output(mesh: &MeshConfig, name: &str) -> Option<MeshAccessLog> {
    mesh.access_log_providers()
        .into_iter()
        .find(|p| p.name == name)
        .and_then(|p| p.output)
}

fn text_log(file: &str, format: &str) -> MeshAccessLog {
    MeshAccessLog {
        file: file.into(),
        encoding: Encoding::Text as i32,
        text: format::parse(format).unwrap(),
        json: vec![],
    }
}

#[test]
fn reads_file_access_log_providers_and_the_other_kinds() {
    let mesh = MeshConfig::parse(
        r#"
extensionProviders:
- name: json-file
  envoyFileAccessLog:
    path: /var/log/access.json
    omitEmptyValues: true
    logFormat:
      labels:
        start_time: "%START_TIME%"
        code: "%RESPONSE_CODE%"
        authority: "%REQ(:AUTHORITY)%"
- name: text-file
  envoyFileAccessLog:
    logFormat: {text: "%DURATION% %RESPONSE_CODE%\n"}
- name: my-prom
  prometheus: {anything: [1, 2]}
- name: otel-als
  envoyOtelAls: {service: otel.observability.svc.cluster.local, port: 4317, logFormat: {text: x}}
- name: http-als
  envoyHttpAls: {service: als, port: 9000}
- name: tcp-als
  envoyTcpAls: {service: als, port: 9001}
"#,
    )
    .unwrap();
    let file = mesh
        .provider("json-file")
        .unwrap()
        .envoy_file_access_log
        .clone()
        .unwrap();
    assert_eq!(file.path, "/var/log/access.json");
    assert!(file.omit_empty_values);
    let labels = file.log_format.unwrap().labels.unwrap();
    assert_eq!(
        labels.0.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["start_time", "code", "authority"],
        "in the order written"
    );
    for (name, kind) in [
        ("json-file", ProviderKind::EnvoyFileAccessLog),
        ("my-prom", ProviderKind::Prometheus),
        ("otel-als", ProviderKind::EnvoyOtelAls),
        ("http-als", ProviderKind::EnvoyHttpAls),
        ("tcp-als", ProviderKind::EnvoyTcpAls),
    ] {
        assert_eq!(mesh.provider(name).unwrap().kind(), Some(kind), "{name}");
    }

    let json = output(&mesh, "json-file").unwrap();
    assert_eq!(json.file, "/var/log/access.json");
    assert_eq!(json.encoding(), Encoding::Json);
    assert_eq!(
        json.json.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(),
        ["start_time", "code", "authority"]
    );
    assert_eq!(json.json[2].value[0].argument, ":authority");
    assert_eq!(
        output(&mesh, "text-file").unwrap(),
        text_log(STDOUT, "%DURATION% %RESPONSE_CODE%"),
        "stdout by default; the newline ends the line"
    );
    // File providers are listed, the built-in `envoy` among them, the
    // OpenTelemetry ones with their collector, and Envoy's gRPC kinds
    // with their service.
    let names: Vec<(String, [bool; 3])> = mesh
        .access_log_providers()
        .into_iter()
        .map(|p| {
            let set = [p.output.is_some(), p.otel.is_some(), p.grpc.is_some()];
            (p.name, set)
        })
        .collect();
    let expected = [
        ("envoy", [true, false, false]),
        ("json-file", [true, false, false]),
        ("text-file", [true, false, false]),
        ("otel-als", [false, true, false]),
        ("http-als", [false, false, true]),
        ("tcp-als", [false, false, true]),
    ];
    assert_eq!(names, expected.map(|(n, set)| (n.to_string(), set)));
}

/// The `envoyHttpAls` or `envoyTcpAls` provider `name`'s service.
fn grpc_als(mesh: &MeshConfig, name: &str) -> GrpcAccessLog {
    mesh.access_log_providers()
        .into_iter()
        .find(|p| p.name == name)
        .and_then(|p| p.grpc)
        .unwrap_or_else(|| panic!("no access-log service for {name}"))
}

#[test]
fn grpc_providers_take_istios_log_names_and_their_headers() {
    let mesh = MeshConfig::parse(
        r#"
extensionProviders:
- name: HTTP-ALS
  envoyHttpAls:
    service: als.observability.svc.cluster.local
    port: 9000
    additionalRequestHeadersToLog: [X-Tenant, user-agent, ':Authority', 'not a name']
    additionalResponseHeadersToLog: [X-Cache, ':path']
    filterStateObjectsToLog: [upstream_peer]
- name: tcp
  envoyTcpAls: {service: observability/als, port: 9001, logName: mine}
"#,
    )
    .unwrap();
    assert_eq!(
        grpc_als(&mesh, "http-als"),
        GrpcAccessLog {
            kind: GrpcKind::Http as i32,
            service: "als.observability.svc.cluster.local".into(),
            port: 9000,
            log_name: "http_envoy_accesslog".into(),
            request_headers: vec!["x-tenant".into(), "user-agent".into(), ":authority".into()],
            response_headers: vec!["x-cache".into()],
            filter_state_objects: vec!["upstream_peer".into()],
        },
        "istiod's default log name; header names lower-cased, those that are none left out"
    );
    assert_eq!(
        grpc_als(&mesh, "tcp"),
        GrpcAccessLog {
            kind: GrpcKind::Tcp as i32,
            service: "observability/als".into(),
            port: 9001,
            log_name: "mine".into(),
            filter_state_objects: vec!["upstream_peer".into(), "downstream_peer".into()],
            ..Default::default()
        },
        "istiod's default filter state: the peers' metadata"
    );
}

#[test]
fn grpc_providers_name_their_service() {
    for (kind, yaml, error) in [
        ("envoyHttpAls", "{port: 9000}", ".service: must be set"),
        (
            "envoyTcpAls",
            "{service: als, port: 70000}",
            ".port: 70000 is not a port (1-65535)",
        ),
    ] {
        let got = MeshConfig::parse(&format!(
            "extensionProviders:\n- name: als\n  {kind}: {yaml}\n"
        ))
        .unwrap_err();
        let error = format!("extensionProviders[0].{kind}{error}");
        assert!(got.contains(&error), "{yaml}: {got}");
    }
}

/// The `envoyOtelAls` provider `name`'s collector and record.
fn otel(mesh: &MeshConfig, name: &str) -> OtelAccessLog {
    mesh.access_log_providers()
        .into_iter()
        .find(|p| p.name == name)
        .and_then(|p| p.otel)
        .unwrap_or_else(|| panic!("no collector for {name}"))
}

#[test]
fn otel_providers_send_istios_default_line_with_sorted_labels() {
    let mesh = MeshConfig::parse(
        r#"
extensionProviders:
- name: OTel
  envoyOtelAls:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
- name: custom
  envoyOtelAls:
    service: observability/otel
    port: 4317
    logName: mine
    logFormat:
      text: "%RESPONSE_CODE% %DURATION%"
      labels:
        user_agent: "%REQ(USER-AGENT)%"
        code: "%RESPONSE_CODE%"
- name: with-newline
  envoyOtelAls:
    service: otel
    port: 4317
    logFormat: {text: "%RESPONSE_CODE%\n"}
"#,
    )
    .unwrap();
    // Istio's default text format, newline included, and no attributes.
    assert_eq!(
        otel(&mesh, "otel"),
        OtelAccessLog {
            service: "otel-collector.observability.svc.cluster.local".into(),
            port: 4317,
            body: format::parse(&format!("{}\n", format::DEFAULT_TEXT)).unwrap(),
            attributes: vec![],
        }
    );
    let custom = otel(&mesh, "custom");
    assert_eq!(custom.service, "observability/otel");
    assert_eq!(
        custom.body,
        format::parse("%RESPONSE_CODE% %DURATION%").unwrap()
    );
    assert_eq!(
        custom
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect::<Vec<_>>(),
        ["code", "user_agent"],
        "sorted, as istiod sorts them"
    );
    assert_eq!(custom.attributes[1].value[0].argument, "user-agent");
    let newline = otel(&mesh, "with-newline");
    assert_eq!(newline.body, format::parse("%RESPONSE_CODE%\n").unwrap());
    assert_eq!(newline.body.last().unwrap().literal, "\n", "as written");
}

#[test]
fn otel_providers_name_their_collector_and_render_what_they_ask() {
    let at = "extensionProviders[0].envoyOtelAls";
    for (yaml, error) in [
        ("{port: 4317}", format!("{at}.service: must be set")),
        (
            "{service: otel, port: 0}",
            format!("{at}.port: 0 is not a port (1-65535)"),
        ),
        (
            "{service: otel, port: 4317, logFormat: {text: '%NOPE%'}}",
            format!("{at}.logFormat.text: position 0: unknown command operator `%NOPE%`"),
        ),
        (
            "{service: otel, port: 4317, logFormat: {labels: {a: '%NOPE%'}}}",
            format!("{at}.logFormat.labels.a: position 0: unknown command operator `%NOPE%`"),
        ),
    ] {
        let got = MeshConfig::parse(&format!(
            "extensionProviders:\n- name: otel\n  envoyOtelAls: {yaml}\n"
        ))
        .unwrap_err();
        assert!(got.contains(&error), "{yaml}: {got}");
    }
}

#[test]
fn file_providers_default_to_istios_formats() {
    let mesh = MeshConfig::parse(
        r#"
accessLogFile: /var/log/mesh.log
accessLogEncoding: JSON
accessLogFormat: '{"code": "%RESPONSE_CODE%"}'
extensionProviders:
- name: plain
  envoyFileAccessLog: {path: /tmp/plain.log}
- name: empty-text
  envoyFileAccessLog: {logFormat: {text: ""}}
- name: empty-labels
  envoyFileAccessLog: {logFormat: {labels: {}}}
- name: no-format
  envoyFileAccessLog: {logFormat: {}}
"#,
    )
    .unwrap();
    // The built-in `envoy` takes MeshConfig's format, at its own path.
    let envoy = output(&mesh, "envoy").unwrap();
    assert_eq!(envoy.file, "/dev/stdout");
    assert_eq!(envoy.encoding(), Encoding::Json);
    assert_eq!(
        envoy.json,
        format::parse_json(r#"{"code": "%RESPONSE_CODE%"}"#).unwrap()
    );
    // The others: Istio's default text, or its default JSON keys.
    assert_eq!(
        output(&mesh, "plain").unwrap(),
        text_log("/tmp/plain.log", format::DEFAULT_TEXT)
    );
    assert_eq!(
        output(&mesh, "empty-text").unwrap(),
        text_log(STDOUT, format::DEFAULT_TEXT)
    );
    let labels = output(&mesh, "empty-labels").unwrap();
    assert_eq!(labels.encoding(), Encoding::Json);
    assert_eq!(labels.json, format::default_json());
    // An empty `logFormat`: istiod sets no format, Envoy uses its own.
    assert_eq!(
        output(&mesh, "no-format").unwrap(),
        text_log(STDOUT, format::ENVOY_DEFAULT_TEXT)
    );

    // No mesh config: just the built-in, in Istio's default text format.
    let providers = MeshConfig::default().access_log_providers();
    assert_eq!(providers.len(), 1);
    assert_eq!(
        providers[0],
        AccessLogProvider {
            name: "envoy".into(),
            output: Some(text_log(STDOUT, format::DEFAULT_TEXT)),
            ..Default::default()
        }
    );
}

#[test]
fn an_entry_named_envoy_replaces_the_built_in() {
    // With a logFormat: that format, at its path.
    let mesh = MeshConfig::parse(
        "extensionProviders:\n- name: envoy\n  envoyFileAccessLog:\n    path: /var/log/envoy.log\n    logFormat: {text: '%RESPONSE_CODE%'}\n",
    )
    .unwrap();
    let providers = mesh.access_log_providers();
    assert_eq!(providers.len(), 1);
    assert_eq!(
        providers[0].output,
        Some(text_log("/var/log/envoy.log", "%RESPONSE_CODE%"))
    );
    // Without one: MeshConfig's format, at its path; with
    // omitEmptyValues, Istio's default format instead.
    let mesh = MeshConfig::parse(
        "accessLogFormat: '%DURATION%'\nextensionProviders:\n- name: envoy\n  envoyFileAccessLog: {path: /var/log/envoy.log}\n",
    )
    .unwrap();
    assert_eq!(
        output(&mesh, "envoy"),
        Some(text_log("/var/log/envoy.log", "%DURATION%"))
    );
    let mesh = MeshConfig::parse(
        "accessLogFormat: '%DURATION%'\nextensionProviders:\n- name: envoy\n  envoyFileAccessLog: {omitEmptyValues: true}\n",
    )
    .unwrap();
    assert_eq!(
        output(&mesh, "envoy"),
        Some(text_log(STDOUT, format::DEFAULT_TEXT))
    );
    // Of another kind: no `envoy` file provider left.
    let mesh = MeshConfig::parse(
        "extensionProviders:\n- name: envoy\n  envoyOtelAls: {service: otel, port: 4317}\n",
    )
    .unwrap();
    let providers = mesh.access_log_providers();
    assert!(providers.len() == 1 && providers[0].output.is_none());
    assert_eq!(
        mesh.resolve_provider("ENVOY").unwrap().kind(),
        Some(ProviderKind::EnvoyOtelAls)
    );
    // Named in another case, it is another provider, which the built-in
    // shadows (Istio resolves a name to the first match ignoring case).
    let mesh = MeshConfig::parse(
        "extensionProviders:\n- name: Envoy\n  envoyFileAccessLog: {path: /var/log/other.log}\n",
    )
    .unwrap();
    let providers = mesh.access_log_providers();
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].output.as_ref().unwrap().file, STDOUT);
    assert_eq!(
        mesh.resolve_provider("Envoy").unwrap().name,
        "envoy",
        "the built-in"
    );
}

#[test]
fn names_resolve_ignoring_case_built_ins_first() {
    let mesh = MeshConfig::parse(
        "extensionProviders:\n- name: My-Prom\n  prometheus: {}\n- name: logs\n  envoyFileAccessLog: {}\n- name: LOGS\n  envoyFileAccessLog: {path: /shadowed}\n",
    )
    .unwrap();
    let names: Vec<&str> = mesh.providers().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "prometheus",
            "stackdriver",
            "envoy",
            "My-Prom",
            "logs",
            "LOGS"
        ]
    );
    assert_eq!(mesh.resolve_provider("my-prom").unwrap().name, "My-Prom");
    assert_eq!(mesh.resolve_provider("Logs").unwrap().name, "logs");
    assert!(mesh.resolve_provider("nope").is_none());
    let logs: Vec<(String, String)> = mesh
        .access_log_providers()
        .into_iter()
        .map(|p| (p.name, p.output.unwrap().file))
        .collect();
    assert_eq!(
        logs,
        [
            ("envoy".to_string(), STDOUT.to_string()),
            ("logs".to_string(), STDOUT.to_string()),
        ],
        "`LOGS` is never resolved to"
    );
    for (name, prometheus) in [
        ("prometheus", true),
        ("Prometheus", true),
        ("my-prom", true),
        ("MY-PROM", true),
        ("stackdriver", false),
        ("envoy", false),
        ("logs", false),
        ("nope", false),
    ] {
        assert_eq!(mesh.is_prometheus(name), prometheus, "{name}");
    }
    // `prometheus` redefined as another kind is not Prometheus any more.
    let mesh =
        MeshConfig::parse("extensionProviders:\n- name: prometheus\n  stackdriver: {}\n").unwrap();
    assert!(!mesh.is_prometheus("prometheus") && !mesh.is_prometheus("PROMETHEUS"));
}

#[test]
fn default_access_log_providers_are_read_lower_cased() {
    let mesh = MeshConfig::parse("defaultProviders:\n  accessLogging: [envoy, My-Logs]\n").unwrap();
    assert_eq!(mesh.default_access_log_providers(), ["envoy", "my-logs"]);
    assert!(
        MeshConfig::default()
            .default_access_log_providers()
            .is_empty()
    );
}

#[test]
fn bad_file_providers_are_refused_with_the_field() {
    for (text, wanted) in [
        (
            "extensionProviders:\n- name: a\n  envoyFileAccessLog:\n    logFormat: {text: '%NOPE%', labels: {a: '%DURATION%'}}\n",
            "extensionProviders[0].envoyFileAccessLog.logFormat: set `text` or `labels`, not both",
        ),
        (
            "extensionProviders:\n- name: a\n  envoyFileAccessLog:\n    logFormat: {text: '[%START_TIME%] %NOT_AN_OPERATOR%'}\n",
            "extensionProviders[0].envoyFileAccessLog.logFormat.text: position 15: unknown command operator `%NOT_AN_OPERATOR%`",
        ),
        (
            "extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa, port: 1}\n- name: b\n  prometheus: {}\n- name: c\n  envoyFileAccessLog:\n    logFormat:\n      labels:\n        code: '%RESPONSE_CODE%'\n        start_time: '%START_TIME(%s %q)%'\n",
            "extensionProviders[2].envoyFileAccessLog.logFormat.labels.start_time: position 0: `%START_TIME(%s %q)%`: in the time format, position 3: `%q`",
        ),
        (
            "extensionProviders:\n- name: a\n  envoyFileAccessLog:\n    logFormat:\n      labels: {nested: {a: b}}\n",
            "extensionProviders[0].envoyFileAccessLog.logFormat.labels.nested",
        ),
        (
            "extensionProviders:\n- name: a\n  prometheus: {}\n  envoyFileAccessLog: {}\n",
            "extensionProviders[0]: sets `prometheus` and `envoyFileAccessLog`; a provider has one kind",
        ),
    ] {
        let err = MeshConfig::parse(text).unwrap_err();
        assert!(err.contains(wanted), "{text}: {err}");
    }
}

#[test]
fn the_default_retry_policy_is_read_and_taken_as_istiod_takes_it() {
    let mesh = load("defaultHttpRetryPolicy:\n  attempts: 4\n  perTryTimeout: 2s\n  retryOn: gateway-error,503\n  retryIgnorePreviousHosts: false\n").unwrap();
    let retry = mesh.default_http_retry_policy.unwrap();
    assert_eq!(retry.attempts, 4);
    assert_eq!(retry.retry_on, "gateway-error,503");
    assert_eq!(retry.retry_ignore_previous_hosts, Some(false));
    assert!(load("{}").unwrap().default_http_retry_policy.is_none());
    let inbound = load("defaultInboundHttpRetryPolicy:\n  attempts: 3\n  retryOn: reset\n")
        .unwrap()
        .default_inbound_http_retry_policy
        .unwrap();
    assert_eq!((inbound.attempts, inbound.retry_on.as_str()), (3, "reset"));
    assert!(
        load("{}")
            .unwrap()
            .default_inbound_http_retry_policy
            .is_none()
    );
    // Unlike the outbound one, istiod refuses a bad inbound policy.
    for (policy, wanted) in [
        (
            "{attempts: -1}",
            "defaultInboundHttpRetryPolicy.attempts: must not be negative",
        ),
        ("{attempts: 0, retryOn: reset}", "set with `attempts: 0`"),
        (
            "{attempts: 0, backoff: 10ms}",
            "`backoff` set with `attempts: 0`",
        ),
        (
            "{attempts: 2, retryOn: sometimes}",
            "`sometimes` is not a retry policy",
        ),
    ] {
        let err = load(&format!("defaultInboundHttpRetryPolicy: {policy}\n")).unwrap_err();
        assert!(err.contains(wanted), "{policy}: {err}");
    }
    // What it ignores passes.
    assert!(load("defaultInboundHttpRetryPolicy: {attempts: 1, perTryTimeout: 1s}\n").is_ok());
    // What a VirtualService may not say, istiod takes here (no retries;
    // unknown conditions ignored): the mesh config is not refused for it.
    for policy in [
        "{attempts: -1}",
        "{attempts: 0, retryOn: 5xx}",
        "{attempts: 2, retryOn: sometimes}",
    ] {
        let mesh = load(&format!("defaultHttpRetryPolicy: {policy}\n"));
        assert!(mesh.is_ok(), "{policy}: {mesh:?}");
    }
    // Types and field names still are.
    for (policy, want) in [
        ("{attempts: 2, perTryTimeout: soon}", "perTryTimeout"),
        ("{attempts: 2, retries: 3}", "retries"),
    ] {
        let err = load(&format!("defaultHttpRetryPolicy: {policy}\n")).unwrap_err();
        assert!(err.contains(want), "{policy}: {err}");
    }
}
