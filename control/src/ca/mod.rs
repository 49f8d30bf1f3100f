//! The certificate authority: signs workload certificates (SPIFFE URI SAN
//! only) for agents, and the control plane's own serving certificate.
//!
//! State directory files: `root-cert.pem` + `root-key.pem` (a generated
//! root, when no `--ca-cert` is given) and, always, `trust-bundle.pem` (the
//! root certificate agents verify against).

mod csr;
pub mod kube_secret;
mod material;
pub mod service;

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use time::{Duration, OffsetDateTime};

pub use csr::{Csr, CsrError, parse as parse_csr};
pub use material::{ROOT_CERT_FILE, ROOT_KEY_FILE};

use crate::{config::CaSource, spiffe::Identity};

/// The trust bundle agents verify against, inside the state directory.
pub const TRUST_BUNDLE_FILE: &str = "trust-bundle.pem";
/// Leaf certificates start this long before they are issued, for nodes
/// whose clocks run a little behind.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);
/// Validity when the request asks for none.
pub const DEFAULT_VALIDITY: Duration = Duration::hours(24);
/// The longest validity granted.
pub const MAX_VALIDITY: Duration = Duration::days(7);
/// Validity of the control plane's serving certificate (made anew at each
/// start).
const SERVER_VALIDITY: Duration = Duration::days(365);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate {}: {reason}", path.display())]
    BadCert { path: PathBuf, reason: String },
    #[error("CA key {}: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the CA key {} does not belong to the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("found only one of {} and {}; restore the other or delete both to generate a new root (agents must then get the new trust bundle)", cert.display(), key.display())]
    HalfRoot { cert: PathBuf, key: PathBuf },
    #[error("cannot generate the root CA: {0}")]
    Generate(rcgen::Error),
    #[error("cannot sign: {0}")]
    Sign(rcgen::Error),
    #[error("`{0}` cannot go in a certificate: {1}")]
    BadName(String, rcgen::Error),
}

/// Signs certificates with the mesh's CA.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// From the signing certificate up to the root, PEM, root last.
    chain: Vec<String>,
    /// Every root peers must trust, PEM: the root, then the extra roots of
    /// a rotation. The last entry of every `cert_chain` answered, which is
    /// where Istio's clients (ztunnel) take their trust roots from.
    roots_pem: String,
    trust_domain: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf first, then the certificates above it, root excluded.
    pub chain_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    /// Loads (or, for [`CaSource::Generate`], creates) the CA and writes
    /// `<state_dir>/trust-bundle.pem`: its root, then the roots in
    /// `extra_roots` (a root rotation's other root).
    pub fn load(
        source: &CaSource,
        state_dir: &Path,
        trust_domain: &str,
        extra_roots: Option<&Path>,
    ) -> Result<Self, CaError> {
        let material = match source {
            CaSource::Generate => material::generated_root(state_dir, trust_domain)?,
            CaSource::Files { cert, key, chain } => {
                material::from_files(cert, key, chain.as_deref())?
            }
        };
        let signing = material.chain.first().expect("chain has the signing cert");
        let issuer =
            Issuer::from_ca_cert_pem(signing, material.key).map_err(|err| CaError::BadCert {
                path: state_dir.join(ROOT_CERT_FILE),
                reason: err.to_string(),
            })?;
        let root = material.chain.last().expect("chain has the root");
        let mut roots_pem = root.trim_end().to_string();
        roots_pem.push('\n');
        if let Some(path) = extra_roots {
            roots_pem.push_str(&material::extra_roots_pem(path)?);
        }
        let bundle = state_dir.join(TRUST_BUNDLE_FILE);
        material::write_file(&bundle, roots_pem.as_bytes(), 0o644)?;
        Ok(CertificateAuthority {
            issuer,
            chain: material.chain,
            roots_pem,
            trust_domain: trust_domain.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate, PEM: what peers trust.
    pub fn trust_bundle_pem(&self) -> &str {
        self.chain.last().expect("chain is never empty")
    }

    /// Signs a workload certificate for `identity` with the CSR's key.
    /// Returns the chain as `IstioCertificateResponse.cert_chain` wants it:
    /// leaf, intermediates, then the roots to trust as one entry (the root,
    /// and during a rotation the other root too: Istio's clients take
    /// every certificate of the last entry as a trust root).
    pub fn sign_workload(
        &self,
        csr: &Csr,
        identity: &Identity,
        validity: Duration,
    ) -> Result<Vec<String>, CaError> {
        let uri = identity.to_string();
        let mut params = leaf_params(validity);
        params.subject_alt_names = vec![SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|e| CaError::BadName(uri, e))?,
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(CaError::Sign)?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain[..self.chain.len() - 1].iter().cloned());
        chain.push(self.roots_pem.clone());
        Ok(chain)
    }

    /// A fresh key and serving certificate for `dns_names`.
    pub fn server_certificate(&self, dns_names: &[String]) -> Result<Issued, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = leaf_params(SERVER_VALIDITY);
        params
            .distinguished_name
            .push(DnType::CommonName, "weft-control");
        params.subject_alt_names = dns_names
            .iter()
            .map(|name| {
                name.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| CaError::BadName(name.clone(), e))
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Sign)?;
        let mut chain_pem = cert.pem();
        for intermediate in &self.chain[..self.chain.len() - 1] {
            chain_pem.push_str(intermediate);
        }
        Ok(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

fn leaf_params(validity: Duration) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params
}

/// 16 random bytes, top bit clear so the DER integer is positive.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system randomness");
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01 << 6;
    SerialNumber::from_slice(&bytes)
}
