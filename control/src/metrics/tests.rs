use super::*;

fn render(metrics: &Metrics, openmetrics: bool) -> String {
    let accept = openmetrics.then_some("application/openmetrics-text;version=1.0.0");
    let (content_type, body) = metrics.render(accept, &Snapshot::default());
    assert_eq!(
        content_type,
        if openmetrics {
            exposition::OPENMETRICS
        } else {
            exposition::PROMETHEUS_TEXT
        }
    );
    body
}

/// The lines of `family` (its HELP and TYPE, and its samples).
fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            let l = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
        })
        .collect()
}

fn has_total_suffix(text: &str) -> bool {
    text.contains("_total{") || text.contains("_total ")
}

#[test]
fn counters_keep_istiod_names_in_both_formats() {
    let metrics = Metrics::new();
    metrics.xds_pushed(ADDRESS_TYPE_URL, Duration::from_millis(3));
    metrics.xds_pushed(ADDRESS_TYPE_URL, Duration::from_millis(3));
    metrics.xds_pushed(ROUTE_CONFIG_TYPE_URL, Duration::from_millis(3));
    let om = render(&metrics, true);
    assert!(om.ends_with("# EOF\n"));
    assert_eq!(
        family(&om, "pilot_xds_pushes")[..2],
        [
            "# HELP pilot_xds_pushes Pilot build and send errors for lds, rds, cds and eds.",
            "# TYPE pilot_xds_pushes unknown",
        ]
    );
    assert!(om.contains("\npilot_xds_pushes{type=\"wds\"} 2\n"), "{om}");
    assert!(om.contains(
        "\npilot_xds_pushes{type=\"type.googleapis.com/weft.route.v1.RouteConfig\"} 1\n"
    ));
    assert!(om.contains("\npilot_xds_pushes{type=\"wads\"} 0\n"));
    assert!(!has_total_suffix(&om), "{om}");

    let text = render(&metrics, false);
    assert!(!text.contains("# EOF"));
    assert!(text.contains("# TYPE pilot_xds_pushes counter\n"), "{text}");
    assert!(text.contains("\npilot_xds_pushes{type=\"wds\"} 2\n"));
    for name in UNSUFFIXED_COUNTERS {
        assert!(
            text.contains(&format!("# TYPE {name} counter\n")),
            "{name} in\n{text}"
        );
    }
    assert!(!has_total_suffix(&text), "{text}");
    assert!(!text.contains("untyped"), "{text}");
}

#[test]
fn histograms_have_istiod_buckets() {
    let metrics = Metrics::new();
    metrics.converged(Instant::now());
    metrics.xds_pushed(AUTHORIZATION_TYPE_URL, Duration::from_millis(200));
    let text = render(&metrics, false);
    // (le, count) of the buckets of `name` whose labels include `with`.
    let buckets = |name: &str, with: &str| -> Vec<(String, u64)> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{")))
            .filter(|l| l.contains(with))
            .map(|rest| {
                let le = rest
                    .split("le=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                let count = rest.rsplit(' ').next().unwrap().parse().unwrap();
                (le.to_string(), count)
            })
            .collect()
    };
    let les = |b: Vec<(String, u64)>| b.into_iter().map(|(le, _)| le).collect::<Vec<_>>();
    assert_eq!(
        les(buckets("pilot_proxy_convergence_time", "")),
        [
            "0.1", "0.5", "1.0", "3.0", "5.0", "10.0", "20.0", "30.0", "+Inf"
        ]
    );
    let push_time = buckets("pilot_xds_push_time", "type=\"wads\"");
    assert_eq!(
        les(push_time.clone()),
        [
            "0.01", "0.1", "0.5", "1.0", "3.0", "5.0", "10.0", "20.0", "30.0", "+Inf"
        ]
    );
    let counts: Vec<u64> = push_time.into_iter().map(|(_, c)| c).collect();
    assert_eq!(counts, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert!(text.contains("# TYPE pilot_proxy_convergence_time histogram\n"));
    assert!(text.contains("\npilot_proxy_convergence_time_count 1\n"));
    assert!(text.contains("\npilot_xds_push_time_count{type=\"wads\"} 1\n"));
}

#[test]
fn build_info_and_gauges() {
    let metrics = Metrics::new();
    metrics.ca.set_root_expiry(unix_now() + 100);
    let text = render(&metrics, false);
    assert!(text.contains("# TYPE istio_build gauge\n"));
    assert!(text.contains(&format!(
        "\nistio_build{{component=\"pilot\",tag=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(text.contains("# TYPE citadel_server_root_cert_expiry_timestamp gauge\n"));
    let left: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("citadel_server_root_cert_expiry_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((98..=100).contains(&left), "{left}");
    assert!(text.contains("\nweft_control_config_errors 0\n"));
    assert!(text.contains("\ncitadel_server_csr_sign_err_count{error=\"CERT_GEN_ERROR\"} 0\n"));
}

#[test]
fn connected_clients_by_bounded_version() {
    let metrics = Arc::new(Metrics::new());
    let a = metrics.xds_connected(Some("1.28.0"));
    let b = metrics.xds_connected(Some("1.28.0"));
    let c = metrics.xds_connected(None);
    let bad = metrics.xds_connected(Some("1.28\"} 9"));
    let text = render(&metrics, false);
    assert!(
        text.contains("\npilot_xds{version=\"1.28.0\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("\npilot_xds{version=\"\"} 1\n"), "{text}");
    assert!(
        text.contains("\npilot_xds{version=\"unknown\"} 1\n"),
        "{text}"
    );
    drop((a, c, bad));
    let text = render(&metrics, false);
    assert!(
        text.contains("\npilot_xds{version=\"1.28.0\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("\npilot_xds{version=\"\"} 0\n"), "{text}");
    // Past MAX_VERSIONS distinct values, new ones count as `other`.
    let many: Vec<_> = (0..MAX_VERSIONS + 3)
        .map(|i| metrics.xds_connected(Some(&format!("1.{i}.0"))))
        .collect();
    let text = render(&metrics, false);
    let series = text.lines().filter(|l| l.starts_with("pilot_xds{")).count();
    assert_eq!(series, MAX_VERSIONS + 1, "{text}");
    assert!(text.contains("\npilot_xds{version=\"other\"} "), "{text}");
    drop((b, many));
}

#[test]
fn convergence_starts_at_the_oldest_unseen_change() {
    let metrics = Metrics::new();
    let (t1, t2) = (Instant::now(), Instant::now() + Duration::from_millis(5));
    metrics.model_changed("v1", "v2", t1);
    metrics.model_changed("v2", "v3", t2);
    assert_eq!(metrics.change_began("v1", "v3"), Some(t1));
    assert_eq!(metrics.change_began("v2", "v3"), Some(t2));
    // A stream whose version is forgotten: the latest change.
    assert_eq!(metrics.change_began("v0", "v3"), Some(t2));
    assert_eq!(metrics.change_began("v0", "v9"), None);
    for i in 0..MODEL_CHANGES + 5 {
        metrics.model_changed(&format!("w{i}"), &format!("w{}", i + 1), t2);
    }
    assert_eq!(metrics.change_began("v1", "v3"), None);
}

#[test]
fn type_and_kind_labels_are_istiods() {
    assert_eq!(xds_type_label(ADDRESS_TYPE_URL), "wds");
    assert_eq!(xds_type_label(AUTHORIZATION_TYPE_URL), "wads");
    assert_eq!(xds_type_label(ROUTE_CONFIG_TYPE_URL), ROUTE_CONFIG_TYPE_URL);
    assert_eq!(
        xds_type_label(DESTINATION_POLICY_TYPE_URL),
        DESTINATION_POLICY_TYPE_URL
    );
    let metrics = Metrics::new();
    metrics.config_event("Gateway.gateway.networking.k8s.io", ConfigEvent::Add);
    metrics.config_event("VirtualService", ConfigEvent::Update);
    metrics.config_event("Service", ConfigEvent::Delete);
    metrics.config_event("SomethingNew", ConfigEvent::Add);
    let text = render(&metrics, false);
    for line in [
        "pilot_k8s_cfg_events{type=\"Gateway\",event=\"add\"} 1",
        "pilot_k8s_cfg_events{type=\"VirtualService\",event=\"update\"} 1",
        "pilot_k8s_reg_events{type=\"Services\",event=\"delete\"} 1",
        "pilot_k8s_cfg_events{type=\"SomethingNew\",event=\"add\"} 1",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line} in\n{text}");
    }
}

#[test]
fn snapshot_gauges() {
    let metrics = Metrics::new();
    let snapshot = Snapshot {
        errors: vec![crate::source::FileError {
            file: "a.yaml".into(),
            line: 1,
            column: 1,
            object: None,
            path: String::new(),
            message: "bad".into(),
        }],
        ..Default::default()
    };
    let (_, text) = metrics.render(None, &snapshot);
    assert!(text.contains("\nweft_control_config_errors 1\n"), "{text}");
    assert!(text.contains("\npilot_services 0\n"), "{text}");
    assert!(text.contains("\npilot_virt_services 0\n"), "{text}");
}
