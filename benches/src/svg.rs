//! A hand-written SVG bar chart: for every (scenario, job), one bar per
//! server with its throughput (IOPS, or MiB/s for 1 MiB jobs) relative to
//! the best non-ringstor server, with a line at 1.0. ringstor's bar is its
//! ratio to the best other; without ringstor it shows how the others
//! compare. No plotting dependencies.

use crate::results::{best_other_throughput, groups, Row};
use crate::servers::ServerKind;
use std::fmt::Write;

const LABEL_W: f64 = 250.0;
const PLOT_W: f64 = 480.0;
const BAR_H: f64 = 12.0;
const GROUP_GAP: f64 = 10.0;
const TOP: f64 = 50.0;

fn color(k: ServerKind) -> &'static str {
    match k {
        ServerKind::Ringstor => "#d62728",
        ServerKind::Qsd => "#1f77b4",
        ServerKind::Nbdkit => "#2ca02c",
        ServerKind::QemuNbd => "#9467bd",
        ServerKind::RingstorNoStats => "#ff9896",
    }
}

/// Escape text for SVG/XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart for `rows`, titled `title`.
pub fn chart(title: &str, rows: &[Row]) -> String {
    let groups = groups(rows);
    let bars: Vec<Vec<(ServerKind, Option<f64>)>> = groups
        .iter()
        .map(|(_, _, g)| {
            let best = best_other_throughput(g);
            g.iter()
                .map(|r| (r.server, r.throughput().zip(best).map(|(t, b)| t / b)))
                .collect()
        })
        .collect();
    let max = bars
        .iter()
        .flatten()
        .filter_map(|(_, v)| *v)
        .fold(2.0_f64, f64::max)
        .ceil();
    let scale = PLOT_W / max;
    let height: f64 = TOP
        + bars
            .iter()
            .map(|b| b.len() as f64 * BAR_H + GROUP_GAP)
            .sum::<f64>()
        + 30.0;
    let width = LABEL_W + PLOT_W + 80.0;

    let mut s = String::new();
    // `write!` to a String cannot fail.
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Legend.
    for (i, k) in ServerKind::ALL.iter().enumerate() {
        let x = LABEL_W + i as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.0}" y="28" width="10" height="10" fill="{}"/><text x="{:.0}" y="37">{}</text>"#,
            color(*k),
            x + 14.0,
            k.id()
        );
    }
    let mut y = TOP;
    for ((scenario, job, _), group) in groups.iter().zip(&bars) {
        let gh = group.len() as f64 * BAR_H;
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + gh / 2.0 + 4.0,
            escape(&format!("{scenario} / {job}"))
        );
        for (i, (k, v)) in group.iter().enumerate() {
            let by = y + i as f64 * BAR_H;
            match v {
                Some(v) => {
                    let _ = writeln!(
                        s,
                        r#"<rect x="{LABEL_W:.0}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {v:.2}x</title></rect><text x="{:.1}" y="{:.1}" font-size="9">{v:.2}x</text>"#,
                        by + 1.0,
                        v * scale,
                        BAR_H - 2.0,
                        color(*k),
                        k.id(),
                        LABEL_W + v * scale + 3.0,
                        by + BAR_H - 3.0
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.0}" y="{:.1}" font-size="9">{}: no data</text>"#,
                        LABEL_W + 3.0,
                        by + BAR_H - 3.0,
                        k.id()
                    );
                }
            }
        }
        y += gh + GROUP_GAP;
    }
    // Axis ticks and the 1.0 line.
    let mut t = 0.0;
    while t <= max {
        let x = LABEL_W + t * scale;
        let dash = if t == 1.0 {
            r#"stroke="black" stroke-width="1.5""#
        } else {
            r##"stroke="#bbb" stroke-dasharray="3,3""##
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{:.0}" x2="{x:.1}" y2="{y:.0}" {dash}/><text x="{x:.1}" y="{:.0}" text-anchor="middle">{t:.1}x</text>"#,
            TOP - 4.0,
            y + 14.0
        );
        t += 0.5;
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn chart_has_one_bar_per_row_and_a_unit_line() {
        let r = sample_report(true);
        let svg = chart("t & <x>", &r.rows);
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), r.rows.len());
        assert!(svg.contains("<title>ringstor: 1.50x</title>"));
        assert!(svg.contains("<title>nbdkit: 0.50x</title>"));
        assert!(svg.contains(r#"stroke="black""#));
        assert!(svg.contains("t &amp; &lt;x&gt;"));
    }
}
