//! Upstream failures: before the response head (refused, silent, reset, closed, garbage) the proxy's own
//! error in Cloudreve's envelope; after it (a broken body) an aborted connection or HTTP/2 stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{PING, open, raw_upstream_answering, read_to_end};
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response, Version};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

// Helpers of these tests.

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
