//! Types and value rules shared by the Istio kinds: string matches,
//! durations, percentages, destinations, header edits, hosts.

use std::{collections::BTreeMap, time::Duration as StdDuration};

use serde::{Deserialize, Deserializer};

use super::{Invalid, invalid};

/// Istio's `StringMatch`: exactly one of `exact`, `prefix`, `regex` (RE2
/// syntax; weft compiles it with Rust's `regex`, which accepts the same
/// language minus nothing Istio allows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

impl StringMatch {
    pub fn check(&self, path: &str, errors: &mut Vec<Invalid>) {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set != 1 {
            errors.push(invalid(
                path,
                "set exactly one of `exact`, `prefix` and `regex`",
            ));
        }
        if let Some(re) = &self.regex {
            check_regex(re, &format!("{path}.regex"), errors);
        }
    }
}

/// A regular expression that must compile (anchored, as Envoy does).
pub fn check_regex(re: &str, path: &str, errors: &mut Vec<Invalid>) {
    if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
        let reason = e.to_string();
        let reason = reason.lines().last().unwrap_or("").trim().to_string();
        errors.push(invalid(
            path,
            format!("regex `{re}` does not compile: {reason}"),
        ));
    }
}

/// A duration as Istio writes it: Go syntax (`10s`, `1.5s`, `100ms`,
/// `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub StdDuration);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Duration)
            .map_err(serde::de::Error::custom)
    }
}

/// Go's `time.ParseDuration` (without a sign).
pub fn parse_duration(text: &str) -> Result<StdDuration, String> {
    let bad = || format!("`{text}` is not a duration (e.g. `10s`, `1.5s`, `250ms`, `1m30s`)");
    if text == "0" {
        return Ok(StdDuration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad());
    }
    Ok(StdDuration::from_secs_f64(total))
}

/// A duration that must be at least 1ms when set (Istio's rule).
pub fn check_duration(d: Option<Duration>, path: &str, errors: &mut Vec<Invalid>) {
    if let Some(Duration(d)) = d
        && d < StdDuration::from_millis(1)
    {
        errors.push(invalid(path, "must be at least 1ms"));
    }
}

/// `Percent { value }`: 0-100.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

pub fn check_percent(p: Option<Percent>, path: &str, errors: &mut Vec<Invalid>) {
    if let Some(p) = p
        && !(0.0..=100.0).contains(&p.value)
    {
        errors.push(invalid(
            format!("{path}.value"),
            format!("{} is not a percentage (0-100)", p.value),
        ));
    }
}

/// Where traffic goes: a host (a service's name or FQDN, or a
/// ServiceEntry host), optionally a subset and a port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub subset: String,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

impl Destination {
    pub fn check(&self, path: &str, errors: &mut Vec<Invalid>) {
        if self.host.is_empty() {
            errors.push(invalid(format!("{path}.host"), "must be set"));
        } else {
            check_host(&self.host, false, &format!("{path}.host"), errors);
        }
        if !self.subset.is_empty() {
            check_dns_label(&self.subset, &format!("{path}.subset"), errors);
        }
        if let Some(p) = &self.port {
            check_port(p.number, &format!("{path}.port.number"), errors);
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: u32,
}

/// Header edits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl Headers {
    pub fn check(&self, path: &str, errors: &mut Vec<Invalid>) {
        for (which, ops) in [("request", &self.request), ("response", &self.response)] {
            let Some(ops) = ops else { continue };
            for (op, names) in [
                ("set", ops.set.keys().collect::<Vec<_>>()),
                ("add", ops.add.keys().collect()),
                ("remove", ops.remove.iter().collect()),
            ] {
                for name in names {
                    if name.is_empty()
                        || name
                            .bytes()
                            .any(|b| b <= b' ' || b == b':' && !name.starts_with(':'))
                    {
                        errors.push(invalid(
                            format!("{path}.{which}.{op}"),
                            format!("`{name}` is not a valid header name"),
                        ));
                    }
                }
            }
            // As istiod's `ValidateHTTPHeaderValue`: no control character
            // but a tab, and command operators Envoy can parse (Envoy
            // renders them per request, and refuses a route whose value
            // it cannot parse). Also `host`'s, which is not rendered.
            for (op, values) in [("set", &ops.set), ("add", &ops.add)] {
                for (name, value) in values {
                    let at = || format!("{path}.{which}.{op}.{name}");
                    if value.chars().any(|c| c != '\t' && c.is_ascii_control()) {
                        errors.push(invalid(
                            at(),
                            format!("the value {value:?} has a control character"),
                        ));
                    } else if value.contains('%')
                        && let Err(e) = crate::model::access_log::format::parse_header_value(value)
                    {
                        errors.push(invalid(at(), format!("the value `{value}`: {e}")));
                    }
                }
            }
        }
    }
}

/// A port number 1-65535.
pub fn check_port(port: u32, path: &str, errors: &mut Vec<Invalid>) {
    if !(1..=65535).contains(&port) {
        errors.push(invalid(
            path,
            format!("{port} is not a port number (1-65535)"),
        ));
    }
}

/// A DNS label (subset names, port names): lowercase alphanumerics and
/// `-`, at most 63.
pub fn check_dns_label(value: &str, path: &str, errors: &mut Vec<Invalid>) {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        errors.push(invalid(
            path,
            format!("`{value}` is not a DNS label (lowercase letters, digits and '-', at most 63)"),
        ));
    }
}

/// A host: an FQDN or short name, optionally with a leading `*.`
/// wildcard (or `*` alone when `allow_star`).
pub fn check_host(host: &str, allow_star: bool, path: &str, errors: &mut Vec<Invalid>) {
    if host == "*" {
        if !allow_star {
            errors.push(invalid(path, "`*` is not allowed here; name a host"));
        }
        return;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && host.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !ok {
        let hint = if host.contains(':') && !host.contains("://") {
            " (no port in a host; is `key:value` missing a space?)"
        } else if host.contains("://") {
            " (a host, not a URL)"
        } else if host.contains('*') {
            " (a wildcard is only allowed as the whole first label, `*.example.com`)"
        } else {
            ""
        };
        errors.push(invalid(
            path,
            format!("`{host}` is not a valid host name{hint}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1.5s").unwrap(),
            StdDuration::from_millis(1500)
        );
        assert_eq!(parse_duration("1m30s").unwrap(), StdDuration::from_secs(90));
        assert_eq!(
            parse_duration("250ms").unwrap(),
            StdDuration::from_millis(250)
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 s").is_err());
    }

    #[test]
    fn regexes_and_hosts() {
        let mut e = Vec::new();
        check_regex("[a-", "r", &mut e);
        assert!(
            e[0].message.starts_with("regex `[a-` does not compile: "),
            "{}",
            e[0]
        );
        let mut e = Vec::new();
        for h in [
            "reviews",
            "reviews.default.svc.cluster.local",
            "*.example.com",
        ] {
            check_host(h, false, "h", &mut e);
        }
        assert!(e.is_empty(), "{e:?}");
        for h in ["my-service.default:80", "http://x", "a.*.b", "*", "-a"] {
            check_host(h, false, "h", &mut e);
        }
        assert_eq!(e.len(), 5);
    }
}
