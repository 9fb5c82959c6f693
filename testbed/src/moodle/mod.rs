//! A Moodle-like site with real session behaviour, for the Moodle journey:
//! a `MoodleSession` cookie, a login token bound to the session, pages that
//! redirect to the login page without a login, a forum reply form whose
//! `sesskey` and draft item id are checked on POST, and logout.
//!
//! It is not Moodle: pages are small and fixed. What it reproduces is what a
//! load test of Moodle depends on: the journey must carry its session and
//! tokens, or it fails; sessions and the course, page and discussion caches
//! live in a real application cache store ([`store`]: memory, files with
//! locking, or a Redis server), read and written on every page the way
//! Moodle uses its stores; and every page ends with a footer in the format
//! of Moodle's performance information, with the counts of what the page
//! really did (cache hits, misses and sets, reads and writes of the site's
//! own data, session size, time used): Moodle 4.5's list and its two cache
//! tables ([`footer`]), after the application-cache work a Moodle page does.
//!
//! A [`LatencyModel`] can add a modelled cost on top (sleeps and a lock,
//! named for what they do): tests use it for a contrast that does not
//! depend on the machine.

pub mod footer;
pub mod store;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, COOKIE, HeaderValue, LOCATION, SET_COOKIE};
use hyper::{Method, Response, StatusCode};

pub use store::{Store, StoreError, StoreSpec};

/// A modelled cost added to every page, on top of the real store's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyModel {
    /// No modelled cost.
    None,
    /// One contended lock: each request costs `base`, then holds the one
    /// lock for `lock_hold`, so requests queue behind each other and latency
    /// climbs steeply once requests arrive faster than one per `lock_hold`.
    ContendedLock { base: Duration, lock_hold: Duration },
    /// A flat cost per request, whatever the concurrency.
    FlatCost { cost: Duration },
}

impl LatencyModel {
    /// The contended-lock model with every cost multiplied by `scale`.
    pub fn contended_lock_scaled(scale: u32) -> LatencyModel {
        LatencyModel::ContendedLock {
            base: Duration::from_millis(2) * scale,
            lock_hold: Duration::from_millis(6) * scale,
        }
    }

    pub fn flat_cost_scaled(scale: u32) -> LatencyModel {
        LatencyModel::FlatCost {
            cost: Duration::from_millis(10) * scale,
        }
    }

    /// Parses `none`, `contended-lock` or `flat-cost`.
    pub fn parse(s: &str) -> Result<LatencyModel, String> {
        match s {
            "none" => Ok(LatencyModel::None),
            "contended-lock" => Ok(LatencyModel::contended_lock_scaled(1)),
            "flat-cost" => Ok(LatencyModel::flat_cost_scaled(1)),
            _ => Err(format!(
                "expected none, contended-lock or flat-cost (modelled costs, not stores), got `{s}`"
            )),
        }
    }
}

/// The site's fixed content ids (those of Moodle's generated test course).
#[derive(Debug, Clone)]
pub struct MoodleConfig {
    /// Where the application cache (sessions included) is kept.
    pub store: StoreSpec,
    pub latency_model: LatencyModel,
    pub course: u64,
    pub page_cmid: u64,
    pub forum_cmid: u64,
    pub discussion: u64,
    pub post: u64,
}

impl Default for MoodleConfig {
    fn default() -> MoodleConfig {
        MoodleConfig {
            store: StoreSpec::Memory,
            latency_model: LatencyModel::None,
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

/// A session as the store keeps it: one field per line.
#[derive(Debug, Default, Clone, PartialEq)]
struct Session {
    user: Option<String>,
    logintoken: String,
    sesskey: String,
    /// Draft item id handed out with the last reply form.
    draft: Option<String>,
}

impl Session {
    fn encode(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.user.as_deref().unwrap_or(""),
            self.logintoken,
            self.sesskey,
            self.draft.as_deref().unwrap_or("")
        )
    }

    fn decode(s: &str) -> Session {
        let mut f = s.split('\n').map(str::to_string);
        let mut next = || f.next().unwrap_or_default();
        let some = |v: String| (!v.is_empty()).then_some(v);
        Session {
            user: some(next()),
            logintoken: next(),
            sesskey: next(),
            draft: some(next()),
        }
    }
}

/// What one page did, as its footer prints it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PagePerf {
    pub db_reads: u64,
    pub db_writes: u64,
    /// Every cache the page used (the footer's `Total` row): the
    /// application cache and the request caches.
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_sets: u64,
    /// The application cache alone (its store's row).
    pub app_hits: u64,
    pub app_misses: u64,
    pub app_sets: u64,
    /// Every operation on the store (the application cache's and the
    /// session handler's): what the store itself served.
    pub store_hits: u64,
    pub store_misses: u64,
    pub store_sets: u64,
    pub session_bytes: u64,
    pub time_used_us: u64,
    /// Time spent reading the site's own data (building what the caches
    /// missed), as the footer's `DB queries time`.
    pub db_time_us: u64,
}

impl PagePerf {
    /// Adds another page's counts into these.
    pub fn add(&mut self, p: &PagePerf) {
        self.db_reads += p.db_reads;
        self.db_writes += p.db_writes;
        self.cache_hits += p.cache_hits;
        self.cache_misses += p.cache_misses;
        self.cache_sets += p.cache_sets;
        self.app_hits += p.app_hits;
        self.app_misses += p.app_misses;
        self.app_sets += p.app_sets;
        self.store_hits += p.store_hits;
        self.store_misses += p.store_misses;
        self.store_sets += p.store_sets;
        self.session_bytes += p.session_bytes;
        self.time_used_us += p.time_used_us;
        self.db_time_us += p.db_time_us;
    }
}

/// A page's work in progress: its counts and its cache use per definition.
#[derive(Debug, Default)]
struct Work {
    perf: PagePerf,
    log: footer::CacheLog,
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
    store_errors: AtomicU64,
    /// Totals over every request, footer or not.
    all: Mutex<PagePerf>,
    /// What the footers printed, by path: (pages, totals).
    footers: Mutex<HashMap<String, (u64, PagePerf)>>,
    /// Time used of the first pages with a footer, by path (for tests that
    /// rebuild a histogram of every value), at most `KEEP_TIMES`.
    times: Mutex<Vec<(String, u64)>>,
}

/// How many footer times the site keeps for tests.
const KEEP_TIMES: usize = 1 << 20;

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

    /// Pages that failed because the cache store did.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::SeqCst)
    }

    /// What every request did, redirects (which have no footer) included.
    pub fn all(&self) -> PagePerf {
        *self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// By path: the pages that printed a footer, and the sums of what the
    /// footers said.
    pub fn footers(&self) -> HashMap<String, (u64, PagePerf)> {
        self.footers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The time used each footer printed, microseconds, by path (the first
    /// 2^20 pages).
    pub fn footer_times(&self) -> Vec<(String, u64)> {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn add(&self, path: &str, perf: &PagePerf, footer: bool) {
        self.all.lock().unwrap_or_else(|e| e.into_inner()).add(perf);
        if footer {
            let mut f = self.footers.lock().unwrap_or_else(|e| e.into_inner());
            let e = f.entry(path.to_string()).or_default();
            e.0 += 1;
            e.1.add(perf);
            let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() < KEEP_TIMES {
                t.push((path.to_string(), perf.time_used_us));
            }
        }
    }
}

/// The site's state.
#[derive(Debug)]
pub struct Site {
    config: MoodleConfig,
    store: Store,
    counter: AtomicU64,
    model_lock: tokio::sync::Mutex<()>,
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

/// A page before its footer.
struct Page {
    code: StatusCode,
    body: String,
    location: Option<String>,
}

impl Page {
    fn html(body: String) -> Page {
        Page {
            code: StatusCode::OK,
            body,
            location: None,
        }
    }

    fn status(code: StatusCode, body: &str) -> Page {
        Page {
            code,
            body: body.to_string(),
            location: None,
        }
    }

    fn redirect(to: &str) -> Page {
        Page {
            code: StatusCode::SEE_OTHER,
            body: String::new(),
            location: Some(to.to_string()),
        }
    }
}

impl Site {
    /// Opens the site's cache store (creates its directory, or checks that
    /// the Redis server answers).
    pub async fn open(config: MoodleConfig) -> Result<Site, StoreError> {
        let store = Store::open(&config.store).await?;
        Ok(Site {
            config,
            store,
            counter: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
            model_lock: tokio::sync::Mutex::new(()),
            stats: MoodleStats::default(),
        })
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

    /// A read of the store (the session handler's, or the cache's).
    async fn get(&self, perf: &mut PagePerf, key: &str) -> Result<Option<String>, StoreError> {
        let v = self.store.get(key).await?;
        if v.is_some() {
            perf.store_hits += 1;
        } else {
            perf.store_misses += 1;
        }
        Ok(v)
    }

    async fn set(&self, perf: &mut PagePerf, key: &str, value: &str) -> Result<(), StoreError> {
        self.store.set(key, value).await?;
        perf.store_sets += 1;
        Ok(())
    }

    /// The cached value of `key` in the application cache's definition
    /// `def`, or `build` it from the site's own data (`reads` reads) and
    /// cache it.
    async fn cached(
        &self,
        w: &mut Work,
        def: &'static str,
        key: &str,
        reads: u64,
        build: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let got = self.get(&mut w.perf, key).await?;
        let c = w.log.app.entry(def).or_default();
        if let Some(v) = got {
            c.hits += 1;
            c.bytes += v.len() as u64;
            return Ok(v);
        }
        c.misses += 1;
        w.perf.db_reads += reads;
        let reading = Instant::now();
        let v = build();
        w.perf.db_time_us += reading.elapsed().as_micros() as u64;
        self.set(&mut w.perf, key, &v).await?;
        let c = w.log.app.entry(def).or_default();
        c.sets += 1;
        c.bytes += v.len() as u64;
        Ok(v)
    }

    /// What every Moodle page reads from its caches before its own work
    /// (see [`footer`]); a logged-in user's navigation for this page too.
    async fn common_cache_work(
        &self,
        w: &mut Work,
        user: Option<&str>,
        path: &str,
    ) -> Result<(), StoreError> {
        for d in footer::EVERY_PAGE {
            for k in 0..d.keys {
                let key = format!("cache/{}/{k}", d.name);
                // Built from the site's configuration tables when missing.
                self.cached(w, d.name, &key, 1, || footer::value(&key, d.bytes))
                    .await?;
            }
        }
        if let Some(u) = user {
            let key = format!("cache/core/navigation_cache/{u}{path}");
            self.cached(w, "core/navigation_cache", &key, 2, || {
                footer::value(&key, 1_500)
            })
            .await?;
        }
        w.log.use_request_caches();
        Ok(())
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
        let started = Instant::now();
        match self.config.latency_model {
            LatencyModel::None => {}
            LatencyModel::ContendedLock { base, lock_hold } => {
                tokio::time::sleep(base).await;
                let _held = self.model_lock.lock().await;
                tokio::time::sleep(lock_hold).await;
            }
            LatencyModel::FlatCost { cost } => tokio::time::sleep(cost).await,
        }
        let mut work = Work::default();
        let mut set_cookie = None;
        let page = match self
            .page(
                &mut work,
                &mut set_cookie,
                method,
                path,
                query,
                form,
                cookie,
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                self.stats.store_errors.fetch_add(1, Ordering::SeqCst);
                tracing::warn!("{e}");
                Page::status(StatusCode::INTERNAL_SERVER_ERROR, &format!("<p>{e}</p>"))
            }
        };
        // The footer's application-store row, and its Total row.
        let app = work.log.app_total();
        let req = work.log.request_total();
        let mut perf = work.perf;
        (perf.app_hits, perf.app_misses, perf.app_sets) = (app.hits, app.misses, app.sets);
        perf.cache_hits = app.hits + req.hits;
        perf.cache_misses = app.misses + req.misses;
        perf.cache_sets = app.sets + req.sets;
        perf.time_used_us = started.elapsed().as_micros() as u64;
        let footer = page.location.is_none();
        self.stats.add(path, &perf, footer);
        let mut body = page.body;
        if footer {
            body.push_str(&self.footer(&perf, &work.log));
        }
        let mut r = status(page.code, &body);
        if let Some(to) = page.location
            && let Ok(v) = HeaderValue::from_str(&to)
        {
            r.headers_mut().insert(LOCATION, v);
        }
        finish(r, set_cookie)
    }

    /// Moodle 4.5's performance information, in its wording and classes,
    /// with what this page did.
    fn footer(&self, p: &PagePerf, log: &footer::CacheLog) -> String {
        let names = match &self.config.store {
            StoreSpec::File(_) => footer::StoreNames {
                instance: "default_application",
                plugin: "cachestore_file",
                session_handler: "core\\session\\file",
            },
            StoreSpec::Redis(_) => footer::StoreNames {
                instance: "redis_app",
                plugin: "cachestore_redis",
                session_handler: "core\\session\\redis",
            },
            // The test site's own in-process store: not a Moodle plugin.
            StoreSpec::Memory => footer::StoreNames {
                instance: "memory_app",
                plugin: "cachestore_memory",
                session_handler: "core\\session\\memory",
            },
        };
        let figures = footer::Figures {
            time_used_us: p.time_used_us,
            db_reads: p.db_reads,
            db_writes: p.db_writes,
            db_time_us: p.db_time_us,
            session_bytes: p.session_bytes,
            memory_bytes: resident_bytes(),
            load1: load_average(),
        };
        footer::render(&figures, log, &names)
    }

    #[allow(clippy::too_many_arguments)]
    async fn page(
        &self,
        w: &mut Work,
        set_cookie: &mut Option<String>,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        form: &HashMap<String, String>,
        cookie: Option<&HeaderValue>,
    ) -> Result<Page, StoreError> {
        let presented = cookie
            .and_then(|c| c.to_str().ok())
            .and_then(|c| {
                c.split(';')
                    .filter_map(|kv| kv.trim().split_once('='))
                    .find(|(k, _)| *k == "MoodleSession")
                    .map(|(_, v)| v.to_string())
            })
            .filter(|sid| !sid.is_empty() && sid.bytes().all(|b| b.is_ascii_alphanumeric()));
        let mut found = None;
        if let Some(sid) = presented
            && let Some(s) = self.get(&mut w.perf, &format!("session/{sid}")).await?
        {
            found = Some((sid, Session::decode(&s)));
        }
        let (mut sid, mut session, new) = match found {
            Some((sid, s)) => (sid, s, false),
            None => (self.token(), Session::default(), true),
        };
        if new {
            *set_cookie = Some(session_cookie(&sid));
        }
        let before = session.clone();
        // What happens to the session at the end of the page.
        let mut ended = false;
        let mut replaced: Option<String> = None;
        self.common_cache_work(w, session.user.as_deref(), path)
            .await?;
        let page = self
            .route(
                w,
                &mut session,
                &mut ended,
                &mut replaced,
                method,
                path,
                query,
                form,
            )
            .await?;
        if ended {
            self.store.delete(&format!("session/{sid}")).await?;
            *set_cookie = Some(
                "MoodleSession=deleted; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT".to_string(),
            );
        } else {
            if let Some(new_sid) = replaced {
                // As Moodle does, a login starts a new session id.
                self.store.delete(&format!("session/{sid}")).await?;
                sid = new_sid;
                *set_cookie = Some(session_cookie(&sid));
            }
            let encoded = session.encode();
            w.perf.session_bytes = encoded.len() as u64;
            if new || session != before || set_cookie.is_some() {
                self.set(&mut w.perf, &format!("session/{sid}"), &encoded)
                    .await?;
            }
        }
        Ok(page)
    }

    #[allow(clippy::too_many_arguments)]
    async fn route(
        &self,
        w: &mut Work,
        session: &mut Session,
        ended: &mut bool,
        replaced: &mut Option<String>,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        form: &HashMap<String, String>,
    ) -> Result<Page, StoreError> {
        let c = &self.config;
        let q = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
        let f = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let logged = session.user.clone();
        let needs_login = !matches!(path, "/" | "/login/index.php" | "/login/logout.php");
        if needs_login && logged.is_none() {
            self.stats.redirects_to_login.fetch_add(1, Ordering::SeqCst);
            return Ok(Page::redirect("/login/index.php"));
        }
        let page = match (method, path) {
            (&Method::GET, "/") => {
                let name = self
                    .cached(w, "core/frontpage", "site/frontpage", 1, || {
                        "Moodle testbed".to_string()
                    })
                    .await?;
                match &logged {
                    Some(u) => Page::html(format!(
                        "<h1>{name}</h1><p>You are logged in as {u}</p>\
                         <a href=\"/course/view.php?id={}\">Course</a>\
                         <a href=\"/login/logout.php?sesskey={}\">Log out</a>",
                        c.course, session.sesskey
                    )),
                    None => Page::html(format!(
                        "<h1>{name}</h1><p>You are not logged in. \
                         <a href=\"/login/index.php\">Log in</a></p>"
                    )),
                }
            }
            (&Method::GET, "/login/index.php") => {
                session.logintoken = self.token();
                Page::html(format!(
                    "<h1>Log in</h1><form method=\"post\" action=\"/login/index.php\">\
                     <input type=\"hidden\" name=\"logintoken\" value=\"{}\">\
                     <input name=\"username\"><input type=\"password\" name=\"password\">\
                     <button>Log in</button></form>",
                    session.logintoken
                ))
            }
            (&Method::POST, "/login/index.php") => {
                // The user's record.
                w.perf.db_reads += 1;
                let username = f("username");
                let ok = !session.logintoken.is_empty()
                    && f("logintoken") == session.logintoken
                    && !username.is_empty()
                    && !username.contains(['\n', '\r'])
                    && f("password") == password_for(username);
                // A token is good for one attempt.
                session.logintoken.clear();
                if !ok {
                    self.stats.failed_logins.fetch_add(1, Ordering::SeqCst);
                    Page::redirect("/login/index.php?errorcode=3")
                } else {
                    // The user's last login.
                    w.perf.db_writes += 1;
                    *self
                        .stats
                        .logins
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(username.to_string())
                        .or_default() += 1;
                    *session = Session {
                        user: Some(username.to_string()),
                        sesskey: self.token()[..10].to_string(),
                        ..Session::default()
                    };
                    *replaced = Some(self.token());
                    Page::redirect("/")
                }
            }
            (&Method::GET, "/login/logout.php") => {
                if logged.is_some() && q("sesskey") == session.sesskey {
                    // The logout event in the log.
                    w.perf.db_writes += 1;
                    *ended = true;
                    self.stats.logouts.fetch_add(1, Ordering::SeqCst);
                    Page::redirect("/")
                } else {
                    Page::html("<p>Do you really want to log out?</p>".to_string())
                }
            }
            (&Method::GET, "/course/view.php") if q("id") == c.course.to_string() => {
                // The course and its two modules.
                let modinfo = self
                    .cached(
                        w,
                        "core/coursemodinfo",
                        &format!("course/{}/modinfo", c.course),
                        3,
                        || format!("page={};forum={}", c.page_cmid, c.forum_cmid),
                    )
                    .await?;
                Page::html(format!(
                    "<h1>Course {course}</h1>\
                     <a href=\"/course/view.php?id={course}&amp;sesskey={sk}\">Edit</a>\
                     <a href=\"/login/logout.php?sesskey={sk}\">Log out</a>\
                     <a href=\"/mod/page/view.php?id={page}\">Page</a>\
                     <a href=\"/mod/forum/view.php?id={forum}\">Forum</a><!-- {modinfo} -->",
                    course = c.course,
                    sk = session.sesskey,
                    page = c.page_cmid,
                    forum = c.forum_cmid,
                ))
            }
            (&Method::GET, "/mod/page/view.php") if q("id") == c.page_cmid.to_string() => {
                let content = self
                    .cached(
                        w,
                        "mod_page/content",
                        &format!("page/{}", c.page_cmid),
                        1,
                        || "<p>Some reading for the course.</p>".to_string(),
                    )
                    .await?;
                Page::html(format!("<h1>A page</h1>{content}"))
            }
            (&Method::GET, "/mod/forum/view.php") if q("id") == c.forum_cmid.to_string() => {
                let list = self
                    .cached(
                        w,
                        "mod_forum/discussions",
                        &format!("forum/{}/discussions", c.forum_cmid),
                        1,
                        || c.discussion.to_string(),
                    )
                    .await?;
                Page::html(format!(
                    "<h1>Forum</h1><a href=\"/mod/forum/discuss.php?d={list}\">A discussion</a>"
                ))
            }
            (&Method::GET, "/mod/forum/discuss.php") if q("d") == c.discussion.to_string() => {
                let replies = self
                    .cached(
                        w,
                        "mod_forum/discussion",
                        &format!("discussion/{}", c.discussion),
                        1,
                        || self.stats.replies().to_string(),
                    )
                    .await?;
                Page::html(format!(
                    "<h1>Discussion</h1><p>{replies} replies</p>\
                     <a href=\"/mod/forum/post.php?reply={}\">Reply</a>",
                    c.post
                ))
            }
            (&Method::GET, "/mod/forum/post.php") if q("reply") == c.post.to_string() => {
                // The post replied to.
                w.perf.db_reads += 1;
                let draft =
                    (self.counter.load(Ordering::Relaxed) % 900_000_000 + 100_000_000).to_string();
                session.draft = Some(draft.clone());
                // Moodle 4.5's reply form: no `userid` input.
                Page::html(format!(
                    "<form method=\"post\" action=\"/mod/forum/post.php\">\
                     <input name=\"sesskey\" type=\"hidden\" value=\"{sk}\">\
                     <input value=\"{d2}\" name=\"attachments\" type=\"hidden\">\
                     <input type=\"hidden\" name=\"message[itemid]\" value=\"{draft}\">\
                     <input name=\"subject\"><textarea name=\"message[text]\"></textarea>\
                     <input type=\"submit\" name=\"submitbutton\" value=\"Post to forum\"></form>",
                    sk = session.sesskey,
                    d2 = draft.len() + 1,
                ))
            }
            (&Method::POST, "/mod/forum/post.php") => {
                let ok = f("sesskey") == session.sesskey
                    && session.draft.as_deref() == Some(f("message[itemid]"))
                    && f("_qf__mod_forum_post_form") == "1"
                    && f("reply") == c.post.to_string()
                    && !f("subject").is_empty()
                    && !f("message[text]").is_empty();
                if ok {
                    // The parent post read; the reply and the discussion's
                    // modification time written; the discussion's cached
                    // page invalidated.
                    w.perf.db_reads += 1;
                    w.perf.db_writes += 2;
                    session.draft = None;
                    self.stats.replies.fetch_add(1, Ordering::SeqCst);
                    self.store
                        .delete(&format!("discussion/{}", c.discussion))
                        .await?;
                    Page::redirect(&format!("/mod/forum/discuss.php?d={}", c.discussion))
                } else {
                    self.stats.rejected_posts.fetch_add(1, Ordering::SeqCst);
                    Page::status(
                        StatusCode::FORBIDDEN,
                        "<p>Invalid sesskey or form; your session may have timed out.</p>",
                    )
                }
            }
            (&Method::GET, "/user/index.php") if q("id") == c.course.to_string() => {
                let people = self
                    .cached(
                        w,
                        "core/participants",
                        &format!("course/{}/participants", c.course),
                        1,
                        || "<tr><td>Someone</td></tr>".to_string(),
                    )
                    .await?;
                Page::html(format!("<h1>Participants</h1><table>{people}</table>"))
            }
            _ => Page::status(StatusCode::NOT_FOUND, "<p>Not found</p>"),
        };
        // Moodle's header on every page of a logged-in user: the user menu,
        // whose toggle Moodle's own test plan looks for after logging in.
        let mut page = page;
        if let Some(u) = session.user.as_deref()
            && page.code == StatusCode::OK
            && !*ended
        {
            page.body = format!(
                "<nav class=\"usermenu\"><a id=\"user-menu-toggle\" href=\"#\" aria-label=\"User menu\">{u}</a></nav>{}",
                page.body
            );
        }
        Ok(page)
    }
}

/// This process's resident memory, bytes (`/proc/self/statm`; 0 elsewhere).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// The host's one-minute load average (`/proc/loadavg`; 0 elsewhere).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn session_cookie(sid: &str) -> String {
    format!("MoodleSession={sid}; Path=/; HttpOnly")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_survives_its_encoding() {
        let s = Session {
            user: Some("u1".into()),
            logintoken: String::new(),
            sesskey: "abc".into(),
            draft: Some("123".into()),
        };
        assert_eq!(Session::decode(&s.encode()), s);
        assert_eq!(
            Session::decode(&Session::default().encode()),
            Session::default()
        );
    }
}
