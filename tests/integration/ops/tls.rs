//! TLS both ways, with certificates made in the test by rcgen: the listener terminates TLS and picks HTTP/2
//! or HTTP/1.1 by ALPN; its certificate changes for new handshakes when the running configuration does; an
//! `https://` upstream is verified against `upstream.ca_file` with SNI set to the upstream host.

use crate::support::ops::{Leaf, TempDir, TestAdmin, TestCa, TlsUpstream, common_name};
use crate::support::*;
use cloudreve_edge::Config;
use cloudreve_edge::reload;
use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

const PING: &str = "/api/v4/site/ping";

/// A TOML `[tls]` section for `leaf`, its files written to `dir`.
fn tls_section(dir: &TempDir, leaf: &Leaf) -> String {
    let cert = dir.write("cert.pem", &leaf.cert_pem);
    let key = dir.write("key.pem", &leaf.key_pem);
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// The test configuration with TLS from `leaf`.
fn tls_config(upstream: &str, dir: &TempDir, leaf: &Leaf) -> Config {
    let mut config = test_config(upstream);
    config.tls = Config::from_toml(&tls_section(dir, leaf)).unwrap().tls;
    config
}

async fn handshake(
    ca: &TestCa,
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    timeout(PATIENCE, ca.connector(alpn).connect(name, tcp))
        .await
        .expect("handshake timed out")
        .expect("handshake failed")
}

/// An HTTP/1.1 client on an established TLS stream, its connection driven in the background.
async fn h1_sender(stream: TlsStream<TcpStream>) -> http1::SendRequest<TestBody> {
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// An HTTP/2 client on an established TLS stream, its connection driven in the background.
async fn h2_sender(stream: TlsStream<TcpStream>) -> http2::SendRequest<TestBody> {
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn presented_name(stream: &TlsStream<TcpStream>) -> String {
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    common_name(&certs[0])
}

#[tokio::test]
async fn tls_with_alpn_h2_serves_http2() {
    let upstream = FakeCloudreve::avatars().await;
    let (ca, dir) = (TestCa::new("test ca"), TempDir::new("tls-h2"));
    let proxy = TestProxy::start_with(tls_config(&upstream.url(), &dir, &ca.leaf("edge"))).await;

    let stream = handshake(&ca, proxy.addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let status = timeout(PATIENCE, async {
        let mut sender = h2_sender(stream).await;
        let request = Request::get(format!("https://localhost{PING}"))
            .body(empty())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        (response.status(), response.version())
    })
    .await
    .unwrap();
    assert_eq!(status, (http::StatusCode::OK, http::Version::HTTP_2));
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("via"), Some("2 cloudreve-edge"));
}

#[tokio::test]
async fn tls_with_alpn_http1_serves_http1() {
    let upstream = FakeCloudreve::avatars().await;
    let (ca, dir) = (TestCa::new("test ca"), TempDir::new("tls-h1"));
    let proxy = TestProxy::start_with(tls_config(&upstream.url(), &dir, &ca.leaf("edge"))).await;

    let stream = handshake(&ca, proxy.addr, &[b"http/1.1"]).await;
    assert_eq!(alpn(&stream).as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(presented_name(&stream), "edge");
    let status = timeout(PATIENCE, async {
        let mut sender = h1_sender(stream).await;
        let request = Request::get(PING)
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        sender.send_request(request).await.unwrap().status()
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(upstream.last().header("x-forwarded-proto"), Some("https"));
}

/// The express lane answers over TLS too (its answer flushed through rustls), and never on HTTP/2.
#[tokio::test]
async fn avatar_hits_over_tls_take_the_express_lane_on_http1_only() {
    const AVATAR: &str = "/api/v4/user/avatar/img1";
    let upstream = FakeCloudreve::avatars().await;
    let (ca, dir) = (TestCa::new("test ca"), TempDir::new("tls-express"));
    let proxy = TestProxy::start_with(tls_config(&upstream.url(), &dir, &ca.leaf("edge"))).await;
    let admin = TestAdmin::start(&proxy).await;

    let stream = handshake(&ca, proxy.addr, &[b"http/1.1"]).await;
    let mut sender = h1_sender(stream).await;
    for expected in ["MISS", "HIT", "HIT"] {
        let request = Request::get(AVATAR)
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        let response = answered(sender.send_request(request)).await;
        assert_eq!(response.headers()["x-cache"], expected);
        let body = timeout(PATIENCE, response.into_body().collect())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body.to_bytes(), avatar_bytes("img1"));
    }
    assert_eq!(admin.express_answers().await, 2.0);

    let stream = handshake(&ca, proxy.addr, &[b"h2"]).await;
    let mut sender = h2_sender(stream).await;
    let request = Request::get(format!("https://localhost{AVATAR}"))
        .body(empty())
        .unwrap();
    let response = answered(sender.send_request(request)).await;
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(admin.express_answers().await, 2.0);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn plain_http_to_the_tls_listener_gets_no_answer() {
    let upstream = FakeCloudreve::avatars().await;
    let (ca, dir) = (TestCa::new("test ca"), TempDir::new("tls-plain"));
    let proxy = TestProxy::start_with(tls_config(&upstream.url(), &dir, &ca.leaf("edge"))).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!reply.contains("HTTP/1.1 200"), "{reply}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn reloaded_certificate_is_presented_to_new_handshakes_only() {
    let upstream = FakeCloudreve::avatars().await;
    let ca = TestCa::new("test ca");
    let (old_dir, new_dir) = (TempDir::new("tls-old"), TempDir::new("tls-new"));
    let config = tls_config(&upstream.url(), &old_dir, &ca.leaf("before"));
    let proxy = TestProxy::start_with(config.clone()).await;
    let before = handshake(&ca, proxy.addr, &[b"http/1.1"]).await;
    assert_eq!(presented_name(&before), "before");

    let rotated = tls_config(&upstream.url(), &new_dir, &ca.leaf("after"));
    let reloaded = reload::reload(proxy.proxy.live(), || Ok(rotated)).unwrap();
    assert!(reloaded.restart_needed.is_empty(), "{reloaded:?}");

    let after = handshake(&ca, proxy.addr, &[b"http/1.1"]).await;
    assert_eq!(presented_name(&after), "after");
    // The connection made before the change still works.
    let mut sender = h1_sender(before).await;
    let request = Request::get(PING)
        .header("host", "localhost")
        .body(empty())
        .unwrap();
    let response = timeout(PATIENCE, sender.send_request(request)).await;
    assert_eq!(response.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn mismatched_key_is_a_config_error_naming_tls_cert() {
    let ca = TestCa::new("test ca");
    let dir = TempDir::new("tls-mismatch");
    let (first, second) = (ca.leaf("a"), ca.leaf("b"));
    let mixed = Leaf {
        cert_pem: first.cert_pem,
        key_pem: second.key_pem,
    };
    let err = Config::from_toml(&tls_section(&dir, &mixed)).unwrap_err();
    assert!(err.to_string().starts_with("tls.cert: "), "{err}");
}

#[tokio::test]
async fn half_a_tls_section_is_a_config_error() {
    let err = Config::from_toml("[tls]\ncert = \"/etc/edge/cert.pem\"\n").unwrap_err();
    assert!(err.to_string().starts_with("tls.key: "), "{err}");
}

// HTTPS upstream

fn https_upstream_config(upstream: &TlsUpstream, ca_file: Option<&std::path::Path>) -> Config {
    let ca_line = ca_file.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    let text = format!(
        "[upstream]\nurl = \"https://localhost:{}\"\n{ca_line}",
        upstream.addr.port()
    );
    let mut config = test_config("http://127.0.0.1:9");
    config.upstream = Config::from_toml(&text).unwrap().upstream;
    config.upstream.connect_timeout = std::time::Duration::from_secs(2);
    config
}

#[tokio::test]
async fn https_upstream_is_verified_with_the_configured_ca_and_sni_is_its_host() {
    let ca = TestCa::new("upstream ca");
    let upstream = TlsUpstream::start(&ca.leaf("cloudreve")).await;
    let dir = TempDir::new("upstream-ca");
    let ca_file = dir.write("ca.pem", &ca.pem);
    let proxy = TestProxy::start_with(https_upstream_config(&upstream, Some(&ca_file))).await;

    let reply = send(
        &client(),
        Request::get(proxy.url(PING))
            .header("host", "cloud.example")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], b"ok");
    assert_eq!(
        upstream.sni.lock().unwrap().as_slice(),
        [Some("localhost".to_owned())],
        "SNI names the upstream host, not the client's Host"
    );
    assert_eq!(
        upstream.forwarded_for.lock().unwrap().as_slice(),
        [Some("127.0.0.1".to_owned())]
    );
}

#[tokio::test]
async fn https_upstream_signed_by_an_unknown_ca_is_refused_with_502() {
    let ca = TestCa::new("upstream ca");
    let upstream = TlsUpstream::start(&ca.leaf("cloudreve")).await;
    let dir = TempDir::new("other-ca");
    let other = dir.write("other.pem", &TestCa::new("another ca").pem);
    let proxy = TestProxy::start_with(https_upstream_config(&upstream, Some(&other))).await;
    let reply = get(&proxy.url(PING)).await;
    assert_eq!(reply.status, 502);
    assert!(upstream.forwarded_for.lock().unwrap().is_empty());
}

#[tokio::test]
async fn https_upstream_url_defaults_to_port_443_and_system_roots() {
    let config = Config::from_toml("[upstream]\nurl = \"https://cloudreve.internal\"\n");
    match config {
        Ok(config) => {
            assert_eq!(config.upstream.authority.as_str(), "cloudreve.internal:443");
            assert!(config.upstream.tls.unwrap().ca_file.is_none());
        }
        // A machine without a system CA bundle: the error must say so and name the key.
        Err(err) => assert!(err.to_string().starts_with("upstream.ca_file: "), "{err}"),
    }
}

#[tokio::test]
async fn ca_file_with_an_http_upstream_is_a_config_error() {
    let err = Config::from_toml("[upstream]\nurl = \"http://x:1\"\nca_file = \"/tmp/ca.pem\"\n")
        .unwrap_err();
    assert!(err.to_string().starts_with("upstream.ca_file: "), "{err}");
}
