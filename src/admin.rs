//! The admin listener (`admin.listen`, never the public port): `/metrics`, `/healthz`, `/readyz`, and the purge
//! API ([`purge`]: `/purge/avatar/{id}`, `/purge/all`, `/stats`).
//!
//! Every route is one arm of `route`. The purge API asks for `admin.token` when one is set (read from the
//! running configuration, so a reload rotates it); `/metrics`, `/healthz` and `/readyz` stay open, because
//! load balancers and Prometheus probe without credentials. Plain HTTP/1.1: Prometheus and load-balancer
//! health checks speak nothing else, and nothing here streams.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::body::Body;
use crate::health::Readiness;
use crate::metrics::{self, CacheUsage};
use crate::proxy::Proxy;

pub mod purge;

/// A scraper or health checker gets this long to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin routes on `listener` until `shutdown` completes. It is meant to outlive the public
/// listener's drain, so the load balancer keeps reading `/readyz` (503) while connections finish.
pub async fn run(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve(stream, Arc::clone(&proxy)),
                Err(err) => {
                    tracing::warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return Ok(()),
        }
    }
}

fn serve(stream: TcpStream, proxy: Arc<Proxy>) {
    let service = service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, Infallible>(route(&proxy, &request).await) }
    });
    tokio::spawn(async move {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "admin connection closed with an error");
        }
    });
}

/// The admin routes, in one place. A purge API path without the token is answered 401 whatever the method,
/// so nothing about the API is learnt without it.
async fn route(proxy: &Proxy, request: &Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    let read = request.method() == Method::GET || request.method() == Method::HEAD;
    let snapshot = proxy.live().load();
    let token = snapshot.config.admin.token.as_ref().map(|t| t.as_str());
    // The purge API reads the whole target: `/purge/url/...` keeps its query, which is part of the key.
    let target = request
        .uri()
        .path_and_query()
        .map_or(path, |pq| pq.as_str());
    let response = match (purge::action(request.method(), target), path) {
        (Some(_), _) if !purge::authorized(request.headers(), token) => purge::unauthorized(),
        (Some(Ok(action)), _) => purge::perform(proxy.cache(), proxy.rules(), &action),
        (Some(Err(())), _) => purge::method_not_allowed(),
        (None, _) if !read => text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n"),
        (None, "/metrics") => metrics(proxy),
        (None, "/healthz") => text(StatusCode::OK, "ok\n"),
        (None, "/readyz") => readyz(proxy).await,
        (None, _) => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if request.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::Empty);
    }
    response
}

/// Prometheus text exposition, with the cache's size read now.
fn metrics(proxy: &Proxy) -> Response<Body> {
    let (entries, bytes) = proxy.cache().usage();
    let usage = CacheUsage {
        entries,
        bytes,
        evictions: proxy.cache().evictions(),
    };
    uncached(
        StatusCode::OK,
        metrics::CONTENT_TYPE,
        proxy.metrics().render(usage),
    )
}

/// 200 while the process should get traffic: not draining, and the upstream answered within
/// `admin.readiness_window` (or, when traffic says nothing, a TCP connect to it succeeds now).
async fn readyz(proxy: &Proxy) -> Response<Body> {
    let snapshot = proxy.live().load();
    let readiness = proxy
        .health()
        .readiness(snapshot.config.admin.readiness_window);
    match readiness {
        Readiness::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        Readiness::Ready => text(StatusCode::OK, "ready\n"),
        Readiness::Unknown => {
            let upstream = &snapshot.config.upstream;
            let connect = TcpStream::connect(upstream.authority.as_str());
            let reachable = matches!(
                tokio::time::timeout(upstream.connect_timeout, connect).await,
                Ok(Ok(_))
            );
            if reachable {
                proxy.health().upstream_answered();
                text(StatusCode::OK, "ready\n")
            } else {
                proxy.health().upstream_failed();
                text(StatusCode::SERVICE_UNAVAILABLE, "upstream unreachable\n")
            }
        }
    }
}

/// A short plain-text answer that no cache keeps.
fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    uncached(status, "text/plain; charset=utf-8", body)
}

/// An admin answer (health, metrics, purge) with its type, marked for no cache to keep.
pub(crate) fn uncached(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
