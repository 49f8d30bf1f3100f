//! Which resource types the server serves: the built-in Kubernetes kinds
//! weft uses, the Istio and Gateway API CRDs, and any CRD created at run
//! time. Also renders the discovery documents (`/api`, `/apis`, ...).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One served resource type, like a CRD's names and versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// API group, `""` for the core group.
    pub group: String,
    /// Served versions, preferred first; all share one store.
    pub versions: Vec<String>,
    /// Lower-case plural used in paths (`virtualservices`).
    pub plural: String,
    /// The kind (`VirtualService`).
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl Resource {
    /// A resource served at `group` in the given versions.
    pub fn new(group: &str, versions: &[&str], plural: &str, kind: &str, namespaced: bool) -> Self {
        Resource {
            group: group.to_string(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            plural: plural.to_string(),
            kind: kind.to_string(),
            namespaced,
        }
    }

    /// `plural.group` (or `plural` for the core group), as in error messages.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        api_version(&self.group, version)
    }

    /// Whether this resource only supports `create` (TokenReview).
    pub fn create_only(&self) -> bool {
        self.group == "authentication.k8s.io" && self.plural == "tokenreviews"
    }

    fn verbs(&self) -> Vec<&'static str> {
        if self.create_only() {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

/// `group/version`, or `version` for the core group.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Splits an `apiVersion` into group and version.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// The resource types, keyed by (group, plural).
#[derive(Debug, Default)]
pub struct Registry {
    resources: BTreeMap<(String, String), Resource>,
}

impl Registry {
    /// The built-in kinds, plus Istio and Gateway API if `istio_crds`.
    pub fn new(istio_crds: bool) -> Self {
        let mut registry = Registry::default();
        for resource in builtin_resources() {
            registry.insert(resource);
        }
        if istio_crds {
            for resource in istio_resources() {
                registry.insert(resource);
            }
        }
        registry
    }

    /// Serves `resource`, replacing an earlier registration of the same (group, plural).
    pub fn insert(&mut self, resource: Resource) {
        self.resources
            .insert((resource.group.clone(), resource.plural.clone()), resource);
    }

    /// Stops serving (group, plural); returns whether it was served.
    pub fn remove(&mut self, group: &str, plural: &str) -> bool {
        self.resources
            .remove(&(group.to_string(), plural.to_string()))
            .is_some()
    }

    /// The resource at `/apis/{group}/{version}/{plural}`, if served in that version.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&Resource> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .filter(|r| r.versions.iter().any(|v| v == version))
    }

    /// The resource with this kind in `group`, whatever the version.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&Resource> {
        self.resources
            .values()
            .find(|r| r.group == group && r.kind == kind)
    }

    /// Whether any resource is served at group/version.
    fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.resources
            .values()
            .any(|r| r.group == group && r.versions.iter().any(|v| v == version))
    }

    /// Versions served in `group`, in first-registered-preferred order.
    fn group_versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        // Core resources list the preferred version first; keep that order.
        for resource in self.resources.values().filter(|r| r.group == group) {
            for version in &resource.versions {
                if !versions.contains(version) {
                    versions.push(version.clone());
                }
            }
        }
        versions
    }

    /// `/api`: the core group's versions.
    pub fn core_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": self.group_versions(""),
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        })
    }

    /// `/apis`: every named group with its versions.
    pub fn group_list(&self) -> Value {
        let mut groups: Vec<&str> = self
            .resources
            .keys()
            .map(|(group, _)| group.as_str())
            .filter(|g| !g.is_empty())
            .collect();
        groups.dedup();
        let groups: Vec<Value> = groups.into_iter().map(|g| self.group_json(g)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/{group}`: one `APIGroup`, or None when nothing is served in it.
    pub fn group(&self, group: &str) -> Option<Value> {
        if self.resources.keys().any(|(g, _)| g == group) {
            let mut value = self.group_json(group);
            value["kind"] = json!("APIGroup");
            value["apiVersion"] = json!("v1");
            Some(value)
        } else {
            None
        }
    }

    fn group_json(&self, group: &str) -> Value {
        let versions: Vec<Value> = self
            .group_versions(group)
            .into_iter()
            .map(|v| json!({"groupVersion": api_version(group, &v), "version": v}))
            .collect();
        json!({
            "name": group,
            "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
            "versions": versions,
        })
    }

    /// `/api/v1` or `/apis/{group}/{version}`: an `APIResourceList`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.serves_group_version(group, version) {
            return None;
        }
        let resources: Vec<Value> = self
            .resources
            .values()
            .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
            .map(|r| {
                json!({
                    "name": r.plural,
                    "singularName": r.kind.to_lowercase(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": r.verbs(),
                })
            })
            .collect();
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": api_version(group, version),
            "resources": resources,
        }))
    }
}

/// The Kubernetes kinds weft reads or writes.
fn builtin_resources() -> Vec<Resource> {
    let core = |plural: &str, kind: &str, namespaced: bool| {
        Resource::new("", &["v1"], plural, kind, namespaced)
    };
    vec![
        core("namespaces", "Namespace", false),
        core("nodes", "Node", false),
        core("pods", "Pod", true),
        core("services", "Service", true),
        core("endpoints", "Endpoints", true),
        core("serviceaccounts", "ServiceAccount", true),
        core("configmaps", "ConfigMap", true),
        core("secrets", "Secret", true),
        core("events", "Event", true),
        Resource::new(
            "discovery.k8s.io",
            &["v1"],
            "endpointslices",
            "EndpointSlice",
            true,
        ),
        Resource::new("coordination.k8s.io", &["v1"], "leases", "Lease", true),
        Resource::new("apps", &["v1"], "deployments", "Deployment", true),
        Resource::new("apps", &["v1"], "daemonsets", "DaemonSet", true),
        Resource::new(
            "policy",
            &["v1"],
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
        ),
        Resource::new("rbac.authorization.k8s.io", &["v1"], "roles", "Role", true),
        Resource::new(
            "rbac.authorization.k8s.io",
            &["v1"],
            "rolebindings",
            "RoleBinding",
            true,
        ),
        Resource::new(
            "rbac.authorization.k8s.io",
            &["v1"],
            "clusterroles",
            "ClusterRole",
            false,
        ),
        Resource::new(
            "rbac.authorization.k8s.io",
            &["v1"],
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
        ),
        Resource::new(
            "apiextensions.k8s.io",
            &["v1"],
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        ),
        Resource::new(
            "authentication.k8s.io",
            &["v1"],
            "tokenreviews",
            "TokenReview",
            false,
        ),
    ]
}

/// Groups that are built in (not CRDs): their resources get no CRD object.
pub fn is_builtin_group(group: &str) -> bool {
    builtin_resources().iter().any(|r| r.group == group)
}

/// The Istio and Gateway API CRDs weft consumes.
pub fn istio_resources() -> Vec<Resource> {
    let mut resources = Vec::new();
    let networking = ["v1", "v1beta1", "v1alpha3"];
    for (plural, kind) in [
        ("virtualservices", "VirtualService"),
        ("destinationrules", "DestinationRule"),
        ("gateways", "Gateway"),
        ("serviceentries", "ServiceEntry"),
        ("sidecars", "Sidecar"),
        ("workloadentries", "WorkloadEntry"),
    ] {
        resources.push(Resource::new(
            "networking.istio.io",
            &networking,
            plural,
            kind,
            true,
        ));
    }
    for (plural, kind) in [
        ("authorizationpolicies", "AuthorizationPolicy"),
        ("peerauthentications", "PeerAuthentication"),
        ("requestauthentications", "RequestAuthentication"),
    ] {
        resources.push(Resource::new(
            "security.istio.io",
            &["v1", "v1beta1"],
            plural,
            kind,
            true,
        ));
    }
    resources.push(Resource::new(
        "telemetry.istio.io",
        &["v1", "v1alpha1"],
        "telemetries",
        "Telemetry",
        true,
    ));
    let gateway_api = "gateway.networking.k8s.io";
    for (plural, kind) in [
        ("gateways", "Gateway"),
        ("httproutes", "HTTPRoute"),
        ("grpcroutes", "GRPCRoute"),
        ("referencegrants", "ReferenceGrant"),
    ] {
        resources.push(Resource::new(
            gateway_api,
            &["v1", "v1beta1"],
            plural,
            kind,
            true,
        ));
    }
    for (plural, kind) in [("tcproutes", "TCPRoute"), ("tlsroutes", "TLSRoute")] {
        resources.push(Resource::new(
            gateway_api,
            &["v1alpha2"],
            plural,
            kind,
            true,
        ));
    }
    resources
}

/// The CustomResourceDefinition object describing `resource`.
pub fn crd_object(resource: &Resource) -> Value {
    let versions: Vec<Value> = resource
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v,
                "served": true,
                "storage": i == 0,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}},
            })
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.qualified_name()},
        "spec": {
            "group": resource.group,
            "names": {
                "plural": resource.plural,
                "singular": resource.kind.to_lowercase(),
                "kind": resource.kind,
                "listKind": format!("{}List", resource.kind),
            },
            "scope": if resource.namespaced { "Namespaced" } else { "Cluster" },
            "versions": versions,
        },
    })
}

/// The resource a CustomResourceDefinition object declares, if well-formed.
pub fn resource_from_crd(crd: &Value) -> Option<Resource> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let versions: Vec<String> = spec
        .get("versions")?
        .as_array()?
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
        .filter_map(|v| v.get("name")?.as_str().map(str::to_string))
        .collect();
    if versions.is_empty() {
        return None;
    }
    Some(Resource {
        group: spec.get("group")?.as_str()?.to_string(),
        versions,
        plural: names.get("plural")?.as_str()?.to_string(),
        kind: names.get("kind")?.as_str()?.to_string(),
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
    })
}
