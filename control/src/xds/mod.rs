//! Delta xDS (`envoy.service.discovery.v3.AggregatedDiscoveryService`
//! `/DeltaAggregatedResources`) serving the model's
//! `istio.workload.Address` resources.

mod server;
mod stream;
pub mod syncz;

pub use server::XdsServer;
pub use syncz::{StreamStatus, SyncRegistry};
