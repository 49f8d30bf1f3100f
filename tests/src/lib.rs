//! The simulated cluster: a Kubernetes-like cluster made of network
//! namespaces, on which weft's real binaries run. Shared by the end-to-end
//! tests, `cargo xtask demo` and the benchmarks.
//!
//! - The *fabric* namespace holds a bridge; each node is a namespace
//!   attached to it (`10.<f>.0.<n>/24`), and so is the control plane
//!   (`10.<f>.0.200`). Node n routes pod CIDR `10.<p>.<m>.0/24` via node m.
//! - Each pod is a namespace with a veth to its node, its IP as a /32, and
//!   `169.254.1.1` as gateway; its processes run in its own cgroup v2
//!   directory `<cgroup2>/weft-sim-<run>/<node>/<ns>_<pod>`. The node
//!   directory is what the node's agent attaches its eBPF programs to.
//! - With the mesh, `weft-control` runs in directory mode on a config
//!   directory the harness writes, one `weft-agent` runs per node, and pods
//!   join through the real `weft-cni` plugin.
//!
//! ```no_run
//! use weft_sim::{Cluster, PodSpec};
//! # fn main() -> anyhow::Result<()> {
//! let cluster = Cluster::builder().nodes(2).build()?;
//! cluster.add_namespace("demo", &[("istio.io/dataplane-mode", "ambient")])?;
//! let server = cluster.add_pod(PodSpec::new("node-2", "demo", "server").port("http", 8080))?;
//! let client = cluster.add_pod(PodSpec::new("node-1", "demo", "client"))?;
//! let _app = server.spawn_app(&["http-server", "--port", "8080"])?;
//! let url = format!("http://{}/", server.addr(8080));
//! let out = client.run_app(&["http-get", &url], std::time::Duration::from_secs(10))?;
//! assert!(out.stdout.contains(&client.ip().to_string()));
//! # Ok(()) }
//! ```
//!
//! Everything a cluster creates is removed when it drops, also during a
//! panic; leftovers of runs whose process died are removed at the next start.

pub mod bench;
mod bins;
mod capture;
mod cgroup;
mod cleanup;
mod cluster;
mod cni;
mod config;
mod control;
pub mod dashboards;
pub mod httpapp;
pub mod impair;
pub mod jwt;
mod kube;
mod netns;
mod node;
pub mod otlp;
mod pcap;
mod pod;
mod preflight;
mod probe;
mod process;
pub mod prometheus;
pub mod soak;
mod topology;
mod wait;

pub use bins::BinDir;
pub use capture::Capture;
pub use cgroup::cgroup2_root;
pub use cleanup::{RunId, cleanup_stale, leftovers, runs_on_host};
pub use cluster::{Cluster, ClusterBuilder};
pub use cni::{CniCall, CniCommand, POD_GATEWAY};
pub use config::{ContainerPort, Labels, ServicePort};
pub use control::ControlPlane;
pub use netns::Netns;
pub use node::Node;
pub use pcap::{Frame, Packets, TcpPacket, read_pcap};
pub use pod::{Pod, PodSpec};
pub use probe::http_status;
pub use process::{Finished, Process};
pub use topology::Addressing;
pub use wait::{wait_for, wait_until};

/// Signals for [`Process::signal`].
pub use nix::sys::signal::Signal;
