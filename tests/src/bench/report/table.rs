//! The report's rows as aligned text tables, one per kind of scenario.

use std::fmt::Write as _;

use super::Row;

/// A number with about three significant digits.
pub fn num(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(0.0) => "0".to_string(),
        Some(v) => {
            let a = v.abs();
            if a >= 1000.0 {
                format!("{v:.0}")
            } else if a >= 100.0 {
                format!("{v:.1}")
            } else if a >= 10.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.3}")
            }
        }
    }
}

/// The rows as aligned text tables: direct against weft, then, if any,
/// the three paths of the HTTP and gRPC scenarios, then L7 with and
/// without authorization, then weft with traffic metrics on and off.
pub fn table(rows: &[Row]) -> String {
    let (metrics, rows): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.metrics());
    let (authz, rows): (Vec<&Row>, Vec<&Row>) = rows.into_iter().partition(|r| r.authz());
    let (three, two): (Vec<&Row>, Vec<&Row>) = rows.into_iter().partition(|r| r.three_paths());
    let ratio = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or("-".into());
    let two = match two.iter().any(|r| r.has_ztunnel()) {
        false => aligned(&["direct", "weft", "weft/direct"], &two, |r| {
            vec![num(r.direct), num(r.weft), ratio(r.ratio)]
        }),
        true => aligned(
            &[
                "direct",
                "weft",
                "ztunnel",
                "weft/direct",
                "ztunnel/direct",
                "weft/ztunnel",
            ],
            &two,
            |r| {
                vec![
                    num(r.direct),
                    num(r.weft),
                    num(r.ztunnel),
                    ratio(r.ratio),
                    ratio(r.ztunnel_direct),
                    ratio(r.weft_ztunnel),
                ]
            },
        ),
    };
    let three = aligned(
        &[
            "direct",
            "weft-l4",
            "weft-l7",
            "l4/direct",
            "l7/l4",
            "l7/direct",
            "l7-l4",
        ],
        &three,
        |r| {
            vec![
                num(r.direct),
                num(r.weft),
                num(r.weft_l7),
                ratio(r.ratio),
                ratio(r.l7_l4),
                ratio(r.l7_direct),
                signed(r.l7_minus_l4),
            ]
        },
    );
    let authz = aligned(
        &["weft-l7", "weft-l7-authz", "added by authz"],
        &authz,
        |r| {
            vec![
                num(r.weft_l7),
                num(r.weft_l7_authz),
                signed(r.authz_minus_l7),
            ]
        },
    );
    let metrics = aligned(
        &["telemetry on", "telemetry off", "on/off", "95% interval"],
        &metrics,
        |r| {
            vec![
                num(r.metrics_on()),
                num(r.weft_metrics_off),
                ratio(r.metrics_on_off),
                match r.metrics_on_off_interval {
                    Some((lo, hi)) => format!("{}-{}", ratio(Some(lo)), ratio(Some(hi))),
                    None => "-".to_string(),
                },
            ]
        },
    );
    // The tables that have rows, a blank line between them.
    [two, three, authz, metrics]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A difference with its sign, about three significant digits.
pub(super) fn signed(v: Option<f64>) -> String {
    match v {
        Some(v) if v > 0.0 => format!("+{}", num(Some(v))),
        v => num(v),
    }
}

/// One table: scenario, metric and unit left-aligned, then `values`
/// right-aligned under `columns`; a scenario's name only on its first
/// row. Empty without rows.
fn aligned(columns: &[&str], rows: &[&Row], values: impl Fn(&Row) -> Vec<String>) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let header: Vec<&str> = ["scenario", "metric", "unit"]
        .into_iter()
        .chain(columns.iter().copied())
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![r.scenario.clone(), r.metric.to_string(), r.unit.to_string()];
            cells.extend(values(r));
            cells
        })
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        for (i, (c, w)) in row.iter().zip(&width).enumerate() {
            let pad = w - c.chars().count();
            if i >= 3 {
                let _ = write!(out, "{}{c}  ", " ".repeat(pad));
            } else {
                let _ = write!(out, "{c}{}  ", " ".repeat(pad));
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(
        &mut out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    let mut last = "";
    for (row, r) in cells.iter().zip(rows) {
        let mut row = row.clone();
        if r.scenario == last {
            row[0] = String::new();
        }
        last = &r.scenario;
        line(&mut out, &row);
    }
    out
}
