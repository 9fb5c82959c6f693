//! What the client takes from a response, whichever protocol brought it:
//! cookies, the redirect's `Location`, the body's coding, and the headers
//! and body a step asked to keep (decoded when it came compressed).

use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue};

use crate::cookies::CookieJar;
use crate::encoding::{BodyDecoder, Coding};

/// Reads a response head's headers as they are parsed.
pub(super) struct HeadReader<'a> {
    cookies: &'a mut CookieJar,
    location: &'a mut String,
    /// The host and path the request went to, for the cookies it sets.
    host: &'a str,
    path: &'a str,
    keep_headers: bool,
    now: Option<SystemTime>,
    /// The headers kept (only when the step asked for them).
    pub(super) kept: http::HeaderMap,
    pub(super) coding: Coding,
    /// `Keep-Alive: timeout=N`: how long the server keeps an idle
    /// connection (HTTP/1.1).
    pub(super) idle_timeout: Option<Duration>,
}

impl<'a> HeadReader<'a> {
    /// Clears the last response's `Location`.
    pub(super) fn new(
        cookies: &'a mut CookieJar,
        location: &'a mut String,
        (host, path): (&'a str, &'a str),
        keep_headers: bool,
    ) -> HeadReader<'a> {
        location.clear();
        HeadReader {
            cookies,
            location,
            host,
            path,
            keep_headers,
            now: None,
            kept: http::HeaderMap::new(),
            coding: Coding::Identity,
            idle_timeout: None,
        }
    }

    /// One header of the response. Inlined into each protocol's reader (as
    /// the closure it replaced was): called out of line, it cost 141
    /// instructions per HTTP/1.1 request (callgrind, `bench/callgrind.sh`).
    #[inline(always)]
    pub(super) fn header(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("set-cookie") {
            if let Ok(v) = std::str::from_utf8(value) {
                let now = *self.now.get_or_insert_with(SystemTime::now);
                self.cookies.store(v, self.host, self.path, now);
            }
        } else if name.eq_ignore_ascii_case("location") {
            self.location.push_str(&String::from_utf8_lossy(value));
        } else if name.eq_ignore_ascii_case("content-encoding") {
            self.coding = Coding::of(value);
        } else if name.eq_ignore_ascii_case("keep-alive") {
            self.idle_timeout = keep_alive_timeout(value);
        }
        if self.keep_headers
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            )
        {
            self.kept.append(n, v);
        }
    }
}

/// The part of a response body kept for checks and extraction, as it
/// arrives.
pub(super) struct KeptBody<'a> {
    kept: &'a mut Vec<u8>,
    limit: usize,
    keep: bool,
    /// Something did not fit under the limit.
    cut: bool,
}

impl<'a> KeptBody<'a> {
    /// Empties `kept` when the body is to be kept.
    pub(super) fn new(kept: &'a mut Vec<u8>, limit: usize, keep: bool) -> KeptBody<'a> {
        if keep {
            kept.clear();
        }
        KeptBody {
            kept,
            limit,
            keep,
            cut: false,
        }
    }

    /// The body's next bytes: as much as the limit leaves room for.
    #[inline(always)]
    pub(super) fn part(&mut self, data: &[u8]) {
        if self.keep {
            let room = self.limit.saturating_sub(self.kept.len());
            self.cut |= data.len() > room;
            self.kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    /// Decodes the kept body when it came compressed (using `decoded` as
    /// room) and counts its decoded bytes. Returns why it could not be
    /// decoded, if so, and the limit it was cut at, if it was.
    pub(super) fn finish(
        self,
        decoder: &mut BodyDecoder,
        coding: Coding,
        decoded: &mut Vec<u8>,
        decoded_bytes: &mut u64,
    ) -> (Option<String>, Option<usize>) {
        if !self.keep {
            return (None, None);
        }
        let mut cut = self.cut;
        if coding != Coding::Identity {
            match decoder.decode(coding, self.kept, decoded, self.limit) {
                Ok(more) => {
                    std::mem::swap(self.kept, decoded);
                    cut = more;
                }
                // Cut on the wire, its end could not be decoded: what was is kept.
                Err(_) if cut => std::mem::swap(self.kept, decoded),
                Err(e) => return (Some(e), None),
            }
        }
        *decoded_bytes += self.kept.len() as u64;
        (None, cut.then_some(self.limit))
    }
}

/// `timeout=N` of a `Keep-Alive` response header: how long the server keeps
/// an idle connection open.
fn keep_alive_timeout(value: &[u8]) -> Option<Duration> {
    value.split(|&b| b == b',').find_map(|param| {
        let (k, v) = std::str::from_utf8(param).ok()?.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let secs: u32 = v.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(u64::from(secs)))
    })
}
