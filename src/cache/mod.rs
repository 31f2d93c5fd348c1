//! The avatar cache facade used by `proxy.rs`: lookup, admission of upstream answers, and what a stored
//! response looks like when served. Policy (`policy.rs`) and storage (`store.rs`) stay apart beneath it.

pub mod policy;
pub mod status;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, response};

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
        parts: response::Parts,
        body: Bytes,
        freshness: Freshness,
    ) -> Arc<CachedResponse> {
        let mut headers = parts.headers;
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
