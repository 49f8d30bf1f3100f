//! How long each enrolled pod's connections wait in the mesh, the cost an
//! operator can hold against weft: `weft_mesh_wait_seconds{stage}`.
//!
//! | stage | from | to |
//! | --- | --- | --- |
//! | `capture` | the app's SYN (stamped by `weft_sockops`) | the proxy's `accept()` |
//! | `upstream_connect` | L4: the accept; L7: the request handed to its upstream (routed, authorized) | L4: the upstream connected (HBONE stream answered, same-node delivery or passthrough connected); L7: the request's upstream connection ready (kept or new) |
//! | `first_byte` | L4: the upstream connected; L7: that connection ready | L4: the first byte back from the upstream; L7: the response's head (the request's sending included) |
//!
//! `capture` is the mesh's cost alone; the other two include the network
//! and, for `first_byte`, the server's own time, which is what the app
//! would see without weft too (and, at L4 with a protocol where the client
//! speaks first, the time until it does). Mirrored requests are not the
//! client's waits and are not recorded. Each pod's histograms live in its
//! [`PodContext`](crate::proxy::PodContext), so they go with the pod and
//! the series are bounded by the pods on the node.

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::traffic::Histogram;

/// One stage of a connection's (or request's) way through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Capture,
    UpstreamConnect,
    FirstByte,
}

impl Wait {
    pub const ALL: [Wait; 3] = [Wait::Capture, Wait::UpstreamConnect, Wait::FirstByte];

    pub fn name(self) -> &'static str {
        match self {
            Wait::Capture => "capture",
            Wait::UpstreamConnect => "upstream_connect",
            Wait::FirstByte => "first_byte",
        }
    }
}

/// Bucket bounds in seconds: 10 µs to 10 s, about three per decade (a
/// loopback accept takes tens of µs, a cross-node HBONE handshake ms).
pub const BOUNDS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Nanoseconds recorded per second reported.
const SCALE: u64 = 1_000_000_000;

/// One pod's wait histograms, by [`Wait`].
#[derive(Debug)]
pub struct Waits([Histogram; 3]);

impl Default for Waits {
    fn default() -> Self {
        Waits(std::array::from_fn(|_| {
            Histogram::with_bounds(&BOUNDS, SCALE)
        }))
    }
}

impl Waits {
    /// Records a wait of `ns` nanoseconds at `stage`.
    pub fn record(&self, stage: Wait, ns: u64) {
        self.0[stage as usize].observe(ns);
    }

    /// Records the wait from `since` to now (both [`crate::sys::monotonic_ns`]),
    /// and returns now. A `since` after now (a clock the agent does not
    /// share) is not recorded.
    pub fn record_since(&self, stage: Wait, since: u64) -> u64 {
        let now = crate::sys::monotonic_ns();
        if let Some(waited) = now.checked_sub(since)
            && since != 0
        {
            self.record(stage, waited);
        }
        now
    }

    /// The count of `stage` so far (tests).
    pub fn count(&self, stage: Wait) -> u64 {
        self.0[stage as usize].count()
    }
}

/// A pod's labels on its wait series.
#[derive(Debug, Clone)]
pub struct PodLabels {
    pub pod: String,
    pub namespace: String,
    pub workload: String,
}

/// The wait families of the pods on the node, encoded at scrape time.
pub struct WaitsCollector(pub Vec<(PodLabels, std::sync::Arc<crate::proxy::PodContext>)>);

impl std::fmt::Debug for WaitsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WaitsCollector")
            .field(&self.0.len())
            .finish()
    }
}

impl Collector for WaitsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "weft_mesh_wait_seconds",
            "How long an enrolled pod's connections waited in the mesh, by stage: capture (the app's SYN to the proxy's accept), upstream_connect (to the upstream connected; per request at L7), first_byte (to the first byte back)",
            None,
            MetricType::Histogram,
        )?;
        for (labels, pod) in &self.0 {
            for stage in Wait::ALL {
                let set = [
                    ("pod", labels.pod.as_str()),
                    ("namespace", labels.namespace.as_str()),
                    ("workload", labels.workload.as_str()),
                    ("stage", stage.name()),
                ];
                pod.waits.0[stage as usize].encode(family.encode_family(&set)?)?;
            }
        }
        Ok(())
    }
}
