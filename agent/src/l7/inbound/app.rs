//! The app's side of an inbound connection ([`Served`]): the connection
//! to the app opened from the client's own address, one per downstream
//! connection and protocol, and an upgrade's (WebSocket, CONNECT)
//! connection of its own.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode, Version};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{SeenBody, Served};
use crate::{
    l7::{
        body::{self, Body, Replay},
        outbound::MAX_REQUEST_HEADERS,
        reply::{self, LocalReply},
        route::Outcome,
    },
    proxy::{ProxyContext, delivery},
};

/// A connection to the app, by protocol, with its local address (the
/// client's own, the delivery being transparent): the access log's
/// `%UPSTREAM_LOCAL_ADDRESS%`.
pub(super) enum AppConn {
    Http1(http1::SendRequest<Body>, Option<SocketAddr>),
    Http2(http2::SendRequest<Body>, Option<SocketAddr>),
}

/// What the requests to the app came to, for the server side's access
/// log and metrics.
#[derive(Debug, Default)]
pub struct Upstream {
    /// The local address of the app connection that carried the last
    /// attempt (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub local: Option<SocketAddr>,
    /// Attempts made (`%UPSTREAM_REQUEST_ATTEMPT_COUNT%`; 0: the agent
    /// answered itself).
    pub attempts: u32,
    /// The last answer was retriable but the attempts were used up
    /// (Envoy's `URX`).
    pub retry_limit_exceeded: bool,
}

/// An attempt that got no answer from the app.
struct Failure {
    outcome: Outcome,
    reply: LocalReply,
    /// The request, when none of it was sent.
    unsent: Option<Request<Body>>,
}

/// A request's head, to send it again.
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: Version,
    headers: http::HeaderMap,
}

impl Head {
    fn of(parts: &http::request::Parts) -> Head {
        Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        }
    }

    fn request(&self, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

impl Served {
    /// Sends a request to the app over this connection's app connection,
    /// opened (again) when there is none of the request's protocol,
    /// retrying as MeshConfig's `defaultInboundHttpRetryPolicy` says
    /// (Istio's default: twice, a request that never reached the app; none
    /// on a gRPC port). What the attempts came to goes into `upstream`.
    pub(super) async fn send(
        &self,
        ctx: &ProxyContext,
        mut request: Request<Body>,
        upstream: &mut Upstream,
    ) -> Result<Response<Incoming>, LocalReply> {
        if let Some(seen) = request.extensions_mut().remove::<SeenBody>() {
            request = request.map(|body| body::observe(body, seen.0));
        }
        let retry = match self.inbound.grpc_port {
            true => None,
            false => Some(ctx.l7.config.inbound_retry()).filter(|r| r.attempts > 0),
        };
        let Some(retry) = retry else {
            upstream.attempts = 1;
            return self
                .attempt(ctx, request, upstream)
                .await
                .map_err(|f| f.reply);
        };
        // A request that went to the app is sent again only under a
        // condition that retries one (not Istio's default): its body is
        // kept as it goes, and its head copied, to build it again.
        let replay = if retry.retries_sent_requests() {
            let (parts, body) = request.into_parts();
            let replay = Replay::new(body);
            let head = Head::of(&parts);
            request = Request::from_parts(parts, replay.body());
            Some((head, replay))
        } else {
            None
        };
        let mut next = Some(request);
        loop {
            upstream.attempts += 1;
            let request = match (next.take(), &replay) {
                (Some(request), _) => request,
                (None, Some((head, replay))) => head.request(replay.body()),
                (None, None) => unreachable!("only an unsent request is retried without a replay"),
            };
            let result = self.attempt(ctx, request, upstream).await;
            let outcome = match &result {
                Ok(response) => Outcome::Response {
                    status: response.status().as_u16(),
                    grpc_status: reply::grpc_status(response.headers()),
                },
                Err(failure) => failure.outcome,
            };
            let (answer, unsent) = match result {
                Ok(response) => (Ok(response), None),
                Err(failure) => (Err(failure.reply), failure.unsent),
            };
            let again = unsent.is_some()
                || replay
                    .as_ref()
                    .is_some_and(|(_, replay)| replay.can_replay());
            if !(retry.retriable(&outcome) && again) {
                return answer;
            }
            if upstream.attempts > retry.attempts {
                // Envoy's `URX`: the attempts are used up.
                upstream.retry_limit_exceeded = true;
                return answer;
            }
            tracing::debug!(dst = %self.inbound.target, attempt = upstream.attempts, ?outcome, "retrying the request to the app");
            if unsent.is_none() {
                // An HTTP/1.1 connection may still be writing the body of
                // the request just answered: the retry takes a new one, as
                // Envoy resets the attempt it gives up.
                let mut slot = self.app.lock().await;
                if matches!(*slot, Some(AppConn::Http1(..))) {
                    *slot = None;
                }
            }
            next = unsent;
            tokio::time::sleep(retry.backoff(upstream.attempts, fastrand::u32(..))).await;
        }
    }

    /// One attempt: the app connection made usable, the request sent.
    async fn attempt(
        &self,
        ctx: &ProxyContext,
        request: Request<Body>,
        upstream: &mut Upstream,
    ) -> Result<Response<Incoming>, Failure> {
        let http2 = request.version() == Version::HTTP_2;
        let mut slot = self.app.lock().await;
        let usable = match slot.as_mut() {
            Some(AppConn::Http1(send, _)) if !http2 => send.ready().await.is_ok(),
            Some(AppConn::Http2(send, _)) if http2 => send.ready().await.is_ok(),
            _ => false,
        };
        if !usable {
            match self.connect(ctx, http2).await {
                Ok(conn) => *slot = Some(conn),
                Err(reply) => {
                    return Err(Failure {
                        outcome: Outcome::ConnectFailure,
                        reply,
                        unsent: Some(request),
                    });
                }
            }
        }
        let (sent, local) = match slot.as_mut().expect("connected above") {
            // HTTP/1.1 requests of one connection arrive one at a time:
            // the lock is held until the answer's head.
            AppConn::Http1(send, local) => (send.try_send_request(request).await, *local),
            AppConn::Http2(send, local) => {
                let (mut send, local) = (send.clone(), *local);
                drop(slot);
                (send.try_send_request(request).await, local)
            }
        };
        upstream.local = local;
        sent.map_err(|mut err| {
            let unsent = err.take_message();
            tracing::info!(dst = %self.inbound.target, error = %err.error(), sent = unsent.is_none(), "the app did not answer");
            Failure {
                outcome: match unsent {
                    Some(_) => Outcome::ResetBeforeRequest,
                    None => Outcome::Reset,
                },
                reply: LocalReply::upstream_reset(),
                unsent,
            }
        })
    }

    /// Sends an upgrade request to the app on a connection of its own;
    /// when the app agrees, both sides are joined once they switch. With
    /// the answer, that connection's local address.
    pub(super) async fn upgrade(
        &self,
        ctx: &ProxyContext,
        mut request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Option<SocketAddr>), LocalReply> {
        let downstream = hyper::upgrade::on(&mut request);
        let connect = request.method() == http::Method::CONNECT;
        let (stream, exemption) = self.deliver(ctx).await?;
        let local = stream.local_addr().ok();
        let (mut send, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| {
                tracing::info!(dst = %self.inbound.target, error = %err, "HTTP handshake with the app failed");
                LocalReply::connect_failure()
            })?;
        tokio::spawn(async move {
            let _exemption = exemption;
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(error = %err, "upgraded connection to the app ended");
            }
        });
        let mut response = send.send_request(request).await.map_err(|err| {
            tracing::info!(dst = %self.inbound.target, error = %err, "the app did not answer the upgrade");
            LocalReply::upstream_reset()
        })?;
        let agreed = response.status() == StatusCode::SWITCHING_PROTOCOLS
            || (connect && response.status().is_success());
        if agreed {
            let upstream = hyper::upgrade::on(&mut response);
            ctx.tasks.spawn(async move {
                let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) else {
                    tracing::debug!("upgrade: one side did not complete");
                    return;
                };
                let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                if let Err(err) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                    tracing::debug!(error = %err, "upgraded connection ended");
                }
            });
        }
        Ok((response, local))
    }

    /// A connection to the app from the client's address, and its
    /// steering exemption.
    async fn deliver(
        &self,
        ctx: &ProxyContext,
    ) -> Result<(tokio::net::TcpStream, delivery::Exemption), LocalReply> {
        let inbound = &self.inbound;
        let delivered = delivery::connect(
            &inbound.pod,
            ctx,
            inbound.peer.ip(),
            inbound.target,
            inbound.connect_timeout,
        )
        .await
        .map_err(|err| {
            tracing::info!(src.addr = %inbound.peer, dst = %inbound.target, error = %err, "delivery to the app failed");
            LocalReply::connect_failure()
        })?;
        Ok(delivered.split())
    }

    async fn connect(&self, ctx: &ProxyContext, http2: bool) -> Result<AppConn, LocalReply> {
        let (stream, exemption) = self.deliver(ctx).await?;
        let local = stream.local_addr().ok();
        let io = TokioIo::new(stream);
        let failed = |err: hyper::Error| {
            tracing::info!(dst = %self.inbound.target, error = %err, "HTTP handshake with the app failed");
            LocalReply::connect_failure()
        };
        if http2 {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .initial_stream_window_size(crate::proxy::hbone::STREAM_WINDOW)
                .initial_connection_window_size(crate::proxy::hbone::CONNECTION_WINDOW)
                .max_header_list_size(MAX_REQUEST_HEADERS as u32);
            let (send, conn) = builder.handshake(io).await.map_err(failed)?;
            tokio::spawn(async move {
                let _exemption = exemption;
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, "HTTP/2 connection to the app ended");
                }
            });
            Ok(AppConn::Http2(send, local))
        } else {
            let (send, conn) = http1::Builder::new()
                .max_buf_size(MAX_REQUEST_HEADERS)
                .handshake(io)
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                let _exemption = exemption;
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, "HTTP/1.1 connection to the app ended");
                }
            });
            Ok(AppConn::Http1(send, local))
        }
    }
}
