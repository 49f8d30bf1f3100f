//! A destination's DestinationRule (`weft.route.v1.DestinationPolicy`)
//! applied: load balancing, connection-pool limits, outlier detection.
//!
//! [`Policies::compile`] turns a service's DestinationPolicy into
//! [`Policies`] once; per request, [`Policies::effective`] gives the
//! [`EffectivePolicy`] for the client's namespace, the subset and the port.

#![warn(missing_docs)]

mod compile;
mod policy;

#[cfg(test)]
mod tests;

pub use policy::{
    DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MINIMUM_RING_SIZE,
    EffectivePolicy, H2Upgrade, HashAlgorithm, HashKey, LbPolicy, MAX_MAGLEV_TABLE_SIZE,
    MAX_RING_SIZE, OutlierConfig, Policies, PolicyError, PoolLimits, TlsMode, TlsOrigination,
    UNLIMITED,
};
