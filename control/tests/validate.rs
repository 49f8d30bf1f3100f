//! `weft-control validate`: the seed's examples corrected pass, as
//! printed they fail at their lines; every error of a file is listed;
//! analysis findings; bad inputs are refused without harm.

use std::path::{Path, PathBuf};

use weft_control::validate::{Report, validate_dir};

fn fixtures(which: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/seed")
        .join(which)
}

fn validate(dir: &Path) -> Report {
    validate_dir(dir, "cluster.local", "istio-system").expect("directory readable")
}

#[test]
fn seed_examples_corrected_are_accepted() {
    let report = validate(&fixtures("corrected"));
    assert!(report.errors.is_empty(), "{}", report.to_text());
    assert_eq!(report.objects, 7);
    assert!(!report.failed(), "{}", report.to_text());
}

#[test]
fn seed_examples_as_printed_are_rejected_at_their_lines() {
    let report = validate(&fixtures("as-printed"));
    assert!(report.failed());
    let mut lines: Vec<(String, usize, usize)> = report
        .errors
        .iter()
        .map(|e| (e.file.display().to_string(), e.line, e.column))
        .collect();
    lines.sort();
    // `kind:...` on line 2 of each file: the first line YAML cannot read.
    assert_eq!(
        lines,
        [
            ("canary.yaml".to_string(), 2, 1),
            ("destination-rule.yaml".to_string(), 2, 1),
            ("virtual-service.yaml".to_string(), 2, 1),
        ],
        "{}",
        report.to_text()
    );
    for e in &report.errors {
        assert!(e.message.contains("has no space after ':'"), "{e}");
    }
}

#[test]
fn half_fixed_seed_points_at_the_misplaced_weight() {
    let dir = tempfile::tempdir().unwrap();
    // Spaces fixed, but `weight` still inside `destination` as printed.
    std::fs::write(
        dir.path().join("canary.yaml"),
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata:\n  name: my-service\nspec:\n  hosts:\n  - my-service.default.svc.cluster.local\n  http:\n  - route:\n    - destination:\n        host: my-service-v1.default.svc.cluster.local\n        weight: 90\n",
    )
    .unwrap();
    let report = validate(dir.path());
    assert_eq!(report.errors.len(), 1, "{}", report.to_text());
    let e = &report.errors[0];
    assert_eq!((e.line, e.column), (12, 9));
    assert_eq!(e.path, "spec.http[0].route[0].destination.weight");
    assert_eq!(
        e.object.as_deref(),
        Some("VirtualService default/my-service")
    );
    assert!(
        e.message
            .starts_with("unknown field `weight`, expected one of `host`, `subset`, `port`"),
        "{e}"
    );
}

#[test]
fn analysis_findings_and_json() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["services.yaml", "destination-rule.yaml"] {
        std::fs::copy(fixtures("corrected").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\nspec:\n  hosts: [my-service]\n  gateways: [ingress]\n  http:\n  - route: [{destination: {host: my-service, subset: v3}}]\n  - route: [{destination: {host: nowhere}}]\n",
    )
    .unwrap();
    let report = validate(dir.path());
    assert!(report.errors.is_empty(), "{}", report.to_text());
    let codes: Vec<(&str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.code, f.path.as_str()))
        .collect();
    assert!(
        codes.contains(&("W2002", "spec.http[0].route[0].destination.subset")),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("W2001", "spec.http[1].route[0].destination.host")),
        "{codes:?}"
    );
    assert!(codes.contains(&("W2003", "spec.gateways[0]")), "{codes:?}");
    assert!(codes.contains(&("W3002", "spec.http[1]")), "{codes:?}");
    let subset = report.findings.iter().find(|f| f.code == "W2002").unwrap();
    assert_eq!(
        subset.message,
        "subset `v3` is not defined by any DestinationRule for host `my-service`"
    );
    assert!(report.failed(), "a route to nothing is an error");

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["findings"].as_array().unwrap().len(),
        report.findings.len()
    );
}

#[test]
fn delegation_findings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures("corrected").join("services.yaml"),
        dir.path().join("services.yaml"),
    )
    .unwrap();
    let vs = |name: &str, ns: &str, spec: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
        )
    };
    let route = "route: [{destination: {host: my-service.default.svc.cluster.local}}]";
    let yaml = vs(
        "root",
        "default",
        &format!(
            "  hosts: [my-service]\n  http:\n  - match: [{{uri: {{prefix: /api}}}}]\n    delegate: {{name: api, namespace: team}}\n  - delegate: {{name: missing}}\n  - delegate: {{name: hosted}}\n  - delegate: {{name: private, namespace: team}}\n  - {route}\n"
        ),
    ) + &vs(
        "api",
        "team",
        &format!(
            "  http:\n  - match: [{{uri: {{prefix: /api/v1}}}}]\n    {route}\n  - match: [{{uri: {{prefix: /web}}}}]\n    {route}\n  - delegate: {{name: private}}\n"
        ),
    ) + &vs(
        "hosted",
        "default",
        &format!("  hosts: [other.example.com]\n  http:\n  - {route}\n"),
    ) + &vs(
        "private",
        "team",
        &format!("  exportTo: [.]\n  http:\n  - {route}\n"),
    );
    std::fs::write(dir.path().join("vs.yaml"), yaml).unwrap();
    let report = validate(dir.path());
    assert!(report.errors.is_empty(), "{}", report.to_text());
    let mut codes: Vec<(&str, &str, &str)> = report
        .findings
        .iter()
        .filter(|f| f.code.starts_with("W2") || f.code.starts_with("W3"))
        .map(|f| (f.code, f.object.as_str(), f.path.as_str()))
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            (
                "W2005",
                "VirtualService default/root",
                "spec.http[1].delegate"
            ),
            (
                "W2005",
                "VirtualService default/root",
                "spec.http[2].delegate"
            ),
            (
                "W2006",
                "VirtualService default/root",
                "spec.http[3].delegate"
            ),
            ("W3005", "VirtualService team/api", "spec.http[1].match"),
            ("W3005", "VirtualService team/api", "spec.http[2].delegate"),
        ],
        "{}",
        report.to_text()
    );
    assert!(report.failed(), "a route delegating to nothing is an error");
}

#[test]
fn cli_exit_codes_and_output() {
    let bin = env!("CARGO_BIN_EXE_weft-control");
    let ok = std::process::Command::new(bin)
        .args(["validate"])
        .arg(fixtures("corrected"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = std::process::Command::new(bin)
        .args(["validate", "--output", "json"])
        .arg(fixtures("as-printed"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(json["errors"].as_array().unwrap().len(), 3);
    assert_eq!(json["errors"][0]["line"], 2);
}

#[test]
fn bad_inputs_are_refused_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let ns = |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
    for i in 0..2000 {
        std::fs::write(
            dir.path().join(format!("ns-{i:04}.yaml")),
            ns(&format!("ns-{i}")),
        )
        .unwrap();
    }
    // 50 MB, not UTF-8, deeply nested, an alias bomb, a syntax error.
    let big = vec![b'#'; 50 * 1024 * 1024];
    std::fs::write(dir.path().join("big.yaml"), big).unwrap();
    std::fs::write(
        dir.path().join("latin1.yaml"),
        b"apiVersion: v1\nkind: Namespace\nmetadata: {name: caf\xe9}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("deep.yaml"),
        "a: ".to_string() + &"[".repeat(5000) + &"]".repeat(5000),
    )
    .unwrap();
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..15 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    std::fs::write(dir.path().join("bomb.yaml"), bomb).unwrap();
    std::fs::write(dir.path().join("syntax.yaml"), "a: [1, 2\n").unwrap();

    let report = validate(dir.path());
    assert_eq!(report.objects, 2000, "{}", report.to_text());
    let mut by_file: Vec<(String, String)> = report
        .errors
        .iter()
        .map(|e| (e.file.display().to_string(), e.message.clone()))
        .collect();
    by_file.sort();
    let files: Vec<&str> = by_file.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        [
            "big.yaml",
            "bomb.yaml",
            "deep.yaml",
            "latin1.yaml",
            "syntax.yaml"
        ]
    );
    assert!(by_file[0].1.contains("larger than 16 MiB"), "{by_file:?}");
    assert!(by_file[1].1.contains("aliases count"), "{by_file:?}");
    assert!(by_file[3].1.contains("not UTF-8"), "{by_file:?}");
}

#[test]
fn http_policy_fields_on_a_tcp_port_are_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: db-0, namespace: shop, labels: {app: db}}\nspec: {serviceAccountName: db, containers: [{name: db, image: db}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\nspec: {serviceAccountName: web, containers: [{name: web, image: web}]}\n";
    let services = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec:\n  clusterIP: 10.96.0.20\n  selector: {app: db}\n  ports: [{name: tcp-pg, port: 5432}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  clusterIP: 10.96.0.21\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n";
    let policy = |name: &str, app: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  rules:\n  - to: [{{operation: {{methods: [GET]}}}}]\n"
        )
    };
    std::fs::write(dir.path().join("pods.yaml"), pods).unwrap();
    std::fs::write(dir.path().join("services.yaml"), services).unwrap();
    std::fs::write(
        dir.path().join("policies.yaml"),
        format!(
            "{}---\n{}",
            policy("db-get", "db"),
            policy("web-get", "web")
        ),
    )
    .unwrap();
    let report = validate(dir.path());
    assert!(report.errors.is_empty(), "{}", report.to_text());
    let flagged: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.code == "W1004")
        .map(|f| f.object.as_str())
        .collect();
    assert_eq!(
        flagged,
        ["AuthorizationPolicy shop/db-get"],
        "only the policy on the TCP port: {}",
        report.to_text()
    );
    let finding = report.findings.iter().find(|f| f.code == "W1004").unwrap();
    assert!(
        finding.message.contains("Service shop/db port 5432"),
        "{}",
        finding.message
    );
}

#[test]
fn a_header_value_envoy_could_not_parse_is_refused_at_its_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vs.yaml"),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
      headers:
        response: {set: {x-off: "10%"}}
    headers:
      request:
        set: {x-client: "%DOWNSTREAM_REMOTE_ADDRES%", x-ok: "%PROTOCOL% 100%%"}
"#,
    )
    .unwrap();
    let report = validate(dir.path());
    assert!(report.failed(), "{}", report.to_text());
    let mut found: Vec<(String, String)> = report
        .errors
        .iter()
        .map(|e| (e.path.clone(), e.message.clone()))
        .collect();
    found.sort();
    assert_eq!(found.len(), 2, "{}", report.to_text());
    assert_eq!(found[0].0, "spec.http[0].headers.request.set.x-client");
    assert!(
        found[0]
            .1
            .starts_with("the value `%DOWNSTREAM_REMOTE_ADDRES%`: position 0: unknown command operator `%DOWNSTREAM_REMOTE_ADDRES%`"),
        "{}",
        found[0].1
    );
    assert_eq!(
        found[1].0,
        "spec.http[0].route[0].headers.response.set.x-off"
    );
    assert!(
        found[1]
            .1
            .contains("position 2: `%` starts no command operator"),
        "{}",
        found[1].1
    );
}
