//! Behind a load balancer: the PROXY protocol (v1 and v2) sets the client address Cloudreve sees, and
//! `X-Forwarded-For` from a client is believed only when the peer is in `server.trusted_proxies`.
//!
//! What Cloudreve sees is read at the fake upstream, which records every request head.

use std::net::SocketAddr;

use crate::support::ops::proxy_v2_header;
use crate::support::raw::Raw;
use crate::support::*;
use cloudreve_edge::config::TrustedProxies;
use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ppp::v2;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

fn trusted(entries: &[&str]) -> TrustedProxies {
    let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
    TrustedProxies::parse(&entries).unwrap()
}

async fn proxy_with(upstream: &FakeCloudreve, proxy_protocol: bool, trust: &[&str]) -> TestProxy {
    let mut config = test_config(&upstream.url());
    config.server.proxy_protocol = proxy_protocol;
    config.server.trusted_proxies = trusted(trust);
    TestProxy::start_with(config).await
}

/// `GET /api/v4/site/ping` with the given `X-Forwarded-*` headers, over HTTP/1.1 on `stream`.
async fn ping_h1(stream: TcpStream, forwarded: &[(&str, &str)]) -> http::StatusCode {
    timeout(PATIENCE, async {
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let mut request = Request::get("/api/v4/site/ping").header("host", "cloud.example");
        for (name, value) in forwarded {
            request = request.header(*name, *value);
        }
        let response = sender.send_request(request.body(empty()).unwrap()).await;
        let response = response.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        status
    })
    .await
    .expect("request timed out")
}

#[tokio::test]
async fn untrusted_peer_forged_forwarded_for_is_replaced() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_with(&upstream, false, &["10.0.0.0/8"]).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let status = ping_h1(
        stream,
        &[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn trusted_peer_forwarded_for_is_extended() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_with(&upstream, false, &["127.0.0.0/8"]).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let forwarded = [
        ("x-forwarded-for", "198.51.100.20"),
        ("x-forwarded-proto", "https"),
    ];
    assert_eq!(ping_h1(stream, &forwarded).await, 200);
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.20, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn proxy_v1_header_sets_the_client_address() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_with(&upstream, true, &[]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"PROXY TCP4 203.0.113.9 10.0.0.1 41000 8080\r\n")
        .await
        .unwrap();
    // A client's forged header does not survive: the PROXY source is not a trusted proxy.
    assert_eq!(
        ping_h1(stream, &[("x-forwarded-for", "1.2.3.4")]).await,
        200
    );
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("203.0.113.9")
    );
}

#[tokio::test]
async fn proxy_v2_header_sets_the_client_address_over_http2() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_with(&upstream, true, &[]).await;
    let source: SocketAddr = "[2001:db8::42]:50000".parse().unwrap();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let destination: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    stream
        .write_all(&proxy_v2_header(source, destination))
        .await
        .unwrap();
    let status = timeout(PATIENCE, async {
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get(format!("http://{}/api/v4/site/ping", proxy.addr))
            .body(empty())
            .unwrap();
        sender.send_request(request).await.unwrap().status()
    })
    .await
    .expect("request timed out");
    assert_eq!(status, 200);
    assert_eq!(upstream.last().version, http::Version::HTTP_11);
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("2001:db8::42")
    );
}

#[tokio::test]
async fn trusted_proxy_protocol_source_keeps_its_forwarded_for() {
    // An L7 balancer that also speaks PROXY: its own address arrives in the header and is trusted.
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_with(&upstream, true, &["10.0.0.0/8"]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let header = proxy_v2_header("10.1.2.3:40000".parse().unwrap(), proxy.addr);
    stream.write_all(&header).await.unwrap();
    assert_eq!(
        ping_h1(stream, &[("x-forwarded-for", "198.51.100.20")]).await,
        200
    );
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("198.51.100.20, 10.1.2.3")
    );
}

#[tokio::test]
async fn proxy_v2_local_health_check_uses_the_peer_address() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_with(&upstream, true, &[]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let local = v2::Builder::new(
        v2::Version::Two | v2::Command::Local,
        v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
    )
    .build()
    .unwrap();
    stream.write_all(&local).await.unwrap();
    assert_eq!(ping_h1(stream, &[]).await, 200);
    assert_eq!(upstream.last().header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn missing_proxy_header_closes_the_connection_unanswered() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_with(&upstream, true, &[]).await;
    let reply = raw_exchange(
        proxy.addr,
        b"GET /api/v4/site/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply, "", "no HTTP answer without a PROXY header");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn proxy_header_split_across_packets_is_read_whole() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = proxy_with(&upstream, true, &[]).await;
    let mut stream = Raw::connect(proxy.addr).await;
    // Each send is flushed: two packets.
    stream.send(b"PROXY TCP4 203.0.1").await.unwrap();
    stream
        .send(b"13.9 10.0.0.1 41000 8080\r\nGET /api/v4/site/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = String::from_utf8(stream.closed_cleanly().await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("203.0.113.9")
    );
}
