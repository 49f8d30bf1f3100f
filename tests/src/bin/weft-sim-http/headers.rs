//! Command-line values shared by the subcommands (`--header 'K: V'`,
//! durations) and header maps as JSON objects.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// One `--header 'Name: value'`.
#[derive(Debug, Clone)]
pub struct HeaderArg {
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// Parses `Name: value` (spaces around the value are dropped).
pub fn parse_header(arg: &str) -> Result<HeaderArg, String> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| format!("{arg:?} is not 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a valid header name", name.trim()))?;
    // `@path`: the value is the file's content (a value too large for a
    // command line).
    let value = match value.trim().strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("reading the header value from {path}: {e}"))?,
        None => value.to_string(),
    };
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("{:?} is not a valid header value", value.trim()))?;
    Ok(HeaderArg { name, value })
}

/// Seconds, fractional allowed, more than zero.
pub fn parse_secs(arg: &str) -> Result<Duration, String> {
    match arg.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{arg:?} is not a number of seconds above 0")),
    }
}

/// Every header, by its (lower case) name; repeated headers' values joined
/// by `", "`, non-UTF-8 bytes replaced.
pub fn to_json(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .keys()
        .map(|name| {
            let values: Vec<_> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (name.as_str().to_string(), values.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_args() {
        let h = parse_header("X-Route:  canary ").unwrap();
        assert_eq!(
            (h.name.as_str(), h.value.to_str().unwrap()),
            ("x-route", "canary")
        );
        let h = parse_header("x-empty:").unwrap();
        assert_eq!(h.value, "");
        assert!(parse_header("x-none").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_header("a b: v").is_err());
        assert!(parse_header("x: a\nb").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "inf", "NaN", "ten", ""] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut map = HeaderMap::new();
        map.append("x-b", HeaderValue::from_static("1"));
        map.append("x-b", HeaderValue::from_static("2"));
        map.append("accept", HeaderValue::from_static("*/*"));
        map.append("x-bin", HeaderValue::from_bytes(b"a\xffb").unwrap());
        let json = serde_json::to_string(&to_json(&map)).unwrap();
        assert_eq!(
            json,
            r#"{"accept":"*/*","x-b":"1, 2","x-bin":"a\ufffdb"}"#.replace("\\ufffd", "\u{fffd}")
        );
    }
}
