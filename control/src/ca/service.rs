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
use crate::{auth::AuthenticatedNode, model::Model, spiffe::Identity};

/// The metadata key with which ztunnel asks for another workload's
/// identity (a SPIFFE URI).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The gRPC service in front of the [`CertificateAuthority`].
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    model: watch::Receiver<Arc<Model>>,
}

impl CaService {
    pub fn new(ca: Arc<CertificateAuthority>, model: watch::Receiver<Arc<Model>>) -> Self {
        Self { ca, model }
    }

    fn create(&self, node: &str, request: &IstioCertificateRequest) -> Result<Vec<String>, Status> {
        let csr =
            parse_csr(&request.csr).map_err(|err| Status::invalid_argument(err.to_string()))?;
        let identity = match csr.uris.as_slice() {
            [uri] => uri
                .parse::<Identity>()
                .map_err(|err| Status::invalid_argument(err.to_string()))?,
            uris => {
                return Err(Status::invalid_argument(format!(
                    "the CSR must carry exactly one URI SAN (the SPIFFE identity), found {}",
                    uris.len()
                )));
            }
        };
        if let Some(impersonated) = impersonated_identity(request)
            && impersonated != identity.to_string()
        {
            return Err(Status::invalid_argument(format!(
                "metadata {IMPERSONATED_IDENTITY} `{impersonated}` differs from the CSR's identity `{identity}`"
            )));
        }
        if identity.trust_domain != self.ca.trust_domain() {
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
                tracing::error!(%node, %identity, error = %err, "signing failed");
                Status::internal(err.to_string())
            })?;
        tracing::info!(%node, %identity, validity_secs = validity.whole_seconds(), "issued a workload certificate");
        Ok(chain)
    }
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
        let Some(AuthenticatedNode(node)) =
            request.extensions().get::<AuthenticatedNode>().cloned()
        else {
            return Err(Status::unauthenticated("no authenticated node"));
        };
        let cert_chain = self.create(&node, request.get_ref())?;
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}
