//! `loadfleet import har`: a browser recording (HAR 1.2, as Chrome and
//! Firefox export it) turned into a journey. Documents and XHR/fetch
//! requests become steps (static assets only with `include_assets`), the
//! recorded gaps become think times, a redirect the browser followed stays
//! one step (loadfleet follows it too), cookies are left to the cookie jar,
//! and a value that looks like a per-session token is named: it needs an
//! extraction the recording cannot hold.

use std::fmt::Write;

use serde::Deserialize;

use super::toml_text::{inline_table, json_value, string};

#[derive(Deserialize)]
struct Har {
    log: Log,
}

#[derive(Deserialize)]
struct Log {
    #[serde(default)]
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    started_date_time: String,
    /// Milliseconds the whole exchange took.
    #[serde(default)]
    time: f64,
    request: HarRequest,
    response: HarResponse,
    /// Chrome's classification: document, xhr, fetch, script, image, …
    #[serde(default, rename = "_resourceType")]
    resource_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HarRequest {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<NameValue>,
    post_data: Option<PostData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostData {
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default, deserialize_with = "params")]
    params: Vec<NameValue>,
}

/// `postData.params` as HAR 1.2 writes it (a list of `{name, value}`), or
/// as some tools do (an object of name → value).
fn params<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<NameValue>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Params {
        List(Vec<NameValue>),
        Map(std::collections::BTreeMap<String, serde_json::Value>),
    }
    Ok(match Params::deserialize(d)? {
        Params::List(l) => l,
        Params::Map(m) => m
            .into_iter()
            .map(|(name, v)| NameValue {
                name,
                value: match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                },
            })
            .collect(),
    })
}

/// Removes every `null` member of every object: tools write `null` for
/// optional fields that HAR leaves out.
fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HarResponse {
    status: u16,
    #[serde(default, rename = "redirectURL")]
    redirect_url: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    #[serde(default)]
    mime_type: String,
}

#[derive(Deserialize, Clone)]
struct NameValue {
    name: String,
    #[serde(default)]
    value: String,
}

/// How to import.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep static assets (scripts, styles, images, fonts) as steps.
    pub include_assets: bool,
    /// Point the plan here instead of the recording's first origin.
    pub base_url: Option<String>,
    /// Hosts kept besides the first document's.
    pub include_hosts: Vec<String>,
    /// Keep every host.
    pub all_hosts: bool,
    /// The longest recorded pause kept as think time.
    pub max_think: std::time::Duration,
    /// The plan's name.
    pub name: String,
    /// The file the recording came from, for the plan's comments.
    pub source: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            include_assets: false,
            base_url: None,
            include_hosts: Vec::new(),
            all_hosts: false,
            max_think: std::time::Duration::from_secs(30),
            name: String::new(),
            source: String::new(),
        }
    }
}

/// The plan, and what a person must look at (also written into the plan
/// as comments).
#[derive(Debug)]
pub struct Imported {
    pub plan: String,
    pub steps: usize,
    pub left_out: usize,
    pub warnings: Vec<String>,
}

/// Headers loadfleet sets itself, or that belong to one connection or
/// one browser session: never copied.
const SKIPPED_HEADERS: [&str; 14] = [
    // Conditional requests: a replay asks for the whole response, as a
    // browser with an empty cache does.
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "cookie",
    "host",
    "content-length",
    "connection",
    "accept-encoding",
    "user-agent",
    "transfer-encoding",
    "keep-alive",
    "upgrade-insecure-requests",
];

/// Names that usually carry a per-session value (a CSRF token, a session
/// key, a nonce): replaying the recorded one fails.
fn looks_like_token(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "csrf",
        "xsrf",
        "token",
        "sesskey",
        "nonce",
        "authenticity",
        "__requestverification",
    ]
    .iter()
    .any(|t| n.contains(t))
}

fn is_asset(e: &Entry) -> bool {
    let mime = e
        .response
        .content
        .as_ref()
        .map(|c| c.mime_type.to_ascii_lowercase())
        .unwrap_or_default();
    if mime.starts_with("image/") {
        // SVG too, whatever the recorder called it.
        return true;
    }
    match e.resource_type.as_deref() {
        Some("document" | "xhr" | "fetch") => false,
        Some(_) => true,
        // Firefox writes no resource type: judge by what came back.
        None => {
            let mime = e
                .response
                .content
                .as_ref()
                .map(|c| c.mime_type.to_ascii_lowercase())
                .unwrap_or_default();
            let data = mime.contains("html")
                || mime.contains("json")
                || mime.contains("xml")
                || mime.is_empty()
                || e.request.method != "GET"
                || (300..400).contains(&e.response.status);
            !data
        }
    }
}

/// Milliseconds since the epoch of an ISO 8601 timestamp.
fn millis(iso: &str) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(iso, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e6)
}

/// Converts the HAR text.
pub fn import(har_text: &str, opts: &Options) -> Result<Imported, String> {
    // A byte-order mark, as some tools write it.
    let har_text = har_text.strip_prefix('\u{feff}').unwrap_or(har_text);
    let har: Har = match serde_json::from_str(har_text) {
        Ok(h) => h,
        Err(e) => {
            // Tools write `null` for optional fields: read without them,
            // and say where the text itself is wrong if that fails too.
            let retry = serde_json::from_str::<serde_json::Value>(har_text)
                .ok()
                .and_then(|mut v| {
                    strip_nulls(&mut v);
                    serde_json::from_value::<Har>(v).ok()
                });
            match retry {
                Some(h) => h,
                None => {
                    return Err(format!(
                        "{}: not a HAR file: {e} (line {}, column {})",
                        opts.source,
                        e.line(),
                        e.column()
                    ));
                }
            }
        }
    };
    // (position in the recording, entry), in the order they started.
    let mut entries: Vec<(usize, &Entry)> = har.log.entries.iter().enumerate().collect();
    entries.sort_by(|(_, a), (_, b)| {
        millis(&a.started_date_time)
            .unwrap_or(0.0)
            .total_cmp(&millis(&b.started_date_time).unwrap_or(0.0))
    });
    let total = entries.len();
    let mut warnings = Vec::new();
    // Not replayed: what the browser did not fetch from the server (304:
    // its cache; status 0: cancelled or blocked), WebSockets and beacons.
    let mut not_fetched = 0;
    let mut beacons = 0;
    let mut sockets: Vec<String> = Vec::new();
    let entries: Vec<(usize, &Entry)> = entries
        .into_iter()
        .filter(|(_, e)| {
            let url = e.request.url.to_ascii_lowercase();
            if url.starts_with("ws://")
                || url.starts_with("wss://")
                || e.resource_type.as_deref() == Some("websocket")
            {
                sockets.push(e.request.url.clone());
                return false;
            }
            if matches!(e.resource_type.as_deref(), Some("ping" | "beacon")) {
                beacons += 1;
                return false;
            }
            if e.response.status == 304 || e.response.status == 0 {
                not_fetched += 1;
                return false;
            }
            true
        })
        .collect();
    for s in &sockets {
        warnings.push(format!("WebSocket is not supported yet: {s} (left out)"));
    }
    let data: Vec<(usize, &Entry)> = entries
        .into_iter()
        .filter(|(_, e)| opts.include_assets || !is_asset(e))
        .collect();
    let assets = total - not_fetched - beacons - sockets.len() - data.len();
    // The site: the first document's host (else the first request's).
    let host_of = |url: &str| {
        url.parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_ascii_lowercase))
    };
    let site = data
        .iter()
        .find(|(_, e)| e.resource_type.as_deref() == Some("document"))
        .or(data.first())
        .and_then(|(_, e)| host_of(&e.request.url));
    let mut other_hosts: std::collections::BTreeMap<String, usize> = Default::default();
    let kept: Vec<(usize, &Entry)> = data
        .into_iter()
        .filter(|(_, e)| {
            let host = host_of(&e.request.url).unwrap_or_default();
            let keep = opts.all_hosts
                || Some(&host) == site.as_ref()
                || opts
                    .include_hosts
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&host));
            if !keep {
                *other_hosts.entry(host).or_default() += 1;
            }
            keep
        })
        .collect();
    for (h, n) in &other_hosts {
        warnings.push(format!(
            "{n} request(s) to {h} left out: not the site ({}); --include-host {h} keeps them",
            site.as_deref().unwrap_or("?")
        ));
    }
    let left_out = total - kept.len();
    let first = kept
        .iter()
        .find_map(|(_, e)| e.request.url.parse::<http::Uri>().ok())
        .ok_or_else(|| {
            let why = if !sockets.is_empty() && assets == 0 && beacons == 0 {
                format!(
                    "only WebSocket connections, and WebSocket is not supported yet: {}",
                    sockets[0]
                )
            } else if beacons > 0 && assets == 0 {
                format!("only beacons ({beacons}), which are not load")
            } else {
                format!(
                    "{assets} static asset(s) (--include-assets keeps them), {not_fetched} from the cache or cancelled, {beacons} beacon(s), {} WebSocket(s), {} to other hosts",
                    sockets.len(),
                    other_hosts.values().sum::<usize>()
                )
            };
            format!("{}: no request to turn into a step: {why}", opts.source)
        })?;
    let origin = |u: &http::Uri| {
        format!(
            "{}://{}",
            u.scheme_str().unwrap_or("http"),
            u.authority().map_or("", |a| a.as_str())
        )
    };
    let recorded_origin = origin(&first);
    let base_url = opts
        .base_url
        .clone()
        .unwrap_or_else(|| recorded_origin.clone());
    let mut steps = String::new();
    let mut count = 0;
    // The end of the previous step's exchange, for think times.
    let mut previous_end: Option<f64> = None;
    let mut skip_redirect_target: Option<String> = None;
    for &(i, e) in &kept {
        if skip_redirect_target.as_deref() == Some(e.request.url.as_str()) {
            // The browser followed the previous step's redirect: so does
            // loadfleet, down the whole chain.
            skip_redirect_target = None;
            if (300..400).contains(&e.response.status)
                && !e.response.redirect_url.is_empty()
                && let Ok(here) = e.request.url.parse::<http::Uri>()
            {
                skip_redirect_target = Some(uri_join(&here, &e.response.redirect_url));
            }
            if let Some(start) = millis(&e.started_date_time) {
                previous_end = Some(start + e.time.max(0.0));
            }
            continue;
        }
        skip_redirect_target = None;
        let Ok(uri) = e.request.url.parse::<http::Uri>() else {
            warnings.push(format!(
                "entry {}: left out, its URL cannot be read: {}",
                i + 1,
                e.request.url
            ));
            continue;
        };
        let start = millis(&e.started_date_time);
        if let (Some(end), Some(start)) = (previous_end, start) {
            let mut gap = (start - end).round();
            let cap = opts.max_think.as_millis() as f64;
            if gap > cap && count > 0 {
                let secs = gap / 1000.0;
                let said = if secs >= 86_400.0 {
                    format!("{:.1} days", secs / 86_400.0)
                } else {
                    format!("{secs:.1} s")
                };
                warnings.push(format!(
                    "step {count}: the recorded pause after it, {said}, is capped at {:.1} s (--max-think)",
                    cap / 1000.0
                ));
                gap = cap;
            }
            if gap >= 1.0 && count > 0 {
                // The pause belongs to the step before.
                let _ = writeln!(steps, "think = \"{}ms\"", gap as u64);
            }
        }
        if let Some(start) = start {
            previous_end = Some(start + e.time.max(0.0));
        }
        count += 1;
        let method = e.request.method.to_ascii_uppercase();
        let same_origin = origin(&uri) == recorded_origin;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let _ = writeln!(steps, "\n[[scenario.step]]");
        let _ = writeln!(
            steps,
            "# entry {} of the recording: {method} {} -> {}",
            i + 1,
            e.request.url,
            e.response.status
        );
        let _ = writeln!(
            steps,
            "name = {}",
            string(&format!("{method} {}", uri.path()))
        );
        if method != "GET" {
            let _ = writeln!(steps, "method = {}", string(&method));
        }
        if same_origin {
            let _ = writeln!(steps, "path = {}", string(&path));
        } else {
            let _ = writeln!(steps, "url = {}", string(&e.request.url));
        }
        for (k, v) in uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        {
            if looks_like_token(&k) {
                warnings.push(format!(
                    "step {count} ({method} {}): query `{k}` looks like a per-session token (recorded `{v}`): extract it from an earlier response",
                    uri.path()
                ));
            }
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut content_type = None;
        for h in &e.request.headers {
            let name = h.name.to_ascii_lowercase();
            if name.starts_with(':') || SKIPPED_HEADERS.contains(&name.as_str()) {
                continue;
            }
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
                || http::HeaderValue::from_str(&h.value).is_err()
            {
                warnings.push(format!(
                    "entry {}: header {:?} is not a valid HTTP header; left out",
                    i + 1,
                    h.name
                ));
                continue;
            }
            if name == "content-type" {
                content_type = Some(h.value.clone());
            }
            if looks_like_token(&name) {
                warnings.push(format!(
                    "step {count} ({method} {}): header `{}` looks like a per-session token: extract it from an earlier response",
                    uri.path(),
                    h.name
                ));
            }
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(&h.name)) {
                // A Referer or Origin of the recorded site names the new one.
                let value = h.value.replace(&recorded_origin, &base_url);
                headers.push((h.name.clone(), value));
            }
        }
        let mut body_line = None;
        if let Some(pd) = &e.request.post_data {
            let mime = pd.mime_type.to_ascii_lowercase();
            let text = pd.text.clone().unwrap_or_default();
            if mime.starts_with("application/x-www-form-urlencoded") {
                let params: Vec<(String, String)> = if pd.params.is_empty() {
                    form_urlencoded::parse(text.as_bytes())
                        .into_owned()
                        .collect()
                } else {
                    pd.params
                        .iter()
                        .map(|p| (p.name.clone(), p.value.clone()))
                        .collect()
                };
                for (k, v) in &params {
                    if looks_like_token(k) {
                        warnings.push(format!(
                            "step {count} ({method} {}): form field `{k}` looks like a per-session token (recorded `{v}`): extract it from an earlier response",
                            uri.path()
                        ));
                    }
                }
                let sorted_unique = params.windows(2).all(|w| w[0].0 < w[1].0);
                if sorted_unique {
                    body_line = Some(format!("form = {}", inline_table(&params)));
                    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
                } else {
                    // A table would sort the fields and merge repeated
                    // names: the recorded body keeps both.
                    let encoded: String = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&params)
                        .finish();
                    body_line = Some(format!("body = {}", string(&encoded)));
                    if !headers
                        .iter()
                        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                    {
                        headers.push((
                            "Content-Type".into(),
                            "application/x-www-form-urlencoded".into(),
                        ));
                    }
                }
            } else if mime.contains("json")
                && let Some(v) = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| json_value(&v))
            {
                body_line = Some(format!("json = {v}"));
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
            } else if !text.is_empty() {
                body_line = Some(format!("body = {}", string(&text)));
                if content_type.is_none() && !pd.mime_type.is_empty() {
                    headers.push(("Content-Type".into(), pd.mime_type.clone()));
                }
            }
        }
        if !headers.is_empty() {
            let _ = writeln!(steps, "headers = {}", inline_table(&headers));
        }
        if let Some(b) = body_line {
            let _ = writeln!(steps, "{b}");
        }
        let status = e.response.status;
        if (300..400).contains(&status) && !e.response.redirect_url.is_empty() {
            // Followed by loadfleet: the recorded target is not a step of its own.
            let target = uri_join(&uri, &e.response.redirect_url);
            skip_redirect_target = Some(target);
        } else if (200..300).contains(&status) {
            let _ = writeln!(steps, "check = {{ status = [{status}] }}");
        }
    }
    if count == 0 {
        return Err(format!(
            "{}: no document or XHR/fetch request to turn into a step ({left_out} assets left out; --include-assets keeps them)",
            opts.source
        ));
    }
    let mut plan = String::new();
    let _ = writeln!(
        plan,
        "# Imported from {} by `loadfleet import har`: {total} recorded requests, {count} steps; left out: {assets} static asset(s){}, {not_fetched} from the browser's cache or cancelled, {beacons} beacon(s), {} WebSocket(s), {} to other hosts.",
        opts.source,
        if opts.include_assets {
            ""
        } else {
            " (--include-assets keeps them)"
        },
        sockets.len(),
        other_hosts.values().sum::<usize>()
    );
    let _ = writeln!(
        plan,
        "# Think times are the recorded pauses. Cookies are left to each user's cookie jar."
    );
    if base_url != recorded_origin {
        let _ = writeln!(
            plan,
            "# Recorded against {recorded_origin}; pointed at {base_url}."
        );
    }
    for w in &warnings {
        let _ = writeln!(plan, "# CHECK: {w}");
    }
    let _ = writeln!(plan, "name = {}", string(&opts.name));
    let _ = writeln!(plan, "\n[target]\nbase_url = {}", string(&base_url));
    let _ = writeln!(plan, "\n[load]\nusers = 1\niterations = 1");
    let _ = writeln!(plan, "\n[[scenario]]\nname = \"recorded\"");
    plan.push_str(&steps);
    Ok(Imported {
        plan,
        steps: count,
        left_out,
        warnings,
    })
}

/// A `Location` resolved against the request's URL, as the browser did.
fn uri_join(base: &http::Uri, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin = format!(
        "{}://{}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map_or("", |a| a.as_str())
    );
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
    format!("{origin}{dir}/{location}")
}
