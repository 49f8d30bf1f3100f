//! `weftctl stats`: the agent's counters (admin API `/stats`, shaped by
//! `weft_agent::metrics`), one `name value` line each.

use serde_json::Value;

/// Flattens the JSON object into sorted `dotted.name value` lines.
pub fn render(stats: &Value) -> String {
    let mut lines = Vec::new();
    flatten("", stats, &mut lines);
    lines.sort();
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines
        .into_iter()
        .map(|(k, v)| format!("{k:width$}   {v}\n"))
        .collect()
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_counters() {
        let stats = serde_json::json!({
            "connections_active": 2,
            "connections_denied": {"policy_deny": 1, "tls_handshake": 0},
        });
        assert_eq!(
            render(&stats),
            "connections_active                 2\n\
             connections_denied.policy_deny     1\n\
             connections_denied.tls_handshake   0\n"
        );
    }
}
