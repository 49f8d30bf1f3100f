//! The manifests against the code they run: every flag, environment
//! variable, port, probe path and mounted path must be one the binaries
//! really have.

use serde::Deserialize;
use serde_yaml::Value;

use super::*;

const AGENT_CONFIG: &str = include_str!("../../../agent/src/config.rs");
const AGENT_ADMIN: &str = include_str!("../../../agent/src/admin.rs");
const CNI_PLUGIN: &str = include_str!("../../../agent/src/bin/weft-cni.rs");
const CNI_INSTALL: &str = include_str!("../../../agent/src/cni_install/mod.rs");
const CNI_ENTRY: &str = include_str!("../../../agent/src/cni_install/netconf.rs");
const CONTROL_MAIN: &str = include_str!("../../../control/src/main.rs");
const CONTROL_DEBUG: &str = include_str!("../../../control/src/debug.rs");
const CONTROL_CA_SECRET: &str = include_str!("../../../control/src/ca/kube_secret.rs");
const CONTROL_TOKEN_REVIEW: &str = include_str!("../../../control/src/auth/token_review.rs");
const CNI_CONFLIST: &str = include_str!("../../../deploy/cni.conflist");

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn rendered(values: &Values) -> Vec<Value> {
    docs(&render(values).expect("renders"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    let spec = &workload["spec"]["template"]["spec"];
    spec["containers"]
        .as_sequence()
        .into_iter()
        .chain(spec["initContainers"].as_sequence())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// `--flag value` pairs (value `None` for a switch), as clap parses them;
/// `is_switch` tells which flags take no value. Anything else is refused.
fn flags(args: &[String], is_switch: impl Fn(&str) -> bool) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = &args[i];
        assert!(flag.starts_with("--"), "`{flag}` is not a flag");
        if is_switch(flag) {
            out.push((flag.clone(), None));
            i += 1;
        } else {
            let value = args
                .get(i + 1)
                .unwrap_or_else(|| panic!("{flag} has no value"));
            assert!(!value.starts_with("--"), "{flag} is followed by {value}");
            out.push((flag.clone(), Some(value.clone())));
            i += 2;
        }
    }
    out
}

/// The struct field clap derives `--flag` from, as declared in `source`:
/// `pub node_name: String,` or `#[arg(long = "server-name")] server_names`.
fn declared_field<'a>(source: &'a str, flag: &str) -> Option<&'a str> {
    let name = flag.trim_start_matches("--");
    let field = name.replace('-', "_");
    for (i, line) in source.lines().enumerate() {
        let line = line.trim();
        let plain = line.strip_prefix("pub ").unwrap_or(line);
        if plain.starts_with(&format!("{field}:")) {
            return Some(plain);
        }
        if line.contains(&format!("long = \"{name}\"")) {
            // The field is on one of the next lines, after the attribute.
            return source
                .lines()
                .skip(i + 1)
                .map(str::trim)
                .find(|l| !l.starts_with("#[") && !l.starts_with("///"));
        }
    }
    None
}

fn is_bool_flag(source: &str, flag: &str) -> bool {
    declared_field(source, flag).is_some_and(|f| f.ends_with("bool,"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn container_port(c: &Value, name: &str) -> u64 {
    c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// The volume mount (mount path, volume name) a path lies under.
fn mount_of<'a>(c: &'a Value, path: &str) -> Option<(&'a str, &'a str)> {
    c["volumeMounts"]
        .as_sequence()?
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
            )
        })
        .filter(|(mount, _)| path == *mount || path.starts_with(&format!("{mount}/")))
        .max_by_key(|(mount, _)| mount.len())
}

fn host_path<'a>(workload: &'a Value, volume: &str) -> Option<&'a str> {
    workload["spec"]["template"]["spec"]["volumes"]
        .as_sequence()?
        .iter()
        .find(|v| v["name"] == volume)?["hostPath"]["path"]
        .as_str()
}

#[test]
fn files_parse_as_they_are_and_markers_hold_defaults() {
    for (file, text) in FILES {
        assert!(!docs(text).is_empty(), "{file}");
        for (n, line) in text.lines().enumerate() {
            substitute(file, n + 1, line, &Values::default()).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // Rendering the defaults changes nothing but the markers.
    let plain: String = FILES
        .iter()
        .flat_map(|(_, text)| text.lines())
        .map(|l| l.split(MARKER).next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let out = render(&Values::default()).unwrap();
    for line in out.lines().filter(|l| !l.starts_with("# Source:")) {
        if !line.starts_with("# weft ") && line != "---" {
            assert!(plain.contains(line), "{line}");
        }
    }
}

#[test]
fn kinds_and_names() {
    let docs = rendered(&Values::default());
    let mut kinds: Vec<(String, String)> = docs
        .iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kinds.sort();
    let expected = [
        ("ClusterRole", "weft-control"),
        ("ClusterRoleBinding", "weft-control"),
        ("DaemonSet", "weft-agent"),
        ("Deployment", "weft-control"),
        ("Namespace", "istio-system"),
        ("PodDisruptionBudget", "weft-control"),
        ("Role", "weft-control"),
        ("RoleBinding", "weft-control"),
        ("Service", "istiod"),
        ("Service", "weft-control"),
        ("ServiceAccount", "weft-agent"),
        ("ServiceAccount", "weft-control"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn values_are_substituted_everywhere() {
    let values = Values {
        namespace: "mesh-system".into(),
        image: "registry.example:5000/weft@sha256:abc".into(),
        trust_domain: "example.org".into(),
    };
    let text = render(&values).unwrap();
    assert!(!text.contains("istio-system"), "{text}");
    assert!(!text.contains(MARKER), "{text}");
    assert!(!text.contains(&default_image()), "{text}");
    let docs = docs(&text);
    for d in &docs {
        let cluster_scoped = [
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ];
        if !cluster_scoped.contains(&d["kind"].as_str().unwrap()) {
            assert_eq!(d["metadata"]["namespace"], "mesh-system", "{d:?}");
        }
        for subject in d["subjects"].as_sequence().into_iter().flatten() {
            assert_eq!(subject["namespace"], "mesh-system", "{d:?}");
        }
    }
    let control = find(&docs, "Deployment", "weft-control");
    let args = strings(&container(control, "weft-control")["args"]);
    let f = flags(&args[1..], |f| is_bool_flag(CONTROL_MAIN, f));
    assert!(f.contains(&("--trust-domain".into(), Some("example.org".into()))));
    assert!(f.contains(&(
        "--server-name".into(),
        Some("weft-control.mesh-system.svc".into())
    )));
    assert!(f.contains(&(
        "--server-name".into(),
        Some("istiod.mesh-system.svc".into())
    )));
    assert!(f.contains(&(
        "--agent-service-account".into(),
        Some("mesh-system/weft-agent".into())
    )));
    let agent = find(&docs, "DaemonSet", "weft-agent");
    let args = strings(&container(agent, "weft-agent")["args"]);
    let f = flags(&args, |f| is_bool_flag(AGENT_CONFIG, f));
    assert!(f.contains(&(
        "--control-addr".into(),
        Some("weft-control.mesh-system.svc:15012".into())
    )));
    let pod = &agent["spec"]["template"]["spec"];
    for c in pod["containers"]
        .as_sequence()
        .into_iter()
        .chain(pod["initContainers"].as_sequence())
        .flatten()
    {
        assert_eq!(c["image"], "registry.example:5000/weft@sha256:abc");
    }
}

#[test]
fn bad_values_are_refused() {
    let bad = |f: fn(&mut Values)| {
        let mut v = Values::default();
        f(&mut v);
        render(&v).unwrap_err()
    };
    assert!(matches!(
        bad(|v| v.namespace = "Istio_System".into()),
        ManifestError::Namespace(_)
    ));
    assert!(matches!(
        bad(|v| v.trust_domain = "Example.ORG".into()),
        ManifestError::TrustDomain(_)
    ));
    assert!(matches!(
        bad(|v| v.image = "weft:1 # x".into()),
        ManifestError::Image(_)
    ));
}

#[test]
fn control_plane_flags_ports_and_paths_are_real() {
    let docs = rendered(&Values::default());
    let deployment = find(&docs, "Deployment", "weft-control");
    let c = container(deployment, "weft-control");
    assert_eq!(strings(&c["command"]), ["weft-control"]);
    let args = strings(&c["args"]);
    assert_eq!(args[0], "serve");
    assert!(CONTROL_MAIN.contains("Serve(Box<ServeArgs>)"));
    let flags = flags(&args[1..], |f| is_bool_flag(CONTROL_MAIN, f));
    for (flag, _) in &flags {
        assert!(
            declared_field(CONTROL_MAIN, flag).is_some(),
            "weft-control has no {flag}"
        );
    }
    let value = |name: &str| {
        flags
            .iter()
            .find(|(f, _)| f == name)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is not set"))
    };
    // Ports: the listening addresses, the container ports, the Service.
    let xds = port_of(&value("--xds-addr"));
    let debug = port_of(&value("--debug-addr"));
    assert_eq!((xds, debug), (15012, 15014));
    assert_eq!(container_port(c, "grpc-xds"), xds);
    assert_eq!(container_port(c, "http-monitoring"), debug);
    let service = find(&docs, "Service", "weft-control");
    let ports: Vec<(u64, String)> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (15012, "grpc-xds".to_string()),
            (15014, "http-monitoring".to_string())
        ]
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    // The readiness probe is a real debug path.
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["port"], "http-monitoring");
    let path = probe["path"].as_str().unwrap();
    assert!(CONTROL_DEBUG.contains(&format!("\"{path}\" if")), "{path}");
    // The state directory is mounted, writable.
    let dir = value("--state-dir");
    let (_, volume) = mount_of(c, &dir).unwrap_or_else(|| panic!("--state-dir {dir} not mounted"));
    assert_eq!(volume, "state");
    // Kubernetes mode, with its namespace and Lease identity from the
    // downward API under the variables clap reads.
    assert!(flags.iter().any(|(f, _)| f == "--kubernetes"));
    for env in c["env"].as_sequence().unwrap() {
        let name = env["name"].as_str().unwrap();
        assert!(
            CONTROL_MAIN.contains(&format!("env = \"{name}\"")),
            "weft-control reads no {name}"
        );
    }
    // The agents' service account is the DaemonSet's.
    let agent = find(&docs, "DaemonSet", "weft-agent");
    let agent_sa = agent["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let namespace = agent["metadata"]["namespace"].as_str().unwrap();
    assert!(flags.contains(&(
        "--agent-service-account".into(),
        Some(format!("{namespace}/{agent_sa}"))
    )));
    // RBAC: what the code reads and writes is granted.
    let rules = |kind: &str| -> Vec<(String, String, String)> {
        find(&docs, kind, "weft-control")["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let (groups, resources, verbs) = (
                    strings(&r["apiGroups"]),
                    strings(&r["resources"]),
                    strings(&r["verbs"]),
                );
                groups.into_iter().flat_map(move |g| {
                    let verbs = verbs.clone();
                    resources.clone().into_iter().flat_map(move |res| {
                        let g = g.clone();
                        verbs
                            .clone()
                            .into_iter()
                            .map(move |v| (g.clone(), res.clone(), v))
                    })
                })
            })
            .collect()
    };
    let granted = |kind: &str, group: &str, resource: &str, verb: &str| {
        rules(kind)
            .iter()
            .any(|(g, r, v)| g == group && (r == resource || r == "*") && v == verb)
    };
    for resource in ["namespaces", "nodes", "pods", "services", "serviceaccounts"] {
        for verb in ["list", "watch"] {
            assert!(
                granted("ClusterRole", "", resource, verb),
                "{verb} {resource}"
            );
        }
    }
    assert!(granted(
        "ClusterRole",
        "discovery.k8s.io",
        "endpointslices",
        "watch"
    ));
    assert!(granted(
        "ClusterRole",
        "networking.istio.io",
        "virtualservices",
        "watch"
    ));
    assert!(CONTROL_TOKEN_REVIEW.contains("TokenReview"));
    assert!(granted(
        "ClusterRole",
        "authentication.k8s.io",
        "tokenreviews",
        "create"
    ));
    assert!(CONTROL_CA_SECRET.contains("PatchParams::apply"));
    assert!(
        granted("ClusterRole", "", "configmaps", "watch"),
        "the mesh config"
    );
    assert!(granted("ClusterRole", "", "configmaps", "patch"));
    assert!(granted("ClusterRole", "", "configmaps", "create"));
    for verb in ["get", "create"] {
        assert!(granted("Role", "", "secrets", verb), "{verb} secrets");
    }
    for verb in ["get", "create", "update"] {
        assert!(
            granted("Role", "coordination.k8s.io", "leases", verb),
            "{verb} leases"
        );
    }
    assert!(
        !granted("ClusterRole", "", "secrets", "get"),
        "secrets only in its own namespace"
    );
}

#[test]
fn agent_flags_env_ports_and_paths_are_real() {
    let docs = rendered(&Values::default());
    let daemonset = find(&docs, "DaemonSet", "weft-agent");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = container(daemonset, "weft-agent");
    assert_eq!(strings(&c["command"]), ["weft-agent"]);
    let args = strings(&c["args"]);
    let flags = flags(&args, |f| is_bool_flag(AGENT_CONFIG, f));
    for (flag, _) in &flags {
        assert!(
            declared_field(AGENT_CONFIG, flag).is_some(),
            "weft-agent has no {flag}"
        );
    }
    let value = |name: &str| {
        flags
            .iter()
            .find(|(f, _)| f == name)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} is not set"))
    };
    // Environment variables are the ones clap reads.
    for env in c["env"].as_sequence().unwrap() {
        let name = env["name"].as_str().unwrap();
        assert!(
            AGENT_CONFIG.contains(&format!("env = \"{name}\"")),
            "weft-agent reads no {name}"
        );
    }
    assert!(AGENT_CONFIG.contains("env = \"WEFT_NODE_NAME\""));
    // Durations parse the way the agent parses them.
    let drain = value("--drain-timeout");
    assert!(drain.ends_with('s') && drain[..drain.len() - 1].parse::<u64>().is_ok());
    // Readiness: the port the agent listens on, a path it serves.
    let readiness = port_of(&value("--readiness-addr"));
    assert_eq!(readiness, 15021);
    // No declared ports: on the host network they are host ports, which
    // would keep an upgrade's surge pod off the node.
    assert!(c["ports"].is_null(), "the agent declares container ports");
    let strategy = &daemonset["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(strategy["maxSurge"].as_u64(), Some(1));
    assert_eq!(strategy["maxUnavailable"].as_u64(), Some(0));
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["port"].as_u64(), Some(readiness));
    let path = probe["path"].as_str().unwrap();
    assert!(AGENT_ADMIN.contains(&format!("(_, \"{path}\")")), "{path}");
    assert!(value("--admin-addr").starts_with("127.0.0.1:"));
    assert_eq!(port_of(&value("--admin-addr")), 15000);
    // Every path flag lies on a volume; host state on host paths.
    for flag in [
        "--ca-root-file",
        "--token-file",
        "--cni-socket",
        "--state-dir",
        "--bpffs-dir",
        "--cgroup",
    ] {
        let path = value(flag);
        let (mount, volume) =
            mount_of(c, &path).unwrap_or_else(|| panic!("{flag} {path} is on no volume"));
        if matches!(
            flag,
            "--cni-socket" | "--state-dir" | "--bpffs-dir" | "--cgroup"
        ) {
            // The same path on the host: weft-cni, run by the container
            // runtime on the host, finds the socket at the path it is given.
            assert_eq!(host_path(daemonset, volume), Some(mount), "{flag}");
        }
    }
    // Paths given as variables (the CNI directories): on volumes, the
    // same paths on the host, writable.
    for env in c["env"].as_sequence().unwrap() {
        let Some(path) = env["value"].as_str().filter(|v| v.starts_with('/')) else {
            continue;
        };
        let name = env["name"].as_str().unwrap();
        let (mount, volume) =
            mount_of(c, path).unwrap_or_else(|| panic!("{name} {path} is on no volume"));
        assert_eq!(host_path(daemonset, volume), Some(mount), "{name}");
        let writable = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount)
            .is_some_and(|m| m["readOnly"] != true);
        assert!(writable, "{name} {path} is mounted read-only");
    }
    // The token is the projected service-account token weft-control's
    // TokenReview expects (audience istio-ca).
    let token = value("--token-file");
    let (_, volume) = mount_of(c, &token).unwrap();
    let source = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap()["projected"]["sources"][0]["serviceAccountToken"]
        .clone();
    assert_eq!(source["audience"], "istio-ca");
    assert!(CONTROL_TOKEN_REVIEW.contains("\"istio-ca\""));
    assert!(token.ends_with(&format!("/{}", source["path"].as_str().unwrap())));
    // The root is the ConfigMap weft-control publishes, under its key.
    let root = value("--ca-root-file");
    let (_, volume) = mount_of(c, &root).unwrap();
    let configmap = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .unwrap()["configMap"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        CONTROL_CA_SECRET.contains(&format!("\"{configmap}\"")),
        "{configmap}"
    );
    let key = root.rsplit('/').next().unwrap();
    assert!(CONTROL_CA_SECRET.contains(&format!("\"{key}\"")), "{key}");
    assert_eq!(
        pod["hostPID"], true,
        "pods running before install are found by process"
    );
    // Privileges the agent needs.
    let security = &c["securityContext"];
    assert_eq!(security["privileged"], true);
    let caps = strings(&security["capabilities"]["add"]);
    for cap in ["BPF", "NET_ADMIN", "SYS_ADMIN"] {
        assert!(caps.contains(&cap.to_string()), "{cap}");
    }
}

#[test]
fn cni_configuration_matches_the_plugin_and_the_agent() {
    let conflist: serde_json::Value = serde_json::from_str(CNI_CONFLIST).expect("JSON");
    let plugins = conflist["plugins"].as_array().unwrap();
    let weft = plugins.last().unwrap();
    assert_eq!(weft["type"], "weft-cni", "weft-cni is chained last");
    assert!(
        plugins.len() > 1,
        "weft-cni needs a primary plugin before it"
    );
    for key in weft.as_object().unwrap().keys() {
        if key != "type" {
            assert!(
                CNI_PLUGIN.contains(&format!(".get(\"{key}\")")),
                "weft-cni reads no `{key}`"
            );
        }
    }
    let version = conflist["cniVersion"].as_str().unwrap();
    assert!(CNI_PLUGIN.contains(&format!("\"{version}\"")), "{version}");

    let docs = rendered(&Values::default());
    let daemonset = find(&docs, "DaemonSet", "weft-agent");
    let args = strings(&container(daemonset, "weft-agent")["args"]);
    let socket = args
        .iter()
        .skip_while(|a| *a != "--cni-socket")
        .nth(1)
        .unwrap();
    assert_eq!(weft["agent_socket"], socket.as_str());

    // The agent chains the same entry itself (--cni-install), into the
    // node's directories: the keys it writes are the example's, and the
    // timeout too.
    assert!(args.iter().any(|a| a == "--cni-install"), "{args:?}");
    let written = CNI_ENTRY
        .split("fn fields(&self)")
        .nth(1)
        .and_then(|rest| rest.split("\n    }\n").next())
        .expect("PluginEntry::fields in netconf.rs");
    let keys: Vec<&String> = weft.as_object().unwrap().keys().collect();
    for key in &keys {
        assert!(
            written.contains(&format!("(\"{key}\", ")),
            "the agent does not write `{key}`"
        );
    }
    assert_eq!(written.matches("(\"").count(), keys.len(), "{written}");
    let timeout = weft["timeout_seconds"].as_u64().unwrap();
    assert!(
        CNI_INSTALL.contains(&format!("PLUGIN_TIMEOUT_SECONDS: u64 = {timeout};")),
        "{timeout}"
    );
    let env = |name: &str| {
        container(daemonset, "weft-agent")["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{name} is not set"))
            .to_string()
    };
    assert_eq!(env("WEFT_CNI_BIN_DIR"), "/opt/cni/bin");
    assert_eq!(env("WEFT_CNI_NET_DIR"), "/etc/cni/net.d");
}

#[test]
fn istio_crds_declare_every_istio_kind_weft_control_watches_in_every_version() {
    let docs = rendered(&Values::default());
    let crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    for watched in weft_control::source::k8s::WATCHED
        .iter()
        .filter(|w| w.group.ends_with(".istio.io"))
    {
        let name = format!("{}.{}", watched.plural, watched.group);
        let crd = crds
            .iter()
            .find(|c| c["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no CRD {name}"));
        assert_eq!(crd["spec"]["names"]["kind"], watched.kind);
        let versions: Vec<&str> = crd["spec"]["versions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for version in watched.versions {
            assert!(versions.contains(version), "{name} lacks {version}");
        }
        let storage = crd["spec"]["versions"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|v| v["storage"] == true)
            .count();
        assert_eq!(storage, 1, "{name}: exactly one storage version");
    }
}

#[test]
fn the_image_builds_what_the_manifests_run_with_the_toolchain_xtask_installs() {
    const DOCKERFILE: &str = include_str!("../../../deploy/Dockerfile");
    const XTASK_SETUP: &str = include_str!("../../../xtask/src/setup.rs");
    let docs = rendered(&Values::default());
    let control = container(find(&docs, "Deployment", "weft-control"), "weft-control");
    let agent = container(find(&docs, "DaemonSet", "weft-agent"), "weft-agent");
    let copied = DOCKERFILE
        .lines()
        .find(|l| l.contains("cp target/release/"))
        .expect("the build stage copies the binaries out");
    for binary in strings(&control["command"])
        .into_iter()
        .chain(strings(&agent["command"]))
        .chain(["weft-cni".to_string()])
    {
        assert!(
            copied.contains(&format!("target/release/{binary} ")),
            "{binary} is not in the image"
        );
    }
    assert!(DOCKERFILE.contains("COPY --from=build /out/ /usr/local/bin/"));
    // The eBPF toolchain is the one `cargo xtask setup` installs.
    let version = XTASK_SETUP
        .lines()
        .find_map(|l| l.strip_prefix("const BPF_LINKER_VERSION: &str = \""))
        .and_then(|rest| rest.strip_suffix("\";"))
        .expect("xtask pins bpf-linker");
    assert!(
        DOCKERFILE.contains(&format!("ARG BPF_LINKER_VERSION={version}")),
        "the Dockerfile's bpf-linker is not xtask's {version}"
    );
    assert!(DOCKERFILE.contains("--features llvm-22") && XTASK_SETUP.contains("\"llvm-22\""));
    assert!(DOCKERFILE.contains("rust-src --toolchain nightly"));
}
