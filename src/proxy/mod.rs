//! The request path, as named phases in request order. The order is written once, in [`Proxy::handle`], and
//! each phase has a file of its own; the numbers are those of `lib.rs` ("Life of a request") and README's
//! "Layout".
//!
//! 1. accept: before this module (`server.rs`, the framing guard). The express lane answers a plain `GET`
//!    of a fresh avatar there, without hyper: phases 2, 3, 6 and 7 in `express.rs`.
//! 2. classify (`classify.rs`): refuse what no path may see (an HTTP/2 field list the framing guard's rules
//!    refuse, an invalid host on any protocol), then `route::classify`: a cache rule's key, or a route to
//!    forward.
//! 3. lookup (`lookup.rs`): a fresh entry answers, a stale one within `stale-while-revalidate` too
//!    (refreshed in the background); a `HEAD` under an `http` rule is answered from the stored `GET` or
//!    forwarded; anything else misses.
//! 4. fill (`fill.rs`) or forward (`forward.rs`): one upstream request per key fills the cache (the whole
//!    representation, with the stored validators when it revalidates) while the others wait for it;
//!    everything the cache does not answer streams through. Every upstream exchange goes through `send`
//!    (`forward.rs`), measured there, and upstream failures are counted where they happen, also when a
//!    stale copy hides them from the client.
//! 5. admit (`admit.rs`): the fill's answer is stored if the policy allows it; a 304 refreshes the stored
//!    copy.
//! 6. answer (`answer.rs`): the stored response (rendered by `hit.rs`, the same bytes as the express lane's),
//!    the upstream's answer, or the stale copy when the upstream failed (`stale-if-error`).
//! 7. observe (`observe.rs`): invalidation (a confirmed avatar change, a `nocache` answer that differs from
//!    the stored copy, an unsafe method's answer, watched as they pass in phase 4); `Cache-Status`/`X-Cache`
//!    on every answer a rule matched; the counters and request metrics (both lanes count in one place); one
//!    access event when the body ends (`access_log.rs`). Errors become responses, logged once, in `handle`.

mod admit;
mod answer;
mod classify;
mod express;
mod fill;
mod forward;
pub mod hit;
mod lookup;
mod observe;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::access_log::{AccessRecord, LoggedBody};
use crate::body::Body;
use crate::cache::{Cache, Clock};
use crate::config::{Config, RuleConfig, RuleKind};
use crate::error::ProxyError;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::reload::Live;
use crate::route::Route;
use crate::upstream::{ClientInfo, Upstream};
use lookup::{Cached, Found};

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
            metrics: if config.cluster.is_some() {
                Metrics::clustered()
            } else {
                Metrics::new()
            },
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

    /// The service hyper runs for each request: the phases after accept (`server.rs`), in order. It never
    /// fails: an error in any phase becomes the response here, logged once. Takes the `Arc` so a background
    /// refresh can outlive the request. What waits on the upstream is boxed: those futures are large, and
    /// inline they would make every request's future (a hit's too) that large, copied each time hyper moves it.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request<Incoming>,
        client: ClientInfo,
    ) -> Result<Response<LoggedBody>, Infallible> {
        let (method, version) = (request.method(), request.version());
        let mut record = AccessRecord::start(method, request.uri(), version, client.addr);
        let uri = request.uri().clone(); // the route borrows it; a clone shares its bytes
        let answered = async {
            // 2. classify: under a cache rule, or forwarded as the route says (4. forward, 7. observe)
            let (rule, key) = match self.classify(&request, &uri, &mut record)? {
                Route::Avatar(key) => (self.avatar_rule(), Cow::Borrowed(key.as_str())),
                Route::Http { rule, key } => (rule, key),
                route => {
                    let forwarded = self.forward_route(request, route, &uri, &client, &mut record);
                    return Box::pin(forwarded).await;
                }
            };
            let cached = Cached::new(request, rule, &key);
            // 3. lookup, and 6. answer from memory
            let miss = match self.lookup(&cached, &client) {
                Found::Stored(entry, status) => {
                    return Ok(self.serve_stored(&entry, &cached.conditions, status, &mut record));
                }
                Found::Head => {
                    return Box::pin(self.serve_head(&cached, &client, &mut record)).await;
                }
                Found::Miss(miss) => miss,
            };
            // 4. fill and 5. admit, once per key however many wait; 6. answer
            let (fetched, stale) = Box::pin(self.fill(miss, &cached, &client, &mut record)).await;
            self.answer(fetched, stale.as_ref(), &cached.conditions, &mut record)
        };
        let response = answered
            .await
            .unwrap_or_else(|err| error_response(&err, &record));
        // The final response is decided: an upstream 1xx from now on would follow it (RFC 9110 §15.2).
        if let Some(interim) = &client.interim {
            interim.seal();
        }
        // 7. observe
        Ok(self.observe(response, record))
    }

    /// Whether access events are written: configured, and the log filter lets them through.
    fn access_logging(&self) -> bool {
        self.live.load().config.log.access_log && crate::access_log::filter_allows()
    }
}

/// An error of any phase as the client's response, logged here and only here.
fn error_response(err: &ProxyError, record: &AccessRecord) -> Response<Body> {
    let cause = std::error::Error::source(err).map(ToString::to_string);
    if err.is_client_fault() {
        tracing::info!(error = %err, cause, method = %record.method(), path = record.path(), "request rejected");
    } else {
        tracing::warn!(error = %err, cause, method = %record.method(), path = record.path(), "upstream request failed");
    }
    err.to_response()
}
