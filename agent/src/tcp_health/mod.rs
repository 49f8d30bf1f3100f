//! Per-workload TCP health, from the kernel: for the connections that
//! enrolled pods have on the wire (the proxy's HBONE, passthrough and
//! accepted plaintext sockets in each pod's namespace), the smoothed RTT,
//! retransmitted segments, retransmission timeouts, zero windows received,
//! connection setup time and bytes, per (reporter, source workload,
//! destination workload). Always on.
//!
//! * [`probe`]: the `sockops` program on the agent's own cgroup and its
//!   map (kernel side, one entry per pod and remote address).
//! * [`table`]: from those entries to per-workload totals that only grow.
//!
//! Served as `weft_tcp_*` on `/stats/prometheus` and as JSON on the admin
//! API's `/tcp` (what `weftctl top` shows). The map is read when one of
//! them is asked for, never on the data path.

pub mod probe;
pub mod table;

use std::sync::Mutex;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};

pub use probe::{Probe, ProbeError};
pub use table::{Pair, Resolve, Table, Totals, WorkloadName};

/// The probe (when the kernel and the cgroup layout allow it) and the
/// totals.
#[derive(Debug)]
pub struct TcpHealth {
    probe: Option<Probe>,
    table: Mutex<Table>,
}

impl TcpHealth {
    /// Attaches the probe; where it cannot be, says why once and reports
    /// nothing (the rest of the agent runs).
    pub fn start(
        bpffs_dir: &std::path::Path,
        agent_cgroup: Option<&std::path::Path>,
        pods_cgroup: &std::path::Path,
    ) -> TcpHealth {
        let probe = match Probe::attach(bpffs_dir, agent_cgroup, pods_cgroup) {
            Ok(probe) => Some(probe),
            Err(err) => {
                tracing::warn!(error = %err, "per-workload TCP health is off (weft_tcp_* are not reported); the rest of the agent runs");
                None
            }
        };
        TcpHealth {
            probe,
            table: Mutex::new(Table::default()),
        }
    }

    /// Whether the probe is attached.
    pub fn active(&self) -> bool {
        self.probe.is_some()
    }

    /// The program's run statistics (none when it is not attached).
    pub fn program_stats(&self) -> Vec<crate::redirect::ProgramStats> {
        self.probe
            .as_ref()
            .map(Probe::program_stats)
            .unwrap_or_default()
    }

    /// Reads the kernel's counters into the totals and returns them.
    /// Blocking (a few `bpf()` calls per entry): call it off the runtime's
    /// worker threads.
    pub fn refresh(&self, resolve: &impl Resolve) -> Vec<(Pair, Totals)> {
        let Some(probe) = &self.probe else {
            return Vec::new();
        };
        let read = probe.read();
        let mut table = self.table.lock().expect("TCP health table lock");
        table.update(read, resolve);
        table
            .totals()
            .map(|(pair, totals)| (pair.clone(), totals.clone()))
            .collect()
    }
}

/// The totals as JSON (`/tcp`): one object per pair.
pub fn to_json(totals: &[(Pair, Totals)]) -> serde_json::Value {
    serde_json::Value::Array(
        totals
            .iter()
            .map(|(pair, totals)| {
                serde_json::json!({
                    "reporter": pair.reporter,
                    "source": pair.source,
                    "destination": pair.destination,
                    "totals": totals,
                })
            })
            .collect(),
    )
}

/// A family: its name, its help and what it reads of a pair's totals.
type Family<T> = (&'static str, &'static str, fn(&Totals) -> T);
type HistogramFamily = (&'static str, &'static str, fn(&Totals) -> &table::Micros);

/// The `weft_tcp_*` families, encoded at scrape time from a refresh.
#[derive(Debug)]
pub struct TcpCollector(pub Vec<(Pair, Totals)>);

impl Collector for TcpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels = |pair: &Pair| {
            [
                ("reporter", pair.reporter.to_string()),
                ("source_workload", pair.source.workload.clone()),
                ("source_workload_namespace", pair.source.namespace.clone()),
                ("destination_workload", pair.destination.workload.clone()),
                (
                    "destination_workload_namespace",
                    pair.destination.namespace.clone(),
                ),
            ]
        };
        let counters: [Family<u64>; 7] = [
            (
                "weft_tcp_connections_established",
                "Connections of enrolled pods established on the wire, as the kernel counts them",
                |t| t.established,
            ),
            (
                "weft_tcp_connections_closed",
                "Connections of enrolled pods closed",
                |t| t.closed,
            ),
            (
                "weft_tcp_retransmitted_segments",
                "TCP segments retransmitted",
                |t| t.retransmits,
            ),
            (
                "weft_tcp_retransmission_timeouts",
                "TCP retransmission timeouts (RTO fired)",
                |t| t.rtos,
            ),
            (
                "weft_tcp_zero_window_segments_received",
                "Segments received from the peer advertising a zero receive window",
                |t| t.zero_windows,
            ),
            (
                "weft_tcp_sent_bytes",
                "Bytes sent and acknowledged, counted when each connection closes",
                |t| t.bytes_sent,
            ),
            (
                "weft_tcp_received_bytes",
                "Bytes received, counted when each connection closes",
                |t| t.bytes_received,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (pair, totals) in &self.0 {
                ConstCounter::new(value(totals)).encode(family.encode_family(&labels(pair))?)?;
            }
        }
        let bounds = table::bucket_bounds_seconds();
        let histograms: [HistogramFamily; 2] = [
            (
                "weft_tcp_smoothed_rtt_seconds",
                "The kernel's smoothed round-trip time after each RTT sample",
                |t| &t.rtt,
            ),
            (
                "weft_tcp_connect_seconds",
                "connect() to established, for the connections the pod opened",
                |t| &t.setup,
            ),
        ];
        for (name, help, value) in histograms {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (pair, totals) in &self.0 {
                let micros = value(totals);
                if micros.count == 0 {
                    continue;
                }
                let buckets: Vec<(f64, u64)> = bounds
                    .iter()
                    .copied()
                    .zip(micros.buckets.iter().copied())
                    .collect();
                family
                    .encode_family(&labels(pair))?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        micros.sum_us as f64 / 1e6,
                        micros.count,
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}
