//! Every kind under every served apiVersion: a realistic object (field
//! names and values from Istio's, the Gateway API's and Kubernetes' own
//! schemas and examples) loads with no error, and broken variants (an
//! unknown field, a wrong type, a broken value rule) are rejected with
//! the file, the line and column of the offending field, the object, the
//! field path and the reason. Also: a version the kind is not served as
//! is refused at `apiVersion`.
//!
//! Documents are written with `{api}` for the apiVersion, which is always
//! on line 1, so positions do not depend on the version.

use std::path::Path;

use weft_control::{
    source::{FileError, parse::parse_file},
    validate::{Report, validate_dir},
};

/// One kind: the versions it is served as, a valid file, and broken ones.
struct Kind {
    kind: &'static str,
    served: &'static [&'static str],
    /// A version of the same API group that is not served.
    unserved: &'static str,
    /// One or more documents, all valid.
    valid: &'static str,
    /// The keys of `valid`'s objects, in order.
    keys: &'static [&'static str],
    invalid: &'static [Reject],
}

/// A broken variant and the one error it must produce.
struct Reject {
    what: &'static str,
    yaml: &'static str,
    /// 1-based line and column of the offending node.
    at: (usize, usize),
    object: &'static str,
    path: &'static str,
    /// The reason starts with this.
    reason: &'static str,
}

const ISTIO_NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
const ISTIO_SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
const ISTIO_TELEMETRY: &[&str] = &["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"];
const GATEWAY_API: &[&str] = &[
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
];

mod core;
mod gateway_api;
mod networking;
mod security;

/// Every kind, API group by API group.
fn kinds() -> impl Iterator<Item = &'static Kind> {
    [
        networking::KINDS,
        security::KINDS,
        gateway_api::KINDS,
        core::KINDS,
    ]
    .into_iter()
    .flatten()
}

// === the checks ===

/// Validates a directory holding `text` as `file`, as `weft-control
/// validate` would.
fn validate_one(file: &str, text: &str) -> Report {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(file), text).expect("write");
    validate_dir(dir.path(), "cluster.local", "istio-system").expect("directory readable")
}

fn file_name(kind: &str, api: &str, what: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    };
    format!("{}-{}-{}.yaml", clean(kind), clean(api), clean(what))
}

/// What differs between `e` and what `r` expects, if anything.
fn mismatch(e: &FileError, file: &str, r: &Reject) -> Option<String> {
    let got = (
        e.file.display().to_string(),
        (e.line, e.column),
        e.object.as_deref(),
        e.path.as_str(),
    );
    let want = (file.to_string(), r.at, Some(r.object), r.path);
    if got != want || !e.message.starts_with(r.reason) || e.message.is_empty() {
        return Some(format!(
            "got {got:?} `{}`, want {want:?} `{}…`",
            e.message, r.reason
        ));
    }
    let shown = format!(
        "{file}:{}:{}: {}: {}: {}",
        r.at.0, r.at.1, r.object, r.path, e.message
    );
    (e.to_string() != shown).then(|| format!("displayed as `{e}`, want `{shown}`"))
}

#[test]
fn every_kind_and_version_accepts_a_realistic_object() {
    let mut failures = Vec::new();
    for k in kinds() {
        for api in k.served {
            let text = k.valid.replace("{api}", api);
            let file = file_name(k.kind, api, "valid");
            let report = validate_one(&file, &text);
            if !report.errors.is_empty() || report.objects != k.keys.len() {
                failures.push(format!("{} {api}:\n{}", k.kind, report.to_text()));
                continue;
            }
            match parse_file(Path::new(&file), &text) {
                Ok(objects) => {
                    let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
                    if keys != k.keys {
                        failures.push(format!("{} {api}: keys {keys:?}", k.kind));
                    }
                }
                Err(e) => failures.push(format!("{} {api}: {e}", k.kind)),
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_kind_and_version_rejects_invalid_variants_at_the_field() {
    let mut failures = Vec::new();
    for k in kinds() {
        for api in k.served {
            for r in k.invalid {
                let text = r.yaml.replace("{api}", api);
                let file = file_name(k.kind, api, r.what);
                let case = format!("{} {api} ({})", k.kind, r.what);
                let report = validate_one(&file, &text);
                if report.objects != 0 {
                    failures.push(format!("{case}: accepted\n{}", report.to_text()));
                    continue;
                }
                let [error] = report.errors.as_slice() else {
                    failures.push(format!("{case}: want one error\n{}", report.to_text()));
                    continue;
                };
                if let Some(m) = mismatch(error, &file, r) {
                    failures.push(format!("{case}: {m}"));
                }
                // The server's parser reports the same error.
                match parse_file(Path::new(&file), &text) {
                    Ok(_) => failures.push(format!("{case}: parse_file accepted it")),
                    Err(e) if &e != error => {
                        failures.push(format!("{case}: parse_file says `{e}`, validate `{error}`"))
                    }
                    Err(_) => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn versions_a_kind_is_not_served_as_are_rejected_at_api_version() {
    let mut failures = Vec::new();
    for k in kinds() {
        let text = k.valid.replace("{api}", k.unserved);
        let file = file_name(k.kind, k.unserved, "unserved");
        let report = validate_one(&file, &text);
        let case = format!("{} {}", k.kind, k.unserved);
        if report.objects != 0 || report.errors.len() != k.keys.len() {
            failures.push(format!("{case}:\n{}", report.to_text()));
            continue;
        }
        let e = &report.errors[0];
        let short = k.kind.split('.').next().unwrap_or(k.kind);
        let named_all = k
            .served
            .iter()
            .all(|v| e.message.contains(&format!("`{v}`")));
        let ok = (e.line, e.column) == (1, 13)
            && e.path == "apiVersion"
            && e.object.as_deref() == Some(k.keys[0])
            && e.message.starts_with(&format!("{short} is served as "))
            && e.message.ends_with(&format!("not `{}`", k.unserved))
            && named_all;
        if !ok {
            failures.push(format!("{case}: {e}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
