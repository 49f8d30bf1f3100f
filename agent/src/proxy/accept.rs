//! The accept loop that every listener of an enrolled pod runs: 15001
//! (outbound), 15008 (HBONE) and 15006 (inbound plaintext). Each accepted
//! connection becomes a unit of the agent's work ([`crate::lifecycle`]),
//! so the agent's stop waits for it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{PodContext, ProxyContext, inbound, inbound_plain, outbound};

/// Which of a pod's listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `127.0.0.1:15001` (and `[::1]:15001`): what the app dialled.
    Outbound,
    /// `<pod IP>:15008`: HBONE from peers.
    Hbone,
    /// `127.0.0.1:15006`: plaintext steered to the pod's other ports.
    InboundPlaintext,
}

impl Listener {
    /// The listener's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Outbound => "outbound",
            Listener::Hbone => "HBONE",
            Listener::InboundPlaintext => "inbound plaintext",
        }
    }
}

/// How long to wait after a failed accept (out of descriptors, mostly)
/// before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until `cancel` fires.
pub async fn serve(
    which: Listener,
    listener: TcpListener,
    pod: Arc<PodContext>,
    ctx: Arc<ProxyContext>,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(pod = %pod.name(), listener = which.name(), error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        dispatch(which, stream, peer, &pod, &ctx);
    }
}

/// Starts the connection's task. No span per connection: entering one on
/// every poll costs more than the relay; events carry their own context.
fn dispatch(
    which: Listener,
    stream: TcpStream,
    peer: SocketAddr,
    pod: &Arc<PodContext>,
    ctx: &Arc<ProxyContext>,
) {
    let _ = stream.set_nodelay(true);
    let (pod, shared) = (pod.clone(), ctx.clone());
    match which {
        Listener::Outbound => {
            let accepted_ns = match ctx.metrics.waits_on() {
                true => crate::sys::monotonic_ns(),
                false => 0,
            };
            ctx.tasks
                .spawn(outbound::handle(stream, peer, accepted_ns, pod, shared))
        }
        Listener::InboundPlaintext => ctx
            .tasks
            .spawn(inbound_plain::handle(stream, peer, pod, shared)),
        Listener::Hbone => {
            // Refused before any work: the slot is this source's share of
            // handshakes in progress.
            if let Some(permit) = inbound::admit(peer, &pod, ctx) {
                ctx.tasks
                    .spawn(inbound::handle(stream, peer, permit, pod, shared));
            }
        }
    }
}
