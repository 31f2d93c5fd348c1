//! The request path, as named phases in request order. The order is written once, in [`Proxy::handle`] and
//! `Proxy::route`; each phase is a short function, here or in the files beside this one.
//!
//! 1. request filter (`route`): refuse what no path may see (`check_request`: an HTTP/2 field list the
//!    framing guard's rules refuse, an invalid host on any protocol), classify the request (`route.rs`) and
//!    take its path.
//! 2. cache lookup (`lookup.rs`): a fresh avatar is answered from memory, a stale one within
//!    `stale-while-revalidate` too (refreshed in the background); otherwise one request per key fills it.
//! 3. forward upstream: everything else streams through (`forward.rs`); a fill asks for the whole avatar, with
//!    `If-Modified-Since` when it revalidates a stored copy (`fill.rs`).
//! 4. cache admit (`admit.rs`): the answer is stored if the policy allows it; a 304 refreshes the stored copy;
//!    an upstream failure may be answered with the stale copy (`stale-if-error`, `answer.rs`).
//! 5. observe (`observe.rs`): a confirmed avatar change, or a `nocache` answer that differs from the stored
//!    copy, drops that copy.
//! 6. `response_filter`: `Cache-Status`/`X-Cache` on every avatar response.
//! 7. logging: one access event when the body ends (`access_log.rs`); errors are logged once, here; the
//!    request metrics (`metrics.rs`) are counted here too. Upstream exchanges are measured in `send`, and
//!    upstream failures counted where they happen, also when a stale copy hides them from the client.
//!
//! `express.rs` is phases 2, 6 and 7 once more, for a fresh avatar hit the express lane answers without hyper.

mod admit;
mod answer;
mod express;
mod fill;
mod forward;
pub mod hit;
mod lookup;
mod observe;

use std::convert::Infallible;
use std::sync::Arc;

use http::header;
use http::{Request, Response, Version, response};
use hyper::body::Incoming;

use crate::access_log::{AccessRecord, LoggedBody};
use crate::body::Body;
use crate::cache::{Cache, Clock};
use crate::config::{Config, RuleConfig, RuleKind};
use crate::error::ProxyError;
use crate::framing;
use crate::health::Health;
use crate::host;
use crate::metrics::Metrics;
use crate::reload::Live;
use crate::route::{self, Route};
use crate::upstream::{ClientInfo, Upstream};
use hit::{CACHE_STATUS, X_CACHE};

/// Shared state of the request path: the running configuration (upstream client included), the cache and its
/// rules, and what the admin listener reports.
pub struct Proxy {
    /// The configuration in force and the upstream client built from it; swapped whole on reload.
    live: Arc<Live>,
    /// The cache, shared by every rule.
    cache: Cache,
    /// The cache rules, in order (`cache.rules`); fixed for the life of the process, like the cache.
    rules: Vec<RuleConfig>,
    /// Index of the avatar rule in `rules`, if there is one.
    avatar_rule: Option<usize>,
    /// Counters and histograms for `/metrics`.
    metrics: Metrics,
    /// Readiness for `/readyz`: draining, upstream answering.
    health: Health,
}

impl Proxy {
    /// The proxy for a configuration, on the system clock.
    pub fn new(config: &Config) -> Arc<Self> {
        Self::with_clock(config, Clock::system())
    }

    /// The proxy with a given cache clock (tests move a manual clock instead of sleeping).
    pub fn with_clock(config: &Config, clock: Clock) -> Arc<Self> {
        let rules = config.cache.rules.clone();
        Arc::new(Self {
            live: Arc::new(Live::new(config.clone())),
            cache: Cache::new(config.cache.capacity, clock),
            avatar_rule: rules.iter().position(|r| r.kind == RuleKind::Avatar),
            rules,
            metrics: Metrics::new(),
            health: Health::default(),
        })
    }

    /// The cache, for inspection and purging.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cache rules, in order.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// The running configuration, for reloading it and for what reads it per connection.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Readiness state.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The upstream client in force. One exchange prepares and sends with the same one, so a reload in
    /// between cannot split it.
    fn upstream(&self) -> Arc<Upstream> {
        self.live.upstream()
    }

    /// The service hyper runs for each request. It never fails: an error becomes a response here and is
    /// logged once. Takes the `Arc` so a background refresh can outlive the request.
    pub async fn handle(
        self: &Arc<Self>,
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
        // The final response is decided: an upstream 1xx from now on would follow it (RFC 9110 §15.2).
        if let Some(interim) = &client.interim {
            interim.seal();
        }
        let (mut parts, body) = response.into_parts();
        response_filter(&mut parts, &record);
        let outcome = record.cache.map(|status| status.outcome);
        self.count(record.rule, outcome, parts.status);
        let body = record.finish(parts.status, body, self.access_logging());
        Ok(Response::from_parts(parts, body))
    }

    /// Whether access events are written: configured, and the log filter lets them through.
    fn access_logging(&self) -> bool {
        self.live.load().config.log.access_log
            && tracing::enabled!(target: "access", tracing::Level::INFO)
    }

    /// Phase 1, the request filter: classification, and the choice of path. Forwarding futures are boxed: the
    /// upstream client's state is large, and inline it would make every request's future (a cache hit's too)
    /// that large, copied each time hyper moves it.
    async fn route(
        self: &Arc<Self>,
        request: Request<Incoming>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        check_request(&request)?;
        // The route borrows the target; a Uri clone shares its bytes.
        let uri = request.uri().clone();
        match route::classify(request.method(), &uri, request.headers(), &self.rules) {
            Route::Avatar(key) => {
                record.rule = Some(RuleKind::Avatar);
                let rule = self
                    .avatar_rule
                    .expect("an avatar route implies an avatar rule");
                self.serve_cached(request, rule, key.as_str(), client, record)
                    .await
            }
            Route::Http { rule, key } => {
                record.rule = Some(RuleKind::Http);
                self.serve_cached(request, rule, &key, client, record).await
            }
            Route::AvatarBypass { reason, key } => {
                record.rule = Some(RuleKind::Avatar);
                let method = request.method().clone();
                let response = Box::pin(self.bypass(request, reason, client, record)).await?;
                Ok(self.watch_bypass(&method, response, reason, key))
            }
            Route::RuleBypass(kind, reason) => {
                record.rule = Some(kind);
                Box::pin(self.bypass(request, reason, client, record)).await
            }
            Route::AvatarChange(change) => {
                let authorization = request.headers().get(header::AUTHORIZATION).cloned();
                let response = Box::pin(self.forward(request, client, record)).await?;
                self.observe_change(change, authorization.as_ref(), response)
                    .await
            }
            Route::Unsafe => {
                let host = route::request_host(&uri, request.headers()).map(str::to_owned);
                let response = Box::pin(self.forward(request, client, record)).await?;
                self.invalidate_after_unsafe(&uri, host.as_deref(), &response);
                Ok(response)
            }
            Route::Pass => Box::pin(self.forward(request, client, record)).await,
        }
    }
}

/// Phase 1, first: what no path may see. An HTTP/2 field list is held to the rules the framing guard holds
/// HTTP/1.1 heads to (the guard sees no HTTP/2), and every request's host is checked ([`host::effective`]),
/// so the cache key, invalidation and the upstream `Host` only ever read a valid one. A few comparisons,
/// no allocation.
fn check_request<B>(request: &Request<B>) -> Result<(), ProxyError> {
    if request.version() == Version::HTTP_2 {
        framing::check_http2(request.uri(), request.headers())
            .map_err(|violation| ProxyError::MalformedRequest(violation.as_str()))?;
    }
    host::effective(request.uri(), request.headers())
        .map_err(|err| ProxyError::MalformedRequest(err.as_str()))?;
    Ok(())
}

/// Phase 6: every response a rule matched says what the cache did (a hit's head has it already, in its
/// place, `hit.rs`).
fn response_filter(parts: &mut response::Parts, record: &AccessRecord) {
    let Some(status) = record.cache.filter(|_| !record.labelled) else {
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
