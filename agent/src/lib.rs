//! weft-agent: the per-node half of the mesh.
//!
//! Reading order for newcomers:
//!
//! * [`config`]: every flag, with its default.
//! * [`app`]: what starts, in which order, and what "ready" means;
//!   [`lifecycle`]: the tasks it owns, and how they stop.
//! * [`cni_install`]: `weft-cni` installed on the node and chained into
//!   its CNI config (`--cni-install`).
//! * [`inpod`]: pods arrive from `weft-cni`; enrolment opens the proxy's
//!   listeners inside each pod's network namespace.
//! * [`redirect`]: the eBPF programs that steer a pod's outbound `connect()`
//!   to those listeners.
//! * [`proxy`]: outbound (15001) and inbound HBONE (15008) proxying.
//! * [`policy`]: L4 authorization, decided at the destination.
//! * [`authn`]: end-user JWT authentication (RequestAuthentication).
//! * [`identity`]: workload certificates from the control plane's CA, and the
//!   TLS configs built from them.
//! * [`xds`] and [`state`]: the workload/service model received from the
//!   control plane.
//! * [`sys`]: the seam to the kernel (netns, socket options, netlink).
//! * [`access_log`]: one line per request and per connection, in Envoy's
//!   format, as MeshConfig and the Telemetry API say.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod authn;
pub mod cni;
pub mod cni_install;
pub mod config;
pub mod control;
pub mod handoff;
pub mod identity;
pub mod inpod;
pub mod l7;
pub mod lifecycle;
pub mod log_sink;
pub mod metrics;
pub mod otlp;
pub mod policy;
pub mod profile;
pub mod proxy;
pub mod redirect;
pub mod state;
pub mod sys;
pub mod tcp_health;
pub mod trace;
pub mod xds;

pub use app::App;
pub use config::Config;
