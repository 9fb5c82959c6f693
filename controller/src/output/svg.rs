//! Small inline SVG line charts for the report: no scripts, no network.

use std::fmt::Write;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Starts an SVG of `w` x `h` with its title.
fn open_svg(title: &str, w: f64, h: f64, left: f64) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}">"#,
        t = esc(title)
    );
    let _ = write!(
        o,
        r#"<text x="{left}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    o
}

/// Five horizontal grid lines with their values, from 0 to `ymax`.
fn y_grid(o: &mut String, left: f64, pw: f64, ymax: f64, y: impl Fn(f64) -> f64) {
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let _ = write!(
            o,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y(v) + 4.0,
            fmt_num(v),
            yy = y(v)
        );
    }
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

/// Renders a line chart of the series (x in seconds).
pub fn line_chart(title: &str, y_label: &str, series: &[Series<'_>]) -> String {
    xy_chart(title, "s", y_label, series)
}

/// A line chart with `x_unit` after every x tick ("s" for time, "" for a count).
pub fn xy_chart(title: &str, x_unit: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let (w, h) = (760.0, 260.0);
    let (left, right, top, bottom) = (60.0, 20.0, 30.0, 40.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let xmax = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(0.0, f64::max),
    );
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x = |v: f64| left + v / xmax * pw;
    let y = |v: f64| top + ph - v / ymax * ph;
    let mut o = open_svg(title, w, h, left);
    y_grid(&mut o, left, pw, ymax, y);
    for i in 0..=4 {
        let xv = xmax * f64::from(i) / 4.0;
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}{}</text>"#,
            x(xv),
            top + ph + 16.0,
            fmt_num(xv),
            esc(x_unit)
        );
    }
    let _ = write!(
        o,
        r#"<text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        if !s.points.is_empty() {
            let pts: Vec<String> = s
                .points
                .iter()
                .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
                .collect();
            let _ = write!(
                o,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"><title>{}</title></polyline>"#,
                esc(s.color),
                pts.join(" "),
                esc(s.name)
            );
        }
        let lx = left + 10.0 + 90.0 * i as f64;
        let _ = write!(
            o,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            h - 14.0,
            esc(s.color),
            lx + 14.0,
            h - 5.0,
            esc(s.name)
        );
    }
    o.push_str("</svg>");
    o
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(17.0), 20.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(nice_max(101.0), 200.0);
    }

    #[test]
    fn escapes_names() {
        let svg = line_chart(
            "<t>",
            "ms",
            &[Series {
                name: "a&b",
                color: "red",
                points: vec![(0.0, 1.0), (1.0, 2.0)],
            }],
        );
        assert!(svg.contains("&lt;t&gt;") && svg.contains("a&amp;b") && !svg.contains("<t>"));
        assert!(svg.contains("<polyline"));
    }
}

/// x position of a percentile on HdrHistogram's axis: log10(1 / (1 - p)).
fn percentile_x(p: f64) -> f64 {
    let tail = (1.0 - p / 100.0).max(1e-7);
    (1.0 / tail).log10()
}

/// The percentile distribution on a log axis (x = 1/(1-p): ticks at 90%,
/// 99%, 99.9% …). Every series is a `<g class="series" data-series=…>` that
/// a little script of the page can hide or show.
pub fn percentile_chart(title: &str, series: &[Series<'_>]) -> String {
    let (w, h) = (760.0, 300.0);
    let (left, right, top, bottom) = (60.0, 20.0, 30.0, 40.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let finite = |p: f64| p < 100.0;
    let xmax = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .filter(|q| finite(q.0))
                .map(|q| percentile_x(q.0))
        })
        .fold(1.0_f64, f64::max)
        .ceil()
        .max(2.0);
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|q| q.1))
            .fold(0.0, f64::max),
    );
    let x = |p: f64| left + percentile_x(p).min(xmax) / xmax * pw;
    let y = |v: f64| top + ph - v / ymax * ph;
    let mut o = open_svg(title, w, h, left);
    y_grid(&mut o, left, pw, ymax, y);
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
    for (decade, label) in labels.iter().enumerate().take(xmax as usize + 1) {
        let xx = left + decade as f64 / xmax * pw;
        let _ = write!(
            o,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" font-size="11" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 16.0
        );
    }
    let _ = write!(
        o,
        r#"<text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">milliseconds</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|q| finite(q.0))
            .map(|&(p, v)| format!("{:.1},{:.1}", x(p), y(v)))
            .collect();
        let _ = write!(
            o,
            r#"<g class="series" data-series="{name}"><polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"><title>{name}</title></polyline></g>"#,
            esc(s.color),
            pts.join(" "),
            name = esc(s.name)
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod percentile_tests {
    use super::*;

    #[test]
    fn log_axis_positions() {
        assert!((percentile_x(90.0) - 1.0).abs() < 1e-9);
        assert!((percentile_x(99.0) - 2.0).abs() < 1e-9);
        assert!((percentile_x(99.9) - 3.0).abs() < 1e-6);
        let svg = percentile_chart(
            "d",
            &[Series {
                name: "<r>",
                color: "red",
                points: vec![(0.0, 1.0), (99.0, 5.0), (100.0, 9.0)],
            }],
        );
        assert!(svg.contains("99%") && svg.contains(r#"data-series="&lt;r&gt;""#));
    }
}
