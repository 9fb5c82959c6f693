//! The engine's view of a run: an agent's share of the schedule, validated
//! once from the wire so the engine never re-checks it.

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Uri};
use loadfleet_proto::v1;

use crate::arrivals::{RateSchedule, RateStage};

/// Why an assignment from the controller cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error("assignment has no target")]
    NoTarget,
    #[error("target base URL `{url}`: {reason}")]
    BadBaseUrl { url: String, reason: String },
    #[error("step {step} of scenario `{scenario}`: {reason}")]
    BadStep {
        scenario: String,
        step: usize,
        reason: String,
    },
    #[error("user {user} refers to scenario {scenario}, but there are {count} scenarios")]
    BadScenarioIndex {
        user: u64,
        scenario: u32,
        count: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Value of the `Host` header.
    pub authority: HeaderValue,
    /// Path prefix of the base URL, without a trailing slash.
    pub base_path: String,
    pub timeout: Duration,
    /// Extra certificate authorities (PEM) for https targets; may be empty.
    pub ca_pem: String,
}

/// One HTTP request of a scenario, prepared once.
#[derive(Debug, Clone)]
pub struct Step {
    /// Index into [`Assignment::step_names`].
    pub id: usize,
    pub method: Method,
    /// Origin-form request target (path and query), as sent on the wire.
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A sequence of steps a virtual user runs as one iteration.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<Step>,
}

/// One virtual user of this agent's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSlot {
    /// Index in the fleet-wide schedule.
    pub index: u64,
    /// Start on the fleet's common clock, from the run's start.
    pub start_offset: Duration,
    pub scenario: usize,
    /// When a ramp-down stops this user (it finishes its iteration first).
    pub stop_offset: Option<Duration>,
}

/// How long each user runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Each user runs this many iterations, then stops.
    Iterations(u64),
    /// Users start no new step after this long from the run's start.
    Duration(Duration),
}

/// The open model: iterations start at scheduled instants.
#[derive(Debug, Clone)]
pub struct OpenLoad {
    pub schedule: RateSchedule,
    /// Fleet-wide arrival `i` is this agent's when `i mod period` is in `positions`.
    pub period: u32,
    pub positions: Vec<u32>,
    /// This agent's share of the concurrency cap.
    pub max_users: u32,
    /// How long an arrival may wait for a free user before it is dropped.
    pub max_wait: Duration,
    /// Scenario of this agent's m-th arrival: `scenario_cycle[m % len]`.
    pub scenario_cycle: Vec<usize>,
}

impl OpenLoad {
    /// The highest fleet-wide rate of the schedule.
    pub fn schedule_peak(&self) -> Option<f64> {
        self.schedule.peak()
    }
}

/// Everything an agent needs to run its share of a run.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Set for the open model; `users` is then empty.
    pub open: Option<OpenLoad>,
    pub run_id: String,
    pub target: Target,
    pub scenarios: Vec<Scenario>,
    pub users: Vec<UserSlot>,
    pub bound: Bound,
    pub interval: Duration,
    pub step_names: Vec<String>,
    /// Hard limit after which the agent stops all load by itself.
    pub max_run: Duration,
    /// How long a user stopped by a ramp-down may finish its iteration.
    pub graceful_stop: Duration,
}

impl Target {
    /// Parses an `http://` or `https://` base URL.
    pub fn parse(url: &str, timeout: Duration) -> Result<Target, AssignmentError> {
        let bad = |reason: &str| AssignmentError::BadBaseUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| bad("missing http:// or https://"))?;
        let default_port = if scheme == Scheme::HTTP {
            80
        } else if scheme == Scheme::HTTPS {
            443
        } else {
            return Err(bad("scheme must be http or https"));
        };
        let authority: &Authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if uri.query().is_some() {
            return Err(bad("a base URL has no query; put it in the step's path"));
        }
        Ok(Target {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(default_port),
            authority: HeaderValue::from_str(authority.as_str()).map_err(|_| bad("bad host"))?,
            base_path: uri.path().trim_end_matches('/').to_string(),
            scheme,
            timeout,
            ca_pem: String::new(),
        })
    }

    /// Joins a step path to the base path as an origin-form URI.
    pub fn request_uri(&self, path: &str) -> Result<Uri, String> {
        if !path.starts_with('/') {
            return Err(format!("path `{path}` must start with `/`"));
        }
        let full = format!("{}{}", self.base_path, path);
        let pq: PathAndQuery = full.parse().map_err(|e| format!("path `{path}`: {e}"))?;
        Ok(Uri::from(pq))
    }
}

impl TryFrom<v1::Assign> for Assignment {
    type Error = AssignmentError;

    fn try_from(a: v1::Assign) -> Result<Self, Self::Error> {
        let t = a.target.ok_or(AssignmentError::NoTarget)?;
        if t.timeout_us == 0 {
            return Err(AssignmentError::Invalid("target timeout is zero".into()));
        }
        let mut target = Target::parse(&t.base_url, Duration::from_micros(t.timeout_us))?;
        if let Err(e) = crate::client::parse_pem_certs(&t.ca_pem) {
            return Err(AssignmentError::Invalid(format!(
                "target CA certificates: {e}"
            )));
        }
        target.ca_pem = t.ca_pem;
        let step_count = a.step_names.len();
        let mut scenarios = Vec::with_capacity(a.scenarios.len());
        for s in a.scenarios {
            let mut steps = Vec::with_capacity(s.steps.len());
            for (i, st) in s.steps.into_iter().enumerate() {
                let bad = |reason: String| AssignmentError::BadStep {
                    scenario: s.name.clone(),
                    step: i,
                    reason,
                };
                let id = st.id as usize;
                if id >= step_count {
                    return Err(bad(format!(
                        "step id {id} but only {step_count} step names"
                    )));
                }
                let method = Method::from_bytes(st.method.as_bytes())
                    .map_err(|_| bad(format!("bad method `{}`", st.method)))?;
                let uri = target.request_uri(&st.path).map_err(bad)?;
                let mut headers = Vec::with_capacity(st.headers.len());
                for h in st.headers {
                    let name = HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| bad(format!("bad header name `{}`", h.name)))?;
                    let value = HeaderValue::from_str(&h.value)
                        .map_err(|_| bad(format!("bad value for header `{}`", h.name)))?;
                    headers.push((name, value));
                }
                steps.push(Step {
                    id,
                    method,
                    uri,
                    headers,
                });
            }
            if steps.is_empty() {
                return Err(AssignmentError::Invalid(format!(
                    "scenario `{}` has no steps",
                    s.name
                )));
            }
            scenarios.push(Scenario {
                name: s.name,
                steps,
            });
        }
        let mut users = Vec::with_capacity(a.users.len());
        for u in a.users {
            if u.scenario as usize >= scenarios.len() {
                return Err(AssignmentError::BadScenarioIndex {
                    user: u.index,
                    scenario: u.scenario,
                    count: scenarios.len(),
                });
            }
            users.push(UserSlot {
                index: u.index,
                start_offset: Duration::from_micros(u.start_offset_us),
                scenario: u.scenario as usize,
                stop_offset: (u.stop_offset_us > 0)
                    .then(|| Duration::from_micros(u.stop_offset_us)),
            });
        }
        let bound = match (a.iterations, a.duration_us) {
            (n, 0) if n > 0 => Bound::Iterations(n),
            (0, d) if d > 0 => Bound::Duration(Duration::from_micros(d)),
            _ => {
                return Err(AssignmentError::Invalid(
                    "exactly one of iterations and duration must be set".into(),
                ));
            }
        };
        if a.interval_us < 10_000 {
            return Err(AssignmentError::Invalid(format!(
                "reporting interval {} µs is below 10 ms",
                a.interval_us
            )));
        }
        if a.max_run_us == 0 {
            return Err(AssignmentError::Invalid("max run time is zero".into()));
        }
        let open = a.open.map(|o| open_load(o, scenarios.len())).transpose()?;
        Ok(Assignment {
            open,
            run_id: a.run_id,
            target,
            scenarios,
            users,
            bound,
            interval: Duration::from_micros(a.interval_us),
            step_names: a.step_names,
            max_run: Duration::from_micros(a.max_run_us),
            graceful_stop: Duration::from_micros(a.graceful_stop_us),
        })
    }
}

fn open_load(o: v1::OpenModel, scenarios: usize) -> Result<OpenLoad, AssignmentError> {
    let bad = |m: String| Err(AssignmentError::Invalid(format!("open model: {m}")));
    if o.stages.is_empty() {
        return bad("no rate stages".into());
    }
    let mut stages = Vec::with_capacity(o.stages.len());
    for st in &o.stages {
        let ok = |r: f64| r.is_finite() && (0.0..=10_000_000.0).contains(&r);
        if !ok(st.from) || !ok(st.to) {
            return bad(format!("rate {} -> {} is not a rate", st.from, st.to));
        }
        if st.duration_us == 0 {
            return bad("a stage lasts zero time".into());
        }
        stages.push(RateStage {
            from: st.from,
            to: st.to,
            duration: Duration::from_micros(st.duration_us),
        });
    }
    if o.period == 0
        || o.positions.iter().any(|&p| p >= o.period)
        || !o.positions.windows(2).all(|w| w[0] < w[1])
    {
        return bad(format!(
            "positions {:?} do not fit period {}",
            o.positions, o.period
        ));
    }
    if !o.positions.is_empty() && o.max_users == 0 {
        return bad("arrivals but no users to run them".into());
    }
    if o.scenario_cycle.is_empty() || o.scenario_cycle.iter().any(|&s| s as usize >= scenarios) {
        return bad(format!(
            "scenario cycle {:?} for {scenarios} scenarios",
            o.scenario_cycle
        ));
    }
    Ok(OpenLoad {
        schedule: RateSchedule::new(stages),
        period: o.period,
        positions: o.positions,
        max_users: o.max_users,
        max_wait: Duration::from_micros(o.max_wait_us),
        scenario_cycle: o.scenario_cycle.into_iter().map(|s| s as usize).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parsing() {
        let t = Target::parse("http://127.0.0.1:8080/app/", Duration::from_secs(1)).unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 8080);
        assert_eq!(t.base_path, "/app");
        assert_eq!(t.request_uri("/x?y=1").unwrap().to_string(), "/app/x?y=1");
        let t = Target::parse("https://example.test", Duration::from_secs(1)).unwrap();
        assert_eq!(t.port, 443);
        assert_eq!(t.request_uri("/").unwrap().to_string(), "/");
        let t = Target::parse("http://[::1]:81", Duration::from_secs(1)).unwrap();
        assert_eq!(t.host, "::1");
        for bad in [
            "ftp://x",
            "127.0.0.1:80",
            "http://u:p@h/",
            "http://h/?q=1",
            "http://",
        ] {
            assert!(Target::parse(bad, Duration::from_secs(1)).is_err(), "{bad}");
        }
    }
}
