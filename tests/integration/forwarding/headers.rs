//! Header fields in both directions: `Host` and end-to-end fields unchanged, hop-by-hop fields removed,
//! `X-Forwarded-For`/`-Proto` and `Via` set, and cache fields only on what a rule caches.

use super::{PING, Recording, raw_upstream_answering};
use crate::support::*;
use http::{Method, Request, Response, Version};

// Helpers of these tests.

/// Every value of a header, in order.
fn all_values(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
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
