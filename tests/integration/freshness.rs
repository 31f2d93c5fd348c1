//! Avatars that are never stale for long and never missing: revalidation, stale serving (RFC 5861),
//! conditional and range requests answered from memory, and invalidation the moment an avatar changes.
//! Time moves on the proxy's manual clock; the fake upstream counts what reaches it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tokio::sync::Notify;

const AVATAR: &str = "/api/v4/user/avatar/lpua";
const MONDAY: &str = "Mon, 23 Nov 2026 10:00:00 GMT";
const TUESDAY: &str = "Tue, 24 Nov 2026 10:00:00 GMT";

/// What the scripted upstream answers on the avatar route, changed by the test between requests.
#[derive(Clone)]
struct Avatar {
    /// `None`: answer 503.
    body: Option<&'static [u8]>,
    last_modified: &'static str,
    cache_control: &'static str,
    /// Answer 304 to an `If-Modified-Since` equal to `last_modified`.
    honour_ims: bool,
}

impl Avatar {
    fn png(body: &'static [u8], last_modified: &'static str) -> Self {
        Self {
            body: Some(body),
            last_modified,
            cache_control: "public, max-age=60",
            honour_ims: true,
        }
    }
}

/// A Cloudreve-like upstream whose avatar can be changed while the test runs; other routes answer the JSON
/// configured in `json` (for the change routes).
struct Scripted {
    upstream: FakeCloudreve,
    avatar: Arc<Mutex<Avatar>>,
    json: Arc<Mutex<&'static str>>,
}

impl Scripted {
    async fn start(avatar: Avatar) -> Self {
        let state = Arc::new(Mutex::new(avatar));
        let json = Arc::new(Mutex::new(r#"{"code":0,"msg":""}"#));
        let (avatar_state, json_state) = (Arc::clone(&state), Arc::clone(&json));
        let upstream = FakeCloudreve::start(move |request| {
            let avatar = avatar_state.lock().unwrap().clone();
            let json = *json_state.lock().unwrap();
            async move {
                if request.uri().path().starts_with("/api/v4/user/avatar/") {
                    answer_avatar(&avatar, &request)
                } else {
                    json_response(json)
                }
            }
        })
        .await;
        Self {
            upstream,
            avatar: state,
            json,
        }
    }

    fn set(&self, avatar: Avatar) {
        *self.avatar.lock().unwrap() = avatar;
    }

    fn change(&self, edit: impl FnOnce(&mut Avatar)) {
        edit(&mut self.avatar.lock().unwrap());
    }
}

/// A refresh token used as an access token: Cloudreve answers a JSON error about the caller.
const REFRESH_TOKEN: &str = "Bearer refresh-token";

fn answer_avatar(avatar: &Avatar, request: &Request<hyper::body::Incoming>) -> Response<TestBody> {
    if request.method() != http::Method::GET {
        return Response::builder()
            .status(404)
            .body(full("404 page not found"))
            .unwrap();
    }
    if request
        .headers()
        .get("authorization")
        .is_some_and(|v| v == REFRESH_TOKEN)
    {
        return json_response(r#"{"code":40020,"msg":"Invalid token type"}"#);
    }
    let Some(body) = avatar.body else {
        return Response::builder().status(503).body(full("down")).unwrap();
    };
    let nocache = request
        .uri()
        .query()
        .is_some_and(|q| q.contains("nocache=1"));
    let cache_control = if nocache {
        "private, no-cache"
    } else {
        avatar.cache_control
    };
    let ims = request
        .headers()
        .get("if-modified-since")
        .map(|v| v.to_str().unwrap());
    let builder = Response::builder()
        .header("cache-control", cache_control)
        .header("last-modified", avatar.last_modified);
    if avatar.honour_ims && ims == Some(avatar.last_modified) {
        return builder.status(304).body(empty()).unwrap();
    }
    builder
        .header("content-type", "image/png")
        .body(full(Bytes::from_static(body)))
        .unwrap()
}

fn bearer(sub: &str) -> String {
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"token_type":"access","sub":"{sub}","exp":1}}"#
    ));
    format!("Bearer eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln")
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(empty()).unwrap()).await
}

async fn put(url: &str, authorization: Option<&str>, body: &'static [u8]) -> Reply {
    let mut request = Request::put(url).header("content-type", "image/png");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    send(&client(), request.body(full(body)).unwrap()).await
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_if_modified_since_only() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let mut config = test_config(&scripted.upstream.url());
    config.cache.avatar_limits_mut().stale_while_revalidate = Duration::ZERO;
    let proxy = TestProxy::start_with(config).await;
    get(&proxy.url(AVATAR)).await;
    proxy.clock.advance(Duration::from_secs(61));
    let reply = get_with(&proxy.url(AVATAR), &[("if-none-match", "\"client-etag\"")]).await;
    assert_eq!(
        reply.status, 200,
        "the client gets the whole avatar from memory"
    );
    assert_eq!(reply.body.as_ref(), b"monday");
    assert_eq!(reply.x_cache(), "REVALIDATED");
    assert!(
        reply
            .cache_status()
            .starts_with("cloudreve-edge; fwd=stale; fwd-status=304; ttl="),
        "{}",
        reply.cache_status()
    );
    let revalidation = scripted.upstream.last();
    assert_eq!(revalidation.header("if-modified-since"), Some(MONDAY));
    assert_eq!(
        revalidation.header("if-none-match"),
        None,
        "If-None-Match makes Cloudreve skip the date check"
    );
    assert_eq!(scripted.upstream.count(), 2);
}

#[tokio::test]
async fn not_modified_refreshes_headers_and_freshness() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let mut config = test_config(&scripted.upstream.url());
    config.cache.avatar_limits_mut().stale_while_revalidate = Duration::ZERO;
    let proxy = TestProxy::start_with(config).await;
    get(&proxy.url(AVATAR)).await;
    scripted.change(|a| a.cache_control = "public, max-age=600");
    proxy.clock.advance(Duration::from_secs(61));
    get(&proxy.url(AVATAR)).await; // 304, merged
    proxy.clock.advance(Duration::from_secs(300));
    let hit = get(&proxy.url(AVATAR)).await;
    assert_eq!(hit.x_cache(), "HIT", "fresh for the new max-age=600");
    assert_eq!(
        hit.header("cache-control"),
        Some("public, max-age=600"),
        "stored headers updated (RFC 9111 §4.3.4)"
    );
    assert_eq!(hit.header("content-length"), Some("6"));
    assert_eq!(
        hit.header("age"),
        Some("300"),
        "age starts over with the 304"
    );
    assert_eq!(scripted.upstream.count(), 2);
}

#[tokio::test]
async fn changed_avatar_on_revalidation_replaces_the_entry() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let mut config = test_config(&scripted.upstream.url());
    config.cache.avatar_limits_mut().stale_while_revalidate = Duration::ZERO;
    let proxy = TestProxy::start_with(config).await;
    get(&proxy.url(AVATAR)).await;
    scripted.set(Avatar::png(b"tuesday", TUESDAY));
    proxy.clock.advance(Duration::from_secs(61));
    let reply = get(&proxy.url(AVATAR)).await;
    assert_eq!(reply.body.as_ref(), b"tuesday");
    assert!(
        reply
            .cache_status()
            .starts_with("cloudreve-edge; fwd=stale; fwd-status=200; stored"),
        "{}",
        reply.cache_status()
    );
    assert_eq!(get(&proxy.url(AVATAR)).await.body.as_ref(), b"tuesday");
    assert_eq!(scripted.upstream.count(), 2);
}

#[tokio::test]
async fn no_cache_is_stored_but_revalidated_before_each_use() {
    let mut avatar = Avatar::png(b"monday", MONDAY);
    avatar.cache_control = "public, no-cache";
    let scripted = Scripted::start(avatar).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
    for round in 0..3 {
        let reply = get(&proxy.url(AVATAR)).await;
        assert_eq!(reply.x_cache(), "REVALIDATED", "round {round}");
        assert_eq!(reply.body.as_ref(), b"monday");
    }
    assert_eq!(scripted.upstream.count(), 4, "every use asked the upstream");
    assert_eq!(scripted.upstream.count_target(AVATAR), 4);
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let gate = Arc::new(Notify::new());
    let held = Arc::clone(&gate);
    let version = Arc::new(Mutex::new(b"monday" as &'static [u8]));
    let current = Arc::clone(&version);
    let upstream = FakeCloudreve::start(move |_| {
        let held = Arc::clone(&held);
        let body = *current.lock().unwrap();
        async move {
            if body == b"tuesday" {
                held.notified().await; // the refresh is held until the test has seen stale answers
            }
            Response::builder()
                .header("content-type", "image/png")
                .header("cache-control", "public, max-age=60")
                .body(full(Bytes::from_static(body)))
                .unwrap()
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await; // default stale_while_revalidate = 60s
    get(&proxy.url(AVATAR)).await;
    *version.lock().unwrap() = b"tuesday";
    proxy.clock.advance(Duration::from_secs(70));
    for _ in 0..5 {
        let reply = get(&proxy.url(AVATAR)).await;
        assert_eq!(reply.x_cache(), "STALE");
        assert_eq!(
            reply.body.as_ref(),
            b"monday",
            "served at once, while the refresh is still held"
        );
        assert!(
            reply
                .cache_status()
                .contains("ttl=-10; detail=stale-while-revalidate"),
            "{}",
            reply.cache_status()
        );
    }
    eventually("the one background refresh reached the upstream", || {
        upstream.count() == 2
    })
    .await;
    gate.notify_one();
    let key = cloudreve_edge::cache::policy::AvatarKey::from_path_segment("lpua").unwrap();
    eventually("the refresh was stored", || {
        proxy
            .proxy
            .cache()
            .peek(key.as_str(), &http::HeaderMap::new())
            .is_some_and(|e| e.body.as_ref() == b"tuesday")
    })
    .await;
    let fresh = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        (fresh.x_cache(), fresh.body.as_ref()),
        ("HIT", &b"tuesday"[..])
    );
    assert_eq!(
        upstream.count(),
        2,
        "exactly one background request for five stale answers"
    );
}

#[tokio::test]
async fn upstream_down_serves_the_stale_avatar_with_200() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    scripted.upstream.stop();
    proxy.clock.advance(Duration::from_secs(3600)); // past max-age and stale-while-revalidate
    let reply = get(&proxy.url(AVATAR)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.as_ref(), b"monday");
    assert_eq!(reply.x_cache(), "STALE");
    assert!(
        reply
            .cache_status()
            .starts_with("cloudreve-edge; fwd=stale; ttl=-"),
        "{}",
        reply.cache_status()
    );
    assert!(reply.cache_status().ends_with("detail=stale-if-error"));
}

#[tokio::test]
async fn upstream_server_error_serves_the_stale_avatar() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    scripted.change(|a| a.body = None); // 503 from now on
    proxy.clock.advance(Duration::from_secs(3600));
    let reply = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        (reply.status, reply.body.as_ref()),
        (StatusCode::OK, &b"monday"[..])
    );
    assert!(
        reply.cache_status().contains("fwd-status=503"),
        "{}",
        reply.cache_status()
    );
    // The entry was kept: once Cloudreve is back, it is revalidated, not refetched whole.
    scripted.set(Avatar::png(b"monday", MONDAY));
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "REVALIDATED");
}

#[tokio::test]
async fn stale_if_error_has_a_limit() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let mut config = test_config(&scripted.upstream.url());
    config.cache.avatar_limits_mut().stale_if_error = Duration::from_secs(600);
    let proxy = TestProxy::start_with(config).await;
    get(&proxy.url(AVATAR)).await;
    scripted.change(|a| a.body = None);
    proxy.clock.advance(Duration::from_secs(60 + 601));
    let reply = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        reply.status, 503,
        "past stale-if-error the upstream's answer goes through"
    );
}

#[tokio::test]
async fn must_revalidate_is_never_served_stale() {
    let mut avatar = Avatar::png(b"monday", MONDAY);
    avatar.cache_control = "public, max-age=60, must-revalidate";
    let scripted = Scripted::start(avatar).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    scripted.upstream.stop();
    proxy.clock.advance(Duration::from_secs(61)); // inside the default stale windows
    let reply = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        reply.status, 502,
        "neither stale-while-revalidate nor stale-if-error may apply"
    );
    assert_eq!(reply.x_cache(), "MISS");
}

#[tokio::test]
async fn upstream_stale_directives_win_over_the_defaults() {
    let mut avatar = Avatar::png(b"monday", MONDAY);
    avatar.cache_control = "public, max-age=60, stale-while-revalidate=5, stale-if-error=10";
    let scripted = Scripted::start(avatar).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    scripted.change(|a| a.body = None);
    proxy.clock.advance(Duration::from_secs(60 + 8)); // past swr=5, inside sie=10
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "STALE");
    proxy.clock.advance(Duration::from_secs(5)); // past sie=10
    assert_eq!(get(&proxy.url(AVATAR)).await.status, 503);
}

#[tokio::test]
async fn client_conditionals_are_answered_from_memory() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    let first = get(&proxy.url(AVATAR)).await;
    let etag = first.header("etag").expect("a minted ETag").to_owned();
    assert!(etag.starts_with('"'), "strong: {etag}");
    let by_date = get_with(&proxy.url(AVATAR), &[("if-modified-since", MONDAY)]).await;
    assert_eq!(by_date.status, 304);
    assert!(by_date.body.is_empty());
    let by_tag = get_with(&proxy.url(AVATAR), &[("if-none-match", &etag)]).await;
    assert_eq!(by_tag.status, 304);
    assert_eq!(by_tag.header("etag"), Some(etag.as_str()));
    let other = get_with(&proxy.url(AVATAR), &[("if-none-match", "\"nope\"")]).await;
    assert_eq!(other.status, 200);
    let failed = get_with(&proxy.url(AVATAR), &[("if-match", "\"nope\"")]).await;
    assert_eq!(failed.status, 412);
    assert_eq!(
        scripted.upstream.count(),
        1,
        "none of these reached the upstream"
    );
}

#[tokio::test]
async fn ranges_are_answered_from_memory() {
    let scripted = Scripted::start(Avatar::png(b"0123456789", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    let part = get_with(&proxy.url(AVATAR), &[("range", "bytes=2-5")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body.as_ref(), b"2345");
    assert_eq!(part.header("content-range"), Some("bytes 2-5/10"));
    let beyond = get_with(&proxy.url(AVATAR), &[("range", "bytes=50-60")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */10"));
    let stale_validator = get_with(
        &proxy.url(AVATAR),
        &[("range", "bytes=2-5"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(
        stale_validator.status, 200,
        "If-Range that does not match gets the whole avatar"
    );
    assert_eq!(scripted.upstream.count(), 1);
}

#[tokio::test]
async fn own_avatar_change_confirmed_by_cloudreve_purges_that_user() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    get(&proxy.url("/api/v4/user/avatar/other")).await;
    scripted.set(Avatar::png(b"tuesday", TUESDAY));
    let answer = put(
        &proxy.url("/api/v4/user/setting/avatar"),
        Some(&bearer("lpua")),
        b"new png",
    )
    .await;
    assert_eq!(
        answer.json()["code"],
        0,
        "the client gets Cloudreve's answer unchanged"
    );
    let reply = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        (reply.x_cache(), reply.body.as_ref()),
        ("MISS", &b"tuesday"[..]),
        "no waiting a day"
    );
    assert_eq!(
        get(&proxy.url("/api/v4/user/avatar/other")).await.x_cache(),
        "HIT",
        "other users keep theirs"
    );
}

#[tokio::test]
async fn failed_avatar_change_purges_nothing() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    *scripted.json.lock().unwrap() = r#"{"code":40049,"msg":"File too large"}"#;
    let answer = put(
        &proxy.url("/api/v4/user/setting/avatar"),
        Some(&bearer("lpua")),
        b"huge",
    )
    .await;
    assert_eq!(answer.json()["code"], 40049);
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
}

#[tokio::test]
async fn avatar_change_without_a_token_purges_nothing() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    put(
        &proxy.url("/api/v4/user/setting/avatar"),
        Some("Basic dTpw"),
        b"png",
    )
    .await;
    put(&proxy.url("/api/v4/user/setting/avatar"), None, b"png").await;
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
}

#[tokio::test]
async fn admin_user_edit_purges_the_user_it_names() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    *scripted.json.lock().unwrap() =
        r#"{"code":0,"data":{"id":7,"hash_id":"lpua","avatar":""},"msg":""}"#;
    put(
        &proxy.url("/api/v4/admin/user/7"),
        Some(&bearer("admin")),
        b"{}",
    )
    .await;
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
}

#[tokio::test]
async fn nocache_answer_with_a_newer_last_modified_purges() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    scripted.set(Avatar::png(b"tuesday", TUESDAY));
    let settings_page = get(&proxy.url(&format!("{AVATAR}?nocache=1&key=2"))).await;
    assert_eq!(settings_page.body.as_ref(), b"tuesday");
    let reply = get(&proxy.url(AVATAR)).await;
    assert_eq!(
        (reply.x_cache(), reply.body.as_ref()),
        ("MISS", &b"tuesday"[..])
    );
}

#[tokio::test]
async fn nocache_answer_with_other_bytes_purges_when_it_ends() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    scripted.change(|a| a.body = Some(b"monday, edited")); // same Last-Modified, other bytes
    get(&proxy.url(&format!("{AVATAR}?nocache=1"))).await;
    let key = cloudreve_edge::cache::policy::AvatarKey::from_path_segment("lpua").unwrap();
    eventually("the differing bytes dropped the entry", || {
        proxy
            .proxy
            .cache()
            .peek(key.as_str(), &http::HeaderMap::new())
            .is_none()
    })
    .await;
    assert_eq!(
        get(&proxy.url(AVATAR)).await.body.as_ref(),
        b"monday, edited"
    );
}

#[tokio::test]
async fn identical_nocache_answer_keeps_the_entry() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    for _ in 0..3 {
        get(&proxy.url(&format!("{AVATAR}?nocache=1"))).await;
    }
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
    assert_eq!(scripted.upstream.count(), 4);
}

#[tokio::test]
async fn nocache_answers_about_the_requester_purge_nothing() {
    let scripted = Scripted::start(Avatar::png(b"monday", MONDAY)).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(AVATAR)).await;
    let nocache = proxy.url(&format!("{AVATAR}?nocache=1"));
    // Cloudreve's JSON error about the caller's token, and its 404 to HEAD, say nothing about the avatar.
    let error = get_with(&nocache, &[("authorization", REFRESH_TOKEN)]).await;
    assert_eq!(error.json()["code"], 40020);
    let head = request("HEAD", &nocache).await;
    assert_eq!(head.status, 404, "forwarded as is");
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
}
