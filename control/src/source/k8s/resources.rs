//! The resources the Kubernetes source watches, and one watch per
//! resource: it picks the first API version the server serves, decodes
//! every object with directory mode's validation, and reports to the
//! source's merge loop.

use std::{path::PathBuf, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    kinds::{self, Object, ObjectKey},
    source::{
        FileError,
        parse::{Outcome, parse_node},
    },
    yaml,
};

/// A watched resource: its kind, group, the versions to try in order,
/// plural and scope.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    pub kind: &'static str,
    pub group: &'static str,
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    /// Core kinds are always served; a missing one is an error, not an
    /// absent CRD.
    pub core: bool,
    /// Which objects: all of them, or one name in the root namespace.
    pub scope: Scope,
}

/// Which objects of a resource are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every object, in every namespace.
    All,
    /// The object of this name in the root namespace (`--root-namespace`),
    /// by field selector: a cluster's other ConfigMaps are never listed.
    RootNamed(&'static str),
}

const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY: &[&str] = &["v1", "v1beta1"];
const GATEWAY_API: &[&str] = &["v1", "v1beta1"];

const fn core(kind: &'static str, group: &'static str, plural: &'static str) -> Watched {
    Watched {
        kind,
        group,
        versions: &["v1"],
        plural,
        core: true,
        scope: Scope::All,
    }
}

const fn crd(
    kind: &'static str,
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
) -> Watched {
    Watched {
        kind,
        group,
        versions,
        plural,
        core: false,
        scope: Scope::All,
    }
}

/// Every kind weft reads, as the API serves it.
pub const WATCHED: &[Watched] = &[
    core("Namespace", "", "namespaces"),
    core("Node", "", "nodes"),
    core("Pod", "", "pods"),
    core("Service", "", "services"),
    core("ServiceAccount", "", "serviceaccounts"),
    core("EndpointSlice", "discovery.k8s.io", "endpointslices"),
    Watched {
        scope: Scope::RootNamed(kinds::config_map::MESH_CONFIG_MAP),
        ..core("ConfigMap", "", "configmaps")
    },
    crd(
        "VirtualService",
        "networking.istio.io",
        NETWORKING,
        "virtualservices",
    ),
    crd(
        "DestinationRule",
        "networking.istio.io",
        NETWORKING,
        "destinationrules",
    ),
    crd("Gateway", "networking.istio.io", NETWORKING, "gateways"),
    crd(
        "ServiceEntry",
        "networking.istio.io",
        NETWORKING,
        "serviceentries",
    ),
    crd(
        "WorkloadEntry",
        "networking.istio.io",
        NETWORKING,
        "workloadentries",
    ),
    crd(
        "AuthorizationPolicy",
        "security.istio.io",
        SECURITY,
        "authorizationpolicies",
    ),
    crd(
        "PeerAuthentication",
        "security.istio.io",
        SECURITY,
        "peerauthentications",
    ),
    crd(
        "RequestAuthentication",
        "security.istio.io",
        SECURITY,
        "requestauthentications",
    ),
    crd(
        "Telemetry",
        "telemetry.istio.io",
        &["v1", "v1alpha1"],
        "telemetries",
    ),
    crd(
        "Gateway",
        "gateway.networking.k8s.io",
        GATEWAY_API,
        "gateways",
    ),
    crd(
        "HTTPRoute",
        "gateway.networking.k8s.io",
        GATEWAY_API,
        "httproutes",
    ),
];

impl Watched {
    fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    fn api_resource(&self, version: &str) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: version.to_string(),
            api_version: self.api_version(version),
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// `pods`, `virtualservices.networking.istio.io`: as kubectl names it.
    pub fn name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The key kind of this resource's objects (as [`ObjectKey::kind`]).
    pub fn key_kind(&self) -> &'static str {
        kinds::key_for(&self.api_version(self.versions[0]), self.kind, None, "x")
            .map(|k| k.kind)
            .expect("every watched kind is a kind weft decodes")
    }
}

/// What a watch tells the merge loop.
#[derive(Debug)]
pub enum Report {
    /// Watching `version` of the resource; a relist begins.
    Relisting {
        resource: usize,
        version: String,
    },
    /// An object, decoded or rejected.
    Applied {
        resource: usize,
        key: ObjectKey,
        decoded: Result<Object, FileError>,
    },
    Deleted {
        key: ObjectKey,
    },
    /// The relist has listed everything: the resource is synced.
    Listed {
        resource: usize,
    },
    /// The API server serves none of the resource's versions.
    Absent {
        resource: usize,
    },
    /// The watch failed and is retrying (with backoff).
    Failing {
        resource: usize,
        reason: String,
    },
}

/// How long a resource that is not served waits before asking again.
const ABSENT_RETRY_FIRST: Duration = Duration::from_secs(1);
const ABSENT_RETRY_MAX: Duration = Duration::from_secs(30);

/// Watches `WATCHED[resource]` until `shutdown`; `root_namespace` is
/// where [`Scope::RootNamed`] resources are read.
pub async fn watch(
    client: Client,
    resource: usize,
    root_namespace: String,
    reports: mpsc::Sender<Report>,
    shutdown: CancellationToken,
) {
    let watched = WATCHED[resource];
    let mut absent_retry = ABSENT_RETRY_FIRST;
    loop {
        for version in watched.versions {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = watch_version(&client, resource, &root_namespace, version, &reports) => outcome,
            };
            match outcome {
                // Only a 404 ends a version's watch: try the next one.
                VersionOutcome::NotServed => continue,
                VersionOutcome::ReportsClosed => return,
            }
        }
        if watched.core {
            tracing::warn!(
                resource = watched.name(),
                "the API server does not serve a core resource; retrying"
            );
        } else {
            tracing::warn!(
                resource = watched.name(),
                versions = watched.versions.join(", "),
                retry_in_s = absent_retry.as_secs(),
                "the API server serves none of this resource's versions (is its CRD installed?); treating it as empty and retrying"
            );
        }
        if reports.send(Report::Absent { resource }).await.is_err() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(absent_retry) => {}
        }
        absent_retry = (absent_retry * 2).min(ABSENT_RETRY_MAX);
    }
}

enum VersionOutcome {
    NotServed,
    ReportsClosed,
}

/// One version's watch: relists and retries on its own (kube-runtime's
/// watcher with backoff); returns when the version turns out not to be
/// served.
async fn watch_version(
    client: &Client,
    resource: usize,
    root_namespace: &str,
    version: &str,
    reports: &mpsc::Sender<Report>,
) -> VersionOutcome {
    let watched = WATCHED[resource];
    let api_resource = watched.api_resource(version);
    let (api, config) = match watched.scope {
        Scope::All => (
            Api::<DynamicObject>::all_with(client.clone(), &api_resource),
            watcher::Config::default(),
        ),
        Scope::RootNamed(name) => (
            Api::namespaced_with(client.clone(), root_namespace, &api_resource),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        ),
    };
    let mut events = watcher(api, config).default_backoff().boxed();
    // Errors are logged once per run of failures, not at every retry.
    let mut failing: Option<String> = None;
    while let Some(event) = events.next().await {
        let report = match event {
            Ok(event) => {
                if let Some(reason) = failing.take() {
                    tracing::info!(resource = watched.name(), after = reason, "watch recovered");
                }
                match event {
                    watcher::Event::Init => Report::Relisting {
                        resource,
                        version: version.to_string(),
                    },
                    watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                        let (key, decoded) = decode(&api_resource, object);
                        let Some(key) = key else { continue };
                        Report::Applied {
                            resource,
                            key,
                            decoded,
                        }
                    }
                    watcher::Event::Delete(object) => {
                        let Some(key) = kinds::key_for(
                            &api_resource.api_version,
                            watched.kind,
                            object.metadata.namespace.as_deref(),
                            object.metadata.name.as_deref().unwrap_or_default(),
                        ) else {
                            continue;
                        };
                        Report::Deleted { key }
                    }
                    watcher::Event::InitDone => Report::Listed { resource },
                }
            }
            Err(error) => {
                if is_not_found(&error) {
                    tracing::debug!(resource = watched.name(), version, "version not served");
                    return VersionOutcome::NotServed;
                }
                if api_status(&error).is_some_and(|s| s.code == 410) {
                    // Routine: history compacted past our resourceVersion.
                    tracing::info!(
                        resource = watched.name(),
                        "resourceVersion expired (410 Gone); relisting"
                    );
                    continue;
                }
                let reason = describe(&error);
                if failing.as_ref() != Some(&reason) {
                    tracing::warn!(
                        resource = watched.name(),
                        version,
                        error = reason,
                        "watch failed; retrying with backoff, agents keep what they have"
                    );
                    failing = Some(reason.clone());
                }
                Report::Failing { resource, reason }
            }
        };
        if reports.send(report).await.is_err() {
            return VersionOutcome::ReportsClosed;
        }
    }
    VersionOutcome::ReportsClosed
}

fn api_status(error: &watcher::Error) -> Option<&kube::core::Status> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status),
        watcher::Error::WatchError(status) => Some(status),
        _ => None,
    }
}

fn is_not_found(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::InitialListFailed(_))
        && api_status(error).is_some_and(|s| s.code == 404)
}

/// One line on why a watch failed, naming RBAC when it is RBAC.
fn describe(error: &watcher::Error) -> String {
    match api_status(error) {
        Some(status) if status.code == 401 => format!(
            "the API server refused our credentials (401 Unauthorized): {}",
            status.message
        ),
        Some(status) if status.code == 403 => format!(
            "forbidden by RBAC (403): {}; check weft-control's ClusterRole",
            status.message
        ),
        Some(status) => format!("{} {}: {}", status.code, status.reason, status.message),
        None => error.to_string(),
    }
}

/// An object from the API server, decoded as directory mode decodes a
/// file (same kinds, same validation), straight from its JSON tree. `None` key when it cannot be
/// identified at all.
fn decode(
    api_resource: &ApiResource,
    object: DynamicObject,
) -> (Option<ObjectKey>, Result<Object, FileError>) {
    let name = object.metadata.name.clone().unwrap_or_default();
    let namespace = object.metadata.namespace.clone();
    let key = kinds::key_for(
        &api_resource.api_version,
        &api_resource.kind,
        namespace.as_deref(),
        &name,
    );
    let mut value = match serde_json::to_value(&object) {
        Ok(v) => v,
        Err(e) => unreachable!("a DynamicObject always serializes: {e}"),
    };
    // List items carry no type; managedFields is bookkeeping nobody reads.
    value["apiVersion"] = api_resource.api_version.clone().into();
    value["kind"] = api_resource.kind.clone().into();
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    let path = object_path(api_resource, namespace.as_deref(), &name);
    let decoded = match parse_node(&path, &yaml::from_json(&value)) {
        Outcome::Object(object) => Ok(object),
        Outcome::Rejected { error, .. } => Err(error),
        Outcome::Skipped => unreachable!("watched kinds are kinds weft decodes"),
    };
    (key, decoded)
}

/// Where the object lives in the API: what errors name as its "file".
fn object_path(api_resource: &ApiResource, namespace: Option<&str>, name: &str) -> PathBuf {
    let prefix = if api_resource.group.is_empty() {
        format!("/api/{}", api_resource.version)
    } else {
        format!("/apis/{}", api_resource.api_version)
    };
    match namespace {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{}/{name}", api_resource.plural),
        None => format!("{prefix}/{}/{name}", api_resource.plural),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watched_kind_is_decoded() {
        for watched in WATCHED {
            for version in watched.versions {
                assert!(
                    kinds::key_for(&watched.api_version(version), watched.kind, None, "x")
                        .is_some(),
                    "{} {version}",
                    watched.name()
                );
            }
        }
    }

    #[test]
    fn api_objects_are_validated_like_files() {
        let virtual_services = WATCHED.iter().find(|w| w.kind == "VirtualService").unwrap();
        let resource = virtual_services.api_resource("v1beta1");
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r", "namespace": "a", "resourceVersion": "7",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}, "weight": 101}]}]}
        }))
        .unwrap();
        let (key, decoded) = decode(&resource, object);
        assert_eq!(key.unwrap().to_string(), "VirtualService a/r");
        let error = decoded.unwrap_err();
        assert_eq!(
            error.file,
            PathBuf::from("/apis/networking.istio.io/v1beta1/namespaces/a/virtualservices/r")
        );
        assert_eq!(error.path, "spec.http[0].route", "{error}");
        assert!(error.message.contains("must be 100"), "{error}");
    }
}
