//! The avatar cache, end to end: the real proxy in front of a fake Cloudreve that counts what it receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use cloudreve_edge::cache::policy::AvatarKey;
use http::{Request, Response};
use tokio::sync::Notify;

const AVATAR: &str = "/api/v4/user/avatar/img1";

/// The `ttl=` parameter of a `Cache-Status` value.
fn ttl_of(cache_status: &str) -> u64 {
    cache_status
        .split("; ")
        .find_map(|p| p.strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl in {cache_status:?}"))
        .parse()
        .unwrap()
}

/// A proxy that never serves stale while revalidating, so expiry shows as a plain refetch.
async fn proxy_without_stale(upstream: &FakeCloudreve) -> TestProxy {
    let mut config = test_config(&upstream.url());
    config.cache.avatar_limits_mut().stale_while_revalidate = Duration::ZERO;
    TestProxy::start_with(config).await
}

/// A fake upstream answering every avatar with the given status, headers and body.
async fn upstream_answering(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
) -> FakeCloudreve {
    FakeCloudreve::start(move |_| async move {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(full(Bytes::from_static(body))).unwrap()
    })
    .await
}

#[tokio::test]
async fn miss_then_hit() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let first = get(&proxy.url(AVATAR)).await;
    let second = get(&proxy.url(AVATAR)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache(), "MISS");
    assert!(
        first
            .cache_status()
            .starts_with("cloudreve-edge; fwd=miss; fwd-status=200; stored; ttl="),
        "{}",
        first.cache_status()
    );
    assert_eq!(second.x_cache(), "HIT");
    assert!(
        second
            .cache_status()
            .starts_with("cloudreve-edge; hit; ttl="),
        "{}",
        second.cache_status()
    );
    assert!((86_399..=86_400).contains(&ttl_of(second.cache_status())));
    assert_eq!(second.body, avatar_bytes("img1"));
    assert_eq!(second.header("content-type"), Some("image/png"));
    assert_eq!(
        second.header("last-modified"),
        Some("Sun, 29 Nov 2026 12:00:00 GMT")
    );
    assert_eq!(second.header("age"), Some("0"));
    assert_eq!(upstream.count(), 1, "the hit never reached the upstream");
}

#[tokio::test]
async fn hit_age_grows_with_time_in_cache() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    proxy.clock.advance(Duration::from_secs(100));
    let hit = get(&proxy.url(AVATAR)).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("age"), Some("100"));
    assert!((86_299..=86_300).contains(&ttl_of(hit.cache_status())));
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn entry_expires_after_max_age() {
    static HEADERS: [(&str, &str); 2] = [
        ("content-type", "image/png"),
        ("cache-control", "public, max-age=30"),
    ];
    let upstream = upstream_answering(200, &HEADERS, b"png").await;
    let proxy = proxy_without_stale(&upstream).await;
    get(&proxy.url(AVATAR)).await;
    proxy.clock.advance(Duration::from_secs(29));
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
    assert_eq!(upstream.count(), 1);
    proxy.clock.advance(Duration::from_secs(2));
    let refetched = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        refetched.x_cache(),
        "MISS",
        "stale entries are never served"
    );
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        get(&proxy.url(AVATAR)).await.x_cache(),
        "HIT",
        "the refetch was stored again"
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn s_maxage_wins_and_upstream_age_is_subtracted() {
    static HEADERS: [(&str, &str); 3] = [
        ("content-type", "image/png"),
        ("cache-control", "public, max-age=86400, s-maxage=100"),
        ("age", "40"),
    ];
    let upstream = upstream_answering(200, &HEADERS, b"png").await;
    let proxy = proxy_without_stale(&upstream).await;
    let miss = get(&proxy.url(AVATAR)).await;
    assert!(
        (59..=60).contains(&ttl_of(miss.cache_status())),
        "{}",
        miss.cache_status()
    );
    let hit = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        hit.header("age"),
        Some("40"),
        "the upstream Age carries over"
    );
    proxy.clock.advance(Duration::from_secs(61));
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn nocache_truthy_is_never_looked_up_nor_stored() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    get(&proxy.url(AVATAR)).await; // stored
    for query in ["?nocache=1&key=2", "?nocache=true", "?nocache=T"] {
        let reply = get(&proxy.url(&format!("{AVATAR}{query}"))).await;
        assert_eq!(reply.x_cache(), "BYPASS", "{query}");
        assert_eq!(
            reply.cache_status(),
            "cloudreve-edge; fwd=bypass; fwd-status=200; detail=nocache"
        );
        assert_eq!(
            upstream.last().target,
            format!("{AVATAR}{query}"),
            "forwarded as it came"
        );
    }
    assert_eq!(
        upstream.count(),
        4,
        "every nocache request reached the upstream"
    );
}

#[tokio::test]
async fn nocache_response_is_not_stored() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    get(&proxy.url(&format!("{AVATAR}?nocache=1"))).await;
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn nocache_falsy_shares_the_entry() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    for query in [
        "?nocache=0",
        "?nocache=",
        "?nocache",
        "?nocache=false&key=9",
        "?key=3",
        "?NOCACHE=1",
    ] {
        let reply = get(&proxy.url(&format!("{AVATAR}{query}"))).await;
        assert_eq!(reply.x_cache(), "HIT", "{query}");
        assert_eq!(reply.body, avatar_bytes("img1"));
    }
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn nocache_invalid_is_forwarded_untouched() {
    let upstream = FakeCloudreve::start(|_| async {
        json_response(r#"{"code":40001,"msg":"Parameter error"}"#)
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let target = format!("{AVATAR}?nocache=yes&key=1");
    let reply = get(&proxy.url(&target)).await;
    assert_eq!(reply.x_cache(), "BYPASS");
    assert_eq!(
        reply.json()["code"],
        40001,
        "the client sees Cloudreve's own error"
    );
    assert_eq!(upstream.last().target, target);
    get(&proxy.url(&target)).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn json_200_is_never_stored() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let target = "/api/v4/user/avatar/unknownUser";
    let first = get(&proxy.url(target)).await;
    assert_eq!(first.json()["code"], 40021);
    assert_eq!(
        first.cache_status(),
        "cloudreve-edge; fwd=miss; fwd-status=200; detail=not-image"
    );
    let second = get(&proxy.url(target)).await;
    assert_eq!(second.x_cache(), "MISS");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn json_200_marked_public_is_still_not_stored() {
    static HEADERS: [(&str, &str); 2] = [
        ("content-type", "application/json"),
        ("cache-control", "public, max-age=86400"),
    ];
    let upstream = upstream_answering(200, &HEADERS, br#"{"code":50001}"#).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    get(&proxy.url(AVATAR)).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn not_found_is_stored_with_capped_ttl() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_without_stale(&upstream).await;
    let target = "/api/v4/user/avatar/none1";
    let miss = get(&proxy.url(target)).await;
    assert_eq!(miss.status, 404);
    assert!(ttl_of(miss.cache_status()) <= 60, "{}", miss.cache_status());
    let hit = get(&proxy.url(target)).await;
    assert_eq!(
        (hit.status, hit.x_cache()),
        (http::StatusCode::NOT_FOUND, "HIT")
    );
    proxy.clock.advance(Duration::from_secs(61));
    assert_eq!(
        get(&proxy.url(target)).await.x_cache(),
        "MISS",
        "capped at negative_ttl, not max-age=86400"
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn gravatar_redirect_is_stored() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let target = "/api/v4/user/avatar/grav1";
    get(&proxy.url(target)).await;
    let hit = get(&proxy.url(target)).await;
    assert_eq!(hit.status, 302);
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(
        hit.header("location"),
        Some("https://www.gravatar.com/avatar/grav1?d=mm&s=200")
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn server_error_is_not_stored() {
    static HEADERS: [(&str, &str); 2] = [
        ("content-type", "text/plain"),
        ("cache-control", "public, max-age=86400"),
    ];
    let upstream = upstream_answering(500, &HEADERS, b"seeker can't seek\n").await;
    let proxy = TestProxy::start(&upstream.url()).await;
    assert_eq!(get(&proxy.url(AVATAR)).await.status, 500);
    assert_eq!(get(&proxy.url(AVATAR)).await.status, 500);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn private_no_store_and_set_cookie_are_not_stored() {
    static PRIVATE: [(&str, &str); 2] = [
        ("content-type", "image/png"),
        ("cache-control", "private, max-age=60"),
    ];
    static NO_STORE: [(&str, &str); 2] = [
        ("content-type", "image/png"),
        ("cache-control", "no-store, max-age=60"),
    ];
    static COOKIE: [(&str, &str); 3] = [
        ("content-type", "image/png"),
        ("cache-control", "public, max-age=60"),
        ("set-cookie", "s=1"),
    ];
    let cases: [(&'static [(&str, &str)], &str); 3] = [
        (&PRIVATE, "private"),
        (&NO_STORE, "no-store"),
        (&COOKIE, "set-cookie"),
    ];
    for (headers, detail) in cases {
        let upstream = upstream_answering(200, headers, b"png").await;
        let proxy = TestProxy::start(&upstream.url()).await;
        let first = get(&proxy.url(AVATAR)).await;
        assert!(
            first.cache_status().ends_with(&format!("detail={detail}")),
            "{}",
            first.cache_status()
        );
        get(&proxy.url(AVATAR)).await;
        assert_eq!(upstream.count(), 2, "{detail}");
    }
}

#[tokio::test]
async fn image_over_the_size_limit_is_passed_not_stored() {
    let big = Bytes::from(vec![7u8; 64 * 1024]);
    let body = big.clone();
    let upstream = FakeCloudreve::image(body, "public, max-age=60").await;
    let mut config = test_config(&upstream.url());
    config.cache.avatar_limits_mut().max_object_size = 16 * 1024;
    let proxy = TestProxy::start_with(config).await;
    let first = get(&proxy.url(AVATAR)).await;
    assert_eq!(first.body, big, "streamed through whole");
    assert!(
        first.cache_status().ends_with("detail=too-large"),
        "{}",
        first.cache_status()
    );
    get(&proxy.url(AVATAR)).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn chunked_image_over_the_size_limit_is_passed_whole() {
    // No Content-Length: the limit is found while reading, and what was read is replayed.
    let upstream = FakeCloudreve::start(|_| async {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            for i in 0..8u8 {
                let _ = tx.send(Ok(Bytes::from(vec![i; 4096]))).await;
            }
        });
        Response::builder()
            .header("content-type", "image/png")
            .header("cache-control", "public, max-age=60")
            .body(body)
            .unwrap()
    })
    .await;
    let mut config = test_config(&upstream.url());
    config.cache.avatar_limits_mut().max_object_size = 10_000;
    let proxy = TestProxy::start_with(config).await;
    let reply = get(&proxy.url(AVATAR)).await;
    let expected: Vec<u8> = (0..8u8).flat_map(|i| vec![i; 4096]).collect();
    assert_eq!(reply.body, expected);
    get(&proxy.url(AVATAR)).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn distinct_ids_are_never_mixed() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let ids = ["img1", "img2", "imgA", "imga", "img10", "img1a"];
    for round in 0..2 {
        for id in ids {
            let reply = get(&proxy.url(&format!("/api/v4/user/avatar/{id}"))).await;
            assert_eq!(reply.body, avatar_bytes(id), "round {round}, id {id}");
        }
    }
    assert_eq!(upstream.count(), ids.len(), "each id fetched once");
}

#[tokio::test]
async fn non_canonical_ids_bypass_the_cache() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    get(&proxy.url(AVATAR)).await; // stores img1
    for target in ["/api/v4/user/avatar/img%31", "/api/v4/user/avatar/img1/"] {
        let reply = get(&proxy.url(target)).await;
        assert_eq!(reply.x_cache(), "BYPASS", "{target}");
        assert!(reply.cache_status().ends_with("detail=non-canonical-id"));
        assert_eq!(upstream.last().target, target, "forwarded byte for byte");
    }
}

#[tokio::test]
async fn head_is_answered_from_the_stored_get() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    let head = request("HEAD", &proxy.url(AVATAR)).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());
    let length = avatar_bytes("img1").len().to_string();
    assert_eq!(head.header("content-length"), Some(length.as_str()));
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn head_miss_fetches_with_get_and_stores() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let head = request("HEAD", &proxy.url(AVATAR)).await;
    assert_eq!(
        head.status, 200,
        "Cloudreve itself would answer 404 to HEAD"
    );
    assert!(head.body.is_empty());
    assert_eq!(upstream.last().method, http::Method::GET);
    let get = get(&proxy.url(AVATAR)).await;
    assert_eq!(get.x_cache(), "HIT");
    assert_eq!(get.body, avatar_bytes("img1"));
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn fill_sends_no_conditionals_or_range_upstream() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let request = Request::get(proxy.url(AVATAR))
        .header("if-modified-since", "Sun, 29 Nov 2026 12:00:00 GMT")
        .header("if-none-match", "\"x\"")
        .header("range", "bytes=0-3")
        .header("user-agent", "test-agent")
        .body(empty())
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(
        reply.status, 206,
        "the range is answered from the stored whole"
    );
    let whole = avatar_bytes("img1");
    let expected = format!("bytes 0-3/{}", whole.len());
    assert_eq!(reply.header("content-range"), Some(expected.as_str()));
    assert_eq!(reply.body, whole.slice(0..4));
    let received = upstream.last();
    for header in ["if-modified-since", "if-none-match", "range"] {
        assert_eq!(
            received.header(header),
            None,
            "{header} must not reach the fill"
        );
    }
    assert_eq!(received.header("user-agent"), Some("test-agent"));
}

#[tokio::test]
async fn concurrent_misses_cause_one_upstream_request() {
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let upstream = FakeCloudreve::start(move |request| {
        let gate = Arc::clone(&gate);
        async move {
            gate.notified().await;
            cloudreve_avatar(&request)
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    const CLIENTS: usize = 50;
    let url = proxy.url(AVATAR);
    let requests: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(get_owned(url.clone())))
        .collect();
    let key = AvatarKey::from_path_segment("img1").unwrap();
    eventually("49 requests waiting on the fill", || {
        proxy.proxy.cache().waiters(key.as_str()) == CLIENTS - 1
    })
    .await;
    eventually("the fill reached the upstream", || upstream.count() == 1).await;
    release.notify_one();
    let mut collapsed = 0;
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.body, avatar_bytes("img1"));
        collapsed += usize::from(reply.cache_status().contains("; collapsed"));
    }
    assert_eq!(collapsed, CLIENTS - 1);
    assert_eq!(upstream.count(), 1);
}

async fn get_owned(url: String) -> Reply {
    get(&url).await
}

#[tokio::test]
async fn uncacheable_answer_releases_waiters_at_once() {
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let upstream = FakeCloudreve::start(move |_| {
        let gate = Arc::clone(&gate);
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                gate.notified().await; // only the leader's answer is held back
            }
            json_response(r#"{"code":40021,"msg":""}"#)
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    const CLIENTS: usize = 20;
    let url = proxy.url(AVATAR);
    let requests: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(get_owned(url.clone())))
        .collect();
    let key = AvatarKey::from_path_segment("img1").unwrap();
    eventually("19 requests waiting on the fill", || {
        proxy.proxy.cache().waiters(key.as_str()) == CLIENTS - 1
    })
    .await;
    release.notify_one();
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.json()["code"], 40021);
        assert_eq!(reply.x_cache(), "MISS");
    }
    assert_eq!(
        upstream.count(),
        CLIENTS,
        "each waiter asked upstream itself once the answer proved uncacheable"
    );
}

#[tokio::test]
async fn failed_fill_releases_waiters_and_recovers() {
    // The leader's upstream connection is reset before a response; waiters must not hang on it.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let upstream = RawUpstream::start(move |mut stream| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            use tokio::io::AsyncWriteExt;
            let _ = read_head(&mut stream).await;
            if n == 0 {
                drop(stream); // reset before the head
                return;
            }
            let body = b"png";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body).await;
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let failed = get(&proxy.url(AVATAR)).await;
    assert_eq!(failed.status, 502);
    assert!(
        failed.cache_status().ends_with("detail=upstream-error"),
        "{}",
        failed.cache_status()
    );
    let recovered = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        (recovered.status, recovered.body.as_ref()),
        (http::StatusCode::OK, &b"png"[..])
    );
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
}

#[tokio::test]
async fn authorization_does_not_change_the_shared_entry() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let with_token = Request::get(proxy.url(AVATAR))
        .header("authorization", "Bearer a.b.c")
        .body(empty())
        .unwrap();
    let first = send(&client(), with_token).await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        upstream.last().header("authorization"),
        None,
        "a fill carries only what the key covers: Cloudreve's avatar does not depend on who asks"
    );
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn hits_over_http2() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let h2 = h2_client();
    let first = send(&h2, Request::get(proxy.url(AVATAR)).body(empty()).unwrap()).await;
    let second = send(&h2, Request::get(proxy.url(AVATAR)).body(empty()).unwrap()).await;
    assert_eq!(first.version, http::Version::HTTP_2);
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(second.body, avatar_bytes("img1"));
    assert_eq!(upstream.count(), 1);
    assert_eq!(
        upstream.last().version,
        http::Version::HTTP_11,
        "Cloudreve is spoken to in HTTP/1.1"
    );
}

#[tokio::test]
async fn cache_memory_is_bounded_in_bytes() {
    let body = Bytes::from(vec![1u8; 10 * 1024]);
    let upstream = FakeCloudreve::image(body, "public, max-age=600").await;
    let mut config = test_config(&upstream.url());
    config.cache.capacity = 100 * 1024;
    let proxy = TestProxy::start_with(config).await;
    for i in 0..40 {
        get(&proxy.url(&format!("/api/v4/user/avatar/img{i}"))).await;
    }
    let (entries, bytes) = proxy.proxy.cache().usage();
    assert!(bytes <= 100 * 1024, "{bytes} bytes held");
    assert!(entries < 40, "{entries} entries kept");
}
