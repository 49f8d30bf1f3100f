//! The control plane's config directory: Kubernetes objects as YAML, one
//! file per object, each written atomically (temp file + rename) so the
//! control plane's watcher never reads half a file.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Labels or a selector.
pub type Labels = BTreeMap<String, String>;

/// A container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// Port name (`http`, `grpc`, …).
    pub name: String,
    /// Port number the app listens on.
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
}

/// A port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name; Istio infers the protocol from it (`http-*`, `tcp-*`, …).
    pub name: String,
    /// Port on the service VIP.
    pub port: u16,
    /// Port on the selected pods.
    pub target_port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// `appProtocol` (`http`, `http2`, `grpc`, …), which Istio prefers over
    /// the port name to pick the protocol; omitted from the YAML when `None`.
    pub app_protocol: Option<String>,
}

// === impl ServicePort ===

impl ServicePort {
    /// A TCP service port.
    pub fn tcp(name: &str, port: u16, target_port: u16) -> ServicePort {
        ServicePort {
            name: name.to_string(),
            port,
            target_port,
            protocol: "TCP".to_string(),
            app_protocol: None,
        }
    }

    /// An HTTP service port: TCP with `appProtocol: http`. Name it `http` or
    /// `http-*` too, so that a reader of the YAML sees the same thing.
    pub fn http(name: &str, port: u16, target_port: u16) -> ServicePort {
        ServicePort::tcp(name, port, target_port).with_app_protocol("http")
    }

    /// Sets `appProtocol` (`http`, `http2`, `grpc`, `tcp`, …).
    pub fn with_app_protocol(mut self, app_protocol: &str) -> ServicePort {
        self.app_protocol = Some(app_protocol.to_string());
        self
    }
}

/// Writes the config directory; in a Kubernetes-mode cluster, every file
/// written also goes to the API server as objects (and a removed file's
/// objects are deleted).
#[derive(Debug, Clone)]
pub struct ConfigDir {
    dir: PathBuf,
    api: Option<std::sync::Arc<crate::kube::KubeApi>>,
}

// === impl ConfigDir ===

impl ConfigDir {
    /// Uses `dir`, which may not exist yet.
    pub fn at(dir: PathBuf) -> ConfigDir {
        ConfigDir { dir, api: None }
    }

    /// Also writes everything to `api`.
    pub fn with_api(mut self, api: std::sync::Arc<crate::kube::KubeApi>) -> ConfigDir {
        self.api = Some(api);
        self
    }

    /// The API server, in a Kubernetes-mode cluster.
    pub fn api(&self) -> Option<&crate::kube::KubeApi> {
        self.api.as_deref()
    }

    /// Uses (and creates) `dir`.
    pub fn create(dir: PathBuf) -> Result<ConfigDir> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ConfigDir::at(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `text` to `<dir>/<name>` atomically. `name` is a plain file name.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        check_file_name(name)?;
        let path = self.dir.join(name);
        // A dot-file: watchers that skip hidden files never see it.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        if let Some(api) = &self.api {
            api.apply_file(name, text)?;
        }
        Ok(path)
    }

    /// Removes `<dir>/<name>`; fine if it does not exist.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        check_file_name(name)?;
        if let Some(api) = &self.api {
            api.remove_file(name);
        }
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// Writes one object as YAML to `<kind>-<namespace>-<name>.yaml`
    /// (or `<kind>-<name>.yaml` for cluster-scoped kinds); returns the file name.
    pub fn write_object(&self, object: &Value) -> Result<String> {
        let name = object_file_name(object)?;
        let yaml = serde_yaml::to_string(object).context("serialising YAML")?;
        self.write_file(&name, &yaml)?;
        Ok(name)
    }
}

fn check_file_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("config file name {name:?} must be a plain, non-hidden file name");
    }
    Ok(())
}

/// `<kind>-[<namespace>-]<name>.yaml`, lower case.
pub fn object_file_name(object: &Value) -> Result<String> {
    let kind = object["kind"].as_str().context("object has no kind")?;
    let name = object["metadata"]["name"]
        .as_str()
        .context("object has no metadata.name")?;
    Ok(match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{}-{ns}-{name}.yaml", kind.to_lowercase()),
        None => format!("{}-{name}.yaml", kind.to_lowercase()),
    })
}

/// A `v1/Node`.
pub fn node(name: &str, ip: Ipv4Addr, pod_cidr: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/hostname": name },
        },
        "spec": { "podCIDR": pod_cidr, "podCIDRs": [pod_cidr] },
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": ip.to_string() },
                { "type": "Hostname", "address": name },
            ],
        },
    })
}

/// A `v1/Namespace`.
pub fn namespace(name: &str, labels: &Labels) -> Value {
    let mut labels = labels.clone();
    labels
        .entry("kubernetes.io/metadata.name".to_string())
        .or_insert_with(|| name.to_string());
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    })
}

/// A `v1/ServiceAccount`.
pub fn service_account(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": { "name": name, "namespace": namespace },
    })
}

/// What a `v1/Pod` object says about a pod.
#[derive(Debug, Clone)]
pub struct PodObject<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// `metadata.uid`.
    pub uid: &'a str,
    /// Labels.
    pub labels: &'a Labels,
    /// `spec.nodeName`.
    pub node: &'a str,
    /// `spec.serviceAccountName`.
    pub service_account: &'a str,
    /// `spec.containers[0].ports`.
    pub ports: &'a [ContainerPort],
    /// `status.podIP`.
    pub ip: Ipv4Addr,
    /// `status.hostIP`.
    pub host_ip: Ipv4Addr,
}

/// A `v1/Pod`, running, with its IP.
pub fn pod(p: &PodObject<'_>) -> Value {
    let ports: Vec<Value> = p
        .ports
        .iter()
        .map(|cp| json!({ "name": cp.name, "containerPort": cp.port, "protocol": cp.protocol }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name,
            "namespace": p.namespace,
            "uid": p.uid,
            "labels": p.labels,
        },
        "spec": {
            "nodeName": p.node,
            "serviceAccountName": p.service_account,
            "containers": [{
                "name": "app",
                "image": "weft-sim-app",
                "ports": ports,
            }],
        },
        "status": {
            "phase": "Running",
            "hostIP": p.host_ip.to_string(),
            "podIP": p.ip.to_string(),
            "podIPs": [{ "ip": p.ip.to_string() }],
        },
    })
}

/// A `v1/Service` of type ClusterIP.
pub fn service(
    namespace: &str,
    name: &str,
    selector: &Labels,
    cluster_ip: Ipv4Addr,
    ports: &[ServicePort],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|sp| {
            let mut port = json!({
                "name": sp.name,
                "port": sp.port,
                "targetPort": sp.target_port,
                "protocol": sp.protocol,
            });
            if let Some(app_protocol) = &sp.app_protocol {
                port["appProtocol"] = json!(app_protocol);
            }
            port
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "ports": ports,
        },
    })
}

/// Labels from `[("k", "v"), …]`.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_yaml_has_what_the_control_plane_reads() {
        let labels = labels(&[("app", "web")]);
        let ports = [ContainerPort {
            name: "http".into(),
            port: 8080,
            protocol: "TCP".into(),
        }];
        let obj = pod(&PodObject {
            namespace: "demo",
            name: "web-1",
            uid: "u-1",
            labels: &labels,
            node: "node-1",
            service_account: "web",
            ports: &ports,
            ip: Ipv4Addr::new(10, 1, 1, 2),
            host_ip: Ipv4Addr::new(10, 0, 0, 1),
        });
        assert_eq!(object_file_name(&obj).unwrap(), "pod-demo-web-1.yaml");
        let yaml = serde_yaml::to_string(&obj).unwrap();
        let back: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back["status"]["podIP"].as_str(), Some("10.1.1.2"));
        assert_eq!(back["spec"]["nodeName"].as_str(), Some("node-1"));
        assert_eq!(
            back["spec"]["containers"][0]["ports"][0]["containerPort"].as_u64(),
            Some(8080)
        );
        assert_eq!(back["metadata"]["labels"]["app"].as_str(), Some("web"));
    }

    #[test]
    fn service_ports_carry_app_protocol_only_when_set() {
        let obj = service(
            "demo",
            "web",
            &labels(&[("app", "web")]),
            Ipv4Addr::new(10, 96, 0, 10),
            &[
                ServicePort::tcp("tcp-db", 5432, 5432),
                ServicePort::http("http", 80, 8080),
                ServicePort::tcp("grpc", 9090, 9090).with_app_protocol("grpc"),
            ],
        );
        let yaml = serde_yaml::to_string(&obj).unwrap();
        let back: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        let ports = back["spec"]["ports"].as_sequence().unwrap();
        assert!(ports[0].get("appProtocol").is_none(), "{yaml}");
        assert_eq!(ports[1]["appProtocol"].as_str(), Some("http"));
        assert_eq!(ports[1]["targetPort"].as_u64(), Some(8080));
        assert_eq!(ports[2]["appProtocol"].as_str(), Some("grpc"));
    }

    #[test]
    fn namespace_gets_its_name_label() {
        let obj = namespace("demo", &labels(&[("istio.io/dataplane-mode", "ambient")]));
        assert_eq!(object_file_name(&obj).unwrap(), "namespace-demo.yaml");
        assert_eq!(
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "demo"
        );
    }

    #[test]
    fn writes_are_atomic_and_names_checked() {
        let dir = std::env::temp_dir().join(format!("weft-sim-config-test-{}", std::process::id()));
        let cfg = ConfigDir::create(dir.clone()).unwrap();
        cfg.write_file("a.yaml", "x: 1\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.yaml")).unwrap(),
            "x: 1\n"
        );
        assert!(cfg.write_file("../escape.yaml", "").is_err());
        cfg.remove_file("a.yaml").unwrap();
        cfg.remove_file("a.yaml").unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir(&dir).unwrap();
    }
}
