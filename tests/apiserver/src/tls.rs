//! The server's TLS identity: a self-signed CA (what kubeconfigs trust)
//! and a serving certificate for 127.0.0.1 and localhost signed by it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS identity could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the stand-in API server's {what} failed: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the rustls server config from the generated certificate failed: {0}")]
    Config(#[from] rustls::Error),
}

/// The CA certificate and the TLS config serving with its leaf.
pub struct TlsIdentity {
    /// PEM of the CA certificate clients must trust.
    pub ca_pem: String,
    /// The server side config (HTTP/1.1 only via ALPN).
    pub config: Arc<ServerConfig>,
}

fn generate(what: &'static str) -> impl Fn(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

/// Makes a fresh CA and a serving certificate with IP SAN 127.0.0.1 and DNS SAN localhost.
pub fn make_identity() -> Result<TlsIdentity, TlsError> {
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(generate("CA parameters"))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "weft-apiserver-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(generate("CA key"))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(generate("CA certificate"))?;

    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()])
        .map_err(generate("serving certificate parameters"))?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let leaf_key = KeyPair::generate().map_err(generate("serving key"))?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca)
        .map_err(generate("serving certificate"))?;

    let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsIdentity {
        ca_pem: ca.pem(),
        config: Arc::new(config),
    })
}
