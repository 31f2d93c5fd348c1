//! The request path, as named phases in request order. The order is written once, in [`Proxy::handle`] and
//! `Proxy::route`; each phase is a short function below.
//!
//! 1. request filter (`route`): classify the request (`route.rs`) and take its path.
//! 2. cache lookup: a fresh avatar is answered from memory (`serve_avatar`).
//! 3. forward upstream: everything else, streamed (`forward`), or one fill per missing avatar (`fill`).
//! 4. cache admit: a fill's answer is stored if the policy allows it (`fill`).
//! 5. `response_filter`: `Cache-Status`/`X-Cache` on every avatar response.
//! 6. logging: one access event when the body ends (`access_log.rs`); errors are logged once, here.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, response};
use hyper::body::Incoming;

use crate::access_log::{AccessRecord, LoggedBody};
use crate::body::{Body, Collected, collect_up_to};
use crate::cache::policy::{self, AvatarKey, Exchange, NotStored};
use crate::cache::status::Outcome;
use crate::cache::{AvatarCache, CacheStatus, CachedResponse, Clock, Fill, Lookup};
use crate::config::Config;
use crate::error::ProxyError;
use crate::route::{self, Bypass, Route};
use crate::upstream::{self, ClientInfo, Upstream};

static X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");
static CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// Shared state of the request path: the upstream client and the avatar cache.
pub struct Proxy {
    /// The client to the configured Cloudreve.
    upstream: Upstream,
    /// The avatar cache.
    cache: AvatarCache,
    /// Whether to write one access event per request.
    access_log: bool,
}

impl Proxy {
    /// The proxy for a configuration, on the system clock.
    pub fn new(config: &Config) -> Arc<Self> {
        Self::with_clock(config, Clock::system())
    }

    /// The proxy with a given cache clock (tests move a manual clock instead of sleeping).
    pub fn with_clock(config: &Config, clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            upstream: Upstream::new(&config.upstream),
            cache: AvatarCache::new(&config.cache, clock),
            access_log: config.log.access_log,
        })
    }

    /// The avatar cache, for inspection and purging.
    pub fn cache(&self) -> &AvatarCache {
        &self.cache
    }

    /// The service hyper runs for each request. It never fails: an error becomes a response here and is
    /// logged once.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: ClientInfo,
    ) -> Result<Response<LoggedBody>, Infallible> {
        let mut record = AccessRecord::start(
            request.method(),
            request.uri(),
            request.version(),
            client.addr,
        );
        let response = match self.route(request, &client, &mut record).await {
            Ok(response) => response,
            Err(err) => {
                log_error(&err, &record);
                err.to_response()
            }
        };
        let (mut parts, body) = response.into_parts();
        response_filter(&mut parts, &record);
        let logging = self.access_log && tracing::enabled!(target: "access", tracing::Level::INFO);
        let body = record.finish(parts.status, body, logging);
        Ok(Response::from_parts(parts, body))
    }

    /// Phase 1, the request filter: classification, and the choice of path.
    async fn route(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        // The route borrows the target; a Uri clone shares its bytes.
        let uri = request.uri().clone();
        match route::classify(request.method(), &uri) {
            Route::Avatar(key) => self.serve_avatar(request, key, client, record).await,
            Route::AvatarBypass(reason) => self.bypass(request, reason, client, record).await,
            Route::Pass => self.forward(request, client, record).await,
        }
    }

    /// Phase 2: a fresh entry is answered from memory; a miss is filled once however many clients wait.
    async fn serve_avatar(
        &self,
        request: Request<Incoming>,
        key: AvatarKey<'_>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let head_only = request.method() == Method::HEAD;
        let result = match self.cache.lookup(key) {
            Lookup::Hit(entry) => {
                Ok(self.serve_stored(&entry, head_only, CacheStatus::new(Outcome::Hit), record))
            }
            Lookup::Fill(fill) => self.fill(request, fill, client, record).await,
            Lookup::Wait(waiter) => match waiter.wait().await {
                Some(entry) => Ok(self.serve_stored(
                    &entry,
                    head_only,
                    CacheStatus::new(Outcome::Collapsed),
                    record,
                )),
                // The fill stored nothing: this request goes upstream itself, at once.
                None => self.fetch_uncached(request, client, record).await,
            },
        };
        if result.is_err() {
            record.cache = Some(CacheStatus {
                detail: Some("upstream-error"),
                ..CacheStatus::new(Outcome::Miss)
            });
        }
        result
    }

    /// Phases 3 and 4 for the one request that fills a key: fetch, decide, store, answer.
    async fn fill(
        &self,
        request: Request<Incoming>,
        fill: Fill<'_>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let head_only = request.method() == Method::HEAD;
        // On any error the fill guard is dropped, which sends waiters upstream on their own.
        let (parts, body, exchange) = self.fetch_avatar(request, client, record).await?;
        let limits = *self.cache.limits();
        let freshness = match policy::admit(&parts, exchange, &limits) {
            Ok(freshness) => freshness,
            Err(reason) => {
                fill.finish(None);
                return Ok(not_stored(
                    parts,
                    Body::Stream(body),
                    head_only,
                    Some(reason),
                    record,
                ));
            }
        };
        // The body of a fill is awaited under the head timeout too: waiters are held on it, and an upstream
        // that stalls mid-avatar must not hold them forever (a streamed download has no such limit).
        let timeout = self.upstream.response_header_timeout();
        match tokio::time::timeout(timeout, collect_up_to(body, limits.max_object_size))
            .await
            .map_err(|_| ProxyError::UpstreamBodyTimeout(timeout))?
            .map_err(ProxyError::UpstreamBody)?
        {
            Collected::Whole(bytes) => {
                let entry = self.cache.entry(&parts, bytes, freshness);
                fill.finish(Some(Arc::clone(&entry)));
                let status = CacheStatus {
                    fwd_status: Some(parts.status),
                    ..CacheStatus::new(Outcome::Stored)
                };
                Ok(self.serve_stored(&entry, head_only, status, record))
            }
            Collected::TooLarge(body) => {
                fill.finish(None);
                Ok(not_stored(
                    parts,
                    body,
                    head_only,
                    Some(NotStored::TooLarge),
                    record,
                ))
            }
        }
    }

    /// An avatar fetched for this client alone, because the fill it waited for stored nothing.
    async fn fetch_uncached(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let head_only = request.method() == Method::HEAD;
        let (parts, body, exchange) = self.fetch_avatar(request, client, record).await?;
        let limits = self.cache.limits();
        // The waited-for fill stored nothing; say why when this answer shows it.
        let reason = policy::admit(&parts, exchange, limits).err();
        Ok(not_stored(
            parts,
            Body::Stream(body),
            head_only,
            reason,
            record,
        ))
    }

    /// Phase 3 for avatars: always a plain `GET` for the whole representation (Cloudreve has no `HEAD`
    /// route, and a stored copy must not be a 304 or a range), with the client's other headers.
    async fn fetch_avatar(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<(response::Parts, Incoming, Exchange), ProxyError> {
        let (mut parts, _unused_body) = request.into_parts();
        parts.method = Method::GET;
        policy::prepare_fill_request(&mut parts.headers);
        let authorized = parts.headers.contains_key(header::AUTHORIZATION);
        self.upstream.prepare_request(&mut parts, client)?;
        let request_time = self.cache.clock().system_now();
        let response = self
            .send(Request::from_parts(parts, Body::Empty), record)
            .await?;
        let exchange = Exchange {
            request_time,
            response_time: self.cache.clock().system_now(),
            authorized,
        };
        let (mut parts, body) = response.into_parts();
        upstream::prepare_response(&mut parts);
        Ok((parts, body, exchange))
    }

    /// An avatar request the cache may not answer (`nocache`, a non-canonical id): forwarded as it came.
    async fn bypass(
        &self,
        request: Request<Incoming>,
        reason: Bypass,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        record.cache = Some(CacheStatus {
            detail: Some(reason.as_str()),
            ..CacheStatus::new(Outcome::Bypass)
        });
        let response = self.forward(request, client, record).await?;
        if let Some(status) = &mut record.cache {
            status.fwd_status = Some(response.status());
        }
        Ok(response)
    }

    /// Phase 3 for everything else: the request streams to the upstream and the response streams back.
    async fn forward(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        self.upstream.prepare_request(&mut parts, client)?;
        let response = self
            .send(Request::from_parts(parts, Body::Stream(body)), record)
            .await?;
        let (mut parts, body) = response.into_parts();
        upstream::prepare_response(&mut parts);
        Ok(Response::from_parts(parts, Body::Stream(body)))
    }

    async fn send(
        &self,
        request: Request<Body>,
        record: &mut AccessRecord,
    ) -> Result<Response<Incoming>, ProxyError> {
        let started = Instant::now();
        let result = self.upstream.send(request).await;
        record.upstream_time = Some(started.elapsed());
        result
    }

    /// A stored response as this client gets it: current `Age`, and the body unless it asked with `HEAD`.
    fn serve_stored(
        &self,
        entry: &CachedResponse,
        head_only: bool,
        mut status: CacheStatus,
        record: &mut AccessRecord,
    ) -> Response<Body> {
        let now = self.cache.clock().now();
        status.ttl = Some(entry.ttl(now).as_secs());
        record.cache = Some(status);
        let body = if head_only {
            Body::Empty
        } else {
            Body::full(entry.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(entry.age(now)));
        response
    }
}

/// An upstream avatar answer passed on without storing it.
fn not_stored(
    parts: response::Parts,
    body: Body,
    head_only: bool,
    reason: Option<NotStored>,
    record: &mut AccessRecord,
) -> Response<Body> {
    record.cache = Some(CacheStatus {
        fwd_status: Some(parts.status),
        detail: reason.map(NotStored::as_str),
        ..CacheStatus::new(Outcome::Miss)
    });
    // For HEAD the GET's body is dropped unread: the client asked for headers only.
    let body = if head_only { Body::Empty } else { body };
    Response::from_parts(parts, body)
}

/// Phase 5: every avatar response says what the cache did.
fn response_filter(parts: &mut response::Parts, record: &AccessRecord) {
    let Some(status) = record.cache else {
        return;
    };
    parts
        .headers
        .insert(CACHE_STATUS.clone(), status.header_value());
    parts.headers.insert(X_CACHE.clone(), status.x_cache());
}

fn log_error(err: &ProxyError, record: &AccessRecord) {
    let cause = std::error::Error::source(err).map(ToString::to_string);
    if err.is_client_fault() {
        tracing::info!(error = %err, cause, method = %record.method(), path = record.path(), "request rejected");
    } else {
        tracing::warn!(error = %err, cause, method = %record.method(), path = record.path(), "upstream request failed");
    }
}
