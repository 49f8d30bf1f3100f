//! `weftctl install` and `weftctl uninstall`: the manifests of
//! `weftctl manifest generate`, applied to (or deleted from) a cluster
//! with server-side apply, as `kubectl apply --server-side
//! --field-manager weftctl --force-conflicts` would, then waited for as
//! `kubectl rollout status` waits.
//!
//! Every kind is looked up with discovery before anything is written, so
//! a kind the cluster does not serve stops the install before its first
//! object. Errors name the request that failed (verb, resource, object)
//! and what to check.

mod apply;
mod delete;
pub mod objects;
pub mod output;
pub mod rollout;

use std::{fmt, path::PathBuf, time::Duration};

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    config::{KubeConfigOptions, Kubeconfig},
    discovery::{ApiCapabilities, Scope},
};

pub use apply::{InstallOptions, install};
pub use delete::{UninstallOptions, uninstall};
pub use output::Printer;

use crate::manifest::ManifestError;
use objects::{Object, ObjectsError};

/// The field manager of every server-side apply (`managedFields`).
pub const FIELD_MANAGER: &str = "weftctl";
/// How often rollouts and terminating pods are checked.
const POLL: Duration = Duration::from_secs(1);
/// The longest one API request may take (shorter when --timeout is).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which cluster, as kubectl chooses it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// A kubeconfig file; else `$KUBECONFIG`, `~/.kube/config`, or the
    /// pod's service account.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; else its current context.
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Objects(#[from] ObjectsError),
    // `cause`, not `source`: the messages carry their causes in words
    // (main prints the chain of `source`s too).
    #[error("cannot use kubeconfig {}: {cause}", path.display())]
    Kubeconfig {
        path: PathBuf,
        cause: kube::config::KubeconfigError,
    },
    #[error("cannot use $KUBECONFIG or ~/.kube/config: {0}; pass --kubeconfig")]
    DefaultKubeconfig(kube::config::KubeconfigError),
    #[error(
        "no Kubernetes credentials: no usable $KUBECONFIG or ~/.kube/config, and not in a pod ({0}); pass --kubeconfig"
    )]
    NoCredentials(kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client for {url}: {cause}")]
    Client { url: String, cause: kube::Error },
    #[error(
        "cannot reach the API server at {url} ({cause}); is the cluster running, and are the kubeconfig and context the right ones?"
    )]
    Unreachable { url: String, cause: String },
    #[error(
        "the API server at {url} rejected the kubeconfig's credentials (401 Unauthorized) to {action}; is its token or certificate expired or for another cluster? (`kubectl auth whoami` checks them)"
    )]
    Unauthorized { url: String, action: String },
    #[error(
        "the API server forbids {action} (403 Forbidden: {message}); installing and uninstalling weft take the right to manage RBAC, workloads and namespaces (cluster-admin)"
    )]
    Forbidden { action: String, message: String },
    #[error("{object}: the API server does not serve kind {kind} in {api_version} ({why})")]
    UnknownKind {
        object: String,
        kind: String,
        api_version: String,
        why: String,
    },
    #[error("the API server refused to {action} ({code} {reason}: {message})")]
    Refused {
        action: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{action} failed: {cause}")]
    Request { action: String, cause: kube::Error },
    #[error(
        "{error} ({applied} of {total} objects were applied before; run install again once fixed)"
    )]
    Partial {
        error: Box<InstallError>,
        applied: usize,
        total: usize,
    },
    #[error(
        "timed out after {timeout} waiting for the rollout of {}; `kubectl -n {namespace} describe {describe}` and the events of the pods tell why",
        .pending.join(", ")
    )]
    RolloutTimeout {
        timeout: Human,
        namespace: String,
        /// `daemonset/weft-agent (1 of 3 updated pods available)`.
        pending: Vec<String>,
        /// `daemonset/weft-agent deployment/weft-control`.
        describe: String,
    },
    #[error(
        "{label} in {namespace} will not roll out: {reason}; `kubectl -n {namespace} describe {label}` and the events of its pods tell why"
    )]
    RolloutFailed {
        label: String,
        namespace: String,
        reason: String,
    },
    #[error("{object} was deleted while its rollout was being waited for")]
    Vanished { object: String },
    #[error(
        "{count} pod(s) of {daemonset} still run in {namespace} ({pods}): weft-cni is chained into their nodes' CNI config, and once the agents are gone no pod on those nodes can start (weft fails closed). Remove weft-cni first, then run uninstall again with --cni-removed: kubectl -n {namespace} get pods -l {selector} -o name | xargs -I{{}} kubectl -n {namespace} exec {{}} -- weft-agent cni-uninstall"
    )]
    AgentsRunning {
        daemonset: String,
        namespace: String,
        selector: String,
        count: usize,
        pods: String,
    },
    #[error(
        "timed out after {timeout} waiting for the pods of {daemonset} to terminate ({pods} left); the objects are deleted, the pods go when their nodes' kubelets stop them"
    )]
    PodsRemain {
        timeout: Human,
        daemonset: String,
        pods: String,
    },
}

/// A duration as the flags take it: `500ms`, `2s`, `5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 || d.is_zero() {
            write!(f, "{}ms", d.as_millis())
        } else if d.as_secs() >= 60 && d.as_secs().is_multiple_of(60) {
            write!(f, "{}m", d.as_secs() / 60)
        } else {
            write!(f, "{}s", d.as_secs())
        }
    }
}

// === impl Cluster ===

/// A client for the target cluster, and its URL for error messages.
struct Cluster {
    client: Client,
    url: String,
}

impl Cluster {
    /// Reads the kubeconfig as kubectl does and checks that the API server
    /// answers; returns its Kubernetes version too.
    async fn connect(
        target: &Target,
        timeout: Duration,
    ) -> Result<(Cluster, String), InstallError> {
        let options = KubeConfigOptions {
            context: target.context.clone(),
            ..Default::default()
        };
        let mut config = match (&target.kubeconfig, &target.context) {
            (Some(path), _) => {
                let kubeconfig_error = |cause| InstallError::Kubeconfig {
                    path: path.clone(),
                    cause,
                };
                let file = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(kubeconfig_error)?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(InstallError::DefaultKubeconfig)?,
            (None, None) => kube::Config::infer()
                .await
                .map_err(InstallError::NoCredentials)?,
        };
        let request_timeout = timeout.min(REQUEST_TIMEOUT);
        config.connect_timeout = Some(request_timeout);
        config.read_timeout = Some(request_timeout);
        config.write_timeout = Some(request_timeout);
        let url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = Client::try_from(config).map_err(|cause| InstallError::Client {
            url: url.clone(),
            cause,
        })?;
        let cluster = Cluster { client, url };
        let version = cluster
            .client
            .apiserver_version()
            .await
            .map_err(cluster.fail("get the server version (GET /version)".into()))?;
        Ok((cluster, version.git_version))
    }

    /// Turns a failed request into an error naming `action`.
    fn fail(&self, action: String) -> impl FnOnce(kube::Error) -> InstallError + '_ {
        move |error| classify(&self.url, action, error)
    }

    /// The resource serving `gvk`, or None when the cluster does not serve it.
    async fn resolve(
        &self,
        gvk: &GroupVersionKind,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, InstallError> {
        match kube::discovery::pinned_kind(&self.client, gvk).await {
            Ok(found) => Ok(Some(found)),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(error) => {
                let path = if gvk.group.is_empty() {
                    format!("/api/{}", gvk.version)
                } else {
                    format!("/apis/{}/{}", gvk.group, gvk.version)
                };
                Err(self.fail(format!(
                    "discover the resources of {} (GET {path})",
                    gvk.api_version()
                ))(error))
            }
        }
    }
}

/// A failed request as an error naming `action` (`patch daemonsets.apps
/// "weft-agent" in namespace istio-system`) and what to check.
fn classify(url: &str, action: String, error: kube::Error) -> InstallError {
    let cause = causes(&error);
    match error {
        kube::Error::Api(status) => match status.code {
            401 => InstallError::Unauthorized {
                url: url.to_string(),
                action,
            },
            403 => InstallError::Forbidden {
                action,
                message: status.message,
            },
            code => InstallError::Refused {
                action,
                code,
                reason: status.reason,
                message: status.message,
            },
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => InstallError::Unreachable {
            url: url.to_string(),
            cause,
        },
        cause => InstallError::Request { action, cause },
    }
}

/// The messages of an error's causes, outermost first, without repeats:
/// what a failed connection says (`Connection refused (os error 111)`).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        let message = cause.to_string();
        if !messages.iter().any(|m| m.contains(&message)) {
            messages.push(message);
        }
        next = cause.source();
    }
    if messages.is_empty() {
        error.to_string()
    } else {
        messages.join(": ")
    }
}

/// An object and where it goes: its resource and effective namespace.
struct Placed<'a> {
    object: &'a Object,
    resource: ApiResource,
    /// Set for namespaced kinds (the rendered one, else the install namespace).
    namespace: Option<String>,
}

impl<'a> Placed<'a> {
    fn new(
        object: &'a Object,
        resource: ApiResource,
        capabilities: &ApiCapabilities,
        default_namespace: &str,
    ) -> Placed<'a> {
        let namespace = (capabilities.scope == Scope::Namespaced).then(|| {
            object
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_string())
        });
        Placed {
            object,
            resource,
            namespace,
        }
    }

    /// `daemonset/weft-agent (istio-system)`, `clusterrole/weft-control`.
    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} ({ns})", self.object.label()),
            None => self.object.label(),
        }
    }

    /// `patch daemonsets.apps "weft-agent" in namespace istio-system`.
    fn action(&self, verb: &str) -> String {
        let resource = if self.resource.group.is_empty() {
            self.resource.plural.clone()
        } else {
            format!("{}.{}", self.resource.plural, self.resource.group)
        };
        let name = &self.object.name;
        match &self.namespace {
            Some(ns) => format!("{verb} {resource} \"{name}\" in namespace {ns}"),
            None => format!("{verb} {resource} \"{name}\""),
        }
    }

    fn api(&self, client: &Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_typed() {
        assert_eq!(Human(Duration::from_secs(2)).to_string(), "2s");
        assert_eq!(Human(Duration::from_secs(300)).to_string(), "5m");
        assert_eq!(Human(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(Human(Duration::from_millis(1500)).to_string(), "1500ms");
    }

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                ..kube::core::Status::failure(message, reason)
            }
            .boxed(),
        )
    }

    #[test]
    fn api_errors_name_the_request() {
        let url = "https://10.0.0.1:6443";
        let action = || "patch clusterroles.rbac.authorization.k8s.io \"weft-control\"".to_string();
        let forbidden = classify(
            url,
            action(),
            api_error(
                403,
                "Forbidden",
                "clusterroles.rbac.authorization.k8s.io \"weft-control\" is forbidden: User \"dev\" cannot patch resource \"clusterroles\"",
            ),
        );
        assert_eq!(
            forbidden.to_string(),
            "the API server forbids patch clusterroles.rbac.authorization.k8s.io \"weft-control\" (403 Forbidden: clusterroles.rbac.authorization.k8s.io \"weft-control\" is forbidden: User \"dev\" cannot patch resource \"clusterroles\"); installing and uninstalling weft take the right to manage RBAC, workloads and namespaces (cluster-admin)"
        );
        let unauthorized = classify(
            url,
            action(),
            api_error(401, "Unauthorized", "Unauthorized"),
        );
        assert!(
            unauthorized
                .to_string()
                .starts_with("the API server at https://10.0.0.1:6443 rejected the kubeconfig's credentials (401 Unauthorized) to patch clusterroles"),
            "{unauthorized}"
        );
        let invalid = classify(
            url,
            action(),
            api_error(422, "Invalid", "spec.rules: Required value"),
        );
        assert_eq!(
            invalid.to_string(),
            "the API server refused to patch clusterroles.rbac.authorization.k8s.io \"weft-control\" (422 Invalid: spec.rules: Required value)"
        );
    }
}
