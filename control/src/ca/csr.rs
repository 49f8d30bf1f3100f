//! Reading a PEM certificate signing request: its signature must verify;
//! weft takes only the public key and the URI SANs from it.

use x509_parser::{
    certification_request::X509CertificationRequest, extensions::GeneralName,
    extensions::ParsedExtension, prelude::FromDer,
};

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not PEM (expected `-----BEGIN CERTIFICATE REQUEST-----`)")]
    NotPem,
    #[error("the PEM block is `{0}`, expected `CERTIFICATE REQUEST`")]
    WrongLabel(String),
    #[error("the CSR is not valid DER: {0}")]
    Der(String),
    #[error("the CSR's signature does not verify: {0}")]
    Signature(String),
    #[error("the CSR's public key is not supported: {0}")]
    PublicKey(rcgen::Error),
}

/// What weft uses from a CSR.
pub struct Csr {
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// The URI subject alternative names requested.
    pub uris: Vec<String>,
}

pub fn parse(pem: &str) -> Result<Csr, CsrError> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| CsrError::NotPem)?;
    if !matches!(
        pem.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(CsrError::WrongLabel(pem.label));
    }
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|err| CsrError::Der(err.to_string()))?;
    csr.verify_signature()
        .map_err(|err| CsrError::Signature(err.to_string()))?;
    let mut uris = Vec::new();
    for extension in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push(uri.to_string());
                }
            }
        }
    }
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(CsrError::PublicKey)?;
    Ok(Csr { public_key, uris })
}
