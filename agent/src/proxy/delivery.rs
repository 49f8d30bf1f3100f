//! The last hop: a connection from the proxy to the app, inside the
//! destination pod's namespace, from the client's own address (so the app
//! sees the real client IP), exempted from inbound steering for as long as
//! it lives.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::net::TcpStream;
use weft_ebpf_common::{DELIVERY_MARK, DeliveryKey};

use super::{PodContext, Redirection, limits::Stage};
use crate::{redirect::ipv4_key, sys::sockopt};

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot create the delivery socket in the pod's namespace: {0}")]
    Netns(#[from] crate::sys::netns::NetnsError),
    #[error("cannot create the delivery socket from {source_ip}: {error}")]
    Socket { source_ip: IpAddr, error: io::Error },
    #[error("cannot exempt the delivery connection from steering: {0}")]
    Register(#[from] crate::redirect::RedirectError),
    #[error("the app refused the connection to {target}: {error}")]
    Connect {
        target: SocketAddr,
        error: io::Error,
    },
    #[error("the app at {target}: {error}")]
    TimedOut {
        target: SocketAddr,
        error: super::limits::TimedOut,
    },
}

/// A connection to the app; its steering exemption ends when it drops.
pub struct Delivered {
    pub stream: TcpStream,
    _exemption: Exemption,
}

/// A delivery connection's exemption from inbound steering, lifted when
/// dropped.
pub struct Exemption {
    key: Option<DeliveryKey>,
    redirection: Arc<dyn Redirection>,
}

impl Drop for Exemption {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            self.redirection.unregister_delivery(key);
        }
    }
}

impl Delivered {
    /// The stream, and the exemption to keep as long as it is open.
    pub fn split(self) -> (TcpStream, Exemption) {
        (self.stream, self._exemption)
    }
}

/// Connects to `target` (an address of `pod`) from `source_ip`, within
/// `connect_timeout` (a client's DestinationRule's, when this node's agent
/// is the client's proxy too), else the agent's own limit.
pub async fn connect(
    pod: &PodContext,
    ctx: &super::ProxyContext,
    source_ip: IpAddr,
    target: SocketAddr,
    connect_timeout: Option<Duration>,
) -> Result<Delivered, DeliveryError> {
    let redirection = &ctx.redirection;
    let socket = pod
        .netns
        .run(|| sockopt::delivery_socket(source_ip, target, DELIVERY_MARK))?
        .map_err(|error| DeliveryError::Socket { source_ip, error })?;
    let local = socket
        .local_addr()
        .map_err(|error| DeliveryError::Socket { source_ip, error })?;
    // The steering program only handles IPv4; IPv6 deliveries need no
    // exemption.
    let key = match (local.ip(), target.ip()) {
        (IpAddr::V4(remote), IpAddr::V4(app)) => Some(DeliveryKey {
            remote_ip: ipv4_key(remote),
            local_ip: ipv4_key(app),
            remote_port: local.port(),
            local_port: target.port(),
        }),
        _ => None,
    };
    if let Some(key) = key {
        redirection.register_delivery(key)?;
    }
    let exemption = Exemption {
        key,
        redirection: redirection.clone(),
    };
    let limit = connect_timeout.unwrap_or(ctx.limits.connect_timeout);
    let stream = match super::limits::bounded(Stage::Delivery, limit, socket.connect(target)).await
    {
        Ok(connected) => connected.map_err(|error| DeliveryError::Connect { target, error })?,
        Err(error) => {
            ctx.metrics.timed_out(Stage::Delivery);
            return Err(DeliveryError::TimedOut { target, error });
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(Delivered {
        stream,
        _exemption: exemption,
    })
}
