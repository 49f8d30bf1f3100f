//! The CA's signing certificate and key: generated into the state
//! directory on first start (a self-signed root), or given as files (an
//! intermediate or root, plus the chain up to the root).

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use time::{Duration, OffsetDateTime};

use super::CaError;

/// Files of a generated root, inside the state directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const ROOT_KEY_FILE: &str = "root-key.pem";

const ROOT_VALIDITY: Duration = Duration::days(10 * 365);

/// A signing certificate and its key.
pub struct Material {
    pub key: KeyPair,
    /// PEM certificates from the signing certificate up to the root (root
    /// last). Just the root when the root signs.
    pub chain: Vec<String>,
}

/// Loads `<state_dir>/root-{cert,key}.pem`, generating them first if
/// neither exists.
pub fn generated_root(state_dir: &Path, trust_domain: &str) -> Result<Material, CaError> {
    let cert_path = state_dir.join(ROOT_CERT_FILE);
    let key_path = state_dir.join(ROOT_KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => return from_files(&cert_path, &key_path, None),
        (false, false) => {}
        _ => {
            return Err(CaError::HalfRoot {
                cert: cert_path,
                key: key_path,
            });
        }
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "weft root CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + ROOT_VALIDITY;
    params.serial_number = Some(super::random_serial());
    let cert = params.self_signed(&key).map_err(CaError::Generate)?;

    // The key first: a crash in between leaves a key without a cert,
    // which is reported rather than silently replaced.
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), key = %key_path.display(), "generated a new root CA");
    Ok(Material {
        key,
        chain: vec![cert.pem()],
    })
}

/// Loads a signing certificate (`cert`), its PKCS#8 key, and optionally
/// the chain above it.
pub fn from_files(cert: &Path, key: &Path, chain: Option<&Path>) -> Result<Material, CaError> {
    let cert_pems = read_certs(cert)?;
    let [signing] = cert_pems.as_slice() else {
        return Err(CaError::BadCert {
            path: cert.to_path_buf(),
            reason: format!(
                "expected exactly one certificate, found {}; put the rest in --ca-chain",
                cert_pems.len()
            ),
        });
    };
    let key_pem = read(key, "CA key")?;
    let key_pair = KeyPair::from_pem(&key_pem).map_err(|err| CaError::BadKey {
        path: key.to_path_buf(),
        reason: format!(
            "{err}; it must be an unencrypted PKCS#8 key (`BEGIN PRIVATE KEY`), e.g. from `openssl pkcs8 -topk8 -nocrypt`"
        ),
    })?;
    let signing_der = der(signing, cert)?;
    {
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&signing_der).map_err(|err| CaError::BadCert {
                path: cert.to_path_buf(),
                reason: err.to_string(),
            })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key_pair.der_bytes() {
            return Err(CaError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            });
        }
        if !parsed.is_ca() {
            return Err(CaError::BadCert {
                path: cert.to_path_buf(),
                reason: "not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
            });
        }
    }
    let mut full = vec![signing.clone()];
    if let Some(chain) = chain {
        for pem in read_certs(chain)? {
            // Istio's cert-chain.pem often starts with the signing cert.
            if der(&pem, chain)? != signing_der {
                full.push(pem);
            }
        }
    }
    Ok(Material {
        key: key_pair,
        chain: full,
    })
}

fn read(path: &Path, what: &'static str) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The `CERTIFICATE` PEM blocks of a file, each as its own string.
fn read_certs(path: &Path) -> Result<Vec<String>, CaError> {
    let text = read(path, "certificate")?;
    let mut certs = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line == "-----END CERTIFICATE-----"
            && let Some(block) = current.take()
        {
            certs.push(block);
        }
    }
    if certs.is_empty() {
        return Err(CaError::BadCert {
            path: path.to_path_buf(),
            reason: "no `BEGIN CERTIFICATE` block".into(),
        });
    }
    for pem in &certs {
        der(pem, path)?;
    }
    Ok(certs)
}

/// The DER of one PEM certificate, checked to parse.
pub fn der(pem: &str, path: &Path) -> Result<Vec<u8>, CaError> {
    let bad = |reason: String| CaError::BadCert {
        path: path.to_path_buf(),
        reason,
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    Ok(pem.contents)
}

/// Writes `path` atomically (temporary file, then rename) with `mode`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |source| CaError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = PathBuf::from(path);
    tmp.set_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Reads extra roots for the trust bundle: every certificate must parse
/// and be a CA; the file's PEM is returned as it is.
pub fn extra_roots_pem(path: &Path) -> Result<String, CaError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaError::Read {
        what: "extra trust roots",
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| CaError::BadCert {
        path: path.to_path_buf(),
        reason,
    };
    let mut count = 0;
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| bad(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
        if !cert.is_ca() {
            return Err(bad(format!("{} is not a CA certificate", cert.subject())));
        }
        count += 1;
    }
    if count == 0 {
        return Err(bad("holds no certificate".into()));
    }
    let mut pem = text.trim().to_string();
    pem.push('\n');
    Ok(pem)
}
