//! The connection to the control plane: one TLS gRPC channel (verified with
//! the mesh's trust bundle) carrying xDS and CA calls, each with the node's
//! token: a bootstrap token (directory mode) or the agent's projected
//! service-account token (Kubernetes mode), which kubelet rotates, so the
//! file is read again every [`TOKEN_REREAD`].

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
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
    #[error("the control-plane token in {0} is empty or not printable ASCII")]
    BadToken(PathBuf),
    #[error("control plane address `{addr}`: {source}")]
    Address {
        addr: String,
        source: tonic::transport::Error,
    },
}

/// How old the token read from its file may get before it is read again.
/// kubelet rewrites a projected token well before it expires (at 80% of
/// its life, and it lives at least 10 minutes).
pub const TOKEN_REREAD: Duration = Duration::from_secs(60);

/// Adds `authorization: Bearer <token>` to every call, with the token file
/// re-read every [`TOKEN_REREAD`]. A file that turns unreadable or empty
/// keeps the last good token (and says so once).
#[derive(Clone)]
pub struct TokenInterceptor(Arc<TokenFile>);

struct TokenFile {
    path: PathBuf,
    reread: Duration,
    current: Mutex<(MetadataValue<Ascii>, Instant)>,
}

/// `Bearer <the file's token>`.
fn read_token(path: &Path) -> Result<MetadataValue<Ascii>, ControlError> {
    let token = std::fs::read_to_string(path).map_err(|source| ControlError::Read {
        what: "control-plane token",
        path: path.to_path_buf(),
        source,
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(ControlError::BadToken(path.to_path_buf()));
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| ControlError::BadToken(path.to_path_buf()))
}

impl TokenInterceptor {
    /// Reads the token once now: an unusable file at start is an error.
    pub fn from_file(path: &Path) -> Result<Self, ControlError> {
        Self::rereading(path, TOKEN_REREAD)
    }

    fn rereading(path: &Path, reread: Duration) -> Result<Self, ControlError> {
        let token = read_token(path)?;
        Ok(Self(Arc::new(TokenFile {
            path: path.to_path_buf(),
            reread,
            current: Mutex::new((token, Instant::now())),
        })))
    }

    fn token(&self) -> MetadataValue<Ascii> {
        let mut current = self.0.current.lock().expect("token lock");
        if current.1.elapsed() >= self.0.reread {
            match read_token(&self.0.path) {
                Ok(token) => current.0 = token,
                Err(err) => {
                    tracing::warn!(error = %err, "keeping the last good control-plane token")
                }
            }
            current.1 = Instant::now();
        }
        current.0.clone()
    }
}

impl Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.token());
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
        let token = TokenInterceptor::from_file(&config.token_file)?;
        let endpoint = EndpointConfig {
            address: config.control_addr.clone(),
            server_name: config.control_server_name.clone(),
        };
        let channel = endpoint.channel(bundle_pem)?;
        Ok(Self {
            channel: Arc::new(RwLock::new(channel)),
            endpoint: Arc::new(endpoint),
            token,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(interceptor: &mut TokenInterceptor) -> String {
        let request = interceptor.call(tonic::Request::new(())).unwrap();
        request
            .metadata()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_rotated_token_is_sent_and_a_broken_file_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let mut interceptor = TokenInterceptor::rereading(&path, Duration::ZERO).unwrap();
        assert_eq!(header(&mut interceptor), "Bearer first");

        // kubelet rotates the projected token.
        std::fs::write(&path, "second").unwrap();
        assert_eq!(header(&mut interceptor), "Bearer second");

        std::fs::write(&path, "").unwrap();
        assert_eq!(header(&mut interceptor), "Bearer second");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(header(&mut interceptor), "Bearer second");
    }

    #[test]
    fn an_unusable_token_file_at_start_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let missing = TokenInterceptor::from_file(&path)
            .err()
            .unwrap()
            .to_string();
        assert!(
            missing.contains("token") && missing.contains(&path.display().to_string()),
            "{missing}"
        );
        std::fs::write(&path, "  \n").unwrap();
        let empty = TokenInterceptor::from_file(&path)
            .err()
            .unwrap()
            .to_string();
        assert!(empty.contains("empty"), "{empty}");
    }
}
