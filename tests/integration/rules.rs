//! Cache rules beyond avatars: the `/assets/` rule as a plain RFC 9111 shared cache, end to end. The fake
//! upstream counts what reaches it; time moves on the proxy's manual clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::support::*;
use bytes::Bytes;
use cloudreve_edge::cache::Invalidation;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::Notify;

const ASSET: &str = "/assets/index-3f2a.js";

/// A scripted answer for the asset route: the test edits it between requests.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: &'static [u8],
    /// Answer 304 to a conditional request whose validator matches (`ETag` or `Last-Modified`).
    honour_conditionals: bool,
}

impl Answer {
    fn ok(headers: &[(&'static str, &str)], body: &'static [u8]) -> Self {
        Self {
            status: 200,
            headers: headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
            body,
            honour_conditionals: true,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Scripted {
    upstream: FakeCloudreve,
    answer: Arc<Mutex<Answer>>,
}

impl Scripted {
    async fn start(answer: Answer) -> Self {
        let state = Arc::new(Mutex::new(answer));
        let shared = Arc::clone(&state);
        let upstream = FakeCloudreve::start(move |request| {
            let answer = shared.lock().unwrap().clone();
            async move { respond(&answer, &request) }
        })
        .await;
        Self {
            upstream,
            answer: state,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

fn respond(answer: &Answer, request: &Request<Incoming>) -> Response<TestBody> {
    let inm = request
        .headers()
        .get("if-none-match")
        .map(|v| v.to_str().unwrap());
    let ims = request
        .headers()
        .get("if-modified-since")
        .map(|v| v.to_str().unwrap());
    let not_modified = answer.honour_conditionals
        && ((inm.is_some() && inm == answer.header("etag"))
            || (inm.is_none() && ims.is_some() && ims == answer.header("last-modified")));
    let mut builder = Response::builder().status(if not_modified { 304 } else { answer.status });
    for (name, value) in &answer.headers {
        builder = builder.header(*name, value);
    }
    let body = if not_modified || request.method() == Method::HEAD {
        empty()
    } else {
        full(Bytes::from_static(answer.body))
    };
    builder.body(body).unwrap()
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(empty()).unwrap()).await
}

fn immutable() -> Answer {
    Answer::ok(
        &[
            ("content-type", "text/javascript"),
            ("cache-control", "public, max-age=31536000"),
        ],
        b"console.log(1)",
    )
}

/// A proxy whose `/assets/` rule never serves stale while revalidating, so expiry shows as a revalidation.
async fn proxy_without_stale(upstream: &FakeCloudreve) -> TestProxy {
    let mut config = test_config(&upstream.url());
    for rule in &mut config.cache.rules {
        rule.limits.stale_while_revalidate = Duration::ZERO;
    }
    TestProxy::start_with(config).await
}

#[tokio::test]
async fn assets_are_cached_by_the_http_rule() {
    let scripted = Scripted::start(immutable()).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    let miss = get(&proxy.url(ASSET)).await;
    assert_eq!(miss.body.as_ref(), b"console.log(1)");
    assert!(
        miss.cache_status()
            .starts_with("cloudreve-edge; fwd=miss; fwd-status=200; stored; ttl=3153599"),
        "{}",
        miss.cache_status()
    );
    let hit = get(&proxy.url(ASSET)).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("age"), Some("0"));
    assert_eq!(hit.body.as_ref(), b"console.log(1)");
    assert_eq!(scripted.upstream.count(), 1);
}

#[tokio::test]
async fn the_key_is_the_raw_target_query_included() {
    let scripted = Scripted::start(immutable()).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    for target in [
        ASSET,
        "/assets/index-3f2a.js?v=2",
        "/assets/index-3f2a.js?v=2",
        "/assets/%69ndex-3f2a.js",
    ] {
        get(&proxy.url(target)).await;
    }
    assert_eq!(
        scripted.upstream.count(),
        3,
        "?v=2 stored once; the encoded path is its own key"
    );
    assert_eq!(
        scripted.upstream.last().target,
        "/assets/%69ndex-3f2a.js",
        "asked for exactly the bytes keyed"
    );
}

#[tokio::test]
async fn paths_no_rule_matches_are_never_cached() {
    let scripted = Scripted::start(immutable()).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    for _ in 0..2 {
        let reply = get(&proxy.url("/api/v4/site/config/basic")).await;
        assert_eq!(
            reply.cache_status(),
            "-",
            "no rule matched, so no Cache-Status"
        );
    }
    assert_eq!(scripted.upstream.count(), 2);
}

#[tokio::test]
async fn vary_stores_one_variant_per_nominated_value() {
    let upstream = FakeCloudreve::start(|request| async move {
        let gzip = request
            .headers()
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap().contains("gzip"));
        Response::builder()
            .header("cache-control", "public, max-age=600")
            .header("vary", "Accept-Encoding")
            .body(full(if gzip { "gzipped" } else { "plain" }))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let gzip = [("accept-encoding", "gzip, br")];
    // Nothing said the URL varies yet, so the first fill goes without the client's Accept-Encoding and its
    // answer is stored for requests without one; the client, which sent one, gets an answer of its own.
    let first = get_with(&proxy.url(ASSET), &gzip).await;
    assert_eq!(first.body.as_ref(), b"gzipped");
    assert_eq!(upstream.count(), 2);
    assert_eq!(upstream.received()[0].header("accept-encoding"), None);
    assert_eq!(upstream.last().header("accept-encoding"), Some("gzip, br"));
    let plain_hit = get_with(&proxy.url(ASSET), &[]).await;
    assert_eq!(
        (plain_hit.x_cache(), plain_hit.body.as_ref()),
        ("HIT", &b"plain"[..])
    );
    // Now the field is keyed: a fill carries it, and its answer is stored for its value.
    let gzip_miss = get_with(&proxy.url(ASSET), &gzip).await;
    assert_eq!(
        (gzip_miss.x_cache(), gzip_miss.body.as_ref()),
        ("MISS", &b"gzipped"[..])
    );
    let gzip_hit = get_with(&proxy.url(ASSET), &[("accept-encoding", "gzip,br")]).await;
    assert_eq!(
        (gzip_hit.x_cache(), gzip_hit.body.as_ref()),
        ("HIT", &b"gzipped"[..]),
        "whitespace in the list does not matter"
    );
    assert_eq!(upstream.count(), 3);
}

#[tokio::test]
async fn vary_star_is_never_stored() {
    let scripted = Scripted::start(Answer::ok(
        &[("cache-control", "public, max-age=600"), ("vary", "*")],
        b"x",
    ))
    .await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    let first = get(&proxy.url(ASSET)).await;
    assert!(
        first.cache_status().ends_with("detail=vary"),
        "{}",
        first.cache_status()
    );
    get(&proxy.url(ASSET)).await;
    assert_eq!(scripted.upstream.count(), 2);
}

#[tokio::test]
async fn heuristic_freshness_from_last_modified_is_capped() {
    let ten_days_ago = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(10 * 86400));
    let scripted = Scripted::start(Answer::ok(&[("last-modified", &ten_days_ago)], b"x")).await;
    let proxy = proxy_without_stale(&scripted.upstream).await;
    let miss = get(&proxy.url(ASSET)).await;
    let status = miss.cache_status().to_owned();
    // 24 h less the response's age: its Date has whole seconds, and a loaded machine adds a second or two.
    let ttl: u64 = status
        .split("stored; ttl=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|ttl| ttl.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stored ttl: {status}"));
    assert!(
        (86_390..=86_400).contains(&ttl),
        "10% of 10 days, capped at 24h: {status}"
    );
    proxy.clock.advance(Duration::from_secs(86_000));
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "HIT");
    proxy.clock.advance(Duration::from_secs(1_000));
    assert_eq!(
        get(&proxy.url(ASSET)).await.x_cache(),
        "REVALIDATED",
        "stale after the heuristic lifetime"
    );
}

#[tokio::test]
async fn neither_freshness_nor_validator_is_never_given_a_default_ttl() {
    let scripted = Scripted::start(Answer::ok(&[("content-type", "text/plain")], b"x")).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    let first = get(&proxy.url(ASSET)).await;
    assert!(
        first.cache_status().ends_with("detail=no-freshness"),
        "{}",
        first.cache_status()
    );
    get(&proxy.url(ASSET)).await;
    assert_eq!(scripted.upstream.count(), 2);
}

#[tokio::test]
async fn a_validator_alone_is_stored_and_revalidated_with_if_none_match() {
    let scripted = Scripted::start(Answer::ok(&[("etag", "\"v1\"")], b"body")).await;
    let proxy = proxy_without_stale(&scripted.upstream).await;
    get(&proxy.url(ASSET)).await;
    let reply = get(&proxy.url(ASSET)).await;
    assert_eq!(
        (reply.x_cache(), reply.body.as_ref()),
        ("REVALIDATED", &b"body"[..])
    );
    assert_eq!(
        scripted.upstream.last().header("if-none-match"),
        Some("\"v1\"")
    );
    assert_eq!(
        reply.header("etag"),
        Some("\"v1\""),
        "the upstream's ETag is kept, none is minted"
    );
}

#[tokio::test]
async fn not_modified_updates_stored_headers_without_touching_the_body() {
    let scripted = Scripted::start(Answer::ok(
        &[
            ("cache-control", "max-age=10"),
            ("etag", "\"v1\""),
            ("x-build", "1"),
        ],
        b"body",
    ))
    .await;
    let proxy = proxy_without_stale(&scripted.upstream).await;
    get(&proxy.url(ASSET)).await;
    scripted.set(Answer::ok(
        &[
            ("cache-control", "max-age=600"),
            ("etag", "\"v1\""),
            ("x-build", "2"),
        ],
        b"ignored",
    ));
    proxy.clock.advance(Duration::from_secs(11));
    let revalidated = get(&proxy.url(ASSET)).await;
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    assert_eq!(revalidated.body.as_ref(), b"body");
    proxy.clock.advance(Duration::from_secs(300));
    let hit = get(&proxy.url(ASSET)).await;
    assert_eq!((hit.x_cache(), hit.header("x-build")), ("HIT", Some("2")));
    assert_eq!(hit.body.as_ref(), b"body");
}

#[tokio::test]
async fn cdn_cache_control_takes_precedence() {
    let targeted = Answer::ok(
        &[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ],
        b"x",
    );
    let scripted = Scripted::start(targeted).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(ASSET)).await;
    assert_eq!(
        get(&proxy.url(ASSET)).await.x_cache(),
        "HIT",
        "CDN-Cache-Control allows it"
    );
    scripted.set(Answer::ok(
        &[
            ("cache-control", "public, max-age=600"),
            ("cdn-cache-control", "no-store"),
        ],
        b"x",
    ));
    let other = "/assets/other.css";
    get(&proxy.url(other)).await;
    assert_eq!(
        get(&proxy.url(other)).await.x_cache(),
        "MISS",
        "CDN-Cache-Control forbids it"
    );
}

/// A proxy whose rules would serve a stale response for a minute while refreshing it and for ten minutes
/// while the upstream fails, unless the response forbids it: what a test of a prohibition must rule out.
async fn proxy_with_stale_defaults(upstream: &FakeCloudreve) -> TestProxy {
    let mut config = test_config(&upstream.url());
    for rule in &mut config.cache.rules {
        rule.limits.stale_while_revalidate = Duration::from_secs(60);
        rule.limits.stale_if_error = Duration::from_secs(600);
    }
    TestProxy::start_with(config).await
}

fn server_error() -> Answer {
    Answer {
        status: 503,
        headers: vec![("content-type", "text/plain".to_owned())],
        body: b"down",
        honour_conditionals: false,
    }
}

/// #13: `s-maxage` carries `proxy-revalidate` for a shared cache (RFC 9111 §5.2.2.10), in
/// `CDN-Cache-Control` as in `Cache-Control` (RFC 9213 §2.2): past its `s-maxage` the entry is revalidated,
/// never served stale, though the response names stale windows and the rule has defaults of its own; and
/// a failing upstream's answer goes through instead of the stored copy.
#[tokio::test]
async fn s_maxage_is_revalidated_and_never_served_stale() {
    let scripted = Scripted::start(immutable()).await;
    let proxy = proxy_with_stale_defaults(&scripted.upstream).await;
    let permissive = "s-maxage=1, stale-while-revalidate=60, stale-if-error=600";
    for (field, target) in [
        ("cache-control", "/assets/a.js"),
        ("cdn-cache-control", "/assets/b.js"),
    ] {
        let fresh = Answer::ok(&[(field, permissive), ("etag", "\"v1\"")], b"body");
        scripted.set(fresh.clone());
        let before = scripted.upstream.count();
        get(&proxy.url(target)).await;
        proxy.clock.advance(Duration::from_secs(2)); // past s-maxage, inside every stale window
        let revalidated = get(&proxy.url(target)).await;
        assert_eq!(revalidated.x_cache(), "REVALIDATED", "{field}");
        assert_eq!(revalidated.body.as_ref(), b"body", "{field}");
        assert_eq!(scripted.upstream.count(), before + 2, "{field}");
        assert_eq!(
            scripted.upstream.last().header("if-none-match"),
            Some("\"v1\""),
            "{field}: revalidated with the stored ETag"
        );
        scripted.set(server_error());
        proxy.clock.advance(Duration::from_secs(2));
        let failed = get(&proxy.url(target)).await;
        assert_eq!(
            (failed.status, failed.body.as_ref()),
            (StatusCode::SERVICE_UNAVAILABLE, &b"down"[..]),
            "{field}: the upstream's 503, not the stale copy"
        );
        assert_eq!(scripted.upstream.count(), before + 3, "{field}");
        scripted.set(fresh);
    }
    scripted.upstream.stop();
    proxy.clock.advance(Duration::from_secs(2));
    let unreachable = get(&proxy.url("/assets/a.js")).await;
    assert_eq!(
        (unreachable.status, unreachable.x_cache()),
        (StatusCode::BAD_GATEWAY, "MISS"),
        "an unreachable upstream gets a 502, not the stale copy"
    );
}

/// #13: `CDN-Cache-Control` is a Structured Field Dictionary (RFC 9213 §2.1, RFC 8941 §3.2). A `max-age`
/// given as a String makes it invalid, so it is ignored whole and `Cache-Control` says how long the
/// response is fresh; a valid one still takes `Cache-Control`'s place.
#[tokio::test]
async fn an_invalid_cdn_cache_control_is_ignored_and_a_valid_one_wins() {
    let scripted = Scripted::start(immutable()).await;
    let proxy = proxy_without_stale(&scripted.upstream).await;
    let answer = |targeted: &str| {
        Answer::ok(
            &[
                ("cache-control", "max-age=5"),
                ("cdn-cache-control", targeted),
            ],
            b"body",
        )
    };
    let (invalid, valid) = ("/assets/invalid.js", "/assets/valid.js");
    scripted.set(answer("max-age=\"60\""));
    get(&proxy.url(invalid)).await;
    scripted.set(answer("max-age=60"));
    get(&proxy.url(valid)).await;
    proxy.clock.advance(Duration::from_secs(4));
    assert_eq!(get(&proxy.url(invalid)).await.x_cache(), "HIT");
    assert_eq!(get(&proxy.url(valid)).await.x_cache(), "HIT");
    assert_eq!(scripted.upstream.count(), 2);
    proxy.clock.advance(Duration::from_secs(2)); // 6 s: past Cache-Control's max-age only
    assert_eq!(
        get(&proxy.url(invalid)).await.x_cache(),
        "MISS",
        "fresh for Cache-Control's 5 s, not the invalid field's 60"
    );
    assert_eq!(scripted.upstream.count_target(invalid), 2);
    assert_eq!(
        get(&proxy.url(valid)).await.x_cache(),
        "HIT",
        "fresh for CDN-Cache-Control's 60 s"
    );
    assert_eq!(scripted.upstream.count_target(valid), 1);
}

#[tokio::test]
async fn head_is_answered_from_a_fresh_get() {
    let scripted = Scripted::start(immutable()).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(ASSET)).await;
    let head = request("HEAD", &proxy.url(ASSET)).await;
    assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "HIT"));
    assert!(head.body.is_empty());
    assert_eq!(scripted.upstream.count(), 1);
}

#[tokio::test]
async fn head_response_updates_a_stale_get() {
    let scripted = Scripted::start(Answer::ok(
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        b"body",
    ))
    .await;
    let proxy = proxy_without_stale(&scripted.upstream).await;
    get(&proxy.url(ASSET)).await;
    proxy.clock.advance(Duration::from_secs(11));
    scripted.set(Answer::ok(
        &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
        b"body",
    ));
    let head = request("HEAD", &proxy.url(ASSET)).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        scripted.upstream.last().method,
        Method::HEAD,
        "forwarded as HEAD"
    );
    let hit = get(&proxy.url(ASSET)).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_ref()),
        ("HIT", &b"body"[..]),
        "the HEAD refreshed the stored GET (RFC 9111 §4.3.5)"
    );
    assert_eq!(scripted.upstream.count(), 2);
}

#[tokio::test]
async fn head_response_with_another_validator_invalidates_the_get() {
    let scripted = Scripted::start(Answer::ok(
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        b"old",
    ))
    .await;
    let proxy = proxy_without_stale(&scripted.upstream).await;
    get(&proxy.url(ASSET)).await;
    proxy.clock.advance(Duration::from_secs(11));
    scripted.set(Answer::ok(
        &[("cache-control", "max-age=600"), ("etag", "\"v2\"")],
        b"new",
    ));
    request("HEAD", &proxy.url(ASSET)).await;
    let reply = get(&proxy.url(ASSET)).await;
    assert_eq!(
        (reply.x_cache(), reply.body.as_ref()),
        ("MISS", &b"new"[..])
    );
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_same_authority_locations() {
    let upstream = FakeCloudreve::start(|request| async move {
        let builder = Response::builder().header("cache-control", "public, max-age=600");
        match *request.method() {
            Method::GET => builder.body(full("asset")).unwrap(),
            Method::DELETE => builder.status(500).body(empty()).unwrap(),
            _ => builder
                .header("location", "/assets/b.js")
                .header("content-location", "http://elsewhere.example/assets/c.js")
                .body(empty())
                .unwrap(),
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    for asset in ["/assets/a.js", "/assets/b.js", "/assets/c.js"] {
        get(&proxy.url(asset)).await;
    }
    let failed = send(
        &client(),
        Request::delete(proxy.url("/assets/a.js"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(failed.status, 500);
    assert_eq!(
        get(&proxy.url("/assets/a.js")).await.x_cache(),
        "HIT",
        "an error answer invalidates nothing"
    );
    send(
        &client(),
        Request::post(proxy.url("/assets/a.js"))
            .body(full("x"))
            .unwrap(),
    )
    .await;
    assert_eq!(
        get(&proxy.url("/assets/a.js")).await.x_cache(),
        "MISS",
        "the target URI"
    );
    assert_eq!(
        get(&proxy.url("/assets/b.js")).await.x_cache(),
        "MISS",
        "Location on the same authority"
    );
    assert_eq!(
        get(&proxy.url("/assets/c.js")).await.x_cache(),
        "HIT",
        "another authority is not ours to touch"
    );
}

#[tokio::test]
async fn a_request_with_credentials_bypasses_the_rule() {
    // Its answer may depend on the credentials, which the key does not cover and a fill never carries: it
    // goes upstream as it came, and nothing of it is stored, `public` or not (#12).
    let scripted = Scripted::start(Answer::ok(
        &[("cache-control", "public, max-age=600")],
        b"for the holder",
    ))
    .await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    let authorized = get_with(&proxy.url(ASSET), &[("authorization", "Bearer t")]).await;
    assert_eq!(authorized.x_cache(), "BYPASS");
    assert!(
        authorized.cache_status().ends_with("detail=authorization"),
        "{}",
        authorized.cache_status()
    );
    assert_eq!(
        scripted.upstream.last().header("authorization"),
        Some("Bearer t")
    );
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "MISS");
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "HIT");
    assert_eq!(scripted.upstream.count(), 2);
}

#[tokio::test]
async fn streaming_fill_reaches_the_client_before_the_upstream_finishes() {
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let upstream = FakeCloudreve::start(move |_| {
        let gate = Arc::clone(&gate);
        async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from_static(b"first,"))).await;
                gate.notified().await;
                let _ = tx.send(Ok(Bytes::from_static(b"second"))).await;
            });
            Response::builder()
                .header("cache-control", "public, max-age=600")
                .body(body)
                .unwrap()
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let response = tokio::time::timeout(
        PATIENCE,
        client().request(Request::get(proxy.url(ASSET)).body(empty()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let mut body = response.into_body();
    use http_body_util::BodyExt;
    let first = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.into_data().unwrap().as_ref(),
        b"first,",
        "the first bytes arrived while the rest is held"
    );
    release.notify_one();
    let rest = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest.as_ref(), b"second");
    let hit = get(&proxy.url(ASSET)).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_ref()),
        ("HIT", &b"first,second"[..]),
        "the copy was stored whole"
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_failed_fill_is_never_served() {
    let upstream = RawUpstream::start(|mut stream| async move {
        use tokio::io::AsyncWriteExt;
        let _ = read_head(&mut stream).await;
        let head = "HTTP/1.1 200 OK\r\ncache-control: public, max-age=600\r\ncontent-length: 100\r\n\r\npartial";
        let _ = stream.write_all(head.as_bytes()).await;
        // and the connection closes: 7 of 100 bytes
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    for attempt in 0..2 {
        let response = tokio::time::timeout(
            PATIENCE,
            client().request(Request::get(proxy.url(ASSET)).body(empty()).unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_ne!(
            response
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap()),
            Some("HIT"),
            "attempt {attempt}"
        );
        use http_body_util::BodyExt;
        let body = tokio::time::timeout(PATIENCE, response.into_body().collect())
            .await
            .unwrap();
        assert!(
            body.is_err(),
            "attempt {attempt}: a truncated body is never presented as complete"
        );
    }
}

#[tokio::test]
async fn a_body_over_the_rule_limit_is_streamed_and_not_stored() {
    let big: &'static [u8] = Box::leak(vec![b'a'; 64 * 1024].into_boxed_slice());
    let upstream = FakeCloudreve::start(move |_| async move {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            for chunk in big.chunks(8 * 1024) {
                let _ = tx.send(Ok(Bytes::from_static(chunk))).await;
            }
        });
        Response::builder()
            .header("cache-control", "public, max-age=600")
            .body(body)
            .unwrap()
    })
    .await;
    let mut config = test_config(&upstream.url());
    config.cache.rules[1].limits.max_object_size = 16 * 1024;
    let proxy = TestProxy::start_with(config).await;
    assert_eq!(get(&proxy.url(ASSET)).await.body.len(), big.len());
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "MISS");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn host_is_part_of_the_key_when_configured() {
    let upstream = FakeCloudreve::start(|request| async move {
        let host = request.headers()["host"].to_str().unwrap().to_owned();
        Response::builder()
            .header("cache-control", "public, max-age=600")
            .body(full(host))
            .unwrap()
    })
    .await;
    let mut config = test_config(&upstream.url());
    config.cache.rules[1].key_includes_host = true;
    let proxy = TestProxy::start_with(config).await;
    for host in ["a.example", "b.example", "a.example"] {
        let reply = get_with(&proxy.url(ASSET), &[("host", host)]).await;
        assert_eq!(reply.body.as_ref(), host.as_bytes());
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn request_no_store_bypasses_the_rule() {
    let scripted = Scripted::start(immutable()).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    let reply = get_with(&proxy.url(ASSET), &[("cache-control", "no-store")]).await;
    assert_eq!(reply.x_cache(), "BYPASS");
    assert_eq!(
        get(&proxy.url(ASSET)).await.x_cache(),
        "MISS",
        "nothing of that exchange was stored"
    );
}

#[tokio::test]
async fn purge_by_prefix_drops_only_what_is_under_it() {
    let scripted = Scripted::start(immutable()).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    for target in [ASSET, "/assets/b.css"] {
        get(&proxy.url(target)).await;
    }
    proxy
        .proxy
        .cache()
        .invalidate(&Invalidation::Prefix("/assets/b".into()));
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "HIT");
    assert_eq!(get(&proxy.url("/assets/b.css")).await.x_cache(), "MISS");
    proxy
        .proxy
        .cache()
        .invalidate(&Invalidation::Prefix("/assets/".into()));
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "MISS");
}

#[tokio::test]
async fn a_minted_etag_never_goes_upstream_even_after_a_refresh() {
    let last_modified = "Mon, 23 Nov 2026 10:00:00 GMT";
    let scripted = Scripted::start(Answer::ok(
        &[
            ("cache-control", "max-age=10"),
            ("last-modified", last_modified),
        ],
        b"body",
    ))
    .await;
    let proxy = proxy_without_stale(&scripted.upstream).await;
    get(&proxy.url(ASSET)).await; // a streamed fill: its ETag is minted once the copy is stored
    let minted = get(&proxy.url(ASSET))
        .await
        .header("etag")
        .map(str::to_owned);
    assert!(minted.is_some());
    for round in 0..2 {
        proxy.clock.advance(Duration::from_secs(11));
        let reply = get(&proxy.url(ASSET)).await;
        assert_eq!(reply.x_cache(), "REVALIDATED", "round {round}");
        let revalidation = scripted.upstream.last();
        assert_eq!(
            revalidation.header("if-none-match"),
            None,
            "round {round}: the minted ETag stays here"
        );
        assert_eq!(
            revalidation.header("if-modified-since"),
            Some(last_modified)
        );
        assert_eq!(
            reply.header("etag").map(str::to_owned),
            minted,
            "the same bytes keep the same ETag"
        );
    }
}

/// An `ETag`-validated answer with the given `Cache-Control`, honouring `If-None-Match`.
fn validated(status: u16, cache_control: &str) -> Answer {
    Answer {
        status,
        ..Answer::ok(
            &[("cache-control", cache_control), ("etag", "\"v1\"")],
            b"stored",
        )
    }
}

#[tokio::test]
async fn with_its_defaults_an_http_rule_serves_nothing_stale_the_origin_did_not_allow() {
    // #13, RFC 9111 §4.2.4: `kind` and `prefix` alone gave 60 s of stale-while-revalidate and 24 h of
    // stale-if-error the origin never allowed.
    let scripted = Scripted::start(validated(200, "max-age=10")).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "MISS");
    proxy.clock.advance(Duration::from_secs(11));
    let expired = get(&proxy.url(ASSET)).await;
    assert_eq!(
        expired.x_cache(),
        "REVALIDATED",
        "{}",
        expired.cache_status()
    );
    assert_eq!(scripted.upstream.count(), 2);
    assert_eq!(
        scripted.upstream.last().header("if-none-match"),
        Some("\"v1\"")
    );
    proxy.clock.advance(Duration::from_secs(11));
    scripted.upstream.stop();
    let down = get(&proxy.url(ASSET)).await;
    assert_eq!(
        down.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        down.cache_status()
    );
}

#[tokio::test]
async fn the_origins_own_stale_directives_still_apply_under_an_http_rule() {
    let scripted = Scripted::start(validated(
        200,
        "max-age=10, stale-while-revalidate=30, stale-if-error=600",
    ))
    .await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    get(&proxy.url(ASSET)).await;
    proxy.clock.advance(Duration::from_secs(20));
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "STALE");
    eventually("the background refresh stored", || {
        proxy
            .proxy
            .cache()
            .fresh(ASSET, proxy.clock.now())
            .is_some()
    })
    .await;
    assert_eq!(scripted.upstream.count(), 2);
    proxy.clock.advance(Duration::from_secs(100));
    scripted.upstream.stop();
    let down = get(&proxy.url(ASSET)).await;
    assert_eq!(
        (down.status, down.x_cache()),
        (StatusCode::OK, "STALE"),
        "{}",
        down.cache_status()
    );
}

#[tokio::test]
async fn a_kept_entry_is_revalidated_and_never_served_stale() {
    // #13: `keep` holds an entry with a validator for revalidation, apart from any permission to serve it
    // stale. (How long the store holds it runs on the store's own clock, not the test's: the unit test
    // `entries_are_kept_for_stale_use_and_with_a_validator_for_revalidation` pins that.)
    let scripted = Scripted::start(validated(200, "max-age=10")).await;
    let mut config = test_config(&scripted.upstream.url());
    config.cache.rules[1].limits.stale_if_error = Duration::ZERO;
    config.cache.rules[1].limits.stale_while_revalidate = Duration::ZERO;
    let proxy = TestProxy::start_with(config).await;
    get(&proxy.url(ASSET)).await;
    proxy.clock.advance(Duration::from_secs(3600));
    let later = get(&proxy.url(ASSET)).await;
    assert_eq!(later.x_cache(), "REVALIDATED", "{}", later.cache_status());
    assert_eq!(
        scripted.upstream.last().header("if-none-match"),
        Some("\"v1\"")
    );
    assert_eq!(later.body.as_ref(), b"stored");
    proxy.clock.advance(Duration::from_secs(3600));
    scripted.upstream.stop();
    let down = get(&proxy.url(ASSET)).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY, "kept is not servable");
}

#[tokio::test]
async fn a_stored_server_error_never_answers_for_a_failing_upstream() {
    // #13: a stored 500 was served as a stale-if-error answer; a 5xx revalidated to another gets the new one.
    let scripted = Scripted::start(validated(500, "max-age=10, stale-if-error=600")).await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    assert_eq!(get(&proxy.url(ASSET)).await.status, 500);
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "HIT");
    proxy.clock.advance(Duration::from_secs(20));
    scripted.set(Answer {
        body: b"new failure",
        honour_conditionals: false,
        ..validated(503, "no-store")
    });
    let failing = get(&proxy.url(ASSET)).await;
    assert_eq!(
        (failing.status, failing.body.as_ref()),
        (StatusCode::SERVICE_UNAVAILABLE, &b"new failure"[..]),
        "{}",
        failing.cache_status()
    );
    scripted.upstream.stop();
    let down = get(&proxy.url(ASSET)).await;
    assert_eq!(
        down.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        down.cache_status()
    );
}

#[tokio::test]
async fn an_error_kept_only_for_its_validator_never_answers_for_a_failing_upstream() {
    // A 403 is not heuristically cacheable: stored with no lifetime, only to be revalidated, it stands in for
    // nothing, whatever stale-if-error says.
    let scripted = Scripted::start(Answer {
        honour_conditionals: false,
        ..validated(403, "stale-if-error=600")
    })
    .await;
    let proxy = TestProxy::start(&scripted.upstream.url()).await;
    assert_eq!(get(&proxy.url(ASSET)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(proxy.proxy.cache().usage().0, 1, "stored for revalidation");
    scripted.upstream.stop();
    let down = get(&proxy.url(ASSET)).await;
    assert_eq!(
        down.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        down.cache_status()
    );
}

#[tokio::test]
async fn a_fill_carries_the_rules_fill_fields_and_nothing_else_unkeyed() {
    let scripted = Scripted::start(immutable()).await;
    let mut config = test_config(&scripted.upstream.url());
    config.cache.rules[1].fill_fields = vec![http::HeaderName::from_static("x-request-id")];
    let proxy = TestProxy::start_with(config).await;
    let fields = [("x-request-id", "r-7"), ("x-custom", "1")];
    assert_eq!(get_with(&proxy.url(ASSET), &fields).await.x_cache(), "MISS");
    let seen = scripted.upstream.last();
    assert_eq!(seen.header("x-request-id"), Some("r-7"));
    assert_eq!(seen.header("x-custom"), None);
}
