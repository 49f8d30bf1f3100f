//! weft's Grafana dashboards (`deploy/dashboards/*.json`) as data: each
//! panel's title and each target's PromQL, with Grafana's variables
//! replaced by values a test gives, ready for [`crate::prometheus`].
//!
//! Variables are substituted as Grafana's Prometheus data source does:
//! `$var`, `${var}`, `${var:format}` and `[[var]]`; a variable that is
//! multi-value or has "All" becomes a regex (`(a|b)`, each value
//! regex-escaped) meant for `=~`; "All" becomes the variable's `allValue`
//! (`.*` in weft's dashboards). A variable the caller gives no value for
//! takes the dashboard's default (`current`), if it has one. Grafana's
//! built-ins have fixed values ([`BUILTINS`]), which the caller may
//! override like any variable (`Values::new().set("__rate_interval", "10s")`).
//!
//! ```no_run
//! use weft_sim::dashboards::{self, Values};
//! # fn main() -> anyhow::Result<()> {
//! let values = Values::new().set("namespace", "shop").set("workload", "cart");
//! let board = dashboards::load(&dashboards::default_dir().join("workload.json"))?;
//! for query in board.queries(&values)? {
//!     println!("{} [{}]: {}", query.panel, query.ref_id, query.expr);
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

mod names;
mod substitute;

pub use names::{LABELS, METRICS, names_in};
pub use substitute::{BUILTINS, Values, Variable, example_values};

/// `deploy/dashboards/` of this checkout.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dashboards")
}

/// Loads every `*.json` dashboard in `dir`, by file name.
pub fn load_all(dir: &Path) -> Result<Vec<Dashboard>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files.iter().map(|f| load(f)).collect()
}

/// Loads one dashboard.
pub fn load(path: &Path) -> Result<Dashboard> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Dashboard::parse(&file, &text)
}

/// A panel with queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panel {
    /// Its title.
    pub title: String,
    /// Grafana's panel type (`timeseries`, `stat`, `table`, …).
    pub kind: String,
    /// Its queries, as written (variables not substituted).
    pub targets: Vec<Target>,
}

/// One query of a panel, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `refId` (`A`, `B`, … or a name).
    pub ref_id: String,
    /// The PromQL, with Grafana variables.
    pub expr: String,
    /// `legendFormat`, if any.
    pub legend: Option<String>,
    /// Whether Grafana runs it as an instant query.
    pub instant: bool,
}

/// One query of a panel, its variables substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The panel's title.
    pub panel: String,
    /// The target's `refId`.
    pub ref_id: String,
    /// `legendFormat`, if any.
    pub legend: Option<String>,
    /// Whether Grafana runs it as an instant query (else a range query).
    pub instant: bool,
    /// PromQL.
    pub expr: String,
}

/// A Grafana dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The file it was loaded from (name only, e.g. `mesh.json`).
    pub file: String,
    /// Its title.
    pub title: String,
    /// Its uid.
    pub uid: String,
    /// `templating.list`.
    pub variables: Vec<Variable>,
    /// Every panel with queries, rows' collapsed panels included, in order.
    pub panels: Vec<Panel>,
    /// The whole JSON.
    pub json: Value,
}

// === impl Dashboard ===

impl Dashboard {
    /// Parses a dashboard's JSON; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Dashboard> {
        let json: Value =
            serde_json::from_str(text).with_context(|| format!("{file}: not JSON"))?;
        let variables = json["templating"]["list"]
            .as_array()
            .map(|list| list.iter().map(Variable::parse).collect::<Result<Vec<_>>>())
            .transpose()
            .with_context(|| format!("{file}: templating"))?
            .unwrap_or_default();
        let mut panels = Vec::new();
        collect_panels(&json["panels"], &mut panels).with_context(|| format!("{file}: panels"))?;
        Ok(Dashboard {
            file: file.to_string(),
            title: json["title"].as_str().unwrap_or_default().to_string(),
            uid: json["uid"].as_str().unwrap_or_default().to_string(),
            variables,
            panels,
            json,
        })
    }

    /// The variable named `name`.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }

    /// The panel titled `title`.
    pub fn panel(&self, title: &str) -> Option<&Panel> {
        self.panels.iter().find(|p| p.title == title)
    }

    /// Every target of every panel, variables substituted.
    pub fn queries(&self, values: &Values) -> Result<Vec<Query>> {
        let mut out = Vec::new();
        for panel in &self.panels {
            for target in &panel.targets {
                let expr = self.substitute(&target.expr, values).with_context(|| {
                    format!(
                        "{}: panel {:?}, target {}",
                        self.file, panel.title, target.ref_id
                    )
                })?;
                out.push(Query {
                    panel: panel.title.clone(),
                    ref_id: target.ref_id.clone(),
                    legend: target.legend.clone(),
                    instant: target.instant,
                    expr,
                });
            }
        }
        Ok(out)
    }

    /// `(panel title, PromQL)` of every target, variables substituted.
    pub fn expressions(&self, values: &Values) -> Result<Vec<(String, String)>> {
        Ok(self
            .queries(values)?
            .into_iter()
            .map(|q| (q.panel, q.expr))
            .collect())
    }

    /// `(variable, PromQL)` for every `query` variable: Grafana's
    /// `label_values(selector, label)` becomes `count by (label) (selector)`
    /// (the label's values are those of the result's series),
    /// `label_values(label)` becomes `count by (label) ({label!=""})`, and
    /// `query_result(expr)` becomes `expr`.
    pub fn variable_queries(&self, values: &Values) -> Result<Vec<(String, String)>> {
        self.variables
            .iter()
            .filter(|v| v.kind == "query")
            .filter_map(|v| v.query.as_ref().map(|q| (v, q)))
            .map(|(v, q)| {
                let q = self
                    .substitute(q, values)
                    .with_context(|| format!("{}: variable {}", self.file, v.name))?;
                Ok((v.name.clone(), variable_promql(&q)?))
            })
            .collect()
    }
}

fn collect_panels(json: &Value, out: &mut Vec<Panel>) -> Result<()> {
    let Some(panels) = json.as_array() else {
        return Ok(());
    };
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        let targets = panel["targets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| Target {
                        ref_id: t["refId"].as_str().unwrap_or_default().to_string(),
                        expr: t["expr"].as_str().unwrap_or_default().to_string(),
                        legend: t["legendFormat"].as_str().map(str::to_string),
                        instant: t["instant"].as_bool().unwrap_or(false),
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !targets.is_empty() {
            out.push(Panel {
                title,
                kind: panel["type"].as_str().unwrap_or_default().to_string(),
                targets,
            });
        }
        collect_panels(&panel["panels"], out)?;
    }
    Ok(())
}

/// The PromQL behind a variable's query (see
/// [`Dashboard::variable_queries`]).
fn variable_promql(query: &str) -> Result<String> {
    let query = query.trim();
    if let Some(inner) = call_args(query, "query_result") {
        return Ok(inner.to_string());
    }
    if let Some(inner) = call_args(query, "label_values") {
        // The label is after the last top-level comma.
        let mut depth = 0i32;
        let mut in_string = false;
        let mut split = None;
        let bytes = inner.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_string => i += 1,
                b'"' => in_string = !in_string,
                b'(' | b'{' | b'[' if !in_string => depth += 1,
                b')' | b'}' | b']' if !in_string => depth -= 1,
                b',' if !in_string && depth == 0 => split = Some(i),
                _ => {}
            }
            i += 1;
        }
        return Ok(match split {
            Some(i) => {
                let label = inner[i + 1..].trim();
                format!("count by ({label}) ({})", inner[..i].trim())
            }
            None => {
                let label = inner.trim();
                format!("count by ({label}) ({{{label}!=\"\"}})")
            }
        });
    }
    bail!("variable query {query:?} is neither label_values(…) nor query_result(…)")
}

/// `args` of `name(args)` spanning the whole text.
fn call_args<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.strip_prefix(name)?
        .trim_start()
        .strip_prefix('(')?
        .strip_suffix(')')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    pub(super) fn boards() -> Vec<Dashboard> {
        load_all(&default_dir()).unwrap()
    }

    #[test]
    fn converts_variable_queries() {
        assert_eq!(
            variable_promql(r#"label_values(m{a="b, c"}, lbl)"#).unwrap(),
            r#"count by (lbl) (m{a="b, c"})"#
        );
        assert_eq!(
            variable_promql("label_values(lbl)").unwrap(),
            r#"count by (lbl) ({lbl!=""})"#
        );
        assert_eq!(
            variable_promql("query_result(sum(m) by (x))").unwrap(),
            "sum(m) by (x)"
        );
        assert!(variable_promql("metrics(.*)").is_err());
    }

    #[test]
    fn every_dashboard_parses_and_is_complete() {
        let boards = boards();
        let files: Vec<&str> = boards.iter().map(|b| b.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "agent.json",
                "control-plane.json",
                "mesh.json",
                "service.json",
                "workload.json"
            ]
        );
        let mut uids = BTreeSet::new();
        for board in &boards {
            let file = &board.file;
            assert!(!board.title.is_empty(), "{file}: no title");
            assert!(
                uids.insert(board.uid.clone()),
                "{file}: uid {} again",
                board.uid
            );
            let schema = board.json["schemaVersion"].as_u64().unwrap_or(0);
            assert!(schema >= 36, "{file}: schemaVersion {schema}");
            let ds = board.variable("datasource").expect("a datasource variable");
            assert_eq!(ds.kind, "datasource", "{file}");
            assert_eq!(ds.query.as_deref(), Some("prometheus"), "{file}");
            assert!(!board.panels.is_empty(), "{file}: no panels");
            let mut ids = BTreeSet::new();
            check_layout(file, &board.json["panels"], &mut ids);
            for panel in &board.panels {
                assert!(!panel.title.is_empty(), "{file}: a panel without a title");
                for target in &panel.targets {
                    assert!(
                        !target.expr.trim().is_empty(),
                        "{file}: panel {:?} target {} has no expr",
                        panel.title,
                        target.ref_id
                    );
                }
            }
            for used in board.variables_used() {
                assert!(
                    board.variable(&used).is_some(),
                    "{file} uses ${used}, not in its templating"
                );
            }
            for var in &board.variables {
                if var.kind == "query" {
                    let q = var.query.as_deref().unwrap_or_default();
                    assert!(
                        q.starts_with("label_values("),
                        "{file}: variable {} is not label_values(…): {q}",
                        var.name
                    );
                }
            }
        }
    }

    /// Every panel and target uses the `${datasource}` variable; ids are
    /// unique; panels fit the 24-column grid.
    fn check_layout(file: &str, panels: &Value, ids: &mut BTreeSet<u64>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            let id = panel["id"].as_u64().expect("a panel id");
            assert!(ids.insert(id), "{file}: panel id {id} twice");
            let pos = &panel["gridPos"];
            let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
            assert!(x + w <= 24, "{file}: panel {title:?} beyond the grid");
            if panel["type"] != "row" && panel["type"] != "text" {
                assert_eq!(
                    panel["datasource"]["uid"], "${datasource}",
                    "{file}: {title}"
                );
                for target in panel["targets"].as_array().into_iter().flatten() {
                    assert_eq!(
                        target["datasource"]["uid"], "${datasource}",
                        "{file}: {title}"
                    );
                }
            }
            check_layout(file, &panel["panels"], ids);
        }
    }

    #[test]
    fn the_workload_dashboard_fills_in_a_workload() {
        let board = load(&default_dir().join("workload.json")).unwrap();
        let values = Values::from([("namespace", "shop"), ("workload", "cart")])
            .set_many("srcwl", &["web", "api"])
            .set("__rate_interval", "30s");
        let exprs = board.expressions(&values).unwrap();
        let (_, volume) = exprs
            .iter()
            .find(|(panel, _)| panel == "Incoming Request Volume")
            .unwrap();
        assert_eq!(
            volume,
            r#"round(sum(rate(istio_requests_total{reporter=~"destination", destination_workload_namespace="shop", destination_workload="cart"}[30s])), 0.001)"#
        );
        let (_, by_source) = exprs
            .iter()
            .find(|(panel, _)| panel == "Incoming Requests By Source And Response Code")
            .unwrap();
        assert!(
            by_source.contains(r#"source_workload_namespace=~".*", source_workload=~"(web|api)""#),
            "{by_source}"
        );
    }
}
