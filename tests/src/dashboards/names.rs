//! The metric and label names a PromQL expression uses, and those weft
//! exports (the allow-lists dashboards are checked against).

use std::collections::BTreeSet;

/// Every metric weft exports that a dashboard may use: the agents'
/// (scraped at `:15020/stats/prometheus`) and weft-control's (`:15014/metrics`).
/// A histogram is listed by its series (`_bucket`, `_sum`, `_count`).
pub const METRICS: &[&str] = &[
    // Agent: Istio's standard metrics.
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "istio_request_duration_milliseconds_sum",
    "istio_request_duration_milliseconds_count",
    "istio_request_bytes_bucket",
    "istio_request_bytes_sum",
    "istio_request_bytes_count",
    "istio_response_bytes_bucket",
    "istio_response_bytes_sum",
    "istio_response_bytes_count",
    // Agent: weft's health metrics.
    "weft_agent_connections_active",
    "weft_agent_connections_denied_total",
    "weft_agent_timeouts_total",
    "weft_agent_requests_authorized_total",
    "weft_agent_xds_connected",
    "weft_agent_workloads",
    "weft_agent_pods_enrolled",
    "weft_agent_certificate_expiry_timestamp_seconds",
    "weft_agent_ebpf_map_entries",
    "weft_agent_ebpf_map_capacity",
    // weft-control, with istiod's names.
    "pilot_xds",
    "pilot_xds_pushes",
    "pilot_proxy_convergence_time_bucket",
    "pilot_proxy_convergence_time_sum",
    "pilot_proxy_convergence_time_count",
    "pilot_total_xds_rejects",
    "pilot_total_xds_internal_errors",
    "pilot_k8s_cfg_events",
    "pilot_services",
    "pilot_virt_services",
    "weft_control_config_errors",
    "citadel_server_csr_count",
    "citadel_server_success_cert_issuance_count",
    "citadel_server_root_cert_expiry_timestamp",
    "istio_build",
];

/// Every label a dashboard may use: Istio's standard labels, weft's own,
/// the scrape's `instance` and `job`, and `le`.
pub const LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "source_canonical_service",
    "source_canonical_revision",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
    // weft's agent metrics.
    "reason",
    "stage",
    "verdict",
    "identity",
    "map",
    // weft-control's.
    "type",
    "event",
    "component",
    "tag",
    "version",
    // Every series.
    "instance",
    "job",
    "le",
    "__name__",
];

/// PromQL keywords and aggregation operators: identifiers that are not
/// metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
];

/// Label-list keywords: `by (a, b)`.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric and label names a PromQL expression uses: `(metrics, labels)`.
/// Metric names are the bare selectors and the names of `__name__`
/// matchers (split at `|`); labels are those of matchers and of grouping
/// lists. Strings (label values, label_join's arguments) are skipped.
pub fn names_in(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let mut in_braces = false;
    let mut last_label: Option<String> = None;
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let quote = c;
            let mut j = i + 1;
            let mut value = String::new();
            while j < chars.len() && chars[j] != quote {
                if chars[j] == '\\' && quote != '`' {
                    j += 1;
                }
                if j < chars.len() {
                    value.push(chars[j]);
                }
                j += 1;
            }
            if in_braces && last_label.as_deref() == Some("__name__") {
                metrics.extend(value.split('|').map(str::to_string));
            }
            i = j + 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            in_braces = true;
            i += 1;
        } else if c == '}' {
            in_braces = false;
            last_label = None;
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                // An exponent's sign: 1e+06.
                if matches!(chars[i], 'e' | 'E') && matches!(chars.get(i + 1), Some('+' | '-')) {
                    i += 1;
                }
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if in_braces {
                labels.insert(ident.clone());
                last_label = Some(ident);
                continue;
            }
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            if GROUPING.contains(&ident.as_str()) && next == Some('(') {
                let close = chars[j..]
                    .iter()
                    .position(|&c| c == ')')
                    .map_or(chars.len(), |p| j + p);
                let list: String = chars[j + 1..close].iter().collect();
                labels.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
                i = close + 1;
            } else if next == Some('(') || KEYWORDS.contains(&ident.as_str()) {
                // A function, an aggregation or a keyword.
            } else {
                metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboards::example_values;
    use crate::dashboards::tests::boards;

    #[test]
    fn finds_metric_and_label_names() {
        let (metrics, labels) = names_in(
            r#"label_join(histogram_quantile(0.5, sum by (le, a) (rate(m_bucket{b=~"x|y", c!="}"}[1m]))), "d", ".", "e") / on (f) group_left(g) sum without (h) (n) or vector(0) + count({__name__=~"p|q", i="1"}) - 1e+06 * time()"#,
        );
        assert_eq!(
            metrics,
            BTreeSet::from(["m_bucket", "n", "p", "q"].map(String::from))
        );
        assert_eq!(
            labels,
            BTreeSet::from(["le", "a", "b", "c", "f", "g", "h", "__name__", "i"].map(String::from))
        );
    }

    /// A misspelt metric or label would make a panel silently empty.
    #[test]
    fn dashboards_use_only_weft_metrics_and_labels() {
        let values = example_values();
        let mut used_metrics = BTreeSet::new();
        for board in boards() {
            let mut exprs = board.expressions(&values).unwrap();
            exprs.extend(board.variable_queries(&values).unwrap());
            for (what, expr) in exprs {
                assert!(
                    !expr.contains('$'),
                    "{}: {what}: unsubstituted: {expr}",
                    board.file
                );
                let (metrics, labels) = names_in(&expr);
                assert!(
                    !metrics.is_empty(),
                    "{}: {what}: no metric in {expr}",
                    board.file
                );
                for metric in &metrics {
                    assert!(
                        METRICS.contains(&metric.as_str()),
                        "{}: {what}: unknown metric {metric} in {expr}",
                        board.file
                    );
                }
                for label in &labels {
                    assert!(
                        LABELS.contains(&label.as_str()),
                        "{}: {what}: unknown label {label} in {expr}",
                        board.file
                    );
                }
                used_metrics.extend(metrics);
            }
        }
        // And every metric weft exports has a place on some dashboard
        // (a histogram's _sum and _count may go unused; so
        // citadel_server_csr_count is checked by name below).
        for metric in METRICS {
            if metric.ends_with("_sum") || metric.ends_with("_count") {
                continue;
            }
            assert!(
                used_metrics.contains(*metric),
                "no dashboard shows {metric}"
            );
        }
        assert!(used_metrics.contains("citadel_server_csr_count"));
    }
}
