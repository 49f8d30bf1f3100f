//! The kinds weft understands, one module per kind (or per API family),
//! each a serde type whose field names follow the upstream schema. Unknown
//! fields are rejected (with their path) everywhere except inside the
//! specs of Pods and Services, whose many fields weft does not read.
//! Value rules (Istio's and Kubernetes' validation) are each kind's
//! `validate`, which reports every broken rule with its field path.
//!
//! To add a kind: write its module and add a line to [`kinds!`].

pub mod authorization_policy;
pub mod config_map;
pub mod destination_rule;
pub mod endpoint_slice;
pub mod gateway;
pub mod gateway_api;
pub mod istio;
mod meta;
pub mod namespace;
pub mod node;
pub mod peer_authentication;
pub mod pod;
pub mod protocol;
pub mod request_authentication;
pub mod selector;
pub mod service;
pub mod service_account;
pub mod service_entry;
pub mod telemetry;
pub mod virtual_service;

pub use authorization_policy::AuthorizationPolicy;
pub use config_map::ConfigMap;
pub use destination_rule::DestinationRule;
pub use endpoint_slice::EndpointSlice;
pub use gateway::Gateway;
pub use gateway_api::{HttpRoute, KubeGateway};
pub use meta::{Ignored, ObjectMeta, OwnerReference};
pub use namespace::Namespace;
pub use node::Node;
pub use peer_authentication::PeerAuthentication;
pub use pod::Pod;
pub use protocol::Protocol;
pub use request_authentication::RequestAuthentication;
pub use service::Service;
pub use service_account::ServiceAccount;
pub use service_entry::{ServiceEntry, WorkloadEntry};
pub use telemetry::Telemetry;
pub use virtual_service::VirtualService;

use crate::yaml::{Node as YamlNode, de::DeError, path::FieldPath};

/// `apiVersion` and `kind`, read first to pick the type of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMeta {
    pub api_version: String,
    pub kind: String,
}

/// A broken value rule at `path` (inside the object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Invalid {
    pub path: String,
    pub message: String,
}

/// Builds an [`Invalid`].
pub fn invalid(path: impl std::fmt::Display, message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A type error or an unknown field, with its path and position.
    #[error("{0}")]
    Read(DeError),
    /// Value rules, every one that is broken.
    #[error("{}", .0.first().map(ToString::to_string).unwrap_or_default())]
    Invalid(Vec<Invalid>),
    /// A known kind under an apiVersion that does not serve it.
    #[error("{0}")]
    Kind(String),
}

/// Declares every kind: variant, type, `kind`, served `apiVersion`s,
/// namespaced or not.
macro_rules! kinds {
    ($($variant:ident($ty:ty) = $kind:literal, $name:literal, [$($gv:literal),+], $namespaced:literal;)+) => {
        /// One decoded configuration object.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Object {
            $($variant(std::sync::Arc<$ty>),)+
        }

        impl Object {
            /// The name shown in messages (kubectl style; the Gateway API's
            /// Gateway is `Gateway.gateway.networking.k8s.io`).
            pub fn kind(&self) -> &'static str {
                match self { $(Object::$variant(_) => $name,)+ }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self { $(Object::$variant(o) => &o.metadata,)+ }
            }

            fn is_namespaced(&self) -> bool {
                match self { $(Object::$variant(_) => $namespaced,)+ }
            }
        }

        /// The display name of a kind under an apiVersion, and whether it
        /// is namespaced.
        fn kind_info(api_version: &str, kind: &str) -> Option<(&'static str, bool)> {
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            $(
                if kind == $kind && [$($gv),+].iter().any(|gv: &&str| gv.rsplit_once('/').map_or("", |(g, _)| g) == group) {
                    return Some(($name, $namespaced));
                }
            )+
            None
        }

        /// Decodes `node` as the kind named by `type_meta`. `Ok(None)` for
        /// kinds weft does not know.
        pub fn decode(type_meta: &TypeMeta, node: &YamlNode) -> Result<Option<Object>, DecodeError> {
            let (api, kind) = (type_meta.api_version.as_str(), type_meta.kind.as_str());
            $(
                if kind == $kind {
                    let served: &[&str] = &[$($gv),+];
                    let group = |gv: &str| gv.rsplit_once('/').map_or("", |(g, _)| g).to_string();
                    if served.iter().any(|gv| group(gv) == group(api)) {
                        if !served.contains(&api) {
                            return Err(DecodeError::Kind(format!(
                                "{kind} is served as {}, not `{api}`",
                                one_of(served)
                            )));
                        }
                        let object: $ty = crate::yaml::de::from_node(node, FieldPath::root())
                            .map_err(DecodeError::Read)?;
                        let mut errors = object.validate();
                        if object.metadata.name.is_empty() {
                            errors.insert(0, invalid("metadata.name", "must be set"));
                        } else if let Some(e) = check_name(&object.metadata.name) {
                            errors.insert(0, invalid("metadata.name", e));
                        }
                        if let Some(ns) = &object.metadata.namespace
                            && let Some(e) = check_label_value_name(ns)
                        {
                            errors.insert(0, invalid("metadata.namespace", e));
                        }
                        if !errors.is_empty() {
                            return Err(DecodeError::Invalid(errors));
                        }
                        return Ok(Some(Object::$variant(std::sync::Arc::new(object))));
                    }
                }
            )+
            let served: Vec<&str> = [$(($kind, &[$($gv),+][..])),+]
                .iter()
                .filter(|(k, _)| *k == kind)
                .flat_map(|(_, gvs)| gvs.iter().copied())
                .collect();
            if !served.is_empty() {
                return Err(DecodeError::Kind(format!(
                    "{kind} is served as {}, not `{api}`",
                    one_of(&served)
                )));
            }
            Ok(None)
        }
    };
}

kinds! {
    Namespace(Namespace) = "Namespace", "Namespace", ["v1"], false;
    Node(Node) = "Node", "Node", ["v1"], false;
    Pod(Pod) = "Pod", "Pod", ["v1"], true;
    Service(Service) = "Service", "Service", ["v1"], true;
    ServiceAccount(ServiceAccount) = "ServiceAccount", "ServiceAccount", ["v1"], true;
    ConfigMap(ConfigMap) = "ConfigMap", "ConfigMap", ["v1"], true;
    EndpointSlice(EndpointSlice) = "EndpointSlice", "EndpointSlice", ["discovery.k8s.io/v1"], true;
    VirtualService(VirtualService) = "VirtualService", "VirtualService",
        ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"], true;
    DestinationRule(DestinationRule) = "DestinationRule", "DestinationRule",
        ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"], true;
    Gateway(Gateway) = "Gateway", "Gateway",
        ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"], true;
    ServiceEntry(ServiceEntry) = "ServiceEntry", "ServiceEntry",
        ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"], true;
    WorkloadEntry(WorkloadEntry) = "WorkloadEntry", "WorkloadEntry",
        ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"], true;
    AuthorizationPolicy(AuthorizationPolicy) = "AuthorizationPolicy", "AuthorizationPolicy",
        ["security.istio.io/v1", "security.istio.io/v1beta1"], true;
    PeerAuthentication(PeerAuthentication) = "PeerAuthentication", "PeerAuthentication",
        ["security.istio.io/v1", "security.istio.io/v1beta1"], true;
    RequestAuthentication(RequestAuthentication) = "RequestAuthentication", "RequestAuthentication",
        ["security.istio.io/v1", "security.istio.io/v1beta1"], true;
    Telemetry(Telemetry) = "Telemetry", "Telemetry",
        ["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"], true;
    KubeGateway(KubeGateway) = "Gateway", "Gateway.gateway.networking.k8s.io",
        ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"], true;
    HttpRoute(HttpRoute) = "HTTPRoute", "HTTPRoute",
        ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"], true;
}

/// Every kind's value rules; the default has none.
pub trait Validate {
    fn validate(&self) -> Vec<Invalid> {
        Vec::new()
    }
}

impl Validate for Namespace {}
impl Validate for Node {}
impl Validate for ServiceAccount {}

fn one_of(versions: &[&str]) -> String {
    let quoted: Vec<String> = versions.iter().map(|v| format!("`{v}`")).collect();
    if quoted.len() == 1 {
        quoted[0].clone()
    } else {
        format!("one of {}", quoted.join(", "))
    }
}

/// A DNS-1123 subdomain (object names): lowercase alphanumerics, `-` and
/// `.`, at most 253 characters, alphanumeric at both ends.
pub fn check_name(name: &str) -> Option<String> {
    let ok = name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!("`{name}` is not a valid name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters")
    })
}

/// A DNS-1123 label (namespaces): like a name, without `.`, at most 63.
pub fn check_label_value_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!("`{name}` is not a valid namespace: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters")
    })
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

impl Object {
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

/// The key of a document that may not decode, from its raw
/// `metadata.name`/`namespace`, for keeping its last good version.
pub fn key_of(type_meta: &TypeMeta, node: &YamlNode) -> Option<ObjectKey> {
    let (kind, namespaced) = kind_info(&type_meta.api_version, &type_meta.kind)?;
    let meta = node.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let namespace = if namespaced {
        meta.get("namespace")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    Some(ObjectKey {
        kind,
        namespace,
        name,
    })
}

/// The key of a `kind` object under `api_version` named `namespace/name`
/// (the namespace is ignored for cluster-scoped kinds), for kinds weft
/// knows; the Kubernetes source removes deleted objects by it.
pub fn key_for(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<ObjectKey> {
    let (kind, namespaced) = kind_info(api_version, kind)?;
    let namespace = match namespace {
        _ if !namespaced => String::new(),
        Some(ns) if !ns.is_empty() => ns.to_string(),
        _ => "default".to_string(),
    };
    Some(ObjectKey {
        kind,
        namespace,
        name: name.to_string(),
    })
}

/// Reads `apiVersion` and `kind`: the field at fault and why, if missing.
pub fn type_meta(node: &YamlNode) -> Result<TypeMeta, (&'static str, String)> {
    let text = |field: &'static str| match node.get(field) {
        None => Err((field, format!("the document has no `{field}`"))),
        Some(v) => match v.as_str() {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err((field, format!("`{field}` must be a non-empty string"))),
        },
    };
    let kind = text("kind")?;
    let api_version = text("apiVersion")?;
    Ok(TypeMeta { api_version, kind })
}
