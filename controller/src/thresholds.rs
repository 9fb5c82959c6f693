//! Thresholds: pass/fail rules on merged data (`p95 < 2s`, `errors < 1%`),
//! overall or per step, checked by the controller every interval over the
//! merged histograms (never per agent), and once more at the end.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::duration::parse_duration;
use crate::stats::{Collector, Tally};

/// What a rule measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    /// A number read from responses (`metric.db_reads p95 < 100`), in the
    /// metric's unit; `id` is set when the plan resolves `name`.
    Read {
        name: String,
        id: u32,
        stat: Stat,
    },
    /// A latency quantile (0.95 for p95).
    Quantile(f64),
    Mean,
    Max,
    /// Errors as a share of requests.
    ErrorRate,
    /// Requests per second over the run so far.
    Rps,
    /// The busiest generator's process CPU, in % of the CPUs it may use, at
    /// its worst interval so far.
    AgentCpu,
    /// The worst event-loop lag of any generator so far, ms.
    AgentLag,
}

/// Which figure of a metric's samples a rule reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Quantile(f64),
    Mean,
    Min,
    Max,
}

/// `<` `<=` `>` `>=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// One rule, as written (`p95 < 2s`) and as understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub text: String,
    /// `None` for all steps together, else a step id.
    pub step: Option<usize>,
    /// Set for a rule about one scenario (`[thresholds.scenarios]`): its
    /// name and its steps' ids (groups left out), whose figures are added
    /// together as the summary's `scenarios` entry adds them.
    pub scenario: Option<ScenarioScope>,
    pub metric: Metric,
    pub op: Op,
    /// Milliseconds for latency metrics, a fraction for errors, req/s for rps.
    pub limit: f64,
}

/// The scenario a rule is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioScope {
    pub name: String,
    pub steps: Vec<usize>,
}

/// The plan's `[thresholds]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Thresholds {
    pub rules: Vec<Rule>,
    /// Stop the run as soon as a rule fails (after `grace`).
    pub abort_on_fail: bool,
    pub grace: Duration,
}

/// How a rule came out.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub rule: String,
    /// `overall` or the step's name.
    pub scope: String,
    /// The measured value in the rule's unit (ms, %, req/s); `null` when
    /// there was nothing to measure (no responses yet).
    pub observed: Option<f64>,
    /// That unit: `ms`, `%`, `req/s`, `% of a core`, or a read metric's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    pub passed: bool,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        })
    }
}

/// Parses `p95 < 2s`, `errors < 1%`, `rps >= 100`, `max <= 500ms`.
pub fn parse_rule(text: &str, step: Option<usize>) -> Result<Rule, String> {
    let expected = || {
        format!(
            "expected a rule such as \"p95 < 2s\", \"errors < 1%\" or \"rps >= 100\", found \"{text}\""
        )
    };
    let t = text.trim();
    let op_at = t.find(['<', '>']).ok_or_else(expected)?;
    let (lhs, rest) = t.split_at(op_at);
    let (op, rhs) = if let Some(r) = rest.strip_prefix("<=") {
        (Op::Le, r)
    } else if let Some(r) = rest.strip_prefix(">=") {
        (Op::Ge, r)
    } else if let Some(r) = rest.strip_prefix('<') {
        (Op::Lt, r)
    } else if let Some(r) = rest.strip_prefix('>') {
        (Op::Gt, r)
    } else {
        return Err(expected());
    };
    let (lhs, rhs) = (lhs.trim(), rhs.trim());
    let latency_ms = |rhs: &str| -> Result<f64, String> {
        parse_duration(rhs)
            .map(|d| d.as_secs_f64() * 1000.0)
            .map_err(|e| format!("in \"{text}\": {e}"))
    };
    let quantile = |p: &str| -> Option<f64> {
        p.strip_prefix('p')?
            .parse::<f64>()
            .ok()
            .filter(|q| (0.0..=100.0).contains(q))
            .map(|q| q / 100.0)
    };
    let (metric, limit) = match lhs {
        read if read.starts_with("metric.") => {
            let (name, stat) = read["metric.".len()..]
                .split_once(char::is_whitespace)
                .ok_or_else(|| {
                    format!(
                        "in \"{text}\": expected a metric's name and figure, as in \"metric.db_reads p95 < 100\""
                    )
                })?;
            let stat = match stat.trim() {
                "mean" | "avg" => Stat::Mean,
                "min" => Stat::Min,
                "max" => Stat::Max,
                p => Stat::Quantile(quantile(p).ok_or_else(|| {
                    format!(
                        "in \"{text}\": expected mean, min, max or a percentile such as p95 after the metric's name"
                    )
                })?),
            };
            let n = rhs
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .ok_or_else(|| {
                    format!("in \"{text}\": expected a number in the metric's unit, such as 100")
                })?;
            (
                Metric::Read {
                    name: name.trim().to_string(),
                    id: u32::MAX,
                    stat,
                },
                n,
            )
        }
        "mean" | "avg" => (Metric::Mean, latency_ms(rhs)?),
        "max" => (Metric::Max, latency_ms(rhs)?),
        "errors" | "error_rate" => {
            let pct = rhs
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| format!("in \"{text}\": expected a percentage such as 1%"))?;
            (Metric::ErrorRate, pct / 100.0)
        }
        "agent_cpu" | "agent_lag" if step.is_some() => {
            return Err(format!(
                "in \"{text}\": {lhs} is about the generators, not a step; put it in `overall`"
            ));
        }
        "agent_cpu" => {
            let pct = rhs
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| *p >= 0.0)
                .ok_or_else(|| format!("in \"{text}\": expected a percentage such as 80%"))?;
            (Metric::AgentCpu, pct)
        }
        "agent_lag" => (Metric::AgentLag, latency_ms(rhs)?),
        "rps" => {
            let n = rhs
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| {
                    format!("in \"{text}\": expected requests per second such as 100")
                })?;
            (Metric::Rps, n)
        }
        p if p.starts_with('p') => {
            let q = quantile(p).ok_or_else(expected)?;
            (Metric::Quantile(q), latency_ms(rhs)?)
        }
        _ => return Err(expected()),
    };
    Ok(Rule {
        text: t.to_string(),
        step,
        scenario: None,
        metric,
        op,
        limit,
    })
}

impl Rule {
    /// The measured value, in the rule's unit; `None` if nothing to measure.
    pub fn observe(&self, t: &Tally, elapsed: Duration) -> Option<f64> {
        if let Metric::Read { id, stat, .. } = &self.metric {
            let m = t.metrics.get(id)?;
            let h = m.histogram();
            if h.is_empty() {
                return None;
            }
            return Some(match stat {
                Stat::Quantile(q) => h.value_at_quantile(*q) as f64,
                Stat::Mean => m.sum as f64 / h.len() as f64,
                Stat::Min => h.min() as f64,
                Stat::Max => h.max() as f64,
            });
        }
        // Every request's time to its outcome, failures included.
        let all = t.all();
        let h = all.as_ref();
        match self.metric {
            Metric::ErrorRate => {
                (t.requests() > 0).then(|| t.error_count() as f64 / t.requests() as f64)
            }
            Metric::Rps => {
                (elapsed > Duration::ZERO).then(|| t.requests() as f64 / elapsed.as_secs_f64())
            }
            _ if h.is_empty() => None,
            Metric::Quantile(q) => Some(h.value_at_quantile(q) as f64 / 1000.0),
            Metric::Mean => Some(h.mean() / 1000.0),
            Metric::Max => Some(h.max() as f64 / 1000.0),
            // The generators' health is the collector's, not a tally's.
            Metric::AgentCpu | Metric::AgentLag | Metric::Read { .. } => None,
        }
    }

    fn holds(&self, v: f64) -> bool {
        match self.op {
            Op::Lt => v < self.limit,
            Op::Le => v <= self.limit,
            Op::Gt => v > self.limit,
            Op::Ge => v >= self.limit,
        }
    }

    /// Checks the rule on merged data. A latency rule with no response yet
    /// passes while the run goes on, and fails at the end (nothing met it).
    pub fn check(&self, c: &Collector, elapsed: Duration, final_check: bool) -> Outcome {
        let added;
        let tally = match (&self.scenario, self.step) {
            (Some(sc), _) => {
                added = Tally::of_steps(&c.steps, &sc.steps);
                &added
            }
            (None, None) => &c.total,
            (None, Some(i)) => &c.steps[i],
        };
        let observed = match self.metric {
            Metric::AgentCpu => Some(c.worst_health.0),
            Metric::AgentLag => Some(c.worst_health.1),
            _ => self.observe(tally, elapsed),
        };
        let unit = match self.metric {
            Metric::ErrorRate => 100.0,
            _ => 1.0,
        };
        let unit_name = match &self.metric {
            Metric::Quantile(_) | Metric::Mean | Metric::Max | Metric::AgentLag => "ms".to_string(),
            Metric::ErrorRate => "%".to_string(),
            Metric::Rps => "req/s".to_string(),
            Metric::AgentCpu => "% of a core".to_string(),
            Metric::Read { id, .. } => c
                .metrics
                .get(*id as usize)
                .map(|m| m.unit.clone())
                .unwrap_or_default(),
        };
        Outcome {
            unit: unit_name,
            rule: self.text.clone(),
            scope: match (&self.scenario, self.step) {
                (Some(sc), _) => format!("scenario {}", sc.name),
                (None, None) => "overall".to_string(),
                (None, Some(i)) => c.step_names[i].clone(),
            },
            observed: observed.map(|v| (v * unit * 1000.0).round() / 1000.0),
            passed: observed.map_or(!final_check, |v| self.holds(v)),
        }
    }
}

impl Thresholds {
    /// Every rule's outcome.
    pub fn check(&self, c: &Collector, elapsed: Duration, final_check: bool) -> Vec<Outcome> {
        self.rules
            .iter()
            .map(|r| r.check(c, elapsed, final_check))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_grammar() {
        let r = parse_rule("p95 < 2s", None).unwrap();
        assert_eq!(
            (r.metric, r.op, r.limit),
            (Metric::Quantile(0.95), Op::Lt, 2000.0)
        );
        let r = parse_rule(" p99.9 <= 500ms ", Some(2)).unwrap();
        assert!(
            matches!(r.metric, Metric::Quantile(q) if (q - 0.999).abs() < 1e-12),
            "{:?}",
            r.metric
        );
        assert_eq!((r.op, r.limit, r.step), (Op::Le, 500.0, Some(2)));
        assert_eq!(parse_rule("errors < 1%", None).unwrap().limit, 0.01);
        assert_eq!(parse_rule("rps >= 100", None).unwrap().op, Op::Ge);
        assert_eq!(parse_rule("max > 1m", None).unwrap().limit, 60_000.0);
        for bad in [
            "p95 2s",
            "p95 < 2",
            "errors < 1",
            "errors < 120%",
            "p200 < 1s",
            "latency < 1s",
            "rps > fast",
            "",
        ] {
            assert!(parse_rule(bad, None).is_err(), "{bad:?}");
        }
    }
}
