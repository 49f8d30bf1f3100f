//! Kubernetes mode: where the CA's signing key lives, as in Istio. A
//! plugged CA in the `cacerts` Secret (`ca-cert.pem`, `ca-key.pem`,
//! `cert-chain.pem`, `root-cert.pem`) wins; else the self-signed root in
//! `istio-ca-secret`, created by whichever replica starts first, so that a
//! restarted or second replica signs with the same root. Either is
//! written into the state directory and loaded from there like files.
//!
//! Also publishes the trust bundle to every namespace as the
//! `istio-ca-root-cert` ConfigMap (`root-cert.pem`), which workloads and
//! stock Istio components read.

use std::{collections::BTreeSet, path::Path, sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{CaError, material};
use crate::{config::CaSource, kinds::Object, source::Snapshot};

/// Istio's plugged-CA Secret.
pub const PLUGGED_SECRET: &str = "cacerts";
/// Istio's self-signed CA Secret.
pub const SELF_SIGNED_SECRET: &str = "istio-ca-secret";
/// The ConfigMap in every namespace with the mesh's root.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// Where a plugged CA is written inside the state directory.
const PLUGGED_DIR: &str = "cacerts";

#[derive(Debug, thiserror::Error)]
pub enum KubeCaError {
    #[error("cannot read or write Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: &'static str,
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} has no `{key}`")]
    Missing {
        namespace: String,
        name: &'static str,
        key: &'static str,
    },
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// Finds (or creates) the CA's key in the cluster and writes it into
/// `state_dir`; what to load.
pub async fn ca_source(
    client: kube::Client,
    namespace: &str,
    state_dir: &Path,
    trust_domain: &str,
) -> Result<CaSource, KubeCaError> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let api = |name| {
        move |source| KubeCaError::Api {
            namespace: namespace.to_string(),
            name,
            source,
        }
    };
    if let Some(plugged) = secrets
        .get_opt(PLUGGED_SECRET)
        .await
        .map_err(api(PLUGGED_SECRET))?
    {
        tracing::info!(secret = %format!("{namespace}/{PLUGGED_SECRET}"), "signing with the plugged CA");
        return write_plugged(&plugged, namespace, &state_dir.join(PLUGGED_DIR));
    }
    for attempt in 0..2 {
        if let Some(existing) = secrets
            .get_opt(SELF_SIGNED_SECRET)
            .await
            .map_err(api(SELF_SIGNED_SECRET))?
        {
            let value = |key| field(&existing, namespace, SELF_SIGNED_SECRET, key);
            material::write_file(
                &state_dir.join(material::ROOT_KEY_FILE),
                &value("ca-key.pem")?,
                0o600,
            )?;
            material::write_file(
                &state_dir.join(material::ROOT_CERT_FILE),
                &value("ca-cert.pem")?,
                0o644,
            )?;
            tracing::info!(secret = %format!("{namespace}/{SELF_SIGNED_SECRET}"), "signing with the cluster's self-signed root");
            return Ok(CaSource::Generate);
        }
        // None yet: ours (an earlier root in the state directory, or a new
        // one) becomes the cluster's, unless another replica is faster.
        let root = material::generated_root(state_dir, trust_domain)?;
        let data = [
            ("ca-cert.pem", root.chain[0].clone()),
            ("ca-key.pem", root.key.serialize_pem()),
            ("cert-chain.pem", String::new()),
            ("key.pem", String::new()),
            ("root-cert.pem", String::new()),
        ];
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SELF_SIGNED_SECRET.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            type_: Some("istio.io/ca-root".into()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{namespace}/{SELF_SIGNED_SECRET}"), "stored the self-signed root for the other replicas");
                return Ok(CaSource::Generate);
            }
            Err(kube::Error::Api(status)) if status.code == 409 && attempt == 0 => {
                tracing::info!("another replica stored its root first; using that one");
                let _ = std::fs::remove_file(state_dir.join(material::ROOT_KEY_FILE));
                let _ = std::fs::remove_file(state_dir.join(material::ROOT_CERT_FILE));
            }
            Err(source) => return Err(api(SELF_SIGNED_SECRET)(source)),
        }
    }
    unreachable!("the second attempt reads the winner's Secret or fails")
}

fn field(
    secret: &Secret,
    namespace: &str,
    name: &'static str,
    key: &'static str,
) -> Result<Vec<u8>, KubeCaError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .filter(|v| !v.0.is_empty())
        .map(|v| v.0.clone())
        .ok_or_else(|| KubeCaError::Missing {
            namespace: namespace.to_string(),
            name,
            key,
        })
}

/// `cacerts` → `<dir>/ca-cert.pem`, `ca-key.pem` and `chain.pem`
/// (`cert-chain.pem`, then `root-cert.pem` unless already in it).
fn write_plugged(secret: &Secret, namespace: &str, dir: &Path) -> Result<CaSource, KubeCaError> {
    let value = |key| field(secret, namespace, PLUGGED_SECRET, key);
    let optional = |key| {
        value(key)
            .ok()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    std::fs::create_dir_all(dir).map_err(|source| CaError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let (cert, key, chain) = (
        dir.join("ca-cert.pem"),
        dir.join("ca-key.pem"),
        dir.join("chain.pem"),
    );
    material::write_file(&cert, &value("ca-cert.pem")?, 0o644)?;
    material::write_file(&key, &value("ca-key.pem")?, 0o600)?;
    let mut chain_pem = optional("cert-chain.pem").unwrap_or_default();
    if let Some(root) = optional("root-cert.pem")
        && !chain_pem.contains(root.trim())
    {
        chain_pem.push_str(&root);
    }
    let chain = if chain_pem.trim().is_empty() {
        None
    } else {
        material::write_file(&chain, chain_pem.as_bytes(), 0o644)?;
        Some(chain)
    };
    Ok(CaSource::Files { cert, key, chain })
}

/// How often namespaces whose ConfigMap could not be written are retried.
const PUBLISH_RETRY: Duration = Duration::from_secs(10);

/// Keeps `istio-ca-root-cert` (with `bundle_pem`) in every namespace the
/// source knows, until `shutdown`.
pub async fn publish_root_cert(
    client: kube::Client,
    bundle_pem: String,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
) {
    let mut published = BTreeSet::new();
    let mut failing = false;
    loop {
        let namespaces: Vec<String> = snapshots
            .borrow_and_update()
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::Namespace(ns) => Some(ns.metadata.name.clone()),
                _ => None,
            })
            .filter(|ns| !published.contains(ns))
            .collect();
        let mut failed = false;
        for namespace in namespaces {
            let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let configmap = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": ROOT_CERT_CONFIGMAP, "labels": {"istio.io/config": "true"}},
                "data": {"root-cert.pem": bundle_pem},
            });
            let params = PatchParams::apply("weft-control").force();
            match configmaps
                .patch(ROOT_CERT_CONFIGMAP, &params, &Patch::Apply(&configmap))
                .await
            {
                Ok(_) => {
                    published.insert(namespace);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%namespace, %error, "cannot write the istio-ca-root-cert ConfigMap; retrying");
                    }
                    failed = true;
                }
            }
        }
        failing = failed;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(PUBLISH_RETRY), if failed => {}
        }
    }
}
