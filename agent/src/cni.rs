//! The wire protocol between the `weft-cni` plugin and the agent: one JSON
//! request line, one JSON reply line, over the agent's unix socket. The
//! agent replies only when the pod is fully set up (or refused), which is
//! what makes pod start fail closed.

use std::{
    io::{BufRead, BufReader, Write},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// What the container runtime asked the plugin to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
}

/// A pod event, as the plugin learnt it from the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEvent {
    pub command: Command,
    pub container_id: String,
    /// Path of the pod's network namespace (`CNI_NETNS`).
    pub netns: String,
    pub pod_namespace: String,
    pub pod_name: String,
    #[serde(default)]
    pub pod_uid: String,
    /// The pod's IPs from the previous plugin's result.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// Set when no CNI call told the agent about the pod and the agent
    /// found its namespace on the node itself (a pod that ran before weft
    /// was installed): the namespace's inode, checked before `netns` is
    /// trusted again after a restart (a `/proc/<pid>/ns/net` path can come
    /// to mean another namespace). Never sent by the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u64>,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// Whether the pod is in the mesh (its traffic is captured).
    #[serde(default)]
    pub enrolled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(enrolled: bool) -> Self {
        Self {
            ok: true,
            enrolled,
            error: None,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            enrolled: false,
            error: Some(message.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "cannot reach the weft agent at {socket}: {source}; is weft-agent running on this node?"
    )]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("talking to the weft agent at {socket}: {source}")]
    Io {
        socket: String,
        source: std::io::Error,
    },
    #[error("the weft agent sent an unreadable reply: {0}")]
    Decode(serde_json::Error),
}

/// Reads one request line from `weft-cni` (what the agent's CNI socket
/// receives): the event, or the reply that refuses a malformed request.
pub fn read_request(line: &str) -> Result<PodEvent, Reply> {
    serde_json::from_str::<PodEvent>(line)
        .map_err(|err| Reply::error(format!("malformed request from weft-cni: {err}")))
}

/// The pod's IPs from a CNI `prevResult` (its `ips[].address`, CIDRs):
/// what `weft-cni` sends the agent. Entries that are not an address are
/// left out.
pub fn prev_result_ips(prev_result: &serde_json::Value) -> Vec<IpAddr> {
    prev_result
        .get("ips")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address").and_then(serde_json::Value::as_str))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect()
}

/// Sends one event and waits (up to `timeout`) for the reply. Blocking: the
/// plugin is a short-lived synchronous process.
pub fn call(socket: &Path, event: &PodEvent, timeout: Duration) -> Result<Reply, CallError> {
    let name = socket.display().to_string();
    let io = |source| CallError::Io {
        socket: name.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| CallError::Connect {
        socket: name.clone(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(event).map_err(CallError::Decode)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(&reply).map_err(CallError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let event = PodEvent {
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/var/run/netns/p".into(),
            pod_namespace: "default".into(),
            pod_name: "web-0".into(),
            pod_uid: String::new(),
            ips: vec!["10.0.1.2".parse().unwrap()],
            netns_inode: None,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""command":"ADD""#), "{json}");
        assert_eq!(serde_json::from_str::<PodEvent>(&json).unwrap(), event);
        let reply: Reply = serde_json::from_str(r#"{"ok":false,"error":"nope"}"#).unwrap();
        assert_eq!(reply, Reply::error("nope"));
        assert_eq!(read_request(&json).unwrap(), event);
        let refused = read_request("{\"command\":\"ADD\"").unwrap_err();
        assert!(!refused.ok);
        assert!(
            refused
                .error
                .unwrap()
                .starts_with("malformed request from weft-cni"),
            "names the sender"
        );
    }

    #[test]
    fn prev_result_ips_reads_the_addresses_and_skips_the_rest() {
        let prev: serde_json::Value = serde_json::from_str(
            r#"{"ips":[{"address":"10.0.1.2/24"},{"address":"fd00::2/64"},{"address":"nope"},{"gateway":"10.0.1.1"},7]}"#,
        )
        .unwrap();
        let want: Vec<IpAddr> = vec!["10.0.1.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        assert_eq!(prev_result_ips(&prev), want);
        assert!(prev_result_ips(&serde_json::Value::Null).is_empty());
    }
}
