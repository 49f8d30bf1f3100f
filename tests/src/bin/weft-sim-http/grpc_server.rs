//! The server side of `weft.test.Echo`: what tonic's generated server code
//! does, written out with `tonic::server::Grpc` and a prost codec. `serve`
//! hands it the requests whose content-type is gRPC.

use std::future::{Ready, ready};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use hyper::body::Incoming;
use tonic::server::{Grpc, StreamingService, UnaryService};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::grpc::{CHAT, EchoReply, EchoRequest, FAIL, UNARY};

/// Serves one gRPC request as server `name`.
pub async fn call(
    name: Arc<str>,
    req: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    let mut grpc = Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
    match req.uri().path() {
        UNARY => grpc.unary(Unary(name), req).await,
        CHAT => grpc.streaming(Chat(name), req).await,
        FAIL => grpc.unary(Fail(name), req).await,
        other => {
            Status::unimplemented(format!("weft.test.Echo has no method at {other}")).into_http()
        }
    }
}

/// `Unary`: the message back.
struct Unary(Arc<str>);

impl UnaryService<EchoRequest> for Unary {
    type Response = EchoReply;
    type Future = Ready<Result<Response<EchoReply>, Status>>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let request = request.into_inner();
        ready(Ok(Response::new(EchoReply {
            message: request.message,
            server: self.0.to_string(),
            count: 0,
        })))
    }
}

/// `Fail`: the status code asked for.
struct Fail(Arc<str>);

impl UnaryService<EchoRequest> for Fail {
    type Response = EchoReply;
    type Future = Ready<Result<Response<EchoReply>, Status>>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let request = request.into_inner();
        ready(match Code::from_i32(request.code) {
            Code::Ok => Ok(Response::new(EchoReply {
                message: request.message,
                server: self.0.to_string(),
                count: 0,
            })),
            code if request.message.is_empty() => Err(Status::new(
                code,
                format!("failed as asked with code {}", request.code),
            )),
            code => Err(Status::new(code, request.message)),
        })
    }
}

/// `Chat`: a reply to each message as it arrives, numbered from 0; the
/// replies end when the requests do.
struct Chat(Arc<str>);

impl StreamingService<EchoRequest> for Chat {
    type Response = EchoReply;
    type ResponseStream = BoxStream<'static, Result<EchoReply, Status>>;
    type Future = Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<EchoRequest>>) -> Self::Future {
        let name = self.0.clone();
        let replies = request.into_inner().enumerate().map(move |(i, request)| {
            request.map(|r| EchoReply {
                message: r.message,
                server: name.to_string(),
                count: i32::try_from(i).unwrap_or(i32::MAX),
            })
        });
        ready(Ok(Response::new(replies.boxed())))
    }
}
