//! `--demo`: a small Cloudreve look-alike on loopback, so the cache can be seen working without a Cloudreve.
//!
//! It answers the avatar route the way Cloudreve 4 does (see `upstream-contract.md`): a PNG for `lpua`, a
//! Gravatar redirect for `lUpa`, "no avatar" 404 for `O2UR`, JSON errors for unknown users and bad `nocache`,
//! and a JSON API route. Every request it receives is logged, so a hit is visible as a request that never
//! arrives.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::route::{AVATAR_PREFIX, NoCache};

/// A 16x16 checkered PNG.
const AVATAR_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x91, 0x68,
    0x36, 0x00, 0x00, 0x00, 0x22, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xb0, 0x6e, 0xfa, 0x06,
    0x47, 0xff, 0x91, 0x00, 0x2e, 0x71, 0x86, 0x41, 0xa8, 0x81, 0x18, 0x45, 0xc8, 0xe2, 0x83, 0x51,
    0xc3, 0x68, 0x3c, 0x0c, 0x0a, 0x0d, 0x00, 0x9b, 0x5a, 0x58, 0x1f, 0x16, 0xea, 0xbe, 0xf6, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Cloudreve's default `public_resource_maxage`.
const PUBLIC_CACHE_CONTROL: &str = "public, max-age=86400";
/// The `Last-Modified` the demo user's row carries.
const LAST_MODIFIED: &str = "Sun, 29 Nov 2026 12:00:00 GMT";

/// Starts the look-alike on `127.0.0.1` (an ephemeral port) and returns its address.
pub async fn spawn_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                let service =
                    service_fn(|request| async move { Ok::<_, Infallible>(answer(&request)) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The curl lines a newcomer runs against the proxy at `proxy`.
pub fn instructions(proxy: SocketAddr, admin: SocketAddr) -> String {
    let show = "grep -iE '^(HTTP|x-cache|cache-status|age)'";
    format!(
        "\ncloudreve-edge demo: proxy on http://{proxy}, in front of a Cloudreve look-alike on loopback.\n\
         Run these twice each; the first shows MISS (the look-alike logs the request), the second HIT (it does not):\n\n\
         \x20 curl -si http://{proxy}/api/v4/user/avatar/lpua | {show}   # an uploaded avatar (PNG)\n\
         \x20 curl -si http://{proxy}/api/v4/user/avatar/lUpa | {show}   # Gravatar: a stored 302\n\
         \x20 curl -si http://{proxy}/api/v4/user/avatar/O2UR | {show}   # no avatar yet: a 404 kept for 60 s\n\
         \x20 curl -si 'http://{proxy}/api/v4/user/avatar/lpua?nocache=1' | {show}   # BYPASS: always upstream\n\
         \x20 curl -si http://{proxy}/api/v4/site/ping   # any other route: passed through, never cached\n\n\
         Then what an operator sees, on the admin listener:\n\n\
         \x20 curl -s http://{admin}/metrics | grep -E '^cloudreve_edge_(requests|cache)'\n\
         \x20 curl -si http://{admin}/readyz\n\
         \x20 curl -s http://{admin}/stats   # entries, bytes, hit ratio (add -H 'Authorization: Bearer ...' if admin.token is set)\n\
         \x20 curl -s -X POST http://{admin}/purge/avatar/lpua   # the next lpua request is a MISS again\n\n\
         Stop with Ctrl-C.\n"
    )
}

fn answer(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    tracing::info!(target: "demo_upstream", method = %request.method(), uri = %request.uri(), "demo upstream received a request");
    let path = request.uri().path();
    match path.strip_prefix(AVATAR_PREFIX) {
        Some(id) if request.method() == Method::GET => {
            avatar(id, NoCache::parse(request.uri().query()))
        }
        None if path == "/api/v4/site/ping" => json(r#"{"code":0,"data":"4.18.0-demo","msg":""}"#),
        // Like gin: only GET is routed on the avatar path; unknown routes are a plain 404.
        _ => plain(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn avatar(id: &str, nocache: NoCache) -> Response<Full<Bytes>> {
    let cache_control = match nocache {
        NoCache::Invalid => return json(r#"{"code":40001,"msg":"Parameter error"}"#),
        NoCache::True => "private, no-cache",
        NoCache::False => PUBLIC_CACHE_CONTROL,
    };
    let builder = Response::builder().header(header::CACHE_CONTROL, cache_control);
    let response = match id {
        "lpua" => builder
            .header(header::CONTENT_TYPE, "image/png")
            .header(header::LAST_MODIFIED, LAST_MODIFIED)
            .header(header::ACCEPT_RANGES, "bytes")
            .body(Full::new(Bytes::from_static(AVATAR_PNG))),
        "lUpa" => builder
            .status(StatusCode::FOUND)
            .header(
                header::LOCATION,
                "https://www.gravatar.com/avatar/00000000000000000000000000000000?d=mm&s=200",
            )
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Full::new(Bytes::from_static(
                b"<a href=\"https://www.gravatar.com/\">Found</a>.\n\n",
            ))),
        "O2UR" => builder.status(StatusCode::NOT_FOUND).body(Full::default()),
        _ => {
            return json(
                r#"{"code":40021,"msg":"","correlation_id":"00000000-0000-0000-0000-000000000000"}"#,
            );
        }
    };
    response.expect("static demo response")
}

fn json(body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::CACHE_CONTROL, "private, no-cache")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static demo response")
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static demo response")
}
