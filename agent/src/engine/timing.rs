//! How the open model's generator waits for each arrival's instant: the
//! kernel timer with a window of shared wake-ups, or polling.

use std::time::Duration;

/// How the open model's generator waits for each arrival's instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Sleep on a high-resolution kernel timer to the instant itself
    /// ([`crate::alarm`]). Arrivals due within `window` of the earliest one
    /// waiting share one wake-up, taken at the last one's instant, so a
    /// worker wakes at most about 1/window times a second for its arrivals;
    /// the others leave up to `window` late (reported as send lateness).
    /// With a zero window every arrival has a wake-up of its own. An idle
    /// agent stays idle.
    Timer { window: Duration },
    /// Sleep on tokio's millisecond timer to 2 ms before the instant, then
    /// yield until it: arrivals leave within microseconds, at the cost of
    /// polling while the worker would otherwise be idle (a whole core at
    /// 500 arrivals/s per worker and above).
    Poll,
}

impl Timing {
    /// In words, as the summary shows it: "timer, 0.75 ms window", "timer,
    /// no window" or "poll".
    pub fn describe(self) -> String {
        match self {
            Timing::Timer { window } if window.is_zero() => "timer, no window".into(),
            Timing::Timer { window } => {
                let us = window.as_micros();
                let ms = if us % 1000 == 0 {
                    format!("{}", us / 1000)
                } else {
                    format!("{:.3}", us as f64 / 1000.0)
                        .trim_end_matches('0')
                        .to_string()
                };
                format!("timer, {ms} ms window")
            }
            Timing::Poll => "poll".into(),
        }
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing::Timer {
            window: DEFAULT_WINDOW,
        }
    }
}

/// The timing modes by name, as `--timing` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingMode {
    Timer,
    Poll,
}

impl TimingMode {
    pub const NAMES: [&'static str; 2] = ["timer", "poll"];

    pub fn name(self) -> &'static str {
        match self {
            TimingMode::Timer => "timer",
            TimingMode::Poll => "poll",
        }
    }

    /// The timing this mode names; `window` is used by `timer` only.
    pub fn with_window(self, window: Duration) -> Timing {
        match self {
            TimingMode::Timer => Timing::Timer { window },
            TimingMode::Poll => Timing::Poll,
        }
    }
}

impl std::str::FromStr for TimingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<TimingMode, String> {
        match s {
            "timer" => Ok(TimingMode::Timer),
            "poll" => Ok(TimingMode::Poll),
            _ => Err(format!(
                "unknown timing {s:?}: expected one of {}",
                TimingMode::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for TimingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// [`Timing::Timer`]'s default window.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(750);

/// The longest window `--timing-window` takes.
pub const MAX_WINDOW: Duration = Duration::from_secs(1);

/// Parses a timer window: an integer with `us` or `ms` (`500us`, `2ms`), or
/// `0`, at most [`MAX_WINDOW`].
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let expected = || format!("expected a window such as \"500us\" or \"2ms\", found {s:?}");
    let d = if t == "0" {
        Duration::ZERO
    } else if let Some(n) = t.strip_suffix("us").or_else(|| t.strip_suffix("µs")) {
        Duration::from_micros(n.parse().map_err(|_| expected())?)
    } else if let Some(n) = t.strip_suffix("ms") {
        Duration::from_millis(n.parse().map_err(|_| expected())?)
    } else {
        return Err(expected());
    };
    if d > MAX_WINDOW {
        return Err(format!(
            "a timer window of {s} is longer than the 1 s allowed"
        ));
    }
    Ok(d)
}

/// At most this many arrivals share one wake-up.
pub(super) const COALESCE_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_windows_parse_with_their_unit() {
        assert_eq!(parse_window("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_window("500µs"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_window(" 2ms "), Ok(Duration::from_millis(2)));
        assert_eq!(parse_window("0"), Ok(Duration::ZERO));
        assert_eq!(parse_window("1000ms"), Ok(MAX_WINDOW));
        for bad in ["", "500", "0.5ms", "-1ms", "2s", "ms"] {
            let e = parse_window(bad).unwrap_err();
            assert!(e.contains("expected a window such as"), "{bad:?}: {e}");
        }
        let e = parse_window("1001ms").unwrap_err();
        assert!(e.contains("longer than the 1 s allowed"), "{e}");
    }

    #[test]
    fn timing_modes_by_name() {
        assert_eq!("timer".parse(), Ok(TimingMode::Timer));
        assert_eq!("poll".parse(), Ok(TimingMode::Poll));
        let e = "tick".parse::<TimingMode>().unwrap_err();
        assert_eq!(e, "unknown timing \"tick\": expected one of timer, poll");
        assert_eq!(
            TimingMode::Timer.with_window(Duration::from_millis(2)),
            Timing::Timer {
                window: Duration::from_millis(2)
            }
        );
        assert_eq!(
            Timing::default(),
            TimingMode::Timer.with_window(DEFAULT_WINDOW)
        );
    }

    #[test]
    fn timings_in_words() {
        let timer = |us| Timing::Timer {
            window: Duration::from_micros(us),
        };
        assert_eq!(Timing::default().describe(), "timer, 0.75 ms window");
        assert_eq!(timer(0).describe(), "timer, no window");
        assert_eq!(timer(1).describe(), "timer, 0.001 ms window");
        assert_eq!(timer(1500).describe(), "timer, 1.5 ms window");
        assert_eq!(timer(20_000).describe(), "timer, 20 ms window");
        assert_eq!(Timing::Poll.describe(), "poll");
    }
}
