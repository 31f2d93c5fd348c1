//! A failing upstream on the avatar route, where an answer would be stored: every fault gives a clear 502 or
//! 504 (never a truncated body presented as complete), nothing is stored, waiting clients are released, and
//! the cache works again as soon as the upstream does. Bodies the proxy reads itself (a background refresh,
//! an avatar change's confirmation) are bounded too. (`forwarding::errors` covers the same faults on the
//! pass-through path.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const AVATAR: &str = "/api/v4/user/avatar/img1";
const TIMEOUT: Duration = Duration::from_millis(300);

/// How the upstream misbehaves on the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    ResetBeforeHead,
    CloseBeforeHead,
    Garbage,
    HugeHead,
    StallBeforeHead,
    ResetMidBody,
    CloseMidBody,
    StallMidBody,
}

const FAULTS: [(Fault, u16); 8] = [
    (Fault::ResetBeforeHead, 502),
    (Fault::CloseBeforeHead, 502),
    (Fault::Garbage, 502),
    (Fault::HugeHead, 502),
    (Fault::StallBeforeHead, 504),
    (Fault::ResetMidBody, 502),
    (Fault::CloseMidBody, 502),
    (Fault::StallMidBody, 504),
];

const GOOD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncache-control: public, max-age=86400\r\ncontent-length: 8\r\nconnection: close\r\n\r\nPNG good";
const PARTIAL: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncache-control: public, max-age=86400\r\ncontent-length: 1000\r\n\r\nPNG part";

/// A raw upstream that answers well, or with the fault currently set.
struct Switchable {
    upstream: RawUpstream,
    fault: Arc<Mutex<Option<Fault>>>,
    connections: Arc<AtomicUsize>,
}

impl Switchable {
    async fn start() -> Self {
        let fault = Arc::new(Mutex::new(None));
        let connections = Arc::new(AtomicUsize::new(0));
        let (current, counter) = (Arc::clone(&fault), Arc::clone(&connections));
        let upstream = RawUpstream::start(move |stream| {
            counter.fetch_add(1, Ordering::SeqCst);
            let fault = *current.lock().unwrap();
            answer(stream, fault)
        })
        .await;
        Self {
            upstream,
            fault,
            connections,
        }
    }

    fn set(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap() = fault;
    }
}

async fn answer(mut stream: TcpStream, fault: Option<Fault>) {
    let _ = read_head(&mut stream).await;
    let reply: Vec<u8> = match fault {
        None => GOOD.to_vec(),
        Some(Fault::ResetBeforeHead) => {
            let _ = stream.set_zero_linger();
            return;
        }
        Some(Fault::CloseBeforeHead) => return,
        Some(Fault::Garbage) => b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n".to_vec(),
        Some(Fault::HugeHead) => {
            let mut head = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\nx-big: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
            head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            head
        }
        Some(Fault::StallBeforeHead) => Vec::new(),
        Some(Fault::ResetMidBody | Fault::CloseMidBody | Fault::StallMidBody) => PARTIAL.to_vec(),
    };
    let _ = stream.write_all(&reply).await;
    match fault {
        Some(Fault::ResetMidBody) => {
            let _ = stream.set_zero_linger();
        }
        Some(Fault::StallBeforeHead | Fault::StallMidBody | Fault::Garbage) => {
            // Hold the connection open until the proxy gives up on it.
            drain(&mut stream).await;
        }
        _ => {}
    }
}

async fn proxy_for(upstream: &Switchable) -> TestProxy {
    let mut config = test_config(&upstream.upstream.url());
    config.upstream.response_header_timeout = TIMEOUT;
    config.server.response_idle_timeout = TIMEOUT;
    TestProxy::start_with(config).await
}

/// How a request ended for the client: an error status, or a body that was cut (`Err`), or a complete body.
async fn outcome(url: String) -> Result<(u16, Vec<u8>), String> {
    let response = tokio::time::timeout(
        PATIENCE,
        client().request(http::Request::get(url).body(empty()).unwrap()),
    )
    .await
    .expect("no response head within PATIENCE")
    .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(
        PATIENCE,
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .expect("the body neither ended nor failed within PATIENCE")
    .map_err(|e| format!("body cut: {e}"))?;
    Ok((status, body.to_bytes().to_vec()))
}

#[tokio::test]
async fn every_fault_on_a_fill_is_a_clear_error_never_stored_and_the_cache_recovers() {
    let upstream = Switchable::start().await;
    let proxy = proxy_for(&upstream).await;
    for (fault, status) in FAULTS {
        upstream.set(Some(fault));
        let started = Instant::now();
        let reply = get(&proxy.url(AVATAR)).await;
        assert_eq!(reply.status.as_u16(), status, "{fault:?}: {:?}", reply.body);
        assert_eq!(reply.json()["code"], status, "{fault:?}");
        assert!(
            reply.cache_status().contains("detail=upstream-error"),
            "{fault:?}: {}",
            reply.cache_status()
        );
        assert!(
            started.elapsed() < TIMEOUT * 6,
            "{fault:?}: answered after {:?}",
            started.elapsed()
        );
        assert_eq!(
            proxy.proxy.cache().usage().0,
            0,
            "{fault:?}: nothing stored"
        );

        // The upstream comes back: the very next request fills and stores, the one after is a hit.
        upstream.set(None);
        let miss = get(&proxy.url(AVATAR)).await;
        assert_eq!(
            (miss.status.as_u16(), miss.x_cache()),
            (200, "MISS"),
            "{fault:?}"
        );
        assert_eq!(miss.body, "PNG good");
        let hit = get(&proxy.url(AVATAR)).await;
        assert_eq!(hit.x_cache(), "HIT", "{fault:?}");
        proxy.proxy.cache().purge(
            cloudreve_edge::cache::policy::AvatarKey::from_path_segment("img1")
                .unwrap()
                .as_str(),
        );
    }
}

#[tokio::test]
async fn waiters_on_a_failing_fill_are_all_answered_promptly() {
    for fault in [
        Fault::StallBeforeHead,
        Fault::StallMidBody,
        Fault::ResetMidBody,
    ] {
        let upstream = Switchable::start().await;
        upstream.set(Some(fault));
        let proxy = proxy_for(&upstream).await;
        let started = Instant::now();
        let requests: Vec<_> = (0..8)
            .map(|_| tokio::spawn(outcome(proxy.url(AVATAR))))
            .collect();
        for request in requests {
            // The leader gets 504/502; a waiter it released goes upstream itself and may get the head of
            // the stalled or reset answer, whose body is then cut: never a short body that ends cleanly.
            match request.await.unwrap() {
                Ok((status, body)) => {
                    let body = String::from_utf8_lossy(&body).into_owned();
                    assert!(status >= 500, "{fault:?}: {status} {body:?}");
                }
                Err(cut) => assert_ne!(fault, Fault::StallBeforeHead, "{cut}"),
            }
        }
        // The leader times out once; the waiters it releases each try the upstream once more.
        assert!(
            started.elapsed() < TIMEOUT * 8,
            "{fault:?}: {:?}",
            started.elapsed()
        );
        assert_eq!(proxy.proxy.cache().usage().0, 0);
    }
}

#[tokio::test]
async fn stalled_download_is_aborted_never_presented_as_complete() {
    let upstream = Switchable::start().await;
    upstream.set(Some(Fault::StallMidBody));
    let proxy = proxy_for(&upstream).await;
    let started = Instant::now();
    let result = outcome(proxy.url("/api/v4/file/content/x.bin")).await;
    assert!(
        result.as_ref().is_err_and(|e| e.starts_with("body cut")),
        "{result:?}"
    );
    assert!(started.elapsed() >= TIMEOUT);
    upstream.set(None);
    assert_eq!(
        get(&proxy.url("/api/v4/file/content/x.bin")).await.status,
        200
    );
}

#[tokio::test]
async fn oversized_upstream_head_on_pass_through_is_502() {
    let upstream = Switchable::start().await;
    upstream.set(Some(Fault::HugeHead));
    let proxy = proxy_for(&upstream).await;
    let reply = get(&proxy.url("/api/v4/site/ping")).await;
    assert_eq!(reply.status, 502);
    upstream.set(None);
    assert_eq!(get(&proxy.url("/api/v4/site/ping")).await.status, 200);
    assert!(upstream.connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn upstream_that_never_completes_the_connection_maps_to_504_after_connect_timeout() {
    // A listener that never accepts, its backlog filled: the kernel drops further SYNs, so a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break, // the backlog is full
        }
    }
    let mut config = test_config(&format!("http://{addr}"));
    config.upstream.connect_timeout = TIMEOUT;
    let proxy = TestProxy::start_with(config).await;
    let started = Instant::now();
    let reply = get(&proxy.url(AVATAR)).await;
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert!(started.elapsed() >= TIMEOUT);
    assert!(started.elapsed() < TIMEOUT * 6, "{:?}", started.elapsed());
    assert!(reply.cache_status().contains("detail=upstream-error"));
    assert_eq!(proxy.proxy.cache().usage().0, 0);
    drop(listener);
}

/// A stale `http` entry refreshed in the background from an upstream that stalls mid-body: nobody reads that
/// answer, so the refresh gives up after `server.response_idle_timeout` like a client's body would, and the
/// key's fill is released. The next request past the stale window is answered instead of waiting forever.
#[tokio::test]
async fn background_refresh_that_stalls_mid_body_releases_the_fill() {
    const ASSET: &str = "/assets/app.js";
    let upstream = Switchable::start().await;
    let mut config = test_config(&upstream.upstream.url());
    config.upstream.response_header_timeout = TIMEOUT;
    config.server.response_idle_timeout = TIMEOUT;
    config.cache.rules[1].limits.stale_while_revalidate = Duration::from_secs(60);
    let proxy = TestProxy::start_with(config).await;
    assert_eq!(get(&proxy.url(ASSET)).await.x_cache(), "MISS");
    // Past max-age (86400 s), within the stale-while-revalidate the rule sets (60 s).
    proxy.clock.advance(Duration::from_secs(86_400 + 10));
    upstream.set(Some(Fault::StallMidBody));
    let stale = get(&proxy.url(ASSET)).await;
    assert_eq!((stale.status.as_u16(), stale.x_cache()), (200, "STALE"));
    eventually("the background refresh reached the upstream", || {
        upstream.connections.load(Ordering::SeqCst) == 2
    })
    .await;
    upstream.set(None);
    // Past the stale window: this request needs the fill the stalled refresh holds.
    proxy.clock.advance(Duration::from_secs(120));
    let started = Instant::now();
    let fresh = get(&proxy.url(ASSET)).await;
    assert_eq!(fresh.status, 200, "{:?}", fresh.body);
    assert_eq!(fresh.body, "PNG good");
    assert!(
        started.elapsed() < TIMEOUT * 6,
        "answered after {:?}",
        started.elapsed()
    );
}

/// The answer to an avatar change is read whole before the client hears of it (a confirmed change drops the
/// stored avatar first): an upstream that stalls inside it gets the limit a fill's body gets, a 504.
#[tokio::test]
async fn stalled_avatar_change_confirmation_is_a_504_not_a_hang() {
    let upstream = RawUpstream::start(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        let partial: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"code\":0";
        let _ = stream.write_all(partial).await;
        drain(&mut stream).await;
    })
    .await;
    let mut config = test_config(&upstream.url());
    config.upstream.response_header_timeout = TIMEOUT;
    let proxy = TestProxy::start_with(config).await;
    let started = Instant::now();
    let reply = request("PUT", &proxy.url("/api/v4/admin/user/12")).await;
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert!(started.elapsed() >= TIMEOUT);
    assert!(started.elapsed() < TIMEOUT * 6, "{:?}", started.elapsed());
}
