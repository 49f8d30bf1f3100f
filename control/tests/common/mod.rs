//! An in-process control plane on loopback with real TLS and gRPC, and
//! clients that talk to it like an agent does.

#![allow(dead_code)]

pub mod kube;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Status, Streaming,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use weft_control::{Config, Server, ServerHandle};
use weft_proto::{
    ADDRESS_TYPE_URL,
    ca::istio_certificate_service_client::IstioCertificateServiceClient,
    core::Node,
    discovery::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
    rpc,
    workload::{Address, address::Type},
};

/// How long any wait in these tests may take before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running control plane over temporary directories.
pub struct ControlPlane {
    pub handle: ServerHandle,
    pub config_dir: tempfile::TempDir,
    pub state_dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts with `files` (name → YAML) in the config directory.
    pub async fn start(files: &[(&str, &str)]) -> Self {
        let config_dir = tempfile::tempdir().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        for (name, yaml) in files {
            write(config_dir.path(), name, yaml);
        }
        let config = Config::for_tests(config_dir.path(), state_dir.path());
        Self::start_with(config, config_dir, state_dir).await
    }

    pub async fn start_with(
        config: Config,
        config_dir: tempfile::TempDir,
        state_dir: tempfile::TempDir,
    ) -> Self {
        let handle = Server::start(config).await.expect("control plane starts");
        ControlPlane {
            handle,
            config_dir,
            state_dir,
        }
    }

    pub fn write(&self, name: &str, yaml: &str) {
        write(self.config_dir.path(), name, yaml);
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.config_dir.path().join(name)).unwrap();
    }

    pub fn token(&self, node: &str) -> String {
        weft_control::bootstrap_token(self.state_dir.path(), node).unwrap()
    }

    /// A TLS channel verified like the agent does: trust bundle, server
    /// name `weft-control`.
    pub async fn channel(&self) -> Channel {
        self.channel_as("weft-control")
            .await
            .expect("TLS connection to the control plane")
    }

    /// A TLS channel that verifies the server as `name`.
    pub async fn channel_as(&self, name: &str) -> Result<Channel, tonic::transport::Error> {
        let bundle = std::fs::read(self.handle.trust_bundle_path()).unwrap();
        Endpoint::from_shared(format!("https://{}", self.handle.xds_addr()))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(bundle))
                    .domain_name(name),
            )
            .unwrap()
            .connect()
            .await
    }

    pub async fn xds_client(
        &self,
        token: &str,
    ) -> AggregatedDiscoveryServiceClient<InterceptedService<Channel, Token>> {
        AggregatedDiscoveryServiceClient::with_interceptor(self.channel().await, Token::new(token))
    }

    pub async fn ca_client(
        &self,
        token: &str,
    ) -> IstioCertificateServiceClient<InterceptedService<Channel, Token>> {
        IstioCertificateServiceClient::with_interceptor(self.channel().await, Token::new(token))
    }

    /// Opens a wildcard delta stream as `node`, with what it already holds.
    pub async fn subscribe(
        &self,
        node: &str,
        initial: &[(&str, &str)],
    ) -> Result<XdsSession, Status> {
        let mut first = request(node);
        first.initial_resource_versions = initial
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        XdsSession::open(self.xds_client(&self.token(node)).await, first).await
    }

    /// GET on the debug server: (status, body).
    pub async fn debug_get(&self, path: &str) -> (u16, String) {
        http_get(self.handle.debug_addr(), path).await
    }
}

pub fn write(dir: &Path, name: &str, yaml: &str) {
    let path: PathBuf = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, yaml).unwrap();
}

/// Adds `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Token(MetadataValue<tonic::metadata::Ascii>);

impl Token {
    pub fn new(token: &str) -> Self {
        Token(format!("Bearer {token}").parse().unwrap())
    }
}

impl Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub fn request(node: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: node.to_string(),
            ..Default::default()
        }),
        type_url: ADDRESS_TYPE_URL.to_string(),
        ..Default::default()
    }
}

/// One delta ADS stream, driven by hand.
pub struct XdsSession {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
    node: String,
}

impl XdsSession {
    pub async fn open(
        mut client: AggregatedDiscoveryServiceClient<InterceptedService<Channel, Token>>,
        first: DeltaDiscoveryRequest,
    ) -> Result<Self, Status> {
        let node = first
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let responses = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(XdsSession {
            tx,
            responses,
            node,
        })
    }

    /// The next response, failing the test after [`WAIT`].
    pub async fn recv(&mut self) -> Result<DeltaDiscoveryResponse, Status> {
        match tokio::time::timeout(WAIT, self.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => Err(Status::aborted("stream ended")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no xDS response within {WAIT:?}"),
        }
    }

    /// Receives, and ACKs (for the response's type).
    pub async fn recv_and_ack(&mut self) -> DeltaDiscoveryResponse {
        let response = self.recv().await.expect("a response");
        self.ack_type(&response.type_url, &response.nonce).await;
        response
    }

    pub async fn ack(&self, nonce: &str) {
        self.ack_type(ADDRESS_TYPE_URL, nonce).await;
    }

    pub async fn ack_type(&self, type_url: &str, nonce: &str) {
        let mut ack = request(&self.node);
        ack.type_url = type_url.to_string();
        ack.response_nonce = nonce.to_string();
        self.tx.send(ack).await.unwrap();
    }

    /// Subscribes to another type on this stream (wildcard), with what
    /// the client already holds of it.
    pub async fn subscribe_type(&self, type_url: &str, initial: &[(&str, &str)]) {
        let mut first = request(&self.node);
        first.type_url = type_url.to_string();
        first.initial_resource_versions = initial
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.tx.send(first).await.unwrap();
    }

    pub async fn nack(&self, nonce: &str, message: &str) {
        self.nack_type(ADDRESS_TYPE_URL, nonce, message).await;
    }

    pub async fn nack_type(&self, type_url: &str, nonce: &str, message: &str) {
        let mut nack = request(&self.node);
        nack.type_url = type_url.to_string();
        nack.response_nonce = nonce.to_string();
        nack.error_detail = Some(rpc::Status {
            code: tonic::Code::InvalidArgument as i32,
            message: message.to_string(),
            details: vec![],
        });
        self.tx.send(nack).await.unwrap();
    }

    pub async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }
}

/// Resource names in a response, sorted.
pub fn names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut names: Vec<String> = response.resources.iter().map(|r| r.name.clone()).collect();
    names.sort();
    names
}

/// Decodes a response's resources.
pub fn addresses(response: &DeltaDiscoveryResponse) -> Vec<Type> {
    response
        .resources
        .iter()
        .map(|r| {
            let any = r.resource.as_ref().expect("resource body");
            assert_eq!(any.type_url, ADDRESS_TYPE_URL);
            Address::decode(any.value.as_slice())
                .expect("decodes")
                .r#type
                .expect("workload or service")
        })
        .collect()
}

/// Minimal HTTP/1.1 GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("debug server answers")
        .unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Retries `check` until it returns `Some`, failing after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === CA requests ===

/// A CSR for `uri` (plus a DNS SAN the CA must drop).
pub fn csr(uri: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![
        rcgen::SanType::URI(uri.try_into().unwrap()),
        rcgen::SanType::DnsName("evil.example.com".try_into().unwrap()),
    ];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

pub fn ca_request(uri: &str, impersonate: Option<&str>) -> weft_proto::ca::IstioCertificateRequest {
    weft_proto::ca::IstioCertificateRequest {
        csr: csr(uri),
        validity_duration: 3600,
        metadata: impersonate.map(|id| prost_types::Struct {
            fields: [(
                "ImpersonatedIdentity".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(id.to_string())),
                },
            )]
            .into(),
        }),
    }
}

// === YAML fixtures ===

pub const MESH_NS: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: mesh
  labels:
    istio.io/dataplane-mode: ambient
";

/// A pod on `node` with service account `sa` and `ip`.
pub fn pod(name: &str, node: &str, sa: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: mesh
  labels:
    app: web
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers:
  - name: app
    ports:
    - name: http
      containerPort: 8080
status:
  podIP: {ip}
"
    )
}

pub const WEB_SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: mesh
spec:
  selector:
    app: web
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    targetPort: http
";

pub fn uid(name: &str) -> String {
    format!("Kubernetes//Pod/mesh/{name}")
}

pub const WEB_SVC_NAME: &str = "mesh/web.mesh.svc.cluster.local";
