//! What reaches Cloudreve: every method with its body (WebDAV's too), upstream statuses as they are, the
//! raw request target byte for byte, HTTP/2 clients as HTTP/1.1, each request on its own, and no `CONNECT`.

use std::sync::Arc;

use super::{Recording, read_to_end};
use crate::support::*;
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

// Helpers of these tests.

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
