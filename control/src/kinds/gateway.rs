//! networking.istio.io Gateway: listeners of an ingress or egress
//! gateway. Fields follow istio/api `networking/v1alpha3/gateway.proto`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Ignored, Invalid, ObjectMeta, Validate, invalid,
    istio::{check_host, check_port},
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default)]
    api_version: Ignored,
    #[serde(default)]
    kind: Ignored,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewaySpec,
    #[serde(default)]
    status: Ignored,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Pods (gateway proxies) this applies to.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    #[serde(default)]
    pub port: Option<Port>,
    #[serde(default)]
    pub bind: String,
    /// `[<namespace>/]<host>`; `*` allowed.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default)]
    pub default_endpoint: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: Option<ServerTlsMode>,
    #[serde(default)]
    pub server_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
    #[serde(default)]
    pub ca_crl: String,
    #[serde(default)]
    pub credential_name: String,
    #[serde(default)]
    pub credential_names: Vec<String>,
    #[serde(default)]
    pub tls_certificates: Ignored,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub max_protocol_version: Option<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

/// Protocols a Gateway or ServiceEntry port may name (case-insensitive).
pub const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTP_PROXY",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "MONGO",
    "MYSQL",
    "REDIS",
    "TCP",
    "TLS",
    "UDP",
];

pub fn check_protocol(p: &str, at: &str, e: &mut Vec<Invalid>) {
    if !PROTOCOLS.iter().any(|k| k.eq_ignore_ascii_case(p)) {
        e.push(invalid(
            at,
            format!("`{p}` is not a protocol; one of {}", PROTOCOLS.join(", ")),
        ));
    }
}

impl Validate for Gateway {
    fn validate(&self) -> Vec<Invalid> {
        let mut e = Vec::new();
        if self.spec.servers.is_empty() {
            e.push(invalid("spec.servers", "at least one server is required"));
        }
        let mut names = Vec::new();
        for (i, s) in self.spec.servers.iter().enumerate() {
            let at = format!("spec.servers[{i}]");
            let protocol = match &s.port {
                None => {
                    e.push(invalid(format!("{at}.port"), "must be set"));
                    String::new()
                }
                Some(p) => {
                    check_port(p.number, &format!("{at}.port.number"), &mut e);
                    if p.protocol.is_empty() {
                        e.push(invalid(format!("{at}.port.protocol"), "must be set"));
                    } else {
                        check_protocol(&p.protocol, &format!("{at}.port.protocol"), &mut e);
                    }
                    p.protocol.to_ascii_uppercase()
                }
            };
            if !s.name.is_empty() {
                if names.contains(&&s.name) {
                    e.push(invalid(
                        format!("{at}.name"),
                        format!("server name `{}` is used twice", s.name),
                    ));
                }
                names.push(&s.name);
            }
            if s.hosts.is_empty() {
                e.push(invalid(
                    format!("{at}.hosts"),
                    "at least one host is required",
                ));
            }
            for (j, h) in s.hosts.iter().enumerate() {
                let (ns, host) = h.split_once('/').unwrap_or(("", h));
                if !ns.is_empty()
                    && ns != "*"
                    && ns != "."
                    && super::check_label_value_name(ns).is_some()
                {
                    e.push(invalid(
                        format!("{at}.hosts[{j}]"),
                        format!("`{ns}` is not a namespace, `.` or `*`"),
                    ));
                }
                check_host(host, true, &format!("{at}.hosts[{j}]"), &mut e);
            }
            let terminates = matches!(protocol.as_str(), "HTTPS" | "TLS");
            match &s.tls {
                None if protocol == "HTTPS" => {
                    e.push(invalid(format!("{at}.tls"), "an HTTPS server needs `tls`"))
                }
                Some(tls) if !tls.https_redirect && terminates && needs_certificate(tls) => {
                    e.push(invalid(
                        format!("{at}.tls"),
                        "SIMPLE and MUTUAL need `credentialName`, or both `serverCertificate` and `privateKey`",
                    ));
                }
                _ => {}
            }
        }
        e
    }
}

/// A terminating mode without any certificate source.
fn needs_certificate(tls: &ServerTlsSettings) -> bool {
    let terminating = matches!(
        tls.mode,
        Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) | None
    );
    terminating
        && tls.credential_name.is_empty()
        && tls.credential_names.is_empty()
        && (tls.server_certificate.is_empty() || tls.private_key.is_empty())
}
