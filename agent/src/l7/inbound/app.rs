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
        body::{self, Body},
        outbound::MAX_REQUEST_HEADERS,
        reply::LocalReply,
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

impl Served {
    /// Sends a request to the app over this connection's app connection,
    /// opened (again) when there is none of the request's protocol. With
    /// the answer, the app connection's local address ([`AppConn`]).
    pub(super) async fn send(
        &self,
        ctx: &ProxyContext,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<SocketAddr>), LocalReply> {
        let request = match request.extensions_mut().remove::<SeenBody>() {
            Some(seen) => request.map(|body| body::observe(body, seen.0)),
            None => request,
        };
        let http2 = request.version() == Version::HTTP_2;
        let mut slot = self.app.lock().await;
        let usable = match slot.as_mut() {
            Some(AppConn::Http1(send, _)) if !http2 => send.ready().await.is_ok(),
            Some(AppConn::Http2(send, _)) if http2 => send.ready().await.is_ok(),
            _ => false,
        };
        if !usable {
            *slot = Some(self.connect(ctx, http2).await?);
        }
        let (sent, local) = match slot.as_mut().expect("connected above") {
            // HTTP/1.1 requests of one connection arrive one at a time:
            // the lock is held until the answer's head.
            AppConn::Http1(send, local) => (send.send_request(request).await, *local),
            AppConn::Http2(send, local) => {
                let (mut send, local) = (send.clone(), *local);
                drop(slot);
                (send.send_request(request).await, local)
            }
        };
        let response = sent.map_err(|err| {
            tracing::info!(dst = %self.inbound.target, error = %err, "the app did not answer");
            LocalReply::upstream_reset()
        })?;
        Ok((response, local))
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
