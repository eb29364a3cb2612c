//! The page's SVG line charts: series, axes, labels; drawn inline, no script.

use super::escape::esc;
use crate::report::fmt_us;

pub(super) const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One line of a chart.
pub(super) struct Series {
    pub(super) name: String,
    pub(super) color: &'static str,
    pub(super) dashed: bool,
    pub(super) points: Vec<(f64, f64)>,
}

/// Axis scale of a chart.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Scale {
    Linear,
    /// Base-10 logarithm (values ≤ 0 are dropped).
    Log,
}

pub(super) struct Chart<'a> {
    pub(super) title: &'a str,
    pub(super) x_label: &'a str,
    pub(super) y_label: &'a str,
    pub(super) y_scale: Scale,
    /// Custom x tick labels (position, text); default: 5 even ticks.
    pub(super) x_ticks: Option<Vec<(f64, String)>>,
    pub(super) y_fmt: fn(f64) -> String,
}

pub(super) const W: f64 = 720.0;
pub(super) const H: f64 = 300.0;
pub(super) const ML: f64 = 70.0;
pub(super) const MR: f64 = 20.0;
pub(super) const MT: f64 = 30.0;
pub(super) const MB: f64 = 45.0;

pub(super) fn svg_chart(c: &Chart<'_>, series: &[Series]) -> String {
    let ty = |v: f64| match c.y_scale {
        Scale::Linear => Some(v),
        Scale::Log => (v > 0.0).then(|| v.log10()),
    };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|&(x, y)| ty(y).map(|y| (x, y))))
        .collect();
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img"><title>{}</title><text x="{}" y="18" text-anchor="middle" class="t">{}</text>"#,
        esc(c.title),
        W / 2.0,
        esc(c.title)
    );
    if pts.is_empty() {
        svg.push_str(&format!(
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        ));
        return svg;
    }
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(x, y) in &pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if c.y_scale == Scale::Linear {
        y0 = y0.min(0.0);
    } else {
        y0 = y0.floor();
        y1 = y1.ceil();
    }
    if (x1 - x0).abs() < 1e-9 {
        x1 = x0 + 1.0;
    }
    if (y1 - y0).abs() < 1e-9 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| ML + (x - x0) / (x1 - x0) * (W - ML - MR);
    let py = |y: f64| H - MB - (y - y0) / (y1 - y0) * (H - MT - MB);
    // Axes and grid.
    svg.push_str(&format!(
        r##"<rect x="{ML}" y="{MT}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        W - ML - MR,
        H - MT - MB
    ));
    let y_ticks: Vec<f64> = match c.y_scale {
        Scale::Log => (y0 as i64..=y1 as i64).map(|e| e as f64).collect(),
        Scale::Linear => (0..=4)
            .map(|i| y0 + (y1 - y0) * f64::from(i) / 4.0)
            .collect(),
    };
    for t in y_ticks {
        let v = match c.y_scale {
            Scale::Log => 10f64.powf(t),
            Scale::Linear => t,
        };
        svg.push_str(&format!(
            r##"<line x1="{ML}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end" class="a">{}</text>"##,
            W - MR,
            ML - 5.0,
            py(t) + 4.0,
            esc(&(c.y_fmt)(v)),
            y = py(t)
        ));
    }
    let x_ticks = c.x_ticks.clone().unwrap_or_else(|| {
        (0..=5)
            .map(|i| {
                let x = x0 + (x1 - x0) * f64::from(i) / 5.0;
                (x, format!("{x:.0}"))
            })
            .collect()
    });
    for (x, label) in x_ticks.into_iter().filter(|(x, _)| *x >= x0 && *x <= x1) {
        svg.push_str(&format!(
            r##"<line x1="{p:.1}" x2="{p:.1}" y1="{MT}" y2="{}" stroke="#eee"/><text x="{p:.1}" y="{}" text-anchor="middle" class="a">{}</text>"##,
            H - MB,
            H - MB + 15.0,
            esc(&label),
            p = px(x)
        ));
    }
    svg.push_str(&format!(
        r#"<text x="{}" y="{}" text-anchor="middle" class="a">{}</text><text x="14" y="{}" text-anchor="middle" class="a" transform="rotate(-90 14 {})">{}</text>"#,
        (ML + W - MR) / 2.0,
        H - 8.0,
        esc(c.x_label),
        (MT + H - MB) / 2.0,
        (MT + H - MB) / 2.0,
        esc(c.y_label)
    ));
    // Lines and legend.
    for (i, s) in series.iter().enumerate() {
        let width = stroke_width(i, series.len());
        let path: Vec<String> = s
            .points
            .iter()
            .filter_map(|&(x, y)| ty(y).map(|y| format!("{:.1},{:.1}", px(x), py(y))))
            .collect();
        if !path.is_empty() {
            svg.push_str(&format!(
                r#"<polyline fill="none" stroke="{}" stroke-width="{width:.1}"{} points="{}"/>"#,
                s.color,
                if s.dashed {
                    r#" stroke-dasharray="5,3""#
                } else {
                    ""
                },
                path.join(" ")
            ));
        }
        let ly = MT + 14.0 + 14.0 * i as f64;
        svg.push_str(&format!(
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="{width:.1}"{}/><text x="{}" y="{}" class="a">{}</text>"#,
            ML + 10.0,
            ML + 30.0,
            s.color,
            if s.dashed { r#" stroke-dasharray="5,3""# } else { "" },
            ML + 35.0,
            ly + 4.0,
            esc(&s.name)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Stroke width of series `i` of `n`: the first drawn is the widest and the
/// last the thinnest, so a series drawn over the same points as an earlier
/// one (two targets that both ran at the offered rate) leaves the earlier
/// one showing along its edges instead of hiding it.
pub(super) fn stroke_width(i: usize, n: usize) -> f64 {
    const THINNEST: f64 = 1.8;
    const SPREAD: f64 = 2.4;
    THINNEST + SPREAD * n.saturating_sub(i + 1) as f64 / (n.max(2) - 1) as f64
}

pub(super) fn us_label(v: f64) -> String {
    fmt_us(v.round() as u64)
}

pub(super) fn count_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub(super) fn mib_label(v: f64) -> String {
    format!("{:.0} MiB", v / 1024.0)
}

/// Position of a percentile on the "nines" axis: 90 → 1, 99 → 2, 99.9 → 3.
pub(super) fn nines(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.99999)).log10()
}
