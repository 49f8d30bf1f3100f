//! `ApiServer`: the listener's lifecycle (start, stop, restart on the same
//! port) and the test-facing helpers that read and write the store directly.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::auth::TokenInfo;
use crate::meta::{meta_str, metadata_mut};
use crate::registry::{
    Registry, Resource, crd_object, is_builtin_group, istio_resources, split_api_version,
};
use crate::shared::Shared;
use crate::store::{EventType, WriteScope, collection_key};
use crate::tls::{TlsIdentity, make_identity};

/// How the stand-in is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Serve the Istio and Gateway API resources (and their CRD objects).
    pub istio_crds: bool,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bookmark_interval: Duration::from_secs(1),
            istio_crds: true,
            port: 0,
        }
    }
}

/// A Kubernetes API server stand-in on 127.0.0.1 over HTTPS. Clones share
/// the same server.
#[derive(Clone)]
pub struct ApiServer {
    shared: Arc<Shared>,
    tls: Arc<TlsIdentity>,
    address: SocketAddr,
    listener: Arc<AsyncMutex<Option<JoinHandle<()>>>>,
}

// === impl ApiServer: lifecycle ===

impl ApiServer {
    /// The bearer token that may do everything.
    pub const ADMIN_TOKEN: &'static str = crate::auth::ADMIN_TOKEN;

    /// Binds 127.0.0.1:`options.port` and starts serving.
    pub async fn start(options: Options) -> anyhow::Result<ApiServer> {
        // kube-rs builds its client TLS config from the process default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = make_identity().context("creating the stand-in API server's TLS identity")?;
        let shared = Arc::new(Shared::new(
            Registry::new(options.istio_crds),
            options.bookmark_interval,
        ));
        let listener = bind(options.port).await?;
        let address = listener
            .local_addr()
            .context("reading the stand-in API server's bound address")?;
        let server = ApiServer {
            shared,
            tls: Arc::new(tls),
            address,
            listener: Arc::new(AsyncMutex::new(None)),
        };
        server.seed(options.istio_crds);
        *server.listener.lock().await = Some(server.spawn_accept_loop(listener));
        tracing::info!(url = %server.url(), "weft-apiserver listening");
        Ok(server)
    }

    /// Namespaces every cluster has, and CRD objects for the Istio resources.
    fn seed(&self, istio_crds: bool) {
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            self.apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            );
        }
        if istio_crds {
            for resource in istio_resources() {
                self.apply(crd_object(&resource));
            }
        }
    }

    fn spawn_accept_loop(&self, listener: TcpListener) -> JoinHandle<()> {
        let acceptor = TlsAcceptor::from(self.tls.config.clone());
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // Dropping this set (when the loop is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (tcp, peer) = match accepted {
                            Ok(accepted) => accepted,
                            Err(error) => {
                                tracing::warn!(%error, "accepting a connection failed");
                                continue;
                            }
                        };
                        let acceptor = acceptor.clone();
                        let shared = shared.clone();
                        connections.spawn(async move {
                            let tls = match acceptor.accept(tcp).await {
                                Ok(tls) => tls,
                                Err(error) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed");
                                    return;
                                }
                            };
                            let service = service_fn(move |request| crate::http::handle(shared.clone(), request));
                            if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// PEM of the CA certificate that signed the serving certificate.
    pub fn ca_pem(&self) -> String {
        self.tls.ca_pem.clone()
    }

    /// Writes a kubeconfig for this server with `token` as the user's bearer token.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        crate::kubeconfig::write(path, &self.url(), &self.tls.ca_pem, token)?;
        Ok(())
    }

    /// Stops listening and closes every connection (open watches end
    /// mid-stream). The state is kept for [`ApiServer::restart`].
    pub async fn stop(&self) {
        if let Some(accept_loop) = self.listener.lock().await.take() {
            accept_loop.abort();
            let _ = accept_loop.await;
        }
    }

    /// Listens again on the same port with the same CA and state.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut slot = self.listener.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let listener = bind(self.address.port()).await?;
        *slot = Some(self.spawn_accept_loop(listener));
        Ok(())
    }
}

async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the stand-in API server to {address} failed (is another process using the port?)"))
}

// === impl ApiServer: test helpers ===

impl ApiServer {
    /// Registers a bearer token: requests with it are accepted and
    /// TokenReview reports `review` for it.
    pub fn add_token(&self, token: &str, review: TokenInfo) {
        self.shared.tokens().insert(token, review);
    }

    /// The resource for `apiVersion` + `kind`; unknown kinds get a
    /// guessed lower-case plural and are namespaced when `namespaced`.
    fn resource_for(&self, api_version: &str, kind: &str, namespaced: bool) -> Resource {
        let (group, version) = split_api_version(api_version);
        self.shared
            .registry()
            .by_kind(group, kind)
            .cloned()
            .unwrap_or_else(|| {
                Resource::new(
                    group,
                    &[version],
                    &format!("{}s", kind.to_lowercase()),
                    kind,
                    namespaced,
                )
            })
    }

    /// Creates or replaces (whole, `.status` included) the object, as the
    /// API would; a namespaced kind without a namespace goes to "default".
    /// Returns the stored object.
    ///
    /// # Panics
    /// If the object has no `apiVersion`, `kind` or `metadata.name`: a test bug.
    pub fn apply(&self, mut object: Value) -> Value {
        let api_version = object["apiVersion"]
            .as_str()
            .expect("apply: object needs an apiVersion")
            .to_string();
        let kind = object["kind"]
            .as_str()
            .expect("apply: object needs a kind")
            .to_string();
        assert!(
            !meta_str(&object, "name").is_empty(),
            "apply: object needs metadata.name"
        );
        let resource = self.resource_for(
            &api_version,
            &kind,
            !meta_str(&object, "namespace").is_empty(),
        );
        let metadata = metadata_mut(&mut object);
        metadata.remove("resourceVersion");
        if resource.namespaced {
            if metadata
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                metadata.insert("namespace".into(), json!("default"));
            }
        } else {
            metadata.remove("namespace");
        }
        let key = collection_key(&resource);
        let (stored, _) = self
            .shared
            .write(&resource, false, |store| {
                if store
                    .get(
                        &key,
                        meta_str(&object, "namespace"),
                        meta_str(&object, "name"),
                    )
                    .is_some()
                {
                    store
                        .update(&resource, object, WriteScope::Whole, false)
                        .map(|o| (o, EventType::Modified))
                } else {
                    store
                        .create(&resource, object, false)
                        .map(|o| (o, EventType::Added))
                }
            })
            .expect("apply: create-or-replace under one lock cannot conflict");
        (*stored).clone()
    }

    /// Deletes an object (emitting DELETED); false if it did not exist.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let resource = self.resource_for(api_version, kind, namespace.is_some());
        let namespace = namespace.unwrap_or("");
        self.shared
            .write(&resource, false, |store| {
                store
                    .delete(&resource, namespace, name, false)
                    .map(|o| (o, EventType::Deleted))
            })
            .is_ok()
    }

    /// One object, with `apiVersion` as asked.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let resource = self.resource_for(api_version, kind, namespace.is_some());
        let object =
            self.shared
                .store()
                .get(&collection_key(&resource), namespace.unwrap_or(""), name)?;
        Some(with_api_version(&object, api_version))
    }

    /// Every object of the kind, all namespaces, in (namespace, name) order.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let resource = self.resource_for(api_version, kind, true);
        let (objects, _) = self.shared.store().list(
            &collection_key(&resource),
            None,
            None,
            None,
            &Default::default(),
        );
        objects
            .iter()
            .map(|o| with_api_version(o, api_version))
            .collect()
    }

    /// Forgets all history, like an etcd compaction: open watches get an
    /// in-stream 410 ERROR and end; watches and continue tokens from an
    /// older resourceVersion get 410.
    pub fn compact(&self) {
        self.shared.store().compact();
        self.shared.notify();
    }

    /// Ends every open watch abruptly (no final event, connection closed).
    pub fn drop_watches(&self) {
        self.shared.store().drop_epoch += 1;
        self.shared.notify();
    }

    /// Stops serving a resource (like deleting its CRD): requests get 404.
    /// Its objects are kept and come back with [`ApiServer::serve_resource`].
    pub fn remove_resource(&self, group: &str, plural: &str) {
        let crd_name = format!("{plural}.{group}");
        let removed = self.delete(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &crd_name,
        );
        if !removed {
            self.shared.registry_mut().remove(group, plural);
        }
    }

    /// Starts serving a resource (like a CRD appearing); non-built-in
    /// groups also get a CustomResourceDefinition object.
    pub fn serve_resource(&self, resource: Resource) {
        if is_builtin_group(&resource.group) {
            self.shared.registry_mut().insert(resource);
        } else {
            self.apply(crd_object(&resource));
        }
    }

    /// Requests served with this verb: get, list, watch, create, update,
    /// patch, delete, deletecollection.
    pub fn request_count(&self, verb: &str) -> u64 {
        self.shared.request_count(verb)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }
}

fn with_api_version(object: &Value, api_version: &str) -> Value {
    let mut copy = object.clone();
    copy["apiVersion"] = json!(api_version);
    copy
}
