//! Phase 4 for what the cache does not answer: the request streams to the upstream and the response streams
//! back. Also `send`, the one place every upstream exchange goes through (forwards, fills, revalidations,
//! background refreshes), measured there, and the counting of upstream failures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, Uri, header};
use hyper::body::Incoming;

use super::Proxy;
use crate::access_log::AccessRecord;
use crate::body::Body;
use crate::cache::CacheStatus;
use crate::cache::status::Outcome;
use crate::error::ProxyError;
use crate::route::{self, Bypass, Route};
use crate::upstream::{self, ClientInfo, Upstream};

impl Proxy {
    /// Phase 4 for a request the cache does not answer, as its route says; the answers that tell the cache
    /// something are observed on their way (phase 7, `observe.rs`). `handle` boxes this future, once per
    /// request: the upstream client's state is large, and inline it would make every request's future (a
    /// cache hit's too) that large, copied each time hyper moves it.
    pub(super) async fn forward_route(
        self: &Arc<Self>,
        request: Request<Incoming>,
        route: Route<'_>,
        uri: &Uri,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        match route {
            Route::AvatarBypass { reason, key } => {
                let method = request.method().clone();
                let response = self.bypass(request, reason, client, record).await?;
                Ok(self.watch_bypass(&method, response, reason, key))
            }
            Route::RuleBypass(_, reason) => self.bypass(request, reason, client, record).await,
            Route::AvatarChange(change) => {
                let authorization = request.headers().get(header::AUTHORIZATION).cloned();
                let response = self.forward(request, client, record).await?;
                self.observe_change(change, authorization.as_ref(), response)
                    .await
            }
            Route::Unsafe => {
                let host = route::request_host(uri, request.headers()).map(str::to_owned);
                let response = self.forward(request, client, record).await?;
                self.invalidate_after_unsafe(uri, host.as_deref(), &response);
                Ok(response)
            }
            // The cached routes never get here (`handle` looks them up): everything else passes.
            Route::Pass | Route::Avatar(_) | Route::Http { .. } => {
                self.forward(request, client, record).await
            }
        }
    }

    /// A request under a rule that the cache may not answer: forwarded as it came, and said so.
    pub(super) async fn bypass(
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

    /// Phase 4 for everything else: the request streams to the upstream and the response streams back.
    pub(super) async fn forward(
        &self,
        request: Request<Incoming>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let upstream = self.upstream();
        upstream.prepare_request(&mut parts, client)?;
        let (result, elapsed) = self
            .send(&upstream, Request::from_parts(parts, Body::Stream(body)))
            .await;
        record.upstream_time = Some(elapsed);
        let (mut parts, body) = result?.into_parts();
        upstream::prepare_response(&mut parts);
        Ok(Response::from_parts(parts, Body::Stream(body)))
    }

    /// Every upstream exchange goes through here (forwards, fills, revalidations, background refreshes):
    /// it is counted in flight while it waits for the response head, and its latency and outcome feed the
    /// metrics and readiness; a failure is counted here, even when `stale-if-error` answers the client.
    /// Returns the time to the response head (or to the failure).
    pub(super) async fn send(
        &self,
        upstream: &Upstream,
        request: Request<Body>,
    ) -> (Result<Response<Incoming>, ProxyError>, Duration) {
        let _in_flight = self.metrics.upstream_started();
        let started = Instant::now();
        let result = upstream.send(request).await;
        let elapsed = started.elapsed();
        match &result {
            Ok(_) => {
                self.metrics.upstream_answered(elapsed);
                self.health.upstream_answered();
            }
            Err(err) => {
                self.count_upstream_error(err);
                if err.is_upstream_unreachable() {
                    self.health.upstream_failed();
                }
            }
        }
        (result, elapsed)
    }

    /// An upstream body this proxy reads itself (a fill, a change confirmation) broke: counted as the `body`
    /// kind of upstream error, whether the client then gets the error or a stale copy.
    pub(super) fn upstream_body_failed(&self, err: hyper::Error) -> ProxyError {
        let err = ProxyError::UpstreamBody(err);
        self.count_upstream_error(&err);
        err
    }

    /// An upstream body this proxy reads itself stopped coming within `timeout`: counted as the
    /// `body_timeout` kind of upstream error.
    pub(super) fn upstream_body_timed_out(&self, timeout: Duration) -> ProxyError {
        let err = ProxyError::UpstreamBodyTimeout(timeout);
        self.count_upstream_error(&err);
        err
    }

    fn count_upstream_error(&self, err: &ProxyError) {
        if let Some(kind) = err.upstream_kind() {
            self.metrics.upstream_error(kind);
        }
    }
}
