//! `latency.hgrm` (HdrHistogram's classic percentile distribution text) and
//! `requests.csv` (one row per step and interval).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::stats::Collector;

/// The percentile distribution in HdrHistogram's `.hgrm` text format, with
/// values divided by `unit_ratio` (1000 turns microseconds into milliseconds).
pub fn hgrm(h: &Histogram<u64>, unit_ratio: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for (p, us) in crate::stats::percentile_points(h) {
            let q = p / 100.0;
            let value = us as f64 / unit_ratio;
            let count = h.count_between(0, us);
            let _ = if q < 1.0 {
                writeln!(
                    out,
                    "{value:>12.3} {q:>2.12} {count:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                )
            } else {
                writeln!(out, "{value:>12.3} {q:>2.12} {count:>10}")
            };
        }
    }
    let mean = if h.is_empty() {
        0.0
    } else {
        h.mean() / unit_ratio
    };
    let stdev = if h.is_empty() {
        0.0
    } else {
        h.stdev() / unit_ratio
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.3}, StdDeviation   = {stdev:>12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / unit_ratio,
        h.len()
    );
    // The layout of loadfleet's whole range (1 µs to an hour), whatever
    // size this histogram has grown to: the file reads the same either way.
    let full = loadfleet_agent::recorder::full_range_histogram();
    let sub_buckets = 2u64.pow((2.0 * 10f64.powi(i32::from(full.sigfig()))).log2().ceil() as u32);
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {sub_buckets:>12}]",
        full.buckets()
    );
    out
}

/// Quotes a CSV field when it needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row per step and interval: requests, errors and latency (ms).
pub fn requests_csv(out: &mut dyn std::io::Write, c: &Collector) -> std::io::Result<()> {
    out.write_all(
        b"step,interval_start_s,interval_length_s,requests,errors,p50_ms,p90_ms,p95_ms,p99_ms,max_ms\n",
    )?;
    let mut result = Ok(());
    c.for_each_row(|r| {
        if result.is_err() {
            return;
        }
        let name = c.step_names.get(r.step).map_or("", String::as_str);
        let lat = |f: fn(&crate::stats::LatencyMs) -> f64| {
            r.latency_ms
                .as_ref()
                .map_or_else(String::new, |l| format!("{:.3}", f(l)))
        };
        result = writeln!(
            out,
            "{},{:.3},{:.3},{},{},{},{},{},{},{}",
            csv_field(name),
            r.start_s,
            r.length_s,
            r.requests,
            r.errors,
            lat(|l| l.p50),
            lat(|l| l.p90),
            lat(|l| l.p95),
            lat(|l| l.p99),
            lat(|l| l.max),
        );
    })?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_shape() {
        let mut h = loadfleet_agent::recorder::new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let text = hgrm(&h, 1000.0);
        assert!(
            text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
            "{text}"
        );
        assert!(
            text.contains("#[Max     =     1000.447, Total count    =         1000]"),
            "{text}"
        );
        assert!(
            text.contains("#[Buckets =           22, SubBuckets     =         2048]"),
            "{text}"
        );
        let median = text
            .lines()
            .find(|l| l.contains(" 0.500000000000 "))
            .unwrap();
        assert!(median.trim_start().starts_with("500."), "{median}");
    }

    #[test]
    fn csv_quotes_names() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
