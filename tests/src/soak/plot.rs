//! A line chart as SVG: a few series over time, with vertical marks.

use std::fmt::Write as _;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 360.0;
const MARGIN: f64 = 50.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// `series`: (name, points (x seconds, y)); `marks`: x values drawn as
/// thin vertical lines.
pub fn svg(title: &str, series: &[(String, Vec<(f64, f64)>)], marks: &[f64]) -> String {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_max) = (1.0f64, 1.0f64);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    y_max *= 1.1;
    let sx = |x: f64| MARGIN + x / x_max * (WIDTH - 2.0 * MARGIN);
    let sy = |y: f64| HEIGHT - MARGIN - y / y_max * (HEIGHT - 2.0 * MARGIN);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{MARGIN}" y="20">{}</text>"#, escape(title));
    // Axes, with the extremes labelled.
    let (x0, y0, x1, y1) = (sx(0.0), sy(0.0), sx(x_max), sy(y_max));
    let _ = writeln!(
        out,
        r#"<path d="M{x0},{y1} L{x0},{y0} L{x1},{y0}" stroke="black" fill="none"/>"#
    );
    let _ = writeln!(out, r#"<text x="{x0}" y="{}">0 s</text>"#, y0 + 16.0);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{x_max:.0} s</text>"#,
        x1,
        y0 + 16.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">{y_max:.1}</text>"#,
        x0 - 4.0,
        y1 + 4.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">0</text>"#,
        x0 - 4.0,
        y0
    );
    for &m in marks {
        let x = sx(m);
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{y1}" x2="{x}" y2="{y0}" stroke="#bbb" stroke-dasharray="2,3"/>"##
        );
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" stroke="{colour}" fill="none" stroke-width="1.5"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            WIDTH - MARGIN - 100.0,
            40.0 + 16.0 * i as f64,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_and_mark() {
        let series = vec![
            ("node-1".to_string(), vec![(0.0, 10.0), (5.0, 12.0)]),
            ("node-2".to_string(), vec![(0.0, 8.0), (5.0, 9.0)]),
        ];
        let svg = svg("RSS <MiB>", &series, &[2.5]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<line ").count(), 1);
        assert!(svg.contains("RSS &lt;MiB&gt;"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
