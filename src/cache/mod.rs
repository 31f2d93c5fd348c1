//! The avatar cache facade used by `proxy.rs`: lookup, admission of upstream answers, and what a stored
//! response looks like when served. Policy (`policy.rs`) and storage (`store.rs`) stay apart beneath it.

pub mod policy;
pub mod serve;
pub mod status;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header, response};

use crate::config::CacheConfig;
use policy::{AvatarKey, Freshness, Limits};
use store::{Claim, FillGuard, FillWaiter, Store, Stored};

pub use status::CacheStatus;

/// The in-memory avatar cache.
pub struct AvatarCache {
    /// Entries by [`AvatarKey`], bounded in bytes.
    store: Store<Arc<CachedResponse>>,
    /// Size, TTL and stale-window limits from `[cache]`.
    limits: Limits,
    /// The time source for freshness; manual in tests.
    clock: Clock,
    /// How avatar requests were answered since start, for `/stats`.
    counters: Counters,
}

/// Outcome counters, one per [`Outcome`] family.
#[derive(Debug, Default)]
struct Counters {
    hit: AtomicU64,
    stale: AtomicU64,
    revalidated: AtomicU64,
    coalesced: AtomicU64,
    miss: AtomicU64,
    bypass: AtomicU64,
}

/// A snapshot of the outcome counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Served fresh from memory.
    pub hit: u64,
    /// Served stale from memory (`stale-while-revalidate`, `stale-if-error`).
    pub stale: u64,
    /// Served from memory after Cloudreve confirmed it with a 304.
    pub revalidated: u64,
    /// Served another request's fetch.
    pub coalesced: u64,
    /// Fetched from Cloudreve (stored or not).
    pub miss: u64,
    /// Not looked up (`nocache`, non-canonical ids).
    pub bypass: u64,
}

impl Counts {
    /// Avatar requests counted, bypasses included.
    pub fn requests(&self) -> u64 {
        self.hit + self.stale + self.revalidated + self.coalesced + self.miss + self.bypass
    }

    /// Share of looked-up avatar requests whose body came from memory rather than from Cloudreve (hits,
    /// stale answers, revalidations and coalesced waits); `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let from_memory = self.hit + self.stale + self.revalidated + self.coalesced;
        let looked_up = from_memory + self.miss;
        (looked_up > 0).then(|| from_memory as f64 / looked_up as f64)
    }
}

/// What a lookup found, and what the request must do about it.
pub enum Lookup {
    /// A fresh stored response: serve it.
    Fresh(Arc<CachedResponse>),
    /// Stale, but within its `stale-while-revalidate` window: serve it now. `refresh` is the claim to
    /// refresh it in the background, when no other request is already doing so (RFC 5861 §3).
    StaleWhileRevalidate {
        /// The stale entry to serve.
        entry: Arc<CachedResponse>,
        /// Present when this request must start the one refresh.
        refresh: Option<Fill>,
    },
    /// Nothing servable and nobody fetching: this request fetches, revalidating `stale` if there is one.
    Fill {
        /// The claim on the key.
        fill: Fill,
        /// The stored, stale response: its validator goes upstream, and it may answer if the upstream fails.
        stale: Option<Arc<CachedResponse>>,
    },
    /// Another request is fetching it: wait for that.
    Wait {
        /// The wait on the other request's fill.
        waiter: FillWaiter<Arc<CachedResponse>>,
        /// The stored, stale response, which may answer if the fetch fails.
        stale: Option<Arc<CachedResponse>>,
    },
}

/// A claimed fill: exactly one per key at a time.
pub type Fill = FillGuard<Arc<CachedResponse>>;

/// A stored avatar response: status, end-to-end headers and the whole body, with its freshness.
#[derive(Debug)]
pub struct CachedResponse {
    /// Upstream status (200, 301, 302 or 404).
    pub status: StatusCode,
    /// Upstream headers, hop-by-hop ones already removed, plus a minted strong `ETag` for a 200 without one;
    /// `Age` is recomputed when served.
    pub headers: HeaderMap,
    /// The whole body; cloning it is a reference count, not a copy.
    pub body: Bytes,
    /// Hash of the body (xxh3-128), the source of the minted `ETag` and of change detection.
    pub body_hash: u128,
    /// `Last-Modified`, parsed, for the client's `If-Modified-Since` and `If-Range`.
    pub last_modified: Option<SystemTime>,
    /// When it was stored, on the cache clock.
    stored_at: Instant,
    /// Age when stored, freshness left then, and the stale windows (RFC 9111 §4.2, RFC 5861).
    freshness: Freshness,
    /// How long the store keeps it (fresh, then stale-servable or revalidatable).
    retain_for: Duration,
}

/// Where an entry stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Fresh: serve it.
    Fresh,
    /// Stale within `stale-while-revalidate`: serve it and refresh it in the background.
    WhileRevalidate,
    /// Stale: revalidate before use (it may still answer if the upstream fails, see
    /// [`CachedResponse::may_serve_on_error`]).
    MustRevalidate,
}

impl AvatarCache {
    /// A cache with the configured limits.
    pub fn new(config: &CacheConfig, clock: Clock) -> Self {
        Self {
            store: Store::new(config.capacity),
            limits: Limits {
                max_object_size: config.max_object_size,
                negative_ttl: config.negative_ttl,
                stale_while_revalidate: config.stale_while_revalidate,
                stale_if_error: config.stale_if_error,
            },
            clock,
            counters: Counters::default(),
        }
    }

    /// Counts one answered avatar request.
    pub fn count(&self, outcome: status::Outcome) {
        use status::Outcome;
        let counter = match outcome {
            Outcome::Hit => &self.counters.hit,
            Outcome::Stale | Outcome::StaleIfError => &self.counters.stale,
            Outcome::Revalidated => &self.counters.revalidated,
            Outcome::Collapsed => &self.counters.coalesced,
            Outcome::Stored | Outcome::Miss => &self.counters.miss,
            Outcome::Bypass => &self.counters.bypass,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The outcome counters now.
    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counts {
            hit: read(&c.hit),
            stale: read(&c.stale),
            revalidated: read(&c.revalidated),
            coalesced: read(&c.coalesced),
            miss: read(&c.miss),
            bypass: read(&c.bypass),
        }
    }

    /// Finds a servable entry, or claims or joins the fill for the key.
    pub fn lookup(&self, key: AvatarKey<'_>) -> Lookup {
        let now = self.clock.now();
        let stored = self.store.get(key.as_str());
        let staleness = stored.as_ref().map(|entry| entry.staleness(now));
        match (stored, staleness) {
            (Some(entry), Some(Staleness::Fresh)) => Lookup::Fresh(entry),
            (Some(entry), Some(Staleness::WhileRevalidate)) => {
                let refresh = match self.store.claim(key.as_str()) {
                    Claim::Leader(fill) => Some(fill),
                    Claim::Follower(_) => None,
                };
                Lookup::StaleWhileRevalidate { entry, refresh }
            }
            (stale, _) => match self.store.claim(key.as_str()) {
                Claim::Leader(fill) => Lookup::Fill { fill, stale },
                Claim::Follower(waiter) => Lookup::Wait { waiter, stale },
            },
        }
    }

    /// Size, TTL and stale-window limits, for admission decisions.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The cache clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Builds the entry for a response that [`policy::admit`] accepted and whose body was read whole.
    pub fn entry(
        &self,
        parts: &response::Parts,
        body: Bytes,
        freshness: Freshness,
    ) -> Arc<CachedResponse> {
        let mut headers = detached(&parts.headers);
        // Age is recomputed on every hit; the length is now known exactly, which a HEAD answer needs even
        // when the upstream sent the body chunked.
        headers.remove(header::AGE);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let body_hash = xxhash_rust::xxh3::xxh3_128(&body);
        if parts.status == StatusCode::OK && !headers.contains_key(header::ETAG) {
            // A strong validator for the client's If-None-Match / If-Range, answered here; it is never sent
            // upstream (Cloudreve has none and would ignore If-Modified-Since if it got one).
            let etag = format!("\"{body_hash:032x}\"");
            headers.insert(
                header::ETAG,
                HeaderValue::try_from(etag).expect("hex is ASCII"),
            );
        }
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        Arc::new(CachedResponse {
            status: parts.status,
            headers,
            body,
            body_hash,
            last_modified,
            stored_at: self.clock.now(),
            freshness,
            retain_for: freshness.retain_for(&self.limits),
        })
    }

    /// Drops the entry for a key, if any.
    pub fn purge(&self, key: AvatarKey<'_>) {
        self.store.remove(key.as_str());
    }

    /// Drops every entry.
    pub fn purge_all(&self) {
        self.store.clear();
    }

    /// The entry stored for a key, whatever its freshness.
    pub fn peek(&self, key: AvatarKey<'_>) -> Option<Arc<CachedResponse>> {
        self.store.get(key.as_str())
    }

    /// Requests waiting right now on the fill of `key`.
    pub fn waiters(&self, key: AvatarKey<'_>) -> usize {
        self.store.waiters(key.as_str())
    }

    /// Entries and bytes held, after running pending maintenance.
    pub fn usage(&self) -> (u64, u64) {
        self.store.sync();
        (self.store.entry_count(), self.store.weighted_size())
    }

    /// Entries evicted for space so far (count as of the last [`AvatarCache::usage`]).
    pub fn evictions(&self) -> u64 {
        self.store.evictions()
    }
}

/// A copy of `headers` that owns its values. hyper parses header values as slices of the connection's read
/// buffer (8 KiB and more); storing them as they are would keep that whole buffer alive for every entry.
fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes())
            .expect("a header value stays valid when copied");
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

impl CachedResponse {
    /// Fresh at `now`: younger than its freshness lifetime.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.ttl(now) > Duration::ZERO
    }

    /// Freshness left at `now`.
    pub fn ttl(&self, now: Instant) -> Duration {
        self.freshness.fresh_for.saturating_sub(self.resident(now))
    }

    /// `Cache-Status` `ttl`: whole seconds of freshness left, negative once stale (RFC 9211 §2.5).
    pub fn signed_ttl(&self, now: Instant) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        if self.is_fresh(now) {
            secs(self.ttl(now))
        } else {
            -secs(self.stale_for(now))
        }
    }

    /// How long it has been stale at `now` (zero while fresh).
    pub fn stale_for(&self, now: Instant) -> Duration {
        self.resident(now).saturating_sub(self.freshness.fresh_for)
    }

    /// Whether it may be served, and how, at `now`.
    pub fn staleness(&self, now: Instant) -> Staleness {
        if self.is_fresh(now) {
            Staleness::Fresh
        } else if self.stale_for(now) <= self.freshness.stale_while_revalidate
            && !self.freshness.stale_while_revalidate.is_zero()
        {
            Staleness::WhileRevalidate
        } else {
            Staleness::MustRevalidate
        }
    }

    /// Whether it may answer for an upstream that failed, at `now` (RFC 5861 §4 `stale-if-error`).
    pub fn may_serve_on_error(&self, now: Instant) -> bool {
        self.is_fresh(now) || self.stale_for(now) <= self.freshness.stale_if_error
    }

    /// Current age at `now` (RFC 9111 §4.2.3: age on arrival plus time resident here), in whole seconds.
    pub fn age(&self, now: Instant) -> u64 {
        (self.freshness.initial_age + self.resident(now)).as_secs()
    }

    fn resident(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }
}

/// Rough per-entry bookkeeping cost beyond body and headers (the Arc, the moka node, the key's box).
const ENTRY_OVERHEAD: u64 = 256;

impl Stored for Arc<CachedResponse> {
    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        self.body.len() as u64 + headers as u64 + ENTRY_OVERHEAD
    }

    fn time_to_live(&self) -> Duration {
        self.retain_for
    }
}

/// The time source for freshness. The system clock in production; tests move a manual offset forward
/// instead of sleeping. The offset moves monotonic time only (how long entries have been resident), not the
/// wall clock, which is compared with the upstream's own `Date` headers.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Nanoseconds added to the monotonic clock; `None` for the plain system clock.
    offset: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that runs with the system clock plus whatever [`Clock::advance`] added.
    pub fn manual() -> Self {
        Self {
            offset: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves a manual clock forward. Does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(offset) = &self.offset {
            offset.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Monotonic now, for residence time and freshness deadlines.
    pub fn now(&self) -> Instant {
        match &self.offset {
            None => Instant::now(),
            Some(offset) => Instant::now() + Duration::from_nanos(offset.load(Ordering::Relaxed)),
        }
    }

    /// Wall-clock now, for comparing with `Date` headers (RFC 9111 §4.2.3).
    pub fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn freshness() -> Freshness {
        Freshness {
            fresh_for: Duration::from_secs(60),
            initial_age: Duration::from_secs(5),
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(100),
        }
    }

    #[test]
    fn stored_headers_do_not_keep_the_read_buffer_alive() {
        let buffer = Bytes::from(b"image/png".repeat(1000));
        let shared = HeaderValue::from_maybe_shared(buffer.slice(0..9)).unwrap();
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.headers.insert(http::header::CONTENT_TYPE, shared);
        let cache = AvatarCache::new(&Config::default().cache, Clock::manual());
        let entry = cache.entry(&parts, Bytes::from_static(b"png"), freshness());
        let stored = entry.headers[http::header::CONTENT_TYPE].as_bytes();
        assert_eq!(stored, b"image/png");
        let buffer_range = buffer.as_ptr_range();
        assert!(
            !buffer_range.contains(&stored.as_ptr()),
            "the value must be a copy, not a slice of the buffer"
        );
    }

    #[test]
    fn entry_knows_its_length_and_forgets_upstream_age() {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts
            .headers
            .insert(http::header::AGE, HeaderValue::from_static("5"));
        let cache = AvatarCache::new(&Config::default().cache, Clock::manual());
        let entry = cache.entry(&parts, Bytes::from_static(b"12345"), freshness());
        assert_eq!(entry.headers[http::header::CONTENT_LENGTH], "5");
        assert!(!entry.headers.contains_key(http::header::AGE));
    }

    #[test]
    fn outcomes_are_counted_and_give_the_hit_ratio() {
        use status::Outcome;
        let cache = AvatarCache::new(&Config::default().cache, Clock::manual());
        assert_eq!(cache.counts().hit_ratio(), None);
        for outcome in [
            Outcome::Hit,
            Outcome::Hit,
            Outcome::Stale,
            Outcome::Stored,
            Outcome::Bypass,
        ] {
            cache.count(outcome);
        }
        let counts = cache.counts();
        assert_eq!(
            (counts.hit, counts.stale, counts.miss, counts.bypass),
            (2, 1, 1, 1)
        );
        assert_eq!(counts.requests(), 5);
        assert_eq!(counts.hit_ratio(), Some(0.75), "bypasses are not lookups");
    }

    #[test]
    fn age_and_ttl_follow_the_clock() {
        let clock = Clock::manual();
        let cache = AvatarCache::new(&Config::default().cache, clock.clone());
        let (parts, ()) = http::Response::new(()).into_parts();
        let entry = cache.entry(&parts, Bytes::new(), freshness());
        clock.advance(Duration::from_secs(10));
        let now = clock.now();
        assert_eq!(entry.age(now), 15);
        assert!(
            (49..=50).contains(&entry.ttl(now).as_secs()),
            "real time also passes"
        );
        clock.advance(Duration::from_secs(50));
        assert!(!entry.is_fresh(clock.now()));
    }
}
