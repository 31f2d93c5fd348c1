//! The pass-through path, end to end: everything that is not an avatar cache hit goes to Cloudreve unchanged
//! and streaming, and comes back the same way. Each test runs the real proxy in front of a fake upstream and
//! proves the behaviour by what the upstream received and what the client got.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::raw::Raw;
use crate::support::*;
use bytes::Bytes;
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Notify, oneshot};

const PING: &str = "/api/v4/site/ping";

// Helpers local to these tests.

/// A fake Cloudreve that also keeps every request body it read, in arrival order (bodies are read whole
/// before answering, so `bodies.last()` belongs to `upstream.last()` in a sequential test).
struct Recording {
    upstream: FakeCloudreve,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Recording {
    /// Answers every request `200 text/plain` with `x-upstream-method` naming the method it saw.
    async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&bodies);
        let upstream = FakeCloudreve::start(move |request: Request<Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let method = request.method().clone();
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .expect("the request body arrived whole")
                    .to_bytes();
                log.lock().unwrap().push(body);
                Response::builder()
                    .header("content-type", "text/plain")
                    .header("x-upstream-method", method.as_str())
                    .body(full(format!("{method} answered")))
                    .unwrap()
            }
        })
        .await;
        Self { upstream, bodies }
    }

    fn last_body(&self) -> Bytes {
        self.bodies
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream read no body")
    }
}

/// FNV-1a, 64 bit: a cheap order-sensitive checksum for comparing large bodies without keeping them.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `len` bytes of a non-repeating-looking pattern (so a dropped, duplicated or reordered chunk changes the sum).
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A fake upstream that reads each request body frame by frame and answers with its length and checksum
/// (`x-received-length`, `x-received-fnv`), never holding the body.
async fn checksumming_upstream() -> FakeCloudreve {
    FakeCloudreve::start(|request: Request<Incoming>| async move {
        let mut body = request.into_body();
        let (mut length, mut hash) = (0u64, FNV_OFFSET);
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(err) => {
                    return Response::builder()
                        .status(500)
                        .body(full(format!("request body failed: {err}")))
                        .unwrap();
                }
            };
            if let Ok(data) = frame.into_data() {
                length += data.len() as u64;
                hash = fnv1a(hash, &data);
            }
        }
        Response::builder()
            .header("x-received-length", length)
            .header("x-received-fnv", format!("{hash:016x}"))
            .body(full(r#"{"code":0,"msg":""}"#))
            .unwrap()
    })
    .await
}

/// Feeds `data` into a channel body in `chunk`-sized pieces from a task of its own.
fn feed(tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>, data: Bytes, chunk: usize) {
    tokio::spawn(async move {
        let mut at = 0;
        while at < data.len() {
            let end = (at + chunk).min(data.len());
            if tx.send(Ok(data.slice(at..end))).await.is_err() {
                return; // the request failed; the test reports it
            }
            at = end;
        }
    });
}

/// Sends a request and returns the response head with its body unread, within [`PATIENCE`].
async fn open(request: Request<TestBody>) -> Response<Incoming> {
    tokio::time::timeout(PATIENCE, client().request(request))
        .await
        .expect("no response head within PATIENCE")
        .expect("request failed")
}

/// Reads body frames until at least `n` bytes arrived; fails the test if they do not come within [`PATIENCE`]
/// (which is what happens if the proxy waits for the rest of the body before sending any of it).
async fn read_at_least(body: &mut Incoming, n: usize, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{what}: only {} of {n} bytes arrived", got.len()))
            .unwrap_or_else(|| panic!("{what}: the body ended after {} bytes", got.len()))
            .unwrap_or_else(|err| panic!("{what}: the body failed: {err}"));
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    got
}

/// Reads a body to its end within [`PATIENCE`]: the bytes received, and how it ended (cleanly or with an error).
async fn read_to_end(body: &mut Incoming) -> (Vec<u8>, Result<(), hyper::Error>) {
    tokio::time::timeout(PATIENCE, async {
        let mut got = Vec::new();
        loop {
            match body.frame().await {
                None => return (got, Ok(())),
                Some(Err(err)) => return (got, Err(err)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        got.extend_from_slice(&data);
                    }
                }
            }
        }
    })
    .await
    .expect("the body neither ended nor failed within PATIENCE")
}

/// Every value of a header, in order.
fn all_values(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Asserts a reply is the proxy's own error in Cloudreve's JSON envelope with the given status.
fn assert_proxy_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "body: {:?}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let json = reply.json();
    assert_eq!(json["code"], status, "{json}");
    assert!(
        json["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
}

/// An HTTP/2 (prior knowledge) connection of its own to `addr`, so requests can carry any `:authority`.
async fn h2_connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// A raw upstream answering every connection with `response` after reading the request head, counting
/// connections.
async fn raw_upstream_answering(response: &'static [u8]) -> (RawUpstream, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let upstream = RawUpstream::start(move |mut stream| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = read_head(&mut stream).await;
            let _ = stream.write_all(response).await;
            // Dropped here: the connection closes after the answer.
        }
    })
    .await;
    (upstream, connections)
}

// 1. Methods and request bodies.

const PROPFIND_BODY: &[u8] = br#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:getlastmodified/><D:getcontentlength/><D:resourcetype/></D:prop></D:propfind>"#;
const LOCK_BODY: &[u8] = br#"<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>me</D:owner></D:lockinfo>"#;
const PROPPATCH_BODY: &[u8] = br#"<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>x</D:displayname></D:prop></D:set></D:propertyupdate>"#;

#[tokio::test]
async fn every_method_reaches_upstream_with_its_body() {
    let cases: [(&str, &str, &[u8]); 15] = [
        ("GET", "/api/v4/file?uri=cloudreve%3A%2F%2Fmy", b""),
        ("HEAD", "/dav/report.pdf", b""),
        (
            "POST",
            "/api/v4/session/token",
            br#"{"email":"a@example.com","password":"p"}"#,
        ),
        (
            "PUT",
            "/dav/notes.bin",
            b"binary \x00\x01\xfe\xff body\r\n\r\n",
        ),
        (
            "DELETE",
            "/api/v4/file",
            br#"{"uris":["cloudreve://my/a.txt"],"unlink":false}"#,
        ),
        ("PATCH", "/api/v4/file/metadata", br#"{"patches":[]}"#),
        ("OPTIONS", "/dav/", b""),
        ("PROPFIND", "/dav/docs/", PROPFIND_BODY),
        ("MKCOL", "/dav/new-folder/", b""),
        ("LOCK", "/dav/notes.txt", LOCK_BODY),
        ("UNLOCK", "/dav/notes.txt", b""),
        ("PROPPATCH", "/dav/notes.txt", PROPPATCH_BODY),
        ("COPY", "/dav/notes.txt", b""),
        ("MOVE", "/dav/notes.txt", b""),
        // A method no list knows: extension methods pass too.
        (
            "REPORT",
            "/dav/calendar/",
            b"<D:sync-collection xmlns:D=\"DAV:\"/>",
        ),
    ];
    let upstream = Recording::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    let client = client();
    for (i, (method, target, body)) in cases.into_iter().enumerate() {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = Request::builder()
            .method(method.clone())
            .uri(proxy.url(target));
        if !body.is_empty() {
            request = request.header("content-type", "application/xml; charset=utf-8");
        }
        let reply = send(&client, request.body(full(body)).unwrap()).await;
        assert_eq!(reply.status, 200, "{method}");
        assert_eq!(reply.header("x-upstream-method"), Some(method.as_str()));
        if method == Method::HEAD {
            assert!(reply.body.is_empty(), "HEAD has no body");
            assert_eq!(
                reply.header("content-length"),
                Some("13"),
                "HEAD keeps the length the upstream announced for GET (\"HEAD answered\")"
            );
        } else {
            assert_eq!(reply.body, format!("{method} answered"), "{method}");
        }
        assert_eq!(
            upstream.upstream.count(),
            i + 1,
            "{method}: one request each"
        );
        let seen = upstream.upstream.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.target, target, "{method}");
        assert_eq!(
            upstream.last_body(),
            body,
            "{method}: the body arrived intact"
        );
        if !body.is_empty() {
            let length = body.len().to_string();
            assert_eq!(
                seen.header("content-length"),
                Some(length.as_str()),
                "{method}"
            );
            assert_eq!(
                seen.header("content-type"),
                Some("application/xml; charset=utf-8")
            );
        }
    }
}

#[tokio::test]
async fn options_asterisk_reaches_upstream_as_asterisk() {
    // The asterisk form (RFC 9112 §3.2.4) is forwarded as it came, not turned into `/` or refused.
    let upstream = Recording::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    let reply = raw_exchange(
        proxy.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: cloud.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = upstream.upstream.last();
    assert_eq!(seen.method, Method::OPTIONS);
    assert_eq!(seen.target, "*");
    assert_eq!(seen.header("host"), Some("cloud.example"));
}

#[tokio::test]
async fn upstream_statuses_and_bodies_pass_unchanged() {
    // Upstream errors are Cloudreve's answers, not the proxy's: a 500 or 503 must not become a 502.
    let upstream = FakeCloudreve::start(|request: Request<Incoming>| async move {
        let code: u16 = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let builder = Response::builder()
            .status(code)
            .header("x-status-was", code);
        match code {
            204 | 304 => builder.body(empty()).unwrap(),
            301 => builder
                .header("location", "/dav/moved/")
                .body(full("moved"))
                .unwrap(),
            503 => builder
                .header("retry-after", "120")
                .body(full("maintenance"))
                .unwrap(),
            _ => builder.body(full(format!("status {code} body"))).unwrap(),
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    for code in [
        201u16, 204, 207, 301, 304, 400, 401, 403, 404, 409, 412, 423, 500, 502, 503,
    ] {
        let reply = get(&proxy.url(&format!("/dav/status/{code}"))).await;
        assert_eq!(reply.status.as_u16(), code);
        let code_text = code.to_string();
        assert_eq!(
            reply.header("x-status-was"),
            Some(code_text.as_str()),
            "{code} is the upstream's answer"
        );
        let expected = match code {
            204 | 304 => String::new(),
            301 => "moved".to_owned(),
            503 => "maintenance".to_owned(),
            _ => format!("status {code} body"),
        };
        assert_eq!(reply.body, expected, "{code}");
        if code == 301 {
            assert_eq!(reply.header("location"), Some("/dav/moved/"));
        }
        if code == 503 {
            assert_eq!(reply.header("retry-after"), Some("120"));
        }
    }
}

// 2. The raw request target.

#[tokio::test]
async fn raw_path_and_query_reach_upstream_byte_for_byte() {
    let targets = [
        // A signed download URL: the signature covers the raw path.
        "/api/v4/file/content/4Km6/0/%E6%96%87%E4%BB%B6.pdf?sign=abc%3D%3D%3A1735689600",
        "/api/v4/file/content/a%2Fb/0/x.txt?sign=abc%3D%3D",
        // Lower-case hex is not upper-cased, an encoded slash is not decoded.
        "/dav/a%2fb/%e6%96%87",
        "/dav//double//slash/",
        "//leading/double",
        "/dav/a/./b/../c",
        "/dav/trailing-dot./",
        "/dav/a+b%20c.txt?q=1+2&r=a%2Bb&s=a%20b",
        "/api/v4/file?uri=cloudreve%3A%2F%2Fmy%2Fdocs&page=0&page_size=100",
        "/api/v4/share?sign=abc%3D%3D&empty=&flag&dup=1&dup=2",
        "/x?",
        "/x?%00%zz%",
        "/x?a=~!*'()$,;:@/?&b=%25",
        "/dav/%7Bbraces%7D/%22quotes%22/%3Cangle%3E",
        "/api/v4/user/avatar", // not the avatar route: no id segment
    ];
    let upstream = FakeCloudreve::start(|_| async { json_response(r#"{"code":0}"#) }).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    for target in targets {
        let reply = get(&proxy.url(target)).await;
        assert_eq!(reply.status, 200, "{target}");
        assert_eq!(upstream.last().target, target);
    }
    assert_eq!(upstream.count(), targets.len());
}

#[tokio::test]
async fn raw_utf8_and_absolute_form_targets_pass_unchanged() {
    // Some WebDAV clients send UTF-8 unencoded; a proxy-style client sends the absolute form.
    let upstream = FakeCloudreve::start(|_| async { json_response(r#"{"code":0}"#) }).await;
    let proxy = TestProxy::start(&upstream.url()).await;

    let raw =
        "GET /dav/文件/報告.pdf?q=é HTTP/1.1\r\nHost: cloud.example\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(proxy.addr, raw.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(upstream.last().target, "/dav/文件/報告.pdf?q=é");

    let absolute = "GET http://cloud.example:8443/api/v4/file?uri=a%2Fb HTTP/1.1\r\n\
                    Host: cloud.example:8443\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(proxy.addr, absolute.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = upstream.last();
    assert_eq!(
        seen.target, "/api/v4/file?uri=a%2Fb",
        "origin form upstream"
    );
    assert_eq!(seen.header("host"), Some("cloud.example:8443"));
}

// 3. Host and end-to-end headers.

#[tokio::test]
async fn host_reaches_upstream_as_the_client_sent_it() {
    let upstream = FakeCloudreve::start(|_| async { json_response(r#"{"code":0}"#) }).await;
    let proxy = TestProxy::start(&upstream.url()).await;

    let request = Request::get(proxy.url(PING))
        .header("host", "Cloud.Example.com:8443")
        .body(empty())
        .unwrap();
    send(&client(), request).await;
    assert_eq!(
        upstream.last().header("host"),
        Some("Cloud.Example.com:8443")
    );

    // Without an explicit Host, the client names the proxy; that, not the upstream's address, arrives.
    get(&proxy.url(PING)).await;
    let proxy_host = proxy.addr.to_string();
    assert_eq!(upstream.last().header("host"), Some(proxy_host.as_str()));
    assert_ne!(proxy_host, upstream.addr.to_string());
}

#[tokio::test]
async fn webdav_auth_and_signature_headers_pass_unchanged() {
    let headers = [
        ("depth", "infinity"),
        (
            "destination",
            "http://cloud.example.com/dav/%E6%96%B0/new%20name.txt",
        ),
        ("overwrite", "F"),
        (
            "if",
            "</dav/notes.txt> (<opaquelocktoken:e71d4fae-5dec-22d6-fea5-00a0c91e6be4>)",
        ),
        (
            "lock-token",
            "<opaquelocktoken:e71d4fae-5dec-22d6-fea5-00a0c91e6be4>",
        ),
        ("timeout", "Second-3600, Infinite"),
        ("authorization", "Basic YWRtaW5AY2xvdWRyZXZlLm9yZzpwYXNz"),
        ("x-cr-signature", "c2lnbmF0dXJl:1735689600"),
        ("x-cr-version", "4.18.0"),
        ("x-cr-site-id", "a1b2c3"),
        ("x-wopi-override", "LOCK"),
        ("x-real-ip", "198.51.100.4"),
        ("cookie", "cloudreve-session=abc; theme=dark"),
        ("user-agent", "Microsoft-WebDAV-MiniRedir/10.0.19045"),
    ];
    let upstream = Recording::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;
    let mut request = Request::builder()
        .method(Method::from_bytes(b"MOVE").unwrap())
        .uri(proxy.url("/dav/notes.txt"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    // A repeated end-to-end header keeps every line, in order.
    request = request
        .header("x-cr-repeated", "first")
        .header("x-cr-repeated", "second");
    let reply = send(&client(), request.body(empty()).unwrap()).await;
    assert_eq!(reply.status, 200);
    let seen = upstream.upstream.last();
    for (name, value) in headers {
        assert_eq!(seen.header(name), Some(value), "{name}");
    }
    assert_eq!(
        all_values(&seen.headers, "x-cr-repeated"),
        ["first", "second"]
    );
}

#[tokio::test]
async fn response_headers_pass_unchanged() {
    let upstream = FakeCloudreve::start(|_| async {
        Response::builder()
            .status(206)
            .header("content-type", "application/pdf")
            .header(
                "content-disposition",
                "attachment; filename*=UTF-8''%E6%96%87%E4%BB%B6.pdf",
            )
            .header("content-range", "bytes 0-3/10")
            .header("accept-ranges", "bytes")
            .header("last-modified", "Sun, 29 Nov 2026 12:00:00 GMT")
            .header("etag", "\"v1\"")
            .header("set-cookie", "a=1; Path=/; HttpOnly")
            .header("set-cookie", "b=2; Path=/")
            .header("www-authenticate", "Basic realm=\"cloudreve\"")
            .header("lock-token", "<opaquelocktoken:abc>")
            .header("dav", "1, 2")
            .body(full("%PDF"))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let request = Request::get(proxy.url("/api/v4/file/content/x/0/a.pdf"))
        .header("range", "bytes=0-3")
        .header("if-range", "\"v1\"")
        .body(empty())
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, "%PDF");
    for (name, value) in [
        ("content-type", "application/pdf"),
        (
            "content-disposition",
            "attachment; filename*=UTF-8''%E6%96%87%E4%BB%B6.pdf",
        ),
        ("content-range", "bytes 0-3/10"),
        ("content-length", "4"),
        ("accept-ranges", "bytes"),
        ("last-modified", "Sun, 29 Nov 2026 12:00:00 GMT"),
        ("etag", "\"v1\""),
        ("www-authenticate", "Basic realm=\"cloudreve\""),
        ("lock-token", "<opaquelocktoken:abc>"),
        ("dav", "1, 2"),
    ] {
        assert_eq!(reply.header(name), Some(value), "{name}");
    }
    assert_eq!(
        all_values(&reply.headers, "set-cookie"),
        ["a=1; Path=/; HttpOnly", "b=2; Path=/"]
    );
    let seen = upstream.last();
    assert_eq!(seen.header("range"), Some("bytes=0-3"));
    assert_eq!(seen.header("if-range"), Some("\"v1\""));
}

// 4. Hop-by-hop headers.

#[tokio::test]
async fn hop_by_hop_request_headers_are_removed() {
    let upstream = FakeCloudreve::start(|_| async { json_response(r#"{"code":0}"#) }).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    // Raw bytes: hyper's client would manage some of these itself.
    let request = "GET /api/v4/site/ping HTTP/1.1\r\n\
                   Host: cloud.example\r\n\
                   Connection: close, X-Hop-Secret\r\n\
                   Connection: x-other-hop\r\n\
                   X-Hop-Secret: s1\r\n\
                   X-Other-Hop: s2\r\n\
                   Keep-Alive: timeout=5, max=100\r\n\
                   TE: trailers, deflate\r\n\
                   Trailer: X-Checksum\r\n\
                   Upgrade: websocket\r\n\
                   Proxy-Connection: keep-alive\r\n\
                   Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
                   X-End-To-End: kept\r\n\
                   Authorization: Bearer end.to.end\r\n\
                   \r\n";
    let reply = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = upstream.last();
    for gone in [
        "connection",
        "x-hop-secret",
        "x-other-hop",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
    ] {
        assert_eq!(
            seen.header(gone),
            None,
            "{gone} must not reach the upstream"
        );
    }
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    assert_eq!(seen.header("authorization"), Some("Bearer end.to.end"));
    assert_eq!(seen.header("host"), Some("cloud.example"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let (upstream, _) = raw_upstream_answering(
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: text/plain\r\n\
          Content-Length: 2\r\n\
          Connection: keep-alive, X-Internal-Hop\r\n\
          Connection: x-other-internal\r\n\
          X-Internal-Hop: secret\r\n\
          X-Other-Internal: secret\r\n\
          Keep-Alive: timeout=5, max=100\r\n\
          Proxy-Authenticate: Basic realm=\"upstream\"\r\n\
          Proxy-Connection: keep-alive\r\n\
          Trailer: X-Checksum\r\n\
          X-End-To-End: kept\r\n\
          \r\n\
          ok",
    )
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let reply = get(&proxy.url(PING)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "ok");
    for gone in [
        "connection",
        "x-internal-hop",
        "x-other-internal",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "trailer",
    ] {
        assert_eq!(reply.header(gone), None, "{gone} must not reach the client");
    }
    assert_eq!(reply.header("x-end-to-end"), Some("kept"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("content-length"), Some("2"));
}

// 5. X-Forwarded-For, X-Forwarded-Proto, Via.

#[tokio::test]
async fn forwarded_for_proto_and_via_are_set() {
    let upstream = FakeCloudreve::start(|_| async {
        Response::builder()
            .header("via", "1.1 cloudreve-internal-lb")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;

    let request = Request::get(proxy.url(PING))
        .header("x-forwarded-for", "203.0.113.9, 198.51.100.1")
        .header("x-forwarded-proto", "https")
        .header("via", "1.1 edge-lb")
        .body(empty())
        .unwrap();
    let reply = send(&client(), request).await;
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "a forged list from a peer outside server.trusted_proxies (empty by default) is replaced (issue 4)"
    );
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("http"),
        "the client's own claim is replaced by what the proxy saw"
    );
    assert_eq!(
        all_values(&seen.headers, "via"),
        ["1.1 edge-lb", "1.1 cloudreve-edge"]
    );
    assert_eq!(
        all_values(&reply.headers, "via"),
        ["1.1 cloudreve-internal-lb", "1.1 cloudreve-edge"],
        "the response names this proxy after the upstream's own Via"
    );

    // Without a previous list the client address is the whole value.
    get(&proxy.url(PING)).await;
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("via"), Some("1.1 cloudreve-edge"));
}

#[tokio::test]
async fn via_names_the_protocol_the_client_spoke() {
    let upstream = FakeCloudreve::start(|_| async { json_response(r#"{"code":0}"#) }).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET /api/v4/site/ping HTTP/1.0\r\nHost: cloud.example\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    let seen = upstream.last();
    assert_eq!(seen.header("via"), Some("1.0 cloudreve-edge"));
    assert_eq!(
        seen.version,
        Version::HTTP_11,
        "Cloudreve is spoken to in HTTP/1.1"
    );
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("\r\nvia: 1.1 cloudreve-edge\r\n"),
        "{reply}"
    );
}

// 6. Uploads.

#[tokio::test]
async fn large_upload_with_content_length_streams_intact() {
    const SIZE: usize = 25 * 1024 * 1024; // Cloudreve's default upload chunk
    let data = pattern(SIZE);
    let expected = format!("{:016x}", fnv1a(FNV_OFFSET, &data));
    let upstream = checksumming_upstream().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let (tx, body) = channel_body();
    feed(tx, data, 256 * 1024);
    let request = Request::post(proxy.url("/api/v4/file/upload/5ffd4c8e-session/0"))
        .header("content-length", SIZE)
        .header("content-type", "application/octet-stream")
        .header("authorization", "Bearer a.b.c")
        .body(body)
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let size = SIZE.to_string();
    assert_eq!(reply.header("x-received-length"), Some(size.as_str()));
    assert_eq!(reply.header("x-received-fnv"), Some(expected.as_str()));
    let seen = upstream.last();
    assert_eq!(seen.header("content-length"), Some(size.as_str()));
    assert_eq!(seen.header("transfer-encoding"), None);
    assert_eq!(seen.header("authorization"), Some("Bearer a.b.c"));
}

#[tokio::test]
async fn chunked_upload_keeps_expected_entity_length() {
    // WebDAV clients (macOS Finder) send chunked bodies and announce the size in X-Expected-Entity-Length.
    const SIZE: usize = 3 * 1024 * 1024 + 17;
    let data = pattern(SIZE);
    let expected = format!("{:016x}", fnv1a(FNV_OFFSET, &data));
    let upstream = checksumming_upstream().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let (tx, body) = channel_body();
    feed(tx, data, 100_000);
    let request = Request::put(proxy.url("/dav/big%20file.bin"))
        .header("x-expected-entity-length", SIZE)
        .body(body)
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let size = SIZE.to_string();
    assert_eq!(reply.header("x-received-length"), Some(size.as_str()));
    assert_eq!(reply.header("x-received-fnv"), Some(expected.as_str()));
    let seen = upstream.last();
    assert_eq!(seen.header("x-expected-entity-length"), Some(size.as_str()));
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
}

#[tokio::test]
async fn upload_reaches_upstream_before_the_client_has_sent_it_all() {
    // The upstream signals when the first piece arrived; only then does the client send the rest. A proxy
    // that buffered the request body would never forward the first piece, and the test would time out.
    let (first_seen_tx, first_seen_rx) = oneshot::channel::<usize>();
    let first_seen_tx = Arc::new(Mutex::new(Some(first_seen_tx)));
    let upstream = FakeCloudreve::start(move |request: Request<Incoming>| {
        let first_seen_tx = Arc::clone(&first_seen_tx);
        async move {
            let mut body = request.into_body();
            let mut length = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    if length == 0 {
                        if let Some(tx) = first_seen_tx.lock().unwrap().take() {
                            let _ = tx.send(data.len());
                        }
                    }
                    length += data.len();
                }
            }
            Response::builder()
                .header("x-received-length", length)
                .body(empty())
                .unwrap()
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let (tx, body) = channel_body();
    let request = Request::post(proxy.url("/api/v4/file/upload/session/1"))
        .header("content-length", 2048)
        .body(body)
        .unwrap();
    let pending = tokio::spawn(async move { send(&client(), request).await });
    tx.send(Ok(Bytes::from(vec![1u8; 1024]))).await.unwrap();
    let arrived = tokio::time::timeout(PATIENCE, first_seen_rx)
        .await
        .expect("the first piece did not reach the upstream while the client held the rest")
        .unwrap();
    assert!(arrived > 0 && arrived <= 1024, "{arrived}");
    tx.send(Ok(Bytes::from(vec![2u8; 1024]))).await.unwrap();
    drop(tx);
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-received-length"), Some("2048"));
}

#[tokio::test]
async fn expect_100_continue_upload_completes() {
    // curl and many WebDAV clients ask before sending a large body.
    let upstream = checksumming_upstream().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    tokio::time::timeout(PATIENCE, async {
        let mut stream = Raw::connect(proxy.addr).await;
        stream
            .send(
                b"PUT /dav/expect.txt HTTP/1.1\r\nHost: cloud.example\r\nContent-Length: 5\r\n\
                  Expect: 100-continue\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let interim = stream.head().await;
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
        stream.send(b"hello").await.unwrap();
        let rest = stream.closed_cleanly().await;
        let rest = String::from_utf8_lossy(&rest).to_ascii_lowercase();
        assert!(rest.starts_with("http/1.1 200"), "{rest}");
        assert!(rest.contains("x-received-length: 5\r\n"), "{rest}");
    })
    .await
    .expect("the Expect: 100-continue exchange did not finish");
    assert_eq!(upstream.last().method, Method::PUT);
}

// 7, 8. Downloads and server-sent events stream.

#[tokio::test]
async fn download_reaches_client_before_upstream_finishes() {
    const FIRST: &[u8] = b"%PDF-1.7 first chunk of the file\n";
    const REST: &[u8] = b"the rest of the file, sent only after the client read the first chunk";
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let upstream = FakeCloudreve::start(move |_| {
        let gate = Arc::clone(&gate);
        async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from_static(FIRST))).await;
                gate.notified().await;
                let _ = tx.send(Ok(Bytes::from_static(REST))).await;
            });
            Response::builder()
                .header("content-type", "application/pdf")
                .header("content-length", FIRST.len() + REST.len())
                .body(body)
                .unwrap()
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let response = open(
        Request::get(proxy.url("/api/v4/file/content/x/0/a.pdf?sign=s%3D"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let total = (FIRST.len() + REST.len()).to_string();
    assert_eq!(response.headers()["content-length"], total.as_str());
    let mut body = response.into_body();
    let first = read_at_least(&mut body, FIRST.len(), "first chunk").await;
    assert_eq!(first, FIRST);
    release.notify_one();
    let (rest, end) = read_to_end(&mut body).await;
    end.expect("the download ends cleanly");
    assert_eq!(rest, REST);
}

#[tokio::test]
async fn large_download_arrives_intact() {
    const SIZE: usize = 25 * 1024 * 1024;
    let data = pattern(SIZE);
    let expected = fnv1a(FNV_OFFSET, &data);
    let upstream = FakeCloudreve::start(move |_| {
        let data = data.clone();
        async move {
            let (tx, body) = channel_body();
            feed(tx, data, 256 * 1024);
            Response::builder()
                .header("content-type", "application/octet-stream")
                .header("content-length", SIZE)
                .body(body)
                .unwrap()
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let response = open(
        Request::get(proxy.url("/api/v4/file/content/x/0/big.bin?sign=s%3D"))
            .body(empty())
            .unwrap(),
    )
    .await;
    let size = SIZE.to_string();
    assert_eq!(response.headers()["content-length"], size.as_str());
    let mut body = response.into_body();
    let (mut length, mut hash) = (0, FNV_OFFSET);
    let finished = tokio::time::timeout(PATIENCE, async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("the download failed").into_data() {
                length += data.len();
                hash = fnv1a(hash, &data);
            }
        }
    })
    .await;
    assert!(
        finished.is_ok(),
        "the download did not finish within PATIENCE"
    );
    assert_eq!(length, SIZE);
    assert_eq!(hash, expected, "the bytes arrived in order, unchanged");
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    const EVENTS: [&str; 3] = [
        "event: keep-alive\ndata: {}\n\n",
        "id: 1\nevent: update\ndata: {\"type\":\"create\",\"uri\":\"cloudreve://my/a\"}\n\n",
        "id: 2\nevent: update\ndata: {\"type\":\"delete\",\"uri\":\"cloudreve://my/b\"}\n\n",
    ];
    let next = Arc::new(Notify::new());
    let gate = Arc::clone(&next);
    let upstream = FakeCloudreve::start(move |_| {
        let gate = Arc::clone(&gate);
        async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                for event in EVENTS {
                    if tx
                        .send(Ok(Bytes::from_static(event.as_bytes())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    gate.notified().await; // the next event waits until the test read this one
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(body)
                .unwrap()
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let response = open(
        Request::get(proxy.url("/api/v4/file/events"))
            .header("accept", "text/event-stream")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(!response.headers().contains_key("content-length"));
    let mut body = response.into_body();
    for (i, event) in EVENTS.into_iter().enumerate() {
        let got = read_at_least(&mut body, event.len(), &format!("event {i}")).await;
        assert_eq!(String::from_utf8(got).unwrap(), event, "event {i}, alone");
        next.notify_one();
    }
    let (rest, end) = read_to_end(&mut body).await;
    end.expect("the stream ends cleanly when the upstream ends it");
    assert!(rest.is_empty());
}

// 9, 10, 11. Upstream failures before the response head.

#[tokio::test]
async fn upstream_refused_maps_to_502_and_recovers_without_restart() {
    // Nobody else can take the port meanwhile, so the upstream comes back on exactly this address.
    let (socket, url) = refusing_upstream();
    let proxy = TestProxy::start(&url).await;

    let refused = get(&proxy.url(PING)).await;
    assert_proxy_error(&refused, 502);
    assert_eq!(refused.header("cache-status"), None);
    assert_eq!(refused.header("x-cache"), None);

    let listener = socket.listen(128).unwrap();
    let upstream = FakeCloudreve::start_on(listener, |_| async {
        json_response(r#"{"code":0,"data":"pong","msg":""}"#)
    });
    let back = get(&proxy.url(PING)).await;
    assert_eq!(back.status, 200);
    assert_eq!(back.json()["data"], "pong");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn upstream_silent_maps_to_504_after_response_header_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let (closed_tx, closed_rx) = oneshot::channel::<()>();
    let closed_tx = Arc::new(Mutex::new(Some(closed_tx)));
    let upstream = RawUpstream::start(move |mut stream| {
        let closed_tx = Arc::clone(&closed_tx);
        async move {
            let _ = read_head(&mut stream).await;
            // Never answer; report when the proxy gives up on the connection.
            drain(&mut stream).await;
            if let Some(tx) = closed_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    })
    .await;
    let mut config = test_config(&upstream.url());
    config.upstream.response_header_timeout = TIMEOUT;
    let proxy = TestProxy::start_with(config).await;
    let started = Instant::now();
    let reply = get(&proxy.url(PING)).await;
    let waited = started.elapsed();
    assert_proxy_error(&reply, 504);
    assert!(waited >= TIMEOUT, "answered after {waited:?}");
    assert!(
        waited < Duration::from_secs(4),
        "answered after {waited:?}: not the 300 ms response header timeout (the test config's default is 5 s)"
    );
    tokio::time::timeout(PATIENCE, closed_rx)
        .await
        .expect("the proxy kept the timed-out upstream connection open")
        .unwrap();
}

#[tokio::test]
async fn slow_streaming_body_is_not_cut_by_response_header_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    const GAP: Duration = Duration::from_millis(450);
    const CHUNKS: usize = 4;
    let upstream = FakeCloudreve::start(|_| async {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            for i in 0..CHUNKS {
                if i > 0 {
                    // Spacing the chunks, not waiting for readiness: each gap outlasts the head timeout.
                    tokio::time::sleep(GAP).await;
                }
                if tx
                    .send(Ok(Bytes::from(format!("chunk {i}\n"))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Response::builder()
            .header("content-type", "application/zip")
            .body(body)
            .unwrap()
    })
    .await;
    let mut config = test_config(&upstream.url());
    config.upstream.response_header_timeout = TIMEOUT;
    let proxy = TestProxy::start_with(config).await;
    let started = Instant::now();
    let response = open(
        Request::get(proxy.url("/api/v4/file/archive/x.zip"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert!(
        started.elapsed() < GAP * (CHUNKS as u32 - 1),
        "the head came before the body was complete"
    );
    assert_eq!(response.status(), 200);
    let (body, end) = read_to_end(&mut response.into_body()).await;
    end.expect("the body was not cut");
    let expected: String = (0..CHUNKS).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(String::from_utf8(body).unwrap(), expected);
    assert!(
        started.elapsed() > TIMEOUT * 3,
        "the body outlasted the head timeout several times over"
    );
}

#[tokio::test]
async fn upstream_reset_before_head_maps_to_502() {
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let upstream = RawUpstream::start(move |mut stream| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = read_head(&mut stream).await;
            // SO_LINGER 0: closing sends RST, not FIN.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let reply = get(&proxy.url(PING)).await;
    assert_proxy_error(&reply, 502);
    assert_eq!(connections.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn upstream_closing_before_head_maps_to_502_and_is_not_retried() {
    // A POST that may have been acted on must not be sent twice.
    let (upstream, connections) = raw_upstream_answering(b"").await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let request = Request::post(proxy.url("/api/v4/file/create"))
        .header("content-type", "application/json")
        .body(full(r#"{"uri":"cloudreve://my/new.txt","type":"file"}"#))
        .unwrap();
    let reply = send(&client(), request).await;
    assert_proxy_error(&reply, 502);
    assert_eq!(connections.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn upstream_garbage_maps_to_502() {
    // The connection stays open after the garbage: the 502 comes from parsing, not from the close.
    let upstream = RawUpstream::start(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        let _ = stream
            .write_all(b"SSH-2.0-OpenSSH_9.6\r\nthis is not http\r\n\r\n")
            .await;
        drain(&mut stream).await;
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let reply = get(&proxy.url(PING)).await;
    assert_proxy_error(&reply, 502);
}

// 12. A body that breaks after the head was sent.

const TRUNCATED_LENGTH: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n0123456789";
const TRUNCATED_CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/zip\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n";

#[tokio::test]
async fn broken_body_with_content_length_aborts_the_client_connection() {
    let (upstream, _) = raw_upstream_answering(TRUNCATED_LENGTH).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let response = open(
        Request::get(proxy.url("/dav/big.bin"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200, "the head was already on its way");
    assert_eq!(response.headers()["content-length"], "1000");
    let (got, end) = read_to_end(&mut response.into_body()).await;
    assert!(end.is_err(), "a truncated body must not end cleanly");
    assert_eq!(got, b"0123456789");
}

#[tokio::test]
async fn broken_chunked_body_aborts_the_client_connection() {
    let (upstream, _) = raw_upstream_answering(TRUNCATED_CHUNKED).await;
    let proxy = TestProxy::start(&upstream.url()).await;

    let response = open(
        Request::get(proxy.url("/api/v4/file/archive/a.zip"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (got, end) = read_to_end(&mut response.into_body()).await;
    assert!(end.is_err(), "a truncated body must not end cleanly");
    assert_eq!(got, b"0123456789");

    // On the wire: the connection closes without the last-chunk.
    let raw = raw_exchange(
        proxy.addr,
        b"GET /api/v4/file/archive/a.zip HTTP/1.1\r\nHost: cloud.example\r\n\r\n",
    )
    .await;
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    // The one chunk (hyper writes its size in upper-case hex), then nothing: no last-chunk `0\r\n\r\n`.
    assert!(body.eq_ignore_ascii_case("a\r\n0123456789\r\n"), "{body:?}");
}

#[tokio::test]
async fn broken_body_resets_the_http2_stream() {
    for (framing, answer) in [
        ("content-length", TRUNCATED_LENGTH),
        ("chunked", TRUNCATED_CHUNKED),
    ] {
        let (upstream, _) = raw_upstream_answering(answer).await;
        let proxy = TestProxy::start(&upstream.url()).await;
        let request = Request::get(proxy.url("/dav/big.bin"))
            .body(empty())
            .unwrap();
        let response = tokio::time::timeout(PATIENCE, h2_client().request(request))
            .await
            .expect("no response head within PATIENCE")
            .expect("request failed");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), 200, "{framing}");
        let (got, end) = read_to_end(&mut response.into_body()).await;
        assert!(
            end.is_err(),
            "{framing}: a truncated body must not end cleanly over HTTP/2"
        );
        assert_eq!(got, b"0123456789", "{framing}");
    }
}

// 13. HTTP/2 clients.

#[tokio::test]
async fn http2_client_passes_through_as_http11_with_host_from_authority() {
    let upstream = Recording::start().await;
    let proxy = TestProxy::start(&upstream.upstream.url()).await;

    // The ordinary h2c client: :authority is the proxy's address.
    let reply = send(
        &h2_client(),
        Request::get(proxy.url("/api/v4/file?uri=a%2Fb"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "GET answered");
    assert_eq!(reply.header("via"), Some("1.1 cloudreve-edge"));
    let seen = upstream.upstream.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.target, "/api/v4/file?uri=a%2Fb");
    let proxy_host = proxy.addr.to_string();
    assert_eq!(seen.header("host"), Some(proxy_host.as_str()));
    assert_eq!(seen.header("via"), Some("2 cloudreve-edge"));

    // A connection of our own, so :authority can name the site rather than the socket; a body too.
    let mut h2 = h2_connection(proxy.addr).await;
    let body = b"uploaded over h2\n".repeat(1000);
    let request = Request::put("http://cloud.example.com/dav/%E6%96%87.txt")
        .header("content-length", body.len())
        .header("depth", "0")
        .body(full(body.clone()))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, h2.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let (answer, end) = read_to_end(&mut response.into_body()).await;
    end.unwrap();
    assert_eq!(answer, b"PUT answered");
    let seen = upstream.upstream.last();
    assert_eq!(seen.method, Method::PUT);
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.target, "/dav/%E6%96%87.txt");
    assert_eq!(seen.header("host"), Some("cloud.example.com"));
    assert_eq!(seen.header("depth"), Some("0"));
    let length = body.len().to_string();
    assert_eq!(seen.header("content-length"), Some(length.as_str()));
    assert_eq!(upstream.last_body(), body);
}

// 14. Only avatar responses carry cache headers.

#[tokio::test]
async fn non_avatar_responses_carry_no_cache_status() {
    // Even a response a shared cache could store is passed through, not stored, off the avatar route.
    let upstream = FakeCloudreve::start(|_| async {
        Response::builder()
            .header("content-type", "image/png")
            .header("cache-control", "public, max-age=86400")
            .body(full("png"))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let cases = [
        ("GET", PING),
        ("GET", "/static/img/logo.png"),
        ("GET", "/api/v4/user/avatar"),
        ("GET", "/api/v4/user/avatars/img1"),
        ("GET", "/api/v4/user/info/img1"),
        ("POST", "/api/v4/user/avatar/img1"),
        ("PUT", "/api/v4/user/setting/avatar"),
        ("DELETE", "/api/v4/user/avatar/img1"),
        ("PROPFIND", "/dav/"),
    ];
    for round in 0..2 {
        for (method, target) in cases {
            let reply = request(method, &proxy.url(target)).await;
            assert_eq!(reply.status, 200, "{method} {target}");
            assert_eq!(reply.header("cache-status"), None, "{method} {target}");
            assert_eq!(reply.header("x-cache"), None, "{method} {target}");
            assert_eq!(reply.header("age"), None, "{method} {target}");
        }
        assert_eq!(
            upstream.count(),
            cases.len() * (round + 1),
            "every request went upstream"
        );
    }
}

// 15. Concurrency.

#[tokio::test]
async fn concurrent_identical_requests_are_each_forwarded() {
    // Every upstream handler waits until all of them are in: the test passes only if the proxy sends all
    // the requests at once, none coalesced with another or queued behind it.
    const CLIENTS: usize = 100;
    let all_in = Arc::new(Barrier::new(CLIENTS));
    let upstream = FakeCloudreve::start(move |request: Request<Incoming>| {
        let all_in = Arc::clone(&all_in);
        async move {
            let id = request.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            all_in.wait().await;
            Response::builder()
                .header("x-request-id", id.as_str())
                .body(full(format!("answer for {id}")))
                .unwrap()
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let url = proxy.url("/api/v4/file?uri=cloudreve%3A%2F%2Fmy&page=0");
    let requests: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let request = Request::get(url.as_str())
                .header("x-request-id", i)
                .body(empty())
                .unwrap();
            tokio::spawn(async move { send(&client(), request).await })
        })
        .collect();
    for (i, request) in requests.into_iter().enumerate() {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(
            reply.body,
            format!("answer for {i}"),
            "request {i} got its own answer"
        );
    }
    assert_eq!(upstream.count(), CLIENTS);
}

#[tokio::test]
async fn connect_is_refused_and_never_tunnelled() {
    let upstream = FakeCloudreve::start(|_| async { json_response(r#"{"code":0}"#) }).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let target = upstream.addr.to_string();
    let request =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    let reply = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(upstream.count(), 0, "nothing reached any upstream");
}
