//! Prometheus's HTTP API: instant and range queries, scrape targets, and
//! the decoding of their results.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::Prometheus;
use super::http::{form, http_in, truncate};
use crate::wait::wait_for;

/// One series of an instant query: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Every label, `__name__` included when the expression keeps it.
    pub labels: BTreeMap<String, String>,
    /// The value (NaN and ±Inf as Prometheus sends them).
    pub value: f64,
}

// === impl Sample ===

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// One series of a range query: its labels and `(unix seconds, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// Every label of the series.
    pub labels: BTreeMap<String, String>,
    /// The points, oldest first.
    pub points: Vec<(f64, f64)>,
}

/// Prometheus refused a query (invalid PromQL, bad parameters, a query that
/// failed to run). The error text is Prometheus's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The expression sent.
    pub query: String,
    /// Prometheus's `errorType`, e.g. `bad_data`.
    pub error_type: String,
    /// Prometheus's `error`, e.g. `1:5: parse error: unexpected …`.
    pub error: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Prometheus rejected the query `{}`: {}: {}",
            self.query, self.error_type, self.error
        )
    }
}

impl std::error::Error for QueryError {}

/// One scrape target as `/api/v1/targets` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The target's `job` label.
    pub job: String,
    /// The URL scraped.
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    /// Why the last scrape failed (empty if it did not).
    pub last_error: String,
}

// === impl Prometheus ===

impl Prometheus {
    /// The active scrape targets.
    pub fn targets(&self) -> Result<Vec<Target>> {
        let data = self.api("GET", "/api/v1/targets?state=active", None, "targets")?;
        let targets = data["activeTargets"]
            .as_array()
            .context("/api/v1/targets: no activeTargets")?;
        Ok(targets
            .iter()
            .map(|t| Target {
                job: t["labels"]["job"]
                    .as_str()
                    .or_else(|| t["scrapePool"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                scrape_url: t["scrapeUrl"].as_str().unwrap_or_default().to_string(),
                health: t["health"].as_str().unwrap_or_default().to_string(),
                last_error: t["lastError"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// An instant query at the current time. A scalar result comes back as
    /// one sample without labels; a range-vector or string result is an
    /// error. Invalid PromQL gives a [`QueryError`] (inside the
    /// `anyhow::Error`) naming the query and Prometheus's message.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        self.instant(promql, None)
    }

    /// An instant query evaluated at `time`.
    pub fn query_at(&self, promql: &str, time: SystemTime) -> Result<Vec<Sample>> {
        self.instant(promql, Some(time))
    }

    /// The value of an instant query that must return exactly one sample.
    pub fn query_value(&self, promql: &str) -> Result<f64> {
        let samples = self.query(promql)?;
        match samples.as_slice() {
            [one] => Ok(one.value),
            _ => bail!(
                "query `{promql}` returned {} samples, expected exactly one: {samples:?}",
                samples.len()
            ),
        }
    }

    /// Re-runs an instant query until `accept` takes its result, at most
    /// for `timeout` (data appears one scrape at a time, and `rate()`
    /// needs two). Invalid PromQL fails at once.
    pub fn wait_for_query(
        &self,
        promql: &str,
        timeout: Duration,
        mut accept: impl FnMut(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>> {
        let mut last = None;
        let mut rejected = None;
        let result = wait_for(
            &format!("query `{promql}` to match"),
            timeout,
            || match self.query(promql) {
                Ok(samples) => {
                    let ok = accept(&samples);
                    last = Some(samples);
                    Ok(ok.then_some(()))
                }
                Err(e) if e.is::<QueryError>() => {
                    rejected = Some(e);
                    Ok(Some(()))
                }
                Err(e) => Err(e),
            },
        );
        if let Some(e) = rejected {
            return Err(e);
        }
        match (result, last) {
            (Ok(()), Some(samples)) => Ok(samples),
            (Ok(()), None) => unreachable!("accepted without a result"),
            (Err(e), last) => Err(e.context(format!("last result: {last:?}"))),
        }
    }

    /// Checks that `promql` is accepted and evaluates (`status: success`),
    /// whatever type it returns and whether or not any data matches.
    pub fn check(&self, promql: &str) -> Result<()> {
        self.api(
            "POST",
            "/api/v1/query",
            Some(&form(&[("query", promql)])),
            promql,
        )
        .map(|_| ())
    }

    /// A range query from `start` to `end` every `step`.
    pub fn query_range(
        &self,
        promql: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Vec<RangeSeries>> {
        let body = form(&[
            ("query", promql),
            ("start", &unix(start)),
            ("end", &unix(end)),
            ("step", &format!("{}", step.as_secs_f64())),
        ]);
        let data = self.api("POST", "/api/v1/query_range", Some(&body), promql)?;
        if data["resultType"] != "matrix" {
            bail!(
                "query_range `{promql}` returned a {}, not a matrix",
                data["resultType"]
            );
        }
        data["result"]
            .as_array()
            .context("no result array")?
            .iter()
            .map(|series| {
                let points = series["values"]
                    .as_array()
                    .context("a series without values")?
                    .iter()
                    .map(point)
                    .collect::<Result<Vec<_>>>()?;
                Ok(RangeSeries {
                    labels: labels(&series["metric"]),
                    points,
                })
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("reading the result of query_range `{promql}`"))
    }

    fn instant(&self, promql: &str, time: Option<SystemTime>) -> Result<Vec<Sample>> {
        let time = time.map(unix);
        let mut params = vec![("query", promql)];
        if let Some(time) = &time {
            params.push(("time", time));
        }
        let data = self.api("POST", "/api/v1/query", Some(&form(&params)), promql)?;
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .context("no result array")?
                .iter()
                .map(|s| {
                    Ok(Sample {
                        labels: labels(&s["metric"]),
                        value: point(&s["value"])?.1,
                    })
                })
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("reading the result of query `{promql}`")),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: point(result)
                    .with_context(|| format!("reading the result of query `{promql}`"))?
                    .1,
            }]),
            other => bail!(
                "query `{promql}` returned a {}, not an instant vector or scalar",
                other.unwrap_or("result of no type")
            ),
        }
    }

    /// Calls an API endpoint; the `data` of a `success`, else an error
    /// ([`QueryError`] when Prometheus answered with one).
    fn api(&self, method: &str, path: &str, body: Option<&str>, query: &str) -> Result<Value> {
        let (status, text) = http_in(self.netns.as_ref(), self.addr, method, path, body)
            .with_context(|| format!("{method} {}{path}", self.url()))?;
        let json: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{method} {path}: HTTP {status}, not JSON: {}",
                truncate(&text)
            )
        })?;
        match json["status"].as_str() {
            Some("success") => Ok(json["data"].clone()),
            Some("error") => Err(QueryError {
                query: query.to_string(),
                error_type: json["errorType"].as_str().unwrap_or_default().to_string(),
                error: json["error"].as_str().unwrap_or_default().to_string(),
            }
            .into()),
            _ => bail!("{method} {path}: HTTP {status}: {}", truncate(&text)),
        }
    }
}

fn unix(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    format!("{secs:.3}")
}

fn labels(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `[<unix seconds>, "<value>"]`.
fn point(value: &Value) -> Result<(f64, f64)> {
    let time = value[0]
        .as_f64()
        .with_context(|| format!("no timestamp in {value}"))?;
    let text = value[1]
        .as_str()
        .with_context(|| format!("no value in {value}"))?;
    Ok((time, parse_value(text)?))
}

/// Prometheus's float text: Go's `strconv.FormatFloat`, plus `NaN`/`±Inf`.
fn parse_value(text: &str) -> Result<f64> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse()
            .with_context(|| format!("not a number: {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!(parse_value("1.5").unwrap(), 1.5);
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("+Inf").unwrap(), f64::INFINITY);
        assert_eq!(parse_value("-Inf").unwrap(), f64::NEG_INFINITY);
        assert_eq!(parse_value("1e+06").unwrap(), 1e6);
        assert!(parse_value("x").is_err());
    }
}
