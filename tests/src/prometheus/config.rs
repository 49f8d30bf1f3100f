//! Scrape jobs and the `prometheus.yml` made of them.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::SCRAPE_INTERVAL;

/// One scrape job: a name (the `job` label), `host:port` targets and the
/// path their metrics are served on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeJob {
    /// The job's name, which becomes every series' `job` label.
    pub name: String,
    /// `host:port` of each target (the `instance` label).
    pub targets: Vec<String>,
    /// Path of the exposition, `/metrics` unless set.
    pub metrics_path: String,
    /// Keep labels of the exposition over conflicting target labels
    /// (`job`, `instance`, [`ScrapeJob::label`]s); true unless set, as in
    /// the `kubernetes-pods` job of Istio's Prometheus.
    pub honor_labels: bool,
    /// Extra labels added to every series of the job's targets.
    pub labels: BTreeMap<String, String>,
}

// === impl ScrapeJob ===

impl ScrapeJob {
    /// A job scraping `targets` (`host:port`) at `/metrics`.
    pub fn new<I, S>(name: &str, targets: I) -> ScrapeJob
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ScrapeJob {
            name: name.to_string(),
            targets: targets.into_iter().map(Into::into).collect(),
            metrics_path: "/metrics".to_string(),
            honor_labels: true,
            labels: BTreeMap::new(),
        }
    }

    /// Serves at `path` instead of `/metrics` (e.g. `/stats/prometheus`).
    pub fn metrics_path(mut self, path: &str) -> ScrapeJob {
        self.metrics_path = path.to_string();
        self
    }

    /// Sets `honor_labels` (see the field).
    pub fn honor_labels(mut self, honor: bool) -> ScrapeJob {
        self.honor_labels = honor;
        self
    }

    /// Adds a target label, e.g. `node="node-1"`, to every series scraped.
    pub fn label(mut self, name: &str, value: &str) -> ScrapeJob {
        self.labels.insert(name.to_string(), value.to_string());
        self
    }

    fn to_config(&self) -> Value {
        let mut static_config = json!({ "targets": self.targets });
        if !self.labels.is_empty() {
            static_config["labels"] = json!(self.labels);
        }
        json!({
            "job_name": self.name,
            "metrics_path": self.metrics_path,
            "honor_labels": self.honor_labels,
            "scheme": "http",
            "static_configs": [static_config],
        })
    }
}

/// The `prometheus.yml` for `jobs`.
pub(super) fn config_yaml(jobs: &[ScrapeJob]) -> Result<String> {
    let secs = format!("{}s", SCRAPE_INTERVAL.as_secs());
    let config = json!({
        "global": {
            "scrape_interval": secs,
            "scrape_timeout": secs,
            "evaluation_interval": secs,
        },
        "scrape_configs": jobs.iter().map(ScrapeJob::to_config).collect::<Vec<_>>(),
    });
    serde_yaml::to_string(&config).context("writing the Prometheus configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_every_job() {
        let yaml = config_yaml(&[
            ScrapeJob::new("agents", ["10.0.0.1:15020", "10.0.0.2:15020"])
                .metrics_path("/stats/prometheus")
                .label("node", "node-1"),
            ScrapeJob::new("control", ["127.0.0.1:15014"]).honor_labels(false),
        ])
        .unwrap();
        let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(parsed["global"]["scrape_interval"], "1s");
        let jobs = parsed["scrape_configs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0]["metrics_path"], "/stats/prometheus");
        assert_eq!(jobs[0]["honor_labels"], true);
        assert_eq!(jobs[0]["static_configs"][0]["targets"][1], "10.0.0.2:15020");
        assert_eq!(jobs[0]["static_configs"][0]["labels"]["node"], "node-1");
        assert_eq!(jobs[1]["metrics_path"], "/metrics");
        assert_eq!(jobs[1]["honor_labels"], false);
    }
}
