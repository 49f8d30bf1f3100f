//! The results: rows of (scenario, metric, direct, weft, ratio), printed as
//! a table and written as JSON with the machine and the git revision, so
//! that runs can be compared across revisions. Rows of the HTTP and gRPC
//! scenarios measure three paths: direct, weft L4 (in `weft`) and weft L7
//! (`weft_l7`), with the ratios `l7/l4` and `l7/direct` and the difference
//! `l7 - l4`; they get a table of their own. Rows of the L7 authorization
//! scenario measure the L7 path without a policy (`weft_l7`) and with
//! one (`weft_l7_authz`), and the difference `authz - l7`: the cost
//! authorization adds; a third table. Rows of the telemetry scenarios
//! (`metrics/*`: traffic metrics and access log; `kernel-telemetry/*`: TCP
//! health and mesh waits) measure one weft path (L4 in `weft` or L7 in
//! `weft_l7`) with that telemetry on and off (`weft_metrics_off`), and
//! `metrics_on_off`: a fourth table.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use super::stats::{median, median_interval};
use super::testbed::Variant;

mod table;
pub use table::{num, table};

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// What a number measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
}

pub const fn higher(name: &'static str, unit: &'static str) -> Metric {
    Metric {
        name,
        unit,
        better: Better::Higher,
    }
}

pub const fn lower(name: &'static str, unit: &'static str) -> Metric {
    Metric {
        name,
        unit,
        better: Better::Lower,
    }
}

/// One measured value of one run.
pub type Sample = (Metric, f64);

/// One line of the report: a metric of a scenario, both variants.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: &'static str,
    pub unit: &'static str,
    /// Median over rounds; `None` where the variant has no such value
    /// (e.g. agent memory without the mesh).
    pub direct: Option<f64>,
    pub weft: Option<f64>,
    /// `weft / direct`.
    pub ratio: Option<f64>,
    /// HTTP and gRPC scenarios: through weft to a port declared HTTP or
    /// gRPC (L7); `weft` is then the same traffic to a port declared TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weft_l7: Option<f64>,
    /// `weft_l7 / weft`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7_l4: Option<f64>,
    /// `weft_l7 / direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7_direct: Option<f64>,
    /// `weft_l7 - weft`, in the row's unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7_minus_l4: Option<f64>,
    /// The L7 authorization scenario: the same L7 path as `weft_l7` to a
    /// workload with a RequestAuthentication and an AuthorizationPolicy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weft_l7_authz: Option<f64>,
    /// `weft_l7_authz - weft_l7`, in the row's unit: what authorization
    /// adds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_minus_l7: Option<f64>,
    /// With `--peer ztunnel=PATH`, the L4 scenarios: the same traffic
    /// through Istio's ztunnel instead of weft.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ztunnel: Option<f64>,
    /// `ztunnel / direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ztunnel_direct: Option<f64>,
    /// `weft / ztunnel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weft_ztunnel: Option<f64>,
    /// The metrics scenarios: the same path as `weft` (L4) or `weft_l7`
    /// (L7), the agents' traffic metrics off; that field is the path with
    /// them on (the agents' default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weft_metrics_off: Option<f64>,
    /// Metrics on / metrics off (`weft` or `weft_l7` / `weft_metrics_off`):
    /// the median of each round's own ratio (the two measured back to
    /// back, so that the machine's drift between rounds cancels), or the
    /// ratio of the medians where the rounds do not pair up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_on_off: Option<f64>,
    /// Each round's on / off, in the order measured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics_on_off_rounds: Vec<f64>,
    /// A 95% confidence interval for the median round's on / off
    /// ([`median_interval`]; from 6 rounds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_on_off_interval: Option<(f64, f64)>,
    pub better: Better,
    /// Every round's value, in the order measured.
    pub direct_rounds: Vec<f64>,
    pub weft_rounds: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weft_l7_rounds: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weft_l7_authz_rounds: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weft_metrics_off_rounds: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ztunnel_rounds: Vec<f64>,
    /// The largest share of the machine's CPU (0 to 1) that work outside
    /// the benchmark took during the measurements kept.
    pub other_load: Option<f64>,
}

impl Row {
    /// A row from each round's values.
    pub fn new(scenario: &str, metric: Metric, direct: Vec<f64>, weft: Vec<f64>) -> Row {
        let (d, w) = (median(&direct), median(&weft));
        Row {
            scenario: scenario.to_string(),
            metric: metric.name,
            unit: metric.unit,
            ratio: ratio(w, d),
            direct: d,
            weft: w,
            weft_l7: None,
            l7_l4: None,
            l7_direct: None,
            l7_minus_l4: None,
            weft_l7_authz: None,
            authz_minus_l7: None,
            ztunnel: None,
            ztunnel_direct: None,
            weft_ztunnel: None,
            weft_metrics_off: None,
            metrics_on_off: None,
            metrics_on_off_rounds: Vec::new(),
            metrics_on_off_interval: None,
            better: metric.better,
            direct_rounds: direct,
            weft_rounds: weft,
            weft_l7_rounds: Vec::new(),
            weft_l7_authz_rounds: Vec::new(),
            weft_metrics_off_rounds: Vec::new(),
            ztunnel_rounds: Vec::new(),
            other_load: None,
        }
    }

    /// The row with the L7 path's rounds too (`weft` being the L4 path).
    pub fn with_l7(mut self, l7: Vec<f64>) -> Row {
        let m = median(&l7);
        self.weft_l7 = m;
        self.l7_l4 = ratio(m, self.weft);
        self.l7_direct = ratio(m, self.direct);
        self.l7_minus_l4 = m.zip(self.weft).map(|(l7, l4)| l7 - l4);
        self.weft_l7_rounds = l7;
        self
    }

    /// The row with the L7 path's rounds with authorization too
    /// (`weft_l7` being the same path without).
    pub fn with_authz(mut self, authz: Vec<f64>) -> Row {
        let m = median(&authz);
        self.weft_l7_authz = m;
        self.authz_minus_l7 = m.zip(self.weft_l7).map(|(a, l7)| a - l7);
        self.weft_l7_authz_rounds = authz;
        self
    }

    /// The row with the rounds of the same traffic through ztunnel.
    pub fn with_ztunnel(mut self, ztunnel: Vec<f64>) -> Row {
        let m = median(&ztunnel);
        self.ztunnel = m;
        self.ztunnel_direct = ratio(m, self.direct);
        self.weft_ztunnel = ratio(self.weft, m);
        self.ztunnel_rounds = ztunnel;
        self
    }

    /// Whether the row has ztunnel's rounds beside weft's.
    pub fn has_ztunnel(&self) -> bool {
        !self.ztunnel_rounds.is_empty()
    }

    /// The row with the rounds of its weft path (L7 if it has L7 rounds,
    /// else L4) with the agents' traffic metrics off.
    pub fn with_metrics_off(mut self, off: Vec<f64>) -> Row {
        let m = median(&off);
        self.weft_metrics_off = m;
        let on = match self.weft_l7_rounds.is_empty() {
            true => &self.weft_rounds,
            false => &self.weft_l7_rounds,
        };
        // Each round measures on and off once, back to back.
        if on.len() == off.len() {
            self.metrics_on_off_rounds = on
                .iter()
                .zip(&off)
                .filter_map(|(&on, &off)| ratio(Some(on), Some(off)))
                .collect();
        }
        self.metrics_on_off = match self.metrics_on_off_rounds.is_empty() {
            true => ratio(self.metrics_on(), m),
            false => median(&self.metrics_on_off_rounds),
        };
        self.metrics_on_off_interval = median_interval(&self.metrics_on_off_rounds);
        self.weft_metrics_off_rounds = off;
        self
    }

    /// Whether the row measures the three paths of the HTTP and gRPC
    /// scenarios.
    pub fn three_paths(&self) -> bool {
        !self.weft_l7_rounds.is_empty() && !self.authz() && !self.metrics()
    }

    /// Whether the row measures weft with traffic metrics on and off.
    pub fn metrics(&self) -> bool {
        !self.weft_metrics_off_rounds.is_empty()
    }

    /// The metrics scenarios' value with metrics on.
    pub fn metrics_on(&self) -> Option<f64> {
        match self.weft_l7_rounds.is_empty() {
            true => self.weft,
            false => self.weft_l7,
        }
    }

    /// Whether the row measures L7 with and without authorization.
    pub fn authz(&self) -> bool {
        !self.weft_l7_authz_rounds.is_empty()
    }

    /// Collects each metric's values per variant into rows, keeping the
    /// order in which metrics were first measured.
    pub fn collect(scenario: &str, measured: &[(Variant, Sample)]) -> Vec<Row> {
        let mut metrics: Vec<Metric> = Vec::new();
        for (_, (m, _)) in measured {
            if !metrics.contains(m) {
                metrics.push(*m);
            }
        }
        metrics
            .into_iter()
            .map(|m| {
                let of = |variant| {
                    measured
                        .iter()
                        .filter(|(v, (mm, _))| *v == variant && *mm == m)
                        .map(|(_, (_, x))| *x)
                        .collect()
                };
                let row = Row::new(scenario, m, of(Variant::Direct), of(Variant::Weft));
                let row = match of(Variant::WeftL7) {
                    l7 if l7.is_empty() => row,
                    l7 => row.with_l7(l7),
                };
                let row = match of(Variant::Ztunnel) {
                    zt if zt.is_empty() => row,
                    zt => row.with_ztunnel(zt),
                };
                let row = match of(Variant::WeftL7Authz) {
                    authz if authz.is_empty() => row,
                    authz => row.with_authz(authz),
                };
                let mut off: Vec<f64> = of(Variant::WeftMetricsOff);
                off.extend(of(Variant::WeftL7MetricsOff));
                match off.is_empty() {
                    true => row,
                    false => row.with_metrics_off(off),
                }
            })
            .collect()
    }
}

/// `a / b`, if both are known and `b` is not 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// The machine the run happened on.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib / 1024);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    json!({
        "cpu_model": cpu_model,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_mib": memory_mib,
        "kernel": kernel,
        "os": os,
        "iperf3": first_line("iperf3", &["--version"]),
    })
}

/// `git rev-parse HEAD` of the workspace this was built from, and whether
/// tracked files differed from it.
pub fn git_revision() -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let revision = git(&["rev-parse", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({ "revision": revision, "dirty": dirty })
}

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc(secs)
}

fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes `value` to `path` (creating its directory).
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::table::signed;
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_764_117_005), "2025-11-26T00:30:05Z");
    }

    #[test]
    fn rows_take_medians_and_ratios() {
        const TPUT: Metric = higher("throughput", "Gbit/s");
        const RSS: Metric = lower("agent RSS", "MiB");
        let measured = vec![
            (Variant::Direct, (TPUT, 20.0)),
            (Variant::Weft, (TPUT, 8.0)),
            (Variant::Weft, (RSS, 15.0)),
            (Variant::Weft, (TPUT, 10.0)),
            (Variant::Direct, (TPUT, 22.0)),
        ];
        let rows = Row::collect("throughput/x", &measured);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].direct, Some(21.0));
        assert_eq!(rows[0].weft, Some(9.0));
        assert!((rows[0].ratio.unwrap() - 9.0 / 21.0).abs() < 1e-12);
        assert_eq!(rows[1].direct, None);
        assert_eq!(rows[1].ratio, None);
        let text = table(&rows);
        assert!(text.contains("throughput/x"), "{text}");
        assert!(text.lines().nth(3).unwrap().starts_with(' '), "{text}");
    }

    #[test]
    fn ztunnel_rows_carry_its_columns_and_weft_against_it() {
        const RATE: Metric = higher("connections", "1/s");
        let measured = vec![
            (Variant::Direct, (RATE, 10_000.0)),
            (Variant::Weft, (RATE, 4_000.0)),
            (Variant::Ztunnel, (RATE, 2_000.0)),
        ];
        let rows = Row::collect("connections/cross-node", &measured);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].ztunnel, Some(2_000.0));
        assert_eq!(rows[0].ztunnel_direct, Some(0.2));
        assert_eq!(rows[0].weft_ztunnel, Some(2.0));
        let text = table(&rows);
        let header = text.lines().next().unwrap();
        assert!(header.ends_with("weft/ztunnel"), "{text}");
        assert!(text.lines().nth(2).unwrap().ends_with("2.00"), "{text}");
        // Without ztunnel's rounds, the table is as before.
        let rows = Row::collect("connections/cross-node", &measured[..2]);
        assert!(!table(&rows).contains("ztunnel"));
    }

    #[test]
    fn three_path_rows_carry_l7_and_its_ratios() {
        const RPS: Metric = higher("requests", "1/s");
        let measured = vec![
            (Variant::Direct, (RPS, 40_000.0)),
            (Variant::Weft, (RPS, 20_000.0)),
            (Variant::WeftL7, (RPS, 15_000.0)),
        ];
        let rows = Row::collect("http/max-rps/x", &measured);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert!(r.three_paths());
        assert_eq!(r.weft_l7, Some(15_000.0));
        assert_eq!(r.l7_l4, Some(0.75));
        assert_eq!(r.l7_direct, Some(0.375));
        assert_eq!(r.l7_minus_l4, Some(-5_000.0));
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["weft_l7_rounds"], json!([15_000.0]));
        let plain = Row::new("x", RPS, vec![1.0], vec![2.0]);
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("weft_l7").is_none(), "{json}");
        let text = table(&[plain, r.clone()]);
        assert!(text.contains("weft-l7"), "{text}");
        assert!(text.contains("0.75"), "{text}");
        assert_eq!(signed(Some(12.5)), "+12.50");
    }

    #[test]
    fn authz_rows_carry_the_difference_and_a_table_of_their_own() {
        const P50: Metric = lower("p50", "µs");
        let measured = vec![
            (Variant::WeftL7, (P50, 100.0)),
            (Variant::WeftL7Authz, (P50, 107.0)),
            (Variant::WeftL7Authz, (P50, 109.0)),
            (Variant::WeftL7, (P50, 102.0)),
        ];
        let rows = Row::collect("http/authz-latency/x", &measured);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert!(r.authz() && !r.three_paths());
        assert_eq!(r.weft_l7, Some(101.0));
        assert_eq!(r.weft_l7_authz, Some(108.0));
        assert_eq!(r.authz_minus_l7, Some(7.0));
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["weft_l7_authz_rounds"], json!([107.0, 109.0]));
        let text = table(&rows);
        assert!(text.starts_with("scenario"), "{text}");
        assert!(text.contains("added by authz"), "{text}");
        assert!(text.contains("+7.000"), "{text}");
    }

    #[test]
    fn metrics_rows_compare_on_with_off_in_a_table_of_their_own() {
        const RPS: Metric = higher("requests", "1/s");
        const CONN: Metric = higher("connections", "1/s");
        let l7 = Row::collect(
            "metrics/http-l7-max-rps/x",
            &[
                (Variant::WeftL7, (RPS, 19_000.0)),
                (Variant::WeftL7MetricsOff, (RPS, 20_000.0)),
                (Variant::WeftL7MetricsOff, (RPS, 20_000.0)),
                (Variant::WeftL7, (RPS, 19_000.0)),
            ],
        );
        let l4 = Row::collect(
            "metrics/connection-rate/x",
            &[
                (Variant::Weft, (CONN, 8_000.0)),
                (Variant::WeftMetricsOff, (CONN, 10_000.0)),
            ],
        );
        let (l7, l4) = (&l7[0], &l4[0]);
        assert!(l7.metrics() && !l7.three_paths() && !l7.authz());
        assert_eq!(l7.metrics_on(), Some(19_000.0));
        assert_eq!(l7.weft_metrics_off, Some(20_000.0));
        assert_eq!(l7.metrics_on_off, Some(0.95));
        assert_eq!(l4.metrics_on(), Some(8_000.0));
        assert_eq!(l4.metrics_on_off, Some(0.8));
        let json = serde_json::to_value(l4).unwrap();
        assert_eq!(json["weft_metrics_off_rounds"], json!([10_000.0]));
        assert_eq!(json["weft"], json!(8_000.0));
        let plain = Row::new("x", RPS, vec![1.0], vec![2.0]);
        let text = table(&[plain, l4.clone(), l7.clone()]);
        assert!(text.contains("telemetry off"), "{text}");
        assert!(text.contains("0.80") && text.contains("0.95"), "{text}");
        let header = text
            .lines()
            .position(|l| l.contains("telemetry on"))
            .unwrap();
        assert!(
            text.lines()
                .nth(header + 2)
                .unwrap()
                .starts_with("metrics/")
        );
    }

    #[test]
    fn metrics_rounds_pair_up_against_the_machines_drift() {
        const RPS: Metric = higher("requests", "1/s");
        // The machine slows down round by round; on is 0.9 of off in each.
        let mut measured = Vec::new();
        for (i, speed) in [1.0, 0.8, 0.6, 0.5, 0.4, 0.3].into_iter().enumerate() {
            let pair = [
                (Variant::WeftL7, (RPS, 9_000.0 * speed)),
                (Variant::WeftL7MetricsOff, (RPS, 10_000.0 * speed)),
            ];
            match i % 2 {
                0 => measured.extend(pair),
                _ => measured.extend(pair.into_iter().rev()),
            }
        }
        let rows = Row::collect("metrics/http-l7-max-rps/x", &measured);
        let r = &rows[0];
        assert_eq!(r.metrics_on_off_rounds.len(), 6);
        assert!((r.metrics_on_off.unwrap() - 0.9).abs() < 1e-9);
        let (lo, hi) = r.metrics_on_off_interval.unwrap();
        assert!((lo - 0.9).abs() < 1e-9 && (hi - 0.9).abs() < 1e-9);
        assert!(table(&rows).contains("0.90-0.90"), "{}", table(&rows));
        // Rounds that do not pair up: the ratio of the medians.
        let unpaired = Row::collect(
            "metrics/connection-rate/x",
            &[
                (Variant::Weft, (RPS, 9.0)),
                (Variant::WeftMetricsOff, (RPS, 10.0)),
                (Variant::WeftMetricsOff, (RPS, 10.0)),
            ],
        );
        assert!(unpaired[0].metrics_on_off_rounds.is_empty());
        assert_eq!(unpaired[0].metrics_on_off, Some(0.9));
        assert_eq!(unpaired[0].metrics_on_off_interval, None);
    }

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(num(Some(12345.6)), "12346");
        assert_eq!(num(Some(47.123)), "47.12");
        assert_eq!(num(Some(0.3712)), "0.371");
        assert_eq!(num(None), "-");
    }
}
