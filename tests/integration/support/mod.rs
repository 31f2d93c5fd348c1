//! Test fixtures: a fake Cloudreve that records what it receives, the real proxy on `127.0.0.1:0`, and clients:
//! hyper's here, the one raw HTTP/1.1 client (and raw upstreams' helpers) in `raw`, a raw HTTP/2 one in
//! `raw_h2`, TLS, the admin listener and `/metrics` in `ops`; a real Redis and proxies joined to it in `redis`.
//!
//! "Served from cache" is asserted as "the fake upstream saw one request". Nothing here sleeps to wait for
//! readiness: listeners are bound before their address is handed out.
#![allow(dead_code, missing_docs)]

pub mod binary;
pub mod ops;
pub mod proxy_toml;
pub mod raw;
pub mod raw_h2;
pub mod redis;

pub use raw::{drain, raw_exchange, read_head, skip_body};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cloudreve_edge::cache::Clock;
use cloudreve_edge::{Config, Proxy, server};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits on; a hang fails the test instead of stalling CI.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A body the fake upstream or the test client can send: in memory or streamed.
pub type TestBody = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A streamed body and the sender that feeds it; dropping the sender ends the body, sending an `Err` breaks it.
pub fn channel_body() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, TestBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody(rx).boxed())
}

struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// What the fake upstream received, head only (handlers read bodies themselves).
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// The request target exactly as it arrived (path and query).
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// A fake Cloudreve on `127.0.0.1:0` that records every request head before its handler runs.
pub struct FakeCloudreve {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
    /// Every connection's task, so `stop` can also cut kept-alive connections.
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl FakeCloudreve {
    /// Starts a fake whose handler answers every request.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, handler)
    }

    /// Starts a fake on a listener the test already bound (to bring an upstream "back" on the same port).
    pub fn start_on<F, Fut>(listener: TcpListener, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let connections = Arc::new(Mutex::new(Vec::new()));
        let tracked = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        log.lock().unwrap().push(Received {
                            method: request.method().clone(),
                            target: request.uri().to_string(),
                            version: request.version(),
                            headers: request.headers().clone(),
                        });
                        let response = handler(request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                tracked.lock().unwrap().push(connection.abort_handle());
            }
        });
        Self {
            addr,
            received,
            task,
            connections,
        }
    }

    /// A fake that answers every request with the same PNG `body` and `Cache-Control: cache_control`.
    pub async fn image(body: Bytes, cache_control: &'static str) -> Self {
        Self::start(move |_| {
            let body = body.clone();
            async move {
                Response::builder()
                    .header("content-type", "image/png")
                    .header("cache-control", cache_control)
                    .body(full(body))
                    .unwrap()
            }
        })
        .await
    }

    /// A fake that answers like Cloudreve's avatar route (see `cloudreve_avatar`).
    pub async fn avatars() -> Self {
        Self::start(|request| async move { cloudreve_avatar(&request) }).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request head received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// How many requests arrived for exactly this target (path and query).
    pub fn count_target(&self, target: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }

    /// The last request received.
    pub fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }

    /// Stops accepting and closes every open connection: the upstream is down.
    pub fn stop(&self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for FakeCloudreve {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fixed PNG-ish body per user, so distinct ids have distinct bytes.
pub fn avatar_bytes(id: &str) -> Bytes {
    Bytes::from(format!("\u{89}PNG fake avatar of {id}"))
}

/// [`cloudreve_avatar`], plus the web app's `/assets/` files: `asset`, `public, max-age=600`.
pub fn cloudreve_with_assets(request: &Request<Incoming>) -> Response<TestBody> {
    if request.uri().path().starts_with("/assets/") {
        return Response::builder()
            .header("cache-control", "public, max-age=600")
            .body(full("asset"))
            .unwrap();
    }
    cloudreve_avatar(request)
}

/// Cloudreve's avatar answers (`upstream-contract.md`): `img*` ids have a PNG, `grav*` a Gravatar 302,
/// `none*` no avatar (404), anything else is an unknown user (JSON 200). `nocache=1` keeps
/// `private, no-cache`. Every cacheable answer is `public, max-age=86400`.
pub fn cloudreve_avatar(request: &Request<Incoming>) -> Response<TestBody> {
    let path = request.uri().path();
    let Some(id) = path.strip_prefix("/api/v4/user/avatar/") else {
        return json_response(r#"{"code":0,"data":"pong","msg":""}"#);
    };
    if request.method() != Method::GET {
        return Response::builder()
            .status(404)
            .body(full("404 page not found"))
            .unwrap();
    }
    let nocache = request
        .uri()
        .query()
        .is_some_and(|q| q.contains("nocache=1") || q.contains("nocache=true"));
    let cache_control = if nocache {
        "private, no-cache"
    } else {
        "public, max-age=86400"
    };
    let builder = Response::builder().header("cache-control", cache_control);
    if id.starts_with("img") {
        builder
            .header("content-type", "image/png")
            .header("last-modified", "Sun, 29 Nov 2026 12:00:00 GMT")
            .body(full(avatar_bytes(id)))
            .unwrap()
    } else if id.starts_with("grav") {
        builder
            .status(302)
            .header(
                "location",
                format!("https://www.gravatar.com/avatar/{id}?d=mm&s=200"),
            )
            .header("content-type", "text/html; charset=utf-8")
            .body(full("<a>Found</a>.\n"))
            .unwrap()
    } else if id.starts_with("none") {
        builder.status(404).body(empty()).unwrap()
    } else {
        json_response(r#"{"code":40021,"msg":"","correlation_id":"x"}"#)
    }
}

pub fn json_response(body: &'static str) -> Response<TestBody> {
    Response::builder()
        .header("content-type", "application/json; charset=utf-8")
        .header("cache-control", "private, no-cache")
        .body(full(body))
        .unwrap()
}

/// An upstream that speaks raw TCP, for misbehaviour hyper would never produce (resets, garbage, truncation).
pub struct RawUpstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RawUpstream {
    /// Runs `on_connection` for every accepted connection.
    pub async fn start<F, Fut>(on_connection: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let on_connection = Arc::new(on_connection);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(on_connection(stream));
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback upstream URL where every connection is refused, kept so while the returned socket lives: it is
/// bound, so no other test can take the port, and not listening, so connecting gets a reset.
pub fn refusing_upstream() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", socket.local_addr().unwrap());
    (socket, url)
}

/// The real proxy, served by `server::run` on `127.0.0.1:0`.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    /// The cache clock; `advance` it to age entries.
    pub clock: Clock,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A test configuration: loopback listener, the given upstream, short timeouts.
pub fn test_config(upstream: &str) -> Config {
    let mut config = Config::default();
    config.set_listen("127.0.0.1:0").unwrap();
    config.set_upstream(upstream).unwrap();
    config.upstream.response_header_timeout = Duration::from_secs(5);
    config.upstream.connect_timeout = Duration::from_secs(2);
    config.server.drain_timeout = Duration::from_secs(5);
    config.log.access_log = false;
    config
}

impl TestProxy {
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(test_config(upstream)).await
    }

    pub async fn start_with(config: Config) -> Self {
        let clock = Clock::manual();
        let proxy = Proxy::with_clock(&config, clock.clone());
        let listener = TcpListener::bind(config.server.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let running = Arc::clone(&proxy);
        let server_config = config.server.clone();
        let task = tokio::spawn(async move {
            server::run(listener, running, &server_config, async {
                let _ = rx.await;
            })
            .await
        });
        Self {
            addr,
            proxy,
            clock,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Signals shutdown and waits (bounded) for `server::run` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.begin_shutdown();
        self.finished().await
    }

    /// Signals shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits (bounded) for `server::run` to return.
    pub async fn finished(&mut self) -> std::io::Result<()> {
        let task = self.task.take().expect("already finished");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("server::run did not return")
            .unwrap()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("-")
    }

    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("-")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An HTTP/1.1 client with its own connection pool.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 (prior knowledge, cleartext) client.
pub fn h2_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// The response head a connection-level sender (`http1` or `http2` `SendRequest`) gets for a request, within
/// [`PATIENCE`].
pub async fn answered(
    sent: impl Future<Output = hyper::Result<Response<Incoming>>>,
) -> Response<Incoming> {
    tokio::time::timeout(PATIENCE, sent)
        .await
        .expect("answered in time")
        .expect("answered")
}

/// Sends a request and reads the whole response, within [`PATIENCE`].
pub async fn send(client: &Client<HttpConnector, TestBody>, request: Request<TestBody>) -> Reply {
    tokio::time::timeout(PATIENCE, async {
        let response = client.request(request).await.expect("request failed");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    })
    .await
    .expect("request timed out")
}

/// `GET url` on a fresh HTTP/1.1 client.
pub async fn get(url: &str) -> Reply {
    send(&client(), Request::get(url).body(empty()).unwrap()).await
}

/// `method url` with no body on a fresh HTTP/1.1 client.
pub async fn request(method: &str, url: &str) -> Reply {
    send(
        &client(),
        Request::builder()
            .method(method)
            .uri(url)
            .body(empty())
            .unwrap(),
    )
    .await
}

/// Polls `condition` every few milliseconds until it holds, failing after [`PATIENCE`]. For state that has
/// no event to await (e.g. how many requests are queued inside the proxy).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
