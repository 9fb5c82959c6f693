//! What makes a scenario a user journey rather than a list of fixed
//! requests: variables in templates, extraction from responses, checks,
//! think time, cookies and data rows. Everything here is compiled once from
//! the assignment; per-request work is rendering and matching.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Names of every variable of an assignment, each with one slot index, so a
/// user's values are a plain `Vec<String>` indexed by slot.
#[derive(Debug, Default, Clone)]
pub struct VarTable {
    index: HashMap<String, usize>,
    names: Vec<String>,
}

impl VarTable {
    /// The slot of `name`, added when new.
    pub fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }

    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, slot: usize) -> &str {
        &self.names[slot]
    }
}

/// A text with `${name}` holes; `$${` is a literal `${`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(usize),
}

/// The variable names a template refers to, in order (for validation).
pub fn template_vars(text: &str) -> Result<Vec<(usize, String)>, String> {
    let mut out = Vec::new();
    scan(text, |piece| {
        if let Piece::Var(at, name) = piece {
            out.push((at, name.to_string()));
        }
    })?;
    Ok(out)
}

/// Rewrites a template: `each(byte offset, name)` returns `Some(value)` to
/// put `value` in place of `${name}` (as literal text), `None` to keep the
/// variable. The first error stops it.
pub fn substitute(
    text: &str,
    mut each: impl FnMut(usize, &str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut failed = None;
    scan(text, |piece| {
        if failed.is_some() {
            return;
        }
        match piece {
            Piece::Text(t) => out.push_str(&t.replace("${", "$${")),
            Piece::Var(at, name) => match each(at, name) {
                Ok(Some(v)) => out.push_str(&v.replace("${", "$${")),
                Ok(None) => {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                }
                Err(e) => failed = Some(e),
            },
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

enum Piece<'a> {
    Text(&'a str),
    Var(usize, &'a str),
}

fn scan<'a>(text: &'a str, mut each: impl FnMut(Piece<'a>)) -> Result<(), String> {
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            // `$${`: a literal `${`.
            each(Piece::Text(&rest[..i - 1]));
            each(Piece::Text("${"));
            rest = &rest[i + 2..];
            offset += i + 2;
            continue;
        }
        each(Piece::Text(&rest[..i]));
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` at byte {} is never closed by `}}`", offset + i))?;
        let name = after[..end].trim();
        if name.is_empty() {
            return Err(format!("empty variable name at byte {}", offset + i));
        }
        each(Piece::Var(offset + i, name));
        rest = &after[end + 1..];
        offset += i + 2 + end + 1;
    }
    each(Piece::Text(rest));
    Ok(())
}

impl Template {
    /// Compiles `text`, giving each variable a slot in `vars`.
    pub fn compile(text: &str, vars: &mut VarTable) -> Result<Template, String> {
        let mut parts: Vec<Part> = Vec::new();
        scan(text, |piece| match piece {
            Piece::Text("") => {}
            Piece::Text(t) => match parts.last_mut() {
                Some(Part::Text(prev)) => prev.push_str(t),
                _ => parts.push(Part::Text(t.to_string())),
            },
            Piece::Var(_, name) => parts.push(Part::Var(vars.slot(name))),
        })?;
        Ok(Template {
            parts,
            source: text.to_string(),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text when the template has no variables.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Appends the rendered text to `out`.
    pub fn render_into(&self, vars: &[String], out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(i) => out.push_str(vars.get(*i).map_or("", String::as_str)),
            }
        }
    }

    pub fn render(&self, vars: &[String]) -> String {
        let mut s = String::new();
        self.render_into(vars, &mut s);
        s
    }
}

// === random numbers ===

/// A small, fast generator (SplitMix64), seeded per user: think times and
/// random picks differ between users yet replay the same for a given seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

// === think time ===

/// A pause between steps, never part of any latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Think {
    Constant(Duration),
    Uniform(Duration, Duration),
    /// Mean and standard deviation; negative draws are clamped to zero.
    Gaussian(Duration, Duration),
}

impl Think {
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
}

impl Extract {
    /// The extracted value, or `None` when nothing matched (and no default).
    pub fn apply(&self, headers: &http::HeaderMap, body: &[u8], rng: &mut Rng) -> Option<String> {
        let found = match &self.source {
            Source::Regex { regex, group } => {
                let all: Vec<_> = regex.captures_iter(body).collect();
                pick(all.len(), self.match_no, rng)
                    .and_then(|i| all[i].get(*group))
                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
            }
            Source::Css {
                selector,
                attribute,
            } => {
                let doc = scraper::Html::parse_document(&String::from_utf8_lossy(body));
                let all: Vec<_> = doc.select(selector).collect();
                pick(all.len(), self.match_no, rng).and_then(|i| {
                    if attribute.is_empty() {
                        Some(all[i].text().collect::<String>())
                    } else {
                        all[i].attr(attribute).map(str::to_string)
                    }
                })
            }
            Source::JsonPointer(p) => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.pointer(p).map(|x| match x {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                }),
            Source::Header(name) => headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        };
        found.or_else(|| self.default.clone())
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
        !self.body_contains.is_empty() || !self.body_matches.is_empty()
    }

    pub fn judge(&self, status: u16, body: &[u8], vars: &[String]) -> Verdict {
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
        Verdict::Pass
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

// === cookies ===

/// One virtual user's cookies, as a browser keeps them for plain navigation:
/// by host (and domain for `Domain=` cookies), path prefix, expiry and the
/// `Secure` flag. Enough for session cookies; not a full RFC 6265 store
/// (no public-suffix list, no SameSite, no size limits).
#[derive(Debug, Default, Clone)]
pub struct CookieJar {
    cookies: Vec<Cookie>,
}

#[derive(Debug, Clone)]
struct Cookie {
    name: String,
    value: String,
    /// Host the cookie came from, or the `Domain=` it applies to.
    domain: String,
    /// Whether `domain` also covers subdomains (`Domain=` was given).
    subdomains: bool,
    path: String,
    secure: bool,
    expires: Option<SystemTime>,
}

impl CookieJar {
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    pub fn clear(&mut self) {
        self.cookies.clear();
    }

    /// Stores what a `Set-Cookie` header says, for a response from `host`
    /// to a request for `path`.
    pub fn store(&mut self, header: &str, host: &str, path: &str, now: SystemTime) {
        let mut parts = header.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            return;
        };
        let name = name.trim();
        if name.is_empty() {
            return;
        }
        let mut cookie = Cookie {
            name: name.to_string(),
            value: value.trim().trim_matches('"').to_string(),
            domain: host.to_ascii_lowercase(),
            subdomains: false,
            path: default_path(path),
            secure: false,
            expires: None,
        };
        let mut max_age = None;
        for attr in parts {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("path") && v.starts_with('/') {
                cookie.path = v.to_string();
            } else if k.eq_ignore_ascii_case("domain") && !v.is_empty() {
                let d = v.trim_start_matches('.').to_ascii_lowercase();
                // A server may only set cookies for itself or a parent domain.
                if !domain_matches(&cookie.domain, &d) {
                    return;
                }
                cookie.domain = d;
                cookie.subdomains = true;
            } else if k.eq_ignore_ascii_case("secure") {
                cookie.secure = true;
            } else if k.eq_ignore_ascii_case("max-age") {
                max_age = v.parse::<i64>().ok();
            } else if k.eq_ignore_ascii_case("expires") {
                cookie.expires = httpdate::parse_http_date(v).ok();
            }
        }
        if let Some(secs) = max_age {
            cookie.expires = Some(if secs <= 0 {
                SystemTime::UNIX_EPOCH
            } else {
                now + Duration::from_secs(secs as u64)
            });
        }
        self.cookies.retain(|c| {
            !(c.name == cookie.name && c.domain == cookie.domain && c.path == cookie.path)
        });
        if cookie.expires.is_none_or(|t| t > now) {
            self.cookies.push(cookie);
        }
    }

    /// Appends the `Cookie` header value for a request; false when no
    /// cookie applies.
    pub fn header_for(
        &self,
        host: &str,
        path: &str,
        secure: bool,
        now: SystemTime,
        out: &mut String,
    ) -> bool {
        let start = out.len();
        for c in &self.cookies {
            let host_ok = if c.subdomains {
                domain_matches(host, &c.domain)
            } else {
                host.eq_ignore_ascii_case(&c.domain)
            };
            if !host_ok
                || !path_matches(path, &c.path)
                || (c.secure && !secure)
                || c.expires.is_some_and(|t| t <= now)
            {
                continue;
            }
            if out.len() > start {
                out.push_str("; ");
            }
            out.push_str(&c.name);
            out.push('=');
            out.push_str(&c.value);
        }
        out.len() > start
    }
}

fn domain_matches(host: &str, domain: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == domain
        || (host.ends_with(domain) && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

fn path_matches(request: &str, cookie: &str) -> bool {
    let request = request.split('?').next().unwrap_or("/");
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request.as_bytes().get(cookie.len()) == Some(&b'/')))
}

fn default_path(request: &str) -> String {
    let path = request.split('?').next().unwrap_or("/");
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_escape() {
        let mut vars = VarTable::default();
        let t = Template::compile("/a/${x}?k=${ y }&z=$${lit}", &mut vars).unwrap();
        assert_eq!(vars.len(), 2);
        let values = vec!["1".to_string(), "two".to_string()];
        assert_eq!(t.render(&values), "/a/1?k=two&z=${lit}");
        assert_eq!(
            Template::compile("/plain", &mut vars).unwrap().as_static(),
            Some("/plain")
        );
        assert!(Template::compile("/x/${open", &mut vars).is_err());
        assert!(Template::compile("/x/${}", &mut vars).is_err());
        let names: Vec<String> = template_vars("${a}-$${b}-${c.d}")
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(names, ["a", "c.d"]);
    }

    #[test]
    fn cookies_follow_host_path_and_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut jar = CookieJar::default();
        jar.store("S=1; Path=/; HttpOnly", "app.test", "/login/index.php", now);
        jar.store("P=2", "app.test", "/course/view.php", now);
        jar.store("D=3; Domain=.test", "app.test", "/", now);
        jar.store("X=4; Domain=other.example", "app.test", "/", now);
        let mut out = String::new();
        assert!(jar.header_for("app.test", "/course/x?y", false, now, &mut out));
        assert_eq!(out, "S=1; P=2; D=3");
        out.clear();
        jar.header_for("app.test", "/", false, now, &mut out);
        assert_eq!(out, "S=1; D=3", "P is scoped to /course");
        out.clear();
        jar.header_for("cdn.test", "/", false, now, &mut out);
        assert_eq!(out, "D=3", "only the Domain= cookie crosses hosts");
        // Deleted by an expiry in the past, as logout pages do.
        jar.store(
            "S=deleted; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "app.test",
            "/",
            now,
        );
        jar.store("D=; Domain=test; Max-Age=0", "app.test", "/", now);
        out.clear();
        jar.header_for("app.test", "/", false, now, &mut out);
        assert_eq!(out, "");
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
        };
        assert_eq!(css.apply(&h, body, &mut rng), Some("T&K".into()));
        let json = Extract {
            slot: 0,
            name: "j".into(),
            source: Source::JsonPointer("/a/1/id".into()),
            match_no: 1,
            default: Some("none".into()),
        };
        assert_eq!(
            json.apply(&h, br#"{"a":[{},{"id":42}]}"#, &mut rng),
            Some("42".into())
        );
        assert_eq!(json.apply(&h, b"not json", &mut rng), Some("none".into()));
    }

    #[test]
    fn checks_and_think_times() {
        let default = Check::default();
        assert_eq!(default.judge(302, b"", &[]), Verdict::Pass);
        assert_eq!(default.judge(404, b"", &[]), Verdict::Status(404));
        let mut vars = VarTable::default();
        let strict = Check {
            status: vec![404],
            body_contains: vec![Template::compile("gone ${who}", &mut vars).unwrap()],
            body_matches: vec![regex::bytes::Regex::new("^g").unwrap()],
        };
        let who = ["away".to_string()];
        assert_eq!(strict.judge(404, b"gone away", &who), Verdict::Pass);
        assert!(matches!(
            strict.judge(200, b"gone away", &who),
            Verdict::Check(_)
        ));
        assert!(matches!(
            strict.judge(404, b"gone home", &who),
            Verdict::Check(_)
        ));
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
