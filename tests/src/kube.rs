//! The simulated cluster's Kubernetes mode: an API server (the in-repo
//! stand-in, `weft-apiserver`) serving on loopback *inside the control
//! plane's network namespace*, where `weft-control --kubeconfig` watches
//! it. Everything the cluster writes (nodes, namespaces, pods, services,
//! the tests' Istio YAML) goes into it as objects; a pod's IP is written
//! after its CNI ADD, as kubelet does; agents authenticate with a
//! service-account token the API server's TokenReview knows, bound to
//! their node.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use anyhow::{Context as _, Result};
use nix::sched::{CloneFlags, setns};
use serde::Deserialize as _;
use serde_json::Value;
use weft_apiserver::{ApiServer, Options, TokenInfo};

use crate::netns::Netns;

/// The namespace and service account agents run as (weft-control's
/// default `--agent-service-account`).
pub const AGENT_ACCOUNT: (&str, &str) = ("istio-system", "weft-agent");

/// Which object a config file put in the API: apiVersion, kind,
/// namespace, name.
type ObjectRef = (String, String, Option<String>, String);

/// The API server of a Kubernetes-mode cluster; stopped on drop.
pub struct KubeApi {
    api: ApiServer,
    /// Config file name → the objects it put in the API.
    files: Mutex<BTreeMap<String, Vec<ObjectRef>>>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("url", &self.api.url())
            .finish()
    }
}

// === impl KubeApi ===

impl KubeApi {
    /// Starts the API server on a thread inside `netns` (its sockets stay
    /// there), serving Istio's and Gateway API's resources too.
    pub fn start_in(netns: &Netns) -> Result<Arc<KubeApi>> {
        let file = netns.open()?;
        let name = netns.name().to_string();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<ApiServer>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weft-sim-apiserver".into())
            .spawn(move || {
                let started = setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into network namespace {name}"))
                    .and_then(|()| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .context("a runtime for the API server")
                    });
                let runtime = match started {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let api = match ApiServer::start(Options::default()).await {
                        Ok(api) => api,
                        Err(e) => {
                            let _ = started_tx.send(Err(e.context("starting weft-apiserver")));
                            return;
                        }
                    };
                    let _ = started_tx.send(Ok(api.clone()));
                    let _ = stop_rx.await;
                    api.stop().await;
                });
            })
            .context("starting the API server's thread")?;
        let api = started_rx
            .recv()
            .context("the API server's thread ended before it started")??;
        Ok(Arc::new(KubeApi {
            api,
            files: Mutex::new(BTreeMap::new()),
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The stand-in itself, to read or write objects directly.
    pub fn server(&self) -> &ApiServer {
        &self.api
    }

    /// Writes a kubeconfig with the admin token (weft-control's).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        self.api.write_kubeconfig(path, ApiServer::ADMIN_TOKEN)
    }

    /// A projected token of the agents' service account bound to `node`,
    /// for audience `istio-ca`, as kubelet would mount into the agent pod.
    pub fn agent_token(&self, node: &str) -> String {
        // JWT-shaped, as kubelet's are (weft-control reviews only those);
        // the stand-in knows it by its bytes.
        let token = format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3ZWZ0LXNpbSJ9.{node}");
        let (namespace, account) = AGENT_ACCOUNT;
        self.api.add_token(
            &token,
            TokenInfo {
                username: format!("system:serviceaccount:{namespace}:{account}"),
                uid: format!("uid-{account}"),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                ],
                audiences: vec!["istio-ca".into()],
                expired: false,
                extra: BTreeMap::from([(
                    "authentication.kubernetes.io/node-name".to_string(),
                    vec![node.to_string()],
                )]),
            },
        );
        token
    }

    /// Puts the objects of config file `name` (YAML, one or more
    /// documents) in the API, and deletes those the file's previous
    /// version had and this one has not.
    pub fn apply_file(&self, name: &str, text: &str) -> Result<()> {
        let mut applied = Vec::new();
        for document in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(document)
                .with_context(|| format!("parsing {name}"))?;
            if value.is_null() {
                continue;
            }
            let object: Value =
                serde_json::to_value(value).with_context(|| format!("converting {name}"))?;
            let stored = self.api.apply(object);
            applied.push(object_ref(&stored).with_context(|| format!("an object of {name}"))?);
        }
        let previous = self
            .lock_files()
            .insert(name.to_string(), applied.clone())
            .unwrap_or_default();
        for gone in previous.iter().filter(|r| !applied.contains(r)) {
            self.delete(gone);
        }
        Ok(())
    }

    /// Deletes the objects config file `name` put in the API.
    pub fn remove_file(&self, name: &str) {
        let objects = self.lock_files().remove(name).unwrap_or_default();
        for object in &objects {
            self.delete(object);
        }
    }

    fn delete(&self, (api_version, kind, namespace, name): &ObjectRef) {
        self.api
            .delete(api_version, kind, namespace.as_deref(), name);
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<ObjectRef>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn object_ref(object: &Value) -> Result<ObjectRef> {
    let field = |v: &Value, what: &str| -> Result<String> {
        v.as_str()
            .map(str::to_string)
            .with_context(|| format!("no {what}"))
    };
    Ok((
        field(&object["apiVersion"], "apiVersion")?,
        field(&object["kind"], "kind")?,
        object["metadata"]["namespace"].as_str().map(str::to_string),
        field(&object["metadata"]["name"], "metadata.name")?,
    ))
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}
