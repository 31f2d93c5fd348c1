//! Memory under attack: a flood of distinct avatar ids keeps the cache within its byte budget and the hot
//! set in it (moka's TinyLFU admission), and slow readers of large downloads never make the proxy hold the
//! body: the upstream is back-pressured instead, so what is in flight stays bounded by socket buffers.
//!
//! Resident memory is read from `/proc/self/statm`; under nextest each test is a process of its own, so the
//! figure is the test's. The flood size can be raised with `FLOOD_IDS` (the issue's figure is a million).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::raw::*;
use crate::support::*;
use bytes::Bytes;
use cloudreve_edge::cache::policy::{AvatarKey, Freshness, Limits};
use cloudreve_edge::cache::{Cache, CachedResponse, Clock, Lookup, Miss};
use cloudreve_edge::config::Config;
use http::{Request, Response};
use hyper::body::Incoming;

const MIB: u64 = 1024 * 1024;

/// Resident set size of this process, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

// 1. A flood of distinct ids.

/// Fills `id` if missing; true if it was a hit.
fn touch(
    cache: &Cache,
    limits: &Limits,
    parts: &http::response::Parts,
    id: &str,
    body: &Bytes,
) -> bool {
    let key = AvatarKey::from_path_segment(id).expect("a canonical id");
    let request = http::HeaderMap::new();
    match cache.lookup(key.as_str(), &request) {
        Lookup::Fresh(_) => true,
        Lookup::Miss(Miss::Fill { fill, .. }) => {
            let freshness = Freshness {
                fresh_for: Duration::from_secs(86_400),
                initial_age: Duration::ZERO,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                revalidatable: false,
            };
            let now = cache.clock().now();
            let entry = CachedResponse::new(parts, body.clone(), freshness, limits, &request, now);
            cache.complete(fill, key.as_str(), Arc::new(entry));
            false
        }
        Lookup::StaleWhileRevalidate { .. } | Lookup::Miss(Miss::Wait { .. }) => {
            unreachable!("the clock stands still and nobody else fills")
        }
    }
}

#[test]
fn flood_of_distinct_ids_stays_within_capacity_and_keeps_the_hot_set() {
    const CAPACITY: u64 = 8 * MIB;
    const HOT: usize = 32;
    let flood: usize = std::env::var("FLOOD_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let mut limits = *Config::default().cache.avatar_limits_mut();
    limits.max_object_size = 64 * 1024;
    let cache = Cache::new(CAPACITY, Clock::manual());
    let (parts, ()) = Response::builder()
        .header("content-type", "image/png")
        .header("cache-control", "public, max-age=86400")
        .body(())
        .unwrap()
        .into_parts();
    let hot: Vec<String> = (0..HOT).map(|i| format!("hot{i}")).collect();
    let hot_body = Bytes::from(vec![7u8; 4096]);
    for _ in 0..20 {
        for id in &hot {
            touch(&cache, &limits, &parts, id, &hot_body);
        }
    }
    let before = resident();
    let mut hot_misses = 0;
    for i in 0..flood {
        // Each flood id is a fresh 4 KiB body: if entries leaked, memory would grow with the flood.
        touch(
            &cache,
            &limits,
            &parts,
            &format!("flood{i}"),
            &Bytes::from(vec![1u8; 4096]),
        );
        if i % 1000 == 999 {
            // Real pages keep asking for the hot avatars while the flood goes on.
            hot_misses += hot
                .iter()
                .filter(|id| !touch(&cache, &limits, &parts, id, &hot_body))
                .count();
        }
    }
    let (entries, bytes) = cache.usage();
    let grown = resident().saturating_sub(before);
    eprintln!(
        "flood of {flood} ids: {entries} entries, {bytes} bytes held; resident grew {} KiB; hot misses {hot_misses}",
        grown / 1024
    );
    assert!(
        bytes <= CAPACITY,
        "{bytes} bytes held over a {CAPACITY} byte budget"
    );
    // Capacity plus a fixed overhead (moka's maps and frequency sketch, allocator slack), not the flood.
    assert!(
        grown < CAPACITY + 48 * MIB,
        "resident memory grew {} MiB",
        grown / MIB
    );
    let survivors = hot
        .iter()
        .filter(|id| touch(&cache, &limits, &parts, id, &hot_body))
        .count();
    assert_eq!(survivors, HOT, "the hot set survives the flood");
    assert!(
        hot_misses <= HOT,
        "hot avatars were evicted during the flood: {hot_misses} misses"
    );
}

#[tokio::test]
async fn flood_through_the_proxy_never_refetches_the_hot_set() {
    const CAPACITY: u64 = MIB;
    const FLOOD: usize = 3000;
    let body = Bytes::from(vec![3u8; 4096]);
    let upstream = FakeCloudreve::image(body, "public, max-age=86400").await;
    let mut config = test_config(&upstream.url());
    config.cache.capacity = CAPACITY;
    let proxy = TestProxy::start_with(config).await;
    let hot: Vec<String> = (0..8)
        .map(|i| format!("/api/v4/user/avatar/hot{i}"))
        .collect();
    let client = client();
    for _ in 0..10 {
        for url in &hot {
            send(&client, Request::get(proxy.url(url)).body(empty()).unwrap()).await;
        }
    }
    for batch in 0..FLOOD / 100 {
        let requests: Vec<_> = (0..100)
            .map(|i| {
                let url = proxy.url(&format!("/api/v4/user/avatar/flood{}", batch * 100 + i));
                let client = client.clone();
                tokio::spawn(async move {
                    send(&client, Request::get(url).body(empty()).unwrap()).await
                })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().status, 200);
        }
        for url in &hot {
            send(&client, Request::get(proxy.url(url)).body(empty()).unwrap()).await;
        }
    }
    let (_, bytes) = proxy.proxy.cache().usage();
    assert!(bytes <= CAPACITY, "{bytes}");
    for url in &hot {
        assert_eq!(upstream.count_target(url), 1, "{url} was fetched again");
    }
}

// 2. Slow readers of large downloads.

/// An upstream whose every answer is a body of up to `cap` bytes produced lazily in 64 KiB pieces, only as
/// fast as the proxy takes them; `produced` counts what it has handed over.
async fn endless_upstream(content_type: &'static str, cap: u64) -> (FakeCloudreve, Arc<AtomicU64>) {
    let produced = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&produced);
    let upstream = FakeCloudreve::start(move |_: Request<Incoming>| {
        let counter = Arc::clone(&counter);
        async move {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let piece = Bytes::from(vec![b'z'; 64 * 1024]);
                let mut sent = 0;
                while sent < cap {
                    if tx.send(Ok(piece.clone())).await.is_err() {
                        return;
                    }
                    sent += piece.len() as u64;
                    counter.fetch_add(piece.len() as u64, Ordering::SeqCst);
                }
            });
            Response::builder()
                .header("content-type", content_type)
                .header("cache-control", "public, max-age=86400")
                .body(body)
                .unwrap()
        }
    })
    .await;
    (upstream, produced)
}

/// Waits (bounded) until `produced` has not moved for a while: the upstream is blocked.
async fn until_stalled(produced: &AtomicU64) -> u64 {
    let mut last = u64::MAX;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = produced.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream never stalled"
        );
        last = now;
        // Sampling the counter, not waiting for readiness: two equal samples mean production stopped.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `clients` slow readers of `target`: each reads `read` bytes, then stops reading and holds on.
async fn slow_readers(proxy: &TestProxy, target: &str, clients: usize, read: usize) -> Vec<Raw> {
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        raw.read_at_least(read).await;
        readers.push(raw);
    }
    readers
}

const CLIENTS: usize = 4;
const CAP: u64 = 1024 * MIB;
/// Socket buffers on loopback (both hops, both ends) plus hyper's own: far below the body.
const IN_FLIGHT_BOUND: u64 = 96 * MIB;

async fn assert_back_pressured(target: &str, content_type: &'static str) {
    let (upstream, produced) = endless_upstream(content_type, CAP).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let before = resident();
    let readers = slow_readers(&proxy, target, CLIENTS, 256 * 1024).await;
    let total = until_stalled(&produced).await;
    let grown = resident().saturating_sub(before);
    eprintln!(
        "{target}: {CLIENTS} slow readers stalled the upstream after {} MiB in total; resident grew {} MiB",
        total / MIB,
        grown / MIB
    );
    assert!(
        total < CLIENTS as u64 * IN_FLIGHT_BOUND,
        "{} MiB produced",
        total / MIB
    );
    assert!(grown < 64 * MIB, "resident memory grew {} MiB", grown / MIB);
    assert_eq!(proxy.proxy.cache().usage().0, 0, "nothing stored");
    drop(readers);
}

#[tokio::test]
async fn slow_readers_of_a_large_download_back_pressure_the_upstream() {
    assert_back_pressured("/api/v4/file/content/big.iso", "application/octet-stream").await;
}

#[tokio::test]
async fn oversize_avatar_is_streamed_to_slow_readers_never_accumulated() {
    assert_back_pressured("/api/v4/user/avatar/img1", "image/png").await;
}

// 3. Many slow connections.

#[tokio::test]
async fn hundreds_of_slowloris_heads_cost_little_memory_and_all_time_out() {
    const CONNECTIONS: usize = 400;
    let upstream = FakeCloudreve::start(|_| async { json_response(r#"{"code":0}"#) }).await;
    let mut config = test_config(&upstream.url());
    config.server.header_read_timeout = Duration::from_secs(2);
    let proxy = TestProxy::start_with(config).await;
    let before = resident();
    let mut slow = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send(b"GET /api/v4/site/ping HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
            .await
            .unwrap();
        slow.push(raw);
    }
    // Served in accept order: an answer on a later connection means every slow one was taken in.
    assert_eq!(get(&proxy.url("/api/v4/site/ping")).await.status, 200);
    let grown = resident().saturating_sub(before);
    eprintln!(
        "{CONNECTIONS} slowloris connections: resident grew {} KiB ({} bytes each)",
        grown / 1024,
        grown / CONNECTIONS as u64
    );
    assert!(
        grown < CONNECTIONS as u64 * 32 * 1024,
        "{} KiB",
        grown / 1024
    );
    for raw in &mut slow {
        raw.closed().await;
    }
    assert_eq!(upstream.count(), 1, "no partial head was forwarded");
}
