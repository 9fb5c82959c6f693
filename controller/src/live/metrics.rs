//! The fleet's merged figures as Prometheus series: counters by step,
//! region and error kind, active users, agents, and latency as histograms
//! with fixed bucket boundaries ([`BUCKETS_S`]). The exact percentiles stay
//! in loadfleet's own outputs: a bucketed histogram only bounds them.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::stats::Collector;

/// Upper bounds of the latency buckets, in seconds (the `le` labels).
pub const BUCKETS_S: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What a family is, for `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its name, help, type and samples.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// One sample: the full series name (`_bucket`, `_sum`… for histograms),
/// its labels (sorted by name when written), and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The fleet's state as metric families, labelled with the run's id.
#[derive(Debug, Clone, Copy)]
pub struct Agents {
    pub running: usize,
    pub finished: usize,
    pub lost: usize,
}

/// Every family, from what the collector has merged so far (closed
/// intervals; late reports included).
pub fn families(run_id: &str, c: &Collector, agents: Agents) -> Vec<Family> {
    let run = || ("run_id", run_id.to_string());
    let mut requests = Vec::new();
    let mut errors = Vec::new();
    let mut retries = Vec::new();
    let mut received = Vec::new();
    let mut http2 = Vec::new();
    let (mut metric_sum, mut metric_count, mut metric_missing) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut duration = Vec::new();
    for (i, (name, t)) in c.step_names.iter().zip(&c.steps).enumerate() {
        // A group's series carry `row="group"`: they time requests counted
        // in their own steps, so a sum over steps leaves them out with
        // `{row!="group"}`.
        let group = c.groups.get(i).copied().unwrap_or(false);
        let step = || ("step", name.clone());
        let tagged = |samples: &mut Vec<Sample>, from: usize| {
            if group {
                for s in &mut samples[from..] {
                    s.labels.push(("row", "group".to_string()));
                }
            }
        };
        let marks = [
            http2.len(),
            requests.len(),
            retries.len(),
            received.len(),
            errors.len(),
            duration.len(),
            metric_sum.len(),
            metric_count.len(),
            metric_missing.len(),
        ];
        http2.push(Sample {
            name: "loadfleet_http2_responses_total".into(),
            labels: vec![run(), step()],
            value: t.counters.http2_responses as f64,
        });
        for (id, m) in &t.metrics {
            let Some(spec) = c.metrics.get(*id as usize) else {
                continue;
            };
            let labels = || {
                let mut l = vec![run(), step(), ("metric", spec.name.clone())];
                if !spec.unit.is_empty() {
                    l.push(("unit", spec.unit.clone()));
                }
                l
            };
            metric_sum.push(Sample {
                name: "loadfleet_response_metric_value_total".into(),
                labels: labels(),
                value: m.sum as f64,
            });
            metric_count.push(Sample {
                name: "loadfleet_response_metric_responses_total".into(),
                labels: labels(),
                value: m.count() as f64,
            });
            metric_missing.push(Sample {
                name: "loadfleet_response_metric_missing_total".into(),
                labels: labels(),
                value: m.missing as f64,
            });
        }
        requests.push(Sample {
            name: "loadfleet_requests_total".into(),
            labels: vec![run(), step()],
            value: t.requests() as f64,
        });
        retries.push(Sample {
            name: "loadfleet_retries_total".into(),
            labels: vec![run(), step()],
            value: t.counters.retries as f64,
        });
        received.push(Sample {
            name: "loadfleet_received_bytes_total".into(),
            labels: vec![run(), step()],
            value: t.counters.bytes_received as f64,
        });
        for (kind, e) in &t.errors {
            errors.push(Sample {
                name: "loadfleet_errors_total".into(),
                labels: vec![run(), step(), ("kind", kind.clone())],
                value: e.count as f64,
            });
        }
        histogram(
            &mut duration,
            "loadfleet_request_duration_seconds",
            vec![run(), step()],
            &t.all(),
        );
        for (v, from) in [
            &mut http2,
            &mut requests,
            &mut retries,
            &mut received,
            &mut errors,
            &mut duration,
            &mut metric_sum,
            &mut metric_count,
            &mut metric_missing,
        ]
        .into_iter()
        .zip(marks)
        {
            tagged(v, from);
        }
    }
    let region_requests = c
        .regions
        .iter()
        .map(|(region, t)| Sample {
            name: "loadfleet_region_requests_total".into(),
            labels: vec![run(), ("region", region.clone())],
            value: t.requests() as f64,
        })
        .collect();
    let last = c.newest.as_ref();
    let active = c
        .regions
        .keys()
        .map(|region| Sample {
            name: "loadfleet_active_users".into(),
            labels: vec![run(), ("region", region.clone())],
            value: last
                .and_then(|p| p.active_by_region.get(region))
                .copied()
                .unwrap_or(0) as f64,
        })
        .collect();
    let one = |name: &str, value: f64| Sample {
        name: name.into(),
        labels: vec![run()],
        value,
    };
    let mut lateness = Vec::new();
    if !c.lateness.is_empty() {
        histogram(
            &mut lateness,
            "loadfleet_send_lateness_seconds",
            vec![run()],
            &c.lateness,
        );
    }
    let health = |f: fn(&crate::stats::Health) -> f64, name: &str| -> Vec<Sample> {
        c.agents
            .iter()
            .filter(|(_, t)| t.health.intervals > 0)
            .map(|(agent, t)| Sample {
                name: name.into(),
                labels: vec![run(), ("agent", agent.clone())],
                value: f(&t.health),
            })
            .collect()
    };
    let mut families = vec![
        Family {
            name: "loadfleet_requests_total",
            help: "Requests sent (responses plus requests that got none), by step.",
            kind: Kind::Counter,
            samples: requests,
        },
        Family {
            name: "loadfleet_errors_total",
            help: "Failed requests by step and kind (http_<status>, check, timeout, reset, ...).",
            kind: Kind::Counter,
            samples: errors,
        },
        Family {
            name: "loadfleet_retries_total",
            help: "Requests sent again on a new connection after a kept-alive one closed, by step.",
            kind: Kind::Counter,
            samples: retries,
        },
        Family {
            name: "loadfleet_received_bytes_total",
            help: "Response bytes read from the target (after TLS decryption), by step.",
            kind: Kind::Counter,
            samples: received,
        },
        Family {
            name: "loadfleet_http2_responses_total",
            help: "Responses that came over HTTP/2 (the rest over HTTP/1.1), by step.",
            kind: Kind::Counter,
            samples: http2,
        },
        Family {
            name: "loadfleet_response_metric_value_total",
            help: "Sum of the numbers a [[metric]] read from responses, in its unit, by step and metric; over the responses that carried one it is the exact mean.",
            kind: Kind::Counter,
            samples: metric_sum,
        },
        Family {
            name: "loadfleet_response_metric_responses_total",
            help: "Responses that carried the [[metric]]'s number, by step and metric.",
            kind: Kind::Counter,
            samples: metric_count,
        },
        Family {
            name: "loadfleet_response_metric_missing_total",
            help: "Responses without the [[metric]]'s number (never counted as zero), by step and metric.",
            kind: Kind::Counter,
            samples: metric_missing,
        },
        Family {
            name: "loadfleet_region_requests_total",
            help: "Requests sent, by region.",
            kind: Kind::Counter,
            samples: region_requests,
        },
        Family {
            name: "loadfleet_request_duration_seconds",
            help: "Time from send to outcome, failures included, by step; exact percentiles are in summary.json.",
            kind: Kind::Histogram,
            samples: duration,
        },
        Family {
            name: "loadfleet_active_users",
            help: "Users active at the end of the newest interval, by region.",
            kind: Kind::Gauge,
            samples: active,
        },
        Family {
            name: "loadfleet_iterations_completed_total",
            help: "Iterations that ran to their end.",
            kind: Kind::Counter,
            samples: vec![one(
                "loadfleet_iterations_completed_total",
                c.iterations_completed as f64,
            )],
        },
        Family {
            name: "loadfleet_dropped_iterations_total",
            help: "Open model: arrivals dropped because no user was free in time.",
            kind: Kind::Counter,
            samples: vec![one("loadfleet_dropped_iterations_total", c.dropped as f64)],
        },
        Family {
            name: "loadfleet_late_reports_total",
            help: "Agent reports that arrived after their interval closed (counted in totals).",
            kind: Kind::Counter,
            samples: vec![one("loadfleet_late_reports_total", c.late_reports as f64)],
        },
        Family {
            name: "loadfleet_agent_cpu_ratio",
            help: "Each generator's process CPU in its newest interval, as a share of the CPUs it may use.",
            kind: Kind::Gauge,
            samples: health(|h| h.last.0 / 100.0, "loadfleet_agent_cpu_ratio"),
        },
        Family {
            name: "loadfleet_agent_loop_lag_seconds",
            help: "How late each generator's event loop woke for a timer at worst in its newest interval.",
            kind: Kind::Gauge,
            samples: health(|h| h.last.1 / 1000.0, "loadfleet_agent_loop_lag_seconds"),
        },
        Family {
            name: "loadfleet_agent_saturated_intervals_total",
            help: "Intervals in which a generator was saturated (90% CPU or 50 ms loop lag).",
            kind: Kind::Counter,
            samples: health(
                |h| h.saturated_intervals as f64,
                "loadfleet_agent_saturated_intervals_total",
            ),
        },
        Family {
            name: "loadfleet_agents",
            help: "Agents of the run by state.",
            kind: Kind::Gauge,
            samples: [
                ("running", agents.running),
                ("finished", agents.finished),
                ("lost", agents.lost),
            ]
            .into_iter()
            .map(|(state, n)| Sample {
                name: "loadfleet_agents".into(),
                labels: vec![run(), ("state", state.to_string())],
                value: n as f64,
            })
            .collect(),
        },
    ];
    if !lateness.is_empty() {
        families.push(Family {
            name: "loadfleet_send_lateness_seconds",
            help: "Open model: how late iterations started after their intended instant.",
            kind: Kind::Histogram,
            samples: lateness,
        });
    }
    families
}

/// A histogram's `_bucket`, `_sum` and `_count` samples, from an
/// HdrHistogram of microseconds.
fn histogram(
    out: &mut Vec<Sample>,
    name: &str,
    labels: Vec<(&'static str, String)>,
    h: &Histogram<u64>,
) {
    let mut counts = [0u64; BUCKETS_S.len()];
    let mut sum_us = 0f64;
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let n = v.count_at_value();
        sum_us += value as f64 * n as f64;
        let s = value as f64 / 1e6;
        if let Some(i) = BUCKETS_S.iter().position(|&b| s <= b) {
            counts[i] += n;
        }
    }
    let mut cumulative = 0;
    for (b, n) in BUCKETS_S.iter().zip(counts) {
        cumulative += n;
        let mut l = labels.clone();
        l.push(("le", format!("{b}")));
        out.push(Sample {
            name: format!("{name}_bucket"),
            labels: l,
            value: cumulative as f64,
        });
    }
    let mut l = labels.clone();
    l.push(("le", "+Inf".into()));
    out.push(Sample {
        name: format!("{name}_bucket"),
        labels: l,
        value: h.len() as f64,
    });
    out.push(Sample {
        name: format!("{name}_sum"),
        labels: labels.clone(),
        value: sum_us / 1e6,
    });
    out.push(Sample {
        name: format!("{name}_count"),
        labels,
        value: h.len() as f64,
    });
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn text(families: &[Family]) -> String {
    let mut o = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(o, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(o, "# TYPE {} {kind}", f.name);
        for s in &f.samples {
            o.push_str(&s.name);
            if !s.labels.is_empty() {
                o.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    let _ = write!(o, "{k}=\"{}\"", escape(v));
                }
                o.push('}');
            }
            let _ = writeln!(o, " {}", s.value);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_text_is_well_formed() {
        let mut h = loadfleet_agent::recorder::new_histogram();
        for us in [500u64, 900, 2_000, 40_000, 2_000_000] {
            h.record(us).unwrap();
        }
        let mut out = Vec::new();
        histogram(&mut out, "x_seconds", vec![("step", "a \"b\"".into())], &h);
        let bucket = |le: &str| {
            out.iter()
                .find(|s| s.name == "x_seconds_bucket" && s.labels.last().unwrap().1 == le)
                .unwrap()
                .value
        };
        assert_eq!(bucket("0.001"), 2.0);
        assert_eq!(bucket("0.0025"), 3.0);
        assert_eq!(bucket("0.05"), 4.0);
        assert_eq!(bucket("2.5"), 5.0);
        assert_eq!(bucket("+Inf"), 5.0);
        let sum = out
            .iter()
            .find(|s| s.name == "x_seconds_sum")
            .unwrap()
            .value;
        assert!((sum - 2.0434).abs() < 0.01, "{sum}");
        let t = text(&[Family {
            name: "x_seconds",
            help: "h",
            kind: Kind::Histogram,
            samples: out,
        }]);
        assert!(t.contains("# TYPE x_seconds histogram\n"), "{t}");
        assert!(
            t.contains(r#"x_seconds_bucket{step="a \"b\"",le="0.001"} 2"#),
            "{t}"
        );
    }
}
