//! `latency.hlog`: an HdrHistogram interval log in the Java format (version
//! header, start time, legend), readable by HdrHistogram's standard tools.
//! Untagged lines hold all steps together; each step has its own tag.
//! Values are microseconds; the Interval_Max column is in milliseconds.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use crate::outcome::RunResult;

/// The tag of a step name: HdrHistogram tags may not hold commas or spaces.
pub fn tag_for(step: &str) -> String {
    let t: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

/// Writes the interval log of a run.
pub fn write<W: Write>(out: &mut W, r: &RunResult) -> std::io::Result<()> {
    let c = &r.collector;
    let start = UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(r.started_at.unix_timestamp_nanos()).unwrap_or(0));
    let mut serializer = V2DeflateSerializer::new();
    // The header as Java's HistogramLogWriter writes it: comment, format
    // version, start and base time, legend. Timestamps below are relative to it.
    let start_s = start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let when = r
        .started_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    writeln!(
        out,
        "#[Logged with loadfleet {}]",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(out, "#[Histogram log format version 1.3]")?;
    writeln!(
        out,
        "#[StartTime: {start_s:.3} (seconds since epoch), {when}]"
    )?;
    writeln!(out, "#[BaseTime: {start_s:.3} (seconds since epoch)]")?;
    writeln!(
        out,
        "#plan: {}, run: {}",
        r.facts.name.replace('\n', " "),
        r.run_id
    )?;
    writeln!(
        out,
        "#values: latency in microseconds; Interval_Max in milliseconds"
    )?;
    writeln!(
        out,
        "#untagged lines: all steps together; tagged lines: one step each"
    )?;
    for name in &c.step_names {
        writeln!(
            out,
            "#tag {} = step \"{}\"",
            tag_for(name),
            name.replace('\n', " ")
        )?;
    }
    writeln!(
        out,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    )?;
    let mut builder = IntervalLogWriterBuilder::new();
    builder.with_max_value_divisor(1000.0);
    let mut writer = builder
        .begin_log_with(out, &mut serializer)
        .map_err(std::io::Error::other)?;
    let mut deserializer = Deserializer::new();
    let tags: Vec<String> = c.step_names.iter().map(|n| tag_for(n)).collect();
    c.for_each_logged(|li| {
        let h: Histogram<u64> = deserializer
            .deserialize(&mut &li.bytes[..])
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let tag = li.step.and_then(|i| tags.get(i)).and_then(|t| Tag::new(t));
        writer
            .write_histogram(&h, li.start, li.length, tag)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_have_no_separators() {
        assert_eq!(super::tag_for("front page, logged"), "front_page__logged");
        assert_eq!(super::tag_for("GET /a?b=1"), "GET_/a_b_1");
        assert_eq!(super::tag_for(""), "_");
    }
}
