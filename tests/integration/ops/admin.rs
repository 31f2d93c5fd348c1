//! The admin listener: `/metrics` parses as Prometheus text and its counters follow the traffic; `/healthz`;
//! `/readyz` follows the upstream and turns 503 the moment a drain starts, while requests still finish.

use std::sync::Arc;
use std::time::Duration;

use crate::support::ops::TestAdmin;
use crate::support::*;
use http::{Request, Response};
use tokio::sync::Notify;

const AVATAR: &str = "/api/v4/user/avatar/img1";
const PING: &str = "/api/v4/site/ping";

#[tokio::test]
async fn metrics_parse_and_count_requests_by_route_and_cache_outcome() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;

    let before = admin.scrape().await;
    assert_eq!(before.value("cloudreve_edge_requests_total", &[]), 0.0);
    assert_eq!(
        before.histogram_count("cloudreve_edge_upstream_response_seconds"),
        0.0
    );

    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
    let nocache = format!("{AVATAR}?nocache=1");
    assert_eq!(get(&proxy.url(&nocache)).await.x_cache(), "BYPASS");
    assert_eq!(get(&proxy.url(PING)).await.status, 200);

    let after = admin.scrape().await;
    let requests = |route, cache| {
        after.value(
            "cloudreve_edge_requests_total",
            &[("route", route), ("cache", cache), ("status", "2xx")],
        )
    };
    assert_eq!(requests("avatar", "miss"), 1.0, "{}", after.text);
    assert_eq!(requests("avatar", "hit"), 1.0, "{}", after.text);
    assert_eq!(requests("avatar", "bypass"), 1.0, "{}", after.text);
    assert_eq!(requests("pass", "none"), 1.0, "{}", after.text);
    // The miss, the bypass and the ping went upstream; the hit did not.
    assert_eq!(
        after.histogram_count("cloudreve_edge_upstream_response_seconds"),
        3.0
    );
    assert_eq!(after.value("cloudreve_edge_cache_entries", &[]), 1.0);
    assert!(after.value("cloudreve_edge_cache_bytes", &[]) > 0.0);
    assert_eq!(
        after.value("cloudreve_edge_cache_evictions_total", &[]),
        0.0
    );
    assert_eq!(after.value("cloudreve_edge_upstream_in_flight", &[]), 0.0);
}

#[tokio::test]
async fn metrics_count_upstream_errors_by_kind() {
    // A port nobody listens on: connections are refused.
    let (_reserved, url) = refusing_upstream();
    let proxy = TestProxy::start(&url).await;
    let admin = TestAdmin::start(&proxy).await;

    assert_eq!(get(&proxy.url(PING)).await.status, 502);
    assert_eq!(get(&proxy.url(AVATAR)).await.status, 502);

    let metrics = admin.scrape().await;
    assert_eq!(
        metrics.value(
            "cloudreve_edge_upstream_errors_total",
            &[("kind", "connect")]
        ),
        2.0,
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.value("cloudreve_edge_requests_total", &[("status", "5xx")]),
        2.0
    );
}

/// The paths of issue 3 go upstream through the same measured exchange as a miss: a background refresh and a
/// revalidation each count once in the latency histogram with their own cache label, and an upstream failure
/// hidden from the client by `stale-if-error` is still counted and still makes `/readyz` look again.
#[tokio::test]
async fn revalidations_refreshes_and_stale_answers_are_measured() {
    const MONDAY: &str = "Mon, 23 Nov 2026 10:00:00 GMT";
    let upstream = FakeCloudreve::start(|request: Request<hyper::body::Incoming>| async move {
        let builder = Response::builder()
            .header("cache-control", "public, max-age=60")
            .header("last-modified", MONDAY);
        if request
            .headers()
            .get("if-modified-since")
            .is_some_and(|v| v == MONDAY)
        {
            builder.status(304).body(empty()).unwrap()
        } else {
            builder
                .header("content-type", "image/png")
                .body(full("png"))
                .unwrap()
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await; // stale_while_revalidate = 60s by default
    let admin = TestAdmin::start(&proxy).await;
    let key = cloudreve_edge::cache::policy::AvatarKey::from_path_segment("img1").unwrap();
    let exchanges = |m: &crate::support::ops::Metrics| {
        m.histogram_count("cloudreve_edge_upstream_response_seconds")
    };

    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
    assert_eq!(exchanges(&admin.scrape().await), 1.0);

    proxy.clock.advance(Duration::from_secs(61));
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "STALE");
    eventually(
        "the background refresh (a 304) made the entry fresh",
        || {
            proxy
                .proxy
                .cache()
                .peek(key.as_str(), &http::HeaderMap::new())
                .is_some_and(|e| e.is_fresh(proxy.clock.now()))
        },
    )
    .await;
    assert_eq!(upstream.count(), 2);
    assert_eq!(
        exchanges(&admin.scrape().await),
        2.0,
        "the refresh is measured"
    );

    proxy.clock.advance(Duration::from_secs(130)); // past max-age and stale-while-revalidate
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "REVALIDATED");
    assert_eq!(upstream.count(), 3);
    assert_eq!(exchanges(&admin.scrape().await), 3.0);

    upstream.stop();
    proxy.clock.advance(Duration::from_secs(3600));
    let stale = get(&proxy.url(AVATAR)).await;
    assert_eq!((stale.status.as_u16(), stale.x_cache()), (200, "STALE"));
    assert!(stale.cache_status().ends_with("detail=stale-if-error"));

    let metrics = admin.scrape().await;
    let requests = |cache| {
        metrics.value(
            "cloudreve_edge_requests_total",
            &[("route", "avatar"), ("cache", cache), ("status", "2xx")],
        )
    };
    assert_eq!(requests("miss"), 1.0, "{}", metrics.text);
    assert_eq!(requests("stale"), 2.0, "{}", metrics.text);
    assert_eq!(requests("revalidated"), 1.0, "{}", metrics.text);
    assert_eq!(
        metrics.value(
            "cloudreve_edge_upstream_errors_total",
            &[("kind", "connect")]
        ),
        1.0,
        "the refused connection counts although a stale copy answered: {}",
        metrics.text
    );
    assert_eq!(
        metrics.value("cloudreve_edge_requests_total", &[("status", "5xx")]),
        0.0
    );
    assert_eq!(metrics.value("cloudreve_edge_upstream_in_flight", &[]), 0.0);
    let ready = get(&admin.url("/readyz")).await;
    assert_eq!(
        (ready.status.as_u16(), &ready.body[..]),
        (503, &b"upstream unreachable\n"[..]),
        "the failure behind the stale answer reached readiness"
    );
}

/// An upstream whose `/slow` answers only when the test says so; everything else is answered at once.
async fn gated_upstream(gate: Arc<Notify>) -> FakeCloudreve {
    FakeCloudreve::start(move |request: Request<_>| {
        let gate = Arc::clone(&gate);
        async move {
            if request.uri().path() == "/slow" {
                gate.notified().await;
            }
            Response::new(full("done"))
        }
    })
    .await
}

#[tokio::test]
async fn in_flight_and_open_connection_gauges_follow_a_slow_request() {
    let gate = Arc::new(Notify::new());
    let upstream = gated_upstream(Arc::clone(&gate)).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;

    let url = proxy.url("/slow");
    let slow = tokio::spawn(async move { get(&url).await });
    eventually("the slow request reaches the upstream", || {
        upstream.count() == 1
    })
    .await;
    let during = admin.scrape().await;
    assert_eq!(during.value("cloudreve_edge_upstream_in_flight", &[]), 1.0);
    assert_eq!(during.value("cloudreve_edge_open_connections", &[]), 1.0);

    gate.notify_one();
    assert_eq!(slow.await.unwrap().status, 200);
    let after = admin.scrape().await;
    assert_eq!(after.value("cloudreve_edge_upstream_in_flight", &[]), 0.0);
}

#[tokio::test]
async fn healthz_answers_ok() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;
    let reply = get(&admin.url("/healthz")).await;
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (200, &b"ok\n"[..])
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn readyz_probes_a_quiet_upstream_and_is_ready() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;
    let reply = get(&admin.url("/readyz")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        upstream.count(),
        0,
        "the probe is a TCP connect, not a request"
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_upstream_is_unreachable() {
    let (_reserved, url) = refusing_upstream();
    let proxy = TestProxy::start(&url).await;
    let admin = TestAdmin::start(&proxy).await;
    let reply = get(&admin.url("/readyz")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(&reply.body[..], b"upstream unreachable\n");
}

#[tokio::test]
async fn readyz_turns_503_as_soon_as_a_drain_starts() {
    let gate = Arc::new(Notify::new());
    let upstream = gated_upstream(Arc::clone(&gate)).await;
    let mut proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;
    assert_eq!(get(&proxy.url(PING)).await.status, 200);
    assert_eq!(get(&admin.url("/readyz")).await.status, 200);

    // A request in flight keeps the drain going.
    let url = proxy.url("/slow");
    let slow = tokio::spawn(async move { get(&url).await });
    eventually("the slow request reaches the upstream", || {
        upstream.count() == 2
    })
    .await;
    proxy.begin_shutdown();
    eventually("the drain has started", || {
        proxy.proxy.health().is_draining()
    })
    .await;
    let reply = get(&admin.url("/readyz")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(&reply.body[..], b"draining\n");
    assert_eq!(get(&admin.url("/healthz")).await.status, 200, "still alive");

    gate.notify_one();
    assert_eq!(slow.await.unwrap().status, 200, "in-flight work finishes");
    proxy.finished().await.unwrap();
}

#[tokio::test]
async fn unknown_admin_paths_and_methods_are_refused() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;
    assert_eq!(get(&admin.url("/nothing")).await.status, 404);
    assert_eq!(request("POST", &admin.url("/metrics")).await.status, 405);
    let head = request("HEAD", &admin.url("/readyz")).await;
    assert_eq!((head.status.as_u16(), head.body.len()), (200, 0));
    assert_eq!(upstream.count(), 0, "admin traffic never reaches Cloudreve");
}

#[tokio::test]
async fn metrics_name_the_kind_of_rule_that_matched() {
    let upstream =
        FakeCloudreve::start(|request| async move { cloudreve_with_assets(&request) }).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;
    get(&proxy.url("/assets/a.js")).await;
    get(&proxy.url("/assets/a.js")).await;
    get(&proxy.url("/api/v4/site/ping")).await;
    let text = get(&admin.url("/metrics")).await.body;
    let text = String::from_utf8_lossy(&text);
    let line = |route: &str, cache: &str| {
        text.lines().any(|l| {
            l.starts_with("cloudreve_edge_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("cache=\"{cache}\""))
                && l.ends_with(" 1")
        })
    };
    assert!(line("http", "miss"), "{text}");
    assert!(line("http", "hit"), "{text}");
    assert!(line("pass", "none"), "{text}");
}
