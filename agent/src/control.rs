//! The connection to the control plane: one TLS gRPC channel (verified with
//! the mesh's trust bundle) carrying xDS and CA calls, each with the node's
//! bootstrap token.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use weft_proto::{
    ca::istio_certificate_service_client::IstioCertificateServiceClient,
    discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};

use crate::Config;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the bootstrap token in {0} is empty or not printable ASCII")]
    BadToken(PathBuf),
    #[error("control plane address `{addr}`: {source}")]
    Address {
        addr: String,
        source: tonic::transport::Error,
    },
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct TokenInterceptor(MetadataValue<Ascii>);

impl Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, TokenInterceptor>;

/// Clients for the control plane's services, sharing one channel. The
/// channel is rebuilt when the trust bundle changes (the control plane's
/// certificate may come from a new root).
#[derive(Clone)]
pub struct ControlClient {
    channel: Arc<RwLock<Channel>>,
    endpoint: Arc<EndpointConfig>,
    token: TokenInterceptor,
}

struct EndpointConfig {
    address: String,
    server_name: String,
}

impl ControlClient {
    /// Prepares the channel, verified with the trust bundle `bundle_pem`;
    /// it connects on first use and reconnects by itself, so the agent can
    /// start before the control plane.
    pub fn new(config: &Config, bundle_pem: &[u8]) -> Result<Self, ControlError> {
        let token =
            std::fs::read_to_string(&config.token_file).map_err(|source| ControlError::Read {
                what: "bootstrap token",
                path: config.token_file.clone(),
                source,
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(ControlError::BadToken(config.token_file.clone()));
        }
        let token: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| ControlError::BadToken(config.token_file.clone()))?;
        let endpoint = EndpointConfig {
            address: config.control_addr.clone(),
            server_name: config.control_server_name.clone(),
        };
        let channel = endpoint.channel(bundle_pem)?;
        Ok(Self {
            channel: Arc::new(RwLock::new(channel)),
            endpoint: Arc::new(endpoint),
            token: TokenInterceptor(token),
        })
    }

    /// Uses a new trust bundle for the control plane's certificate from
    /// the next connection on.
    pub fn set_trust_bundle(&self, bundle_pem: &[u8]) -> Result<(), ControlError> {
        let channel = self.endpoint.channel(bundle_pem)?;
        *self.channel.write().expect("channel lock") = channel;
        Ok(())
    }

    fn channel(&self) -> Channel {
        self.channel.read().expect("channel lock").clone()
    }

    pub fn xds(&self) -> AggregatedDiscoveryServiceClient<Authed> {
        AggregatedDiscoveryServiceClient::with_interceptor(self.channel(), self.token.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn ca(&self) -> IstioCertificateServiceClient<Authed> {
        IstioCertificateServiceClient::with_interceptor(self.channel(), self.token.clone())
    }
}

impl EndpointConfig {
    fn channel(&self, bundle_pem: &[u8]) -> Result<Channel, ControlError> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(bundle_pem))
            .domain_name(self.server_name.clone());
        let endpoint = Endpoint::from_shared(format!("https://{}", self.address))
            .and_then(|e| e.tls_config(tls))
            .map_err(|source| ControlError::Address {
                addr: self.address.clone(),
                source,
            })?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(std::time::Duration::from_secs(30));
        Ok(endpoint.connect_lazy())
    }
}
