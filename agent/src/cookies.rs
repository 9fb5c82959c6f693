//! One virtual user's cookie jar: what a browser keeps between requests
//! (host, domain and path scope, expiry), small and allocation-light.

use std::time::{Duration, SystemTime};

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
}
