//! Grafana's variables: their values, and their substitution into the
//! text of queries.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::Dashboard;

/// Grafana's built-in variables and the fixed values they get here.
/// `$__rate_interval` is what Grafana computes for a 15 s scrape interval
/// and a short time range (`4 × scrape interval`, at least).
pub const BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__rate_interval_ms", "60000"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "5m"),
    ("__range_s", "300"),
    ("__range_ms", "300000"),
];

/// The values of a dashboard's variables, as a test sets them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    vars: BTreeMap<String, Chosen>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chosen {
    Some(Vec<String>),
    All,
}

// === impl Values ===

impl Values {
    /// No values: every variable takes its default.
    pub fn new() -> Values {
        Values::default()
    }

    /// `name` = `value` (a built-in such as `__rate_interval` too).
    pub fn set(mut self, name: &str, value: &str) -> Values {
        self.vars
            .insert(name.to_string(), Chosen::Some(vec![value.to_string()]));
        self
    }

    /// Several values of a multi-value variable.
    pub fn set_many(mut self, name: &str, values: &[&str]) -> Values {
        self.vars.insert(
            name.to_string(),
            Chosen::Some(values.iter().map(|v| v.to_string()).collect()),
        );
        self
    }

    /// "All" for a variable that has it.
    pub fn all(mut self, name: &str) -> Values {
        self.vars.insert(name.to_string(), Chosen::All);
        self
    }
}

impl<'a, const N: usize> From<[(&'a str, &'a str); N]> for Values {
    fn from(pairs: [(&'a str, &'a str); N]) -> Values {
        pairs
            .into_iter()
            .fold(Values::new(), |values, (k, v)| values.set(k, v))
    }
}

/// Values for every variable of weft's dashboards that has no default,
/// named like Istio's Bookinfo sample; enough to turn every expression
/// into PromQL.
pub fn example_values() -> Values {
    Values::from([
        ("namespace", "default"),
        ("workload", "productpage-v1"),
        ("service", "productpage.default.svc.cluster.local"),
    ])
}

/// A dashboard variable (`templating.list[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Its name (`$name`).
    pub name: String,
    /// Grafana's type: `query`, `custom`, `datasource`, `constant`, …
    pub kind: String,
    /// The query of a `query` variable (e.g. `label_values(…)`), or the
    /// comma-separated options of a `custom` one.
    pub query: Option<String>,
    /// Whether several values may be chosen.
    pub multi: bool,
    /// Whether "All" may be chosen.
    pub include_all: bool,
    /// What "All" stands for, if set.
    pub all_value: Option<String>,
    /// The default selection (`["$__all"]` for All), empty if none.
    pub default: Vec<String>,
}

// === impl Variable ===

impl Variable {
    pub(super) fn parse(json: &Value) -> Result<Variable> {
        let name = json["name"]
            .as_str()
            .context("a variable without a name")?
            .to_string();
        let query = match &json["query"] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("query").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let default = match &json["current"]["value"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Variable {
            kind: json["type"].as_str().unwrap_or_default().to_string(),
            query,
            multi: json["multi"].as_bool().unwrap_or(false),
            include_all: json["includeAll"].as_bool().unwrap_or(false),
            all_value: json["allValue"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            default,
            name,
        })
    }

    /// The text substituted for the variable given `chosen` values.
    fn format(&self, chosen: &Chosen, format: Option<&str>) -> Result<String> {
        let values = match chosen {
            Chosen::All => {
                return Ok(self.all_value.clone().unwrap_or_else(|| ".*".to_string()));
            }
            Chosen::Some(values) if values.len() == 1 && values[0] == "$__all" => {
                return self.format(&Chosen::All, format);
            }
            Chosen::Some(values) => values,
        };
        if values.is_empty() {
            bail!("no value for variable {}", self.name);
        }
        let regex = || {
            let escaped: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
            if escaped.len() == 1 {
                escaped[0].clone()
            } else {
                format!("({})", escaped.join("|"))
            }
        };
        Ok(match format {
            None if self.multi || self.include_all => regex(),
            None => values.join(","),
            Some("regex") => regex(),
            Some("pipe") => values.join("|"),
            Some("csv") | Some("raw") | Some("text") => values.join(","),
            Some("singlequote") => values
                .iter()
                .map(|v| format!("'{v}'"))
                .collect::<Vec<_>>()
                .join(","),
            Some("doublequote") => values
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(","),
            Some(other) => bail!(
                "format {other:?} of variable {} is not supported",
                self.name
            ),
        })
    }
}

/// Grafana's regex escape for a value in a PromQL string: a regex
/// metacharacter gets a backslash, written `\\` inside the string.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\\\\\"),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '\'' | '+' | '?' | '.' | '(' | ')' | '|' => {
                out.push_str("\\\\");
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

// === impl Dashboard ===

impl Dashboard {
    /// Names of every variable the queries and variable queries refer to
    /// (built-ins and `$1`-style regex groups excepted).
    pub fn variables_used(&self) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        let texts = self
            .panels
            .iter()
            .flat_map(|p| p.targets.iter().map(|t| t.expr.as_str()))
            .chain(self.variables.iter().filter_map(|v| v.query.as_deref()));
        for text in texts {
            for reference in references(text) {
                if !reference.name.starts_with("__")
                    && !reference.name.chars().all(|c| c.is_ascii_digit())
                {
                    used.insert(reference.name);
                }
            }
        }
        used
    }

    /// `text` with every variable replaced.
    pub fn substitute(&self, text: &str, values: &Values) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for r in references(text) {
            out.push_str(&text[last..r.start]);
            last = r.end;
            if r.name.chars().all(|c| c.is_ascii_digit()) {
                // A regex group such as label_replace's "$1".
                out.push_str(&text[r.start..r.end]);
                continue;
            }
            let given = values.vars.get(&r.name);
            let variable = self.variable(&r.name);
            let value = match (given, variable) {
                (Some(chosen), Some(var)) => var.format(chosen, r.format.as_deref())?,
                (Some(Chosen::Some(v)), None) => v.join(","),
                (Some(Chosen::All), None) => ".*".to_string(),
                (None, Some(var)) if !var.default.is_empty() => {
                    var.format(&Chosen::Some(var.default.clone()), r.format.as_deref())?
                }
                (None, _) => match BUILTINS.iter().find(|(name, _)| *name == r.name) {
                    Some((_, value)) => value.to_string(),
                    None if variable.is_some() => bail!(
                        "variable {} of {} has no default: give it a value",
                        r.name,
                        self.file
                    ),
                    None => bail!(
                        "{} uses variable ${}, which it does not define",
                        self.file,
                        r.name
                    ),
                },
            };
            out.push_str(&value);
        }
        out.push_str(&text[last..]);
        Ok(out)
    }
}

/// A variable reference in a text: byte range, name, `:format`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    start: usize,
    end: usize,
    name: String,
    format: Option<String>,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Grafana's three forms: `$name`, `${name}` / `${name:format}`,
/// `[[name]]` / `[[name:format]]`.
fn references(text: &str) -> Vec<Reference> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            if let Some(close) = text[i + 2..].find('}') {
                let inner = &text[i + 2..i + 2 + close];
                let (name, format) = match inner.split_once(':') {
                    Some((n, f)) => (n, Some(f.to_string())),
                    None => (inner, None),
                };
                if !name.is_empty() && name.bytes().all(is_word) {
                    let end = i + 3 + close;
                    out.push(Reference {
                        start: i,
                        end,
                        name: name.to_string(),
                        format,
                    });
                    i = end;
                    continue;
                }
            }
        } else if bytes[i] == b'$' {
            let len = bytes[i + 1..].iter().take_while(|b| is_word(**b)).count();
            if len > 0 {
                out.push(Reference {
                    start: i,
                    end: i + 1 + len,
                    name: text[i + 1..i + 1 + len].to_string(),
                    format: None,
                });
                i += 1 + len;
                continue;
            }
        } else if bytes[i] == b'['
            && bytes.get(i + 1) == Some(&b'[')
            && let Some(close) = text[i + 2..].find("]]")
        {
            let inner = &text[i + 2..i + 2 + close];
            let (name, format) = match inner.split_once(':') {
                Some((n, f)) => (n, Some(f.to_string())),
                None => (inner, None),
            };
            if !name.is_empty() && name.bytes().all(is_word) {
                let end = i + 4 + close;
                out.push(Reference {
                    start: i,
                    end,
                    name: name.to_string(),
                    format,
                });
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references() {
        let refs = references("a $x ${y} ${z:regex} [[w]] [[v:pipe]] $__rate_interval \"$1\" $");
        let names: Vec<_> = refs
            .iter()
            .map(|r| (r.name.as_str(), r.format.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("x", None),
                ("y", None),
                ("z", Some("regex")),
                ("w", None),
                ("v", Some("pipe")),
                ("__rate_interval", None),
                ("1", None)
            ]
        );
    }

    #[test]
    fn substitutes_like_grafana() {
        let board = Dashboard::parse(
            "t.json",
            r#"{"templating": {"list": [
                {"name": "ns", "type": "query"},
                {"name": "wl", "type": "query", "multi": true, "includeAll": true, "allValue": ".*",
                 "current": {"value": ["$__all"]}},
                {"name": "rep", "type": "custom", "multi": true, "current": {"value": ["destination"]}},
                {"name": "one", "type": "custom", "current": {"value": "x"}}
            ]}, "panels": [
                {"title": "P", "type": "stat", "targets": [{"refId": "A",
                 "expr": "sum(rate(m{ns=\"$ns\", wl=~\"${wl}\", r=~\"[[rep]]\", o=\"$one\"}[$__rate_interval]))"}]}
            ]}"#,
        )
        .unwrap();
        let values = Values::new().set("ns", "shop");
        let q = &board.queries(&values).unwrap()[0];
        assert_eq!(
            q.expr,
            "sum(rate(m{ns=\"shop\", wl=~\".*\", r=~\"destination\", o=\"x\"}[1m]))"
        );
        let values = values
            .set_many("wl", &["cart", "pay.v2"])
            .set_many("rep", &["source", "destination"])
            .set("__rate_interval", "10s");
        let q = &board.queries(&values).unwrap()[0];
        assert_eq!(
            q.expr,
            r#"sum(rate(m{ns="shop", wl=~"(cart|pay\\.v2)", r=~"(source|destination)", o="x"}[10s]))"#
        );
        // No value and no default: an error naming the variable.
        let err = board.queries(&Values::new()).unwrap_err();
        assert!(format!("{err:#}").contains("variable ns"), "{err:#}");
        assert_eq!(
            board.variables_used(),
            BTreeSet::from(["ns", "wl", "rep", "one"].map(String::from))
        );
    }
}
