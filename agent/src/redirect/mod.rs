//! Traffic redirection with eBPF: loading weft's programs, attaching them to
//! the node's pod cgroup, and the maps the proxy shares with them.
//!
//! Pinning layout under `--bpffs-dir` (an agent upgrade depends on it):
//!
//! | path | what |
//! | --- | --- |
//! | `maps/WEFT_ENROLLED` | netns cookie → `PodRedirect`, one entry per enrolled pod |
//! | `maps/WEFT_DST_COOKIE` | socket cookie → original destination (connect → established) |
//! | `maps/WEFT_DST_PORT` | (netns cookie, source port) → original destination (established → accept) |
//! | `links/weft_connect4`, `links/weft_connect6`, `links/weft_sockops` | the cgroup attachments |
//!
//! Maps and links stay pinned when the agent stops, so enrolled pods keep
//! being captured while it restarts: their connections are refused (no
//! listener on 15001) rather than leaving the pod in plaintext.

pub mod loader;
mod logger;

pub use loader::{RedirectError, Redirector};
