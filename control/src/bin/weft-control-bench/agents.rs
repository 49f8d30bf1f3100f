//! The agents (the child process): each a delta ADS client over real TLS
//! gRPC, subscribed (wildcard) to every served type, ACKing every
//! response.

use std::path::Path;

use anyhow::bail;
use bytes::Buf;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder},
    transport::{Certificate, ClientTlsConfig, Endpoint},
};
use weft_control::xds::SERVED_TYPES;
use weft_proto::{core::Node, discovery::DeltaDiscoveryRequest};

/// What an agent here reads of a response: type, nonce, and where
/// each resource's name and version are, not the bodies. Read in place from tonic's buffer with no
/// allocation per resource: the agents share the control plane's CPUs
/// in this benchmark, while a real agent decodes on its own node.
pub struct Lite {
    pub type_url: String,
    pub nonce: String,
    pub resources: usize,
}

pub struct AgentCodec;

impl Codec for AgentCodec {
    type Encode = DeltaDiscoveryRequest;
    type Decode = Lite;
    type Encoder = tonic_prost::ProstEncoder<DeltaDiscoveryRequest>;
    type Decoder = LiteDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        LiteDecoder
    }
}

pub struct LiteDecoder;

impl Decoder for LiteDecoder {
    type Item = Lite;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Lite>, tonic::Status> {
        let len = buf.remaining();
        let bad = || tonic::Status::internal("malformed DeltaDiscoveryResponse");
        let bytes = buf.chunk();
        if bytes.len() < len {
            return Err(bad());
        }
        let mut lite = Lite {
            type_url: String::new(),
            nonce: String::new(),
            resources: 0,
        };
        fn text(b: &[u8]) -> Result<&str, tonic::Status> {
            std::str::from_utf8(b)
                .map_err(|_| tonic::Status::internal("a string that is not UTF-8"))
        }
        for field in Fields(&bytes[..len]) {
            match field.ok_or_else(bad)? {
                (2, Some(resource)) => {
                    let (mut name, mut version) = (None, None);
                    for inner in Fields(resource) {
                        match inner.ok_or_else(bad)? {
                            (1, v) => version = v,
                            (3, n) => name = n,
                            _ => {}
                        }
                    }
                    if name.is_none() || version.is_none() {
                        return Err(bad());
                    }
                    lite.resources += 1;
                }
                (4, Some(s)) => lite.type_url = text(s)?.to_string(),
                (5, Some(s)) => lite.nonce = text(s)?.to_string(),
                _ => {}
            }
        }
        buf.advance(len);
        Ok(Some(lite))
    }
}

/// The fields of a protobuf message: (number, payload of a
/// length-delimited field); `None` when malformed.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Option<&'a [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.0)?;
            let payload = match key & 7 {
                0 => {
                    varint(&mut self.0)?;
                    None
                }
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    self.0 = self.0.get(n..)?;
                    None
                }
                2 => {
                    let n = usize::try_from(varint(&mut self.0)?).ok()?;
                    let payload = self.0.get(..n)?;
                    self.0 = &self.0[n..];
                    Some(payload)
                }
                _ => return None,
            };
            Some((key >> 3, payload))
        })();
        if field.is_none() {
            self.0 = &[];
        }
        Some(field)
    }
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *b.get(i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *b = &b[i + 1..];
            return Some(value);
        }
    }
    None
}

pub async fn run(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split('|').collect();
    let [addr, bundle, state_dir, n] = parts.as_slice() else {
        bail!("bad --agents-for");
    };
    let n: usize = n.parse()?;
    let bundle = std::fs::read(bundle)?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let node = format!("node-{i}");
        let token = weft_control::bootstrap_token(Path::new(state_dir), &node)?;
        // Windows as ztunnel sets them (4 MiB stream, 16 MiB connection).
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))?
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(bundle.clone()))
                    .domain_name("weft-control"),
            )?;
        tasks.spawn(async move {
            if let Err(e) = agent(endpoint, node.clone(), token).await {
                eprintln!("agent {node}: {e:#}");
                std::process::exit(1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn request(node: &str, type_url: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: node.to_string(),
            ..Default::default()
        }),
        type_url: type_url.to_string(),
        ..Default::default()
    }
}

async fn agent(endpoint: Endpoint, node: String, token: String) -> anyhow::Result<()> {
    let channel = endpoint.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
    grpc.ready().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for type_url in SERVED_TYPES {
        tx.send(request(&node, type_url)).await?;
    }
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let codec = AgentCodec;
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
    );
    let mut responses = grpc.streaming(req, path, codec).await?.into_inner();
    while let Some(response) = responses.message().await? {
        let mut ack = request(&node, &response.type_url);
        ack.response_nonce = response.nonce;
        tx.send(ack).await?;
    }
    Ok(())
}
