//! Bodies streamed both ways and never buffered whole: large and chunked uploads, `Expect: 100-continue`,
//! downloads and server-sent events that reach the client as the upstream sends them.

use std::sync::{Arc, Mutex};

use super::{open, read_to_end};
use crate::support::raw::Raw;
use crate::support::*;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{Notify, oneshot};

// Helpers of these tests.

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
