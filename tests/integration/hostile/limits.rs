//! Limits and timeouts against hostile clients: slow or silent connections, oversized heads, connection and
//! stream floods. Each limit is shown cutting what it should, and none of them cutting a transfer in progress
//! (downloads, uploads, server-sent events), however long it lasts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::raw::*;
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const PING: &str = "/api/v4/site/ping";
const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(60);

async fn ping_upstream() -> FakeCloudreve {
    FakeCloudreve::start(|_| async { json_response(r#"{"code":0,"data":"pong","msg":""}"#) }).await
}

/// A proxy whose only short limit is the one the test sets.
fn config_with(
    upstream: &str,
    tweak: impl FnOnce(&mut cloudreve_edge::Config),
) -> cloudreve_edge::Config {
    let mut config = test_config(upstream);
    config.server.header_read_timeout = LONG;
    config.server.idle_timeout = LONG;
    tweak(&mut config);
    config
}

fn ping_request() -> Vec<u8> {
    format!("GET {PING} HTTP/1.1\r\nHost: cloud.example\r\n\r\n").into_bytes()
}

/// Asserts the connection is closed no sooner than `limit` after `since` and well before [`PATIENCE`].
async fn assert_closed_after(raw: &mut Raw, since: Instant, limit: Duration) {
    let sent = raw.closed().await;
    let after = since.elapsed();
    assert!(
        after >= limit,
        "closed after {after:?}, before the {limit:?} limit"
    );
    assert!(
        after < limit + Duration::from_secs(3),
        "closed only after {after:?}"
    );
    // hyper answers a timed-out head with nothing or a bare 408; never with a forwarded response.
    let text = String::from_utf8_lossy(&sent);
    assert!(
        sent.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
}

// 1. Connections that never get to a request.

#[tokio::test]
async fn silent_connection_is_closed_after_idle_timeout() {
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.idle_timeout = SHORT
    }))
    .await;
    let since = Instant::now();
    let mut raw = Raw::connect(proxy.addr).await;
    assert_closed_after(&mut raw, since, SHORT).await;
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn partial_http2_preface_is_closed_after_idle_timeout() {
    // hyper-util waits for the 24-byte preface with no timer of its own.
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.idle_timeout = SHORT
    }))
    .await;
    let since = Instant::now();
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert_closed_after(&mut raw, since, SHORT).await;
}

#[tokio::test]
async fn slowloris_head_is_closed_after_header_read_timeout() {
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.header_read_timeout = SHORT
    }))
    .await;
    let since = Instant::now();
    let mut raw = Raw::connect(proxy.addr).await;
    // One byte every 50 ms: each arrives well inside any per-read timeout, the head never completes in time.
    let head = ping_request();
    let drip = async {
        for byte in head.iter().take(head.len() - 2) {
            if raw.send(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, drip).await.unwrap();
    assert_closed_after(&mut raw, since, SHORT).await;
    assert_eq!(
        upstream.count(),
        0,
        "the partial request never reached the upstream"
    );
}

// 2. Idle keep-alive connections.

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.idle_timeout = SHORT
    }))
    .await;
    // Taken before the request: the idle timer starts once the response is written, which the client may
    // read a moment later.
    let since = Instant::now();
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&ping_request()).await.unwrap();
    assert_eq!(raw.response().await.status, 200);
    assert_closed_after(&mut raw, since, SHORT).await;
}

#[tokio::test]
async fn keep_alive_connection_in_use_is_not_closed() {
    // Requests spaced under the idle timeout keep one connection for far longer than the timeout.
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.idle_timeout = SHORT
    }))
    .await;
    let mut raw = Raw::connect(proxy.addr).await;
    for _ in 0..6 {
        raw.send(&ping_request()).await.unwrap();
        assert_eq!(raw.response().await.status, 200);
        tokio::time::sleep(SHORT / 2).await;
    }
    assert_eq!(upstream.count(), 6);
}

#[tokio::test]
async fn idle_http2_connection_is_closed_after_idle_timeout() {
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.idle_timeout = SHORT
    }))
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, TestBody>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(Request::get(proxy.url(PING)).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    response.into_body().collect().await.unwrap();
    let since = Instant::now();
    tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("the idle HTTP/2 connection was left open")
        .unwrap()
        .ok();
    assert!(
        since.elapsed() >= SHORT / 2,
        "closed at once, not after idling"
    );
}

// 3. Nothing cuts a transfer in progress.

/// Every timeout short; the transfer below outlasts each of them several times over.
fn all_short(upstream: &str) -> cloudreve_edge::Config {
    config_with(upstream, |c| {
        c.server.idle_timeout = SHORT;
        c.server.header_read_timeout = SHORT;
        c.upstream.response_header_timeout = SHORT;
        // Longer than each gap: bytes keep flowing, so nothing is stalled.
        c.server.response_idle_timeout = GAP * 2;
    })
}

const GAP: Duration = Duration::from_millis(450);
const PIECES: usize = 4;

#[tokio::test]
async fn slow_download_and_sse_outlasting_every_timeout_are_not_cut() {
    for content_type in ["application/octet-stream", "text/event-stream"] {
        let upstream = FakeCloudreve::start(move |_| async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                for i in 0..PIECES {
                    if i > 0 {
                        // Spacing the pieces, not waiting for readiness: each gap outlasts every timeout.
                        tokio::time::sleep(GAP).await;
                    }
                    let piece = Bytes::from(format!("data: {i}\n\n"));
                    if tx.send(Ok(piece)).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", content_type)
                .body(body)
                .unwrap()
        })
        .await;
        let proxy = TestProxy::start_with(all_short(&upstream.url())).await;
        let started = Instant::now();
        let reply = send(
            &client(),
            Request::get(proxy.url("/api/v4/file/events"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, 200, "{content_type}");
        let expected: String = (0..PIECES).map(|i| format!("data: {i}\n\n")).collect();
        assert_eq!(reply.body, expected, "{content_type}");
        assert!(
            started.elapsed() > SHORT * 3,
            "{content_type}: the transfer outlasted the timeouts"
        );
    }
}

#[tokio::test]
async fn slow_upload_outlasting_every_timeout_is_not_cut() {
    // Cloudreve answers an upload chunk only after reading all of it, so the response-head timeout must not
    // run while the client is still sending.
    let upstream = FakeCloudreve::start(|request: Request<Incoming>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Response::builder()
            .header("content-type", "application/json")
            .body(full(format!(r#"{{"code":0,"data":{}}}"#, body.len())))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::start_with(all_short(&upstream.url())).await;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for i in 0..PIECES {
            if i > 0 {
                tokio::time::sleep(GAP).await;
            }
            if tx.send(Ok(Bytes::from(vec![b'x'; 1000]))).await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let request = Request::post(proxy.url("/api/v4/file/upload/session/0"))
        .header("content-length", PIECES * 1000)
        .body(body)
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["data"], PIECES * 1000);
    assert!(started.elapsed() > SHORT * 3);
}

// 4. Request head size and field count.

fn head_with(fields: usize, field_len: usize) -> Vec<u8> {
    let mut head = format!("GET {PING} HTTP/1.1\r\nHost: cloud.example\r\n");
    for i in 0..fields {
        head.push_str(&format!("x-f{i}: {}\r\n", "v".repeat(field_len)));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn request_head_over_the_size_limit_gets_431_and_is_never_forwarded() {
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.max_request_head_size = 16 * 1024
    }))
    .await;

    let (fits, _) = exchange(proxy.addr, &head_with(1, 12 * 1024)).await;
    assert_eq!(fits.status, 200);
    let (response, mut raw) = exchange(proxy.addr, &head_with(1, 20 * 1024)).await;
    assert_eq!(response.status, 431);
    raw.closed().await;
    // Many small fields add up the same way.
    let (response, _) = exchange(proxy.addr, &head_with(40, 600)).await;
    assert_eq!(response.status, 431);
    assert_eq!(upstream.count(), 1, "only the head that fits was forwarded");
}

#[tokio::test]
async fn too_many_header_fields_get_431_and_are_never_forwarded() {
    let upstream = ping_upstream().await;
    let proxy =
        TestProxy::start_with(config_with(&upstream.url(), |c| c.server.max_headers = 20)).await;
    // Host plus 19 fields is 20.
    let (fits, _) = exchange(proxy.addr, &head_with(19, 4)).await;
    assert_eq!(fits.status, 200);
    let (response, mut raw) = exchange(proxy.addr, &head_with(20, 4)).await;
    assert_eq!(response.status, 431);
    raw.closed().await;
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn http2_header_list_over_the_size_limit_is_refused_and_never_forwarded() {
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.max_request_head_size = 16 * 1024
    }))
    .await;
    let request = Request::get(proxy.url(PING))
        .header("x-big", "v".repeat(20 * 1024))
        .body(empty())
        .unwrap();
    let result = tokio::time::timeout(PATIENCE, h2_client().request(request))
        .await
        .unwrap();
    match result {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(err) => {
            // The client may itself refuse to send past the advertised SETTINGS_MAX_HEADER_LIST_SIZE.
            let text = format!("{err:?}");
            assert!(text.to_ascii_lowercase().contains("header"), "{text}");
        }
    }
    assert_eq!(upstream.count(), 0);
}

// 5. Connection and stream floods.

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let upstream = ping_upstream().await;
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.max_connections = 2
    }))
    .await;
    let mut first = Raw::connect(proxy.addr).await;
    first.send(&ping_request()).await.unwrap();
    assert_eq!(first.response().await.status, 200);
    let mut second = Raw::connect(proxy.addr).await;
    second.send(&ping_request()).await.unwrap();
    assert_eq!(second.response().await.status, 200);

    // The third connects (the kernel's backlog completes the handshake) but is not served yet.
    let mut third = Raw::connect(proxy.addr).await;
    third.send(&ping_request()).await.unwrap();
    let third_answer = tokio::spawn(async move { third.response().await.status });
    tokio::time::sleep(SHORT).await;
    assert!(!third_answer.is_finished(), "served past max_connections");
    assert_eq!(upstream.count(), 2);

    drop(first);
    let status = tokio::time::timeout(PATIENCE, third_answer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "served once a slot was free");
    // The accept loop kept working the whole time: the second connection is still served.
    second.send(&ping_request()).await.unwrap();
    assert_eq!(second.response().await.status, 200);
}

#[tokio::test]
async fn http2_streams_over_the_limit_wait_and_all_complete() {
    const LIMIT: u32 = 2;
    const REQUESTS: usize = 6;
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let upstream = {
        let (inside, most, gate) = (Arc::clone(&inside), Arc::clone(&most), Arc::clone(&gate));
        FakeCloudreve::start(move |_| {
            let (inside, most, gate) = (Arc::clone(&inside), Arc::clone(&most), Arc::clone(&gate));
            async move {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                inside.fetch_sub(1, Ordering::SeqCst);
                json_response(r#"{"code":0}"#)
            }
        })
        .await
    };
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.h2_max_concurrent_streams = LIMIT
    }))
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake::<_, _, TestBody>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    // One exchange first, so the client has the server's SETTINGS (before them, streams past the limit are
    // refused with REFUSED_STREAM, RFC 9113 §8.7: never processed, safe to retry).
    gate.add_permits(1);
    let warm_up = sender
        .clone()
        .send_request(Request::get(proxy.url(PING)).body(empty()).unwrap());
    tokio::time::timeout(PATIENCE, warm_up)
        .await
        .unwrap()
        .unwrap();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let mut sender = sender.clone();
            let url = proxy.url(PING);
            tokio::spawn(async move {
                let response = sender
                    .send_request(Request::get(url).body(empty()).unwrap())
                    .await?;
                response.into_body().collect().await.map(|_| ())
            })
        })
        .collect();
    eventually("the first streams reach the upstream", || {
        inside.load(Ordering::SeqCst) == LIMIT as usize
    })
    .await;
    tokio::time::sleep(SHORT).await;
    assert_eq!(
        upstream.count(),
        1 + LIMIT as usize,
        "no stream past the limit was opened"
    );
    gate.add_permits(REQUESTS);
    for request in requests {
        tokio::time::timeout(PATIENCE, request)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), LIMIT as usize);
    assert_eq!(upstream.count(), 1 + REQUESTS);
}

#[tokio::test]
async fn stalled_upload_gets_408_and_the_upstream_never_gets_a_complete_request() {
    let complete = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let complete = Arc::clone(&complete);
        FakeCloudreve::start(move |request: Request<Incoming>| {
            let complete = Arc::clone(&complete);
            async move {
                // 1 for a whole body, 100 for one that broke off.
                let outcome = if request.into_body().collect().await.is_ok() {
                    1
                } else {
                    100
                };
                complete.fetch_add(outcome, Ordering::SeqCst);
                json_response(r#"{"code":0}"#)
            }
        })
        .await
    };
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.upstream.request_body_idle_timeout = SHORT;
    }))
    .await;
    let since = Instant::now();
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(b"POST /api/v4/file/upload/s/0 HTTP/1.1\r\nHost: cloud.example\r\nContent-Length: 1000\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let response = raw.response().await;
    assert_eq!(response.status, 408);
    assert!(since.elapsed() >= SHORT);
    assert_eq!(response.header("connection"), Some("close"));
    raw.closed().await;
    eventually("the upstream saw the request", || upstream.count() == 1).await;
    assert_eq!(
        complete.load(Ordering::SeqCst),
        0,
        "the upstream never got the whole body"
    );
}

#[tokio::test]
async fn http2_rapid_reset_flood_leaves_no_upstream_request_behind() {
    // CVE-2023-44487: open a stream and reset it at once, thousands of times. Each reset must cancel the
    // proxy's upstream request, so the upstream never holds more than a stream limit's worth at a time, and
    // nothing is left in flight afterwards.
    const ROUNDS: usize = 100;
    const LIMIT: u32 = 8;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let (in_flight, most) = (Arc::clone(&in_flight), Arc::clone(&most));
        FakeCloudreve::start(move |request: Request<Incoming>| {
            let hold = request.uri().path() == PING;
            let guard = hold.then(|| InFlight::enter(&in_flight, &most));
            async move {
                if hold {
                    // Never answers: only a cancellation ends it.
                    std::future::pending::<()>().await;
                }
                drop(guard);
                json_response("{}")
            }
        })
        .await
    };
    let proxy = TestProxy::start_with(config_with(&upstream.url(), |c| {
        c.server.h2_max_concurrent_streams = LIMIT;
    }))
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // In rounds: a stream limit's worth of requests, each reset once the upstream has it (the proxy has
    // started the work, which is what makes the attack expensive), then the next round.
    let flood = async {
        for round in 1..=ROUNDS {
            let mut open = Vec::new();
            for _ in 0..LIMIT {
                client = client.ready().await.expect("the connection stays usable");
                let request = Request::get(proxy.url(PING)).body(()).unwrap();
                open.push(client.send_request(request, false).unwrap());
            }
            let reached = round * LIMIT as usize;
            eventually("the round reaches the upstream", || {
                upstream.count() == reached
            })
            .await;
            for (_response, mut send) in open {
                send.send_reset(h2::Reason::CANCEL);
            }
        }
    };
    tokio::time::timeout(PATIENCE * 3, flood)
        .await
        .expect("the flood was not absorbed");
    connection.abort();
    eventually("every upstream request cancelled", || {
        in_flight.load(Ordering::SeqCst) == 0
    })
    .await;
    let peak = most.load(Ordering::SeqCst);
    assert!(
        peak <= 2 * LIMIT as usize,
        "{peak} upstream requests at once"
    );
    // The proxy is fine afterwards.
    let reply = send(
        &h2_client(),
        Request::get(proxy.url("/after")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.count(), ROUNDS * LIMIT as usize + 1);
}

/// Counts a fake upstream handler as in flight until it is dropped (answered or cancelled).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>, most: &AtomicUsize) -> Self {
        let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
