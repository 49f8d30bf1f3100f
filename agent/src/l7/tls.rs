//! TLS origination: a DestinationRule with `tls.mode: SIMPLE` or `MUTUAL`
//! makes the proxy open TLS to a destination outside the mesh, so the app
//! can speak plain HTTP to it (Istio's egress TLS origination). Client
//! configs are built once per distinct setting and kept.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{cluster::TlsOrigination, upstream::Protocol};
use crate::identity::tls::provider;

/// Where Debian (and most distributions) keep the system's CA bundle, used
/// when the rule names no `caCertificates`.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no usable PEM {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error(
        "DestinationRule tls.credentialName `{0}` needs the Kubernetes API (Secrets); give caCertificates/clientCertificate/privateKey files instead"
    )]
    CredentialName(String),
    #[error("MUTUAL TLS needs clientCertificate and privateKey")]
    MissingClientCertificate,
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS with the destination: {0}")]
    Handshake(std::io::Error),
}

/// A client config's key: the settings (as their debug text) and the
/// ALPN offered.
type ConfigKey = (String, Option<Protocol>);

/// Builds and keeps client configs for TLS origination.
#[derive(Default)]
pub struct TlsOriginator {
    configs: Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>,
}

impl TlsOriginator {
    /// TLS over `tcp` as `tls` says, for `host` (the server name unless
    /// `tls.sni` is set), offering the ALPN of `protocol` (`None`, for a
    /// TCP port's bytes: none, as Envoy offers none on a TCP cluster).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        tls: &TlsOrigination,
        host: &str,
        protocol: Option<Protocol>,
    ) -> Result<TlsStream<TcpStream>, TlsError> {
        let config = self.config(tls, protocol)?;
        let name = if tls.sni.is_empty() { host } else { &tls.sni };
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::ServerName(name.into()))?;
        TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(TlsError::Handshake)
    }

    fn config(
        &self,
        tls: &TlsOrigination,
        protocol: Option<Protocol>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let key = (format!("{tls:?}"), protocol);
        if let Some(config) = self.configs.lock().expect("tls lock").get(&key) {
            return Ok(config.clone());
        }
        let config = Arc::new(build(tls, protocol)?);
        self.configs
            .lock()
            .expect("tls lock")
            .insert(key, config.clone());
        Ok(config)
    }
}

fn build(tls: &TlsOrigination, protocol: Option<Protocol>) -> Result<ClientConfig, TlsError> {
    if !tls.credential_name.is_empty() {
        return Err(TlsError::CredentialName(tls.credential_name.clone()));
    }
    let ca_path = if tls.ca_certificates.is_empty() {
        SYSTEM_ROOTS
    } else {
        &tls.ca_certificates
    };
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
    } else {
        let mut roots = RootCertStore::empty();
        for cert in read_certs("caCertificates", ca_path)? {
            // A bundle may carry certificates rustls cannot use; skip them.
            let _ = roots.add(cert);
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|err| rustls::Error::General(err.to_string()))?;
        if tls.subject_alt_names.is_empty() {
            builder.with_webpki_verifier(webpki)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SanVerifier {
                    webpki,
                    names: tls.subject_alt_names.clone(),
                }))
        }
    };
    let mut config = if tls.mutual {
        if tls.client_certificate.is_empty() || tls.private_key.is_empty() {
            return Err(TlsError::MissingClientCertificate);
        }
        let chain = read_certs("clientCertificate", &tls.client_certificate)?;
        let key = read_key(&tls.private_key)?;
        builder.with_client_auth_cert(chain, key)?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = match protocol {
        Some(Protocol::Http1) => vec![b"http/1.1".to_vec()],
        Some(Protocol::Http2) => vec![b"h2".to_vec()],
        None => Vec::new(),
    };
    Ok(config)
}

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(Path::new(path)).map_err(|source| TlsError::Read {
        what,
        path: path.to_string(),
        source,
    })
}

fn read_certs(what: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_string(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("privateKey", path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::Empty {
            what: "privateKey",
            path: path.to_string(),
            expected: "private key",
        })
}

/// Verifies the chain as usual, but against the rule's
/// `subjectAltNames` instead of the server name: one of them must be in
/// the certificate.
#[derive(Debug)]
struct SanVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    names: Vec<String>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no subjectAltNames to check".into());
        for name in &self.names {
            let Ok(name) = ServerName::try_from(name.as_str()) else {
                continue;
            };
            match self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                &name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `insecureSkipVerify: true`: any certificate (the handshake's
/// signatures are still checked).
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
