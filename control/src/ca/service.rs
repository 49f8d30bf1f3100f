//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: an agent
//! asks for the certificate of a workload identity; it gets one only if a
//! pod with that identity is scheduled on the agent's own node.

use std::sync::Arc;

use prost_types::value::Kind;
use time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use weft_proto::ca::{
    IstioCertificateRequest, IstioCertificateResponse,
    istio_certificate_service_server::IstioCertificateService,
};

use super::{CertificateAuthority, DEFAULT_VALIDITY, MAX_VALIDITY, parse_csr};
use crate::{auth::AuthenticatedNode, metrics::Metrics, model::Model, spiffe::Identity};

/// The metadata key with which ztunnel asks for another workload's
/// identity (a SPIFFE URI).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The gRPC service in front of the [`CertificateAuthority`].
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    model: watch::Receiver<Arc<Model>>,
    metrics: Arc<Metrics>,
}

impl CaService {
    /// Also records the root's expiry in `metrics`.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        model: watch::Receiver<Arc<Model>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        if let Some(expiry) = root_expiry(ca.trust_bundle_pem()) {
            metrics.ca.set_root_expiry(expiry);
        }
        Self { ca, model, metrics }
    }

    fn create(&self, node: &str, request: &IstioCertificateRequest) -> Result<Vec<String>, Status> {
        let ca = &self.metrics.ca;
        let csr = parse_csr(&request.csr).map_err(|err| {
            ca.csr_parsing_errors.inc();
            Status::invalid_argument(err.to_string())
        })?;
        let identity = match csr.uris.as_slice() {
            [uri] => uri.parse::<Identity>().map_err(|err| {
                ca.id_extraction_errors.inc();
                Status::invalid_argument(err.to_string())
            })?,
            uris => {
                ca.id_extraction_errors.inc();
                return Err(Status::invalid_argument(format!(
                    "the CSR must carry exactly one URI SAN (the SPIFFE identity), found {}",
                    uris.len()
                )));
            }
        };
        if let Some(impersonated) = impersonated_identity(request)
            && impersonated != identity.to_string()
        {
            ca.id_extraction_errors.inc();
            return Err(Status::invalid_argument(format!(
                "metadata {IMPERSONATED_IDENTITY} `{impersonated}` differs from the CSR's identity `{identity}`"
            )));
        }
        if identity.trust_domain != self.ca.trust_domain() {
            ca.authentication_failures.inc();
            tracing::warn!(%node, %identity, trust_domain = self.ca.trust_domain(), "refused a certificate outside the trust domain");
            return Err(Status::permission_denied(format!(
                "`{identity}` is outside this mesh's trust domain `{}`",
                self.ca.trust_domain()
            )));
        }
        let allowed =
            self.model
                .borrow()
                .node_runs(node, &identity.namespace, &identity.service_account);
        if !allowed {
            // istiod counts a refused impersonation as an authentication
            // failure.
            ca.authentication_failures.inc();
            tracing::warn!(%node, %identity, "refused a certificate: no pod with this identity is scheduled on the calling node");
            return Err(Status::permission_denied(format!(
                "node `{node}` runs no pod in namespace `{}` with service account `{}`; an agent may only get identities of pods on its own node (check the pod's spec.nodeName)",
                identity.namespace, identity.service_account
            )));
        }
        let validity = match request.validity_duration {
            s if s <= 0 => DEFAULT_VALIDITY,
            s => Duration::seconds(s).min(MAX_VALIDITY),
        };
        let chain = self
            .ca
            .sign_workload(&csr, &identity, validity)
            .map_err(|err| {
                ca.cert_gen_errors.inc();
                tracing::error!(%node, %identity, error = %err, "signing failed");
                Status::internal(err.to_string())
            })?;
        ca.issued.inc();
        tracing::info!(%node, %identity, validity_secs = validity.whole_seconds(), "issued a workload certificate");
        Ok(chain)
    }
}

/// The expiry (unix seconds) of the first certificate of a PEM bundle:
/// the CA's root.
fn root_expiry(bundle_pem: &str) -> Option<i64> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(bundle_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn impersonated_identity(request: &IstioCertificateRequest) -> Option<&str> {
    let value = request
        .metadata
        .as_ref()?
        .fields
        .get(IMPERSONATED_IDENTITY)?;
    match &value.kind {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.ca.csr.inc();
        let Some(AuthenticatedNode(node)) =
            request.extensions().get::<AuthenticatedNode>().cloned()
        else {
            self.metrics.ca.authentication_failures.inc();
            return Err(Status::unauthenticated("no authenticated node"));
        };
        let cert_chain = self.create(&node, request.get_ref())?;
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}
