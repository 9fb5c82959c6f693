//! The engine's view of a run: an agent's share of the schedule, validated
//! once from the wire so the engine never re-checks it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Uri};
use loadfleet_proto::v1;

use crate::arrivals::{RateSchedule, RateStage};
use crate::builtin::Builtin;
use crate::expr::Expr;
use crate::journey::{Check, Extract, Probe, Source, Think};
use crate::program::{Names, Program};
use crate::template::{Template, VarTable};

/// Most redirects one step may follow.
pub const MAX_REDIRECTS: u32 = 10;
/// Most rows an assignment may carry in one data set.
pub const MAX_DATA_ROWS: usize = 1_000_000;

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
    /// Longest a new connection (TCP connect and TLS handshake) may take.
    pub connect_timeout: Duration,
    /// Extra certificate authorities (PEM) for https targets; may be empty.
    pub ca_pem: String,
    /// Bytes of a response body kept for checks and extractions.
    pub body_limit: usize,
    /// Verify servers' certificates (`tls_verify = false` turns it off).
    pub tls_verify: bool,
    /// How long a user keeps a connection.
    pub connections: v1::Connections,
    /// Resume TLS sessions, as browsers do (`tls_resumption = false`: not).
    pub tls_resumption: bool,
    /// Metric ids of the request phases ([`PHASE_METRICS`]), when the plan
    /// asks for them (`[http] phases`).
    pub phase_metrics: Option<[u32; 6]>,
    /// `[http] version`: HTTP/2 by ALPN when offered (auto), never, always,
    /// or over plain TCP (h2c).
    pub version: v1::HttpVersion,
}

impl Target {
    /// The TLS settings this target asks for. HTTP/2 is offered (and
    /// preferred) unless the plan says 1.1.
    pub fn tls_settings(&self) -> crate::tls::Settings<'_> {
        crate::tls::Settings {
            ca_pem: &self.ca_pem,
            verify: self.tls_verify,
            resumption: self.tls_resumption,
            alpn: match self.version {
                v1::HttpVersion::Http1 => &[b"http/1.1"],
                v1::HttpVersion::Http2 => &[b"h2"],
                _ => &[b"h2", b"http/1.1"],
            },
        }
    }
}

/// Most of a response body kept for checks and extraction by default
/// (decoded, when it came compressed; `[http] body_limit` changes it, up to
/// [`MAX_BODY_LIMIT`]); the rest is read and dropped.
pub const MAX_KEPT_BODY: usize = 8 << 20;
/// The largest body limit an agent accepts: every user may keep this much.
pub const MAX_BODY_LIMIT: usize = 64 << 20;

/// The request phases' metric names, in [`crate::client::Phases`] order.
pub const PHASE_METRICS: [&str; 6] = [
    "http_dns",
    "http_connect",
    "http_tls",
    "http_send",
    "http_wait",
    "http_receive",
];

/// Where a step's request goes.
#[derive(Debug, Clone)]
pub enum Address {
    /// A fixed origin-form request target on the target (no variables, no
    /// query parameters): sent as it is, with nothing built per request.
    Static(Uri),
    /// A path template, joined to the base path.
    Path(Template),
    /// An absolute URL template (any origin the agent's policy allows).
    Url(Template),
}

/// A step's request body.
#[derive(Debug, Clone, Default)]
pub enum BodySpec {
    #[default]
    None,
    /// application/x-www-form-urlencoded fields.
    Form(Vec<(Template, Template)>),
    /// JSON text (application/json).
    Json(Template),
    Raw(Template),
    /// multipart/form-data.
    Multipart(Multipart),
}

/// A multipart/form-data body, prepared once: its content type (with the
/// boundary) and its parts.
#[derive(Debug, Clone)]
pub struct Multipart {
    pub content_type: HeaderValue,
    pub boundary: String,
    pub parts: Vec<Part>,
}

/// One part of a multipart body.
#[derive(Debug, Clone)]
pub enum Part {
    Field {
        name: Template,
        value: Template,
    },
    /// A file: its bytes are shared, never copied, from one request to the
    /// next (only into the request's body).
    File {
        name: Template,
        filename: String,
        content_type: String,
        content: bytes::Bytes,
    },
}

/// A variable a step sets after its response: its slot, its expression,
/// and the per-use built-ins the expression reads.
pub type SetVar = (usize, Expr, Box<[usize]>);

/// One HTTP request of a scenario, prepared once.
#[derive(Debug, Clone)]
pub struct Step {
    /// Index into [`Assignment::step_names`].
    pub id: usize,
    pub method: Method,
    pub address: Address,
    /// Headers without variables.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers whose values hold variables.
    pub header_templates: Vec<(HeaderName, Template)>,
    pub query: Vec<(Template, Template)>,
    pub body: BodySpec,
    /// Redirects followed within the step; 0: none.
    pub max_redirects: u32,
    pub extract: Arc<[Extract]>,
    pub check: Arc<Check>,
    pub think: Option<Think>,
    /// Numbers read from every response (`[[metric]]`).
    pub metrics: Arc<[Probe]>,
    /// Variables set after the response (and its extractions), in order,
    /// each with the per-use built-ins its expression reads.
    pub set: Arc<[SetVar]>,
    /// Per-use built-ins (`${__random(..)}`, `${__uuid}`...) the request
    /// reads: filled just before it is built.
    pub fresh: Box<[usize]>,
}

impl Step {
    /// A plain request without variables, checks or extraction.
    pub fn fixed(id: usize, method: Method, uri: Uri) -> Step {
        Step {
            id,
            method,
            address: Address::Static(uri),
            headers: Vec::new(),
            header_templates: Vec::new(),
            query: Vec::new(),
            body: BodySpec::None,
            max_redirects: 0,
            extract: Arc::new([]),
            check: Default::default(),
            think: None,
            metrics: Arc::new([]),
            set: Arc::new([]),
            fresh: Box::default(),
        }
    }

    /// Whether the response body must be kept (for checks, extraction or
    /// metrics).
    pub fn needs_body(&self) -> bool {
        self.check.needs_body()
            || self
                .extract
                .iter()
                .map(|e| &e.source)
                .chain(self.metrics.iter().map(|m| &m.source))
                .any(|s| !matches!(s, Source::Header(_)))
    }

    /// Whether the response headers must be kept (for extraction, metrics
    /// or checks on them).
    pub fn needs_headers(&self) -> bool {
        self.check.needs_headers()
            || self
                .extract
                .iter()
                .map(|e| &e.source)
                .chain(self.metrics.iter().map(|m| &m.source))
                .any(|s| matches!(s, Source::Header(_)))
    }

    /// What of a response this step needs beyond its status.
    pub fn keep(&self) -> Keep {
        Keep {
            body: self.needs_body(),
            headers: self.needs_headers(),
        }
    }
}

/// What of a response the caller needs beyond its status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keep {
    /// The body, in [`UserClient::body`].
    pub body: bool,
    /// The headers, in [`Reply::headers`].
    pub headers: bool,
}

/// What a user does after a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    #[default]
    Continue,
    NextIteration,
    StopUser,
}

/// A sequence of steps a virtual user runs as one iteration.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<Step>,
    /// The control flow over `steps` (each once, in order, without one).
    pub program: Program,
    pub on_error: OnError,
    /// Minimum length of an iteration.
    pub pacing: Duration,
}

impl Scenario {
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Scenario {
        Scenario {
            name: name.into(),
            program: Program::straight(steps.len()),
            steps,
            on_error: OnError::Continue,
            pacing: Duration::ZERO,
        }
    }
}

/// How a data set's rows are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    Sequential,
    Unique,
    Random,
}

/// Rows of one data file; each column fills one variable slot.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub name: String,
    pub columns: Vec<String>,
    pub slots: Vec<usize>,
    pub rows: Vec<Vec<String>>,
    pub mode: DataMode,
    /// `unique`: row of each fleet-wide user index.
    pub by_user: HashMap<u64, usize>,
}

impl DataSet {
    /// The row a user reads in an iteration, if any.
    pub fn row(
        &self,
        user: u64,
        iteration: u64,
        fleet_users: u64,
        rng: &mut crate::rng::Rng,
    ) -> Option<&[String]> {
        if self.rows.is_empty() {
            return None;
        }
        let i = match self.mode {
            DataMode::Unique => *self.by_user.get(&user)?,
            DataMode::Sequential => {
                let n = self.rows.len() as u64;
                (user.wrapping_add(iteration.wrapping_mul(fleet_users.max(1))) % n) as usize
            }
            DataMode::Random => rng.below(self.rows.len()),
        };
        self.rows.get(i).map(Vec::as_slice)
    }
}

/// Scheme, host and port: where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Value of the `Host` header.
    pub authority: HeaderValue,
}

impl Origin {
    /// Splits an absolute `http(s)://` URI into its origin and its
    /// origin-form request target.
    pub fn split(uri: &Uri) -> Result<(Origin, Uri), String> {
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{uri}` is not an http:// or https:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{uri}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{uri}`: credentials in URLs are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let pq = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => PathAndQuery::from_static("/"),
            Some(p) => p.parse::<PathAndQuery>().map_err(|e| e.to_string())?,
        };
        Ok((
            Origin {
                https,
                port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
                authority: HeaderValue::from_str(authority.as_str())
                    .map_err(|_| format!("`{uri}`: bad host"))?,
                host,
            },
            Uri::from(pq),
        ))
    }
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
    /// Its scenario's own load: the user's iterations, or its end (from
    /// the run's start, as a `duration` ends); `None` for the run's bound.
    pub bound: Option<Bound>,
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

impl Assignment {
    /// Whether any arrival-rate schedule runs (latencies are then also
    /// measured from intended send times).
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// The most users this agent runs at once: its closed users and its
    /// shares of the rate schedules' concurrency caps.
    pub fn most_users(&self) -> usize {
        self.users.len()
            + self
                .open
                .iter()
                .map(|o| o.max_users as usize)
                .sum::<usize>()
    }

    /// This agent's share of the fleet's peak arrival rate, all schedules
    /// together (at the busiest instant, not the sum of each one's peak).
    pub fn arrival_peak(&self) -> f64 {
        let schedules: Vec<(&RateSchedule, f64)> = self
            .open
            .iter()
            .map(|o| {
                (
                    &o.schedule,
                    o.positions.len() as f64 / f64::from(o.period.max(1)),
                )
            })
            .collect();
        crate::arrivals::peak_of_sum(&schedules)
    }
}

/// Everything an agent needs to run its share of a run.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The arrival-rate schedules: the plan-wide open model (`users` is
    /// then empty), or one per scenario with a rate of its own, beside the
    /// closed users of the others.
    pub open: Vec<OpenLoad>,
    pub run_id: String,
    pub target: Target,
    pub scenarios: Vec<Scenario>,
    pub users: Vec<UserSlot>,
    pub bound: Bound,
    pub interval: Duration,
    pub step_names: Vec<String>,
    /// Names of the metrics read from responses ([`Probe::id`] indexes them).
    pub metric_names: Vec<String>,
    /// Hard limit after which the agent stops all load by itself.
    pub max_run: Duration,
    /// How long a user stopped by a ramp-down may finish its iteration.
    pub graceful_stop: Duration,
    /// Every variable of the run, with its slot in a user's values.
    pub vars: VarTable,
    pub data: Vec<DataSet>,
    /// Users in the whole fleet (the stride of sequential data rows).
    pub fleet_users: u64,
    pub clear_cookies_each_iteration: bool,
    /// This agent's share of the fleet's throughput cap, requests/s.
    pub throttle_per_s: Option<f64>,
    /// The run's seed (see [`crate::rng::Rng::for_user`]).
    pub seed: u64,
    /// Lists set by extractions with `match = "all"`, each with a slot in
    /// a user's lists.
    pub lists: VarTable,
    /// By variable slot: the built-in it is, if it is one.
    pub builtins: Vec<Option<Builtin>>,
    /// By list slot: the `<name>_K` variables the plan reads, as
    /// `(K, variable slot)`, filled from the list's K-th match.
    pub list_items: Vec<Vec<(usize, usize)>>,
    /// By step id: whether it is a group (left out of overall figures).
    pub group_steps: Vec<bool>,
    /// What `${__agent}` and `${__region}` read.
    pub agent_name: String,
    pub region: String,
    /// The most loop counters, group timers, choice counters and nested
    /// groups any scenario's program needs, so a user's state is made once.
    pub user_slots: Program,
}

impl Target {
    /// The origin requests go to by default.
    pub fn origin(&self) -> Origin {
        Origin {
            https: self.scheme == Scheme::HTTPS,
            host: self.host.clone(),
            port: self.port,
            authority: self.authority.clone(),
        }
    }

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
            connect_timeout: timeout,
            ca_pem: String::new(),
            body_limit: MAX_KEPT_BODY,
            tls_verify: true,
            connections: v1::Connections::PerUser,
            tls_resumption: true,
            phase_metrics: None,
            version: v1::HttpVersion::Auto,
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
        if let Err(e) = crate::tls::parse_pem_certs(&t.ca_pem) {
            return Err(AssignmentError::Invalid(format!(
                "target CA certificates: {e}"
            )));
        }
        target.ca_pem = t.ca_pem;
        if t.connect_timeout_us > 0 {
            target.connect_timeout =
                Duration::from_micros(t.connect_timeout_us).min(target.timeout);
        }
        target.tls_verify = !t.insecure_tls;
        target.tls_resumption = !t.no_tls_resumption;
        target.version = v1::HttpVersion::try_from(t.version).map_err(|_| {
            AssignmentError::Invalid(format!(
                "unknown HTTP version {} (a newer controller?)",
                t.version
            ))
        })?;
        if t.phases {
            let mut ids = [0u32; 6];
            for (id, name) in ids.iter_mut().zip(PHASE_METRICS) {
                *id = a
                    .metric_names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| {
                        AssignmentError::Invalid(format!(
                            "request phases asked for, but no metric is named {name}"
                        ))
                    })? as u32;
            }
            target.phase_metrics = Some(ids);
        }
        target.connections = v1::Connections::try_from(t.connections).map_err(|_| {
            AssignmentError::Invalid(format!(
                "unknown connections mode {} (a newer controller?)",
                t.connections
            ))
        })?;
        if t.body_limit > 0 {
            target.body_limit = usize::try_from(t.body_limit)
                .unwrap_or(usize::MAX)
                .min(MAX_BODY_LIMIT);
        }
        let step_count = a.step_names.len();
        let mut vars = VarTable::default();
        let data = a
            .data
            .into_iter()
            .map(|d| data_set(d, &mut vars))
            .collect::<Result<Vec<_>, _>>()?;
        let mut group_steps = vec![false; step_count];
        for &g in &a.group_steps {
            match group_steps.get_mut(g as usize) {
                Some(flag) => *flag = true,
                None => {
                    return Err(AssignmentError::Invalid(format!(
                        "group step {g}, but only {step_count} step names"
                    )));
                }
            }
        }
        // Lists come from extractions with `match = "all"`: named first, so
        // a `for_each` finds them whichever step comes first.
        let mut lists = VarTable::default();
        for s in &a.scenarios {
            for st in &s.steps {
                for e in st.extract.iter().filter(|e| e.all) {
                    lists.slot(&e.name);
                }
            }
        }
        let mut scenarios = Vec::with_capacity(a.scenarios.len());
        let mut produced: Vec<bool> = Vec::new();
        let mut user_slots = Program::default();
        for s in a.scenarios {
            let on_error = match v1::OnError::try_from(s.on_error) {
                Ok(v1::OnError::Continue) => OnError::Continue,
                Ok(v1::OnError::NextIteration) => OnError::NextIteration,
                Ok(v1::OnError::StopUser) => OnError::StopUser,
                Err(_) => {
                    return Err(AssignmentError::Invalid(format!(
                        "scenario `{}`: unknown on_error {}",
                        s.name, s.on_error
                    )));
                }
            };
            let mut steps = Vec::with_capacity(s.steps.len());
            for (i, st) in s.steps.into_iter().enumerate() {
                if group_steps.get(st.id as usize).copied().unwrap_or(false) {
                    return Err(AssignmentError::BadStep {
                        scenario: s.name.clone(),
                        step: i,
                        reason: format!("step id {} is a group's", st.id),
                    });
                }
                let step = step(
                    st,
                    step_count,
                    a.metric_names.len(),
                    &target,
                    &mut vars,
                    &lists,
                )
                .map_err(|reason| AssignmentError::BadStep {
                    scenario: s.name.clone(),
                    step: i,
                    reason,
                })?;
                produced.resize(vars.len(), false);
                for e in step.extract.iter() {
                    produced[e.slot] = true;
                    if let Some((_, count)) = e.all {
                        produced[count] = true;
                    }
                }
                for (slot, _, _) in step.set.iter() {
                    produced[*slot] = true;
                }
                steps.push(step);
            }
            if steps.is_empty() {
                return Err(AssignmentError::Invalid(format!(
                    "scenario `{}` has no steps",
                    s.name
                )));
            }
            let program = if s.program.is_empty() {
                Program::straight(steps.len())
            } else {
                let columns: Vec<(&str, &[String])> = data
                    .iter()
                    .map(|d| (d.name.as_str(), d.columns.as_slice()))
                    .collect();
                let names = Names {
                    steps: steps.len(),
                    step_ids: step_count,
                    group_steps: &group_steps,
                    lists: &lists,
                    data: &columns,
                };
                Program::compile(s.program, &names, &mut vars)
                    .map_err(|e| AssignmentError::Invalid(format!("scenario `{}`: {e}", s.name)))?
            };
            produced.resize(vars.len(), false);
            for op in &program.ops {
                match op {
                    crate::program::Op::Set { slot, .. } => produced[*slot] = true,
                    crate::program::Op::LoopTest(l) => {
                        if let Some((_, item)) = l.list {
                            produced[item] = true;
                        }
                    }
                    _ => {}
                }
            }
            user_slots.loops = user_slots.loops.max(program.loops);
            user_slots.groups = user_slots.groups.max(program.groups);
            user_slots.turns = user_slots.turns.max(program.turns);
            user_slots.group_depth = user_slots.group_depth.max(program.group_depth);
            scenarios.push(Scenario {
                name: s.name,
                steps,
                program,
                on_error,
                pacing: Duration::from_micros(s.pacing_us),
            });
        }
        produced.resize(vars.len(), false);
        for d in &data {
            for &slot in &d.slots {
                produced[slot] = true;
            }
        }
        let mut list_items = vec![Vec::new(); lists.len()];
        for (slot, made) in produced.iter_mut().enumerate() {
            let name = vars.name(slot);
            if let Some((list, k)) = name.rsplit_once('_')
                && let (Some(l), Ok(k)) = (lists.get(list), k.parse::<usize>())
                && k >= 1
            {
                list_items[l].push((k, slot));
                *made = true;
            }
        }
        let mut builtins = Vec::with_capacity(vars.len());
        for (slot, made) in produced.iter_mut().enumerate() {
            match Builtin::parse(vars.name(slot)) {
                None => builtins.push(None),
                Some(Ok(b)) => {
                    *made = true;
                    builtins.push(Some(b));
                }
                Some(Err(e)) => return Err(AssignmentError::Invalid(e)),
            }
        }
        if let Some(slot) = produced.iter().position(|p| !p) {
            return Err(AssignmentError::Invalid(format!(
                "variable `{}` is used but no data column, extraction or `set` sets it",
                vars.name(slot)
            )));
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
                bound: match (u.iterations, u.end_us) {
                    (0, 0) => None,
                    (0, end) => Some(Bound::Duration(Duration::from_micros(end))),
                    (n, _) => Some(Bound::Iterations(n)),
                },
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
        let open = a
            .open
            .into_iter()
            .map(|o| open_load(o, scenarios.len()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Assignment {
            open,
            run_id: a.run_id,
            target,
            scenarios,
            users,
            bound,
            interval: Duration::from_micros(a.interval_us),
            step_names: a.step_names,
            metric_names: a.metric_names,
            max_run: Duration::from_micros(a.max_run_us),
            graceful_stop: Duration::from_micros(a.graceful_stop_us),
            vars,
            data,
            fleet_users: a.fleet_users,
            clear_cookies_each_iteration: a.clear_cookies_each_iteration,
            throttle_per_s: (a.throttle_per_s.is_finite() && a.throttle_per_s > 0.0)
                .then_some(a.throttle_per_s),
            seed: a.seed,
            lists,
            builtins,
            list_items,
            group_steps,
            agent_name: a.agent_name,
            region: a.region,
            user_slots,
        })
    }
}

fn data_set(d: v1::DataSet, vars: &mut VarTable) -> Result<DataSet, AssignmentError> {
    let bad = |m: String| AssignmentError::Invalid(format!("data `{}`: {m}", d.name));
    let mode = match v1::DataMode::try_from(d.mode) {
        Ok(v1::DataMode::Sequential) => DataMode::Sequential,
        Ok(v1::DataMode::Unique) => DataMode::Unique,
        Ok(v1::DataMode::Random) => DataMode::Random,
        _ => return Err(bad(format!("unknown mode {}", d.mode))),
    };
    if d.rows.len() > MAX_DATA_ROWS {
        return Err(bad(format!("{} rows, above {MAX_DATA_ROWS}", d.rows.len())));
    }
    if d.rows.iter().any(|r| r.values.len() != d.columns.len()) {
        return Err(bad("a row does not have one value per column".into()));
    }
    let by_user = if mode == DataMode::Unique {
        if d.user_indices.len() != d.rows.len() {
            return Err(bad("unique rows without one user index each".into()));
        }
        d.user_indices
            .iter()
            .enumerate()
            .map(|(row, &user)| (user, row))
            .collect()
    } else {
        HashMap::new()
    };
    let slots = d
        .columns
        .iter()
        .map(|c| vars.slot(&format!("{}.{c}", d.name)))
        .collect();
    Ok(DataSet {
        slots,
        columns: d.columns,
        rows: d.rows.into_iter().map(|r| r.values).collect(),
        mode,
        by_user,
        name: d.name,
    })
}

fn template(text: &str, what: &str, vars: &mut VarTable) -> Result<Template, String> {
    Template::compile(text, vars).map_err(|e| format!("{what}: {e}"))
}

/// Checks a multipart body: a boundary a header can carry, and file names
/// and media types without line breaks or quotes that would end their
/// header.
fn multipart(m: v1::Multipart, vars: &mut VarTable) -> Result<Multipart, String> {
    let fits = |s: &str| {
        !s.is_empty()
            && s.len() <= 70
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&b))
    };
    if !fits(&m.boundary) {
        return Err(format!(
            "multipart boundary {:?} is not 1 to 70 plain characters",
            m.boundary
        ));
    }
    let content_type =
        HeaderValue::from_str(&format!("multipart/form-data; boundary={}", m.boundary))
            .map_err(|_| "multipart boundary is not a header value".to_string())?;
    let plain = |s: &str| !s.bytes().any(|b| b == b'"' || b == b'\r' || b == b'\n');
    let mut parts = Vec::with_capacity(m.parts.len());
    for p in m.parts {
        let name = template(&p.name, "multipart", vars)?;
        if p.file {
            if !plain(&p.filename) || !plain(&p.content_type) || p.content_type.is_empty() {
                return Err(format!(
                    "multipart file {:?} ({:?}): a file name or media type with a quote or a line break",
                    p.filename, p.content_type
                ));
            }
            parts.push(Part::File {
                name,
                filename: p.filename,
                content_type: p.content_type,
                content: bytes::Bytes::from(p.content),
            });
        } else {
            parts.push(Part::Field {
                name,
                value: template(&p.value, "multipart", vars)?,
            });
        }
    }
    Ok(Multipart {
        content_type,
        boundary: m.boundary,
        parts,
    })
}

fn pairs(
    list: Vec<v1::Header>,
    what: &str,
    vars: &mut VarTable,
) -> Result<Vec<(Template, Template)>, String> {
    list.into_iter()
        .map(|h| {
            Ok((
                template(&h.name, what, vars)?,
                template(&h.value, what, vars)?,
            ))
        })
        .collect()
}

fn step(
    st: v1::Step,
    step_count: usize,
    metric_count: usize,
    target: &Target,
    vars: &mut VarTable,
    lists: &VarTable,
) -> Result<Step, String> {
    let id = st.id as usize;
    vars.watch();
    if id >= step_count {
        return Err(format!("step id {id} but only {step_count} step names"));
    }
    let method = Method::from_bytes(st.method.as_bytes())
        .map_err(|_| format!("bad method `{}`", st.method))?;
    let query = pairs(st.query, "query", vars)?;
    let address = if !st.url.is_empty() {
        let t = template(&st.url, "url", vars)?;
        if let Some(fixed) = t.as_static() {
            let uri: Uri = fixed.parse().map_err(|e| format!("url `{fixed}`: {e}"))?;
            Origin::split(&uri)?;
        }
        Address::Url(t)
    } else {
        if !st.path.starts_with('/') {
            return Err(format!("path `{}` must start with `/`", st.path));
        }
        let t = template(&st.path, "path", vars)?;
        match t.as_static() {
            Some(fixed) if query.is_empty() => Address::Static(target.request_uri(fixed)?),
            Some(fixed) => {
                target.request_uri(fixed)?;
                Address::Path(t)
            }
            None => Address::Path(t),
        }
    };
    let mut headers = Vec::new();
    let mut header_templates = Vec::new();
    for h in st.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("bad header name `{}`", h.name))?;
        let t = template(&h.value, "header", vars)?;
        match t.as_static() {
            Some(v) => headers.push((
                name,
                HeaderValue::from_str(v)
                    .map_err(|_| format!("bad value for header `{}`", h.name))?,
            )),
            None => header_templates.push((name, t)),
        }
    }
    let body = match st.body {
        None => BodySpec::None,
        Some(v1::step::Body::Form(f)) => BodySpec::Form(pairs(f.fields, "form", vars)?),
        Some(v1::step::Body::Json(j)) => BodySpec::Json(template(&j, "json", vars)?),
        Some(v1::step::Body::Raw(r)) => BodySpec::Raw(template(&r, "body", vars)?),
        Some(v1::step::Body::Multipart(m)) => BodySpec::Multipart(multipart(m, vars)?),
    };
    if st.max_redirects > MAX_REDIRECTS {
        return Err(format!(
            "{} redirects, above the limit of {MAX_REDIRECTS}",
            st.max_redirects
        ));
    }
    let reads = vars.watched();
    let fresh = crate::program::fresh(&reads, vars);
    let mut extract = Vec::with_capacity(st.extract.len());
    for e in st.extract {
        extract.push(extraction(e, vars, lists)?);
    }
    let mut set = Vec::with_capacity(st.set.len());
    for sv in st.set {
        vars.watch();
        let e = Expr::parse(&sv.expression, vars)
            .map_err(|e| format!("set `{}` = `{}`: {e}", sv.name, sv.expression));
        let read = vars.watched();
        set.push((vars.slot(&sv.name), e?, crate::program::fresh(&read, vars)));
    }
    let mut metrics = Vec::with_capacity(st.metrics.len());
    for m in st.metrics {
        if m.id as usize >= metric_count {
            return Err(format!(
                "metric {} but only {metric_count} metric names",
                m.id
            ));
        }
        if !(m.scale.is_finite() && m.scale > 0.0) {
            return Err(format!("metric {}: scale {} is not above 0", m.id, m.scale));
        }
        let e = m
            .source
            .ok_or_else(|| format!("metric {} has no source", m.id))?;
        let what = format!("metric {}", m.id);
        metrics.push(Probe {
            id: m.id,
            source: source(e.from, e.group, e.attribute, &what)?,
            match_no: e.match_no as usize,
            scale: m.scale,
        });
    }
    let check = match st.check {
        None => Check::default(),
        Some(c) => Check {
            status: c
                .status
                .iter()
                .map(|&s| {
                    u16::try_from(s)
                        .ok()
                        .filter(|s| (100..=999).contains(s))
                        .ok_or_else(|| format!("check: status {s} is not an HTTP status"))
                })
                .collect::<Result<_, _>>()?,
            body_contains: c
                .body_contains
                .iter()
                .map(|t| template(t, "check", vars))
                .collect::<Result<_, _>>()?,
            body_matches: regexes(&c.body_matches)?,
            body_not_matches: regexes(&c.body_not_matches)?,
            headers_match: regexes(&c.headers_match)?,
            headers_not_match: regexes(&c.headers_not_match)?,
        },
    };
    let think = Think::of_wire(st.think)?;
    Ok(Step {
        id,
        method,
        address,
        headers,
        header_templates,
        query,
        body,
        max_redirects: st.max_redirects,
        extract: extract.into(),
        check: Arc::new(check),
        think,
        metrics: metrics.into(),
        set: set.into(),
        fresh,
    })
}

fn regexes(patterns: &[String]) -> Result<Vec<regex::bytes::Regex>, String> {
    patterns
        .iter()
        .map(|r| regex::bytes::Regex::new(r).map_err(|e| format!("check: regex: {e}")))
        .collect()
}

fn extraction(e: v1::Extract, vars: &mut VarTable, lists: &VarTable) -> Result<Extract, String> {
    let what = format!("extract `{}`", e.name);
    let source = source(e.from, e.group, e.attribute, &what)?;
    let all = match (e.all, lists.get(&e.name)) {
        (false, _) => None,
        (true, Some(list)) => Some((list, vars.slot(&format!("{}_matchNr", e.name)))),
        (true, None) => return Err(format!("{what}: a list that was not named")),
    };
    Ok(Extract {
        all,
        slot: vars.slot(&e.name),
        name: e.name,
        source,
        match_no: e.match_no as usize,
        default: e.default,
    })
}

/// Where an extraction or a metric looks.
fn source(
    from: Option<v1::extract::From>,
    group: u32,
    attribute: String,
    what: &str,
) -> Result<Source, String> {
    Ok(match from {
        Some(v1::extract::From::Regex(r)) => {
            let regex =
                regex::bytes::Regex::new(&r).map_err(|err| format!("{what}: regex: {err}"))?;
            let group = group as usize;
            if group >= regex.captures_len() {
                return Err(format!(
                    "{what}: group {group}, but the regex has {} groups",
                    regex.captures_len() - 1
                ));
            }
            Source::Regex { regex, group }
        }
        Some(v1::extract::From::Css(c)) => Source::Css {
            selector: scraper::Selector::parse(&c)
                .map_err(|err| format!("{what}: CSS selector: {err}"))?,
            attribute,
        },
        Some(v1::extract::From::JsonPointer(p)) => {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!("{what}: a JSON pointer starts with `/`"));
            }
            Source::JsonPointer(p)
        }
        Some(v1::extract::From::Header(h)) => Source::Header(
            HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("{what}: bad header name"))?,
        ),
        None => return Err(format!("{what} has no source")),
    })
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
