//! `weftctl top`: per-workload TCP health, live, like `top`. Each frame
//! reads the agents' `/tcp` (the kernel's counters per reporter, source
//! workload and destination workload, see `weft_agent::tcp_health`) and
//! shows what changed since the previous read: connections, retransmitted
//! segments, RTOs and zero windows per second, and the mean smoothed RTT
//! and setup time of the samples taken in between.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use serde::Deserialize;

use crate::table::Table;

/// What a frame is sorted by (descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Retransmitted segments per second.
    Retransmits,
    /// Mean smoothed RTT.
    Rtt,
    /// New connections per second.
    Connections,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Workload {
    workload: String,
    namespace: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Micros {
    count: u64,
    sum_us: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Totals {
    established: u64,
    retransmits: u64,
    rtos: u64,
    zero_windows: u64,
    rtt: Micros,
    setup: Micros,
}

#[derive(Debug, Clone, Deserialize)]
struct Entry {
    reporter: String,
    source: Workload,
    destination: Workload,
    totals: Totals,
}

type Key = (String, String, Workload, Workload);

/// One read of every agent: (agent, reporter, source, destination) →
/// totals.
#[derive(Debug, Default)]
pub struct Snapshot(BTreeMap<Key, Totals>);

impl Snapshot {
    /// Adds one agent's `/tcp` answer.
    pub fn add(&mut self, agent: &str, body: &[u8]) -> anyhow::Result<()> {
        let entries: Vec<Entry> = serde_json::from_slice(body).with_context(|| {
            format!("the agent at {agent} sent /tcp that is not weft's TCP health JSON")
        })?;
        for e in entries {
            self.0.insert(
                (agent.to_string(), e.reporter, e.source, e.destination),
                e.totals,
            );
        }
        Ok(())
    }
}

fn rate(now: u64, before: u64, elapsed: Duration) -> f64 {
    now.saturating_sub(before) as f64 / elapsed.as_secs_f64().max(1e-3)
}

/// The mean of the samples taken between the two reads, in ms; `None`
/// without any.
fn mean_ms(now: &Micros, before: &Micros) -> Option<f64> {
    let count = now.count.saturating_sub(before.count);
    (count > 0).then(|| now.sum_us.saturating_sub(before.sum_us) as f64 / count as f64 / 1e3)
}

struct Row {
    cells: Vec<String>,
    retransmits: f64,
    rtt: f64,
    connections: f64,
}

/// One frame: the rows of `now` (in `namespace`, as source or
/// destination, if given), rated against `before`, sorted by `sort`.
pub fn frame(
    before: &Snapshot,
    now: &Snapshot,
    elapsed: Duration,
    namespace: Option<&str>,
    sort: SortBy,
) -> String {
    let several_agents = {
        let mut agents = now.0.keys().map(|k| &k.0);
        let first = agents.next();
        agents.any(|a| Some(a) != first)
    };
    let mut rows = Vec::new();
    for (key, totals) in &now.0 {
        let (agent, reporter, source, destination) = key;
        if namespace.is_some_and(|ns| source.namespace != ns && destination.namespace != ns) {
            continue;
        }
        let zero = Totals::default();
        let before = before.0.get(key).unwrap_or(&zero);
        let retransmits = rate(totals.retransmits, before.retransmits, elapsed);
        let connections = rate(totals.established, before.established, elapsed);
        let rtt = mean_ms(&totals.rtt, &before.rtt);
        let setup = mean_ms(&totals.setup, &before.setup);
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        let mut cells = vec![
            format!("{}/{}", source.namespace, source.workload),
            format!("{}/{}", destination.namespace, destination.workload),
            reporter.clone(),
            format!("{connections:.1}"),
            format!("{retransmits:.1}"),
            format!("{:.1}", rate(totals.rtos, before.rtos, elapsed)),
            format!(
                "{:.1}",
                rate(totals.zero_windows, before.zero_windows, elapsed)
            ),
            ms(rtt),
            ms(setup),
            totals.retransmits.to_string(),
        ];
        if several_agents {
            cells.push(agent.clone());
        }
        rows.push(Row {
            cells,
            retransmits,
            rtt: rtt.unwrap_or(0.0),
            connections,
        });
    }
    let by = |r: &Row| match sort {
        SortBy::Retransmits => r.retransmits,
        SortBy::Rtt => r.rtt,
        SortBy::Connections => r.connections,
    };
    rows.sort_by(|a, b| by(b).total_cmp(&by(a)).then_with(|| a.cells.cmp(&b.cells)));
    let mut headers = vec![
        "SOURCE",
        "DESTINATION",
        "REPORTER",
        "CONN/S",
        "RETRANS/S",
        "RTO/S",
        "ZEROWIN/S",
        "RTT(MS)",
        "SETUP(MS)",
        "RETRANS",
    ];
    if several_agents {
        headers.push("AGENT");
    }
    let mut table = Table::new(headers);
    for row in rows {
        table.row(row.cells);
    }
    if table.is_empty() {
        return match namespace {
            Some(ns) => format!("no TCP connections of workloads in namespace {ns} seen yet\n"),
            None => "no TCP connections of enrolled pods seen yet\n".to_string(),
        };
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(retransmits: u64, established: u64, rtt: (u64, u64)) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([
            {
                "reporter": "source",
                "source": {"workload": "client", "namespace": "shop"},
                "destination": {"workload": "server", "namespace": "shop"},
                "totals": {
                    "established": established, "closed": 0, "retransmits": retransmits,
                    "rtos": 0, "zero_windows": 0, "bytes_sent": 0, "bytes_received": 0,
                    "rtt": {"count": rtt.0, "sum_us": rtt.1, "buckets": []},
                    "setup": {"count": 0, "sum_us": 0, "buckets": []}
                }
            },
            {
                "reporter": "source",
                "source": {"workload": "quiet", "namespace": "other"},
                "destination": {"workload": "server", "namespace": "shop"},
                "totals": {
                    "established": 1, "closed": 0, "retransmits": 0,
                    "rtos": 0, "zero_windows": 0, "bytes_sent": 0, "bytes_received": 0,
                    "rtt": {"count": 0, "sum_us": 0, "buckets": []},
                    "setup": {"count": 0, "sum_us": 0, "buckets": []}
                }
            }
        ]))
        .unwrap()
    }

    #[test]
    fn rates_are_what_changed_between_two_reads_sorted_by_retransmits() {
        let mut before = Snapshot::default();
        before.add("a", &body(10, 4, (10, 1_000))).unwrap();
        let mut now = Snapshot::default();
        now.add("a", &body(30, 6, (20, 21_000))).unwrap();
        let text = frame(
            &before,
            &now,
            Duration::from_secs(2),
            None,
            SortBy::Retransmits,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SOURCE"), "{text}");
        // 20 more retransmits in 2 s; 10 RTT samples of 2 ms on average.
        assert!(lines[1].starts_with("shop/client"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells[3..],
            ["1.0", "10.0", "0.0", "0.0", "2.00", "-", "30"],
            "{text}"
        );
        assert!(lines[2].starts_with("other/quiet"), "{text}");
        let only = frame(
            &before,
            &now,
            Duration::from_secs(2),
            Some("other"),
            SortBy::Rtt,
        );
        assert_eq!(only.lines().count(), 2, "{only}");
    }

    #[test]
    fn nothing_seen_says_so() {
        let text = frame(
            &Snapshot::default(),
            &Snapshot::default(),
            Duration::from_secs(1),
            Some("shop"),
            SortBy::Rtt,
        );
        assert_eq!(
            text,
            "no TCP connections of workloads in namespace shop seen yet\n"
        );
    }
}
