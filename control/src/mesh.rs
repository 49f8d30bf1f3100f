//! The parts of Istio's MeshConfig weft-control reads (`--mesh-config`,
//! the YAML of the `istio` ConfigMap's `mesh` key): `extensionProviders`,
//! which CUSTOM AuthorizationPolicies name. Every other MeshConfig field
//! is accepted and ignored.

use std::path::Path;

use serde::Deserialize;

use crate::{
    kinds::istio::Duration,
    yaml::{self, Limits, de::from_node, path::FieldPath},
};

/// What weft reads of MeshConfig.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
}

/// One `extensionProviders` entry: a name and one provider kind.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(default)]
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpc>,
    /// Recognised, not supported yet: a CUSTOM policy naming it is
    /// reported and ignored.
    #[serde(default)]
    pub envoy_ext_authz_http: Option<serde_json::Value>,
}

/// `envoyExtAuthzGrpc`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzGrpc {
    /// A service hostname (`ext-authz.foo.svc.cluster.local`) or an IP.
    pub service: String,
    pub port: u16,
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub fail_open: bool,
    /// The status sent when the provider fails and `failOpen` is false.
    #[serde(default)]
    pub status_on_error: Option<String>,
}

impl MeshConfig {
    /// Reads and checks a MeshConfig file; the error names the file, the
    /// field and the reason.
    pub fn load(path: &Path) -> Result<MeshConfig, String> {
        let at = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{at}: {e}"))?;
        MeshConfig::parse(&text).map_err(|e| format!("{at}: {e}"))
    }

    /// Reads and checks MeshConfig YAML (a file's text, or the `istio`
    /// ConfigMap's `mesh` key); the error names the line and column of
    /// malformed YAML, or the field at fault, and the reason.
    pub fn parse(text: &str) -> Result<MeshConfig, String> {
        let docs = yaml::parse(text, Limits::default()).map_err(|e| {
            format!(
                "line {} column {}: {}",
                e.mark.line, e.mark.column, e.message
            )
        })?;
        let Some(doc) = docs.first() else {
            return Ok(MeshConfig::default());
        };
        let mesh: MeshConfig =
            from_node(&doc.root, FieldPath::root()).map_err(|e| e.to_string())?;
        mesh.check()?;
        Ok(mesh)
    }

    fn check(&self) -> Result<(), String> {
        for (i, p) in self.extension_providers.iter().enumerate() {
            let at = format!("extensionProviders[{i}]");
            if p.name.is_empty() {
                return Err(format!("{at}.name: must be set"));
            }
            if let Some(grpc) = &p.envoy_ext_authz_grpc {
                if grpc.service.is_empty() {
                    return Err(format!("{at}.envoyExtAuthzGrpc.service: must be set"));
                }
                if let Some(status) = &grpc.status_on_error
                    && !status
                        .parse::<u16>()
                        .is_ok_and(|s| (200..=599).contains(&s))
                {
                    return Err(format!(
                        "{at}.envoyExtAuthzGrpc.statusOnError: `{status}` is not an HTTP status"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<MeshConfig, String> {
        let dir = std::env::temp_dir().join(format!("weft-mesh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.yaml", text.len()));
        std::fs::write(&file, text).unwrap();
        let out = MeshConfig::load(&file);
        let _ = std::fs::remove_file(&file);
        out
    }

    #[test]
    fn reads_ext_authz_providers_and_ignores_the_rest() {
        let mesh = load("accessLogFile: /dev/stdout\nextensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa.authz.svc.cluster.local\n    port: 9191\n    timeout: 250ms\n    failOpen: true\n    statusOnError: '503'\n- name: web\n  envoyExtAuthzHttp:\n    service: web\n    port: 80\n").unwrap();
        let grpc = mesh
            .provider("opa")
            .unwrap()
            .envoy_ext_authz_grpc
            .clone()
            .unwrap();
        assert_eq!(grpc.port, 9191);
        assert_eq!(grpc.timeout.unwrap().0.as_millis(), 250);
        assert!(grpc.fail_open);
        assert!(mesh.provider("web").unwrap().envoy_ext_authz_http.is_some());
        assert!(mesh.provider("none").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_field() {
        let err = load("extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa\n    port: 70000\n").unwrap_err();
        assert!(err.contains("port"), "{err}");
        let err = load("extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc:\n    service: opa\n    port: 1\n    statusOnError: nope\n").unwrap_err();
        assert!(err.contains("statusOnError"), "{err}");
    }
}
