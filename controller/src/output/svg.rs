//! Small inline SVG charts for the reports: no network, no library. Each
//! chart fills its container's width, ends its time axis where the run
//! ended, puts ticks on 1-2-5 steps (whole numbers for counts), gives every
//! series its own colour, and carries its legend as HTML below it (entries
//! never split). Hovering a chart shows the exact values at that moment
//! (native tooltips: no script needed).

use std::fmt::Write;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// The y axis: real values, or counts (whole-number ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    Real,
    Counts,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `n` colours, all different: a palette that reads well for up to ten,
/// hues spread evenly around the wheel beyond that.
pub fn colors(n: usize) -> Vec<String> {
    const BASE: [&str; 10] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    if n <= BASE.len() {
        return BASE[..n].iter().map(|c| c.to_string()).collect();
    }
    (0..n)
        .map(|i| {
            let hue = (i as f64 * 360.0 / n as f64).round();
            // Alternate lightness so neighbours differ in more than hue.
            let light = if i % 2 == 0 { 40 } else { 55 };
            format!("hsl({hue}, 70%, {light}%)")
        })
        .collect()
}

/// A "nice" step near `raw`: 1, 2 or 5 times a power of ten.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    let m = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

/// An axis: where it ends, its tick step, and the decimals its labels need.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    /// Where the axis starts: 0, or the first load of a sweep.
    min: f64,
    max: f64,
    step: f64,
    decimals: usize,
}

impl Axis {
    /// A value axis from 0: about `ticks` ticks, ending on a tick.
    fn values(max: f64, ticks: f64, kind: Values) -> Axis {
        let mut step = nice_step(max / ticks);
        if kind == Values::Counts {
            step = step.max(1.0);
        }
        let max = ((max / step).ceil() * step).max(step);
        Axis {
            min: 0.0,
            max,
            step,
            decimals: decimals(step),
        }
    }

    /// A time axis that ends where the data ends, ticks on a 1-2-5 step.
    fn time(end: f64) -> Axis {
        let end = if end > 0.0 && end.is_finite() {
            end
        } else {
            1.0
        };
        let step = nice_step(end / 6.0);
        Axis {
            min: 0.0,
            max: end,
            step,
            decimals: decimals(step),
        }
    }

    /// An axis from the first value to the last (the loads of a sweep:
    /// 20 to 40 users, not 0 to 40); from 0 when there is one value.
    fn span(start: f64, end: f64) -> Axis {
        if !(end - start > 0.0 && start.is_finite() && end.is_finite()) {
            return Axis::time(end);
        }
        let step = nice_step((end - start) / 6.0);
        Axis {
            min: start,
            max: end,
            step,
            decimals: decimals(step),
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let first = (self.min / self.step - 1e-9).ceil() as i64;
        let last = (self.max / self.step + 1e-9).floor() as i64;
        (first..=last).map(|i| i as f64 * self.step)
    }

    fn label(&self, v: f64) -> String {
        format!("{v:.*}", self.decimals)
    }
}

/// Decimals a tick step needs: none for 1, 2, 5, 10…; one for 0.5; two for 0.05.
fn decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    }
}

/// A value for a tooltip: three significant digits, no trailing zeros.
fn exact(v: f64) -> String {
    let digits = if v == 0.0 {
        0
    } else {
        (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The widths, as shares of a chart's own, below which its text is set
/// larger: a chart drawn narrower than its units (a phone, a small
/// multiple) shrinks its text with it.
const TIERS: [f64; 6] = [1.0, 0.8, 0.62, 0.48, 0.37, 0.28];

/// How a chart `w` units wide reads when drawn narrower (its container is
/// queried, so a small multiple on a laptop and a full chart on a phone
/// are both served): in each tier of drawn width its text is set in its
/// own units so that it stays at least 11 CSS px (14 for the title) at
/// the tier's narrow end; under 62% of its width, y values sit inside the
/// plot instead of in its narrow margin and the rotated y axis title gives
/// way to the unit after the chart's title. Inside every chart, so each
/// stands alone wherever it is embedded.
fn narrow_style(w: f64) -> String {
    let mut s = String::from("<style>");
    for pair in TIERS.windows(2) {
        let (upper, lower) = (pair[0] * w, pair[1] * w);
        let _ = write!(
            s,
            "@container (max-width:{:.0}px){{svg.w{w} text{{font-size:{:.1}px}}}}",
            upper - 1.0,
            11.0 * w / lower,
        );
    }
    let _ = write!(
        s,
        "span.unit{{display:none}}@container (max-width:{:.0}px){{svg.w{w} text.ylabel{{display:none}}span.u{w}{{display:inline}}svg.w{w} text.ytick{{text-anchor:start;transform:translateX(10px)}}}}</style>",
        TIERS[2] * w
    );
    s
}

/// Starts an SVG of `w` x `h` (it scales to its container's width) under
/// its title (HTML, so that it wraps rather than runs off a narrow chart),
/// with `unit` (the y axis's) after the title when drawn narrow; in a box
/// whose width the chart's text is sized by (closed with the SVG, before
/// the legend).
fn open_svg(title: &str, unit: &str, w: f64, h: f64) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<div style="container-type:inline-size">{}<div class="ctitle" style="font-weight:bold;font-size:14px;margin:.3rem 0 0 0">{t}<span class="unit u{w}"> ({})</span></div><svg xmlns="http://www.w3.org/2000/svg" class="chart w{w}" viewBox="0 0 {w} {h}" width="100%" style="height:auto;display:block" role="img" aria-label="{t}">"#,
        narrow_style(w),
        esc(unit),
        t = esc(title)
    );
    o
}

/// The legend, as HTML under the chart: one entry per series, never split.
fn legend(series: &[Series<'_>]) -> String {
    let mut o = String::from(
        r#"<ul class="legend" style="list-style:none;padding:0;margin:.2rem 0 1rem 0;display:flex;flex-wrap:wrap;gap:.2rem 1.2rem;font-size:12px">"#,
    );
    for s in series {
        let _ = write!(
            o,
            r#"<li style="white-space:nowrap" data-color="{c}"><span style="display:inline-block;width:10px;height:10px;background:{c};margin-right:4px"></span>{}</li>"#,
            esc(s.name),
            c = esc(s.color)
        );
    }
    o.push_str("</ul>");
    o
}

/// Horizontal grid lines with their values.
fn y_grid(o: &mut String, left: f64, pw: f64, axis: &Axis, y: impl Fn(f64) -> f64) {
    for v in axis.ticks() {
        let _ = write!(
            o,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text class="ytick" x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y(v) + 4.0,
            axis.label(v),
            yy = y(v)
        );
    }
}

/// A line chart over time (x in seconds from the start).
pub fn line_chart(title: &str, y_label: &str, kind: Values, series: &[Series<'_>]) -> String {
    xy_chart(title, " s", y_label, kind, series)
}

/// A span of a time chart to shade, and why (its tooltip).
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub why: String,
}

/// A line chart over time with shaded spans (intervals whose figures are
/// suspect); its y axis reaches at least `y_max` when given (charts set
/// side by side share their scale).
pub fn line_chart_marked(
    title: &str,
    y_label: &str,
    kind: Values,
    series: &[Series<'_>],
    bands: &[Band],
    y_max: Option<f64>,
) -> String {
    chart(title, " s", y_label, kind, series, bands, y_max, false)
}

/// A line chart; `x_unit` follows every x tick (" s" for time, " users" in
/// a sweep). The x axis ends at the last point.
pub fn xy_chart(
    title: &str,
    x_unit: &str,
    y_label: &str,
    kind: Values,
    series: &[Series<'_>],
) -> String {
    chart(
        title,
        x_unit,
        y_label,
        kind,
        series,
        &[],
        None,
        x_unit != " s",
    )
}

#[allow(clippy::too_many_arguments)]
fn chart(
    title: &str,
    x_unit: &str,
    y_label: &str,
    kind: Values,
    series: &[Series<'_>],
    bands: &[Band],
    y_max: Option<f64>,
    from_first: bool,
) -> String {
    let (w, h) = (760.0, 232.0);
    let (left, right, top, bottom) = (60.0, 24.0, 12.0, 28.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let all = || series.iter().flat_map(|s| s.points.iter());
    let end = all().map(|p| p.0).fold(0.0, f64::max);
    let xa = if from_first {
        Axis::span(all().map(|p| p.0).fold(f64::INFINITY, f64::min), end)
    } else {
        Axis::time(end)
    };
    let ya = Axis::values(
        all().map(|p| p.1).fold(y_max.unwrap_or(0.0), f64::max),
        4.0,
        kind,
    );
    let x = |v: f64| left + (v - xa.min) / (xa.max - xa.min) * pw;
    let y = |v: f64| top + ph - v / ya.max * ph;
    let mut o = open_svg(title, y_label, w, h);
    for b in bands {
        let _ = write!(
            o,
            r##"<rect class="suspect" x="{:.1}" y="{top}" width="{:.1}" height="{ph}" fill="#f2c94c" fill-opacity="0.35"><title>{}</title></rect>"##,
            x(b.from),
            (x(b.to.min(xa.max)) - x(b.from)).max(1.0),
            esc(&b.why)
        );
    }
    y_grid(&mut o, left, pw, &ya, y);
    let unit = x_unit.to_string();
    for xv in xa.ticks() {
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}{}</text>"#,
            x(xv),
            top + ph + 16.0,
            xa.label(xv),
            esc(&unit)
        );
    }
    let _ = write!(
        o,
        r#"<text class="ylabel" x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        // A line identical to one drawn before it (p99 and max of small
        // samples) is dashed, so that neither hides the other.
        let dash = if series[..i].iter().any(|e| e.points == s.points) {
            r#" stroke-dasharray="6 5""#
        } else {
            ""
        };
        let _ = write!(
            o,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"><title>{}</title></polyline>"#,
            esc(s.color),
            pts.join(" "),
            esc(s.name)
        );
    }
    hover_columns(&mut o, series, (top, ph), x, &unit, y_label);
    o.push_str("</svg></div>");
    o + &legend(series)
}

/// Invisible columns, one per x (at most 400), whose tooltip lists every
/// series' exact value there.
fn hover_columns(
    o: &mut String,
    series: &[Series<'_>],
    (top, ph): (f64, f64),
    x: impl Fn(f64) -> f64,
    unit: &str,
    y_label: &str,
) {
    let mut xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.is_empty() {
        return;
    }
    let every = xs.len().div_ceil(400);
    let xs: Vec<f64> = xs.into_iter().step_by(every).collect();
    for (i, &at) in xs.iter().enumerate() {
        let from = if i == 0 {
            x(at) - 4.0
        } else {
            (x(xs[i - 1]) + x(at)) / 2.0
        };
        let to = match xs.get(i + 1) {
            Some(&next) => (x(at) + x(next)) / 2.0,
            None => x(at) + 4.0,
        };
        let mut tip = format!("{}{unit}", exact(at));
        for s in series {
            if let Some(&(_, v)) = s.points.iter().find(|p| p.0 == at) {
                let _ = write!(tip, "\n{}: {} {}", s.name, exact(v), y_label);
            }
        }
        let _ = write!(
            o,
            r#"<rect class="hover" x="{from:.1}" y="{top}" width="{:.1}" height="{ph}" fill="transparent"><title>{}</title></rect>"#,
            (to - from).max(0.5),
            esc(&tip)
        );
    }
}

/// x position of a percentile on HdrHistogram's axis: log10(1 / (1 - p)).
fn percentile_x(p: f64) -> f64 {
    let tail = (1.0 - p / 100.0).max(1e-7);
    (1.0 / tail).log10()
}

/// How big a percentile chart is drawn: the full width, or a small
/// multiple (several to a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Full,
    Small,
}

/// The percentile distribution on a log axis (x = 1/(1-p): ticks at 90%,
/// 99%, 99.9% …). Every series is a `<g class="series" data-series=…>` that
/// a little script of the page can hide or show; each curve's points carry
/// their exact value as a tooltip.
pub fn percentile_chart(title: &str, size: Size, series: &[Series<'_>]) -> String {
    let (w, h) = match size {
        Size::Full => (760.0, 272.0),
        Size::Small => (370.0, 202.0),
    };
    let (left, right, top, bottom) = (52.0, 30.0, 12.0, 28.0);
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
    let ya = Axis::values(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|q| q.1))
            .fold(0.0, f64::max),
        4.0,
        Values::Real,
    );
    let x = |p: f64| left + percentile_x(p).min(xmax) / xmax * pw;
    let y = |v: f64| top + ph - v / ya.max * ph;
    let mut o = open_svg(title, "milliseconds", w, h);
    y_grid(&mut o, left, pw, &ya, y);
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
        r#"<text class="ylabel" x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">milliseconds</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for s in series {
        let shown: Vec<(f64, f64)> = s.points.iter().copied().filter(|q| finite(q.0)).collect();
        // Nothing to draw (a curve said to be the same as another's).
        if shown.is_empty() {
            continue;
        }
        let pts: Vec<String> = shown
            .iter()
            .map(|&(p, v)| format!("{:.1},{:.1}", x(p), y(v)))
            .collect();
        let _ = write!(
            o,
            r#"<g class="series" data-series="{name}"><polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"><title>{name}</title></polyline>"#,
            esc(s.color),
            pts.join(" "),
            name = esc(s.name)
        );
        // Hover targets at the usual percentiles only: a few per curve.
        for &(p, v) in shown
            .iter()
            .filter(|q| [50.0, 90.0, 95.0, 99.0, 99.9, 99.99].contains(&q.0))
        {
            let _ = write!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}" fill-opacity="0.25"><title>{}: p{} = {} ms</title></circle>"#,
                x(p),
                y(v),
                esc(s.color),
                esc(s.name),
                exact(p),
                exact(v)
            );
        }
        o.push_str("</g>");
    }
    o.push_str("</svg></div>");
    o + &legend(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_where_the_data_ends_and_tick_on_1_2_5() {
        let t = Axis::time(5.1);
        assert_eq!(t.max, 5.1, "a 5.1 s run fills the axis");
        assert_eq!(t.step, 1.0);
        assert_eq!(
            t.ticks().map(|v| t.label(v)).collect::<Vec<_>>(),
            ["0", "1", "2", "3", "4", "5"]
        );
        let t = Axis::time(2.6);
        assert_eq!(t.step, 0.5);
        assert_eq!(t.label(2.5), "2.5", "not 2.50");
        let u = Axis::values(12.5, 4.0, Values::Counts);
        assert!(
            u.ticks().all(|v| v == v.trunc()),
            "users tick on whole numbers: {u:?}"
        );
        assert_eq!(u.max, 15.0);
        let u = Axis::values(2.0, 4.0, Values::Counts);
        assert_eq!((u.step, u.max), (1.0, 2.0), "never 0.5 users");
        let ms = Axis::values(0.83, 4.0, Values::Real);
        assert_eq!(
            (ms.step, ms.max, ms.label(0.6)),
            (0.2, 1.0, "0.6".to_string())
        );
        assert_eq!(Axis::values(0.0, 4.0, Values::Real).max, 1.0);
    }

    #[test]
    fn colours_never_repeat() {
        for n in [1, 8, 10, 11, 15, 40] {
            let c = colors(n);
            let mut d = c.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), n, "{c:?}");
        }
    }

    #[test]
    fn tooltips_hold_exact_values() {
        assert_eq!(exact(1234.6), "1235");
        assert_eq!(exact(0.5312), "0.531");
        assert_eq!(exact(12.0), "12");
        let svg = line_chart(
            "<t>",
            "ms",
            Values::Real,
            &[Series {
                name: "a&b",
                color: "red",
                points: vec![(1.0, 1.25), (2.0, 2.0)],
            }],
        );
        assert!(svg.contains("&lt;t&gt;") && svg.contains("a&amp;b") && !svg.contains("<t>"));
        assert!(svg.contains("<polyline"));
        assert!(
            svg.contains("<title>1 s\na&amp;b: 1.25 ms</title>"),
            "{svg}"
        );
        assert!(svg.contains(r#"<li style="white-space:nowrap""#));
    }

    #[test]
    fn log_axis_positions() {
        assert!((percentile_x(90.0) - 1.0).abs() < 1e-9);
        assert!((percentile_x(99.0) - 2.0).abs() < 1e-9);
        assert!((percentile_x(99.9) - 3.0).abs() < 1e-6);
        let svg = percentile_chart(
            "d",
            Size::Full,
            &[Series {
                name: "<r>",
                color: "red",
                points: vec![(0.0, 1.0), (99.0, 5.0), (100.0, 9.0)],
            }],
        );
        assert!(svg.contains("99%") && svg.contains(r#"data-series="&lt;r&gt;""#));
        assert!(svg.contains("&lt;r&gt;: p99 = 5 ms"));
    }

    #[test]
    fn a_line_identical_to_one_before_it_is_dashed() {
        let pts = vec![(1.0, 5.0), (2.0, 7.0)];
        let chart = line_chart(
            "t",
            "ms",
            Values::Real,
            &[
                Series {
                    name: "p99",
                    color: "#111",
                    points: pts.clone(),
                },
                Series {
                    name: "max",
                    color: "#222",
                    points: pts,
                },
                Series {
                    name: "p50",
                    color: "#333",
                    points: vec![(1.0, 1.0), (2.0, 2.0)],
                },
            ],
        );
        assert_eq!(chart.matches("stroke-dasharray").count(), 1, "{chart}");
        assert!(chart.contains(r##"stroke="#222" stroke-width="1.6" stroke-dasharray"##));
    }

    #[test]
    fn a_sweep_axis_starts_at_its_first_load() {
        let chart = xy_chart(
            "p95 by load",
            " users",
            "ms",
            Values::Real,
            &[Series {
                name: "p95",
                color: "#111",
                points: vec![(20.0, 5.0), (30.0, 6.0), (40.0, 9.0)],
            }],
        );
        assert!(chart.contains(">20 users</text>"), "{chart}");
        assert!(chart.contains(">40 users</text>"), "{chart}");
        assert!(!chart.contains(">0 users</text>"), "{chart}");
        // The first load sits on the axis's start, the last on its end.
        assert!(chart.contains("points=\"60.0,"), "{chart}");
        // A time axis still starts at 0.
        let time = line_chart(
            "t",
            "ms",
            Values::Real,
            &[Series {
                name: "a",
                color: "#111",
                points: vec![(1.0, 1.0), (2.0, 2.0)],
            }],
        );
        assert!(
            time.contains(">0.0 s</text>") || time.contains(">0 s</text>"),
            "{time}"
        );
    }
}
