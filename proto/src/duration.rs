//! Durations on command lines and in environment variables: a whole
//! number and a unit (`500ms`, `30s`, `5m`, `24h`, `10d`), or a bare
//! number of seconds. One parser for every weft binary, so that a flag
//! reads the same everywhere. (Istio resources carry Go's
//! `time.ParseDuration` form instead; weft-control parses those.)

use std::time::Duration;

/// Parses `text`; the error names the text and what was expected. Zero is
/// a duration here: callers that need more say so. Values too large for a
/// `Duration` saturate.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not a duration: expected a whole number and a unit, e.g. 500ms, 30s, 5m, 24h")
    })?;
    let seconds = |per: u64| Duration::from_secs(value.saturating_mul(per));
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3_600)),
        "d" => Ok(seconds(86_400)),
        other => Err(format!(
            "`{text}`: unknown duration unit `{other}` (use ms, s, m, h or d)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 45 "), Ok(Duration::from_secs(45)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("10d"), Ok(Duration::from_secs(864_000)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse(&format!("{}d", u64::MAX)),
            Ok(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn errors_name_the_text_and_the_reason() {
        let err = parse("weeks").unwrap_err();
        assert!(err.contains("`weeks` is not a duration"), "{err}");
        let err = parse("5w").unwrap_err();
        assert!(err.contains("unknown duration unit `w`"), "{err}");
        assert!(parse("").is_err());
        assert!(parse("ms").is_err());
        assert!(parse("1.5s").is_err());
    }
}
