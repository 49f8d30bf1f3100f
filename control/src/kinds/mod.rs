//! The Kubernetes kinds that directory mode understands, one module per
//! kind. Each module holds the serde types for the fields weft uses;
//! unknown fields are ignored, like `kubectl apply` without strict
//! validation.
//!
//! To add a kind: write its module, add a variant to [`Object`] and an arm
//! to [`decode`].

pub mod authorization_policy;
mod meta;
pub mod namespace;
pub mod node;
pub mod peer_authentication;
pub mod pod;
pub mod selector;
pub mod service;
pub mod service_account;

use serde::Deserialize;

pub use authorization_policy::AuthorizationPolicy;
pub use meta::ObjectMeta;
pub use namespace::Namespace;
pub use node::Node;
pub use peer_authentication::PeerAuthentication;
pub use pod::Pod;
pub use service::Service;
pub use service_account::ServiceAccount;

/// `apiVersion` and `kind`, read first to pick the type of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMeta {
    pub api_version: String,
    pub kind: String,
}

/// One decoded configuration object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    Service(Service),
    ServiceAccount(ServiceAccount),
}

/// What [`decode`] made of a document.
#[derive(Debug)]
pub enum Decoded {
    Object(Box<Object>),
    /// A kind weft does not know (yet); the caller logs and skips it.
    Unknown(TypeMeta),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{kind} must have apiVersion `{expected}`, not `{got}`")]
    WrongApiVersion {
        kind: String,
        expected: &'static str,
        got: String,
    },
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{kind} must have apiVersion {expected}, not `{got}`")]
    WrongGroupVersion {
        kind: String,
        expected: String,
        got: String,
    },
    #[error("{0}")]
    Invalid(#[from] authorization_policy::Invalid),
    #[error("{kind} has an empty metadata.name")]
    EmptyName { kind: &'static str },
}

/// Decodes `document` (the YAML text of one document) as the kind named
/// by `type_meta`.
pub fn decode(type_meta: &TypeMeta, document: &str) -> Result<Decoded, DecodeError> {
    let object = match (type_meta.api_version.as_str(), type_meta.kind.as_str()) {
        (api, kind) if is_core_kind(kind) && api != "v1" => {
            return Err(DecodeError::WrongApiVersion {
                kind: kind.to_string(),
                expected: "v1",
                got: api.to_string(),
            });
        }
        (api, kind) if security_kind(kind) && !SECURITY_VERSIONS.contains(&api) => {
            return Err(DecodeError::WrongGroupVersion {
                kind: kind.to_string(),
                expected: one_of(SECURITY_VERSIONS),
                got: api.to_string(),
            });
        }
        (_, "AuthorizationPolicy") => {
            let policy: AuthorizationPolicy = serde_yaml::from_str(document)?;
            policy.validate()?;
            Object::AuthorizationPolicy(policy)
        }
        (_, "PeerAuthentication") => {
            let policy: PeerAuthentication = serde_yaml::from_str(document)?;
            policy.validate()?;
            Object::PeerAuthentication(policy)
        }
        (_, "Namespace") => Object::Namespace(serde_yaml::from_str(document)?),
        (_, "Node") => Object::Node(serde_yaml::from_str(document)?),
        (_, "Pod") => Object::Pod(serde_yaml::from_str(document)?),
        (_, "Service") => Object::Service(serde_yaml::from_str(document)?),
        (_, "ServiceAccount") => Object::ServiceAccount(serde_yaml::from_str(document)?),
        _ => return Ok(Decoded::Unknown(type_meta.clone())),
    };
    if object.meta().name.is_empty() {
        return Err(DecodeError::EmptyName {
            kind: object.kind(),
        });
    }
    Ok(Decoded::Object(Box::new(object)))
}

/// The served versions of `security.istio.io`.
const SECURITY_VERSIONS: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];

fn security_kind(kind: &str) -> bool {
    matches!(kind, "AuthorizationPolicy" | "PeerAuthentication")
}

fn one_of(versions: &[&str]) -> String {
    let quoted: Vec<String> = versions.iter().map(|v| format!("`{v}`")).collect();
    if quoted.len() == 1 {
        quoted[0].clone()
    } else {
        format!("one of {}", quoted.join(", "))
    }
}

fn is_core_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace" | "Node" | "Pod" | "Service" | "ServiceAccount"
    )
}

/// Identifies an object: kind, namespace (empty for cluster-scoped kinds)
/// and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

// === impl Object ===

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Object::PeerAuthentication(_) => "PeerAuthentication",
            Object::Namespace(_) => "Namespace",
            Object::Node(_) => "Node",
            Object::Pod(_) => "Pod",
            Object::Service(_) => "Service",
            Object::ServiceAccount(_) => "ServiceAccount",
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
        }
    }

    fn is_namespaced(&self) -> bool {
        !matches!(self, Object::Namespace(_) | Object::Node(_))
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey {
            kind: self.kind(),
            namespace: if self.is_namespaced() {
                meta.namespace().to_string()
            } else {
                String::new()
            },
            name: meta.name.clone(),
        }
    }
}

/// Reads `apiVersion` and `kind` from a parsed document.
pub fn type_meta(value: &serde_yaml::Value) -> Result<TypeMeta, &'static str> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        api_version: Option<String>,
        kind: Option<String>,
    }
    let raw: Raw = serde_yaml::from_value(value.clone())
        .map_err(|_| "`apiVersion` and `kind` must be strings")?;
    match (raw.api_version, raw.kind) {
        (_, None) => Err("the document has no `kind`"),
        (None, Some(_)) => Err("the document has no `apiVersion`"),
        (Some(api_version), Some(kind)) => Ok(TypeMeta { api_version, kind }),
    }
}
