//! A Moodle-like site with real session behaviour, for the Moodle journey:
//! a `MoodleSession` cookie, a login token bound to the session, pages that
//! redirect to the login page without a login, a forum reply form whose
//! `sesskey` and draft item id are checked on POST, and logout.
//!
//! It is not Moodle: pages are small and fixed. What it reproduces is what a
//! load test of Moodle depends on (the journey must carry its session and
//! tokens, or it fails) and, with a [`CacheStore`], a *model* of how an
//! application cache shapes latency under concurrency. The models are
//! sleeps and a lock, not real cache stores, and are named for what they
//! do, not after any product.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, COOKIE, HeaderValue, LOCATION, SET_COOKIE};
use hyper::{Method, Response, StatusCode};

/// How the site's modelled application cache costs every page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CacheStore {
    /// No cache cost.
    None,
    /// One contended lock (the behaviour of a cache on shared storage with
    /// locking): each request costs `base`, then holds the one lock for
    /// `lock_hold`, so requests queue behind each other and latency climbs
    /// steeply once requests arrive faster than one per `lock_hold`.
    ContendedLock { base: Duration, lock_hold: Duration },
    /// A flat cost per request, whatever the concurrency (the behaviour of
    /// a fast shared in-memory store).
    FlatCost { cost: Duration },
}

impl CacheStore {
    /// The models `loadfleet demo` compares, with every cost multiplied by
    /// `scale` (the demo's quick mode compresses time by 10).
    pub fn contended_lock_scaled(scale: u32) -> CacheStore {
        CacheStore::ContendedLock {
            base: Duration::from_millis(2) * scale,
            lock_hold: Duration::from_millis(6) * scale,
        }
    }

    pub fn flat_cost_scaled(scale: u32) -> CacheStore {
        CacheStore::FlatCost {
            cost: Duration::from_millis(10) * scale,
        }
    }

    /// Parses `none`, `contended-lock` or `flat-cost`.
    pub fn parse(s: &str) -> Result<CacheStore, String> {
        match s {
            "none" => Ok(CacheStore::None),
            "contended-lock" => Ok(CacheStore::contended_lock_scaled(1)),
            "flat-cost" => Ok(CacheStore::flat_cost_scaled(1)),
            _ => Err(format!(
                "expected none, contended-lock or flat-cost (latency models of a cache, not real stores), got `{s}`"
            )),
        }
    }
}

/// The site's fixed content ids (those of Moodle's generated test course).
#[derive(Debug, Clone)]
pub struct MoodleConfig {
    pub cache: CacheStore,
    pub course: u64,
    pub page_cmid: u64,
    pub forum_cmid: u64,
    pub discussion: u64,
    pub post: u64,
}

impl Default for MoodleConfig {
    fn default() -> MoodleConfig {
        MoodleConfig {
            cache: CacheStore::None,
            course: 2,
            page_cmid: 3,
            forum_cmid: 4,
            discussion: 1,
            post: 1,
        }
    }
}

/// The password the site accepts for `username`; the example users.csv
/// follows it.
pub fn password_for(username: &str) -> String {
    format!("pw-{username}")
}

#[derive(Debug, Default)]
struct Session {
    user: Option<String>,
    logintoken: String,
    sesskey: String,
    /// Draft item id handed out with the last reply form.
    draft: Option<String>,
}

/// What the site has seen.
#[derive(Debug, Default)]
pub struct MoodleStats {
    logins: Mutex<HashMap<String, u64>>,
    failed_logins: AtomicU64,
    replies: AtomicU64,
    rejected_posts: AtomicU64,
    logouts: AtomicU64,
    redirects_to_login: AtomicU64,
}

impl MoodleStats {
    /// Successful logins per username.
    pub fn logins(&self) -> HashMap<String, u64> {
        self.logins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Logins refused (bad password or login token).
    pub fn failed_logins(&self) -> u64 {
        self.failed_logins.load(Ordering::SeqCst)
    }

    /// Forum replies accepted.
    pub fn replies(&self) -> u64 {
        self.replies.load(Ordering::SeqCst)
    }

    /// Reply posts refused (bad sesskey or draft id, missing fields).
    pub fn rejected_posts(&self) -> u64 {
        self.rejected_posts.load(Ordering::SeqCst)
    }

    pub fn logouts(&self) -> u64 {
        self.logouts.load(Ordering::SeqCst)
    }

    /// Requests for a page that needs a login, made without one.
    pub fn redirects_to_login(&self) -> u64 {
        self.redirects_to_login.load(Ordering::SeqCst)
    }
}

/// The site's state.
#[derive(Debug, Default)]
pub struct Site {
    config: MoodleConfig,
    sessions: Mutex<HashMap<String, Session>>,
    counter: AtomicU64,
    cache_lock: tokio::sync::Mutex<()>,
    pub stats: MoodleStats,
}

/// Whether `path` is one of the site's pages.
pub fn is_moodle_path(path: &str) -> bool {
    path == "/"
        || path.starts_with("/login/")
        || path.starts_with("/course/")
        || path.starts_with("/mod/")
        || path.starts_with("/user/")
}

type Resp = Response<Full<Bytes>>;

impl Site {
    pub fn new(config: MoodleConfig) -> Site {
        Site {
            config,
            counter: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
            ..Site::default()
        }
    }

    /// An unguessable-enough token for a test site (SplitMix64 of a counter).
    fn token(&self) -> String {
        let mut z = self
            .counter
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        format!("{:016x}", z ^ (z >> 31))
    }

    /// Serves one request: `query` and `form` already decoded.
    pub async fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        form: &HashMap<String, String>,
        cookie: Option<&HeaderValue>,
    ) -> Resp {
        match self.config.cache {
            CacheStore::None => {}
            CacheStore::ContendedLock { base, lock_hold } => {
                tokio::time::sleep(base).await;
                let _held = self.cache_lock.lock().await;
                tokio::time::sleep(lock_hold).await;
            }
            CacheStore::FlatCost { cost } => tokio::time::sleep(cost).await,
        }
        self.page(method, path, query, form, cookie)
    }

    fn page(
        &self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        form: &HashMap<String, String>,
        cookie: Option<&HeaderValue>,
    ) -> Resp {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let sid = cookie
            .and_then(|c| c.to_str().ok())
            .and_then(|c| {
                c.split(';')
                    .filter_map(|kv| kv.trim().split_once('='))
                    .find(|(k, _)| *k == "MoodleSession")
                    .map(|(_, v)| v.to_string())
            })
            .filter(|sid| sessions.contains_key(sid));
        let (sid, new_cookie) = match sid {
            Some(s) => (s, false),
            None => {
                let s = self.token();
                sessions.insert(s.clone(), Session::default());
                (s, true)
            }
        };
        let c = &self.config;
        let q = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
        let session = sessions.get_mut(&sid).expect("inserted above");
        let logged = session.user.clone();
        let mut set_cookie = new_cookie.then(|| session_cookie(&sid));
        let needs_login = !matches!(path, "/" | "/login/index.php" | "/login/logout.php");
        if needs_login && logged.is_none() {
            self.stats.redirects_to_login.fetch_add(1, Ordering::SeqCst);
            return finish(redirect("/login/index.php"), set_cookie);
        }
        let user = logged.clone().unwrap_or_default();
        let resp = match (method, path) {
            (&Method::GET, "/") => match &logged {
                Some(u) => html(&format!(
                    "<h1>Moodle testbed</h1><p>You are logged in as {u}</p>\
                     <a href=\"/course/view.php?id={}\">Course</a>\
                     <a href=\"/login/logout.php?sesskey={}\">Log out</a>",
                    c.course, session.sesskey
                )),
                None => html(
                    "<h1>Moodle testbed</h1><p>You are not logged in. \
                     <a href=\"/login/index.php\">Log in</a></p>",
                ),
            },
            (&Method::GET, "/login/index.php") => {
                session.logintoken = self.token();
                html(&format!(
                    "<h1>Log in</h1><form method=\"post\" action=\"/login/index.php\">\
                     <input type=\"hidden\" name=\"logintoken\" value=\"{}\">\
                     <input name=\"username\"><input type=\"password\" name=\"password\">\
                     <button>Log in</button></form>",
                    session.logintoken
                ))
            }
            (&Method::POST, "/login/index.php") => {
                let f = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
                let ok = !session.logintoken.is_empty()
                    && f("logintoken") == session.logintoken
                    && !f("username").is_empty()
                    && f("password") == password_for(f("username"));
                // A token is good for one attempt.
                session.logintoken.clear();
                if !ok {
                    self.stats.failed_logins.fetch_add(1, Ordering::SeqCst);
                    redirect("/login/index.php?errorcode=3")
                } else {
                    // As Moodle does, a login starts a new session id.
                    sessions.remove(&sid);
                    let new_sid = self.token();
                    let username = f("username").to_string();
                    *self
                        .stats
                        .logins
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(username.clone())
                        .or_default() += 1;
                    sessions.insert(
                        new_sid.clone(),
                        Session {
                            user: Some(username),
                            sesskey: self.token()[..10].to_string(),
                            ..Session::default()
                        },
                    );
                    set_cookie = Some(session_cookie(&new_sid));
                    redirect("/")
                }
            }
            (&Method::GET, "/login/logout.php") => {
                if logged.is_some() && q("sesskey") == session.sesskey {
                    sessions.remove(&sid);
                    self.stats.logouts.fetch_add(1, Ordering::SeqCst);
                    set_cookie = Some(
                        "MoodleSession=deleted; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
                            .to_string(),
                    );
                    redirect("/")
                } else {
                    html("<p>Do you really want to log out?</p>")
                }
            }
            (&Method::GET, "/course/view.php") if q("id") == c.course.to_string() => {
                html(&format!(
                    "<h1>Course {course}</h1>\
                     <a href=\"/course/view.php?id={course}&amp;sesskey={sk}\">Edit</a>\
                     <a href=\"/login/logout.php?sesskey={sk}\">Log out</a>\
                     <a href=\"/mod/page/view.php?id={page}\">Page</a>\
                     <a href=\"/mod/forum/view.php?id={forum}\">Forum</a>",
                    course = c.course,
                    sk = session.sesskey,
                    page = c.page_cmid,
                    forum = c.forum_cmid,
                ))
            }
            (&Method::GET, "/mod/page/view.php") if q("id") == c.page_cmid.to_string() => {
                html("<h1>A page</h1><p>Some reading for the course.</p>")
            }
            (&Method::GET, "/mod/forum/view.php") if q("id") == c.forum_cmid.to_string() => {
                html(&format!(
                    "<h1>Forum</h1><a href=\"/mod/forum/discuss.php?d={}\">A discussion</a>",
                    c.discussion
                ))
            }
            (&Method::GET, "/mod/forum/discuss.php") if q("d") == c.discussion.to_string() => {
                html(&format!(
                    "<h1>Discussion</h1><p>{} replies</p>\
                     <a href=\"/mod/forum/post.php?reply={}\">Reply</a>",
                    self.stats.replies(),
                    c.post
                ))
            }
            (&Method::GET, "/mod/forum/post.php") if q("reply") == c.post.to_string() => {
                let draft =
                    (self.counter.load(Ordering::Relaxed) % 900_000_000 + 100_000_000).to_string();
                session.draft = Some(draft.clone());
                html(&format!(
                    "<form method=\"post\" action=\"/mod/forum/post.php\">\
                     <input type=\"hidden\" name=\"userid\" value=\"{uid}\">\
                     <input type=\"hidden\" name=\"sesskey\" value=\"{sk}\">\
                     <input type=\"hidden\" name=\"attachments\" value=\"{d2}\">\
                     <input type=\"hidden\" name=\"message[itemid]\" value=\"{draft}\">\
                     <input name=\"subject\"><textarea name=\"message[text]\"></textarea>\
                     <input type=\"submit\" name=\"submitbutton\" value=\"Post to forum\"></form>",
                    uid = user.len() + 100,
                    sk = session.sesskey,
                    d2 = draft.len() + 1,
                ))
            }
            (&Method::POST, "/mod/forum/post.php") => {
                let f = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
                let ok = f("sesskey") == session.sesskey
                    && session.draft.as_deref() == Some(f("message[itemid]"))
                    && f("_qf__mod_forum_post_form") == "1"
                    && f("reply") == c.post.to_string()
                    && !f("subject").is_empty()
                    && !f("message[text]").is_empty();
                if ok {
                    session.draft = None;
                    self.stats.replies.fetch_add(1, Ordering::SeqCst);
                    redirect(&format!("/mod/forum/discuss.php?d={}", c.discussion))
                } else {
                    self.stats.rejected_posts.fetch_add(1, Ordering::SeqCst);
                    status(
                        StatusCode::FORBIDDEN,
                        "<p>Invalid sesskey or form; your session may have timed out.</p>",
                    )
                }
            }
            (&Method::GET, "/user/index.php") if q("id") == c.course.to_string() => {
                html("<h1>Participants</h1><table><tr><td>Someone</td></tr></table>")
            }
            _ => status(StatusCode::NOT_FOUND, "<p>Not found</p>"),
        };
        finish(resp, set_cookie)
    }
}

fn session_cookie(sid: &str) -> String {
    format!("MoodleSession={sid}; Path=/; HttpOnly")
}

fn html(body: &str) -> Resp {
    status(StatusCode::OK, body)
}

fn status(code: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "<!doctype html><html><body>{body}</body></html>\n"
    ))));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn redirect(to: &str) -> Resp {
    let mut r = status(StatusCode::SEE_OTHER, "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn finish(mut r: Resp, cookie: Option<String>) -> Resp {
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

/// The request's `Cookie` header, if any.
pub fn cookie_of(headers: &hyper::HeaderMap) -> Option<&HeaderValue> {
    headers.get(COOKIE)
}
