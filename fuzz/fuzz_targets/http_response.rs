//! Any bytes a target server could send, read by the agent's HTTP/1.1
//! connection: heads, bodies (length, chunked, to the close), interim
//! responses, several responses on one connection. It must return a
//! response or an error, never panic, and a `Content-Length` body must be
//! exactly that long.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use loadfleet_agent::client::h1::{Conn, Framing};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The server's bytes, handed out at most `piece` at a time, so heads and
/// chunk lines arrive split; what the client writes is discarded.
struct Server<'a> {
    data: &'a [u8],
    piece: usize,
}

impl AsyncRead for Server<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.piece.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Server<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte picks the read size and whether the request was HEAD.
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let piece = usize::from(first & 0x3f) * 97 + 1;
    let head_request = first & 0x80 != 0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut conn = Conn::new(Server { data, piece });
        for _ in 0..4 {
            if conn.send(b"GET / HTTP/1.1\r\n\r\n", b"").await.is_err() {
                return;
            }
            let Ok(head) = conn.read_head(head_request, |_, _| {}).await else {
                return;
            };
            let mut got = 0u64;
            if conn
                .read_body(head.framing, |d| got += d.len() as u64)
                .await
                .is_err()
            {
                return;
            }
            if let Framing::Length(n) = head.framing {
                assert_eq!(got, n, "a Content-Length body of another length");
            }
            if !head.keep_alive {
                return;
            }
        }
    });
});
