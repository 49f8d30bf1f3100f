//! `/metrics` on the monitoring port: istiod's metric names, counted as
//! an agent connects, is pushed config changes, NACKs, as config is
//! rejected and as certificates are asked for; the body parses as the
//! classic Prometheus text format, and as OpenMetrics when asked.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{kube::*, *};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_apiserver::Options;
use weft_proto::ADDRESS_TYPE_URL;

const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// GET `/metrics` with `accept`: (content type, body).
async fn scrape(cp: &ControlPlane, accept: Option<&str>) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(cp.handle.debug_addr())
        .await
        .unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: weft\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("monitoring server answers")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_string())
        })
        .expect("a content type");
    (content_type, body.to_string())
}

/// The classic text format's samples by `name{labels}` (labels as
/// written), checked line by line against the format.
async fn metrics(cp: &ControlPlane) -> BTreeMap<String, f64> {
    let (content_type, body) = scrape(cp, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    parse_text_format(&body)
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no `{series}` in {samples:#?}"))
}

/// Waits until `series` is `want`.
async fn until(cp: &ControlPlane, series: &str, want: f64) {
    eventually(&format!("{series} == {want}"), || async {
        (metrics(cp).await.get(series) == Some(&want)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn metrics_count_agents_pushes_nacks_config_and_certificates() {
    let cp = ControlPlane::start(&[
        ("ns.yaml", MESH_NS),
        ("svc.yaml", WEB_SVC),
        ("pods/a.yaml", &pod("a", "node-1", "web", "10.1.0.1")),
    ])
    .await;

    // Nothing connected yet.
    let before = metrics(&cp).await;
    assert!(
        !before
            .iter()
            .any(|(series, v)| series.starts_with("pilot_xds{") && *v != 0.0),
        "{before:#?}"
    );
    assert_eq!(
        value(
            &before,
            &format!(
                "istio_build{{component=\"pilot\",tag=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(value(&before, "pilot_services"), 1.0);
    assert_eq!(value(&before, "pilot_virt_services"), 0.0);
    assert_eq!(value(&before, "weft_control_config_errors"), 0.0);
    assert_eq!(
        value(&before, "pilot_k8s_reg_events{type=\"Pods\",event=\"add\"}"),
        1.0
    );
    assert_eq!(
        value(
            &before,
            "pilot_k8s_reg_events{type=\"Services\",event=\"add\"}"
        ),
        1.0
    );
    assert!(value(&before, "citadel_server_root_cert_expiry_timestamp") > 1.7e9);
    assert!(value(&before, "citadel_server_root_cert_expiry_seconds") > 0.0);

    // An agent (as ztunnel does, with its Istio version) connects: one
    // push (its first sync) of addresses.
    let mut first = request("node-1");
    first.node.as_mut().unwrap().metadata = Some(prost_types::Struct {
        fields: [(
            "ISTIO_VERSION".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("1.28.0".into())),
            },
        )]
        .into(),
    });
    let mut xds = XdsSession::open(cp.xds_client(&cp.token("node-1")).await, first)
        .await
        .unwrap();
    xds.recv_and_ack().await;
    until(&cp, "pilot_xds{version=\"1.28.0\"}", 1.0).await;
    until(&cp, "pilot_xds_pushes{type=\"wds\"}", 1.0).await;
    let connected = metrics(&cp).await;
    assert_eq!(
        value(&connected, "pilot_xds_push_time_count{type=\"wds\"}"),
        1.0
    );
    // A first sync is no config change: nothing converged yet.
    assert_eq!(value(&connected, "pilot_proxy_convergence_time_count"), 0.0);

    // Three config changes, three pushes; each converged once.
    for (name, ip) in [("b", "10.1.0.2"), ("c", "10.1.0.3"), ("d", "10.1.0.4")] {
        cp.write(
            &format!("pods/{name}.yaml"),
            &pod(name, "node-2", "web", ip),
        );
        let pushed = xds.recv_and_ack().await;
        assert_eq!(names(&pushed), [uid(name)]);
    }
    until(&cp, "pilot_xds_pushes{type=\"wds\"}", 4.0).await;
    until(&cp, "pilot_proxy_convergence_time_count", 3.0).await;
    let pushed = metrics(&cp).await;
    assert_eq!(
        value(&pushed, "pilot_xds_push_time_count{type=\"wds\"}"),
        4.0
    );
    assert_eq!(
        value(&pushed, "pilot_proxy_convergence_time_bucket{le=\"+Inf\"}"),
        3.0
    );
    // On loopback a push converges well within istiod's first bucket.
    assert_eq!(
        value(&pushed, "pilot_proxy_convergence_time_bucket{le=\"0.1\"}"),
        3.0
    );
    assert!(value(&pushed, "pilot_proxy_convergence_time_sum") < 0.3);
    assert_eq!(
        value(&pushed, "pilot_k8s_reg_events{type=\"Pods\",event=\"add\"}"),
        4.0
    );
    assert_eq!(value(&pushed, "pilot_total_xds_rejects{type=\"wds\"}"), 0.0);

    // An update and a delete are counted as such.
    cp.write("pods/d.yaml", &pod("d", "node-3", "web", "10.1.0.4"));
    xds.recv_and_ack().await;
    cp.remove("pods/d.yaml");
    xds.recv_and_ack().await;
    until(
        &cp,
        "pilot_k8s_reg_events{type=\"Pods\",event=\"update\"}",
        1.0,
    )
    .await;
    until(
        &cp,
        "pilot_k8s_reg_events{type=\"Pods\",event=\"delete\"}",
        1.0,
    )
    .await;
    until(&cp, "pilot_xds_pushes{type=\"wds\"}", 6.0).await;

    // A NACK counts as a rejection of its type.
    cp.write("pods/e.yaml", &pod("e", "node-2", "web", "10.1.0.5"));
    let response = xds.recv().await.unwrap();
    assert_eq!(response.type_url, ADDRESS_TYPE_URL);
    xds.nack(&response.nonce, "cannot apply").await;
    until(&cp, "pilot_total_xds_rejects{type=\"wds\"}", 1.0).await;

    // A rejected object raises the config error gauge; fixing it lowers
    // it again.
    cp.write(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: mesh
spec:
  hosts: [web]
  http:
  - route:
    - destination:
        host: web
      weight: lots
",
    );
    until(&cp, "weft_control_config_errors", 1.0).await;
    cp.remove("vs.yaml");
    until(&cp, "weft_control_config_errors", 0.0).await;

    // The CA: a certificate for a pod on the node is issued, one for an
    // identity the node does not run is refused, a CSR that does not
    // parse is counted.
    let mut ca = cp.ca_client(&cp.token("node-1")).await;
    ca.create_certificate(ca_request("spiffe://cluster.local/ns/mesh/sa/web", None))
        .await
        .expect("issued");
    ca.create_certificate(ca_request("spiffe://cluster.local/ns/mesh/sa/other", None))
        .await
        .expect_err("refused");
    let mut garbage = ca_request("spiffe://cluster.local/ns/mesh/sa/web", None);
    garbage.csr = "not a CSR".into();
    ca.create_certificate(garbage).await.expect_err("refused");
    let ca_metrics = metrics(&cp).await;
    assert_eq!(value(&ca_metrics, "citadel_server_csr_count"), 3.0);
    assert_eq!(
        value(&ca_metrics, "citadel_server_success_cert_issuance_count"),
        1.0
    );
    assert_eq!(
        value(&ca_metrics, "citadel_server_authentication_failure_count"),
        1.0
    );
    assert_eq!(
        value(&ca_metrics, "citadel_server_csr_parsing_err_count"),
        1.0
    );

    // The agent leaves.
    drop(xds);
    until(&cp, "pilot_xds{version=\"1.28.0\"}", 0.0).await;

    // The same registry as OpenMetrics, when asked the way Prometheus
    // asks.
    let (content_type, body) = scrape(&cp, Some(OPENMETRICS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = parse_openmetrics(&body);
    assert_eq!(value(&om, "pilot_xds_pushes{type=\"wds\"}"), 7.0);
    assert_eq!(value(&om, "pilot_total_xds_rejects{type=\"wds\"}"), 1.0);
    assert_eq!(value(&om, "citadel_server_csr_count"), 3.0);

    // promtool, where installed, parses it as Prometheus does.
    let (_, text) = scrape(&cp, None).await;
    promtool_check(&text);
}

#[tokio::test]
async fn kubernetes_mode_counts_object_events_and_rejections() {
    let api = api_server(Options::default()).await;
    let route = |weight: u32, timeout: &str| {
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "mesh"},
            "spec": {"hosts": ["web"], "http": [{"timeout": timeout, "route": [
                {"destination": {"host": "web"}, "weight": weight}]}]},
        })
    };
    api.apply(route(100, "5s"));
    let cp = control_plane(&api).await;
    let listed = metrics(&cp).await;
    for (series, want) in [
        (
            "pilot_k8s_cfg_events{type=\"VirtualService\",event=\"add\"}",
            1.0,
        ),
        ("pilot_k8s_reg_events{type=\"Pods\",event=\"add\"}", 1.0),
        ("pilot_k8s_reg_events{type=\"Services\",event=\"add\"}", 1.0),
        ("pilot_virt_services", 1.0),
        ("pilot_services", 1.0),
        ("weft_control_config_errors", 0.0),
    ] {
        assert_eq!(value(&listed, series), want, "{series}");
    }

    // A version that does not validate: rejected, no update.
    api.apply(route(101, "5s"));
    until(&cp, "weft_control_config_errors", 1.0).await;
    assert_eq!(
        value(
            &metrics(&cp).await,
            "pilot_k8s_cfg_events{type=\"VirtualService\",event=\"update\"}"
        ),
        0.0
    );
    // A good one: an update; deleted: a delete, and the error goes.
    api.apply(route(100, "7s"));
    until(
        &cp,
        "pilot_k8s_cfg_events{type=\"VirtualService\",event=\"update\"}",
        1.0,
    )
    .await;
    until(&cp, "weft_control_config_errors", 0.0).await;
    api.delete(
        "networking.istio.io/v1",
        "VirtualService",
        Some("mesh"),
        "web",
    );
    until(
        &cp,
        "pilot_k8s_cfg_events{type=\"VirtualService\",event=\"delete\"}",
        1.0,
    )
    .await;
    until(&cp, "pilot_virt_services", 0.0).await;
}

// === The classic text format, checked ===

/// Parses the classic text format (0.0.4) strictly: every line a HELP,
/// a TYPE (before its family's samples, once) or a sample of a typed
/// family; samples of a family together; counters without `_total`
/// allowed (istiod's names). Returns `name{labels}` → value.
fn parse_text_format(body: &str) -> BTreeMap<String, f64> {
    assert!(body.ends_with('\n'), "ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("HELP name text");
            check_name(name);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            check_name(name);
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {line}"
            );
            if let Some(previous) = current.replace(name.to_string()) {
                finished.insert(previous);
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = parse_sample(line);
        let name = series.split('{').next().unwrap();
        let family = current.as_deref().expect("a sample after its TYPE");
        assert!(!finished.contains(family));
        let kind = &types[family];
        let allowed: &[&str] = match kind.as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            "counter" => &["", "_total"],
            _ => &[""],
        };
        assert!(
            allowed.iter().any(|s| name == format!("{family}{s}")),
            "sample {name} in {kind} family {family}"
        );
        if kind == "histogram" && name.ends_with("_bucket") {
            assert!(series.contains("le=\""), "{line}");
        }
        assert!(samples.insert(series, value).is_none(), "twice: {line}");
    }
    // Every histogram series ends with its +Inf bucket, equal to its count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let counts: Vec<(&String, &f64)> = samples
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{family}_count")))
            .collect();
        for (series, count) in counts {
            let labels = series
                .strip_prefix(&format!("{family}_count"))
                .unwrap()
                .trim_matches(['{', '}']);
            let inf = samples
                .iter()
                .find(|(s, _)| {
                    s.starts_with(&format!("{family}_bucket{{"))
                        && s.contains("le=\"+Inf\"")
                        && (labels.is_empty() || s.contains(labels))
                })
                .unwrap_or_else(|| panic!("no +Inf bucket for {series}"));
            assert_eq!(inf.1, count, "{series}");
        }
    }
    // Histogram and labels normalised: `le` last, so that tests can name
    // a bucket the same way whatever order the encoder chose.
    samples
        .into_iter()
        .map(|(series, v)| (normalise(&series), v))
        .collect()
}

/// OpenMetrics text (1.0) checked: `# EOF` last, families typed once,
/// `unknown` and `gauge` samples named as their family, counters with
/// `_total`, histograms with `_bucket`/`_sum`/`_count`/`_created`.
fn parse_openmetrics(body: &str) -> BTreeMap<String, f64> {
    assert!(body.ends_with("# EOF\n"), "ends with # EOF");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = body.lines().collect();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            check_name(rest.split_once(' ').expect("HELP name text").0);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            check_name(rest.split_once(' ').expect("UNIT name unit").0);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            check_name(name);
            assert!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "gaugehistogram",
                    "stateset",
                    "info",
                    "summary",
                    "unknown"
                ]
                .contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{line}"
            );
            current = Some(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = parse_sample(line);
        let name = series.split('{').next().unwrap();
        let family = current.as_deref().expect("a sample after its TYPE");
        let allowed: &[&str] = match types[family].as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(
            allowed.iter().any(|s| name == format!("{family}{s}")),
            "{line} in {} family {family}",
            types[family]
        );
        samples.insert(normalise(&series), value);
    }
    samples
}

/// `name{labels} value` → (`name{labels}`, value).
fn parse_sample(line: &str) -> (String, f64) {
    let (series, value) = match line.find('{') {
        Some(open) => {
            let close = label_set_end(line, open);
            let (series, rest) = line.split_at(close + 1);
            (series.to_string(), rest.trim_start_matches(' '))
        }
        None => {
            let (name, value) = line.split_once(' ').expect("name value");
            (name.to_string(), value)
        }
    };
    check_name(series.split('{').next().unwrap());
    let value = value.split(' ').next().unwrap();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in `{line}`")),
    };
    (series, value)
}

/// The index of the `}` closing the label set opened at `open`, checking
/// each `name="value"` (escapes `\\`, `\"`, `\n` only).
fn label_set_end(line: &str, open: usize) -> usize {
    let bytes = line.as_bytes();
    let mut i = open + 1;
    loop {
        if bytes[i] == b'}' {
            return i;
        }
        let start = i;
        while bytes[i] != b'=' {
            i += 1;
        }
        check_label_name(&line[start..i]);
        assert_eq!(bytes[i + 1], b'"', "quoted label value in `{line}`");
        i += 2;
        while bytes[i] != b'"' {
            if bytes[i] == b'\\' {
                assert!(
                    matches!(bytes[i + 1], b'\\' | b'"' | b'n'),
                    "bad escape in `{line}`"
                );
                i += 1;
            }
            i += 1;
        }
        i += 1;
        match bytes[i] {
            b',' => i += 1,
            b'}' => return i,
            other => panic!("unexpected `{}` in `{line}`", other as char),
        }
    }
}

fn check_name(name: &str) {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    assert!(ok, "bad metric name `{name}`");
}

fn check_label_name(name: &str) {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    assert!(ok, "bad label name `{name}`");
}

/// `name{a="1",le="2",b="3"}` with `le` moved last.
fn normalise(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_string();
    };
    let labels = labels.strip_suffix('}').unwrap();
    // Label values here never hold `",`.
    let mut parts: Vec<&str> = labels.split("\",").collect();
    let n = parts.len();
    let owned: Vec<String> = parts
        .drain(..)
        .enumerate()
        .map(|(i, p)| {
            if i + 1 < n {
                format!("{p}\"")
            } else {
                p.to_string()
            }
        })
        .collect();
    let (mut le, mut rest): (Vec<String>, Vec<String>) =
        owned.into_iter().partition(|p| p.starts_with("le="));
    rest.append(&mut le);
    format!("{name}{{{}}}", rest.join(","))
}

/// `promtool check metrics` (Prometheus's own parser, from Debian's
/// `prometheus` package, which `cargo xtask setup` installs) on the classic
/// text: it must parse (promtool exits 1 on a
/// parse error, 3 on lint findings only), and the only lint findings are
/// about istiod's counter names (no `_total`; `_count` on a counter).
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|err| {
        panic!("cannot run promtool ({err}): run `cargo xtask setup`, which installs Debian's prometheus package")
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "promtool: {:?}\n{report}",
        out.status
    );
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let istiod_name = line.starts_with("pilot_") || line.starts_with("citadel_server_");
        let naming = line.ends_with("counter metrics should have \"_total\" suffix")
            || line.ends_with("metrics should not have \"_count\" suffix");
        assert!(istiod_name && naming, "promtool: {line}\n{report}");
    }
}
