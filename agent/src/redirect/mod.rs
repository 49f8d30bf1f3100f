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
//! | `maps/WEFT_IN_PODS` | pod IP → enrolled for inbound steering |
//! | `maps/WEFT_DELIVERY` | the proxy's delivery 4-tuples, never steered |
//! | `maps/WEFT_HOST_SRC` | the node's own addresses (kubelet probes), never steered |
//! | `links/weft_connect4`, `links/weft_connect6`, `links/weft_sockops` | the cgroup attachments |
//! | `links/inbound_<netns cookie>` | `weft_sk_lookup` attached to one pod's namespace |
//!
//! `WEFT_INBOUND` (pod IP → the proxy's 15006 listener) is a sockhash and
//! not pinned: its sockets belong to the running agent, and when they close
//! the entries go, so steering fails closed while the agent restarts.
//!
//! Every map's entries and capacity are counted in the background on
//! handles of their own (`occupancy.rs`), never under the data path's
//! locks, and scraped as `weft_agent_ebpf_map_entries{map}` and
//! `weft_agent_ebpf_map_capacity{map}`.
//!
//! Maps and links stay pinned when the agent stops, so enrolled pods keep
//! being captured while it restarts: their connections are refused (no
//! listener on 15001) rather than leaving the pod in plaintext.

mod inbound;
pub mod loader;
mod logger;
mod occupancy;
mod outbound;
pub mod stats;

pub use inbound::ipv4_key;
pub use loader::{RedirectError, Redirector};
pub use occupancy::{COUNT_INTERVAL, MapOccupancy};
pub use outbound::Capture;
pub use stats::ProgramStats;
