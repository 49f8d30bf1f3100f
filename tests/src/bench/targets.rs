//! The first targets for weft (to be raised), checked against a
//! run's rows. Reported, never asserted: the benchmark fails only when a
//! scenario cannot run.

use serde::Serialize;

use super::report::Row;

/// How a target reads a row.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// `weft / direct >= x`.
    RatioAtLeast(f64),
    /// `weft - direct <= x`.
    AddedAtMost(f64),
    /// `weft <= x`.
    AtMost(f64),
    /// `weft_l7 / weft >= x` (weft L7 against weft L4).
    L7RatioAtLeast(f64),
    /// `weft_l7 - weft <= x` (weft L7 against weft L4).
    L7AddedAtMost(f64),
    /// `weft_l7_authz - weft_l7 <= x` (L7 with authorization against the
    /// same L7 path without).
    AuthzAddedAtMost(f64),
    /// `metrics_on_off >= x` (weft with the telemetry under test on
    /// against the same path with it off).
    MetricsRatioAtLeast(f64),
    /// `weft / ztunnel >= x` (with `--peer ztunnel=PATH`).
    ZtunnelRatioAtLeast(f64),
    /// `weft / ztunnel <= x` (with `--peer ztunnel=PATH`).
    ZtunnelRatioAtMost(f64),
    /// `(weft - direct) / (ztunnel - direct) <= x`: what weft adds to
    /// the direct path against what ztunnel adds (with `--peer`).
    ZtunnelAddedRatioAtMost(f64),
}

struct Target {
    what: &'static str,
    /// The row's scenario (a prefix, so that `footprint/idle-` matches
    /// whatever pod count) and metric.
    scenario: &'static str,
    metric: &'static str,
    goal: Goal,
}

const TARGETS: &[Target] = &[
    Target {
        what: "cross-node single-stream throughput >= 45% of direct",
        scenario: "throughput/cross-node/1-stream",
        metric: "throughput",
        goal: Goal::RatioAtLeast(0.45),
    },
    Target {
        what: "same-node single-stream throughput >= 60% of direct",
        scenario: "throughput/same-node/1-stream",
        metric: "throughput",
        goal: Goal::RatioAtLeast(0.60),
    },
    Target {
        what: "added p50 latency <= 25 µs (cross-node ping-pong)",
        scenario: "latency/tcp-pingpong/cross-node",
        metric: "p50",
        goal: Goal::AddedAtMost(25.0),
    },
    Target {
        what: "added p99 latency <= 80 µs (cross-node ping-pong)",
        scenario: "latency/tcp-pingpong/cross-node",
        metric: "p99",
        goal: Goal::AddedAtMost(80.0),
    },
    Target {
        what: "new connections per second >= 35% of direct (cross-node)",
        scenario: "connections/cross-node",
        metric: "connections",
        goal: Goal::RatioAtLeast(0.35),
    },
    Target {
        what: "agent idle RSS <= 20 MiB (10 enrolled pods)",
        scenario: "footprint/idle-",
        metric: "agent RSS, node-1",
        goal: Goal::AtMost(20.0),
    },
    Target {
        what: "HTTP L7 max requests/s >= 70% of weft L4 (cross-node)",
        scenario: "http/max-rps/cross-node",
        metric: "requests",
        goal: Goal::L7RatioAtLeast(0.70),
    },
    Target {
        what: "HTTP L7 max requests/s >= 70% of weft L4 (same-node)",
        scenario: "http/max-rps/same-node",
        metric: "requests",
        goal: Goal::L7RatioAtLeast(0.70),
    },
    Target {
        what: "HTTP L7 p50 <= L4 p50 + 30 µs at 2,000/s (cross-node)",
        scenario: "http/latency-2000rps/cross-node",
        metric: "p50",
        goal: Goal::L7AddedAtMost(30.0),
    },
    Target {
        what: "HTTP L7 p99 <= L4 p99 + 100 µs at 2,000/s (cross-node)",
        scenario: "http/latency-2000rps/cross-node",
        metric: "p99",
        goal: Goal::L7AddedAtMost(100.0),
    },
    Target {
        what: "HTTP L7 p50 <= L4 p50 + 30 µs at 2,000/s (same-node)",
        scenario: "http/latency-2000rps/same-node",
        metric: "p50",
        goal: Goal::L7AddedAtMost(30.0),
    },
    Target {
        what: "HTTP L7 p99 <= L4 p99 + 100 µs at 2,000/s (same-node)",
        scenario: "http/latency-2000rps/same-node",
        metric: "p99",
        goal: Goal::L7AddedAtMost(100.0),
    },
    Target {
        what: "L7 authz (JWT + 10 HTTP rules) adds p50 <= 10 µs (cross-node)",
        scenario: "http/authz-latency/cross-node",
        metric: "p50",
        goal: Goal::AuthzAddedAtMost(10.0),
    },
    Target {
        what: "new connections/s, metrics on >= 95% of off (cross-node)",
        scenario: "metrics/connection-rate/cross-node",
        metric: "connections",
        goal: Goal::MetricsRatioAtLeast(0.95),
    },
    Target {
        what: "HTTP L7 max requests/s, metrics on >= 95% of off (cross-node)",
        scenario: "metrics/http-l7-max-rps/cross-node",
        metric: "requests",
        goal: Goal::MetricsRatioAtLeast(0.95),
    },
    Target {
        what: "new connections/s, TCP health + mesh waits on >= 97% of off",
        scenario: "kernel-telemetry/connection-rate/cross-node",
        metric: "connections",
        goal: Goal::MetricsRatioAtLeast(0.97),
    },
    Target {
        what: "1-stream throughput, TCP health + mesh waits on >= 97% of off",
        scenario: "kernel-telemetry/throughput/cross-node",
        metric: "throughput",
        goal: Goal::MetricsRatioAtLeast(0.97),
    },
    Target {
        what: "new connections/s >= 2x ztunnel's (cross-node)",
        scenario: "connections/cross-node",
        metric: "connections",
        goal: Goal::ZtunnelRatioAtLeast(2.0),
    },
    Target {
        what: "added p50 ping-pong latency <= 0.5x ztunnel's (cross-node)",
        scenario: "latency/tcp-pingpong/cross-node",
        metric: "p50",
        goal: Goal::ZtunnelAddedRatioAtMost(0.5),
    },
    Target {
        what: "added p99 ping-pong latency <= 0.7x ztunnel's (cross-node)",
        scenario: "latency/tcp-pingpong/cross-node",
        metric: "p99",
        goal: Goal::ZtunnelAddedRatioAtMost(0.7),
    },
    Target {
        what: "single-stream throughput >= 1.5x ztunnel's (cross-node)",
        scenario: "throughput/cross-node/1-stream",
        metric: "throughput",
        goal: Goal::ZtunnelRatioAtLeast(1.5),
    },
    Target {
        what: "8-stream throughput >= 2x ztunnel's (cross-node)",
        scenario: "throughput/cross-node/8-streams",
        metric: "throughput",
        goal: Goal::ZtunnelRatioAtLeast(2.0),
    },
    Target {
        what: "added HTTP p99 at 2,000/s <= 0.5x ztunnel's (cross-node)",
        scenario: "latency/http-2000rps/cross-node",
        metric: "p99",
        goal: Goal::ZtunnelAddedRatioAtMost(0.5),
    },
    Target {
        what: "idle RSS <= ztunnel's (the proxy of one pod, node-2)",
        scenario: "footprint/idle-",
        metric: "agent RSS, node-2",
        goal: Goal::ZtunnelRatioAtMost(1.0),
    },
    Target {
        what: "profiling a pod at 99 Hz costs < 1% of one CPU",
        scenario: "profiling/pod-99hz",
        metric: "profile's cost",
        goal: Goal::AtMost(1.0),
    },
];

/// One target's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub target: &'static str,
    /// What was measured, in the target's terms (a ratio, added µs, the
    /// row's unit).
    pub measured: f64,
    /// `measured` as the text shows it.
    pub shown: String,
    pub verdict: Verdict,
}

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// The measured value meets the target or misses it, but the rounds'
    /// 95% confidence interval lies on both sides of it: the run cannot
    /// tell.
    WithinNoise,
}

/// The targets whose rows the run has.
pub fn evaluate(rows: &[Row]) -> Vec<Outcome> {
    TARGETS
        .iter()
        .filter_map(|t| {
            let row = rows
                .iter()
                .find(|r| r.scenario.starts_with(t.scenario) && r.metric == t.metric)?;
            let mut interval = None;
            // The rounds' interval holds the target: the run cannot tell.
            let mut straddled = false;
            let (measured, met) = match t.goal {
                Goal::RatioAtLeast(x) => {
                    let r = row.ratio?;
                    (r, r >= x)
                }
                Goal::AddedAtMost(x) => {
                    let added = row.weft? - row.direct?;
                    (added, added <= x)
                }
                Goal::AtMost(x) => {
                    let w = row.weft?;
                    (w, w <= x)
                }
                Goal::L7RatioAtLeast(x) => {
                    let r = row.l7_l4?;
                    (r, r >= x)
                }
                Goal::L7AddedAtMost(x) => {
                    let added = row.l7_minus_l4?;
                    (added, added <= x)
                }
                Goal::AuthzAddedAtMost(x) => {
                    let added = row.authz_minus_l7?;
                    (added, added <= x)
                }
                Goal::MetricsRatioAtLeast(x) => {
                    let r = row.metrics_on_off?;
                    interval = row.metrics_on_off_interval;
                    straddled = interval.is_some_and(|(lo, hi)| lo < x && x <= hi);
                    (r, r >= x)
                }
                Goal::ZtunnelRatioAtLeast(x) => {
                    let r = row.weft_ztunnel?;
                    (r, r >= x)
                }
                Goal::ZtunnelRatioAtMost(x) => {
                    let r = row.weft_ztunnel?;
                    (r, r <= x)
                }
                Goal::ZtunnelAddedRatioAtMost(x) => {
                    let direct = row.direct?;
                    let (weft, ztunnel) = (row.weft? - direct, row.ztunnel? - direct);
                    // ztunnel adding nothing: weft must add nothing either.
                    let r = match (weft <= 0.0, ztunnel <= 0.0) {
                        (true, _) => 0.0,
                        (false, true) => f64::INFINITY,
                        (false, false) => weft / ztunnel,
                    };
                    (r, r <= x)
                }
            };
            let shown = match t.goal {
                Goal::RatioAtLeast(_) | Goal::L7RatioAtLeast(_) => {
                    format!("{:.0}%", measured * 100.0)
                }
                Goal::MetricsRatioAtLeast(_) => match interval {
                    Some((lo, hi)) => format!(
                        "{:.1}% (95% interval {:.1}-{:.1}%)",
                        measured * 100.0,
                        lo * 100.0,
                        hi * 100.0
                    ),
                    None => format!("{:.1}%", measured * 100.0),
                },
                Goal::ZtunnelRatioAtLeast(_)
                | Goal::ZtunnelRatioAtMost(_)
                | Goal::ZtunnelAddedRatioAtMost(_) => {
                    format!("{measured:.2}x")
                }
                Goal::AddedAtMost(_) | Goal::L7AddedAtMost(_) | Goal::AuthzAddedAtMost(_) => {
                    format!("{measured:+.1} µs")
                }
                Goal::AtMost(_) => format!("{measured:.2} {}", row.unit),
            };
            let verdict = match (straddled, met) {
                (true, _) => Verdict::WithinNoise,
                (false, true) => Verdict::Met,
                (false, false) => Verdict::Missed,
            };
            Some(Outcome {
                target: t.what,
                measured,
                shown,
                verdict,
            })
        })
        .collect()
}

/// The outcomes as text lines.
pub fn text(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| {
            format!(
                "  [{}] {:<62} measured {}\n",
                match o.verdict {
                    Verdict::Met => "met",
                    Verdict::Missed => "MISSED",
                    Verdict::WithinNoise => "noise",
                },
                o.target,
                o.shown
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Row, Sample, higher, lower};
    use crate::bench::testbed::Variant;

    #[test]
    fn evaluates_ratios_additions_and_limits() {
        let rows = vec![
            Row::new(
                "throughput/cross-node/1-stream",
                higher("throughput", "Gbit/s"),
                vec![20.0],
                vec![7.5],
            ),
            Row::new(
                "latency/tcp-pingpong/cross-node",
                lower("p50", "µs"),
                vec![12.0],
                vec![30.0],
            ),
            Row::new(
                "footprint/idle-10-pods",
                lower("agent RSS, node-1", "MiB"),
                vec![],
                vec![17.0],
            ),
        ];
        let out = evaluate(&rows);
        assert_eq!(out.len(), 3);
        let l7 = vec![
            Row::new(
                "http/max-rps/cross-node",
                higher("requests", "1/s"),
                vec![40_000.0],
                vec![20_000.0],
            )
            .with_l7(vec![13_000.0]),
            Row::new(
                "http/latency-2000rps/cross-node",
                lower("p50", "µs"),
                vec![11.0],
                vec![100.0],
            )
            .with_l7(vec![125.0]),
        ];
        let l7 = evaluate(&l7);
        assert_eq!(l7.len(), 2);
        assert!(l7[0].verdict == Verdict::Missed && (l7[0].measured - 0.65).abs() < 1e-9);
        assert!(l7[1].verdict == Verdict::Met && l7[1].measured == 25.0);
        let authz = Row::collect(
            "http/authz-latency/cross-node",
            &[
                (Variant::WeftL7, (lower("p50", "µs"), 120.0)),
                (Variant::WeftL7Authz, (lower("p50", "µs"), 134.0)),
            ],
        );
        let authz = evaluate(&authz);
        assert_eq!(authz.len(), 1);
        assert!(authz[0].verdict == Verdict::Missed && authz[0].measured == 14.0);
        assert!(text(&authz).contains("+14.0 µs"));
        let metrics = Row::collect(
            "metrics/http-l7-max-rps/cross-node",
            &[
                (Variant::WeftL7, (higher("requests", "1/s"), 19_600.0)),
                (
                    Variant::WeftL7MetricsOff,
                    (higher("requests", "1/s"), 20_000.0),
                ),
            ],
        );
        let metrics = evaluate(&metrics);
        assert_eq!(metrics.len(), 1);
        assert!(metrics[0].verdict == Verdict::Met && (metrics[0].measured - 0.98).abs() < 1e-9);
        assert!(text(&metrics).contains("measured 98.0%"));
        // Six pairs of rounds: on / off 0.93 to 0.98 (median 0.955): the
        // interval holds 0.95, so the run cannot tell; 0.96 to 0.98 meets
        // it outright.
        let pairs = |ratios: [f64; 6]| {
            let measured: Vec<(Variant, Sample)> = ratios
                .iter()
                .flat_map(|r| {
                    [
                        (Variant::WeftL7, (higher("requests", "1/s"), r * 1000.0)),
                        (
                            Variant::WeftL7MetricsOff,
                            (higher("requests", "1/s"), 1000.0),
                        ),
                    ]
                })
                .collect();
            evaluate(&Row::collect(
                "metrics/http-l7-max-rps/cross-node",
                &measured,
            ))
        };
        let noisy = pairs([0.93, 0.94, 0.95, 0.96, 0.97, 0.98]);
        assert_eq!(noisy[0].verdict, Verdict::WithinNoise);
        assert!(
            text(&noisy).contains("[noise]") && text(&noisy).contains("95% interval 93.0-98.0%"),
            "{}",
            text(&noisy)
        );
        let clear = pairs([0.96, 0.96, 0.97, 0.97, 0.98, 0.98]);
        assert_eq!(clear[0].verdict, Verdict::Met);
        assert!(
            text(&clear).contains("measured 97.0% (95% interval 96.0-98.0%)"),
            "{}",
            text(&clear)
        );
        assert!(out[0].verdict == Verdict::Missed && (out[0].measured - 0.375).abs() < 1e-9);
        assert!(out[1].verdict == Verdict::Met && out[1].measured == 18.0);
        assert_eq!(out[2].verdict, Verdict::Met);
        assert!(text(&out).contains("[MISSED]"));
        let against = |scenario, metric, values: [f64; 3]| {
            Row::collect(
                scenario,
                &[
                    (Variant::Direct, (metric, values[0])),
                    (Variant::Weft, (metric, values[1])),
                    (Variant::Ztunnel, (metric, values[2])),
                ],
            )
        };
        let mut peer = against(
            "connections/cross-node",
            higher("connections", "1/s"),
            [10_000.0, 4_100.0, 2_000.0],
        );
        peer.extend(against(
            "latency/tcp-pingpong/cross-node",
            lower("p50", "µs"),
            [20.0, 60.0, 100.0],
        ));
        let peer = evaluate(&peer);
        let zt: Vec<&Outcome> = peer
            .iter()
            .filter(|o| o.target.contains("ztunnel"))
            .collect();
        assert_eq!(zt.len(), 2, "{peer:?}");
        assert!(zt[0].verdict == Verdict::Met && (zt[0].measured - 2.05).abs() < 1e-9);
        // 40 µs added against ztunnel's 80.
        assert!(zt[1].verdict == Verdict::Met && (zt[1].measured - 0.5).abs() < 1e-9);
        assert!(text(&peer).contains("measured 0.50x"));
        // The scenario's own name, and ztunnel adding nothing.
        let http = evaluate(&against(
            "latency/http-2000rps/cross-node",
            lower("p99", "µs"),
            [50.0, 80.0, 40.0],
        ));
        assert_eq!(http.len(), 1, "{http:?}");
        assert!(http[0].verdict == Verdict::Missed && http[0].measured.is_infinite());
    }
}
