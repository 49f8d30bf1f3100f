//! In-pod enrolment: pods arrive from `weft-cni` ([`server`]); the
//! [`Enroller`] decides, from the control plane's workload data, whether a
//! pod is in the mesh, and if so sets up its namespace (delivery routing,
//! the proxy's listeners, the pod's certificate) and turns on capture. The
//! pods it has seen are persisted ([`persist`]) so that a restarted agent
//! picks them up again. Pods that ran before the agent heard of them are
//! found on the node ([`discover`]). A newer agent takes the pods'
//! listeners over from this one (`handover.rs`, see [`crate::handoff`]).

pub mod discover;
mod enrol;
mod handover;
mod locks;
pub mod persist;
pub mod server;

pub use enrol::{EnrolError, Enroller};
pub use handover::Paused;

pub use enrol::EnrolConfig;

/// Enrolment settings from the agent's config.
pub fn enrol_config(config: &crate::Config) -> EnrolConfig {
    EnrolConfig {
        node_name: config.node_name.clone(),
        workload_wait: config.workload_wait,
    }
}
