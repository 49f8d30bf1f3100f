//! telemetry.istio.io Telemetry: tracing, metrics and access logging
//! providers per workload. Fields follow istio/api
//! `telemetry/v1alpha1/telemetry.proto`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Ignored, Invalid, ObjectMeta, Validate, invalid,
    istio::Duration,
    selector::{PolicyTargetReference, WorkloadSelector},
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TelemetrySpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub tracing: Vec<Tracing>,
    #[serde(default)]
    pub metrics: Vec<Metrics>,
    #[serde(default)]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    #[serde(default, rename = "match")]
    pub matches: Option<ModeMatch>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default)]
    pub disable_span_reporting: Option<bool>,
    /// By tag name (so in name order).
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default)]
    pub enable_istio_tags: Option<bool>,
}

/// A `customTags` value: exactly one of `literal`, `header` and
/// `environment` (checked by validation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default)]
    pub literal: Option<LiteralTag>,
    #[serde(default)]
    pub header: Option<ValueFrom>,
    #[serde(default)]
    pub environment: Option<ValueFrom>,
}

/// `customTags.NAME.literal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

/// `customTags.NAME.header` (a request header) or `.environment` (a
/// variable of the proxy's environment), with the value used when it is
/// absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueFrom {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub default_value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeMatch {
    #[serde(default)]
    pub mode: Option<WorkloadMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    ClientAndServer,
    Client,
    Server,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub overrides: Vec<MetricsOverride>,
    #[serde(default)]
    pub reporting_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverride {
    #[serde(default, rename = "match")]
    pub matches: Option<MetricSelector>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub custom_metric: Option<String>,
    #[serde(default)]
    pub mode: Option<WorkloadMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagOverride {
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    #[serde(default, rename = "match")]
    pub matches: Option<ModeMatch>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub filter: Option<AccessLogFilter>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFilter {
    #[serde(default)]
    pub expression: String,
}

/// Istio's standard metric names.
const METRICS: &[&str] = &[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
];

impl Validate for Telemetry {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        let spec = &self.spec;
        if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
            e.push(invalid(
                "spec.selector",
                "only one of `selector` and `targetRef`/`targetRefs` may be set",
            ));
        }
        let providers = |list: &[ProviderRef], at: &str, e: &mut Vec<Invalid>| {
            for (j, p) in list.iter().enumerate() {
                if p.name.is_empty() {
                    e.push(invalid(format!("{at}.providers[{j}].name"), "must be set"));
                }
            }
        };
        for (i, t) in spec.tracing.iter().enumerate() {
            let at = format!("spec.tracing[{i}]");
            providers(&t.providers, &at, &mut e);
            if let Some(p) = t.random_sampling_percentage
                && !(0.0..=100.0).contains(&p)
            {
                e.push(invalid(
                    format!("{at}.randomSamplingPercentage"),
                    format!("{p} is not a percentage (0-100)"),
                ));
            }
            for (name, tag) in &t.custom_tags {
                let at = format!("{at}.customTags.{name}");
                if name.is_empty() {
                    e.push(invalid(at, "the tag name must not be empty"));
                    continue;
                }
                custom_tag(tag, &at, &mut e);
            }
        }
        for (i, m) in spec.metrics.iter().enumerate() {
            let at = format!("spec.metrics[{i}]");
            providers(&m.providers, &at, &mut e);
            for (j, o) in m.overrides.iter().enumerate() {
                if let Some(sel) = &o.matches
                    && let Some(metric) = &sel.metric
                    && !METRICS.contains(&metric.as_str())
                {
                    e.push(invalid(
                        format!("{at}.overrides[{j}].match.metric"),
                        format!("`{metric}` is not one of {}", METRICS.join(", ")),
                    ));
                }
                for (tag, op) in &o.tag_overrides {
                    let at = format!("{at}.overrides[{j}].tagOverrides[\"{tag}\"]");
                    tag_override(tag, op, &at, &mut e);
                }
            }
        }
        for (i, a) in spec.access_logging.iter().enumerate() {
            let at = format!("spec.accessLogging[{i}]");
            providers(&a.providers, &at, &mut e);
            // weft's agent evaluates a subset of CEL: anything else is
            // refused here, so it never reaches a proxy.
            if let Some(filter) = &a.filter
                && !filter.expression.trim().is_empty()
                && let Err(reason) = crate::model::access_log::cel::parse(&filter.expression)
            {
                e.push(invalid(
                    format!("{at}.filter.expression"),
                    format!("`{}`: {reason}", filter.expression),
                ));
            }
        }
        e
    }
}

/// One `tagOverrides` entry: a Prometheus label name, a known
/// operation, and for UPSERT (the default) a value weft's agent can
/// evaluate. REMOVE ignores `value`.
fn tag_override(name: &str, op: &TagOverride, at: &str, e: &mut Vec<Invalid>) {
    if let Err(reason) = label_name(name) {
        e.push(invalid(at, reason));
    }
    match op.operation.as_deref() {
        None | Some("UPSERT") => {}
        Some("REMOVE") => return,
        Some(_) => {
            e.push(invalid(
                format!("{at}.operation"),
                "must be UPSERT or REMOVE",
            ));
            return;
        }
    }
    let Some(value) = op.value.as_deref().filter(|v| !v.trim().is_empty()) else {
        e.push(invalid(format!("{at}.value"), "must be set for UPSERT"));
        return;
    };
    if let Err(reason) = crate::model::access_log::cel::parse_value(value) {
        e.push(invalid(
            format!("{at}.value"),
            format!("`{value}`: {reason}"),
        ));
    }
}

/// Whether `name` may be a Prometheus label: `[a-zA-Z_][a-zA-Z0-9_]*`,
/// and not `__`-prefixed (reserved for Prometheus' own).
fn label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`{name}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "`{name}`: label names starting with `__` are reserved for Prometheus"
        ));
    }
    Ok(())
}

/// One `customTags` value: exactly one source, and the header or
/// variable it names.
fn custom_tag(tag: &CustomTag, at: &str, e: &mut Vec<Invalid>) {
    let set = [
        tag.literal.is_some(),
        tag.header.is_some(),
        tag.environment.is_some(),
    ]
    .into_iter()
    .filter(|s| *s)
    .count();
    if set != 1 {
        e.push(invalid(
            at,
            "exactly one of `literal`, `header` and `environment` must be set",
        ));
        return;
    }
    if let Some(header) = &tag.header
        && http::HeaderName::from_bytes(header.name.as_bytes()).is_err()
    {
        e.push(invalid(
            format!("{at}.header.name"),
            format!("`{}` is not a header name", header.name),
        ));
    }
    if let Some(env) = &tag.environment
        && env.name.is_empty()
    {
        e.push(invalid(format!("{at}.environment.name"), "must be set"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(spec: &str) -> Telemetry {
        let text = format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\n  namespace: shop\nspec:\n{spec}"
        );
        let docs = crate::yaml::parse(&text, crate::yaml::Limits::default()).unwrap();
        crate::yaml::de::from_node(&docs[0].root, crate::yaml::path::FieldPath::root()).unwrap()
    }

    #[test]
    fn tracing_reads_custom_tags() {
        let t = telemetry(
            "  tracing:\n  - randomSamplingPercentage: 100\n    disableSpanReporting: true\n    customTags:\n      team: {literal: {value: payments}}\n      user: {header: {name: X-User, defaultValue: anon}}\n      pod: {environment: {name: POD_NAME}}\n",
        );
        assert!(t.validate().is_empty(), "{:?}", t.validate());
        let tracing = &t.spec.tracing[0];
        assert_eq!(tracing.random_sampling_percentage, Some(100.0));
        let tags: Vec<&str> = tracing.custom_tags.keys().map(String::as_str).collect();
        assert_eq!(tags, ["pod", "team", "user"]);
        assert_eq!(
            tracing.custom_tags["team"].literal.as_ref().unwrap().value,
            "payments"
        );
        let user = tracing.custom_tags["user"].header.as_ref().unwrap();
        assert_eq!(
            (user.name.as_str(), user.default_value.as_str()),
            ("X-User", "anon")
        );
        let pod = tracing.custom_tags["pod"].environment.as_ref().unwrap();
        assert!(pod.name == "POD_NAME" && pod.default_value.is_empty());
    }

    #[test]
    fn bad_tracing_is_refused_with_the_field() {
        for (spec, path, wanted) in [
            (
                "  tracing:\n  - randomSamplingPercentage: 101\n",
                "spec.tracing[0].randomSamplingPercentage",
                "101 is not a percentage",
            ),
            (
                "  tracing:\n  - {}\n  - randomSamplingPercentage: -0.5\n",
                "spec.tracing[1].randomSamplingPercentage",
                "-0.5 is not a percentage",
            ),
            (
                "  tracing:\n  - customTags:\n      both: {literal: {value: a}, header: {name: x}}\n",
                "spec.tracing[0].customTags.both",
                "exactly one of",
            ),
            (
                "  tracing:\n  - customTags:\n      none: {}\n",
                "spec.tracing[0].customTags.none",
                "exactly one of",
            ),
            (
                "  tracing:\n  - customTags:\n      h: {header: {name: 'bad name'}}\n",
                "spec.tracing[0].customTags.h.header.name",
                "`bad name` is not a header name",
            ),
            (
                "  tracing:\n  - customTags:\n      e: {environment: {defaultValue: x}}\n",
                "spec.tracing[0].customTags.e.environment.name",
                "must be set",
            ),
        ] {
            let errors = telemetry(spec).validate();
            assert_eq!(errors.len(), 1, "{spec}: {errors:?}");
            assert_eq!(errors[0].path, path, "{spec}");
            assert!(errors[0].message.contains(wanted), "{spec}: {errors:?}");
        }
    }

    #[test]
    fn unknown_custom_tag_sources_are_refused() {
        let text = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\n  namespace: shop\nspec:\n  tracing:\n  - customTags:\n      x: {query: {name: q}}\n";
        let docs = crate::yaml::parse(text, crate::yaml::Limits::default()).unwrap();
        let err = crate::yaml::de::from_node::<Telemetry>(
            &docs[0].root,
            crate::yaml::path::FieldPath::root(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("query"), "{err}");
    }

    #[test]
    fn tag_overrides_are_checked() {
        let ok = telemetry(
            "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides:\n        request_host: {operation: REMOVE, value: 'anything == 1'}\n        user: {value: \"request.headers['x-user']\"}\n        _port: {operation: UPSERT, value: string(destination.port)}\n        team: {value: \"'payments'\"}\n",
        );
        assert!(ok.validate().is_empty(), "{:?}", ok.validate());
        let at = "spec.metrics[0].overrides[0].tagOverrides";
        for (tag, path, wanted) in [
            (
                "host: {value: \"request.host == 'a'\"}",
                format!("{at}[\"host\"].value"),
                "`request.host == 'a'`: position 13: unexpected text after the value",
            ),
            (
                "peer: {value: \"upstream_peer.labels['app'].value\"}",
                format!("{at}[\"peer\"].value"),
                "`upstream_peer.labels['app'].value`: position 0: unknown attribute",
            ),
            (
                "empty: {operation: UPSERT}",
                format!("{at}[\"empty\"].value"),
                "must be set for UPSERT",
            ),
            (
                "blank: {value: ''}",
                format!("{at}[\"blank\"].value"),
                "must be set for UPSERT",
            ),
            (
                "x: {operation: DELETE}",
                format!("{at}[\"x\"].operation"),
                "must be UPSERT or REMOVE",
            ),
            (
                "'x-user': {operation: REMOVE}",
                format!("{at}[\"x-user\"]"),
                "`x-user` is not a Prometheus label name",
            ),
            (
                "'1st': {operation: REMOVE}",
                format!("{at}[\"1st\"]"),
                "`1st` is not a Prometheus label name",
            ),
            (
                "__name__: {operation: REMOVE}",
                format!("{at}[\"__name__\"]"),
                "reserved for Prometheus",
            ),
        ] {
            let spec = format!("  metrics:\n  - overrides:\n    - tagOverrides:\n        {tag}\n");
            let errors = telemetry(&spec).validate();
            assert_eq!(errors.len(), 1, "{tag}: {errors:?}");
            assert_eq!(errors[0].path, path, "{tag}");
            assert!(errors[0].message.contains(wanted), "{tag}: {errors:?}");
        }
        // A bad name and a bad value: both are reported.
        let errors = telemetry(
            "  metrics:\n  - overrides:\n    - tagOverrides:\n        '': {value: 'request.hots'}\n",
        )
        .validate();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn access_log_filters_are_checked() {
        let ok = telemetry(
            "  accessLogging:\n  - providers: [{name: envoy}]\n    match: {mode: SERVER}\n    filter:\n      expression: response.code >= 400\n",
        );
        assert!(ok.validate().is_empty());
        let bad =
            telemetry("  accessLogging:\n  - filter:\n      expression: response.code >== 400\n");
        let errors = bad.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.accessLogging[0].filter.expression");
        assert!(
            errors[0].message.contains("`response.code >== 400`")
                && errors[0].message.contains("position 16"),
            "{}",
            errors[0].message
        );
    }
}
