//! One certificate request to the control plane's CA (Istio's
//! `IstioCertificateService/CreateCertificate`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::{Struct, Value, value::Kind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use weft_proto::ca::IstioCertificateRequest;

use super::{IdentityError, WorkloadCert, spiffe};
use crate::{control::ControlClient, state::Identity};

/// Generates a key and CSR for `identity`, asks the CA, checks the answer.
pub async fn request(
    control: &ControlClient,
    identity: &Identity,
    ttl: Duration,
) -> Result<WorkloadCert, IdentityError> {
    let csr_error = |source| IdentityError::Csr {
        identity: identity.clone(),
        source,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(csr_error)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let uri = rcgen::string::Ia5String::try_from(identity.to_string()).map_err(csr_error)?;
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(csr_error)?;

    // ztunnel asks for other workloads' identities this way.
    let metadata = Struct {
        fields: [(
            "ImpersonatedIdentity".to_string(),
            Value {
                kind: Some(Kind::StringValue(identity.to_string())),
            },
        )]
        .into(),
    };
    let response = control
        .ca()
        .create_certificate(IstioCertificateRequest {
            csr,
            validity_duration: ttl.as_secs() as i64,
            metadata: Some(metadata),
        })
        .await
        .map_err(|status| IdentityError::Refused {
            identity: identity.clone(),
            status: Box::new(status),
        })?
        .into_inner();

    let bad = |reason: String| IdentityError::BadResponse {
        identity: identity.clone(),
        reason,
    };
    // Leaf, intermediates, then the roots (one entry, possibly several
    // certificates during a root rotation): peers have the roots in their
    // trust bundle, so they are not sent.
    let entries = match response.cert_chain.as_slice() {
        [] => return Err(bad("empty cert_chain".into())),
        [only] => std::slice::from_ref(only),
        [chain @ .., _roots] => chain,
    };
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    for pem in entries {
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            certs.push(cert.map_err(|err| bad(format!("bad PEM in cert_chain: {err}")))?);
        }
    }
    if certs.is_empty() {
        return Err(bad("empty cert_chain".into()));
    }
    let issued = spiffe::identity_of(&certs[0]).map_err(|err| bad(err.to_string()))?;
    if &issued != identity {
        return Err(bad(format!("the certificate is for {issued}")));
    }
    let not_after = spiffe::not_after(&certs[0]).map_err(|err| bad(err.to_string()))?;
    Ok(WorkloadCert {
        identity: identity.clone(),
        chain: certs,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        issued_at: SystemTime::now(),
        not_after: UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64),
    })
}
