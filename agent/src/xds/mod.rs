//! Delta xDS client for Istio's Workload API (`istio.workload.Address`).

mod client;

pub use client::{Decoded, XdsClient, decode};
