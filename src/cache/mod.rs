//! The avatar cache facade used by `proxy.rs`: lookup, admission of upstream answers, and what a stored
//! response looks like when served. Policy (`policy.rs`) and storage (`store.rs`) stay apart beneath it.

pub mod policy;
pub mod status;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, response};

use crate::config::CacheConfig;
use policy::{AvatarKey, Freshness, Limits};
use store::{Claim, FillGuard, FillWaiter, Store, Stored};

pub use status::CacheStatus;

/// The in-memory avatar cache.
pub struct AvatarCache {
    /// Entries by [`AvatarKey`], bounded in bytes.
    store: Store<Arc<CachedResponse>>,
    /// Size and TTL limits from `[cache]`.
    limits: Limits,
    /// The time source for freshness; manual in tests.
    clock: Clock,
}

/// What a lookup found.
pub enum Lookup<'c> {
    /// A fresh stored response.
    Hit(Arc<CachedResponse>),
    /// Nothing usable and nobody fetching it: the caller fetches and reports through the guard.
    Fill(Fill<'c>),
    /// Another request is fetching it: wait for that.
    Wait(FillWaiter<Arc<CachedResponse>>),
}

/// A claimed fill: exactly one per key at a time.
pub type Fill<'c> = FillGuard<'c, Arc<CachedResponse>>;

/// A stored avatar response: status, end-to-end headers and the whole body, with its freshness.
#[derive(Debug)]
pub struct CachedResponse {
    /// Upstream status (200, 301, 302 or 404).
    pub status: StatusCode,
    /// Upstream headers, hop-by-hop ones already removed; `Age` is recomputed when served.
    pub headers: HeaderMap,
    /// The whole body; cloning it is a reference count, not a copy.
    pub body: Bytes,
    /// When it was stored, on the cache clock.
    stored_at: Instant,
    /// Age when stored, plus freshness left then (RFC 9111 §4.2).
    freshness: Freshness,
}

impl AvatarCache {
    /// A cache with the configured limits and the system clock.
    pub fn new(config: &CacheConfig, clock: Clock) -> Self {
        Self {
            store: Store::new(config.capacity),
            limits: Limits {
                max_object_size: config.max_object_size,
                negative_ttl: config.negative_ttl,
            },
            clock,
        }
    }

    /// Finds a fresh entry, or claims or joins the fill for it.
    pub fn lookup(&self, key: AvatarKey<'_>) -> Lookup<'_> {
        let now = self.clock.now();
        if let Some(entry) = self.store.get(key.as_str()).filter(|e| e.is_fresh(now)) {
            return Lookup::Hit(entry);
        }
        match self.store.claim(key.as_str()) {
            Claim::Leader(guard) => Lookup::Fill(guard),
            Claim::Follower(waiter) => Lookup::Wait(waiter),
        }
    }

    /// Size and TTL limits, for admission decisions.
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
        headers.remove(http::header::AGE);
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        Arc::new(CachedResponse {
            status: parts.status,
            headers,
            body,
            stored_at: self.clock.now(),
            freshness,
        })
    }

    /// Drops the entry for a key, if any.
    pub fn purge(&self, key: AvatarKey<'_>) {
        self.store.remove(key.as_str());
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
        self.freshness
            .fresh_for
            .saturating_sub(now.saturating_duration_since(self.stored_at))
    }

    /// Current age at `now` (RFC 9111 §4.2.3: age on arrival plus time resident here), in whole seconds.
    pub fn age(&self, now: Instant) -> u64 {
        (self.freshness.initial_age + now.saturating_duration_since(self.stored_at)).as_secs()
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
        self.freshness.fresh_for
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
