//! One HTTP/1.1 client connection, owned by the virtual user that sends on
//! it: no connection task, no request channel, one read buffer sized to the
//! traffic. The user writes a request and reads its response in the same
//! task, so a request costs a write, a read or two and a header parse.
//!
//! Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and
//! 304; chunked when the last transfer coding is chunked; otherwise
//! `Content-Length`; otherwise until the server closes.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::failure::{ErrorKind, Failure};

/// Each connection's own read buffer: a response head and a small body fit.
/// It grows only for a larger head.
const OWN_BUFFER: usize = 2 << 10;
/// A body that fills the connection's own buffer is read through a large
/// buffer lent by its worker's pool for the rest of the response, so idle
/// connections hold only their small one.
const LARGE_BUFFER: usize = 64 << 10;
/// Large buffers a worker keeps for reuse; more are freed when returned.
const POOL_MAX: usize = 64;

thread_local! {
    /// This worker thread's large buffers not lent to a connection.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Large buffers waiting in this thread's pool.
pub fn pooled_buffers() -> usize {
    POOL.with_borrow(Vec::len)
}
/// A response head (status line and headers) larger than this is refused.
pub const MAX_HEAD: usize = 64 << 10;
/// Headers in one response head.
const MAX_HEADERS: usize = 100;
/// A chunk-size line or a trailer section larger than this is refused.
const MAX_CHUNK_LINE: usize = 4 << 10;

/// A plain or TLS byte stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

impl Head {
    /// A 1xx response other than 101: another head follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses a response head at the start of `bytes`. `Ok(None)`: incomplete.
/// `on_header` sees every header of a complete head, in order, unless the
/// head is an interim (1xx) one.
pub fn parse_head(
    bytes: &[u8],
    request_was_head: bool,
    mut on_header: impl FnMut(&str, &[u8]),
) -> Result<Option<Head>, Failure> {
    // Left uninitialised: parsing writes only the headers it finds.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        bytes,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Failure::new(
                ErrorKind::Protocol,
                format!("malformed response head: {e}"),
            ));
        }
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    let interim = (100..200).contains(&status) && status != 101;
    for h in resp.headers.iter() {
        if !interim {
            on_header(h.name, h.value);
        }
        let name = h.name.as_bytes();
        if is_token(name, b"content-length") {
            let n = parse_content_length(h.value).ok_or_else(|| {
                Failure::new(
                    ErrorKind::Protocol,
                    format!(
                        "bad Content-Length `{}`",
                        String::from_utf8_lossy(&h.value[..h.value.len().min(40)])
                    ),
                )
            })?;
            if length.is_some_and(|m| m != n) {
                return Err(Failure::new(
                    ErrorKind::Protocol,
                    "conflicting Content-Length headers",
                ));
            }
            length = Some(n);
        } else if is_token(name, b"transfer-encoding") {
            transfer_encoded = true;
            // Only the last coding decides whether the body is chunked.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| is_token(last.trim_ascii(), b"chunked"));
        } else if is_token(name, b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if is_token(token, b"close") {
                    keep_alive = false;
                } else if resp.version == Some(0) && is_token(token, b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if request_was_head || (100..200).contains(&status) || matches!(status, 204 | 304)
    {
        Framing::Empty
    } else if transfer_encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    if framing == Framing::Close || (transfer_encoded && length.is_some()) || status == 101 {
        keep_alive = false;
    }
    Ok(Some(Head {
        status,
        framing,
        keep_alive,
        len,
    }))
}

/// Whether `token` is `lower` in any case. `lower` is lowercase letters and
/// `-` only, and `token` comes from a parsed head (no CR or LF), so setting
/// bit 5 of each byte folds case exactly: only CR (0x0D) would fold onto `-`.
/// No early exit, so the compiler can compare many bytes at once; this runs
/// for every header of every response.
fn is_token(token: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
    token.len() == lower.len()
        && token
            .iter()
            .zip(lower)
            .fold(0u8, |diff, (&b, &l)| diff | ((b | 0x20) ^ l))
            == 0
}

/// A `Content-Length` value: digits, or a list of identical ones.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|m| m != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// An open connection and what it has read but not yet consumed. `S` is
/// the byte stream: [`Stream`] in the agent, anything else in fuzzing.
pub struct Conn<S = Stream> {
    io: S,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The connection's own buffer while `buf` is a large one lent by the pool.
    own: Option<Vec<u8>>,
    /// How long it may stay idle before the server closes it, from the
    /// server's `Keep-Alive: timeout=N` (less a margin), and since when it
    /// is idle; `None` when the server did not say.
    idle: Option<(std::time::Duration, std::time::Instant)>,
    /// Bytes of responses read since [`Conn::take_received`] (after TLS).
    received: u64,
    /// The last chunked body's trailer lines (`Name: value\r\n` each),
    /// its capacity kept from response to response.
    trailers: Vec<u8>,
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        self.give_back();
        crate::vitals::OPEN_CONNECTIONS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<S> Conn<S> {
    /// Returns a lent large buffer to the pool, keeping unconsumed bytes.
    fn give_back(&mut self) {
        let Some(mut own) = self.own.take() else {
            return;
        };
        let pending = self.end - self.start;
        if own.len() < pending {
            own.resize(pending, 0);
        }
        own[..pending].copy_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = pending;
        let large = std::mem::replace(&mut self.buf, own);
        // The pool is gone when the thread is ending: then the buffer is freed.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(large);
            }
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(io: S) -> Conn<S> {
        crate::vitals::OPEN_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Conn {
            io,
            buf: vec![0; OWN_BUFFER],
            start: 0,
            end: 0,
            own: None,
            idle: None,
            received: 0,
            trailers: Vec::new(),
        }
    }

    /// The trailer lines of the last response's chunked body (empty when
    /// it had none), each `Name: value\r\n`.
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// Response bytes read since the last call (heads and bodies as they
    /// came, after TLS decryption).
    pub fn take_received(&mut self) -> u64 {
        std::mem::take(&mut self.received)
    }

    /// After a response: the server keeps an idle connection open for
    /// `timeout` (its `Keep-Alive: timeout=N`), or did not say (`None`).
    /// It is not reused once 90% of that has passed, so a request does not
    /// race the server's close.
    pub fn idle_from_now(&mut self, timeout: Option<std::time::Duration>) {
        self.idle = timeout.map(|t| (t.mul_f64(0.9), std::time::Instant::now()));
    }

    /// Bytes of read buffer this connection holds.
    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether an idle connection can no longer be used: the server closed
    /// it (or reset it), sent bytes nobody asked for (often a 408 before
    /// closing), or it has been idle for nearly as long as the server said
    /// it would keep it. Never waits; costs nothing while the socket is not
    /// readable.
    pub fn is_stale(&mut self) -> bool {
        if self.start != self.end {
            return true;
        }
        if let Some((limit, since)) = self.idle
            && since.elapsed() >= limit
        {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut rb = ReadBuf::new(&mut self.buf);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut rb)
            .is_ready()
    }

    /// Writes a request: its head and body.
    pub async fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(), Failure> {
        self.io.write_all(head).await.map_err(Failure::io)?;
        if !body.is_empty() {
            self.io.write_all(body).await.map_err(Failure::io)?;
        }
        self.io.flush().await.map_err(Failure::io)
    }

    /// Reads the final response head (skipping 1xx interim responses other
    /// than 101), handing each header to `on_header`. Errors of kind
    /// `Reset` with `true` mean the server closed before sending a byte.
    pub async fn read_head(
        &mut self,
        request_was_head: bool,
        mut on_header: impl FnMut(&str, &[u8]),
    ) -> Result<Head, (Failure, bool)> {
        let mut received = false;
        loop {
            // Nothing buffered yet (the usual case right after a request):
            // read before parsing.
            let parsed = if self.start == self.end {
                None
            } else {
                parse_head(
                    &self.buf[self.start..self.end],
                    request_was_head,
                    &mut on_header,
                )
                .map_err(|f| (f, false))?
            };
            match parsed {
                Some(head) if head.is_interim() => self.start += head.len,
                Some(head) => {
                    self.start += head.len;
                    return Ok(head);
                }
                None => {
                    if self.end - self.start >= MAX_HEAD {
                        return Err((
                            Failure::new(
                                ErrorKind::Protocol,
                                format!("response head larger than {} KiB", MAX_HEAD >> 10),
                            ),
                            false,
                        ));
                    }
                    let n = self.fill(MAX_HEAD).await.map_err(|f| (f, !received))?;
                    if n == 0 {
                        let what = if received || self.start != self.end {
                            "the server closed the connection in the middle of a response head"
                        } else {
                            "the server closed the connection without responding"
                        };
                        let empty = !received && self.start == self.end;
                        return Err((Failure::new(ErrorKind::Reset, what), empty));
                    }
                    received = true;
                }
            }
        }
    }

    /// Reads a body framed as `framing`, handing its bytes to `sink`.
    pub async fn read_body(
        &mut self,
        framing: Framing,
        sink: impl FnMut(&[u8]),
    ) -> Result<(), Failure> {
        self.trailers.clear();
        let read = self.read_framed(framing, sink).await;
        self.give_back();
        read
    }

    async fn read_framed(
        &mut self,
        framing: Framing,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), Failure> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) => self.take(n, &mut sink).await,
            Framing::Close => loop {
                if self.start == self.end && self.fill_for_body().await? == 0 {
                    return Ok(());
                }
                sink(&self.buf[self.start..self.end]);
                self.start = self.end;
            },
            Framing::Chunked => {
                loop {
                    let size = loop {
                        match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                            Ok(httparse::Status::Complete((used, size))) => {
                                self.start += used;
                                break size;
                            }
                            Ok(httparse::Status::Partial) => {
                                if self.end - self.start > MAX_CHUNK_LINE {
                                    return Err(Failure::new(
                                        ErrorKind::Protocol,
                                        "chunk-size line too long",
                                    ));
                                }
                                self.more(MAX_CHUNK_LINE * 2).await?;
                            }
                            Err(_) => {
                                return Err(Failure::new(ErrorKind::Protocol, "bad chunk size"));
                            }
                        }
                    };
                    if size == 0 {
                        break;
                    }
                    self.take(size, &mut sink).await?;
                    while self.end - self.start < 2 {
                        self.more(MAX_CHUNK_LINE * 2).await?;
                    }
                    if &self.buf[self.start..self.start + 2] != b"\r\n" {
                        return Err(Failure::new(
                            ErrorKind::Protocol,
                            "chunk data not followed by CRLF",
                        ));
                    }
                    self.start += 2;
                }
                self.skip_trailers().await
            }
        }
    }

    /// Reads the trailer section after the last chunk, up to its blank
    /// line, into [`Conn::trailers`].
    async fn skip_trailers(&mut self) -> Result<(), Failure> {
        let mut skipped = 0;
        loop {
            match self.buf[self.start..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                Some(0) => {
                    self.start += 2;
                    return Ok(());
                }
                Some(i) => {
                    self.trailers
                        .extend_from_slice(&self.buf[self.start..self.start + i + 2]);
                    self.start += i + 2;
                    skipped += i + 2;
                }
                None => self.more(MAX_CHUNK_LINE * 2).await?,
            }
            if skipped > MAX_CHUNK_LINE {
                return Err(Failure::new(
                    ErrorKind::Protocol,
                    "trailer section too long",
                ));
            }
        }
    }

    /// Consumes `n` body bytes.
    async fn take(&mut self, mut n: u64, sink: &mut impl FnMut(&[u8])) -> Result<(), Failure> {
        while n > 0 {
            if self.start == self.end && self.fill_for_body().await? == 0 {
                return Err(Failure::new(
                    ErrorKind::Reset,
                    "the server closed the connection before the body ended",
                ));
            }
            let k = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            sink(&self.buf[self.start..self.start + k]);
            self.start += k;
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads more bytes after what is buffered; an end of stream is an error.
    async fn more(&mut self, limit: usize) -> Result<(), Failure> {
        if self.fill(limit).await? == 0 {
            return Err(Failure::new(
                ErrorKind::Reset,
                "the server closed the connection in the middle of a response",
            ));
        }
        Ok(())
    }

    /// Reads into an emptied buffer; when a read fills the connection's own
    /// buffer, the rest of the response goes through a large one from the
    /// pool, so large bodies take fewer reads. Returns 0 at the end of the
    /// stream.
    async fn fill_for_body(&mut self) -> Result<usize, Failure> {
        debug_assert_eq!(self.start, self.end);
        self.start = 0;
        self.end = 0;
        let n = self.io.read(&mut self.buf).await.map_err(Failure::io)?;
        self.received += n as u64;
        self.end = n;
        if n == self.buf.len() && self.own.is_none() {
            self.borrow_large();
        }
        Ok(n)
    }

    /// Moves the unconsumed bytes into a large buffer from the pool.
    fn borrow_large(&mut self) {
        let mut large = POOL
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| vec![0; LARGE_BUFFER]);
        let pending = self.end - self.start;
        if pending > large.len() {
            return;
        }
        large[..pending].copy_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = pending;
        self.own = Some(std::mem::replace(&mut self.buf, large));
    }

    /// Reads more bytes after the unconsumed ones, making room by moving
    /// them to the front or growing the buffer to at most `limit` bytes (a
    /// protocol error when `limit` unconsumed bytes are not enough).
    /// Returns 0 at the end of the stream.
    async fn fill(&mut self, limit: usize) -> Result<usize, Failure> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() >= limit {
                // A head, chunk-size line or trailer section that does not
                // end within `limit` bytes.
                return Err(Failure::new(
                    ErrorKind::Protocol,
                    format!("a response line or head longer than {limit} bytes"),
                ));
            } else {
                let len = (self.buf.len() * 2).min(limit);
                self.buf.resize(len, 0);
            }
        }
        let n = self
            .io
            .read(&mut self.buf[self.end..])
            .await
            .map_err(Failure::io)?;
        self.received += n as u64;
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_token` folds case exactly: for every byte and every character a
    /// name is compared with, it matches the byte's lowercase form (and CR
    /// for `-`, which a parsed head cannot hold).
    #[test]
    fn is_token_folds_case_exactly() {
        for l in b"abcdefghijklmnopqrstuvwxyz-".iter().copied() {
            for b in 0..=255u8 {
                let expect = b.to_ascii_lowercase() == l || (l == b'-' && b == b'\r');
                assert_eq!(
                    is_token(&[b], &[l]),
                    expect,
                    "byte {b:#04x} against {:?}",
                    l as char
                );
            }
        }
        assert!(is_token(b"Content-Length", b"content-length"));
        assert!(is_token(b"CONNECTION", b"connection"));
        assert!(!is_token(b"Content_Length", b"content-length"));
        assert!(!is_token(b"Content-Lengths", b"content-length"));
        assert!(!is_token(b"", b"close"));
    }

    fn head(text: &str) -> Result<Option<Head>, Failure> {
        parse_head(text.as_bytes(), false, |_, _| {})
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello").unwrap();
        let h = h.unwrap();
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, Framing::Length(12), true)
        );
        assert_eq!(h.len, 39);

        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.unwrap().unwrap().framing, Framing::Chunked);
        // Chunked not last: the body runs to the close.
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        let h = h.unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        // Both: the transfer coding wins and the connection is not reused.
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        let h = h.unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));

        for status in ["204 No Content", "304 Not Modified"] {
            let h = head(&format!("HTTP/1.1 {status}\r\nContent-Length: 50\r\n\r\n"));
            assert_eq!(h.unwrap().unwrap().framing, Framing::Empty, "{status}");
        }
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
            true,
            |_, _| {},
        );
        assert_eq!(h.unwrap().unwrap().framing, Framing::Empty);

        let h = head("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.unwrap().unwrap().keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.unwrap().unwrap().keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n");
        assert!(h.unwrap().unwrap().keep_alive);
    }

    #[test]
    fn incomplete_and_malformed_heads() {
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert_eq!(head("").unwrap(), None);
        for bad in [
            "HTTP/1.1 20 OK\r\n\r\n",
            "SMTP ready\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            let e = head(bad).expect_err(bad);
            assert_eq!(e.kind, ErrorKind::Protocol, "{bad}: {}", e.message);
        }
        let same = head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n");
        assert_eq!(same.unwrap().unwrap().framing, Framing::Length(7));
    }

    #[test]
    fn headers_are_reported_in_order() {
        let mut seen = Vec::new();
        parse_head(
            b"HTTP/1.1 302 Found\r\nSet-Cookie: a=1\r\nLocation: /x\r\nSet-Cookie: b=2\r\n\r\n",
            false,
            |n, v| seen.push(format!("{n}={}", String::from_utf8_lossy(v))),
        )
        .unwrap()
        .unwrap();
        assert_eq!(seen, ["Set-Cookie=a=1", "Location=/x", "Set-Cookie=b=2"]);
    }
}
