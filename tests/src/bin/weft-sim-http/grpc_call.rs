//! `grpc-call`: the client side of `weft.test.Echo`, written out with
//! `tonic::client::Grpc` and a prost codec over a tonic channel (h2c).

use std::error::Error as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use http::Uri;
use http::uri::PathAndQuery;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_prost::ProstCodec;

use crate::grpc::{CHAT, EchoReply, EchoRequest, FAIL, UNARY};
use crate::headers::parse_secs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Unary,
    Chat,
    Fail,
}

#[derive(Debug, clap::Args)]
pub struct GrpcCallArgs {
    /// `host:port`.
    pub addr: String,
    /// Which method to call.
    #[arg(long, value_enum)]
    pub method: Method,
    /// The request message.
    #[arg(long, default_value = "hello")]
    pub message: String,
    /// Calls (`unary`, `fail`; default 1) or messages (`chat`; default 3).
    #[arg(long)]
    pub count: Option<u32>,
    /// The status code `fail` asks for.
    #[arg(long, default_value_t = 14)]
    pub code: i32,
    /// The `:authority` to send; default ADDR.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub authority: Option<String>,
    /// Seconds allowed for the whole exchange.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
}

impl GrpcCallArgs {
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(match self.method {
            Method::Chat => 3,
            Method::Unary | Method::Fail => 1,
        })
    }
}

/// The last line printed.
#[derive(Debug, Serialize)]
struct Final<'a> {
    grpc_status: i32,
    grpc_message: &'a str,
}

type Client = Grpc<Channel>;

pub async fn run(args: GrpcCallArgs) -> Result<ExitCode> {
    let endpoint = endpoint(&args)?;
    let timeout = args.timeout;
    let status = tokio::time::timeout(timeout, call(endpoint, &args))
        .await
        .map_err(|_| anyhow!("gRPC call to {}: not done within {timeout:?}", args.addr))??;
    let line = Final {
        grpc_status: status.code() as i32,
        grpc_message: status.message(),
    };
    crate::emit_json(&line)?;
    Ok(if status.code() == Code::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn endpoint(args: &GrpcCallArgs) -> Result<Endpoint> {
    let uri = |authority: &str| {
        format!("http://{authority}")
            .parse::<Uri>()
            .ok()
            .filter(|u| u.path() == "/" && u.authority().is_some_and(|a| a.port().is_some()))
            .with_context(|| format!("{authority:?} is not host:port"))
    };
    let mut endpoint = Endpoint::from(uri(&args.addr)?).connect_timeout(args.timeout);
    if let Some(authority) = &args.authority {
        let origin = format!("http://{authority}")
            .parse::<Uri>()
            .map_err(|e| anyhow!("--authority {authority:?}: {e}"))?;
        endpoint = endpoint.origin(origin);
    }
    Ok(endpoint)
}

/// The final status: the server's (or a proxy's), OK included; transport
/// failures are errors.
async fn call(endpoint: Endpoint, args: &GrpcCallArgs) -> Result<Status> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow!("connecting to {}: {}", args.addr, chain(&e)))?;
    let mut client = Grpc::new(channel);
    let request = EchoRequest {
        message: args.message.clone(),
        code: args.code,
    };
    let outcome = match args.method {
        Method::Unary => unary(&mut client, UNARY, request, args.count()).await,
        Method::Fail => unary(&mut client, FAIL, request, args.count()).await,
        Method::Chat => chat(&mut client, request, args.count()).await,
    };
    match outcome {
        Ok(()) => Ok(Status::new(Code::Ok, "")),
        // tonic wraps transport failures (refused, reset, broken h2) in a
        // status with a source; a status from the peer has none.
        Err(Failure::Status(status)) if status.source().is_some() => Err(anyhow!(
            "gRPC call to {} failed in transport: {}{}",
            args.addr,
            status.message(),
            status
                .source()
                .map(chain)
                .map_or(String::new(), |c| format!(" ({c})"))
        )),
        Err(Failure::Status(status)) => Ok(status),
        Err(Failure::Other(e)) => Err(e.context(format!("gRPC call to {}", args.addr))),
    }
}

/// Why a call did not end with OK.
enum Failure {
    /// The status it ended with.
    Status(Status),
    /// Something else: the connection, or the replies were wrong.
    Other(anyhow::Error),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        Failure::Status(status)
    }
}

async fn ready(client: &mut Client) -> Result<(), Failure> {
    client
        .ready()
        .await
        .map_err(|e| Failure::Other(anyhow!("the connection is not usable: {}", chain(&e))))
}

/// `count` unary calls one after the other; stops at the first error.
async fn unary(
    client: &mut Client,
    path: &'static str,
    request: EchoRequest,
    count: u32,
) -> Result<(), Failure> {
    for _ in 0..count {
        ready(client).await?;
        let reply = client
            .unary(
                Request::new(request.clone()),
                PathAndQuery::from_static(path),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await?;
        print_reply(reply.get_ref())?;
    }
    Ok(())
}

/// One stream: a message, its reply, the next message…; then the client
/// closes its side and the stream's end carries the final status.
async fn chat(client: &mut Client, request: EchoRequest, count: u32) -> Result<(), Failure> {
    let (tx, rx) = mpsc::channel(1);
    let send = |tx: &mpsc::Sender<EchoRequest>| {
        tx.try_send(request.clone())
            .map_err(|_| Failure::Other(anyhow!("the request stream is gone")))
    };
    if count > 0 {
        send(&tx)?;
    }
    ready(client).await?;
    let mut replies = client
        .streaming(
            Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static(CHAT),
            ProstCodec::<EchoRequest, EchoReply>::default(),
        )
        .await?
        .into_inner();
    for i in 0..count {
        if i > 0 {
            send(&tx)?;
        }
        let Some(reply) = replies.message().await? else {
            return Err(Failure::Other(anyhow!(
                "the stream ended with OK after {i} of {count} replies"
            )));
        };
        print_reply(&reply)?;
        if reply.count != i as i32 {
            return Err(Failure::Other(anyhow!(
                "reply {i} has count {}",
                reply.count
            )));
        }
    }
    drop(tx);
    if let Some(extra) = replies.message().await? {
        print_reply(&extra)?;
        return Err(Failure::Other(anyhow!(
            "one reply more than the {count} requests"
        )));
    }
    Ok(())
}

fn print_reply(reply: &EchoReply) -> Result<(), Failure> {
    crate::emit_json(reply).map_err(Failure::Other)
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addr: &str, authority: Option<&str>) -> GrpcCallArgs {
        GrpcCallArgs {
            addr: addr.into(),
            method: Method::Unary,
            message: "m".into(),
            count: None,
            code: 14,
            authority: authority.map(Into::into),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint(&args("10.1.1.2:9090", None)).unwrap().uri(),
            "http://10.1.1.2:9090/"
        );
        for bad in ["10.1.1.2", "http://h:1", "h:1/x", "", "h:port"] {
            assert!(endpoint(&args(bad, None)).is_err(), "{bad:?}");
        }
        assert!(endpoint(&args("h:1", Some("echo.demo:9090"))).is_ok());
        assert!(endpoint(&args("h:1", Some("a b"))).is_err());
    }

    #[test]
    fn final_line() {
        let status = Status::new(Code::Unavailable, "down");
        let line = Final {
            grpc_status: status.code() as i32,
            grpc_message: status.message(),
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"grpc_status":14,"grpc_message":"down"}"#
        );
    }
}
