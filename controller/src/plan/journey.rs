//! The journey part of a plan: steps with bodies, variables, extraction,
//! checks and think time; `[vars]`, `[session]` and `[[data]]`. Everything
//! is validated here (regexes compiled, CSS selectors parsed, every variable
//! traced to where it is set) and turned into wire steps once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use loadfleet_proto::v1;
use serde::Deserialize;
use toml::Spanned;

use super::{PlanError, TargetSpec, Validator};

/// Most bytes of data files one plan may ship to its agents.
pub const MAX_DATA_BYTES: usize = 16 << 20;

/// The most bytes of files a plan's multipart steps may upload, all steps
/// together: each step's files go to every agent with its assignment.
pub const MAX_UPLOAD_BYTES: usize = 16 << 20;

/// Names and values sent in order: a table (`{ q = "x", page = 2 }`), or a
/// list of `[name, value]` pairs where a name repeats
/// (`[["tag", "a"], ["tag", "b"]]`), as forms and JMeter plans send them.
#[derive(Default)]
pub(super) struct RawPairs(Vec<(String, Spanned<toml::Value>)>);

impl<'de> Deserialize<'de> for RawPairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of names and values, or a list of [name, value] pairs")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<RawPairs, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    out.push((k, m.next_value::<Spanned<toml::Value>>()?));
                }
                Ok(RawPairs(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<RawPairs, A::Error> {
                let mut out = Vec::new();
                while let Some(Pair(name, value)) = s.next_element::<Pair>()? {
                    out.push((name, value));
                }
                Ok(RawPairs(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[name, value]` of a list of pairs.
struct Pair(String, Spanned<toml::Value>);

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pair;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [name, value] pair, such as [\"tag\", \"a\"]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Pair, A::Error> {
                use serde::de::Error;
                let expected =
                    || A::Error::custom("expected a [name, value] pair, such as [\"tag\", \"a\"]");
                let name = s.next_element::<String>()?.ok_or_else(expected)?;
                let value = s
                    .next_element::<Spanned<toml::Value>>()?
                    .ok_or_else(expected)?;
                if s.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(expected());
                }
                Ok(Pair(name, value))
            }
        }
        d.deserialize_seq(V)
    }
}

/// One part of a step's `multipart` body: a field (`value`) or a file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPart {
    name: Spanned<String>,
    value: Option<Spanned<toml::Value>>,
    /// A file, relative to the plan's directory.
    file: Option<Spanned<String>>,
    /// The file's name as sent (default: the file's own name).
    filename: Option<Spanned<String>>,
    /// Its media type (default: from its extension).
    content_type: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    name: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    query: RawPairs,
    form: Option<Spanned<RawPairs>>,
    json: Option<Spanned<toml::Value>>,
    body: Option<Spanned<String>>,
    /// A multipart/form-data body: fields and files, in order.
    multipart: Option<Spanned<Vec<Spanned<RawPart>>>>,
    follow_redirects: Option<Spanned<bool>>,
    max_redirects: Option<Spanned<u32>>,
    pub(super) think: Option<Spanned<String>>,
    check: Option<Spanned<RawCheck>>,
    #[serde(default)]
    extract: Vec<Spanned<RawExtract>>,
    #[serde(default)]
    pub(super) metric: Vec<Spanned<RawMetric>>,
    /// Variables set after the response (or, on a step without a request,
    /// when the step is reached), in name order.
    pub(super) set: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    // The control flow (see `flow`): a step with one of these is a block
    // of the nested `step`s instead of a request.
    pub(super) group: Option<Spanned<String>>,
    pub(super) include_think: Option<Spanned<bool>>,
    pub(super) repeat: Option<Spanned<u64>>,
    #[serde(rename = "while")]
    pub(super) while_: Option<Spanned<String>>,
    pub(super) max_loops: Option<Spanned<u64>>,
    pub(super) during: Option<Spanned<crate::duration::PlanDuration>>,
    #[serde(rename = "if")]
    pub(super) if_: Option<Spanned<String>>,
    #[serde(rename = "else", default)]
    pub(super) else_: Vec<Spanned<RawStep>>,
    pub(super) for_each: Option<Spanned<String>>,
    #[serde(rename = "as")]
    pub(super) as_: Option<Spanned<String>>,
    pub(super) once: Option<Spanned<bool>>,
    pub(super) one_of: Option<Spanned<bool>>,
    pub(super) in_turn: Option<Spanned<bool>>,
    pub(super) percent: Option<Spanned<f64>>,
    pub(super) weight: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) step: Vec<Spanned<RawStep>>,
}

impl RawStep {
    /// Adds the plan's `[http]` default headers this step does not set
    /// itself (names compare without case), to every request in it.
    pub(super) fn default_headers(&mut self, defaults: &BTreeMap<String, Spanned<String>>) {
        for child in self.step.iter_mut().chain(self.else_.iter_mut()) {
            child.get_mut().default_headers(defaults);
        }
        if !self.is_request() {
            return;
        }
        for (name, value) in defaults {
            if !self.headers.keys().any(|h| h.eq_ignore_ascii_case(name)) {
                self.headers.insert(name.clone(), value.clone());
            }
        }
    }

    /// Whether this step sends a request (rather than being a block).
    pub(super) fn is_request(&self) -> bool {
        self.path.is_some() || self.url.is_some()
    }

    /// Variables this step and every step in it set (extractions, `set`s),
    /// for the message about a variable used before it is set.
    pub(super) fn extract_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .extract
            .iter()
            .map(|e| e.get_ref().name.get_ref().trim().to_string())
            .collect();
        if let Some(set) = &self.set {
            out.extend(set.get_ref().keys().map(|k| k.trim().to_string()));
        }
        for child in self.step.iter().chain(&self.else_) {
            out.extend(child.get_ref().extract_names());
        }
        out
    }

    /// The keys a request has that a block must not (the first found).
    pub(super) fn request_key(&self) -> Option<(&'static str, Range<usize>)> {
        let span = |s: Option<Range<usize>>, k: &'static str| s.map(|s| (k, s));
        span(self.name.as_ref().map(Spanned::span), "name")
            .or_else(|| span(self.method.as_ref().map(Spanned::span), "method"))
            .or_else(|| span(self.form.as_ref().map(Spanned::span), "form"))
            .or_else(|| span(self.json.as_ref().map(Spanned::span), "json"))
            .or_else(|| span(self.body.as_ref().map(Spanned::span), "body"))
            .or_else(|| span(self.think.as_ref().map(Spanned::span), "think"))
            .or_else(|| span(self.check.as_ref().map(Spanned::span), "check"))
            .or_else(|| span(self.extract.first().map(Spanned::span), "extract"))
            .or_else(|| span(self.metric.first().map(Spanned::span), "metric"))
            .or_else(|| {
                span(
                    self.max_redirects.as_ref().map(Spanned::span),
                    "max_redirects",
                )
            })
            .or_else(|| {
                span(
                    self.follow_redirects.as_ref().map(Spanned::span),
                    "follow_redirects",
                )
            })
            .or_else(|| span(self.query.0.first().map(|(_, v)| v.span()), "query"))
    }
}

/// An extraction's `match`: the n-th match (1-based; 0 picks one at
/// random), or every match (`"all"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MatchNo {
    Nth(u32),
    All,
}

impl<'de> Deserialize<'de> for MatchNo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MatchNo;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a match number (1 for the first, 0 for a random one) or \"all\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<MatchNo, E> {
                u32::try_from(v).map(MatchNo::Nth).map_err(|_| {
                    E::custom(format!(
                        "expected a match number from 0 or \"all\", found {v}"
                    ))
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MatchNo, E> {
                u32::try_from(v).map(MatchNo::Nth).map_err(|_| {
                    E::custom(format!("expected a match number or \"all\", found {v}"))
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MatchNo, E> {
                match v {
                    "all" => Ok(MatchNo::All),
                    other => Err(E::custom(format!(
                        "expected a match number or \"all\", found \"{other}\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(default)]
    status: Vec<Spanned<u32>>,
    #[serde(default)]
    body_contains: Vec<Spanned<String>>,
    #[serde(default)]
    body_matches: Vec<Spanned<String>>,
    #[serde(default)]
    body_not_matches: Vec<Spanned<String>>,
    #[serde(default)]
    headers_match: Vec<Spanned<String>>,
    #[serde(default)]
    headers_not_match: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExtract {
    name: Spanned<String>,
    regex: Option<Spanned<String>>,
    css: Option<Spanned<String>>,
    json: Option<Spanned<String>>,
    header: Option<Spanned<String>>,
    group: Option<Spanned<u32>>,
    #[serde(rename = "match")]
    match_no: Option<Spanned<MatchNo>>,
    attribute: Option<Spanned<String>>,
    #[serde(rename = "default")]
    fallback: Option<Spanned<String>>,
}

/// `[[metric]]` (plan-wide) or `[[scenario.step.metric]]`: a number read
/// from responses, found like an extraction's value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetric {
    name: Spanned<String>,
    regex: Option<Spanned<String>>,
    css: Option<Spanned<String>>,
    json: Option<Spanned<String>>,
    header: Option<Spanned<String>>,
    group: Option<Spanned<u32>>,
    #[serde(rename = "match")]
    match_no: Option<Spanned<MatchNo>>,
    attribute: Option<Spanned<String>>,
    /// What the samples are counted in, after `scale` ("ms", "reads").
    unit: Option<Spanned<String>>,
    /// Multiplies each value before it is rounded to an integer sample
    /// (1000 turns "0.0123 secs" into 12 ms).
    scale: Option<Spanned<f64>>,
}

pub use crate::stats::MetricSpec;

/// A metric as validated, before it has an id: what the wire needs.
pub(super) struct CheckedMetric {
    pub name: String,
    pub name_span: Range<usize>,
    pub unit: String,
    pub scale: f64,
    pub source: v1::Extract,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    #[serde(default)]
    pub clear_cookies_each_iteration: bool,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawData {
    name: Spanned<String>,
    file: Spanned<String>,
    mode: Option<Spanned<String>>,
    /// The columns of a file without a header row (as JMeter's CSV Data
    /// Set names them in `variableNames`).
    columns: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A data file, read by the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub mode: v1::DataMode,
}

/// What a step of a scenario may refer to.
pub(super) struct Scope<'a> {
    /// `[vars]`, already resolved.
    pub vars: &'a HashMap<String, String>,
    /// `NAME.COLUMN` of every data file.
    pub columns: &'a HashSet<String>,
    /// Set by extractions of earlier steps of this scenario.
    pub extracted: HashSet<String>,
    /// Set by extractions of later steps (for a better message).
    pub later: HashSet<String>,
    /// Lists of extractions with `match = "all"` of earlier steps.
    pub lists: HashSet<String>,
    /// Set only inside a block that may not run, with that block's words
    /// (for the message when one is used after it).
    pub inside: HashMap<String, String>,
    /// Rows of each data file, by its name (what a `for_each` over a
    /// column walks).
    pub data_rows: HashMap<String, u64>,
}

impl Validator<'_> {
    /// Where in the file byte `at` of the string value at `span` is (inside
    /// the quotes when the string has no escapes before it).
    pub(super) fn inner(&self, span: &Range<usize>, at: usize) -> Range<usize> {
        let raw = self.text.get(span.clone()).unwrap_or("");
        let quote = raw.chars().next().filter(|c| *c == '"' || *c == '\'');
        match quote {
            Some(q) => {
                let start = span.start
                    + if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
                        3
                    } else {
                        1
                    };
                let before = self.text.get(start..start + at).unwrap_or("\\");
                if q == '"' && before.contains('\\') {
                    span.clone()
                } else {
                    start + at..start + at
                }
            }
            None => span.clone(),
        }
    }

    /// Resolves `[vars]` and `${env:NAME}` in a template and checks that
    /// every other variable is set somewhere before it is used.
    pub(super) fn template(
        &self,
        value: &str,
        span: &Range<usize>,
        what: &str,
        scope: &Scope<'_>,
    ) -> Result<String, PlanError> {
        let mut error = None;
        let out = loadfleet_agent::template::substitute(value, |at, name| {
            let result = resolve(name, scope);
            if let Err(e) = &result {
                error = Some((at, e.clone()));
            }
            result
        });
        match (out, error) {
            (Ok(s), None) => Ok(s),
            (_, Some((at, e))) => Err(self.error(self.inner(span, at), format!("{what}: {e}"))),
            (Err(e), None) => Err(self.error(span.clone(), format!("{what}: {e}"))),
        }
    }

    fn scalar(&self, v: &Spanned<toml::Value>, what: &str) -> Result<String, PlanError> {
        match v.get_ref() {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(self.error(
                v.span(),
                format!("{what}: expected a string, number or boolean"),
            )),
        }
    }

    /// A step's `multipart` parts: fields as templates, files read now
    /// (relative to the plan's directory), and a boundary none of them
    /// holds.
    fn multipart(
        &self,
        raw: &Spanned<Vec<Spanned<RawPart>>>,
        scope: &Scope<'_>,
    ) -> Result<v1::Multipart, PlanError> {
        let base = Path::new(self.file).parent().unwrap_or(Path::new("."));
        let mut parts = Vec::with_capacity(raw.get_ref().len());
        if raw.get_ref().is_empty() {
            return Err(self.error(raw.span(), "step `multipart`: expected at least one part"));
        }
        for p in raw.get_ref() {
            let at = p.span();
            let p = p.get_ref();
            let what = format!("step `multipart` part \"{}\"", p.name.get_ref());
            let name = self.template(p.name.get_ref(), &p.name.span(), &what, scope)?;
            let plain = |s: &Spanned<String>, key: &str| -> Result<String, PlanError> {
                if s.get_ref().is_empty()
                    || s.get_ref()
                        .bytes()
                        .any(|b| b == b'"' || b == b'\r' || b == b'\n')
                {
                    return Err(self.error(
                        s.span(),
                        format!("{what} `{key}`: expected a non-empty value without quotes or line breaks"),
                    ));
                }
                Ok(s.get_ref().clone())
            };
            match (&p.value, &p.file) {
                (Some(v), None) => {
                    if let Some(k) = p.filename.as_ref().or(p.content_type.as_ref()) {
                        return Err(self.error(
                            k.span(),
                            format!("{what}: `filename` and `content_type` are for a `file`"),
                        ));
                    }
                    let text = self.scalar(v, &what)?;
                    parts.push(v1::Part {
                        name,
                        value: self.template(&text, &v.span(), &what, scope)?,
                        ..Default::default()
                    });
                }
                (None, Some(f)) => {
                    let path = base.join(f.get_ref());
                    let content = std::fs::read(&path).map_err(|e| {
                        self.error(
                            f.span(),
                            format!("{what} `file`: cannot read {}: {e}", path.display()),
                        )
                    })?;
                    if content.len() > MAX_UPLOAD_BYTES {
                        return Err(self.error(
                            f.span(),
                            format!(
                                "{what} `file`: {} is {} bytes, above the {} MiB a plan may upload",
                                path.display(),
                                content.len(),
                                MAX_UPLOAD_BYTES >> 20
                            ),
                        ));
                    }
                    let filename = match &p.filename {
                        Some(n) => plain(n, "filename")?,
                        None => Path::new(f.get_ref())
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .filter(|n| !n.contains(['"', '\r', '\n']))
                            .ok_or_else(|| {
                                self.error(f.span(), format!("{what} `file`: give it a `filename` (its own has a quote or a line break)"))
                            })?,
                    };
                    let content_type = match &p.content_type {
                        Some(t) => plain(t, "content_type")?,
                        None => media_type(&filename).to_string(),
                    };
                    parts.push(v1::Part {
                        name,
                        file: true,
                        filename,
                        content_type,
                        content,
                        ..Default::default()
                    });
                }
                _ => {
                    return Err(self.error(
                        at,
                        format!("{what}: expected either `value` (a field) or `file`"),
                    ));
                }
            }
        }
        // A boundary no file holds (a value rendered at run time holding
        // it is as unlikely as guessing 64 random bits).
        let mut seed = parts.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, p| {
            p.content
                .iter()
                .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
        });
        let boundary = loop {
            let b = format!("loadfleet-{seed:016x}");
            let held = parts.iter().any(|p| {
                p.content.windows(b.len()).any(|w| w == b.as_bytes()) || p.value.contains(&b)
            });
            if !held {
                break b;
            }
            seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
        };
        Ok(v1::Multipart { boundary, parts })
    }

    fn pairs(
        &self,
        map: &RawPairs,
        what: &str,
        scope: &Scope<'_>,
    ) -> Result<Vec<v1::Header>, PlanError> {
        map.0
            .iter()
            .map(|(k, v)| {
                let what = format!("{what} `{k}`");
                let text = self.scalar(v, &what)?;
                Ok(v1::Header {
                    name: k.clone(),
                    value: self.template(&text, &v.span(), &what, scope)?,
                })
            })
            .collect()
    }

    /// `[vars]`: constants (may use `${env:NAME}`).
    pub(super) fn vars(
        &self,
        raw: Option<BTreeMap<String, Spanned<toml::Value>>>,
    ) -> Result<HashMap<String, String>, PlanError> {
        let mut vars = HashMap::new();
        let empty_cols = HashSet::new();
        let env_only = HashMap::new();
        for (k, v) in raw.unwrap_or_default() {
            if !valid_name(&k) {
                return Err(self.error(
                    v.span(),
                    format!("`vars.{k}`: expected a name of letters, digits, `_` and `-`"),
                ));
            }
            let text = self.scalar(&v, &format!("`vars.{k}`"))?;
            let scope = Scope {
                vars: &env_only,
                columns: &empty_cols,
                extracted: HashSet::new(),
                later: HashSet::new(),
                lists: HashSet::new(),
                inside: HashMap::new(),
                data_rows: HashMap::new(),
            };
            let value = self.template(&text, &v.span(), &format!("`vars.{k}`"), &scope)?;
            vars.insert(k, value.replace("$${", "${"));
        }
        Ok(vars)
    }

    /// `[[data]]`: reads each CSV file (relative to the plan's folder).
    pub(super) fn data(&self, raw: Vec<Spanned<RawData>>) -> Result<Vec<DataSpec>, PlanError> {
        let base = Path::new(self.file).parent().unwrap_or(Path::new("."));
        let mut out: Vec<DataSpec> = Vec::new();
        let mut bytes = 0usize;
        for d in raw {
            let d = d.into_inner();
            let name = d.name.get_ref().trim().to_string();
            if !valid_name(&name) {
                return Err(self.error(
                    d.name.span(),
                    "data `name`: expected a name of letters, digits, `_` and `-`",
                ));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(self.error(
                    d.name.span(),
                    format!("data `name`: \"{name}\" is used twice"),
                ));
            }
            let mode = match d.mode.as_ref().map(|m| m.get_ref().as_str()) {
                None | Some("sequential") => v1::DataMode::Sequential,
                Some("unique") => v1::DataMode::Unique,
                Some("random") => v1::DataMode::Random,
                Some(other) => {
                    return Err(self.error(
                        d.mode.as_ref().map(Spanned::span).unwrap_or_default(),
                        format!(
                            "data `mode`: expected \"sequential\", \"unique\" or \"random\", found \"{other}\""
                        ),
                    ));
                }
            };
            let path = base.join(d.file.get_ref());
            let text = std::fs::read(&path).map_err(|e| {
                self.error(
                    d.file.span(),
                    format!("data `file`: cannot read {}: {e}", path.display()),
                )
            })?;
            bytes += text.len();
            if bytes > MAX_DATA_BYTES {
                return Err(self.error(
                    d.file.span(),
                    format!(
                        "data `file`: {} makes the plan's data {bytes} bytes, above the limit of {MAX_DATA_BYTES} (agents receive it in their assignment)",
                        path.display()
                    ),
                ));
            }
            let csv_error = |line: u64, e: String| {
                self.error(
                    d.file.span(),
                    format!("data `file`: {}:{line}: {e}", path.display()),
                )
            };
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(d.columns.is_none())
                .trim(csv::Trim::All)
                .from_reader(text.as_slice());
            let columns: Vec<String> = match &d.columns {
                Some(given) => {
                    let names: Vec<String> = given
                        .get_ref()
                        .iter()
                        .map(|c| c.get_ref().trim().to_string())
                        .collect();
                    if names.is_empty() || names.iter().any(|c| !valid_name(c)) {
                        return Err(self.error(
                            given.span(),
                            "data `columns`: expected column names (letters, digits, `_`, `-`)",
                        ));
                    }
                    names
                }
                None => {
                    let columns: Vec<String> = reader
                        .headers()
                        .map_err(|e| csv_error(1, e.to_string()))?
                        .iter()
                        .map(str::to_string)
                        .collect();
                    if columns.is_empty() || columns.iter().any(|c| !valid_name(c)) {
                        return Err(csv_error(
                            1,
                            format!(
                                "expected a header row of column names (letters, digits, `_`, `-`), found {columns:?} (a file without one names its columns in `columns`)"
                            ),
                        ));
                    }
                    columns
                }
            };
            let mut rows = Vec::new();
            for record in reader.records() {
                let record = record.map_err(|e| {
                    let line = e.position().map_or(0, |p| p.line());
                    csv_error(line, e.to_string())
                })?;
                if record.len() != columns.len() {
                    let line = record.position().map_or(0, |p| p.line());
                    return Err(csv_error(
                        line,
                        format!(
                            "expected {} fields ({}), found {}",
                            columns.len(),
                            columns.join(", "),
                            record.len()
                        ),
                    ));
                }
                rows.push(record.iter().map(str::to_string).collect());
            }
            if rows.is_empty() {
                return Err(csv_error(2, "expected at least one row of data".into()));
            }
            out.push(DataSpec {
                name,
                columns,
                rows,
                mode,
            });
        }
        Ok(out)
    }

    /// A scenario's `think`, `on_error` and `pacing`.
    pub(super) fn think(&self, t: &Spanned<String>, what: &str) -> Result<v1::Think, PlanError> {
        parse_think(t.get_ref()).map_err(|e| self.error(t.span(), format!("{what}: {e}")))
    }

    /// One step, as it goes on the wire (its `id` is set by the caller).
    pub(super) fn journey_step(
        &self,
        st: RawStep,
        span: Range<usize>,
        target: &TargetSpec,
        scope: &mut Scope<'_>,
        default_think: Option<&v1::Think>,
    ) -> Result<(String, v1::Step), PlanError> {
        let method = match &st.method {
            Some(m) => {
                let upper = m.get_ref().trim().to_ascii_uppercase();
                if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(self.error(
                        m.span(),
                        format!(
                            "step `method`: expected an HTTP method such as \"GET\" or \"POST\", found \"{}\"",
                            m.get_ref()
                        ),
                    ));
                }
                upper
            }
            None if st.form.is_some() || st.json.is_some() || st.body.is_some() => "POST".into(),
            None => "GET".into(),
        };
        let probe = loadfleet_agent::assignment::Target::parse(&target.base_url, target.timeout)
            .map_err(|e| self.error(span.clone(), e.to_string()))?;
        let (path, url, shown) = match (&st.path, &st.url) {
            (Some(p), None) => {
                let text = p.get_ref().trim();
                let rendered = self.template(text, &p.span(), "step `path`", scope)?;
                let probe_path = strip_vars(&rendered);
                if let Err(e) = probe.request_uri(&probe_path) {
                    return Err(self.error(
                        p.span(),
                        format!("step `path`: expected a path starting with `/`: {e}"),
                    ));
                }
                (rendered, String::new(), text.to_string())
            }
            (None, Some(u)) => {
                let text = u.get_ref().trim();
                let rendered = self.template(text, &u.span(), "step `url`", scope)?;
                let probe_url = strip_vars(&rendered);
                let ok = probe_url
                    .parse::<http::Uri>()
                    .map_err(|e| e.to_string())
                    .and_then(|uri| loadfleet_agent::assignment::Origin::split(&uri).map(|_| ()));
                if let Err(e) = ok
                    // A URL that starts with a variable is checked when rendered.
                    && !rendered.starts_with("${")
                {
                    return Err(self.error(
                        u.span(),
                        format!("step `url`: expected an absolute http:// or https:// URL: {e}"),
                    ));
                }
                (String::new(), rendered, text.to_string())
            }
            (Some(p), Some(_)) => {
                return Err(self.error(p.span(), "step: expected `path` or `url`, not both"));
            }
            (None, None) => {
                return Err(self.error(span, "step: expected a `path` (or an absolute `url`)"));
            }
        };
        let name = match &st.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                return Err(self.error(n.span(), "step `name`: expected a non-empty string"));
            }
            Some(n) => n.get_ref().trim().to_string(),
            None => format!("{method} {shown}"),
        };
        let mut headers = Vec::with_capacity(st.headers.len());
        for (k, v) in &st.headers {
            if !super::validate::http_header_name_ok(k)
                || !super::validate::http_header_value_ok(v.get_ref())
            {
                return Err(self.error(
                    v.span(),
                    format!(
                        "step header `{k}`: expected a valid header name and a printable value"
                    ),
                ));
            }
            if ["content-length", "transfer-encoding"]
                .iter()
                .any(|f| k.eq_ignore_ascii_case(f))
            {
                return Err(self.error(
                    v.span(),
                    format!(
                        "step header `{k}`: loadfleet frames the body itself; remove this header"
                    ),
                ));
            }
            headers.push(v1::Header {
                name: k.clone(),
                value: self.template(
                    v.get_ref(),
                    &v.span(),
                    &format!("step header `{k}`"),
                    scope,
                )?,
            });
        }
        let query = self.pairs(&st.query, "step `query`", scope)?;
        let bodies = [
            st.form.is_some(),
            st.json.is_some(),
            st.body.is_some(),
            st.multipart.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            return Err(self.error(
                span,
                "step: expected at most one of `form`, `json`, `body` and `multipart`",
            ));
        }
        let body = if let Some(m) = &st.multipart {
            Some(v1::step::Body::Multipart(self.multipart(m, scope)?))
        } else if let Some(f) = &st.form {
            Some(v1::step::Body::Form(v1::FormBody {
                fields: self.pairs(f.get_ref(), "step `form`", scope)?,
            }))
        } else if let Some(j) = &st.json {
            let json = serde_json::to_string(j.get_ref()).map_err(|e| {
                self.error(
                    j.span(),
                    format!("step `json`: cannot be written as JSON: {e}"),
                )
            })?;
            Some(v1::step::Body::Json(self.template(
                &json,
                &j.span(),
                "step `json`",
                scope,
            )?))
        } else if let Some(b) = &st.body {
            Some(v1::step::Body::Raw(self.template(
                b.get_ref(),
                &b.span(),
                "step `body`",
                scope,
            )?))
        } else {
            None
        };
        let max_redirects = match (&st.follow_redirects, &st.max_redirects) {
            (Some(f), _) if !*f.get_ref() => 0,
            (_, Some(m)) if *m.get_ref() > loadfleet_agent::assignment::MAX_REDIRECTS => {
                return Err(self.error(
                    m.span(),
                    format!(
                        "step `max_redirects`: expected at most {}",
                        loadfleet_agent::assignment::MAX_REDIRECTS
                    ),
                ));
            }
            (_, Some(m)) => *m.get_ref(),
            _ => loadfleet_agent::assignment::MAX_REDIRECTS,
        };
        let check = match &st.check {
            None => None,
            Some(c) => Some(self.check(c.get_ref(), scope)?),
        };
        let think = match &st.think {
            Some(t) => Some(self.think(t, "step `think`")?),
            None => default_think.cloned(),
        };
        // Extractions run after the response; their variables serve the
        // steps after this one.
        let mut extract = Vec::with_capacity(st.extract.len());
        for e in &st.extract {
            extract.push(self.extract(e)?);
        }
        for e in &extract {
            if e.all {
                scope.lists.insert(e.name.clone());
                scope.extracted.insert(format!("{}_matchNr", e.name));
            } else {
                scope.extracted.insert(e.name.clone());
            }
        }
        Ok((
            name,
            v1::Step {
                id: 0,
                method,
                path,
                headers,
                url,
                query,
                body,
                max_redirects,
                extract,
                check,
                think,
                // Filled in by the plan, which numbers its metrics.
                metrics: Vec::new(),
                // Filled in by the journey's flow (they may read this
                // step's extractions).
                set: Vec::new(),
            },
        ))
    }

    fn check(&self, c: &RawCheck, scope: &Scope<'_>) -> Result<v1::Check, PlanError> {
        let mut status = Vec::with_capacity(c.status.len());
        for s in &c.status {
            if !(100..=999).contains(s.get_ref()) {
                return Err(self.error(
                    s.span(),
                    format!(
                        "check `status`: expected HTTP statuses (100 to 999), found {}",
                        s.get_ref()
                    ),
                ));
            }
            status.push(*s.get_ref());
        }
        for (key, list) in [
            ("body_matches", &c.body_matches),
            ("body_not_matches", &c.body_not_matches),
            ("headers_match", &c.headers_match),
            ("headers_not_match", &c.headers_not_match),
        ] {
            for r in list {
                regex::bytes::Regex::new(r.get_ref()).map_err(|e| {
                    self.error(
                        r.span(),
                        format!(
                            "check `{key}`: expected a regular expression: {}",
                            one_line(&e.to_string())
                        ),
                    )
                })?;
            }
        }
        Ok(v1::Check {
            status,
            body_contains: c
                .body_contains
                .iter()
                .map(|s| self.template(s.get_ref(), &s.span(), "check `body_contains`", scope))
                .collect::<Result<_, _>>()?,
            body_matches: c.body_matches.iter().map(|s| s.get_ref().clone()).collect(),
            body_not_matches: c
                .body_not_matches
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            headers_match: c
                .headers_match
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
            headers_not_match: c
                .headers_not_match
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
        })
    }

    fn extract(&self, e: &Spanned<RawExtract>) -> Result<v1::Extract, PlanError> {
        self.extract_from(e.span(), e.get_ref(), "extract")
    }

    /// Checks a metric's name, source, unit and scale.
    pub(super) fn metric(&self, m: &Spanned<RawMetric>) -> Result<CheckedMetric, PlanError> {
        let span = m.span();
        let m = m.get_ref();
        let raw = RawExtract {
            name: m.name.clone(),
            regex: m.regex.clone(),
            css: m.css.clone(),
            json: m.json.clone(),
            header: m.header.clone(),
            group: m.group.clone(),
            match_no: m.match_no.clone(),
            attribute: m.attribute.clone(),
            fallback: None,
        };
        if let Some(m) = &m.match_no
            && *m.get_ref() == MatchNo::All
        {
            return Err(self.error(
                m.span(),
                "metric `match`: a metric reads one value per response; expected a match number",
            ));
        }
        let source = self.extract_from(span.clone(), &raw, "metric")?;
        let scale = match &m.scale {
            Some(s) if !(s.get_ref().is_finite() && *s.get_ref() > 0.0) => {
                return Err(self.error(
                    s.span(),
                    format!(
                        "metric `{}` `scale`: expected a number above 0, found {}",
                        source.name,
                        s.get_ref()
                    ),
                ));
            }
            Some(s) => *s.get_ref(),
            None => 1.0,
        };
        let unit = m
            .unit
            .as_ref()
            .map(|u| u.get_ref().trim().to_string())
            .unwrap_or_default();
        if unit.chars().count() > 16 || unit.chars().any(char::is_control) {
            let span = m.unit.as_ref().map_or(span, Spanned::span);
            return Err(self.error(
                span,
                format!(
                    "metric `{}` `unit`: expected a short label such as \"ms\" or \"reads\"",
                    source.name
                ),
            ));
        }
        Ok(CheckedMetric {
            name: source.name.clone(),
            name_span: m.name.span(),
            unit,
            scale,
            source,
        })
    }

    fn extract_from(
        &self,
        span: Range<usize>,
        e: &RawExtract,
        kind: &str,
    ) -> Result<v1::Extract, PlanError> {
        let name = e.name.get_ref().trim().to_string();
        if !valid_name(&name) {
            return Err(self.error(
                e.name.span(),
                format!("{kind} `name`: expected a name of letters, digits, `_` and `-`"),
            ));
        }
        let sources = [&e.regex, &e.css, &e.json, &e.header];
        if sources.iter().filter(|s| s.is_some()).count() != 1 {
            return Err(self.error(
                span,
                format!(
                    "{kind} `{name}`: expected exactly one of `regex`, `css`, `json` and `header`"
                ),
            ));
        }
        let only = |key: &str, span: Option<Range<usize>>| match span {
            Some(span) => Err(self.error(
                span,
                format!("{kind} `{name}`: `{key}` does not apply to this kind of extraction"),
            )),
            None => Ok(()),
        };
        let mut group = 0;
        let from = if let Some(r) = &e.regex {
            let re = regex::bytes::Regex::new(r.get_ref()).map_err(|err| {
                self.error(
                    r.span(),
                    format!(
                        "{kind} `{name}` `regex`: expected a regular expression: {}",
                        one_line(&err.to_string())
                    ),
                )
            })?;
            let groups = re.captures_len() - 1;
            group = match &e.group {
                Some(g) if *g.get_ref() as usize > groups => {
                    return Err(self.error(
                        g.span(),
                        format!("{kind} `{name}` `group`: the regex has {groups} capture group(s)"),
                    ));
                }
                Some(g) => *g.get_ref(),
                None => u32::from(groups > 0),
            };
            only("attribute", e.attribute.as_ref().map(Spanned::span))?;
            v1::extract::From::Regex(r.get_ref().clone())
        } else if let Some(c) = &e.css {
            scraper::Selector::parse(c.get_ref()).map_err(|err| {
                self.error(
                    c.span(),
                    format!("{kind} `{name}` `css`: expected a CSS selector: {err}"),
                )
            })?;
            only("group", e.group.as_ref().map(Spanned::span))?;
            v1::extract::From::Css(c.get_ref().clone())
        } else if let Some(j) = &e.json {
            let p = j.get_ref();
            if !p.is_empty() && !p.starts_with('/') {
                return Err(self.error(
                    j.span(),
                    format!(
                        "{kind} `{name}` `json`: expected a JSON pointer such as \"/data/0/id\""
                    ),
                ));
            }
            only("group", e.group.as_ref().map(Spanned::span))?;
            only("attribute", e.attribute.as_ref().map(Spanned::span))?;
            only("match", nth_span(&e.match_no))?;
            v1::extract::From::JsonPointer(p.clone())
        } else {
            let h = e.header.as_ref().expect("one source");
            if !super::validate::http_header_name_ok(h.get_ref()) {
                return Err(self.error(
                    h.span(),
                    format!("{kind} `{name}` `header`: expected a header name"),
                ));
            }
            only("group", e.group.as_ref().map(Spanned::span))?;
            only("attribute", e.attribute.as_ref().map(Spanned::span))?;
            only("match", nth_span(&e.match_no))?;
            v1::extract::From::Header(h.get_ref().clone())
        };
        Ok(v1::Extract {
            name,
            from: Some(from),
            group,
            match_no: match e.match_no.as_ref().map(|m| *m.get_ref()) {
                Some(MatchNo::Nth(n)) => n,
                Some(MatchNo::All) => 0,
                None => 1,
            },
            all: matches!(
                e.match_no.as_ref().map(|m| *m.get_ref()),
                Some(MatchNo::All)
            ),
            attribute: e
                .attribute
                .as_ref()
                .map(|a| a.get_ref().clone())
                .unwrap_or_default(),
            default: e.fallback.as_ref().map(|d| d.get_ref().clone()),
        })
    }
}

/// The span of a `match` that picks one match (a number).
fn nth_span(m: &Option<Spanned<MatchNo>>) -> Option<Range<usize>> {
    m.as_ref()
        .filter(|m| matches!(m.get_ref(), MatchNo::Nth(_)))
        .map(Spanned::span)
}

/// Where `${name}` comes from: `Some(value)` for constants, `None` for
/// variables the agent sets.
pub(super) fn resolve(name: &str, scope: &Scope<'_>) -> Result<Option<String>, String> {
    if let Some(b) = loadfleet_agent::builtin::Builtin::parse(name) {
        return b.map(|_| None);
    }
    if let Some(env) = name.strip_prefix("env:") {
        return std::env::var(env)
            .map(Some)
            .map_err(|_| format!("environment variable `{env}` is not set on the controller"));
    }
    if let Some(v) = scope.vars.get(name) {
        return Ok(Some(v.clone()));
    }
    if scope.columns.contains(name) || scope.extracted.contains(name) {
        return Ok(None);
    }
    if let Some(block) = scope.inside.get(name) {
        return Err(format!(
            "`{name}` is set only inside {block}, which may not run; expected it set before that block, or used inside it"
        ));
    }
    if let Some((list, k)) = name.rsplit_once('_')
        && scope.lists.contains(list)
        && k.parse::<usize>().is_ok_and(|k| k >= 1)
    {
        // The K-th match of a `match = "all"` extraction (empty past the
        // last), as JMeter names it.
        return Ok(None);
    }
    if scope.lists.contains(name) {
        return Err(format!(
            "`{name}` holds every match (`match = \"all\"`); expected a `for_each = \"{name}\"` block that walks them, or `${{{name}_matchNr}}` for their number"
        ));
    }
    if scope.later.contains(name) {
        return Err(format!(
            "`{name}` is used before the step that extracts it; expected it to be set by an earlier step"
        ));
    }
    Err(format!(
        "undefined variable `{name}`; expected a [vars] entry, a data column such as `users.username`, an extraction in an earlier step, or `env:NAME`"
    ))
}

/// A template with its variables removed, to check the fixed parts.
fn strip_vars(text: &str) -> String {
    loadfleet_agent::template::substitute(text, |_, _| Ok(Some("x".into())))
        .unwrap_or_else(|_| text.to_string())
        .replace("$${", "${")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `"2s"`, `"uniform(1s, 3s)"` or `"gaussian(2s, 500ms)"`.
pub fn parse_think(s: &str) -> Result<v1::Think, String> {
    use crate::duration::parse_duration;
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let s = s.trim();
    let args = |inner: &str| -> Result<(Duration, Duration), String> {
        let (a, b) = inner
            .split_once(',')
            .ok_or_else(|| format!("expected two durations in `{s}`"))?;
        Ok((parse_duration(a.trim())?, parse_duration(b.trim())?))
    };
    let kind = if let Some(inner) = s.strip_prefix("uniform(").and_then(|r| r.strip_suffix(')')) {
        let (lo, hi) = args(inner)?;
        if lo > hi {
            return Err(format!("`{s}`: the minimum is above the maximum"));
        }
        v1::think::Kind::Uniform(v1::Range {
            min_us: us(lo),
            max_us: us(hi),
        })
    } else if let Some(inner) = s
        .strip_prefix("gaussian(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (mean, dev) = args(inner)?;
        v1::think::Kind::Gaussian(v1::Gaussian {
            mean_us: us(mean),
            deviation_us: us(dev),
        })
    } else {
        v1::think::Kind::ConstantUs(us(parse_duration(s).map_err(|_| {
            format!(
                "expected a duration (\"2s\"), \"uniform(1s, 3s)\" or \"gaussian(2s, 500ms)\", found \"{s}\""
            )
        })?))
    };
    Ok(v1::Think { kind: Some(kind) })
}

/// A scenario's `on_error`.
pub fn parse_on_error(s: &str) -> Result<v1::OnError, String> {
    match s {
        "continue" => Ok(v1::OnError::Continue),
        "next_iteration" => Ok(v1::OnError::NextIteration),
        "stop_user" => Ok(v1::OnError::StopUser),
        other => Err(format!(
            "expected \"continue\", \"next_iteration\" or \"stop_user\", found \"{other}\""
        )),
    }
}

/// A file's media type from its extension, as browsers send the common
/// ones; anything else is `application/octet-stream`.
fn media_type(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "htm" | "html" => "text/html",
        "xml" => "application/xml",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "odt" => "application/vnd.oasis.opendocument.text",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}
