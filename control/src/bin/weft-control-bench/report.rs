//! The benchmark's figures: a table on stdout and JSON in
//! `$WEFT_BENCH_DIR/control-plane.json` (directory mode) or
//! `control-plane-kubernetes.json` (Kubernetes mode).

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use crate::Sizes;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Kubernetes mode only: the API server stand-in's side.
pub struct ApiFigures {
    /// Objects created through the API, and how long that took.
    pub objects: usize,
    pub load: Duration,
    /// The stand-in's CPU seconds while loading, and while weft-control
    /// listed it.
    pub standin_load_cpu: f64,
    pub standin_list_cpu: f64,
    /// Lists per watched resource beyond the first (410s, failed watches).
    pub relists: u64,
}

pub struct Figures {
    pub quick: bool,
    /// `None` in directory mode.
    pub api: Option<ApiFigures>,
    pub addresses: usize,
    pub authorizations: usize,
    pub routes: usize,
    pub destinations: usize,
    pub load: Duration,
    pub first_sync: Duration,
    pub sync_cpu: f64,
    pub agents_cpu: f64,
    /// Sorted.
    pub latencies: Vec<Duration>,
    pub rss: u64,
    pub cpu: f64,
}

impl Figures {
    fn percentile(&self, p: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        self.latencies[i]
    }

    fn mode(&self) -> &'static str {
        if self.api.is_some() {
            "kubernetes"
        } else {
            "directory"
        }
    }

    /// The table, as printed.
    pub fn table(&self, sizes: &Sizes) -> Result<String, std::fmt::Error> {
        let (p50, p99) = (self.percentile(0.50), self.percentile(0.99));
        let mut table = String::new();
        let row = |table: &mut String, metric: &str, measured: String, target: &str| {
            writeln!(table, "  {metric:<44} {measured:>12} {target:>10}")
        };
        writeln!(
            table,
            "weft-control at scale{}{}",
            if self.api.is_some() {
                " (Kubernetes mode)"
            } else {
                ""
            },
            if self.quick { " (--quick)" } else { "" }
        )?;
        writeln!(
            table,
            "  config: {} pods, {} services, {} VirtualServices + {} DestinationRules, {} agents; served: {} addresses, {} authorizations, {} route configs, {} destination policies",
            sizes.pods,
            sizes.services,
            sizes.routes,
            sizes.routes,
            sizes.agents,
            self.addresses,
            self.authorizations,
            self.routes,
            self.destinations
        )?;
        if let Some(api) = &self.api {
            writeln!(
                table,
                "  through the API server stand-in (weft-apiserver): {} objects created, {} relists",
                api.objects, api.relists
            )?;
        }
        row(&mut table, "metric", "measured".into(), "target")?;
        if let Some(api) = &self.api {
            row(
                &mut table,
                "API load (objects created through the API)",
                format!("{:.2} s", api.load.as_secs_f64()),
                "",
            )?;
            row(
                &mut table,
                "  API server stand-in CPU: load / list",
                format!(
                    "{:.1} / {:.1} s",
                    api.standin_load_cpu, api.standin_list_cpu
                ),
                "",
            )?;
        }
        row(
            &mut table,
            "config load to ready",
            format!("{:.2} s", self.load.as_secs_f64()),
            "",
        )?;
        row(
            &mut table,
            "first sync, all agents ACKed",
            format!("{:.2} s", self.first_sync.as_secs_f64()),
            "≤ 10 s",
        )?;
        row(
            &mut table,
            "  CPU during it: control plane / agents",
            format!("{:.1} / {:.1} s", self.sync_cpu, self.agents_cpu),
            "",
        )?;
        row(
            &mut table,
            &format!(
                "one pod change → all ACKed, p50 (n={})",
                self.latencies.len()
            ),
            format!("{} ms", p50.as_millis()),
            "",
        )?;
        row(
            &mut table,
            "one pod change → all ACKed, p99",
            format!("{} ms", p99.as_millis()),
            "≤ 250 ms",
        )?;
        row(
            &mut table,
            "control plane peak RSS",
            format!("{:.2} GiB", self.rss as f64 / GIB),
            "≤ 1.5 GiB",
        )?;
        row(
            &mut table,
            "control plane CPU (start to end)",
            format!("{:.1} s", self.cpu),
            "",
        )?;
        Ok(table)
    }

    pub fn json(&self, sizes: &Sizes) -> serde_json::Value {
        let (p50, p99) = (self.percentile(0.50), self.percentile(0.99));
        let mut json = serde_json::json!({
            "mode": self.mode(),
            "quick": self.quick,
            "pods": sizes.pods,
            "services": sizes.services,
            "virtual_services": sizes.routes,
            "destination_rules": sizes.routes,
            "agents": sizes.agents,
            "addresses": self.addresses,
            "authorizations": self.authorizations,
            "route_configs": self.routes,
            "destination_policies": self.destinations,
            "load_seconds": self.load.as_secs_f64(),
            "first_sync_seconds": self.first_sync.as_secs_f64(),
            "first_sync_cpu_seconds": {"control_plane": self.sync_cpu, "agents": self.agents_cpu},
            "change_p50_ms": p50.as_secs_f64() * 1e3,
            "change_p99_ms": p99.as_secs_f64() * 1e3,
            "changes": self.latencies.len(),
            "peak_rss_bytes": self.rss,
            "cpu_seconds": self.cpu,
            "targets": {"first_sync_seconds": 10.0, "change_p99_ms": 250.0, "peak_rss_bytes": 1.5 * GIB},
        });
        if let Some(api) = &self.api {
            json["api"] = serde_json::json!({
                "objects": api.objects,
                "load_seconds": api.load.as_secs_f64(),
                "standin_cpu_seconds": {"load": api.standin_load_cpu, "list": api.standin_list_cpu},
                "relists": api.relists,
            });
        }
        json
    }

    /// Writes the JSON into `$WEFT_BENCH_DIR` (default `target/bench/`);
    /// returns the file.
    pub fn write(&self, sizes: &Sizes) -> anyhow::Result<PathBuf> {
        let dir = std::env::var_os("WEFT_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/bench"));
        std::fs::create_dir_all(&dir)?;
        let out = dir.join(match self.api {
            Some(_) => "control-plane-kubernetes.json",
            None => "control-plane.json",
        });
        std::fs::write(&out, serde_json::to_vec_pretty(&self.json(sizes))?)?;
        Ok(out)
    }
}
