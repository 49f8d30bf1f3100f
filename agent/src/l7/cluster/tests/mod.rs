//! Tests of the cluster module through its public API.

mod compile;
mod policy;
mod proto;

use std::{sync::Arc, time::Duration};

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
