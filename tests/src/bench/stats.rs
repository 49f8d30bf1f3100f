//! Latency samples and their summary: exact percentiles over every sample
//! (a run keeps at most a few hundred thousand), carried from a load
//! generator to the harness as one JSON line.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Latencies of one run, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    ns: Vec<u64>,
}

// === impl Samples ===

impl Samples {
    /// Room for `n` samples, so recording does not allocate mid-run.
    pub fn with_capacity(n: usize) -> Samples {
        Samples {
            ns: Vec::with_capacity(n),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        self.ns
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Samples) {
        self.ns.extend(other.ns);
    }

    pub fn len(&self) -> usize {
        self.ns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }

    /// Percentiles (nearest rank), mean and max.
    pub fn summary(mut self) -> Latency {
        self.ns.sort_unstable();
        let n = self.ns.len();
        // Nearest rank, in integers: `per_mille` 999 is p99.9.
        let at = |per_mille: usize| -> u64 {
            if n == 0 {
                return 0;
            }
            let rank = (per_mille * n).div_ceil(1000);
            self.ns[rank.clamp(1, n) - 1]
        };
        let mean = if n == 0 {
            0
        } else {
            (self.ns.iter().map(|&v| v as u128).sum::<u128>() / n as u128) as u64
        };
        Latency {
            count: n as u64,
            p50: at(500),
            p90: at(900),
            p99: at(990),
            p999: at(999),
            max: self.ns.last().copied().unwrap_or(0),
            mean,
        }
    }
}

/// A latency distribution's summary, in nanoseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: u64,
}

/// What a load generator's client prints when it is done.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Operations completed in the measured window (round trips, requests,
    /// connections).
    pub count: u64,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// Operations that failed (their latency is not in `latency`).
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Latency of each operation; for the HTTP client, from the time the
    /// request was due (coordinated omission corrected).
    pub latency: Latency,
    /// HTTP client: how late requests left, from their due time (the load
    /// generator's own lag; already included in `latency`).
    pub send_lag: Option<Latency>,
    /// The client's own CPU time during the measured window, in CPUs (CPU
    /// seconds per second, all its threads): near 1 per client thread, the
    /// client, not the path, may be what limits a closed-loop run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu: Option<f64>,
}

// === impl LoadReport ===

impl LoadReport {
    /// Operations per second over the measured window.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.count as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Parses the last JSON line of a client's output.
    pub fn parse(stdout: &str) -> Result<LoadReport> {
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .with_context(|| format!("no JSON report in the load generator's output:\n{stdout}"))?;
        serde_json::from_str(line).with_context(|| format!("parsing the load report {line:?}"))
    }

    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// A distribution-free interval of at least 95% confidence for the
/// median of the population `values` were drawn from: the `k`-th smallest
/// and the `k`-th largest value, `k` the largest rank such that the median
/// lies outside with probability at most 5% (the binomial count of values
/// below it, with p = 1/2). `None` for fewer than 6 values, where even the
/// smallest and the largest leave more than 5% outside.
pub fn median_interval(values: &[f64]) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    // P(X <= j) for X ~ Binomial(n, 1/2), as j grows, until both tails
    // together pass 5%.
    let mut k = 0;
    let mut choose = 1.0f64; // C(n, j)
    let mut below = 0.0f64; // P(X <= j - 1) * 2^n
    let all = 2f64.powi(n as i32);
    for j in 0..n / 2 {
        below += choose;
        if 2.0 * below / all > 0.05 {
            break;
        }
        k = j + 1;
        choose = choose * (n - j) as f64 / (j + 1) as f64;
    }
    match k {
        0 => None,
        k => Some((v[k - 1], v[n - k])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for v in 1..=1000u64 {
            s.record(Duration::from_nanos(v));
        }
        let l = s.summary();
        assert_eq!(l.count, 1000);
        assert_eq!(
            (l.p50, l.p90, l.p99, l.p999, l.max),
            (500, 900, 990, 999, 1000)
        );
        assert_eq!(l.mean, 500);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(Samples::default().summary(), Latency::default());
        let mut s = Samples::default();
        s.record(Duration::from_micros(7));
        assert_eq!(s.summary().p999, 7000);
    }

    #[test]
    fn report_round_trips_through_the_last_json_line() {
        let report = LoadReport {
            count: 3,
            seconds: 1.5,
            errors: 1,
            first_error: Some("reset".into()),
            latency: Latency {
                p50: 10,
                ..Latency::default()
            },
            send_lag: None,
            client_cpu: Some(0.5),
        };
        let out = format!("warming up\n{}\n", report.to_json_line());
        assert_eq!(LoadReport::parse(&out).unwrap(), report);
        assert_eq!(report.rate(), 2.0);
        assert!(LoadReport::parse("nothing").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn median_intervals_leave_at_most_five_percent_outside() {
        let ranks = |n: usize| {
            let v: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            median_interval(&v)
        };
        // Five values leave 2/32 outside even at the extremes.
        assert_eq!(ranks(5), None);
        // 6: 2/64 outside; 9: the 2nd and 8th (2 * 10/512 = 3.9%);
        // 20: the 6th and 15th (2 * P(X <= 5) = 4.1%).
        assert_eq!(ranks(6), Some((1.0, 6.0)));
        assert_eq!(ranks(9), Some((2.0, 8.0)));
        assert_eq!(ranks(20), Some((6.0, 15.0)));
        assert_eq!(
            median_interval(&[3.0, 1.0, 2.0, 6.0, 5.0, 4.0]),
            Some((1.0, 6.0))
        );
    }
}
