//! Reading the SPIFFE ID out of an X.509 certificate.

use rustls::pki_types::CertificateDer;
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::state::Identity;

#[derive(Debug, thiserror::Error)]
pub enum SpiffeError {
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("certificate has no SPIFFE URI SAN")]
    Missing,
    #[error("certificate has {0} URI SANs; a workload certificate has exactly one")]
    Several(usize),
    #[error(transparent)]
    Invalid(#[from] crate::state::IdentityParseError),
}

/// The workload identity a certificate asserts (its single URI SAN).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, SpiffeError> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|err| SpiffeError::Parse(err.to_string()))?;
    let uris: Vec<&str> = parsed
        .subject_alternative_name()
        .map_err(|err| SpiffeError::Parse(err.to_string()))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(SpiffeError::Missing),
        [uri] => Ok(uri.parse()?),
        many => Err(SpiffeError::Several(many.len())),
    }
}

/// Validity end of a certificate, as seconds since the Unix epoch.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<i64, SpiffeError> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|err| SpiffeError::Parse(err.to_string()))?;
    Ok(parsed.validity().not_after.timestamp())
}
