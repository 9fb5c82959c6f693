//! The agent's HTTP/1.1 client against a scripted server on a real socket:
//! each test's server writes exact bytes (in pieces, when the test says so),
//! so framing, reuse and malformed responses are exercised on the wire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Uri};
use loadfleet_agent::assignment::{BodySpec, Keep, Step, Target};
use loadfleet_agent::client::{Reply, UserClient, prepare};
use loadfleet_agent::failure::{ErrorKind, Failure};
use loadfleet_agent::policy::Policy;
use loadfleet_agent::template::{Template, VarTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted server saw: connections accepted and the requests
/// (head and body bytes) read on each.
#[derive(Default)]
struct Seen {
    connections: usize,
    requests: Vec<Vec<u8>>,
}

/// How the server answers one request: the bytes, the size of the pieces
/// they are written in, and whether it closes the connection afterwards.
struct Answer {
    bytes: Vec<u8>,
    piece: usize,
    close: bool,
}

fn answer(bytes: impl Into<Vec<u8>>) -> Answer {
    Answer {
        bytes: bytes.into(),
        piece: usize::MAX,
        close: false,
    }
}

/// Starts a server on 127.0.0.1:0 that answers every request with what
/// `script` returns for it (given the request's index).
async fn server(
    script: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (Target, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let script = Arc::new(script);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            s.lock().unwrap().connections += 1;
            tokio::spawn(serve(conn, s.clone(), script.clone()));
        }
    });
    let target = Target::parse(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
    (target, seen)
}

async fn serve(
    mut conn: TcpStream,
    seen: Arc<Mutex<Seen>>,
    script: Arc<dyn Fn(usize) -> Answer + Send + Sync>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut conn, &mut buf).await else {
            return;
        };
        let index = {
            let mut s = seen.lock().unwrap();
            s.requests.push(request);
            s.requests.len() - 1
        };
        let a = script(index);
        for piece in a.bytes.chunks(a.piece.min(a.bytes.len().max(1))) {
            if conn.write_all(piece).await.is_err() {
                return;
            }
            conn.flush().await.unwrap();
            if a.piece < a.bytes.len() {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        if a.close {
            return;
        }
    }
}

/// One request: its head and a `content-length` body.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return Some(buf.drain(..end + 4 + len).collect());
            }
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn client(target: &Target) -> UserClient {
    UserClient::new(Arc::new(target.clone()), None, Arc::new(Policy::default()))
}

const ALL: Keep = Keep {
    body: true,
    headers: true,
};

async fn get(c: &mut UserClient, target: &Target, path: &str) -> Result<Reply, Failure> {
    let step = Step::fixed(0, Method::GET, path.parse::<Uri>().unwrap());
    let mut req = prepare(&step, &[], target).unwrap();
    c.execute(&mut req, 0, ALL).await
}

#[tokio::test]
async fn chunked_bodies_written_a_byte_at_a_time_keep_the_connection() {
    let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let (target, seen) = server(move |_| Answer {
        piece: 1,
        ..answer(&body[..])
    })
    .await;
    let mut c = client(&target);
    for _ in 0..3 {
        let reply = get(&mut c, &target, "/c").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(c.body(), b"hello world");
        // The trailer is a header the checks see, once per response.
        let trailers: Vec<_> = reply.headers.get_all("x-trailer").iter().collect();
        assert_eq!(trailers, ["t"], "{:?}", reply.headers);
    }
    let s = seen.lock().unwrap();
    assert_eq!((s.connections, s.requests.len()), (1, 3));
}

#[tokio::test]
async fn a_body_without_length_runs_to_the_close_and_the_next_request_reconnects() {
    let (target, seen) = server(|_| Answer {
        close: true,
        piece: 1000,
        ..answer([&b"HTTP/1.1 200 OK\r\n\r\n"[..], &[b'x'; 10_000]].concat())
    })
    .await;
    let mut c = client(&target);
    for _ in 0..2 {
        let reply = get(&mut c, &target, "/").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(c.body().len(), 10_000);
    }
    assert_eq!(seen.lock().unwrap().connections, 2);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let (target, _) = server(|_| {
        answer(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
             HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Id: 7\r\n\r\nok",
        )
    })
    .await;
    let mut c = client(&target);
    let reply = get(&mut c, &target, "/").await.unwrap();
    assert_eq!(reply.status, 201);
    assert_eq!(c.body(), b"ok");
    assert_eq!(reply.headers["x-id"], "7");
    assert!(reply.headers.get("link").is_none(), "{:?}", reply.headers);
}

#[tokio::test]
async fn a_large_body_is_read_through_a_pooled_buffer() {
    const LEN: usize = 3 << 20;
    let (target, seen) = server(|_| Answer {
        piece: 1 << 20,
        ..answer(
            [
                format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
                &vec![b'y'; LEN],
            ]
            .concat(),
        )
    })
    .await;
    let mut c = client(&target);
    for _ in 0..2 {
        let reply = get(&mut c, &target, "/big").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(c.body().len(), LEN);
    }
    // Between responses the connection holds only its own small buffer; the
    // large one went back to this thread's pool, and was reused.
    assert_eq!(c.buffered(), 2 << 10);
    assert_eq!(loadfleet_agent::client::h1::pooled_buffers(), 1);
    assert_eq!(seen.lock().unwrap().connections, 1);
}

#[tokio::test]
async fn connections_the_server_closed_while_idle_are_replaced_before_sending() {
    // Keep-alive is promised, but the server closes after each response.
    // POST is never resent, so only noticing the close before writing the
    // request keeps these from failing.
    let (target, seen) = server(|_| Answer {
        close: true,
        ..answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let step = Step::fixed(0, Method::POST, "/form".parse::<Uri>().unwrap());
    let mut c = client(&target);
    for i in 0..10 {
        let mut req = prepare(&step, &[], &target).unwrap();
        let reply = c.execute(&mut req, 0, ALL).await;
        assert_eq!(
            reply.map(|r| r.status).map_err(|e| e.message),
            Ok(200),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = seen.lock().unwrap();
    assert_eq!((s.requests.len(), s.connections), (10, 10));
}

#[tokio::test]
async fn a_request_the_server_dropped_unanswered_is_resent_once_whatever_its_method() {
    // Every second request is read and dropped with the connection, as a
    // server does when its keep-alive timeout strikes just as a request
    // arrives.
    let (target, seen) = server(|i| {
        if i % 2 == 1 {
            Answer {
                close: true,
                ..answer("")
            }
        } else {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let mut c = client(&target);
    for i in 0..5 {
        let reply = get(&mut c, &target, "/").await;
        assert_eq!(
            reply.map(|r| r.status).map_err(|e| e.message),
            Ok(200),
            "GET {i}"
        );
    }
    {
        let s = seen.lock().unwrap();
        // GET 0 on connection 1; each later GET: dropped, resent on a new one.
        assert_eq!((s.requests.len(), s.connections), (9, 5));
    }
    let counts = c.take_counts();
    assert_eq!(
        (counts.exchanges, counts.retries),
        (9, 4),
        "9 exchanges, 4 of them resent"
    );
    // Five answers of 40 bytes each (head and body, as they came).
    assert_eq!(counts.received, 5 * 40);
    // A POST too, as browsers do: the connection ended before any byte of
    // a response, so the server cannot have answered it.
    let step = Step::fixed(0, Method::POST, "/form".parse::<Uri>().unwrap());
    let mut req = prepare(&step, &[], &target).unwrap();
    let status = c.execute(&mut req, 0, ALL).await.map(|r| r.status);
    assert_eq!(status.map_err(|e| e.message), Ok(200));
    let counts = c.take_counts();
    assert_eq!(
        (counts.exchanges, counts.retries, counts.received),
        (2, 1, 40)
    );
    // Dropped on the kept connection, answered on a new one: two sends.
    let s = seen.lock().unwrap();
    assert_eq!((s.requests.len(), s.connections), (11, 6));
}

#[tokio::test]
async fn requests_are_written_as_http_1_1() {
    let (target, seen) =
        server(|_| answer("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n")).await;
    let mut vars = VarTable::default();
    let mut step = Step::fixed(0, Method::POST, "/submit?x=1".parse::<Uri>().unwrap());
    step.body = BodySpec::Json(Template::compile(r#"{"a": "b c"}"#, &mut vars).unwrap());
    step.headers = vec![
        ("x-run".parse().unwrap(), "r1".parse().unwrap()),
        // Framing headers are the client's own: a step's are ignored.
        ("content-length".parse().unwrap(), "999".parse().unwrap()),
    ];
    let mut c = client(&target);
    for _ in 0..2 {
        let mut req = prepare(&step, &[], &target).unwrap();
        // 204 has no body whatever Content-Length says: the next request
        // must parse cleanly on the same connection.
        assert_eq!(c.execute(&mut req, 0, ALL).await.unwrap().status, 204);
    }
    let s = seen.lock().unwrap();
    assert_eq!(s.connections, 1);
    let port = target.port;
    let expected = format!(
        "POST /submit?x=1 HTTP/1.1\r\nx-run: r1\r\nhost: 127.0.0.1:{port}\r\n\
         accept-encoding: gzip, deflate, br, zstd\r\nuser-agent: {}\r\n\
         content-type: application/json\r\ncontent-length: 12\r\n\r\n{{\"a\": \"b c\"}}",
        loadfleet_agent::client::USER_AGENT
    );
    assert_eq!(String::from_utf8_lossy(&s.requests[1]), expected);
}

#[tokio::test]
async fn small_and_large_bodies_arrive_whole() {
    let (target, seen) = server(|_| answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let mut c = client(&target);
    // Small bodies leave in the head's write, large ones in a second one.
    for len in [1, 4 << 10, (4 << 10) + 1, 100_000] {
        let text: String = (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut step = Step::fixed(0, Method::PUT, "/up".parse::<Uri>().unwrap());
        step.body = BodySpec::Raw(Template::compile(&text, &mut VarTable::default()).unwrap());
        let mut req = prepare(&step, &[], &target).unwrap();
        assert_eq!(
            c.execute(&mut req, 0, ALL).await.unwrap().status,
            200,
            "{len} B"
        );
        let s = seen.lock().unwrap();
        let got = s.requests.last().unwrap();
        let head = format!("content-length: {len}\r\n\r\n");
        let at = got.windows(head.len()).position(|w| w == head.as_bytes());
        let body = &got[at.expect("content-length") + head.len()..];
        assert_eq!(body, text.as_bytes(), "{len} B");
    }
    assert_eq!(seen.lock().unwrap().connections, 1);
}

#[tokio::test]
async fn malformed_responses_are_protocol_errors_and_cut_bodies_resets() {
    let huge_head = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(70_000)
    );
    let cases: Vec<(String, ErrorKind)> = vec![
        ("SSH-2.0-OpenSSH\r\n\r\n".into(), ErrorKind::Protocol),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".into(),
            ErrorKind::Protocol,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into(),
            ErrorKind::Protocol,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n".into(),
            ErrorKind::Protocol,
        ),
        (huge_head, ErrorKind::Protocol),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b".into(),
            ErrorKind::Reset,
        ),
        ("HTTP/1.1 200 OK\r\nContent-".into(), ErrorKind::Reset),
        (
            // A trailer line that never ends: refused, not buffered forever.
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: {}",
                "t".repeat(100_000)
            ),
            ErrorKind::Protocol,
        ),
    ];
    for (bytes, kind) in cases {
        let shown: String = bytes.chars().take(60).collect();
        let b = bytes.clone();
        let (target, _) = server(move |_| Answer {
            close: true,
            ..answer(b.clone())
        })
        .await;
        let mut c = client(&target);
        let e = match get(&mut c, &target, "/").await {
            Ok(r) => panic!("{shown:?}: accepted with status {}", r.status),
            Err(e) => e,
        };
        assert_eq!(e.kind, kind, "{shown:?}: {}", e.message);
        assert_eq!(c.buffered(), 0, "{shown:?}: the failed connection was kept");
    }
}

#[tokio::test]
async fn a_step_that_asks_for_close_gets_a_new_connection_each_time() {
    let (target, seen) = server(|_| answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let mut step = Step::fixed(0, Method::GET, "/".parse::<Uri>().unwrap());
    step.headers = vec![("connection".parse().unwrap(), "close".parse().unwrap())];
    let mut c = client(&target);
    for _ in 0..3 {
        let mut req = prepare(&step, &[], &target).unwrap();
        assert_eq!(c.execute(&mut req, 0, ALL).await.unwrap().status, 200);
    }
    assert_eq!(seen.lock().unwrap().connections, 3);
    assert_eq!(c.buffered(), 0, "no connection kept");
}

/// Server push is turned off in the client's first SETTINGS frame
/// (ENABLE_PUSH = 0, RFC 9113 6.5.2), as browsers and h2load do: a server
/// then may not push. Read off the wire by a server that speaks no HTTP/2
/// beyond the client's preface.
#[tokio::test]
async fn http2_settings_turn_server_push_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut preface = [0u8; 24];
        conn.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).await.unwrap();
        assert_eq!(head[3], 0x4, "the first frame is SETTINGS");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.unwrap();
        payload
            .chunks(6)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                )
            })
            .collect::<Vec<_>>()
        // The connection closes here: the request fails, which is fine.
    });
    let mut target = Target::parse(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
    target.version = loadfleet_proto::v1::HttpVersion::H2c;
    // HTTP/2 connections are driven by a task on the user's own thread.
    tokio::task::LocalSet::new()
        .run_until(async {
            let mut c = client(&target);
            let _ = get(&mut c, &target, "/").await;
        })
        .await;
    let settings = settings.await.unwrap();
    eprintln!("client SETTINGS: {settings:?}");
    assert!(
        settings.contains(&(0x2, 0)),
        "ENABLE_PUSH = 0 in {settings:?}"
    );
}

/// A stream the server resets (RST_STREAM INTERNAL_ERROR) is a `reset`
/// naming its code, and it ends that stream only: the next request goes
/// over the same connection (before, every reset cost a new connection).
#[tokio::test]
async fn an_http2_stream_reset_is_named_and_keeps_the_connection() {
    let (target, connections) = h2_server(|n, _, respond| {
        if n == 1 {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
            return true;
        }
        false
    })
    .await;
    let (first, second, _) = two_requests(&target).await;
    let f = first.unwrap_err();
    eprintln!("first: {f:?}");
    assert_eq!(f.kind, ErrorKind::Reset);
    assert!(
        f.message
            .contains("stream reset by the server: INTERNAL_ERROR"),
        "{}",
        f.message
    );
    assert_eq!(second.unwrap(), (200, b"ok".to_vec()));
    assert_eq!(
        *connections.lock().unwrap(),
        1,
        "one connection for both requests"
    );
}

/// An h2c server whose `n`-th request (from 1) on each connection gets
/// `refuse` done to it (the rest get 200 "ok"); counts connections.
async fn h2_server(
    refuse: fn(
        usize,
        &mut h2::server::Connection<TcpStream, bytes::Bytes>,
        &mut h2::server::SendResponse<bytes::Bytes>,
    ) -> bool,
) -> (Target, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0usize));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            *seen.lock().unwrap() += 1;
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                let mut n = 0;
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    n += 1;
                    if refuse(n, &mut conn, &mut respond) {
                        continue;
                    }
                    let head = http::Response::builder().status(200).body(()).unwrap();
                    let mut body = respond.send_response(head, false).unwrap();
                    body.send_data(bytes::Bytes::from_static(b"ok"), true)
                        .unwrap();
                }
            });
        }
    });
    let mut target = Target::parse(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
    target.version = loadfleet_proto::v1::HttpVersion::H2c;
    (target, connections)
}

/// Two requests of one user: the first's status, the second's status and
/// body, and the user's counts.
async fn two_requests(
    target: &Target,
) -> (
    Result<u16, Failure>,
    Result<(u16, Vec<u8>), Failure>,
    loadfleet_agent::client::Counts,
) {
    tokio::task::LocalSet::new()
        .run_until(async {
            let mut c = client(target);
            let first = get(&mut c, target, "/").await.map(|r| r.status);
            let second = get(&mut c, target, "/")
                .await
                .map(|r| (r.status, c.body().to_vec()));
            (first, second, c.take_counts())
        })
        .await
}

/// A refused stream (RST_STREAM REFUSED_STREAM) was not processed: it is
/// sent again, counted as a retry, and is no error.
#[tokio::test]
async fn a_refused_http2_stream_is_sent_again_and_is_no_error() {
    let (target, connections) = h2_server(|n, _, respond| {
        if n == 1 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            return true;
        }
        false
    })
    .await;
    let (first, second, counts) = two_requests(&target).await;
    assert_eq!(first.unwrap(), 200, "resent and answered");
    assert_eq!(second.unwrap(), (200, b"ok".to_vec()));
    assert_eq!(counts.retries, 1, "{counts:?}");
    assert_eq!(
        counts.exchanges, 3,
        "every attempt is an exchange: {counts:?}"
    );
    assert_eq!(
        *connections.lock().unwrap(),
        1,
        "a refused stream keeps the connection"
    );
}

/// A server that shuts its first connection down gracefully (GOAWAY
/// NO_ERROR, last stream 0) once the request's HEADERS arrived: the
/// request was not processed (RFC 9113, 6.8), so it goes again on a new
/// connection, counted as a retry and no error. Written frame by frame, so
/// the GOAWAY always excludes a request already sent.
#[tokio::test]
async fn a_graceful_http2_shutdown_before_the_request_is_resent_and_is_no_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0usize));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = {
                let mut c = seen.lock().unwrap();
                *c += 1;
                *c
            };
            tokio::spawn(async move {
                if n > 1 {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        let head = http::Response::builder().status(200).body(()).unwrap();
                        let mut body = respond.send_response(head, false).unwrap();
                        body.send_data(bytes::Bytes::from_static(b"ok"), true)
                            .unwrap();
                    }
                    return;
                }
                let mut preface = [0u8; 24];
                if socket.read_exact(&mut preface).await.is_err() {
                    return;
                }
                // Our SETTINGS, then frames until the request's HEADERS.
                let _ = socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                loop {
                    let mut head = [0u8; 9];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    match head[3] {
                        // SETTINGS (not an ACK): acknowledge it.
                        4 if head[4] & 1 == 0 => {
                            let _ = socket.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                        }
                        // HEADERS: the request is here; GOAWAY, last stream 0.
                        1 => {
                            let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                            let _ = socket.write_all(&goaway).await;
                            let _ = socket.flush().await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    let mut target = Target::parse(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
    target.version = loadfleet_proto::v1::HttpVersion::H2c;
    let (first, second, counts) = two_requests(&target).await;
    eprintln!("first {first:?}, second {second:?}, {counts:?}");
    assert_eq!(first.unwrap(), 200, "sent again and answered");
    assert_eq!(second.unwrap(), (200, b"ok".to_vec()));
    assert_eq!(
        counts.retries, 1,
        "the refused request counted once: {counts:?}"
    );
    assert_eq!(
        *connections.lock().unwrap(),
        2,
        "a new connection after the shutdown"
    );
}

/// HTTP/2 trailers (a gRPC-style status) are headers the checks see.
#[tokio::test]
async fn http2_trailers_are_headers_the_checks_see() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    let head = http::Response::builder().status(200).body(()).unwrap();
                    let mut body = respond.send_response(head, false).unwrap();
                    body.send_data(bytes::Bytes::from_static(b"ok"), false)
                        .unwrap();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
                    body.send_trailers(trailers).unwrap();
                }
            });
        }
    });
    let mut target = Target::parse(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
    target.version = loadfleet_proto::v1::HttpVersion::H2c;
    tokio::task::LocalSet::new()
        .run_until(async {
            let mut c = client(&target);
            let reply = get(&mut c, &target, "/").await.unwrap();
            assert_eq!((reply.status, c.body()), (200, &b"ok"[..]));
            assert_eq!(
                reply.headers.get("grpc-status").map(|v| v.as_bytes()),
                Some(&b"13"[..]),
                "{:?}",
                reply.headers
            );
        })
        .await;
}

/// An h2c server answering every request with `respond` (head and body
/// written by the test).
async fn h2_answering(respond: fn(&mut h2::server::SendResponse<bytes::Bytes>)) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut r))) = conn.accept().await {
                    respond(&mut r);
                }
            });
        }
    });
    let mut target = Target::parse(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
    target.version = loadfleet_proto::v1::HttpVersion::H2c;
    target
}

/// One request's outcome (its status) and the bytes counted for it.
async fn one_h2_request(target: &Target) -> (Result<u16, Failure>, u64) {
    tokio::task::LocalSet::new()
        .run_until(async {
            let mut c = client(target);
            let r = get(&mut c, target, "/").await.map(|r| r.status);
            (r, c.take_counts().received)
        })
        .await
}

/// A body shorter or longer than its content-length is named as such, with
/// the bytes declared and those that arrived (which are counted), rather
/// than "unspecific protocol error".
#[tokio::test]
async fn an_http2_body_that_does_not_match_its_content_length_says_so() {
    // 100 bytes declared, 10 sent, then the stream ended (an empty DATA
    // frame with END_STREAM: the 10 bytes arrive before the fault).
    let short = h2_answering(|r| {
        let head = http::Response::builder()
            .status(200)
            .header("content-length", "100")
            .body(())
            .unwrap();
        let mut body = r.send_response(head, false).unwrap();
        let _ = body.send_data(bytes::Bytes::from_static(b"0123456789"), false);
        let _ = body.send_data(bytes::Bytes::new(), true);
    })
    .await;
    let (reply, bytes) = one_h2_request(&short).await;
    let f = reply.unwrap_err();
    eprintln!("short: {f:?}, {bytes} bytes counted");
    assert_eq!(f.kind, ErrorKind::Protocol);
    assert!(
        f.message.contains(
            "its length does not match its content-length (100 bytes declared, 10 arrived"
        ),
        "{}",
        f.message
    );
    // The head (counted as HTTP/1.1 would spell it) and the 10 bytes.
    assert!(
        bytes >= 10 + 15,
        "the 10 bytes that came are counted: {bytes}"
    );
    // 4 declared, 10 sent.
    let long = h2_answering(|r| {
        let head = http::Response::builder()
            .status(200)
            .header("content-length", "4")
            .body(())
            .unwrap();
        let mut body = r.send_response(head, false).unwrap();
        let _ = body.send_data(bytes::Bytes::from_static(b"0123456789"), true);
    })
    .await;
    let f = one_h2_request(&long).await.0.unwrap_err();
    eprintln!("long: {f:?}");
    assert!(
        f.message.contains("(4 bytes declared, 0 arrived"),
        "{}",
        f.message
    );
}

/// A response head larger than the client's 64 KiB limit is refused and
/// named (with the limit), as HTTP/1.1's is.
#[tokio::test]
async fn an_oversized_http2_head_is_named() {
    let target = h2_answering(|r| {
        let big = "x".repeat(80 << 10);
        let head = http::Response::builder()
            .status(200)
            .header("x-big", big.as_str())
            .body(())
            .unwrap();
        let mut body = r.send_response(head, false).unwrap();
        let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
    })
    .await;
    let f = one_h2_request(&target).await.0.unwrap_err();
    eprintln!("{f:?}");
    assert_eq!(f.kind, ErrorKind::Protocol);
    assert!(
        f.message
            .contains("its head was refused: a header block larger than 64 KiB"),
        "{}",
        f.message
    );
}

/// A server that pushes although the client turned push off breaks the
/// protocol: the client ends the connection, and the failure says why
/// (written frame by frame, since an HTTP/2 library will not push to a
/// client that refused pushes).
#[tokio::test]
async fn an_http2_push_against_the_settings_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if socket.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let _ = socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                loop {
                    let mut head = [0u8; 9];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    match head[3] {
                        4 if head[4] & 1 == 0 => {
                            let _ = socket.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                        }
                        // The request's HEADERS (stream 1): PUSH_PROMISE of
                        // stream 2 (GET http /, HPACK indexed fields).
                        1 => {
                            let push = [0, 0, 7, 5, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0x82, 0x86, 0x84];
                            let _ = socket.write_all(&push).await;
                            let _ = socket.flush().await;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    let mut target = Target::parse(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
    target.version = loadfleet_proto::v1::HttpVersion::H2c;
    let f = one_h2_request(&target).await.0.unwrap_err();
    eprintln!("{f:?}");
    assert_eq!(f.kind, ErrorKind::Protocol);
    assert!(
        f.message
            .contains("with a push although the client turned push off"),
        "{}",
        f.message
    );
}
