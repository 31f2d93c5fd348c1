//! The framing guard under the listener's other layers: with TLS it checks the decrypted bytes, and with the
//! PROXY protocol it starts after the header, which is never taken for a request line; also when a load
//! balancer passes TLS through with a PROXY header first (`deploy/haproxy.cfg`, way A). In each case an
//! ambiguous request gets 400, is never forwarded, and ends the connection, so the request smuggled behind
//! it is never read; a well-formed one passes; a head that never completes is timed from its first byte.

mod support;

use std::time::{Duration, Instant};

use cloudreve_edge::Config;
use rustls::pki_types::ServerName;
use support::ops::{TempDir, TestCa, proxy_v2_header};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

/// `Content-Length` and `Transfer-Encoding` together, then a request hidden in what a lenient parser would
/// take for the rest of its body.
const SMUGGLING: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
const PING: &[u8] =
    b"GET /api/v4/site/ping HTTP/1.1\r\nHost: cloud.example\r\nConnection: close\r\n\r\n";
const PROXY_V1: &[u8] = b"PROXY TCP4 203.0.113.9 10.0.0.1 41000 8080\r\n";

/// The listener under test: TLS or not, PROXY protocol or not.
struct Layers {
    proxy: TestProxy,
    upstream: FakeCloudreve,
    ca: TestCa,
    _dir: TempDir,
}

impl Layers {
    async fn start(tls: bool, proxy_protocol: bool) -> Self {
        Self::start_with(tls, proxy_protocol, |_| {}).await
    }

    async fn start_with(tls: bool, proxy_protocol: bool, adjust: impl FnOnce(&mut Config)) -> Self {
        let upstream = FakeCloudreve::avatars().await;
        let (ca, dir) = (TestCa::new("test ca"), TempDir::new("framing-layers"));
        let mut config = test_config(&upstream.url());
        config.server.proxy_protocol = proxy_protocol;
        if tls {
            let leaf = ca.leaf("edge");
            let cert = dir.write("cert.pem", &leaf.cert_pem);
            let key = dir.write("key.pem", &leaf.key_pem);
            let section = format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                key.display()
            );
            config.tls = Config::from_toml(&section).unwrap().tls;
        }
        adjust(&mut config);
        Self {
            proxy: TestProxy::start_with(config).await,
            upstream,
            ca,
            _dir: dir,
        }
    }

    /// A TLS connection (HTTP/1.1 by ALPN), after writing `before` in the clear (a PROXY header).
    async fn tls(&self, before: &[u8]) -> TlsStream<TcpStream> {
        let mut tcp = TcpStream::connect(self.proxy.addr).await.unwrap();
        tcp.write_all(before).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        timeout(
            PATIENCE,
            self.ca.connector(&[b"http/1.1"]).connect(name, tcp),
        )
        .await
        .expect("handshake timed out")
        .expect("handshake failed")
    }

    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(self.proxy.addr).await.unwrap()
    }
}

/// A v2 PROXY header for a connection from `source`.
fn proxy_v2(source: &str) -> Vec<u8> {
    proxy_v2_header(source.parse().unwrap(), "10.0.0.1:443".parse().unwrap())
}

/// Writes `bytes` in one go and reads until the proxy closes the connection (bounded by [`PATIENCE`]).
async fn exchange_to_close<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> String {
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
    read_to_close(stream).await
}

async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut out = Vec::new();
    timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        // A TLS peer may end with close_notify (0) or just close (an error): both are the end.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the connection was left open");
    String::from_utf8_lossy(&out).into_owned()
}

/// The proxy answered 400 itself and nothing else before closing; nothing reached the upstream.
fn assert_refused(layers: &Layers, reply: &str, case: &str) {
    assert!(reply.starts_with("HTTP/1.1 400 "), "{case}: {reply:?}");
    assert_eq!(
        reply.matches("HTTP/1.1 ").count(),
        1,
        "{case}: more after the 400: {reply:?}"
    );
    assert_eq!(layers.upstream.count(), 0, "{case}: forwarded");
}

fn assert_served(layers: &Layers, reply: &str, case: &str) {
    assert!(reply.starts_with("HTTP/1.1 200 "), "{case}: {reply:?}");
    assert_eq!(layers.upstream.last().target, "/api/v4/site/ping", "{case}");
}

#[tokio::test]
async fn over_tls_the_guard_reads_the_decrypted_request() {
    let layers = Layers::start(true, false).await;
    let mut tls = layers.tls(b"").await;
    let reply = exchange_to_close(&mut tls, SMUGGLING).await;
    assert_refused(&layers, &reply, "TLS");

    let mut tls = layers.tls(b"").await;
    let reply = exchange_to_close(&mut tls, PING).await;
    assert_served(&layers, &reply, "TLS");
    assert_eq!(
        layers.upstream.last().header("x-forwarded-proto"),
        Some("https")
    );
}

#[tokio::test]
async fn after_a_proxy_header_the_guard_reads_the_request_not_the_header() {
    let layers = Layers::start(false, true).await;
    // Header and request in one write: the bytes after the header reach the guard, not the header.
    let mut tcp = layers.tcp().await;
    let reply = exchange_to_close(&mut tcp, &[PROXY_V1, SMUGGLING].concat()).await;
    assert_refused(&layers, &reply, "PROXY v1");

    let mut tcp = layers.tcp().await;
    let reply = exchange_to_close(&mut tcp, &[PROXY_V1, PING].concat()).await;
    assert_served(&layers, &reply, "PROXY v1");
    assert_eq!(
        layers.upstream.last().header("x-forwarded-for"),
        Some("203.0.113.9")
    );
}

#[tokio::test]
async fn tls_passed_through_behind_a_proxy_header_is_guarded_too() {
    let layers = Layers::start(true, true).await;
    let mut tls = layers.tls(&proxy_v2("198.51.100.4:50000")).await;
    let reply = exchange_to_close(&mut tls, SMUGGLING).await;
    assert_refused(&layers, &reply, "PROXY v2 + TLS");

    let mut tls = layers.tls(&proxy_v2("198.51.100.4:50001")).await;
    let reply = exchange_to_close(&mut tls, PING).await;
    assert_served(&layers, &reply, "PROXY v2 + TLS");
    let seen = layers.upstream.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("198.51.100.4"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn over_tls_an_unfinished_head_is_timed_from_its_first_byte() {
    const HEAD_TIMEOUT: Duration = Duration::from_millis(300);
    let layers = Layers::start_with(true, true, |config| {
        config.server.header_read_timeout = HEAD_TIMEOUT;
        config.server.idle_timeout = PATIENCE * 2;
    })
    .await;
    let mut tls = layers.tls(&proxy_v2("198.51.100.4:50002")).await;
    let started = Instant::now();
    let reply = exchange_to_close(&mut tls, b"GET /api/v4/site/ping HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        started.elapsed() >= HEAD_TIMEOUT,
        "closed after {:?}",
        started.elapsed()
    );
    assert!(!reply.contains("200"), "{reply:?}");
    assert_eq!(
        layers.upstream.count(),
        0,
        "the partial request was forwarded"
    );
}
