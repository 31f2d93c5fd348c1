//! 1xx interim responses (RFC 9110 §15.2, `103 Early Hints` of RFC 8297) from Cloudreve reach an HTTP/1.1
//! client before the final response, on the pass-through path and on the request that leads a cache fill;
//! never an HTTP/1.0 client, never a request that waited for another's fill, and never the cache: the
//! stored entry is the final response alone. hyper's server cannot send a 1xx, so the fake upstream here
//! speaks raw TCP, and so does the client, to read exactly what the proxy sends (over TLS, hyper's client,
//! which reports each 1xx it reads).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::ops::{TempDir, TestCa};
use crate::support::raw::{Raw, status_line};
use crate::support::*;
use cloudreve_edge::Config;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;

const ASSET: &str = "/assets/app-1xx.js";
const PASS: &str = "/api/v4/file/list";

/// A raw Cloudreve that answers every request with `103 Early Hints` (a `Link` naming the target) and then,
/// once `release` lets it, a `200` a shared cache may store (`body=<target>`). It answers an
/// `Expect: 100-continue` with its own `100 Continue` first, as Go's server does when a handler reads the
/// body.
struct Hinting {
    addr: SocketAddr,
    /// Requests received.
    requests: Arc<AtomicUsize>,
    /// Each permit lets one final response go.
    release: Arc<Notify>,
}

impl Hinting {
    /// The final response waits for `release`.
    async fn held() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (requests, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let (count, gate) = (Arc::clone(&requests), Arc::clone(&release));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, Arc::clone(&count), Some(Arc::clone(&gate))));
            }
        });
        Self {
            addr,
            requests,
            release,
        }
    }

    /// The final response follows the 103 at once.
    async fn prompt() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, Arc::clone(&count), None));
            }
        });
        (url, requests)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Answers the requests of one upstream connection (bounded by the connection: it ends when the proxy
/// closes it or sends something unreadable).
async fn answer(mut stream: TcpStream, requests: Arc<AtomicUsize>, release: Option<Arc<Notify>>) {
    loop {
        let Some(head) = read_head(&mut stream).await else {
            return;
        };
        requests.fetch_add(1, Ordering::SeqCst);
        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
        let lower = head.to_ascii_lowercase();
        if lower.contains("\r\nexpect: 100-continue\r\n") {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        if skip_body(&mut stream, &head).await.is_err() {
            return;
        }
        let hint = format!(
            "HTTP/1.1 103 Early Hints\r\nLink: <{target}.css>; rel=preload\r\nConnection: keep-alive\r\n\r\n"
        );
        if stream.write_all(hint.as_bytes()).await.is_err() {
            return;
        }
        if let Some(release) = &release {
            release.notified().await;
        }
        let body = format!("body={target}");
        let last = format!(
            "HTTP/1.1 200 OK\r\ncache-control: public, max-age=600\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(last.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One message the proxy sent on a raw connection: its head, and its body (a 1xx has none), within
/// [`PATIENCE`].
async fn read_message(stream: &mut Raw) -> (String, String) {
    let message = stream.response().await;
    let head = &message.head;
    assert!(head.starts_with("HTTP/1.1 "), "no response head: {head:?}");
    let body = message.text().to_owned();
    (message.head, body)
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: edge\r\n\r\n")
}

async fn connect(proxy: &TestProxy, request: &str) -> Raw {
    let mut stream = Raw::connect(proxy.addr).await;
    stream.send(request.as_bytes()).await.unwrap();
    stream
}

/// The 103 the fake upstream sends for `target`, as the client must get it: hop-by-hop fields gone, `Via`
/// added as on every response the proxy forwards.
fn assert_early_hints(head: &str, target: &str) {
    assert_eq!(status_line(head), "HTTP/1.1 103 Early Hints", "{head}");
    assert!(
        head.contains(&format!("\r\nlink: <{target}.css>; rel=preload\r\n")),
        "{head}"
    );
    assert!(head.contains("\r\nvia: 1.1 cloudreve-edge\r\n"), "{head}");
    assert!(!head.contains("connection:"), "hop-by-hop: {head}");
}

#[tokio::test]
async fn early_hints_reach_the_client_while_the_upstream_still_works() {
    let upstream = Hinting::held().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let mut stream = connect(&proxy, &get(PASS)).await;

    // The final response is held back until the client has the 103: it was forwarded as it came.
    let (hints, _) = read_message(&mut stream).await;
    assert_early_hints(&hints, PASS);
    upstream.release.notify_one();
    let (head, body) = read_message(&mut stream).await;
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK");
    assert_eq!(body, format!("body={PASS}"));
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_fill_forwards_early_hints_and_stores_only_the_final_response() {
    let upstream = Hinting::held().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let mut leader = connect(&proxy, &get(ASSET)).await;
    let (hints, _) = read_message(&mut leader).await;
    assert_early_hints(&hints, ASSET);
    upstream.release.notify_one();
    let (head, body) = read_message(&mut leader).await;
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK");
    assert!(head.contains("\r\nx-cache: MISS\r\n"), "{head}");

    // The stored entry is the final response alone: a hit has no 103 before it, no `Link` from it.
    let mut later = connect(&proxy, &get(ASSET)).await;
    let (hit, hit_body) = read_message(&mut later).await;
    assert_eq!(status_line(&hit), "HTTP/1.1 200 OK", "{hit}");
    assert!(hit.contains("\r\nx-cache: HIT\r\n"), "{hit}");
    assert!(!hit.contains("link:"), "{hit}");
    assert_eq!(hit_body, body);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_request_waiting_for_anothers_fill_gets_the_final_response_only() {
    let upstream = Hinting::held().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let mut leader = connect(&proxy, &get(ASSET)).await;
    let (hints, _) = read_message(&mut leader).await;
    assert_early_hints(&hints, ASSET);
    let mut waiter = connect(&proxy, &get(ASSET)).await;
    eventually("the second request waits for the fill", || {
        proxy.proxy.cache().waiters(ASSET) == 1
    })
    .await;

    upstream.release.notify_one();
    let (head, body) = read_message(&mut leader).await;
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK");
    // Its first message is the final response: the 103 went to the request that went upstream.
    let (collapsed, collapsed_body) = read_message(&mut waiter).await;
    assert_eq!(status_line(&collapsed), "HTTP/1.1 200 OK", "{collapsed}");
    assert!(collapsed.contains("; collapsed"), "{collapsed}");
    assert_eq!(collapsed_body, body);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn pipelined_requests_get_their_interim_responses_in_request_order() {
    let (url, requests) = Hinting::prompt().await;
    let proxy = TestProxy::start(&url).await;
    let (first, second) = ("/api/v4/file/a", "/api/v4/file/b");
    let mut stream = connect(&proxy, &format!("{}{}", get(first), get(second))).await;

    // Each request's 103 comes after the response before it and before its own, never inside another.
    for target in [first, second] {
        let (hints, _) = read_message(&mut stream).await;
        assert_early_hints(&hints, target);
        let (head, body) = read_message(&mut stream).await;
        assert_eq!(status_line(&head), "HTTP/1.1 200 OK", "{head}");
        assert_eq!(body, format!("body={target}"));
    }
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn no_interim_response_is_sent_to_an_http_1_0_client() {
    // RFC 9110 §15.2: a server MUST NOT send a 1xx response to an HTTP/1.0 client.
    let (url, requests) = Hinting::prompt().await;
    let proxy = TestProxy::start(&url).await;
    let answer = raw_exchange(
        proxy.addr,
        format!("GET {PASS} HTTP/1.0\r\nHost: edge\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(!answer.contains(" 103 "), "{answer}");
    assert!(
        answer.ends_with(&format!("\r\n\r\nbody={PASS}")),
        "{answer}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_proxy_alone() {
    // hyper's server answers the client's expectation itself when the body is first read; Cloudreve's own
    // `100 Continue` answers the proxy, and a second one would tell the client nothing.
    let (url, requests) = Hinting::prompt().await;
    let proxy = TestProxy::start(&url).await;
    let mut stream = connect(
        &proxy,
        &format!(
            "POST {PASS} HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        ),
    )
    .await;
    let (proceed, _) = read_message(&mut stream).await;
    assert_eq!(status_line(&proceed), "HTTP/1.1 100 Continue");
    stream.send(b"hello").await.unwrap();

    let (hints, _) = read_message(&mut stream).await;
    assert_early_hints(&hints, PASS);
    let (head, body) = read_message(&mut stream).await;
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK", "{head}");
    assert_eq!(body, format!("body={PASS}"));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_http2_client_gets_the_final_response() {
    // hyper's HTTP/2 server offers no way to send a 1xx (see the README): the client gets the final one.
    let (url, requests) = Hinting::prompt().await;
    let proxy = TestProxy::start(&url).await;
    let reply = send(
        &h2_client(),
        http::Request::get(proxy.url(PASS)).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(reply.body, format!("body={PASS}"));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn early_hints_reach_a_client_over_tls() {
    // The guard sits on the decrypted stream: what it writes goes out in TLS records, flushed as it goes.
    let upstream = Hinting::held().await;
    let (dir, ca) = (TempDir::new("interim-tls"), TestCa::new("interim CA"));
    let leaf = ca.leaf("edge");
    let (cert, key) = (
        dir.write("cert.pem", &leaf.cert_pem),
        dir.write("key.pem", &leaf.key_pem),
    );
    let mut config = test_config(&upstream.url());
    let section = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    config.tls = Config::from_toml(&section).unwrap().tls;
    let proxy = TestProxy::start_with(config).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = timeout(PATIENCE, ca.connector(&[b"http/1.1"]).connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);

    // hyper's client reports each 1xx; the upstream's final response waits until the client has one.
    let mut request = http::Request::get(PASS)
        .header("host", "edge")
        .body(empty())
        .unwrap();
    let hints = Arc::new(Mutex::new(Vec::new()));
    let (seen, release) = (Arc::clone(&hints), Arc::clone(&upstream.release));
    hyper::ext::on_informational(&mut request, move |response| {
        let link = response.headers().get("link").cloned();
        seen.lock()
            .unwrap()
            .push((response.status().as_u16(), link));
        release.notify_one();
    });
    let response = answered(sender.send_request(request)).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = timeout(PATIENCE, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(body, format!("body={PASS}"));
    let link = format!("<{PASS}.css>; rel=preload");
    assert_eq!(*hints.lock().unwrap(), [(103, Some(link.parse().unwrap()))]);
}
