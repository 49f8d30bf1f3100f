//! Zero-drop upgrade: a new agent on the node takes the running agent's
//! listening sockets, so that no connection is refused or reset while one
//! agent replaces the other.
//!
//! The running agent listens on `<state dir>/handoff.sock`. A new agent
//! that finds it there, once its own workload data is in:
//!
//! 1. asks for the listeners (`take_over`);
//! 2. the running agent stops its CNI server and enrolment (CNI calls
//!    queue on the socket the new agent is about to own) and sends its
//!    admin, readiness, metrics and CNI listeners (`agent`), then every
//!    enrolled pod's 15001, 15006 and 15008 (`pod`, one message each), then
//!    `end`;
//! 3. the new agent enrols the pods on those very sockets and serves them:
//!    both agents now accept from the same queues, so nothing waits;
//! 4. it says `serving`; the running agent stops accepting, tells its
//!    connections to finish (HTTP/2 GOAWAY, `Connection: close`), answers
//!    `released`, and carries the connections it holds until they end or
//!    its `--drain-timeout` passes after SIGTERM.
//!
//! Should the new agent go away before step 4, the running agent reopens
//! its CNI server and enrolment and carries on alone. A killed agent hands
//! nothing over: its sockets close and enrolled pods fail closed until the
//! next agent is up (redirection stays pinned).

mod wire;

use std::{
    net::SocketAddr,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{cni::PodEvent, inpod::Enroller, metrics::Metrics};

use wire::{Channel, Listener};

/// The handoff socket's name in the state directory.
pub const SOCKET_NAME: &str = "handoff.sock";

/// How long the new agent waits for the running one to send its
/// listeners: it first lets CNI calls in progress finish.
const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the running agent waits for the new one to serve: the new one
/// enrols every pod (a certificate each) first.
const SERVING_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("handoff: {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("handoff: cannot reach the running agent: {source}")]
    Connect { source: std::io::Error },
    #[error("handoff: the other agent sent {0}")]
    Protocol(String),
    #[error("handoff: the other agent closed the connection {0}")]
    Closed(&'static str),
    #[error("handoff: no answer from the other agent within {0:?}")]
    TimedOut(Duration),
}

/// A listening socket on the wire: what it is for and where it listens
/// (an `ip:port`, or a unix socket's path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub role: String,
    pub addr: String,
}

impl Slot {
    pub fn new(role: impl Into<String>, addr: impl std::fmt::Display) -> Self {
        Self {
            role: role.into(),
            addr: addr.to_string(),
        }
    }
}

/// A listener kept for a handover: its slot and a descriptor of its own.
pub type Kept = (Slot, OwnedFd);

/// Keeps a second descriptor of `listener` for a handover.
pub fn keep(slot: Slot, listener: &impl AsFd) -> std::io::Result<Kept> {
    Ok((slot, listener.as_fd().try_clone_to_owned()?))
}

/// A TCP listener handed over, checked to listen at `addr`.
pub fn tcp_listener(fd: OwnedFd, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::from(fd);
    let bound = listener.local_addr()?;
    if bound != addr {
        return Err(std::io::Error::other(format!(
            "the listener handed over listens on {bound}"
        )));
    }
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// A unix listener handed over.
pub fn unix_listener(fd: OwnedFd) -> std::io::Result<tokio::net::UnixListener> {
    let listener = std::os::unix::net::UnixListener::from(fd);
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    TakeOver {
        pid: u32,
    },
    Agent {
        listeners: Vec<Slot>,
    },
    Pod {
        event: PodEvent,
        listeners: Vec<Slot>,
    },
    End {
        pods: usize,
    },
    Serving,
    Released {
        open_connections: u64,
    },
}

/// What a new agent received from the one it replaces.
#[derive(Debug, Default)]
pub struct Inherited {
    agent: Vec<Kept>,
    pods: Vec<(PodEvent, Vec<Kept>)>,
}

impl Inherited {
    /// The agent-wide listener for `slot`, if the old agent had it.
    pub fn take_agent(&mut self, slot: &Slot) -> Option<OwnedFd> {
        let at = self.agent.iter().position(|(s, _)| s == slot)?;
        Some(self.agent.swap_remove(at).1)
    }

    /// The pods and their listeners.
    pub fn take_pods(&mut self) -> Vec<(PodEvent, Vec<Kept>)> {
        std::mem::take(&mut self.pods)
    }
}

fn pairs(slots: Vec<Slot>, fds: Vec<OwnedFd>, what: &str) -> Result<Vec<Kept>, HandoffError> {
    if slots.len() != fds.len() {
        return Err(HandoffError::Protocol(format!(
            "{what} with {} listeners but {} descriptors",
            slots.len(),
            fds.len()
        )));
    }
    Ok(slots.into_iter().zip(fds).collect())
}

async fn bounded<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, HandoffError>>,
) -> Result<T, HandoffError> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| HandoffError::TimedOut(limit))?
}

/// The running agent a new one is replacing.
pub struct Predecessor {
    channel: Channel,
}

impl Predecessor {
    /// Connects to the agent running on this node, if there is one. A
    /// stale socket (no agent behind it) is not an agent.
    pub fn find(state_dir: &Path) -> Option<Self> {
        let path = state_dir.join(SOCKET_NAME);
        match Channel::connect(&path) {
            Ok(channel) => Some(Self { channel }),
            Err(HandoffError::Connect { source })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, socket = %path.display(), "starting without a handoff");
                None
            }
        }
    }

    /// Asks for the running agent's listeners.
    pub async fn take_over(&self) -> Result<Inherited, HandoffError> {
        let pid = std::process::id();
        self.channel.send(&Message::TakeOver { pid }, &[]).await?;
        bounded(TAKE_OVER_TIMEOUT, async {
            let mut inherited = Inherited::default();
            loop {
                let (message, fds) = self
                    .channel
                    .recv()
                    .await?
                    .ok_or(HandoffError::Closed("before sending every listener"))?;
                match message {
                    Message::Agent { listeners } => {
                        inherited.agent = pairs(listeners, fds, "the agent's listeners")?;
                    }
                    Message::Pod { event, listeners } => {
                        let what =
                            format!("pod {}/{}'s listeners", event.pod_namespace, event.pod_name);
                        let kept = pairs(listeners, fds, &what)?;
                        inherited.pods.push((event, kept));
                    }
                    Message::End { pods } if pods == inherited.pods.len() => {
                        return Ok(inherited);
                    }
                    other => {
                        return Err(HandoffError::Protocol(format!("{other:?} mid-handover")));
                    }
                }
            }
        })
        .await
    }

    /// Tells the old agent that this one serves every listener, and waits
    /// for it to stop accepting. Returns the connections it still carries.
    pub async fn serving(self) -> Result<u64, HandoffError> {
        self.channel.send(&Message::Serving, &[]).await?;
        bounded(TAKE_OVER_TIMEOUT, async {
            match self.channel.recv().await? {
                Some((Message::Released { open_connections }, _)) => Ok(open_connections),
                Some((other, _)) => Err(HandoffError::Protocol(format!(
                    "{other:?} instead of released"
                ))),
                None => Err(HandoffError::Closed("before releasing its listeners")),
            }
        })
        .await
    }
}

/// The running agent's side: what it hands over and how it steps back.
pub struct Handover {
    pub enroller: Arc<Enroller>,
    /// Admin, readiness, metrics and CNI.
    pub agent_listeners: Vec<Kept>,
    /// The CNI server, paused while the handover is under way.
    pub cni: crate::inpod::server::CniServer,
    /// Stops the admin, readiness and metrics endpoints.
    pub stop_admin: CancellationToken,
    /// Tells every connection to finish (see `ProxyContext::drain`).
    pub drain: CancellationToken,
    pub metrics: Arc<Metrics>,
}

/// Listens for a successor until one has taken over, or `stop` fires.
/// Returns whether this agent handed over.
pub async fn serve(state_dir: PathBuf, handover: Handover, stop: CancellationToken) -> bool {
    let path = state_dir.join(SOCKET_NAME);
    let listener = match Listener::bind(&path) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(error = %err, socket = %path.display(), "no handoff socket: an upgrade will restart this node's connections");
            return false;
        }
    };
    loop {
        let channel = tokio::select! {
            _ = stop.cancelled() => return false,
            accepted = listener.accept() => match accepted {
                Ok(channel) => channel,
                Err(err) => {
                    tracing::warn!(error = %err, "handoff accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match hand_over(&channel, &handover).await {
            Ok(()) => return true,
            Err(err) => {
                tracing::warn!(error = %err, "a new agent asked for this agent's listeners and did not take them; carrying on");
            }
        }
    }
}

/// One handover, from `take_over` to `released`. On an error before the
/// successor serves, this agent takes up CNI and enrolment again.
async fn hand_over(channel: &Channel, handover: &Handover) -> Result<(), HandoffError> {
    let pid = match channel.recv().await? {
        Some((Message::TakeOver { pid }, _)) => pid,
        Some((other, _)) => {
            return Err(HandoffError::Protocol(format!(
                "{other:?} instead of take_over"
            )));
        }
        None => return Err(HandoffError::Closed("before asking for anything")),
    };
    tracing::info!(successor = pid, "a new agent is taking over this node");
    handover.cni.pause();
    let paused = handover.enroller.pause().await;
    let sent = async {
        let (slots, fds): (Vec<Slot>, Vec<_>) = handover
            .agent_listeners
            .iter()
            .map(|(slot, fd)| (slot.clone(), fd.as_fd()))
            .unzip();
        channel
            .send(&Message::Agent { listeners: slots }, &fds)
            .await?;
        let pods = handover.enroller.listeners_to_hand_over().await;
        for (event, kept) in &pods {
            let (slots, fds): (Vec<Slot>, Vec<_>) = kept
                .iter()
                .map(|(slot, fd)| (slot.clone(), fd.as_fd()))
                .unzip();
            let message = Message::Pod {
                event: event.clone(),
                listeners: slots,
            };
            channel.send(&message, &fds).await?;
        }
        channel
            .send(&Message::End { pods: pods.len() }, &[])
            .await?;
        bounded(SERVING_TIMEOUT, async {
            match channel.recv().await? {
                Some((Message::Serving, _)) => Ok(pods.len()),
                Some((other, _)) => Err(HandoffError::Protocol(format!(
                    "{other:?} instead of serving"
                ))),
                None => Err(HandoffError::Closed("before serving")),
            }
        })
        .await
    };
    let pods = match sent.await {
        Ok(pods) => pods,
        Err(err) => {
            drop(paused);
            handover.cni.resume();
            return Err(err);
        }
    };
    handover.enroller.retire(paused).await;
    handover.stop_admin.cancel();
    handover.drain.cancel();
    let open_connections = handover.metrics.active_connections();
    tracing::info!(
        successor = pid,
        pods,
        open_connections,
        "handed this node over to the new agent; serving the connections already open until they end"
    );
    // The successor only logs this; it may be gone already.
    let _ = channel
        .send(&Message::Released { open_connections }, &[])
        .await;
    Ok(())
}
