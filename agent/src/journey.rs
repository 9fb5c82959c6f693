//! What makes a scenario a user journey rather than a list of fixed
//! requests, beyond its templates ([`crate::template`]), cookies
//! ([`crate::cookies`]) and randomness ([`crate::rng`]): think time,
//! extraction from responses and checks. Everything here is compiled once
//! from the assignment; per-request work is matching.

use std::borrow::Cow;
use std::time::Duration;

use crate::rng::Rng;
use crate::template::Template;

/// A pause between steps, never part of any latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Think {
    Constant(Duration),
    Uniform(Duration, Duration),
    /// Mean and standard deviation; negative draws are clamped to zero.
    Gaussian(Duration, Duration),
}

impl Think {
    /// A think time from the wire (`None`: none).
    pub fn of_wire(t: Option<loadfleet_proto::v1::Think>) -> Result<Option<Think>, String> {
        use loadfleet_proto::v1::think::Kind;
        Ok(match t.and_then(|t| t.kind) {
            None => None,
            Some(Kind::ConstantUs(us)) => Some(Think::Constant(Duration::from_micros(us))),
            Some(Kind::Uniform(r)) if r.min_us <= r.max_us => Some(Think::Uniform(
                Duration::from_micros(r.min_us),
                Duration::from_micros(r.max_us),
            )),
            Some(Kind::Uniform(_)) => return Err("think: uniform min above max".into()),
            Some(Kind::Gaussian(g)) => Some(Think::Gaussian(
                Duration::from_micros(g.mean_us),
                Duration::from_micros(g.deviation_us),
            )),
        })
    }

    pub fn sample(&self, rng: &mut Rng) -> Duration {
        match *self {
            Think::Constant(d) => d,
            Think::Uniform(lo, hi) => {
                let span = hi.saturating_sub(lo).as_secs_f64();
                lo + Duration::from_secs_f64(span * rng.unit())
            }
            Think::Gaussian(mean, dev) => {
                let s = mean.as_secs_f64() + dev.as_secs_f64() * rng.normal();
                Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
            }
        }
    }
}

// === extraction ===

/// Where an extraction looks.
#[derive(Debug)]
pub enum Source {
    Regex {
        regex: regex::bytes::Regex,
        group: usize,
    },
    Css {
        selector: scraper::Selector,
        /// Empty: the element's text.
        attribute: String,
    },
    JsonPointer(String),
    Header(http::HeaderName),
}

/// Sets one variable from a response.
#[derive(Debug)]
pub struct Extract {
    pub slot: usize,
    pub name: String,
    pub source: Source,
    /// 1-based; 0 picks a match at random.
    pub match_no: usize,
    pub default: Option<String>,
    /// `match = "all"`: every match goes into this list slot, and their
    /// number into this variable slot (`<name>_matchNr`).
    pub all: Option<(usize, usize)>,
}

impl Extract {
    /// Every match, into `list` (its strings reused where they can be);
    /// how many there were.
    pub fn apply_all(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        list: &mut Vec<String>,
    ) -> usize {
        let mut n = 0;
        let mut put = |v: &[u8]| {
            let text = String::from_utf8_lossy(v);
            match list.get_mut(n) {
                Some(s) => {
                    s.clear();
                    s.push_str(&text);
                }
                None => list.push(text.into_owned()),
            }
            n += 1;
        };
        match &self.source {
            Source::Regex { regex, group } => {
                for c in regex.captures_iter(body) {
                    if let Some(m) = c.get(*group) {
                        put(m.as_bytes());
                    }
                }
            }
            Source::Css {
                selector,
                attribute,
            } => {
                let doc = scraper::Html::parse_document(&String::from_utf8_lossy(body));
                for el in doc.select(selector) {
                    if attribute.is_empty() {
                        put(el.text().collect::<String>().as_bytes());
                    } else if let Some(a) = el.attr(attribute) {
                        put(a.as_bytes());
                    }
                }
            }
            Source::JsonPointer(p) => {
                if let Some(v) = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .as_ref()
                    .and_then(|v| v.pointer(p))
                {
                    let each = |x: &serde_json::Value| match x {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    match v {
                        serde_json::Value::Array(items) => {
                            for x in items {
                                put(each(x).as_bytes());
                            }
                        }
                        other => put(each(other).as_bytes()),
                    }
                }
            }
            Source::Header(name) => {
                for v in headers.get_all(name) {
                    put(v.as_bytes());
                }
            }
        }
        list.truncate(n);
        n
    }

    /// The extracted value, or `None` when nothing matched (and no default).
    pub fn apply(&self, headers: &http::HeaderMap, body: &[u8], rng: &mut Rng) -> Option<String> {
        find(&self.source, self.match_no, headers, body, rng)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .or_else(|| self.default.clone())
    }
}

/// What `source` finds in a response: borrowed from it where it can be.
fn find<'r>(
    source: &Source,
    match_no: usize,
    headers: &'r http::HeaderMap,
    body: &'r [u8],
    rng: &mut Rng,
) -> Option<Cow<'r, [u8]>> {
    match source {
        Source::Regex { regex, group } => {
            if match_no == 1 {
                // The usual case, without collecting every match.
                return regex
                    .captures(body)
                    .and_then(|c| c.get(*group))
                    .map(|m| Cow::Borrowed(m.as_bytes()));
            }
            let all: Vec<_> = regex.captures_iter(body).collect();
            pick(all.len(), match_no, rng)
                .and_then(|i| all[i].get(*group))
                .map(|m| Cow::Borrowed(m.as_bytes()))
        }
        Source::Css {
            selector,
            attribute,
        } => {
            let doc = scraper::Html::parse_document(&String::from_utf8_lossy(body));
            let all: Vec<_> = doc.select(selector).collect();
            pick(all.len(), match_no, rng).and_then(|i| {
                if attribute.is_empty() {
                    Some(Cow::Owned(all[i].text().collect::<String>().into_bytes()))
                } else {
                    all[i]
                        .attr(attribute)
                        .map(|a| Cow::Owned(a.as_bytes().to_vec()))
                }
            })
        }
        Source::JsonPointer(p) => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.pointer(p).map(|x| match x {
                    serde_json::Value::String(s) => Cow::Owned(s.clone().into_bytes()),
                    other => Cow::Owned(other.to_string().into_bytes()),
                })
            }),
        Source::Header(name) => headers.get(name).map(|v| Cow::Borrowed(v.as_bytes())),
    }
}

// === metrics ===

/// A number read from every response of a step into a histogram of its
/// own (`[[metric]]` in the plan).
#[derive(Debug)]
pub struct Probe {
    /// Index into the assignment's metric names.
    pub id: u32,
    pub source: Source,
    /// 1-based; 0 picks a match at random.
    pub match_no: usize,
    /// Multiplies the value read before it is rounded to an integer sample.
    pub scale: f64,
}

impl Probe {
    /// The sample this response carries: `None` when it has no such value,
    /// or the value is not a decimal number of at least 0.
    pub fn read(&self, headers: &http::HeaderMap, body: &[u8], rng: &mut Rng) -> Option<u64> {
        let found = find(&self.source, self.match_no, headers, body, rng)?;
        let text = std::str::from_utf8(&found).ok()?.trim();
        let v: f64 = text.parse().ok()?;
        let scaled = (v * self.scale).round();
        // `as` saturates: values beyond u64 are clamped like latencies are.
        (scaled.is_finite() && scaled >= 0.0).then_some(scaled as u64)
    }
}

fn pick(count: usize, match_no: usize, rng: &mut Rng) -> Option<usize> {
    match (count, match_no) {
        (0, _) => None,
        (n, 0) => Some(rng.below(n)),
        (n, k) if k <= n => Some(k - 1),
        _ => None,
    }
}

// === checks ===

/// What a response must look like for its step to count as a success.
#[derive(Debug, Default)]
pub struct Check {
    /// Empty: any status below 400.
    pub status: Vec<u16>,
    /// Texts the body must contain (variables rendered per response).
    pub body_contains: Vec<Template>,
    pub body_matches: Vec<regex::bytes::Regex>,
    /// Patterns the body must not match.
    pub body_not_matches: Vec<regex::bytes::Regex>,
    /// Patterns the headers, one `Name: value` line each, must match, and
    /// must not.
    pub headers_match: Vec<regex::bytes::Regex>,
    pub headers_not_match: Vec<regex::bytes::Regex>,
}

/// Why a response failed its step.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// A status outside the default (below 400): reported as `http_<code>`.
    Status(u16),
    /// A failed explicit check: reported as `check`.
    Check(String),
}

impl Check {
    pub fn needs_body(&self) -> bool {
        !self.body_contains.is_empty()
            || !self.body_matches.is_empty()
            || !self.body_not_matches.is_empty()
    }

    pub fn needs_headers(&self) -> bool {
        !self.headers_match.is_empty() || !self.headers_not_match.is_empty()
    }

    pub fn judge(
        &self,
        status: u16,
        headers: &http::HeaderMap,
        body: &[u8],
        vars: &[String],
    ) -> Verdict {
        if self.status.is_empty() {
            if status >= 400 {
                return Verdict::Status(status);
            }
        } else if !self.status.contains(&status) {
            return Verdict::Check(format!(
                "status {status}, expected one of {:?}",
                self.status
            ));
        }
        for needle in &self.body_contains {
            let found = match needle.as_static() {
                Some(text) => contains(body, text.as_bytes()),
                None => contains(body, needle.render(vars).as_bytes()),
            };
            if !found {
                // The template, not its rendering: a value may be a secret.
                return Verdict::Check(format!("body does not contain {}", needle.source()));
            }
        }
        for re in &self.body_matches {
            if !re.is_match(body) {
                return Verdict::Check(format!("body does not match /{}/", re.as_str()));
            }
        }
        for re in &self.body_not_matches {
            if re.is_match(body) {
                return Verdict::Check(format!(
                    "body matches /{}/, which it must not",
                    re.as_str()
                ));
            }
        }
        if self.needs_headers() {
            // Built only for steps that check headers.
            let mut text = Vec::with_capacity(256);
            for (name, value) in headers {
                text.extend_from_slice(name.as_str().as_bytes());
                text.extend_from_slice(b": ");
                text.extend_from_slice(value.as_bytes());
                text.push(b'\n');
            }
            for re in &self.headers_match {
                if !re.is_match(&text) {
                    return Verdict::Check(format!("headers do not match /{}/", re.as_str()));
                }
            }
            for re in &self.headers_not_match {
                if re.is_match(&text) {
                    return Verdict::Check(format!(
                        "headers match /{}/, which they must not",
                        re.as_str()
                    ));
                }
            }
        }
        Verdict::Pass
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::VarTable;

    #[test]
    fn a_probe_reads_decimal_numbers_scales_and_rounds_them() {
        let mut rng = Rng::new(1);
        let probe = |p: &str, scale: f64| Probe {
            id: 0,
            source: Source::Regex {
                regex: regex::bytes::Regex::new(p).unwrap(),
                group: 1,
            },
            match_no: 1,
            scale,
        };
        let body = b"DB reads/writes: 45/2 <li>0.012345 secs</li> load: -3 x: 1e3 y: abc";
        let h = http::HeaderMap::new();
        let read = |p: &str, scale: f64| probe(p, scale).read(&h, body, &mut Rng::new(1));
        assert_eq!(read(r"reads/writes: (\d+)/", 1.0), Some(45));
        assert_eq!(read(r"/(\d+) ", 1.0), Some(2));
        // Seconds to microseconds; 12,345.0 exactly after rounding.
        assert_eq!(read(r"([0-9.]+) secs", 1e6), Some(12_345));
        // Seconds to milliseconds: 12.345 rounds to 12.
        assert_eq!(read(r"([0-9.]+) secs", 1e3), Some(12));
        assert_eq!(read(r"x: (\S+)", 1.0), Some(1000));
        // Not a number, below zero, or not there at all: missing.
        assert_eq!(read(r"y: (\S+)", 1.0), None);
        assert_eq!(read(r"load: (\S+)", 1.0), None);
        assert_eq!(read(r"absent: (\d+)", 1.0), None);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-db-time", http::HeaderValue::from_static(" 17 "));
        let from_header = Probe {
            id: 0,
            source: Source::Header(http::HeaderName::from_static("x-db-time")),
            match_no: 1,
            scale: 1.0,
        };
        assert_eq!(from_header.read(&headers, b"", &mut rng), Some(17));
    }

    #[test]
    fn extraction_by_regex_css_json_header() {
        let mut rng = Rng::new(1);
        let body = br#"<a href="x?sesskey=AAA">1</a><a href="y?sesskey=BBB">2</a>
            <input type="hidden" name="logintoken" value="T&amp;K">"#;
        let re = |p: &str, match_no: usize| Extract {
            slot: 0,
            name: "v".into(),
            source: Source::Regex {
                regex: regex::bytes::Regex::new(p).unwrap(),
                group: 1,
            },
            match_no,
            default: None,
            all: None,
        };
        let h = http::HeaderMap::new();
        assert_eq!(
            re(r#"sesskey=([^"]+)""#, 2).apply(&h, body, &mut rng),
            Some("BBB".into())
        );
        assert_eq!(re(r#"sesskey=([^"]+)""#, 3).apply(&h, body, &mut rng), None);
        let css = Extract {
            slot: 0,
            name: "t".into(),
            source: Source::Css {
                selector: scraper::Selector::parse("input[name=logintoken]").unwrap(),
                attribute: "value".into(),
            },
            match_no: 1,
            default: None,
            all: None,
        };
        assert_eq!(css.apply(&h, body, &mut rng), Some("T&K".into()));
        let json = Extract {
            slot: 0,
            name: "j".into(),
            source: Source::JsonPointer("/a/1/id".into()),
            match_no: 1,
            default: Some("none".into()),
            all: None,
        };
        let mut list = vec!["old".to_string(); 5];
        let every = Extract {
            all: Some((0, 0)),
            ..re(r#"sesskey=([^"]+)""#, 1)
        };
        assert_eq!(every.apply_all(&h, body, &mut list), 2);
        assert_eq!(list, ["AAA", "BBB"]);
        assert_eq!(every.apply_all(&h, b"none here", &mut list), 0);
        assert!(list.is_empty());
        assert_eq!(
            json.apply(&h, br#"{"a":[{},{"id":42}]}"#, &mut rng),
            Some("42".into())
        );
        assert_eq!(json.apply(&h, b"not json", &mut rng), Some("none".into()));
    }

    #[test]
    fn checks_and_think_times() {
        let h = http::HeaderMap::new();
        let default = Check::default();
        assert_eq!(default.judge(302, &h, b"", &[]), Verdict::Pass);
        assert_eq!(default.judge(404, &h, b"", &[]), Verdict::Status(404));
        let mut vars = VarTable::default();
        let strict = Check {
            status: vec![404],
            body_contains: vec![Template::compile("gone ${who}", &mut vars).unwrap()],
            body_matches: vec![regex::bytes::Regex::new("^g").unwrap()],
            ..Check::default()
        };
        let who = ["away".to_string()];
        assert_eq!(strict.judge(404, &h, b"gone away", &who), Verdict::Pass);
        assert!(matches!(
            strict.judge(200, &h, b"gone away", &who),
            Verdict::Check(_)
        ));
        assert!(matches!(
            strict.judge(404, &h, b"gone home", &who),
            Verdict::Check(_)
        ));
        // NOT on the body, and patterns on the headers.
        let re = |p: &str| regex::bytes::Regex::new(p).unwrap();
        let negative = Check {
            body_not_matches: vec![re("(?i)error")],
            headers_match: vec![re("(?m)^content-type: text/html")],
            headers_not_match: vec![re("(?m)^x-debug:")],
            ..Check::default()
        };
        let mut html = http::HeaderMap::new();
        html.insert("content-type", http::HeaderValue::from_static("text/html"));
        assert_eq!(negative.judge(200, &html, b"fine", &[]), Verdict::Pass);
        let said = |v: Verdict| match v {
            Verdict::Check(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            said(negative.judge(200, &html, b"An Error", &[])),
            "body matches /(?i)error/, which it must not"
        );
        assert_eq!(
            said(negative.judge(200, &h, b"fine", &[])),
            "headers do not match /(?m)^content-type: text/html/"
        );
        html.insert("x-debug", http::HeaderValue::from_static("1"));
        assert!(said(negative.judge(200, &html, b"fine", &[])).contains("must not"));
        assert!(negative.needs_body() && negative.needs_headers());
        let mut rng = Rng::new(7);
        let u = Think::Uniform(Duration::from_millis(10), Duration::from_millis(20));
        let g = Think::Gaussian(Duration::from_millis(100), Duration::from_millis(10));
        let (mut sum, n) = (0.0, 10_000);
        for _ in 0..n {
            let d = u.sample(&mut rng);
            assert!((Duration::from_millis(10)..Duration::from_millis(20)).contains(&d));
            sum += g.sample(&mut rng).as_secs_f64();
        }
        let mean = sum / n as f64;
        assert!((0.099..0.101).contains(&mean), "gaussian mean {mean}");
    }
}
