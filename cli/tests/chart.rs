//! The Helm chart, `deploy/charts/weft`, against `weftctl manifest
//! generate`: its templates and CRDs are made from `deploy/` by
//! `manifest::chart_files` (`WEFT_UPDATE_CHART=1` writes them), its
//! hand-written files agree with weftctl's defaults, and Helm renders it
//! to exactly the objects `weftctl manifest generate` prints, but the
//! Namespace.
//!
//! Rendering and linting are Helm's own code (the Go SDK, helm.sh/helm/v4)
//! as PyPI's `helm-python-sdk` bundles it: `python3 -m pip install
//! helm-python-sdk==0.2.2`. `WEFT_HELM_PYTHON` names another interpreter.

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Once,
};

use serde::Deserialize;
use serde_yaml::Value;
use weftctl::manifest::{self, Values};

const UPDATE: &str = "WEFT_UPDATE_CHART=1 cargo test -p weftctl --test chart";
const HELM_SDK: &str = "helm-python-sdk==0.2.2";

/// Template actions the chart may use: plain Go text/template, no sprig,
/// so that what renders here renders the same in any Helm.
const ACTIONS: [&str; 5] = [
    ".Release.Namespace",
    ".Release.Name",
    ".Chart.AppVersion",
    ".Values.image",
    ".Values.trustDomain",
];

/// The chart's directory; with `WEFT_UPDATE_CHART=1`, written first from
/// `deploy/` (once, before any test reads it).
fn chart_dir() -> PathBuf {
    static UPDATE_ONCE: Once = Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(manifest::CHART_DIR);
    if std::env::var("WEFT_UPDATE_CHART").as_deref() == Ok("1") {
        UPDATE_ONCE.call_once(|| {
            for (path, contents) in manifest::chart_files().expect("deploy/ makes a chart") {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, contents).unwrap();
                eprintln!("wrote {}", path.display());
            }
        });
    }
    dir
}

fn read(path: &str) -> String {
    let path = chart_dir().join(path);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `{UPDATE}`)", path.display()))
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Objects in a comparable order: by kind, namespace, name.
fn sorted(mut objects: Vec<Value>) -> Vec<Value> {
    let key = |v: &Value| {
        [
            &v["kind"],
            &v["metadata"]["namespace"],
            &v["metadata"]["name"],
        ]
        .map(|f| f.as_str().unwrap_or_default().to_string())
    };
    objects.sort_by_key(key);
    objects
}

fn is_crd(v: &Value) -> bool {
    v["kind"] == "CustomResourceDefinition"
}

/// What `weftctl manifest generate` prints for `values`, split as Helm
/// splits it: (objects the templates make, CRDs).
fn generated(values: &Values) -> (Vec<Value>, Vec<Value>) {
    let (crds, objects): (Vec<Value>, Vec<Value>) =
        docs(&manifest::render(values).expect("renders"))
            .into_iter()
            .partition(is_crd);
    let objects = objects
        .into_iter()
        .filter(|v| v["kind"] != "Namespace")
        .collect();
    (sorted(objects), sorted(crds))
}

/// Every `{{ … }}` in a template, trimmed.
fn actions(text: &str) -> Vec<String> {
    text.match_indices("{{")
        .map(|(at, _)| {
            let rest = &text[at + 2..];
            let end = rest
                .find("}}")
                .unwrap_or_else(|| panic!("unclosed action at {}", &text[at..]));
            rest[..end].trim().to_string()
        })
        .collect()
}

/// Files under `dir` of the chart, as paths in the chart.
fn listing(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(chart_dir().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e} (run `{UPDATE}`)"))
        .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

#[test]
fn templates_and_crds_are_made_from_deploy() {
    let files = manifest::chart_files().expect("deploy/ makes a chart");
    let stale: Vec<&str> = files
        .iter()
        .filter(|(path, contents)| {
            std::fs::read_to_string(chart_dir().join(path))
                .ok()
                .as_ref()
                != Some(contents)
        })
        .map(|(path, _)| path.as_str())
        .collect();
    assert!(
        stale.is_empty(),
        "{}: {stale:?} are not what deploy/ makes: run `{UPDATE}`",
        manifest::CHART_DIR
    );
    // Nothing else: a template whose manifest left deploy/ goes too.
    let mut expected: BTreeSet<String> = files.into_iter().map(|(path, _)| path).collect();
    expected.insert("templates/NOTES.txt".into());
    let on_disk: BTreeSet<String> = listing("templates")
        .into_iter()
        .chain(listing("crds"))
        .collect();
    assert_eq!(on_disk, expected, "remove what deploy/ no longer makes");
}

#[test]
fn crds_are_deploys_byte_for_byte() {
    let (_, text) = manifest::FILES
        .iter()
        .find(|(file, _)| file.ends_with("/istio-crds.yaml"))
        .unwrap();
    assert!(docs(text).iter().all(is_crd));
    assert_eq!(read("crds/istio-crds.yaml"), *text);
}

#[test]
fn templates_use_only_plain_actions_and_defined_values() {
    let values: Value = serde_yaml::from_str(&read("values.yaml")).unwrap();
    let keys: BTreeSet<String> = values
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut used = BTreeSet::new();
    for path in listing("templates") {
        let text = read(&path);
        for action in actions(&text) {
            assert!(
                ACTIONS.contains(&action.as_str()),
                "{path}: `{{{{ {action} }}}}` is not one of {ACTIONS:?} (a comment with `{{{{` is an action too)"
            );
            if let Some(key) = action.strip_prefix(".Values.") {
                assert!(
                    keys.contains(key),
                    "{path} uses {key}, values.yaml lacks it"
                );
                if !path.ends_with("NOTES.txt") {
                    used.insert(key.to_string());
                }
            }
        }
    }
    assert_eq!(used, keys, "every value is used by an object");
}

#[test]
fn chart_and_values_agree_with_weftctl() {
    let chart: Value = serde_yaml::from_str(&read("Chart.yaml")).unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "weft");
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["kubeVersion"], ">=1.25.0-0");
    let values: Value = serde_yaml::from_str(&read("values.yaml")).unwrap();
    let defaults = Values::default();
    assert_eq!(values["image"], defaults.image.as_str());
    assert_eq!(values["trustDomain"], defaults.trust_domain.as_str());
    assert_eq!(values.as_mapping().unwrap().len(), 2, "{values:?}");
}

// === Helm ===

/// Asks Helm's Go SDK (through helm-python-sdk) for one thing; the answer
/// is JSON.
const HELM_PY: &str = r#"
import json, sys
try:
    import helm_python as helm
except ImportError as e:
    print(f"cannot import helm_python ({e})", file=sys.stderr)
    sys.exit(3)
req = json.load(sys.stdin)
out = {"helm": helm.helm_sdk_version()}
if req["op"] == "render":
    with helm.Chart.load(req["chart"]) as chart:
        out["manifests"] = chart.render(
            req["values"], name="weft", namespace=req["namespace"], is_install=True)
        out["crds"] = chart.crds
elif req["op"] == "lint":
    out["lint"] = helm.lint(req["chart"], req["values"], strict=True,
                            namespace=req["namespace"], kube_version=req.get("kube_version"))
json.dump(out, sys.stdout)
"#;

fn helm(request: serde_json::Value) -> serde_json::Value {
    let python = std::env::var("WEFT_HELM_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .args(["-c", HELM_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e} (WEFT_HELM_PYTHON names the interpreter)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "{stderr}\nThis test renders the chart with Helm's own engine: \
         `{python} -m pip install {HELM_SDK}` (or set WEFT_HELM_PYTHON to a Python that has it)"
    );
    assert!(out.status.success(), "Helm failed: {stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("answered by Helm {}", answer["helm"]);
    answer
}

/// Helm's rendering, split as Helm installs it: (objects of the
/// templates, CRDs of crds/, NOTES.txt).
fn helm_render(namespace: &str, values: serde_json::Value) -> (Vec<Value>, Vec<Value>, String) {
    let answer = helm(serde_json::json!({
        "op": "render",
        "chart": chart_dir(),
        "namespace": namespace,
        "values": values,
    }));
    let mut objects = Vec::new();
    let mut notes = None;
    for (path, text) in answer["manifests"].as_object().unwrap() {
        let text = text.as_str().unwrap();
        if path.ends_with("/NOTES.txt") {
            notes = Some(text.to_string());
        } else {
            objects.extend(docs(text));
        }
    }
    let crds = answer["crds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|crd| docs(crd["data"].as_str().unwrap()))
        .collect();
    (
        sorted(objects),
        sorted(crds),
        notes.expect("NOTES.txt is rendered"),
    )
}

/// Where two objects first differ, as `path: helm's value, weftctl's value`.
fn difference(helm: &Value, weftctl: &Value, path: &str) -> Option<String> {
    match (helm, weftctl) {
        (Value::Mapping(h), Value::Mapping(w)) => h.keys().chain(w.keys()).find_map(|k| {
            let key = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
            let missing = Value::Null;
            difference(
                h.get(k).unwrap_or(&missing),
                w.get(k).unwrap_or(&missing),
                &format!("{path}.{key}"),
            )
        }),
        (Value::Sequence(h), Value::Sequence(w)) if h.len() == w.len() => h
            .iter()
            .zip(w)
            .enumerate()
            .find_map(|(i, (h, w))| difference(h, w, &format!("{path}[{i}]"))),
        _ if helm == weftctl => None,
        _ => Some(format!("{path}: Helm has {helm:?}, weftctl {weftctl:?}")),
    }
}

fn assert_same(helm: &[Value], weftctl: &[Value]) {
    let name = |v: &Value| {
        format!(
            "{} {}",
            v["kind"].as_str().unwrap_or_default(),
            v["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    let names = |objects: &[Value]| objects.iter().map(name).collect::<Vec<_>>();
    assert_eq!(names(helm), names(weftctl), "Helm's objects, weftctl's");
    for (h, w) in helm.iter().zip(weftctl) {
        if let Some(difference) = difference(h, w, "") {
            panic!("{}: {difference}", name(h));
        }
    }
    assert_eq!(helm, weftctl);
}

#[test]
fn helm_renders_what_weftctl_generates() {
    let values = Values {
        namespace: "mesh-system".into(),
        image: "registry.example:5000/weft@sha256:abc".into(),
        trust_domain: "example.org".into(),
    };
    let (objects, crds, notes) = helm_render(
        &values.namespace,
        serde_json::json!({ "image": values.image, "trustDomain": values.trust_domain }),
    );
    let (expected_objects, expected_crds) = generated(&values);
    assert_same(&objects, &expected_objects);
    assert_same(&crds, &expected_crds);
    assert!(!objects.is_empty() && !crds.is_empty());
    // NOTES.txt renders, with the release's namespace in its commands.
    assert!(
        notes.contains("kubectl -n mesh-system exec {} -- weft-agent cni-uninstall"),
        "{notes}"
    );
    assert!(
        notes.contains("helm uninstall weft --namespace mesh-system"),
        "{notes}"
    );
}

#[test]
fn helm_renders_the_defaults_of_weftctl() {
    let (objects, _, _) = helm_render(manifest::DEFAULT_NAMESPACE, serde_json::json!({}));
    assert_same(&objects, &generated(&Values::default()).0);
}

#[test]
fn helm_lint_finds_nothing() {
    // The oldest Kubernetes Chart.yaml allows, and the newest the SDK knows
    // (deprecated kinds are found against a version).
    for kube_version in [Some("v1.25.0"), None] {
        let answer = helm(serde_json::json!({
            "op": "lint",
            "chart": chart_dir(),
            "namespace": manifest::DEFAULT_NAMESPACE,
            "values": {},
            "kube_version": kube_version,
        }));
        let lint = &answer["lint"];
        let findings: Vec<&serde_json::Value> = lint["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_u64() >= Some(2))
            .collect();
        assert!(
            findings.is_empty(),
            "helm lint --strict (Kubernetes {kube_version:?}): {findings:#?}"
        );
        assert_eq!(lint["errors"], serde_json::json!([]), "{lint:#}");
    }
}
