//! Delta xDS client for Istio's Workload API (`istio.workload.Address`).

mod client;
pub mod levels;

pub use client::{Decoded, XdsClient, decode};
