//! The unix socket `weft-cni` talks to: one request line, one reply line
//! per connection (see [`crate::cni`]).

use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use tokio_util::sync::CancellationToken;

use super::Enroller;
use crate::cni::{Command, PodEvent, Reply};

/// Binds the socket (replacing a stale one), owner-only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The CNI socket's server. It can pause, leaving calls queued on the
/// socket (an agent handing the socket to its successor), and resume.
pub struct CniServer {
    /// A descriptor of the listening socket, from which every run serves.
    socket: OwnedFd,
    enroller: Arc<Enroller>,
    running: Mutex<CancellationToken>,
}

impl CniServer {
    /// Serves `listener` until paused.
    pub fn start(listener: UnixListener, enroller: Arc<Enroller>) -> std::io::Result<Self> {
        let socket = listener.as_fd().try_clone_to_owned()?;
        let stop = CancellationToken::new();
        spawn(listener, &enroller, &stop);
        Ok(Self {
            socket,
            enroller,
            running: Mutex::new(stop),
        })
    }

    /// A second descriptor of the socket, to hand over.
    pub fn socket(&self) -> std::io::Result<OwnedFd> {
        self.socket.try_clone()
    }

    /// Stops accepting; calls in progress finish, new ones wait on the
    /// socket.
    pub fn pause(&self) {
        self.running.lock().expect("CNI server lock").cancel();
    }

    /// Accepts again after [`Self::pause`].
    pub fn resume(&self) {
        let listener = self
            .socket
            .try_clone()
            .and_then(crate::handoff::unix_listener);
        match listener {
            Ok(listener) => {
                let stop = CancellationToken::new();
                spawn(listener, &self.enroller, &stop);
                *self.running.lock().expect("CNI server lock") = stop;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot serve the CNI socket again; pods on this node cannot start until the agent restarts")
            }
        }
    }
}

/// Serves `listener` on the agent's tasks until `stop` fires or the agent
/// stops.
fn spawn(listener: UnixListener, enroller: &Arc<Enroller>, stop: &CancellationToken) {
    let serving = serve(listener, enroller.clone(), stop.clone());
    enroller.tasks().spawn_background("CNI server", serving);
}

/// Serves requests until `stop` fires.
async fn serve(listener: UnixListener, enroller: Arc<Enroller>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => enroller.tasks().spawn(handle(stream, enroller.clone())),
            Err(err) => {
                tracing::warn!(error = %err, "CNI socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, enroller: Arc<Enroller>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let reply = match BufReader::new(read).read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => match crate::cni::read_request(&line) {
            Ok(event) => dispatch(event, &enroller).await,
            Err(refused) => refused,
        },
        Err(err) => Reply::error(format!("reading the request: {err}")),
    };
    let mut bytes = serde_json::to_vec(&reply).expect("reply serialises");
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
}

async fn dispatch(event: PodEvent, enroller: &Enroller) -> Reply {
    let pod = format!("{}/{}", event.pod_namespace, event.pod_name);
    let result = match event.command {
        Command::Add => enroller.add(event).await,
        Command::Check => enroller.check(&event).await,
        Command::Del => enroller.remove(&event).await.map(|()| false),
    };
    match result {
        Ok(enrolled) => Reply::ok(enrolled),
        Err(err) => {
            tracing::warn!(%pod, error = %err, "pod event refused");
            Reply::error(err.to_string())
        }
    }
}
