//! Keeps one certificate per workload identity in use on this node, and
//! renews it at half its lifetime.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{IdentityError, ca_client};
use crate::{control::ControlClient, state::Identity};

/// A workload's certificate chain (leaf first, root excluded) and key.
pub struct WorkloadCert {
    pub identity: Identity,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub issued_at: SystemTime,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCert")
            .field("identity", &self.identity.to_string())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The private key is wiped from memory when the last user of a
/// certificate lets go of it.
impl Drop for WorkloadCert {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl WorkloadCert {
    /// Renew at half the lifetime, like istio-agent and ztunnel.
    pub fn refresh_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.issued_at)
            .unwrap_or_default();
        self.issued_at + lifetime / 2
    }
}

struct Entry {
    cert: Arc<WorkloadCert>,
    /// Pods on this node using the identity.
    users: usize,
}

/// The certificates of the identities in use on this node.
pub struct SecretManager {
    control: ControlClient,
    ttl: Duration,
    certs: Mutex<HashMap<Identity, Entry>>,
}

impl SecretManager {
    pub fn new(control: ControlClient, ttl: Duration) -> Self {
        Self {
            control,
            ttl,
            certs: Mutex::new(HashMap::new()),
        }
    }

    /// Registers one more pod using `identity` and returns its certificate,
    /// requesting one if there is none yet.
    pub async fn acquire(&self, identity: &Identity) -> Result<Arc<WorkloadCert>, IdentityError> {
        let cert = self.fetch(identity).await?;
        let mut certs = self.certs.lock().expect("certs lock");
        if let Some(entry) = certs.get_mut(identity) {
            entry.users += 1;
        }
        Ok(cert)
    }

    /// One pod less uses `identity`; with none left its key is dropped
    /// (and its memory wiped by the key type's drop) and never served again.
    /// Returns whether the identity was dropped.
    pub fn release(&self, identity: &Identity) -> bool {
        let mut certs = self.certs.lock().expect("certs lock");
        if let Some(entry) = certs.get_mut(identity) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                certs.remove(identity);
                tracing::info!(%identity, "no pod on this node uses the identity any more; certificate dropped");
                return true;
            }
        }
        false
    }

    /// The current certificate for an identity in use, renewed if due.
    pub async fn fetch(&self, identity: &Identity) -> Result<Arc<WorkloadCert>, IdentityError> {
        if let Some(entry) = self.certs.lock().expect("certs lock").get(identity)
            && SystemTime::now() < entry.cert.refresh_at()
        {
            return Ok(entry.cert.clone());
        }
        let cert = Arc::new(ca_client::request(&self.control, identity, self.ttl).await?);
        tracing::info!(%identity, not_after = ?cert.not_after, "workload certificate issued");
        let mut certs = self.certs.lock().expect("certs lock");
        certs
            .entry(identity.clone())
            .and_modify(|entry| entry.cert = cert.clone())
            .or_insert(Entry {
                cert: cert.clone(),
                users: 0,
            });
        Ok(cert)
    }

    /// Certificate without renewal or request: what the proxy uses on the
    /// connection path.
    pub fn cached(&self, identity: &Identity) -> Option<Arc<WorkloadCert>> {
        self.certs
            .lock()
            .expect("certs lock")
            .get(identity)
            .map(|e| e.cert.clone())
    }

    /// Requests new certificates for every identity in use: after the
    /// trust bundle changed, so that they chain to the CA's current root.
    pub async fn refresh_all(&self) {
        let identities: Vec<Identity> = self
            .certs
            .lock()
            .expect("certs lock")
            .keys()
            .cloned()
            .collect();
        for identity in identities {
            match ca_client::request(&self.control, &identity, self.ttl).await {
                Ok(cert) => {
                    let cert = Arc::new(cert);
                    if let Some(entry) = self.certs.lock().expect("certs lock").get_mut(&identity) {
                        entry.cert = cert;
                    }
                    tracing::info!(%identity, "workload certificate re-issued after a trust bundle change");
                }
                Err(err) => {
                    tracing::warn!(%identity, error = %err, "re-issuing after a trust bundle change failed; the renewal loop retries")
                }
            }
        }
    }

    /// Per identity held: its certificate's expiry, in Unix seconds.
    pub fn expiries(&self) -> Vec<(String, u64)> {
        let certs = self.certs.lock().expect("certs lock");
        certs
            .iter()
            .map(|(identity, entry)| {
                let expiry = entry
                    .cert
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                (identity.to_string(), expiry)
            })
            .collect()
    }

    /// The identities held and their certificates' validity, for the
    /// admin API.
    pub fn dump(&self) -> serde_json::Value {
        let certs = self.certs.lock().expect("certs lock");
        let mut list: Vec<serde_json::Value> = certs
            .iter()
            .map(|(identity, entry)| {
                let secs = |t: SystemTime| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                };
                let mut out = serde_json::json!({
                    "identity": identity.to_string(),
                    "pods": entry.users,
                    "issued_at": secs(entry.cert.issued_at),
                    "not_after": secs(entry.cert.not_after),
                });
                // What the leaf says of itself, and the root it chains to
                // (the issuer of the chain's last certificate).
                use x509_parser::prelude::FromDer;
                fn parse<'a>(
                    der: &'a CertificateDer<'_>,
                ) -> Option<x509_parser::certificate::X509Certificate<'a>> {
                    x509_parser::certificate::X509Certificate::from_der(der.as_ref())
                        .ok()
                        .map(|(_, c)| c)
                }
                if let Some(leaf) = entry.cert.chain.first().and_then(parse) {
                    out["serial"] = leaf.raw_serial_as_string().into();
                    out["not_before"] = leaf.validity().not_before.timestamp().into();
                    out["issuer"] = leaf.issuer().to_string().into();
                }
                if let Some(last) = entry.cert.chain.last().and_then(parse) {
                    out["root"] = last.issuer().to_string().into();
                }
                out
            })
            .collect();
        list.sort_by_key(|v| v["identity"].as_str().unwrap_or_default().to_string());
        serde_json::Value::Array(list)
    }

    /// Renews certificates at half-life, until the process ends.
    pub async fn run_renewals(self: Arc<Self>) {
        loop {
            let due: Vec<Identity> = {
                let now = SystemTime::now();
                let certs = self.certs.lock().expect("certs lock");
                certs
                    .iter()
                    .filter(|(_, e)| now >= e.cert.refresh_at())
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            for identity in due {
                if let Err(err) = self.fetch(&identity).await {
                    tracing::warn!(%identity, error = %err, "certificate renewal failed; retrying");
                }
            }
            // Checked every 1 to 2 s: during a control-plane outage, the
            // agents' retries do not all land in the same instant when it
            // is back.
            tokio::time::sleep(Duration::from_secs(1).mul_f64(1.0 + fastrand::f64())).await;
        }
    }
}
