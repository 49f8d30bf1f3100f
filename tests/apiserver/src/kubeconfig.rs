//! A kubeconfig pointing at the stand-in, as `kubectl` and kube-rs read it.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Why the kubeconfig could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the kubeconfig to {path} failed: {source}")]
pub struct KubeconfigError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// The kubeconfig YAML: one cluster, one token user, one current context.
pub fn render(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = STANDARD.encode(ca_pem);
    // Tokens are opaque strings: quote them as JSON (valid YAML) to survive any character.
    let token = serde_json::to_string(token).expect("a string always serializes");
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: weft-apiserver
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: weft-apiserver-user
  user:
    token: {token}
contexts:
- name: weft-apiserver
  context:
    cluster: weft-apiserver
    user: weft-apiserver-user
    namespace: default
current-context: weft-apiserver
preferences: {{}}
"
    )
}

/// Writes [`render`]'s output to `path`.
pub fn write(path: &Path, server: &str, ca_pem: &str, token: &str) -> Result<(), KubeconfigError> {
    std::fs::write(path, render(server, ca_pem, token)).map_err(|source| KubeconfigError {
        path: path.display().to_string(),
        source,
    })
}
