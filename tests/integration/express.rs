//! The express lane: plain HTTP/1.1 `GET`s of fresh avatars answered beside hyper. Its answers are the full
//! path's byte for byte, it never answers out of turn, it takes nothing it should not, and a connection it
//! served drains like any other. `cloudreve_edge_express_answers_total` tells which path answered.

use std::net::SocketAddr;

use crate::support::ops::TestAdmin;
use crate::support::raw::{Raw, status_line};
use crate::support::*;
use cloudreve_edge::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const AVATAR: &str = "/api/v4/user/avatar/img1";
const PING: &str = "/api/v4/site/ping";

/// A plain request the lane takes.
fn plain(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: edge\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n")
}

/// The same request with one more field, which sends it down the full path.
fn with_field(target: &str, field: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: edge\r\nUser-Agent: test\r\nAccept: */*\r\n{field}\r\n\r\n"
    )
}

/// One response from a raw connection, HTTP/1.1: its head (status line and fields) and its body.
async fn read_response(stream: &mut Raw) -> (String, Vec<u8>) {
    let (head, body) = stream.response().await.into_parts();
    assert!(head.starts_with("HTTP/1.1 "), "no response head: {head:?}");
    (head, body)
}

/// Sends `request` on a new connection and reads one response.
async fn exchange(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
    let mut stream = Raw::connect(addr).await;
    stream.send(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

/// Reads what is left on `stream` until the proxy closes it, within [`PATIENCE`]: nothing, for a clean close.
async fn assert_closed_by_proxy(stream: &mut Raw) {
    assert!(stream.closed_cleanly().await.is_empty());
}

/// A fake Cloudreve and the proxy in front of it (its configuration changed by `configure`) with its admin
/// listener; `AVATAR` is stored, through the full path (a miss).
async fn with_avatar_stored(
    configure: impl FnOnce(&mut Config),
) -> (FakeCloudreve, TestProxy, TestAdmin) {
    let upstream = FakeCloudreve::avatars().await;
    let mut config = test_config(&upstream.url());
    configure(&mut config);
    let proxy = TestProxy::start_with(config).await;
    let admin = TestAdmin::start(&proxy).await;
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
    (upstream, proxy, admin)
}

#[tokio::test]
async fn the_lane_answers_a_hit_with_the_full_paths_bytes() {
    let (upstream, proxy, admin) = with_avatar_stored(|_| {}).await;

    let (express_head, express_body) = exchange(proxy.addr, &plain(AVATAR)).await;
    assert_eq!(admin.express_answers().await, 1.0);
    let (full_head, full_body) = exchange(proxy.addr, &with_field(AVATAR, "X-Trace: 1")).await;
    assert_eq!(admin.express_answers().await, 1.0, "an unlisted field");

    assert_eq!(status_line(&express_head), "HTTP/1.1 200 OK");
    assert_eq!(status_line(&express_head), status_line(&full_head));
    // Byte for byte: the cache clock stands still, so even Age and the ttl agree.
    assert_eq!(express_head, full_head);
    assert!(
        express_head.contains("\r\nx-cache: HIT\r\n"),
        "{express_head}"
    );
    assert_eq!(express_body, full_body);
    assert_eq!(express_body, avatar_bytes("img1"));
    assert_eq!(upstream.count(), 1);

    // Both are counted as avatar hits; the lane's also on its own.
    let metrics = admin.scrape().await;
    assert_eq!(
        metrics.value(
            "cloudreve_edge_requests_total",
            &[("route", "avatar"), ("cache", "hit")]
        ),
        2.0
    );
    assert_eq!(proxy.proxy.cache().counts().hit, 2);
}

#[tokio::test]
async fn stored_redirects_and_empty_404s_are_answered_with_the_same_bytes() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;
    for target in ["/api/v4/user/avatar/grav1", "/api/v4/user/avatar/none1"] {
        assert_eq!(get(&proxy.url(target)).await.x_cache(), "MISS");
        let express = exchange(proxy.addr, &plain(target)).await;
        let full = exchange(proxy.addr, &with_field(target, "X-Trace: 1")).await;
        // Byte for byte: the same field lines in the same order (an empty body's `content-length` too).
        assert_eq!(express.0, full.0, "{target}");
        assert_eq!(express.1, full.1, "{target}");
    }
    assert_eq!(admin.express_answers().await, 2.0);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_by_both_paths() {
    let (upstream, proxy, admin) = with_avatar_stored(|_| {}).await;
    let etag = get(&proxy.url(AVATAR))
        .await
        .header("etag")
        .unwrap()
        .to_owned();

    // One write: lane, full path (pass-through), lane, full path (conditional), lane, full path (close).
    let batch = [
        plain(AVATAR),
        plain(PING),
        plain(AVATAR),
        with_field(AVATAR, &format!("If-None-Match: {etag}")),
        plain(AVATAR),
        with_field(AVATAR, "Connection: close"),
    ]
    .concat();
    let mut stream = Raw::connect(proxy.addr).await;
    stream.send(batch.as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(read_response(&mut stream).await);
    }
    let summary: Vec<(&str, Option<&str>)> = answers
        .iter()
        .map(|(head, _)| {
            let x_cache = head.lines().find_map(|l| l.strip_prefix("x-cache: "));
            (status_line(head), x_cache)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("HTTP/1.1 200 OK", Some("HIT")),
            ("HTTP/1.1 200 OK", None),
            ("HTTP/1.1 200 OK", Some("HIT")),
            ("HTTP/1.1 304 Not Modified", Some("HIT")),
            ("HTTP/1.1 200 OK", Some("HIT")),
            ("HTTP/1.1 200 OK", Some("HIT")),
        ]
    );
    assert!(answers[1].1.starts_with(b"{"), "the ping's JSON");
    for index in [0, 2, 4, 5] {
        assert_eq!(answers[index].1, avatar_bytes("img1"), "answer {index}");
    }
    // The last asked to close: the connection ends after it.
    assert_closed_by_proxy(&mut stream).await;
    assert_eq!(upstream.count_target(PING), 1);
    assert_eq!(upstream.count_target(AVATAR), 1);
    // The first was the lane's at least; the others depend on when hyper finished each answer.
    assert!(admin.express_answers().await >= 1.0);
}

#[tokio::test]
async fn the_lane_takes_hits_again_once_hyper_has_answered() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;
    let mut stream = Raw::connect(proxy.addr).await;
    // A miss and a pass-through, both hyper's, then hits on the same connection.
    for (request, answered_by_lane) in [
        (plain(AVATAR), 0.0),
        (plain(PING), 0.0),
        (plain(AVATAR), 1.0),
        (with_field(AVATAR, "Cache-Control: max-age=0"), 1.0),
        (plain(AVATAR), 2.0),
    ] {
        stream.send(request.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(admin.express_answers().await, answered_by_lane, "{request}");
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn what_the_lane_must_not_answer_takes_the_full_path() {
    let (upstream, proxy, admin) = with_avatar_stored(|_| {}).await;

    // nocache goes upstream; a HEAD and a range are answered from the stored copy by the full path.
    let (head, _) = exchange(proxy.addr, &plain(&format!("{AVATAR}?nocache=true"))).await;
    assert!(head.contains("x-cache: BYPASS"), "{head}");
    let head_request = format!("HEAD {AVATAR} HTTP/1.1\r\nHost: edge\r\n\r\n");
    let mut stream = Raw::connect(proxy.addr).await;
    stream.send(head_request.as_bytes()).await.unwrap();
    let head = stream.head().await;
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.contains("x-cache: HIT"),
        "{head}"
    );
    let (head, body) = exchange(proxy.addr, &with_field(AVATAR, "Range: bytes=0-3")).await;
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, &avatar_bytes("img1")[..4]);
    // A body on a GET: the full path reads it, and the request that came with it is the full path's too.
    let with_body = format!(
        "GET {AVATAR} HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\n\r\nhello{}",
        plain(AVATAR)
    );
    let mut stream = Raw::connect(proxy.addr).await;
    stream.send(with_body.as_bytes()).await.unwrap();
    for _ in 0..2 {
        let (head, body) = read_response(&mut stream).await;
        assert!(head.contains("x-cache: HIT"), "{head}");
        assert_eq!(body, avatar_bytes("img1"));
    }
    // A head the framing guard refuses is refused, not answered.
    let ambiguous = format!("GET {AVATAR} HTTP/1.1\r\nHost: edge\r\nHost: other\r\n\r\n");
    let refused = raw_exchange(proxy.addr, ambiguous.as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");

    assert_eq!(admin.express_answers().await, 0.0);
    assert_eq!(upstream.count_target(AVATAR), 1);
}

#[tokio::test]
async fn with_the_lane_off_every_hit_takes_the_full_path() {
    let (_upstream, proxy, admin) =
        with_avatar_stored(|config| config.server.express_lane = false).await;
    let (head, body) = exchange(proxy.addr, &plain(AVATAR)).await;
    assert!(head.contains("x-cache: HIT"), "{head}");
    assert_eq!(body, avatar_bytes("img1"));
    assert_eq!(admin.express_answers().await, 0.0);
}

#[tokio::test]
async fn a_stale_avatar_is_not_the_lanes() {
    let (upstream, proxy, admin) = with_avatar_stored(|_| {}).await;
    proxy.clock.advance(std::time::Duration::from_secs(86_401));
    let (head, _) = exchange(proxy.addr, &plain(AVATAR)).await;
    assert!(!head.contains("x-cache: HIT"), "{head}");
    assert_eq!(admin.express_answers().await, 0.0);
    assert_eq!(upstream.count_target(AVATAR), 2);
}

#[tokio::test]
async fn a_connection_the_lane_served_closes_when_the_drain_starts() {
    // Far longer than the test's patience: the server must not wait for this idle connection.
    let (_upstream, mut proxy, admin) =
        with_avatar_stored(|config| config.server.drain_timeout = PATIENCE * 6).await;
    let mut stream = Raw::connect(proxy.addr).await;
    stream.send(plain(AVATAR).as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.contains("x-cache: HIT"), "{head}");
    assert_eq!(admin.express_answers().await, 1.0);

    proxy.begin_shutdown();
    assert_closed_by_proxy(&mut stream).await;
    proxy.finished().await.unwrap();
}

#[tokio::test]
async fn a_hit_sent_while_hyper_is_busy_waits_its_turn() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = std::sync::Arc::clone(&release);
    let upstream = FakeCloudreve::start(move |request| {
        let gate = std::sync::Arc::clone(&gate);
        async move {
            if request.uri().path() == PING {
                gate.notified().await;
            }
            cloudreve_avatar(&request)
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");

    let mut stream = Raw::connect(proxy.addr).await;
    stream.send(plain(PING).as_bytes()).await.unwrap();
    eventually("the ping reaches the upstream", || {
        upstream.count_target(PING) == 1
    })
    .await;
    // The ping is in progress in hyper: this hit, in a write of its own, must not overtake its answer.
    stream.send(plain(AVATAR).as_bytes()).await.unwrap();
    release.notify_one();
    let (first, body) = read_response(&mut stream).await;
    assert!(
        !first.contains("x-cache"),
        "the ping's answer first: {first}"
    );
    assert!(body.starts_with(b"{"));
    let (second, body) = read_response(&mut stream).await;
    assert!(second.contains("x-cache: HIT"), "{second}");
    assert_eq!(body, avatar_bytes("img1"));
    // Which path answered the hit depends on when hyper read it; the order above does not.
    assert_eq!(upstream.count_target(AVATAR), 1);
}

#[tokio::test]
async fn a_head_hyper_refuses_for_its_field_count_is_refused_not_answered() {
    let (_upstream, proxy, _admin) =
        with_avatar_stored(|config| config.server.max_headers = 3).await;
    let (head, _) = exchange(proxy.addr, &plain(AVATAR)).await;
    assert!(head.contains("x-cache: HIT"), "three fields: {head}");
    // Four harmless fields: the full path answers 431, so the lane must leave it alone.
    let (refused, _) = exchange(proxy.addr, &with_field(AVATAR, "DNT: 1")).await;
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
}

#[tokio::test]
async fn the_lane_answers_each_id_with_its_own_bytes_only() {
    let (upstream, proxy, admin) = with_avatar_stored(|_| {}).await;
    // Other ids, two differing only in case (Cloudreve's hashids are case-sensitive): each its own entry.
    for other in ["img2", "imgA", "imga"] {
        let target = format!("/api/v4/user/avatar/{other}");
        let (head, body) = exchange(proxy.addr, &plain(&target)).await;
        assert!(head.contains("x-cache: MISS"), "{other}: {head}");
        assert_eq!(body, avatar_bytes(other));
        let (head, body) = exchange(proxy.addr, &plain(&target)).await;
        assert!(head.contains("x-cache: HIT"), "{other}: {head}");
        assert_eq!(body, avatar_bytes(other));
    }
    let (_, body) = exchange(proxy.addr, &plain(AVATAR)).await;
    assert_eq!(body, avatar_bytes("img1"));
    assert_eq!(admin.express_answers().await, 4.0);
    assert_eq!(upstream.count(), 4);
}

#[tokio::test]
async fn a_client_that_pipelines_hits_and_never_reads_is_held_back_then_closed() {
    let idle = std::time::Duration::from_millis(1000);
    // The client never reads: an answer the lane is part way through writing is timed by send_timeout, one
    // wholly handed to the socket leaves the connection idle; which of the two it is depends on the socket
    // buffers, so both are short.
    let (_upstream, proxy, admin) = with_avatar_stored(|config| {
        config.server.idle_timeout = idle;
        config.server.send_timeout = idle;
    })
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let batch = plain(AVATAR).repeat(64);
    // Write until the proxy stops reading: its answers fill the sockets' buffers, and it waits for them
    // rather than reading more.
    let mut batches = 0;
    loop {
        assert!(
            batches < 10_000,
            "the proxy kept reading requests it could not answer"
        );
        match timeout(idle / 5, stream.write_all(batch.as_bytes())).await {
            Ok(Ok(())) => batches += 1,
            // Stalled, or (on a very slow machine) already closed as idle: either way it stopped reading.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let answered = admin.express_answers().await;
    assert!(
        answered < f64::from(batches * 64),
        "{answered} of {batches} x 64"
    );
    // The idle timeout (nothing in progress) or the send timeout (an answer stalled part way) closes the
    // connection, which the next write sees.
    let closed = timeout(PATIENCE, async {
        while stream.write_all(batch.as_bytes()).await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
}
