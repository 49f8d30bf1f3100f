//! The unix socket `weft-cni` talks to: one request line, one reply line
//! per connection (see [`crate::cni`]).

use std::{path::Path, sync::Arc};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

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

/// Serves requests until the process ends.
pub async fn serve(listener: UnixListener, enroller: Arc<Enroller>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, enroller.clone()));
            }
            Err(err) => tracing::warn!(error = %err, "CNI socket accept failed"),
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
