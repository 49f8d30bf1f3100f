//! TLS for HBONE: TLS 1.3 only, mutual, X.509 SVIDs. Both sides check the
//! peer's SPIFFE ID: the client against the identity the workload data says
//! the destination has, the server records the client's for policy.

use std::sync::{Arc, OnceLock};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{ParsedCertificate, WebPkiClientVerifier},
};

use super::{IdentityError, WorkloadCert, spiffe};
use crate::state::Identity;

/// ALPN protocol of HBONE.
pub const ALPN_H2: &[u8] = b"h2";

/// ring, with TLS 1.3 suites in the order Istio's ztunnel prefers.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
                    ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
                    ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                ],
                ..ring::default_provider()
            })
        })
        .clone()
}

fn tls_error(identity: &Identity) -> impl FnOnce(Error) -> IdentityError + '_ {
    move |source| IdentityError::Tls {
        identity: identity.clone(),
        source: Box::new(source),
    }
}

/// Server side of a pod's HBONE listener: presents the pod's certificate
/// and requires a client certificate that chains to the trust bundle.
pub fn server_config(
    cert: &WorkloadCert,
    roots: Arc<RootCertStore>,
) -> Result<Arc<ServerConfig>, IdentityError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|err| IdentityError::Tls {
            identity: cert.identity.clone(),
            source: Box::new(Error::General(err.to_string())),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error(&cert.identity))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(tls_error(&cert.identity))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side of an HBONE connection from `cert`'s workload to a peer that
/// must prove to be `expected`.
pub fn client_config(
    cert: &WorkloadCert,
    roots: Arc<RootCertStore>,
    expected: Identity,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let verifier = Arc::new(SpiffeServerVerifier {
        roots,
        expected,
        provider: provider(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error(&cert.identity))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(tls_error(&cert.identity))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The SPIFFE identity the peer of an established connection proved.
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Identity, spiffe::SpiffeError> {
    let certs = conn
        .peer_certificates()
        .ok_or(spiffe::SpiffeError::Missing)?;
    let leaf = certs.first().ok_or(spiffe::SpiffeError::Missing)?;
    spiffe::identity_of(leaf)
}

/// Verifies the server's chain against the trust bundle, then its SPIFFE ID
/// against the one expected: HBONE peers are named by identity, not by DNS.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Identity,
    provider: Arc<CryptoProvider>,
}

fn other(message: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        std::io::Error::other(message),
    ))))
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let actual = spiffe::identity_of(end_entity).map_err(|err| other(err.to_string()))?;
        if actual != self.expected {
            return Err(other(format!(
                "peer presented {actual}, but the destination workload's identity is {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Reuses TLS configs while the certificate and the roots they were built
/// from are the same (compared by pointer): building one parses the roots
/// and the key, which is too slow for every connection.
#[derive(Default)]
pub struct ConfigCache {
    server: std::sync::Mutex<std::collections::HashMap<Identity, CachedServer>>,
    client: std::sync::Mutex<std::collections::HashMap<(Identity, Identity), CachedClient>>,
}

struct CachedServer {
    cert: Arc<WorkloadCert>,
    roots: Arc<RootCertStore>,
    config: Arc<ServerConfig>,
}

struct CachedClient {
    cert: Arc<WorkloadCert>,
    roots: Arc<RootCertStore>,
    config: Arc<ClientConfig>,
}

impl ConfigCache {
    /// [`server_config`], cached.
    pub fn server(
        &self,
        cert: &Arc<WorkloadCert>,
        roots: Arc<RootCertStore>,
    ) -> Result<Arc<ServerConfig>, IdentityError> {
        let mut cache = self.server.lock().expect("tls cache lock");
        if let Some(hit) = cache.get(&cert.identity)
            && Arc::ptr_eq(&hit.cert, cert)
            && Arc::ptr_eq(&hit.roots, &roots)
        {
            return Ok(hit.config.clone());
        }
        let config = server_config(cert, roots.clone())?;
        cache.insert(
            cert.identity.clone(),
            CachedServer {
                cert: cert.clone(),
                roots,
                config: config.clone(),
            },
        );
        Ok(config)
    }

    /// [`client_config`], cached.
    pub fn client(
        &self,
        cert: &Arc<WorkloadCert>,
        roots: Arc<RootCertStore>,
        expected: &Identity,
    ) -> Result<Arc<ClientConfig>, IdentityError> {
        let key = (cert.identity.clone(), expected.clone());
        let mut cache = self.client.lock().expect("tls cache lock");
        if let Some(hit) = cache.get(&key)
            && Arc::ptr_eq(&hit.cert, cert)
            && Arc::ptr_eq(&hit.roots, &roots)
        {
            return Ok(hit.config.clone());
        }
        let config = client_config(cert, roots.clone(), expected.clone())?;
        cache.insert(
            key,
            CachedClient {
                cert: cert.clone(),
                roots,
                config: config.clone(),
            },
        );
        Ok(config)
    }

    /// Forgets an identity that left the node (its key goes with it).
    pub fn forget(&self, identity: &Identity) {
        self.server.lock().expect("tls cache lock").remove(identity);
        self.client
            .lock()
            .expect("tls cache lock")
            .retain(|(source, _), _| source != identity);
    }
}
