//! What one client can hold (RFC 9113 §10.5): a response it takes nothing of is aborted after
//! `server.send_timeout` and its upstream connection freed (HTTP/1.1, HTTP/2 with a zero stream window, TLS,
//! the express lane), and the upstream connections all clients together hold are capped
//! (`upstream.max_connections`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::support::ops::{TempDir, TestAdmin, TestCa};
use crate::support::raw::Raw;
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::net::{TcpSocket, TcpStream};

const LONG: Duration = Duration::from_secs(60);
const SEND: Duration = Duration::from_secs(1);
const DOWNLOAD: &str = "/api/v4/file/content/big";

/// A response body the fake upstream streams without end, 64 KiB a frame as fast as it is taken; counts
/// itself in `aborted` when hyper drops it, which for a body without end means its connection was dropped.
struct Endless(Arc<AtomicUsize>);

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &[b'x'; 64 * 1024],
        )))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A fake Cloudreve answering every request with an [`Endless`] download, and the count of those aborted.
async fn endless_upstream() -> (FakeCloudreve, Arc<AtomicUsize>) {
    let aborted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&aborted);
    let upstream = FakeCloudreve::start(move |_| {
        let body = Endless(Arc::clone(&counter)).boxed();
        async move {
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(body)
                .unwrap()
        }
    })
    .await;
    (upstream, aborted)
}

/// The test configuration with `send_timeout` short and every other client timeout long, so only the
/// send timeout can close a connection within the test.
fn send_config(upstream: &str) -> cloudreve_edge::Config {
    let mut config = test_config(upstream);
    config.server.send_timeout = SEND;
    config.server.idle_timeout = LONG;
    config.server.header_read_timeout = LONG;
    config
}

/// A client connection with a small receive buffer, so the proxy's writes block soon after it stops reading.
async fn tight_client(addr: std::net::SocketAddr) -> Raw {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = tokio::time::timeout(PATIENCE, socket.connect(addr))
        .await
        .expect("connect timed out")
        .unwrap();
    Raw::over(stream)
}

/// Reads (bounded by [`PATIENCE`]) until the proxy closes: whatever it had sent comes first, then the end
/// (or a reset).
async fn assert_closed(mut stream: Raw) {
    stream.closed().await;
}

/// Scrapes `/metrics` until the public listener has no connection open, within [`PATIENCE`]; for a client
/// that must not read, so cannot see the close itself.
async fn no_connection_open(admin: &TestAdmin) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = admin.scrape().await;
        if metrics.value("cloudreve_edge_open_connections", &[]) == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "still open: {}", metrics.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn http1_client_that_never_reads_is_cut_after_send_timeout_and_the_upstream_freed() {
    let (upstream, aborted) = endless_upstream().await;
    let proxy = TestProxy::start_with(send_config(&upstream.url())).await;
    let mut client = tight_client(proxy.addr).await;
    let since = Instant::now();
    let head = format!("GET {DOWNLOAD} HTTP/1.1\r\nHost: cloud.example\r\n\r\n");
    client.send(head.as_bytes()).await.unwrap();
    // The client reads nothing: the proxy fills the socket, its buffer, and stops taking from the upstream.
    eventually("the upstream response aborted", || {
        aborted.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(since.elapsed() >= SEND, "cut before send_timeout");
    assert_closed(client).await;
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_whole_response_the_client_never_reads_leaves_the_connection_idle() {
    // Handed whole to the socket, a response is over for the proxy: the connection is idle, not stalled,
    // and closes after idle_timeout however long send_timeout is.
    let upstream = FakeCloudreve::start(|_| async {
        Response::builder()
            .header("content-type", "application/octet-stream")
            .body(full(vec![b'x'; 64 * 1024]))
            .unwrap()
    })
    .await;
    let mut config = send_config(&upstream.url());
    config.server.send_timeout = LONG;
    config.server.idle_timeout = Duration::from_millis(300);
    let proxy = TestProxy::start_with(config).await;
    let admin = TestAdmin::start(&proxy).await;
    let mut client = Raw::connect(proxy.addr).await;
    let head = format!("GET {DOWNLOAD} HTTP/1.1\r\nHost: cloud.example\r\n\r\n");
    client.send(head.as_bytes()).await.unwrap();
    eventually("the upstream answered", || upstream.count() == 1).await;
    no_connection_open(&admin).await;
    assert_closed(client).await;
}

/// Opens `streams` requests for the endless download on an HTTP/2 connection whose stream window is 0 (the
/// proxy may send no byte of any body) and goes quiet; returns when the proxy closed the connection.
async fn zero_window_streams<IO>(io: IO, url: &str, streams: usize)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let mut client = tokio::time::timeout(PATIENCE, client.ready())
        .await
        .unwrap()
        .unwrap();
    let mut open = Vec::new();
    for _ in 0..streams {
        client = tokio::time::timeout(PATIENCE, client.ready())
            .await
            .unwrap()
            .unwrap();
        let request = Request::get(url).body(()).unwrap();
        open.push(client.send_request(request, true).unwrap());
    }
    // Kept open (not reset) and never read from: the streams wait on this client alone.
    let _ = tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("the proxy kept the connection open");
    drop(open);
}

#[tokio::test]
async fn http2_streams_with_a_zero_window_free_their_upstream_connections_after_send_timeout() {
    const STREAMS: usize = 8;
    let (upstream, aborted) = endless_upstream().await;
    let proxy = TestProxy::start_with(send_config(&upstream.url())).await;
    let admin = TestAdmin::start(&proxy).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let since = Instant::now();
    zero_window_streams(stream, &proxy.url(DOWNLOAD), STREAMS).await;
    assert!(since.elapsed() >= SEND, "closed before send_timeout");
    eventually("every upstream response aborted", || {
        aborted.load(Ordering::SeqCst) == STREAMS
    })
    .await;
    assert_eq!(upstream.count(), STREAMS);
    no_connection_open(&admin).await;
}

#[tokio::test]
async fn http2_over_tls_with_a_zero_window_is_closed_after_send_timeout() {
    const STREAMS: usize = 4;
    let (upstream, aborted) = endless_upstream().await;
    let ca = TestCa::new("send-timeout CA");
    let dir = TempDir::new("send-timeout");
    let leaf = ca.leaf("edge");
    let mut config = send_config(&upstream.url());
    let cert = dir.write("cert.pem", &leaf.cert_pem);
    let key = dir.write("key.pem", &leaf.key_pem);
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    config.tls = cloudreve_edge::Config::from_toml(&tls).unwrap().tls;
    let proxy = TestProxy::start_with(config).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(PATIENCE, ca.connector(&[b"h2"]).connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let url = format!("https://localhost:{}{DOWNLOAD}", proxy.addr.port());
    zero_window_streams(stream, &url, STREAMS).await;
    eventually("every upstream response aborted", || {
        aborted.load(Ordering::SeqCst) == STREAMS
    })
    .await;
}

#[tokio::test]
async fn a_large_express_answer_the_client_never_reads_is_cut_after_send_timeout() {
    // 16 MiB: more than the kernel buffers on both ends of a loopback connection take.
    const SIZE: usize = 16 << 20;
    let upstream =
        FakeCloudreve::image(Bytes::from(vec![b'p'; SIZE]), "public, max-age=86400").await;
    let mut config = send_config(&upstream.url());
    config.cache.avatar_limits_mut().max_object_size = SIZE;
    let proxy = TestProxy::start_with(config).await;
    let admin = TestAdmin::start(&proxy).await;
    let path = "/api/v4/user/avatar/imgbig";
    assert_eq!(get(&proxy.url(path)).await.body.len(), SIZE, "stored");
    let mut client = tight_client(proxy.addr).await;
    let since = Instant::now();
    let head = format!("GET {path} HTTP/1.1\r\nHost: cloud.example\r\n\r\n");
    client.send(head.as_bytes()).await.unwrap();
    // Not read until the proxy has let go of it: the metrics show when.
    no_connection_open(&admin).await;
    assert!(since.elapsed() >= SEND, "cut before send_timeout");
    assert_eq!(
        admin.express_answers().await,
        1.0,
        "the express lane took it"
    );
    assert_closed(client).await;
    assert_eq!(upstream.count(), 1);
}

// upstream.max_connections

const HELD: &str = "/api/v4/file/held";

/// A fake Cloudreve that holds every request to [`HELD`] until `gate` gives it a permit, and answers the
/// rest at once.
async fn gated_upstream(gate: &Arc<tokio::sync::Semaphore>) -> FakeCloudreve {
    let gate = Arc::clone(gate);
    FakeCloudreve::start(move |request| {
        let gate = Arc::clone(&gate);
        async move {
            if request.uri().path() == HELD {
                gate.acquire().await.unwrap().forget();
            }
            json_response(r#"{"code":0,"data":"ok","msg":""}"#)
        }
    })
    .await
}

/// The test configuration with at most `max` upstream connections, and `wait` as the connect timeout (the
/// time a request waits for one to free).
fn capped_config(upstream: &str, max: usize, wait: Duration) -> cloudreve_edge::Config {
    let mut config = test_config(upstream);
    config.upstream.max_connections = max;
    config.upstream.connect_timeout = wait;
    config
}

/// Starts a `GET` of `path` on its own connection, its whole reply read in a task.
fn spawn_get(proxy: &TestProxy, path: &str) -> tokio::task::JoinHandle<Reply> {
    let url = proxy.url(path);
    tokio::spawn(async move { get(&url).await })
}

/// Scrapes `/metrics` until `cloudreve_edge_upstream_in_flight` is `n`, within [`PATIENCE`].
async fn upstream_in_flight(admin: &TestAdmin, n: f64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = admin.scrape().await;
        if metrics.value("cloudreve_edge_upstream_in_flight", &[]) == n {
            return;
        }
        assert!(Instant::now() < deadline, "in flight: {}", metrics.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_request_past_upstream_max_connections_waits_then_gets_503_in_cloudreves_envelope() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let upstream = gated_upstream(&gate).await;
    let wait = Duration::from_millis(500);
    let proxy = TestProxy::start_with(capped_config(&upstream.url(), 2, wait)).await;
    let admin = TestAdmin::start(&proxy).await;
    let held = [spawn_get(&proxy, HELD), spawn_get(&proxy, HELD)];
    eventually("both held requests reach the upstream", || {
        upstream.count() == 2
    })
    .await;
    let since = Instant::now();
    let refused = get(&proxy.url("/api/v4/site/ping")).await;
    assert!(since.elapsed() >= wait, "refused without waiting");
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.json()["code"], 503);
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    assert_eq!(upstream.count(), 2, "no third upstream connection");
    let metrics = admin.scrape().await;
    let labels = [("kind", "saturated")];
    assert_eq!(
        metrics.value("cloudreve_edge_upstream_errors_total", &labels),
        1.0,
        "{}",
        metrics.text
    );
    gate.add_permits(2);
    for held in held {
        let reply = tokio::time::timeout(PATIENCE, held).await.unwrap().unwrap();
        assert_eq!(reply.status, 200);
    }
}

#[tokio::test]
async fn a_request_past_upstream_max_connections_gets_a_connection_that_frees_in_time() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let upstream = gated_upstream(&gate).await;
    let proxy = TestProxy::start_with(capped_config(&upstream.url(), 2, PATIENCE / 2)).await;
    let admin = TestAdmin::start(&proxy).await;
    let held = [spawn_get(&proxy, HELD), spawn_get(&proxy, HELD)];
    eventually("both held requests reach the upstream", || {
        upstream.count() == 2
    })
    .await;
    let waiting = spawn_get(&proxy, "/api/v4/site/ping");
    upstream_in_flight(&admin, 3.0).await;
    // Absence takes time to show: the third stays inside the proxy while both connections are busy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.count(), 2, "a third connection was opened");
    // One held request finishes; its connection, kept for reuse, takes the waiting one.
    gate.add_permits(1);
    let reply = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(upstream.count(), 3);
    gate.add_permits(1);
    for held in held {
        let reply = tokio::time::timeout(PATIENCE, held).await.unwrap().unwrap();
        assert_eq!(reply.status, 200);
    }
}

// server.h2_max_concurrent_streams

#[tokio::test]
async fn http2_settings_allow_100_concurrent_streams_by_default() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = tokio::time::timeout(PATIENCE, client.ready())
        .await
        .unwrap()
        .unwrap();
    // One exchange, so the proxy's SETTINGS have arrived and been applied.
    let request = Request::get(proxy.url("/api/v4/site/ping"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    // RFC 9113 §6.5.2 SETTINGS_MAX_CONCURRENT_STREAMS, as nginx's http2_max_concurrent_streams.
    assert_eq!(client.current_max_send_streams(), 100);
}
