//! The two Prometheus exposition formats, for the agent's
//! `/stats/prometheus` and weft-control's `/metrics`. Metrics are encoded
//! once, as OpenMetrics text (what `prometheus-client` writes); a scraper
//! that does not ask for OpenMetrics (curl, older scrapers) gets the
//! classic text format (0.0.4), converted line by line here.

/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the classic text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (as Prometheus does
/// when it scrapes).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text as the classic text format: no `# EOF` or `# UNIT`,
/// counter families named by their `_total` sample, `unknown` as
/// `untyped`, `info` as `gauge`, no `_created` samples or exemplars.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    // Counter families are renamed on their HELP line too, which comes
    // before their TYPE line: find them first.
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let rename = |name: &str| -> String {
        if counters.contains(name) {
            format!("{name}_total")
        } else {
            name.to_string()
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "unknown" => (rename(name), "untyped"),
                "info" => (format!("{name}_info"), "gauge"),
                other => (rename(name), other),
            };
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", rename(name)));
        } else {
            let sample = line
                .split_once(" # ")
                .map_or(line, |(sample, _exemplar)| sample);
            let name = sample.split(['{', ' ']).next().unwrap_or_default();
            let created = name
                .strip_suffix("_created")
                .is_some_and(|family| counters.contains(family));
            if !created {
                out.push_str(sample);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_the_classic_text_format() {
        let om = "# HELP istio_requests Total requests.\n# TYPE istio_requests counter\nistio_requests_total{reporter=\"destination\"} 3\nistio_requests_created{reporter=\"destination\"} 1.7e9\n# HELP weft_connections_active Connections.\n# TYPE weft_connections_active gauge\nweft_connections_active 2\n# TYPE up unknown\nup 1\n# HELP build Build.\n# TYPE build info\nbuild_info{version=\"1\"} 1\n# TYPE lat histogram\n# UNIT lat milliseconds\nlat_bucket{le=\"1.0\"} 1 # {trace_id=\"a\"} 0.5\nlat_sum 0.5\nlat_count 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP istio_requests_total Total requests.\n# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"destination\"} 3\n# HELP weft_connections_active Connections.\n# TYPE weft_connections_active gauge\nweft_connections_active 2\n# TYPE up untyped\nup 1\n# HELP build Build.\n# TYPE build_info gauge\nbuild_info{version=\"1\"} 1\n# TYPE lat histogram\nlat_bucket{le=\"1.0\"} 1\nlat_sum 0.5\nlat_count 1\n"
        );
    }

    #[test]
    fn prometheus_scrapes_get_openmetrics() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
