//! `weftctl analyze`: the real binary on directories of YAML.

use std::{path::Path, process::Command};

const GOOD: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
";

/// As printed in many blog posts: `weight` inside `destination` (line 12).
const BAD: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: my-service
spec:
  hosts:
  - my-service.default.svc.cluster.local
  http:
  - route:
    - destination:
        host: my-service-v1.default.svc.cluster.local
        weight: 90
";

fn weftctl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .arg("analyze")
        .arg(dir)
        .args(args)
        .output()
        .expect("weftctl runs")
}

#[test]
fn a_good_directory_passes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), GOOD).unwrap();
    let out = weftctl(&[], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("OK: 1 files, 2 objects, 0 errors, 0 findings in "),
        "{stdout}"
    );
}

#[test]
fn an_error_names_file_line_and_field_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), GOOD).unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("routes/canary.yaml"), BAD).unwrap();
    let out = weftctl(&[], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let file = dir.path().join("routes/canary.yaml");
    let expected = format!(
        "error: {}:12:9: VirtualService default/my-service: spec.http[0].route[0].destination.weight: unknown field `weight`",
        file.display()
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
    assert!(
        stdout.contains("FAILED: 2 files, 2 objects, 1 errors"),
        "{stdout}"
    );

    let out = weftctl(&["--output", "json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json}");
    assert_eq!(errors[0]["file"], "routes/canary.yaml");
    assert_eq!(
        (errors[0]["line"].as_u64(), errors[0]["column"].as_u64()),
        (Some(12), Some(9))
    );
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = weftctl(&[], &missing);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "weftctl: cannot read config directory {}",
            missing.display()
        )),
        "{stderr}"
    );
}
