//! The framing guard under the listener's other layers: with TLS it checks the decrypted bytes, and with the
//! PROXY protocol it starts after the header, which is never taken for a request line; also when a load
//! balancer passes TLS through with a PROXY header first (`deploy/haproxy.cfg`, way A). In each case an
//! ambiguous request gets 400, is never forwarded, and ends the connection, so the request smuggled behind
//! it is never read; a well-formed one passes; a head that never completes is timed from its first byte.
//! HTTP/2, which the guard does not see, is held to the same rules by the request filter (or h2 itself), and
//! the host rules hold over TLS and HTTP/2 alike.

use std::time::{Duration, Instant};

use crate::support::ops::{TempDir, TestCa, proxy_v2_header};
use crate::support::raw::Raw;
use crate::support::raw_h2::{H2Outcome, RawH2};
use crate::support::*;
use cloudreve_edge::Config;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
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
        self.tls_alpn(before, b"http/1.1").await
    }

    /// A TLS connection offering only `alpn`, after writing `before` in the clear.
    async fn tls_alpn(&self, before: &[u8], alpn: &[u8]) -> TlsStream<TcpStream> {
        let mut tcp = TcpStream::connect(self.proxy.addr).await.unwrap();
        tcp.write_all(before).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        timeout(PATIENCE, self.ca.connector(&[alpn]).connect(name, tcp))
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

/// Writes `bytes` in one go and reads until the proxy closes the connection (bounded by [`PATIENCE`]); a TLS
/// peer may end with close_notify or just close: both are the end.
async fn exchange_to_close<S: AsyncRead + AsyncWrite + Unpin>(stream: S, bytes: &[u8]) -> String {
    let mut raw = Raw::over(stream);
    raw.send(bytes).await.unwrap();
    String::from_utf8_lossy(&raw.closed().await).into_owned()
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

// HTTP/2 and the Host rules: what the guard refuses in an HTTP/1.1 head is refused in an HTTP/2 header list
// too, by the same code (`framing::FieldCounts`), and the host every protocol agrees on is checked once.

const PING_PATH: &str = "/api/v4/site/ping";

/// A `GET` of the ping route over HTTP/2 with `fields` after the pseudo-fields; `authority` when given.
fn h2_get<'a>(
    authority: Option<&'a str>,
    fields: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut list = vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":path", PING_PATH),
    ];
    list.extend(authority.map(|a| (":authority", a)));
    list.extend_from_slice(fields);
    list
}

/// A `POST` of the ping route over HTTP/2 with `:authority` and `fields`.
fn h2_post<'a>(fields: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut list = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", PING_PATH),
        (":authority", "cloud.example"),
    ];
    list.extend_from_slice(fields);
    list
}

/// A named HTTP/2 request: its field list (pseudo-fields first) and body.
type H2Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static [u8],
);

/// Each refused the way HTTP/1.1's guard refuses it, answered 400 in Cloudreve's envelope by the proxy.
fn h2_refused_by_the_proxy() -> Vec<H2Case> {
    vec![
        (
            "two host fields, no :authority",
            h2_get(None, &[("host", "a.example"), ("host", "b.example")]),
            b"",
        ),
        ("a host with a slash", h2_get(None, &[("host", "a/b")]), b""),
        ("a host with a space", h2_get(None, &[("host", "a b")]), b""),
        (
            "userinfo in :authority",
            h2_get(Some("user:secret@cloud.example"), &[]),
            b"",
        ),
        (
            "an empty port in :authority",
            h2_get(Some("cloud.example:"), &[]),
            b"",
        ),
        (
            ":authority and host differ",
            h2_get(Some("a.example"), &[("host", "b.example")]),
            b"",
        ),
        (
            "Content-Length twice, equal",
            h2_post(&[("content-length", "1"), ("content-length", "1")]),
            b"a",
        ),
        (
            "an empty Content-Length",
            h2_post(&[("content-length", "")]),
            b"",
        ),
    ]
}

/// What h2 itself refuses before the request exists (RFC 9113 §8.1.1, §8.2.2): the stream is reset.
fn h2_reset_by_h2() -> Vec<H2Case> {
    vec![
        (
            "Transfer-Encoding",
            h2_post(&[("transfer-encoding", "chunked")]),
            b"0\r\n\r\n",
        ),
        (
            "Content-Length with Transfer-Encoding",
            h2_post(&[("content-length", "1"), ("transfer-encoding", "chunked")]),
            b"a",
        ),
        (
            "Connection",
            h2_get(Some("cloud.example"), &[("connection", "keep-alive")]),
            b"",
        ),
        (
            "Keep-Alive",
            h2_get(Some("cloud.example"), &[("keep-alive", "timeout=5")]),
            b"",
        ),
        (
            "Proxy-Connection",
            h2_get(Some("cloud.example"), &[("proxy-connection", "keep-alive")]),
            b"",
        ),
        (
            "Upgrade",
            h2_get(Some("cloud.example"), &[("upgrade", "websocket")]),
            b"",
        ),
        (
            "TE other than trailers",
            h2_get(Some("cloud.example"), &[("te", "gzip")]),
            b"",
        ),
        (
            "conflicting Content-Lengths",
            h2_post(&[("content-length", "1"), ("content-length", "2")]),
            b"a",
        ),
        (
            "a Content-Length list",
            h2_post(&[("content-length", "1, 1")]),
            b"a",
        ),
        (
            "a signed Content-Length",
            h2_post(&[("content-length", "+1")]),
            b"a",
        ),
    ]
}

#[tokio::test]
async fn http2_requests_the_guard_would_refuse_get_400_and_are_never_forwarded() {
    let layers = Layers::start(false, false).await;
    for (case, fields, body) in h2_refused_by_the_proxy() {
        let mut h2 = RawH2::start(layers.tcp().await).await;
        match h2.request(&fields, body).await {
            H2Outcome::Response(400, body) => {
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["code"], 400, "{case}");
            }
            other => panic!("{case}: {other:?}"),
        }
    }
    assert_eq!(
        layers.upstream.count(),
        0,
        "{:?}",
        layers.upstream.received()
    );
}

#[tokio::test]
async fn http2_connection_specific_fields_and_bad_lengths_reset_the_stream_unforwarded() {
    let layers = Layers::start(false, false).await;
    for (case, fields, body) in h2_reset_by_h2() {
        let mut h2 = RawH2::start(layers.tcp().await).await;
        // PROTOCOL_ERROR (RFC 9113 §7).
        assert_eq!(
            h2.request(&fields, body).await,
            H2Outcome::Reset(1),
            "{case}"
        );
    }
    assert_eq!(
        layers.upstream.count(),
        0,
        "{:?}",
        layers.upstream.received()
    );
}

#[tokio::test]
async fn http2_hosts_reach_the_upstream_as_exactly_one_validated_host_line() {
    let layers = Layers::start(false, false).await;
    for (case, fields, expected) in [
        (
            ":authority alone",
            h2_get(Some("cloud.example:8080"), &[]),
            "cloud.example:8080",
        ),
        (
            "host alone",
            h2_get(None, &[("host", "cloud.example")]),
            "cloud.example",
        ),
        (
            "both, alike but for case",
            h2_get(Some("cloud.example"), &[("host", "Cloud.Example")]),
            "cloud.example",
        ),
        (
            "an IPv6 literal",
            h2_get(Some("[::1]:8080"), &[]),
            "[::1]:8080",
        ),
    ] {
        let mut h2 = RawH2::start(layers.tcp().await).await;
        match h2.request(&fields, b"").await {
            H2Outcome::Response(200, _) => {}
            other => panic!("{case}: {other:?}"),
        }
        let seen = layers.upstream.last();
        let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
        assert_eq!(hosts, [expected], "{case}");
    }
}

#[tokio::test]
async fn over_tls_the_host_rules_hold_for_http1_and_http2() {
    let layers = Layers::start(true, false).await;
    for request in [
        "GET /api/v4/site/ping HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET http://user:secret@cloud.example/api/v4/site/ping HTTP/1.1\r\nHost: cloud.example\r\n\r\n",
    ] {
        let mut tls = layers.tls(b"").await;
        let reply = exchange_to_close(&mut tls, request.as_bytes()).await;
        assert_refused(&layers, &reply, request);
    }
    let tls = layers.tls_alpn(b"", b"h2").await;
    let mut h2 = RawH2::start(tls).await;
    let fields = h2_get(None, &[("host", "a.example"), ("host", "b.example")]);
    assert!(
        matches!(h2.request(&fields, b"").await, H2Outcome::Response(400, _)),
        "two host fields over TLS"
    );
    assert_eq!(layers.upstream.count(), 0);
}
