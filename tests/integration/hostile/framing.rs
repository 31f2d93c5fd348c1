//! Request smuggling and framing, and the open-proxy rules, on raw sockets: a request whose length could be
//! read two ways gets 400, is never forwarded, and ends its connection; a cache hit never leaves a request
//! body behind to be read as the next request; nothing a client sends makes the proxy contact anything but
//! the configured upstream; a client that half-closes after its request still gets the answer.

use std::sync::{Arc, Mutex};

use crate::support::raw::*;
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

/// A fake Cloudreve that reads every body and keeps `(target, body or "<broken>")` per request; avatars are
/// answered like Cloudreve's.
struct Reader {
    upstream: FakeCloudreve,
    bodies: Arc<Mutex<Vec<(String, String)>>>,
}

impl Reader {
    async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&bodies);
        let upstream = FakeCloudreve::start(move |request: Request<Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let target = request.uri().to_string();
                if target.starts_with("/api/v4/user/avatar/") {
                    return cloudreve_avatar(&request);
                }
                let body = match request.into_body().collect().await {
                    Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                    Err(_) => "<broken>".to_owned(),
                };
                log.lock().unwrap().push((target, body.clone()));
                Response::builder()
                    .header("content-type", "text/plain")
                    .body(full(format!("read {} bytes", body.len())))
                    .unwrap()
            }
        })
        .await;
        Self { upstream, bodies }
    }

    fn bodies(&self) -> Vec<(String, String)> {
        self.bodies.lock().unwrap().clone()
    }
}

/// What every refused request is followed by on the same connection: it must never be read as a request.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: cloud.example\r\n\r\n";

/// Asserts the proxy answered 400 itself, then closed without answering anything else.
async fn assert_refused_and_closed(proxy: &TestProxy, request: &[u8], case: &str) {
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(SMUGGLED.as_bytes());
    let (response, mut raw) = exchange(proxy.addr, &bytes).await;
    assert_eq!(response.status, 400, "{case}: {response:?}");
    let rest = raw.closed().await;
    assert!(
        rest.is_empty(),
        "{case}: more after the 400: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

// 1. Ambiguous framing and malformed heads.

const AMBIGUOUS: &[(&str, &str)] = &[
    (
        "CL then TE",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE then CL",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ),
    (
        "duplicate equal CL",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
    ),
    (
        "conflicting CL",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ),
    (
        "CL list",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na",
    ),
    (
        "signed CL",
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na",
    ),
    (
        "TE gzip",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    ),
    (
        "TE gzip, chunked",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE chunked, gzip",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE chunked twice",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE identity",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
    ),
    (
        "TE xchunked",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE in HTTP/1.0",
        "POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "space before colon",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "obs-fold",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n",
    ),
    (
        "obs-fold onto TE",
        "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n ,chunked\r\n\r\n0\r\n\r\n",
    ),
    ("bare LF everywhere", "GET /a HTTP/1.1\nHost: x\n\n"),
    (
        "bare LF hiding a TE",
        "POST /a HTTP/1.1\r\nHost: x\r\nX-A: 1\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "bare CR between fields",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n",
    ),
    (
        "bare CR in a value",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    ),
    (
        "NUL in a value",
        "GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
    ),
    ("no Host in HTTP/1.1", "GET /a HTTP/1.1\r\n\r\n"),
    ("two Hosts", "GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
    ("HTTP/0.9", "GET /a\r\n\r\n"),
];

#[tokio::test]
async fn ambiguous_framing_gets_400_is_never_forwarded_and_closes_the_connection() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for (case, request) in AMBIGUOUS {
        assert_refused_and_closed(&proxy, request.as_bytes(), case).await;
    }
    assert_eq!(
        upstream.upstream.count(),
        0,
        "{:?}",
        upstream.upstream.received()
    );
}

#[tokio::test]
async fn ambiguous_request_after_a_good_one_on_a_keep_alive_connection_is_refused() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for (case, request) in AMBIGUOUS {
        let good = "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok";
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(format!("{good}{request}{SMUGGLED}").as_bytes())
            .await
            .unwrap();
        assert_eq!(raw.response().await.status, 200, "{case}");
        assert_eq!(raw.response().await.status, 400, "{case}");
        let rest = raw.closed().await;
        assert!(
            rest.is_empty(),
            "{case}: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    let targets: Vec<_> = upstream.bodies().into_iter().map(|(t, _)| t).collect();
    assert!(targets.iter().all(|t| t == "/ok"), "{targets:?}");
    assert_eq!(targets.len(), AMBIGUOUS.len());
}

#[tokio::test]
async fn invalid_chunks_get_400_close_and_never_complete_upstream() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for chunks in [
        "zz\r\nabc\r\n0\r\n\r\n",
        "-1\r\nabc\r\n0\r\n\r\n",
        "0x3\r\nabc\r\n0\r\n\r\n",
        "fffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        "3\nabc\n0\n\n",
        "3\r\nabcd\r\n0\r\n\r\n",
        "3\rabc\r\n0\r\n\r\n",
        "\r\n0\r\n\r\n",
    ] {
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}{SMUGGLED}"
        );
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(request.as_bytes()).await.unwrap();
        let rest = raw.closed().await;
        let text = String::from_utf8_lossy(&rest);
        // Either the proxy's 400, or (if the break came after the answer started) only the close.
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{chunks:?}: {text:?}"
        );
        assert!(!text.contains("200 OK"), "{chunks:?}: {text:?}");
    }
    for (target, body) in upstream.bodies() {
        assert_eq!(
            (target.as_str(), body.as_str()),
            ("/upload", "<broken>"),
            "never a complete request"
        );
    }
    assert_eq!(upstream.upstream.count_target("/smuggled"), 0);
}

#[tokio::test]
async fn valid_framing_passes_pipelined_on_one_connection() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    let requests = concat!(
        "\r\n",
        "POST /length HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n",
        "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        "GET /plain HTTP/1.1\r\nHost: x\r\nX-Tab:\tvalue\r\n\r\n",
        "GET /ten HTTP/1.0\r\n\r\n",
    );
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(requests.as_bytes()).await.unwrap();
    for expected in [
        "read 5 bytes",
        "read 11 bytes",
        "read 0 bytes",
        "read 0 bytes",
    ] {
        let response = raw.response().await;
        assert_eq!(response.status, 200);
        assert_eq!(String::from_utf8_lossy(&response.body), expected);
    }
    let seen = upstream.bodies();
    let expected = [
        ("/length", "hello"),
        ("/chunked", "hello world"),
        ("/plain", ""),
        ("/ten", ""),
    ];
    let seen: Vec<_> = seen.iter().map(|(t, b)| (t.as_str(), b.as_str())).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn large_chunked_upload_passes_the_guard_intact() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for i in 0..64u8 {
            let piece = Bytes::from(vec![b'a' + i % 26; 64 * 1024 + usize::from(i)]);
            if tx.send(Ok(piece)).await.is_err() {
                return;
            }
        }
    });
    let reply = send(
        &client(),
        Request::post(proxy.url("/dav/big.bin")).body(body).unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let expected: usize = (0..64).map(|i| 64 * 1024 + i).sum();
    assert_eq!(reply.body, format!("read {expected} bytes"));
}

// 2. Cache hits and request bodies.

const AVATAR: &str = "/api/v4/user/avatar/img1";

async fn warm(proxy: &TestProxy) {
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
}

#[tokio::test]
async fn cache_hit_discards_a_whole_request_body_and_keeps_the_connection_in_step() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    warm(&proxy).await;
    for framing in ["length", "chunked"] {
        let body = SMUGGLED;
        let hit = match framing {
            "length" => format!(
                "GET {AVATAR} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            _ => format!(
                "GET {AVATAR} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            ),
        };
        let next = "GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(format!("{hit}{next}").as_bytes()).await.unwrap();
        let first = raw.response().await;
        assert_eq!(
            (first.status, first.header("x-cache")),
            (200, Some("HIT")),
            "{framing}"
        );
        let second = raw.response().await;
        assert_eq!(second.status, 200, "{framing}");
        assert_eq!(
            String::from_utf8_lossy(&second.body),
            "read 0 bytes",
            "{framing}"
        );
    }
    assert_eq!(upstream.upstream.count_target("/smuggled"), 0);
    assert_eq!(upstream.upstream.count_target("/next"), 2);
}

#[tokio::test]
async fn cache_hit_with_a_body_still_arriving_closes_the_connection() {
    // hyper cannot discard what has not arrived without waiting for it, so it closes instead: the rest of
    // the body is never read as a request.
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    warm(&proxy).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(
        format!("GET {AVATAR} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfirst").as_bytes(),
    )
    .await
    .unwrap();
    let hit = raw.response().await;
    assert_eq!((hit.status, hit.header("x-cache")), (200, Some("HIT")));
    let _ = raw.send(SMUGGLED.as_bytes()).await;
    let rest = raw.closed().await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(upstream.upstream.count_target("/smuggled"), 0);
}

#[tokio::test]
async fn cache_fill_never_forwards_the_request_body() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    let body = SMUGGLED;
    let mut raw = Raw::connect(proxy.addr).await;
    let miss = format!(
        "GET {AVATAR} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw.send(format!("{miss}GET /next HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let first = raw.response().await;
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    assert_eq!(raw.response().await.status, 200);
    let fill = upstream.upstream.received()[0].clone();
    assert_eq!(
        fill.header("content-length"),
        None,
        "the fill is a GET without a body"
    );
    assert_eq!(upstream.upstream.count_target("/smuggled"), 0);
}

// 3. No open proxy.

async fn victim() -> FakeCloudreve {
    FakeCloudreve::start(|_| async { json_response(r#"{"victim":true}"#) }).await
}

#[tokio::test]
async fn absolute_form_for_another_authority_reaches_only_the_upstream() {
    let upstream = Reader::start().await;
    let victim = victim().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for target in [
        format!("http://{}/x", victim.addr),
        format!("http://{}{AVATAR}", victim.addr),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let (response, _) = exchange(
            proxy.addr,
            format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", victim.addr).as_bytes(),
        )
        .await;
        assert_eq!(response.status, 200, "{target}");
    }
    // Over HTTP/2 the authority is a pseudo-header; it names the Host, never the destination.
    let reply = send(
        &h2_client(),
        Request::get(format!("http://{}/h2", proxy.addr))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(victim.count(), 0, "nothing reached another host");
    assert_eq!(upstream.upstream.count(), 4);
}

#[tokio::test]
async fn connect_is_refused_and_the_tunnel_bytes_are_never_read_as_requests() {
    let upstream = Reader::start().await;
    let victim = victim().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    let target = victim.addr.to_string();
    // No `Connection: close` from the client: the proxy closes on its own.
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n{SMUGGLED}");
    let (response, mut raw) = exchange(proxy.addr, request.as_bytes()).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(raw.closed().await.is_empty());
    assert_eq!(victim.count(), 0);
    assert_eq!(upstream.upstream.count(), 0);
}

#[tokio::test]
async fn upgrade_is_never_forwarded_and_never_tunnels() {
    let upstream = Reader::start().await;
    let victim = victim().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for upgrade in ["websocket", "h2c"] {
        let request = format!(
            "GET /api/v4/file/events HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nSec-WebSocket-Key: x\r\n\r\n",
            victim.addr
        );
        let (response, mut raw) = exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(
            response.status, 200,
            "{upgrade}: answered as a plain request"
        );
        let seen = upstream.upstream.last();
        assert_eq!(seen.header("upgrade"), None, "{upgrade}");
        assert_eq!(seen.header("connection"), None, "{upgrade}");
        // Bytes a tunnel would carry are read as HTTP/1.1, and refused as such.
        raw.send(b"\x81\x05hello\r\n\r\n").await.unwrap();
        let rest = raw.closed().await;
        assert!(
            String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 400"),
            "{upgrade}"
        );
    }
    assert_eq!(victim.count(), 0);
}

#[tokio::test]
async fn upstream_switching_protocols_unasked_is_not_tunnelled() {
    // A misbehaving upstream answers 101 to a request that asked for no upgrade: the client must not end
    // up with a raw pipe to it.
    let upstream = RawUpstream::start(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw tunnel bytes")
            .await;
        drain(&mut stream).await;
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let mut raw = Raw::connect(proxy.addr).await;
    for target in ["/ws", "/after"] {
        raw.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let response = raw.response().await;
        assert_eq!(response.status, 502, "{target}: {response:?}");
        let body = String::from_utf8_lossy(&response.body);
        assert!(!body.contains("raw tunnel bytes"), "{body:?}");
    }
}

// 4. Half-closed clients.

/// A client that sends its whole request and then shuts down its writing side (`nc -N`, some HTTP/1.0
/// clients) has said all it will say, not gone away: it gets its answer on every path, then the close.
#[tokio::test]
async fn half_closed_clients_get_their_answer_on_every_path_then_the_close() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = crate::support::ops::TestAdmin::start(&proxy).await;
    // A miss fills the cache through hyper; the hit after it is the express lane's.
    for (case, target, x_cache, express) in [
        ("miss", AVATAR, Some("MISS"), 0.0),
        ("express hit", AVATAR, Some("HIT"), 1.0),
        ("pass-through", "/api/v4/site/ping", None, 1.0),
    ] {
        let mut raw = Raw::connect(proxy.addr).await;
        let request = format!("GET {target} HTTP/1.1\r\nHost: cloud.example\r\n\r\n");
        raw.send(request.as_bytes()).await.unwrap();
        raw.shutdown_write().await;
        let response = raw.response().await;
        assert_eq!(response.status, 200, "{case}: {response:?}");
        assert_eq!(response.header("x-cache"), x_cache, "{case}");
        assert!(!response.body.is_empty(), "{case}");
        let rest = raw.closed().await;
        assert!(
            rest.is_empty(),
            "{case}: {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert_eq!(admin.express_answers().await, express, "{case}");
    }
    assert_eq!(upstream.count_target(AVATAR), 1, "one fill, one hit");
    assert_eq!(upstream.count_target("/api/v4/site/ping"), 1);
}

/// Half-closing is no way to hold a connection: one that closes its side before a whole request (before any
/// byte, inside a head, inside a body) is closed at once, well before `idle_timeout` (30 s, past `PATIENCE`)
/// would, and Cloudreve never gets a complete request from it.
#[tokio::test]
async fn half_closed_connections_without_a_whole_request_are_closed() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for (case, bytes) in [
        ("nothing", &b""[..]),
        (
            "half a head",
            b"GET /api/v4/site/ping HTTP/1.1\r\nHost: x\r\n",
        ),
        (
            "half a body",
            b"POST /api/v4/site/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf",
        ),
    ] {
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(bytes).await.unwrap();
        raw.shutdown_write().await;
        let rest = raw.closed().await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(!rest.contains(" 200 "), "{case}: {rest:?}");
    }
    let bodies = upstream.bodies();
    assert!(
        bodies.iter().all(|(_, body)| body == "<broken>"),
        "{bodies:?}"
    );
}

// 5. Host (RFC 9110 §7.2, RFC 9112 §3.2): one `uri-host [":" port]`, no userinfo, on every path.

/// Host values refused: not `uri-host [":" port]` as the proxy reads it (README, "Hostile input").
const INVALID_HOSTS: &[&str] = &[
    "a/b",
    "a?b",
    "a#b",
    "user@a",
    "user:secret@a",
    "a b",
    "a\tb",
    "a,b",
    "a;b",
    "%61.example",
    "caf\u{e9}.example",
    "a:",
    "a:8x",
    "a:65536",
    "a:1:2",
    ":80",
    "::1",
    "[::1",
    "[::1]x",
    "[zz::1]",
    "[v1.x]",
    "[fe80::1%25eth0]",
];

#[tokio::test]
async fn invalid_host_values_get_400_are_never_forwarded_and_close_the_connection() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for host in INVALID_HOSTS {
        let request = format!("GET /api/v4/site/ping HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_refused_and_closed(&proxy, request.as_bytes(), host).await;
    }
    assert_eq!(upstream.upstream.count(), 0);
}

#[tokio::test]
async fn valid_host_values_reach_the_upstream_as_sent() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for host in [
        "cloud.example",
        "Cloud.Example:8080",
        "127.0.0.1:5212",
        "[::1]:8080",
        "[2001:db8::1]",
        "a_b-c~d.example",
        "localhost:0",
        // RFC 9110 §7.2: a client sends an empty Host when the target has no authority.
        "",
    ] {
        let request = format!("GET /api/v4/site/ping HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (response, _) = exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(response.status, 200, "{host:?}");
        let hosts: Vec<_> = upstream
            .upstream
            .last()
            .headers
            .get_all("host")
            .iter()
            .cloned()
            .collect();
        assert_eq!(hosts, [host], "{host:?}");
    }
}

#[tokio::test]
async fn absolute_form_with_userinfo_or_a_bad_authority_gets_400_and_is_never_forwarded() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    for authority in [
        "user:secret@cloud.example",
        "user@cloud.example",
        "cloud.example:",
    ] {
        let request = format!(
            "GET http://{authority}/api/v4/site/ping HTTP/1.1\r\nHost: cloud.example\r\n\r\n"
        );
        assert_refused_and_closed(&proxy, request.as_bytes(), authority).await;
    }
    assert_eq!(upstream.upstream.count(), 0);
}

/// The express lane answers avatar hits from the raw head; a head with an invalid Host is refused there
/// exactly as on the full path, never answered from the cache.
#[tokio::test]
async fn an_invalid_host_is_refused_on_the_express_lane_as_on_the_full_path() {
    let upstream = Reader::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    warm(&proxy).await;
    let express = format!("GET {AVATAR} HTTP/1.1\r\nHost: a/b\r\n\r\n");
    let full = format!("GET {AVATAR} HTTP/1.1\r\nHost: a/b\r\nX-Full-Path: 1\r\n\r\n");
    let (express, mut first) = exchange(proxy.addr, express.as_bytes()).await;
    let (full, mut second) = exchange(proxy.addr, full.as_bytes()).await;
    assert_eq!((express.status, full.status), (400, 400));
    assert_eq!(express.head, full.head);
    assert_eq!(express.body, full.body);
    assert!(first.closed().await.is_empty());
    assert!(second.closed().await.is_empty());
    assert_eq!(upstream.upstream.count(), 1, "only the warming fill");
}
