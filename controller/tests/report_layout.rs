//! The report as people see it: headless Chromium renders it 1280 and 390
//! px wide (screenshots kept beside the run), and a probe measures the
//! page: no chart wider than the window, no page wider than the window, no
//! legend entry on two lines, no two series of a chart in one colour, no
//! chart text under 11 CSS px as drawn, and the time axis ending where the
//! run ended. Headless Chromium's window is
//! at least 500 px wide, so the report is measured in a frame of the width
//! under test.

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

/// A page holding the report in a frame `WIDTH` px wide; once the report
/// is laid out, the probe measures it and writes what it found as JSON
/// into `<pre id="layout">`, for `--dump-dom` to hand back.
const PROBE: &str = r#"<!doctype html><html><body style="margin:0">
<iframe id="f" src="report.html" style="width:WIDTHpx;height:6000px;border:0" onload="probe()"></iframe>
<script>
function probe() {
  var document = window.frames[0].document;
  var vw = document.documentElement.clientWidth;
  var out = { vw: vw, page: document.documentElement.scrollWidth, overflow: [], wrapped: [], same_colour: [], charts: 0, legends: 0, time_fill: [], smallest_text: 100, smallest_in: '', texts: 0 };
  document.querySelectorAll('svg').forEach(function (svg, i) {
    out.charts++;
    var r = svg.getBoundingClientRect();
    // Text as drawn: its font size in the chart's units, scaled as the
    // chart is (its drawn width over its viewBox's).
    var scale = r.width / svg.viewBox.baseVal.width;
    svg.querySelectorAll('text').forEach(function (t) {
      if (t.getClientRects().length === 0 || window.frames[0].getComputedStyle(t).display === 'none') return;
      out.texts++;
      var px = parseFloat(window.frames[0].getComputedStyle(t).fontSize) * scale;
      if (px < out.smallest_text) { out.smallest_text = px; out.smallest_in = (svg.getAttribute('aria-label') || '') + ': ' + t.textContent; }
    });
    if (r.left < -0.5 || r.right > vw + 0.5) out.overflow.push(svg.getAttribute('aria-label') + ': ' + r.left + '..' + r.right);
    var label = svg.getAttribute('aria-label') || '';
    if (label.indexOf('over time') >= 0) {
      var vb = svg.viewBox.baseVal, most = 0;
      svg.querySelectorAll('polyline').forEach(function (p) {
        p.getAttribute('points').split(' ').forEach(function (xy) { most = Math.max(most, parseFloat(xy)); });
      });
      out.time_fill.push(most / vb.width);
    }
  });
  document.querySelectorAll('ul.legend').forEach(function (ul) {
    out.legends++;
    var colours = [];
    ul.querySelectorAll('li').forEach(function (li) {
      if (li.getBoundingClientRect().height > 24) out.wrapped.push(li.textContent);
      colours.push(li.getAttribute('data-color'));
    });
    if (new Set(colours).size !== colours.length) out.same_colour.push(colours.join(','));
  });
  var pre = window.document.createElement('pre');
  pre.id = 'layout';
  pre.textContent = JSON.stringify(out);
  window.document.body.appendChild(pre);
}
</script></body></html>"#;

/// Lays `page` out in a frame `width` px wide in headless Chromium and
/// measures it with the probe: chart overflow, page width, wrapped legend
/// entries, shared colours, the smallest chart text as drawn.
pub(crate) fn measure(page: &std::path::Path, width: u32) -> serde_json::Value {
    let dir = page.parent().unwrap();
    let name = page.file_name().unwrap().to_str().unwrap();
    let probe = dir.join(format!("probe-{width}.html"));
    std::fs::write(
        &probe,
        PROBE
            .replace("WIDTH", &width.to_string())
            .replace("report.html", name),
    )
    .unwrap();
    let size = format!("--window-size={},6000", width.max(500));
    let (dom, _, requests) = chromium_run(
        &probe,
        &[&size, "--allow-file-access-from-files", "--dump-dom"],
    );
    assert!(requests.is_empty(), "the page made requests: {requests:?}");
    let json = dom
        .split("<pre id=\"layout\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .expect("the probe ran");
    serde_json::from_str(&json.replace("&quot;", "\"")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_fits_a_laptop_and_a_phone() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(2),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Twelve steps with long names: too many curves for one distribution
    // chart, long legend entries.
    let steps: Vec<(String, String)> = (1..=12)
        .map(|i| {
            (
                format!("step number {i} of the long journey"),
                format!("/p{i}"),
            )
        })
        .collect();
    let steps: Vec<(&str, &str)> = steps
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_str()))
        .collect();
    let plan = write_plan(
        dir.path(),
        "wide.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 4\nramp_up = \"1s\"\nduration = \"3500ms\"",
            &steps,
        ),
    );
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    for width in [1280, 390] {
        let probe = out.join(format!("probe-{width}.html"));
        let size = format!("--window-size={},6000", width.max(500));
        let m = measure(&out.join("report.html"), width);
        eprintln!("{width} px: {m}");
        // The window's width, less a scroll bar.
        let vw = m["vw"].as_u64().unwrap();
        assert!(
            (u64::from(width) - 20..=u64::from(width)).contains(&vw),
            "{m}"
        );
        assert!(
            m["page"].as_u64().unwrap() <= vw,
            "the page is wider than the window: {m}"
        );
        assert!(
            m["charts"].as_u64().unwrap() >= 17,
            "4 over time, 1 distribution, 12 small: {m}"
        );
        // Chart text stays legible: 11 CSS px at least, as drawn.
        let smallest = m["smallest_text"].as_f64().unwrap();
        assert!(m["texts"].as_u64().unwrap() > 100, "{m}");
        assert!(
            smallest >= 10.95,
            "chart text of {smallest:.1} px at {width} px ({}): {m}",
            m["smallest_in"]
        );
        for what in ["overflow", "wrapped", "same_colour"] {
            assert_eq!(m[what], serde_json::json!([]), "{what} at {width} px: {m}");
        }
        for fill in m["time_fill"].as_array().unwrap() {
            let fill = fill.as_f64().unwrap();
            assert!(
                fill > 0.9,
                "a time chart's data ends at {fill} of its width"
            );
        }
        let shot = out.join(format!("report-{width}.png"));
        let arg = format!("--screenshot={}", shot.display());
        chromium_run(
            &probe,
            &[
                &size,
                "--allow-file-access-from-files",
                "--hide-scrollbars",
                &arg,
            ],
        );
        let bytes = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(bytes > 20_000, "a screenshot of {width} px: {bytes} bytes");
    }
    // The headline block says the verdict and the headline figures.
    let dom = dump_dom(&out.join("report.html"));
    let s = summary(&out);
    let head = dom
        .split("id=\"headline\"")
        .nth(1)
        .and_then(|h| h.split("</div>\n</div>").next())
        .or_else(|| dom.split("id=\"headline\"").nth(1))
        .unwrap();
    assert!(head.contains("completed"), "{head}");
    let p95 = format!("{:.2}", s["total"]["latency_ms"]["p95"].as_f64().unwrap());
    assert!(
        head.contains(&format!("<b>{p95}</b>")),
        "p95 {p95} in {head}"
    );
}
