//! Moodle 4.5's performance footer, and the cache work behind it.
//!
//! Every page of the site does the application-cache work a Moodle page
//! does, through the real store: it reads about 125 keys of a dozen
//! definitions (configuration, language strings, capabilities, database
//! metadata…), values of realistic size (hundreds of bytes to 14 KB), and
//! misses the keys nobody has cached yet (a user's first visit of a page;
//! a discussion a reply invalidated). It also uses request caches (in the
//! process, never the store), about 700 reads a page. The footer then
//! prints, as Moodle 4.5 does, a list of what the page used and two tables:
//! one row per cache definition, one row per store with a `Total` row.
//! Measured on a real Moodle 4.5 at 20–40 users: 120–130 application-store
//! reads and 1–2 misses per page, 700–1,900 reads over all caches.

use std::collections::BTreeMap;

/// One application cache definition every page reads: its name, how many
/// keys a page reads, and the size of each value.
pub struct Definition {
    pub name: &'static str,
    pub keys: u32,
    pub bytes: usize,
}

/// What every page reads from the application cache: 124 keys.
pub const EVERY_PAGE: &[Definition] = &[
    Definition {
        name: "core/config",
        keys: 18,
        bytes: 400,
    },
    Definition {
        name: "core/string",
        keys: 40,
        bytes: 1_800,
    },
    Definition {
        name: "core/capabilities",
        keys: 4,
        bytes: 9_000,
    },
    Definition {
        name: "core/plugin_functions",
        keys: 10,
        bytes: 1_200,
    },
    Definition {
        name: "core/databasemeta",
        keys: 20,
        bytes: 3_500,
    },
    Definition {
        name: "core/htmlpurifier",
        keys: 2,
        bytes: 14_000,
    },
    Definition {
        name: "core/langmenu",
        keys: 1,
        bytes: 600,
    },
    Definition {
        name: "core/roledefs",
        keys: 6,
        bytes: 2_200,
    },
    Definition {
        name: "core/contextdata",
        keys: 12,
        bytes: 700,
    },
    Definition {
        name: "core/plugin_manager",
        keys: 8,
        bytes: 2_500,
    },
    Definition {
        name: "core/observers",
        keys: 3,
        bytes: 5_000,
    },
];

/// Request caches (kept in the page's process for the page only): each
/// definition's keys are read this many times a page; the first read of a
/// key misses and sets it.
pub const REQUEST: &[(&str, u32, u32)] = &[
    ("core/context_request", 8, 250),
    ("core/modinfo_request", 4, 120),
    ("core/string_request", 6, 150),
    ("core/capability_request", 2, 100),
];

/// A value of `bytes` bytes for `key`: text that compresses as poorly as a
/// serialized PHP structure would (no run of one character).
pub fn value(key: &str, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes);
    let mut z: u64 = key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789:;{}\"_";
    while out.len() < bytes {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        out.push(ALPHABET[(z % ALPHABET.len() as u64) as usize] as char);
    }
    out
}

/// How one cache definition fared on a page.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counts {
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    /// Bytes read and written (the I/O column).
    pub bytes: u64,
}

/// The page's cache use, per definition, as the footer's first table lists it.
#[derive(Debug, Default)]
pub struct CacheLog {
    /// Application cache, by definition.
    pub app: BTreeMap<&'static str, Counts>,
    /// Request caches, by definition.
    pub request: BTreeMap<&'static str, Counts>,
}

impl CacheLog {
    pub fn app_total(&self) -> Counts {
        sum(self.app.values())
    }

    pub fn request_total(&self) -> Counts {
        sum(self.request.values())
    }

    /// Does one page's request-cache work (real lookups in a map of its own).
    pub fn use_request_caches(&mut self) {
        for (name, keys, reads) in REQUEST {
            let mut held: std::collections::HashSet<u32> = std::collections::HashSet::new();
            let c = self.request.entry(name).or_default();
            for i in 0..*reads {
                let key = i % keys;
                if held.contains(&key) {
                    c.hits += 1;
                } else {
                    held.insert(key);
                    c.misses += 1;
                    c.sets += 1;
                }
            }
        }
    }
}

fn sum<'a>(it: impl Iterator<Item = &'a Counts>) -> Counts {
    it.fold(Counts::default(), |mut t, c| {
        t.hits += c.hits;
        t.misses += c.misses;
        t.sets += c.sets;
        t.bytes += c.bytes;
        t
    })
}

/// `1.2KB`, as Moodle's `display_size` prints the I/O column.
fn size(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else if bytes < 1024 {
        format!("{bytes}B")
    } else {
        format!("{:.1}KB", bytes as f64 / 1024.0)
    }
}

/// The store as the footer names it: its instance and its plugin.
pub struct StoreNames {
    pub instance: &'static str,
    pub plugin: &'static str,
    /// The session handler's class, as the session size item names it.
    pub session_handler: &'static str,
}

/// What the page did besides its cache use.
pub struct Figures {
    pub time_used_us: u64,
    pub db_reads: u64,
    pub db_writes: u64,
    /// Time spent reading the site's own data.
    pub db_time_us: u64,
    pub session_bytes: u64,
    /// The site process's resident memory, bytes.
    pub memory_bytes: u64,
    /// The host's one-minute load average.
    pub load1: f64,
}

fn cell(i: usize, text: &str) -> String {
    format!("<td class=\"cell c{i}\">{text}</td>")
}

fn row(class: &str, cells: &[String]) -> String {
    let mut r = format!("<tr class=\"{class}\">");
    for (i, c) in cells.iter().enumerate() {
        r.push_str(&cell(i, c));
    }
    r.push_str("</tr>\n");
    r
}

fn head(names: &[&str]) -> String {
    let mut h = String::from("<thead><tr>");
    for (i, n) in names.iter().enumerate() {
        h.push_str(&format!("<th class=\"header c{i}\" scope=\"col\">{n}</th>"));
    }
    h.push_str("</tr></thead>\n");
    h
}

/// The footer, in Moodle 4.5's structure: the list, then the cache tables.
pub fn render(f: &Figures, log: &CacheLog, store: &StoreNames) -> String {
    let mut out = format!(
        "<div class=\"performanceinfo pageinfo\"><ul class=\"list-unstyled\">\n\
         <li class=\"timeused\">{}.{:06} secs</li>\n\
         <li class=\"memoryused\">RAM: {:.1} MB</li>\n\
         <li class=\"dbqueries\">DB reads/writes: {}/{}</li>\n\
         <li class=\"dbtime\">DB queries time: {}.{:06} secs</li>\n\
         <li class=\"serverload\">Load average: {:.2}</li>\n\
         <li class=\"serverload sessionsize\">Session ({}): {}</li>\n\
         </ul>\n",
        f.time_used_us / 1_000_000,
        f.time_used_us % 1_000_000,
        f.memory_bytes as f64 / 1_048_576.0,
        f.db_reads,
        f.db_writes,
        f.db_time_us / 1_000_000,
        f.db_time_us % 1_000_000,
        f.load1,
        store.session_handler,
        if f.session_bytes < 1024 {
            format!("{} bytes", f.session_bytes)
        } else {
            format!("{:.1} KB", f.session_bytes as f64 / 1024.0)
        },
    );
    // One row per definition.
    out.push_str("<table class=\"cachesused table table-bordered table-sm w-auto\">\n");
    out.push_str(&head(&[
        "Mode",
        "Cache item",
        "Static",
        "H",
        "M",
        "Primary store",
        "H",
        "M",
        "S",
        "I/O",
    ]));
    out.push_str("<tbody>\n");
    for (mode, title, defs, instance) in [
        ("App", "application cache", &log.app, store.instance),
        ("Req", "request cache", &log.request, "default_request"),
    ] {
        for (name, c) in defs {
            out.push_str(&row(
                "",
                &[
                    format!("<abbr title=\"{title}\">{mode}</abbr>"),
                    (*name).to_string(),
                    "-".into(),
                    c.hits.to_string(),
                    c.misses.to_string(),
                    instance.to_string(),
                    c.hits.to_string(),
                    c.misses.to_string(),
                    c.sets.to_string(),
                    size(c.bytes),
                ],
            ));
        }
    }
    out.push_str("</tbody></table>\n");
    // One row per store, and the total.
    let app = log.app_total();
    let req = log.request_total();
    let total = sum([app, req].iter());
    out.push_str("<table class=\"cachesused table table-bordered table-sm w-auto\">\n");
    out.push_str(&head(&["Store name", "Cache store", "H", "M", "S", "I/O"]));
    out.push_str("<tbody>\n");
    for (class, name, plugin, c) in [
        ("", store.instance, store.plugin, app),
        ("", "default_request", "cachestore_static", req),
        ("", "** static accel. **", "", Counts::default()),
        ("lastrow", "Total", "", total),
    ] {
        out.push_str(&row(
            class,
            &[
                name.to_string(),
                plugin.to_string(),
                c.hits.to_string(),
                c.misses.to_string(),
                c.sets.to_string(),
                size(c.bytes),
            ],
        ));
    }
    out.push_str("</tbody></table></div>");
    out
}
