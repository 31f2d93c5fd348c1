//! The avatar cache facade used by `proxy.rs`: lookup, admission of upstream answers, and what a stored
//! response looks like when served. Policy (`policy.rs`) and storage (`store.rs`) stay apart beneath it.

mod clock;
mod counters;
mod directives;
mod entry;
pub mod invalidation;
pub mod policy;
pub mod request;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod vary;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::HeaderName;

use store::{Claim, FillGuard, FillWaiter, Store};

pub use crate::body::{Copying, Keeper};
pub use clock::Clock;
pub use counters::Counts;
pub use entry::{CachedResponse, Staleness, Stored, VaryIndex};
pub use invalidation::{Invalidation, Publisher};
pub use status::CacheStatus;

/// The in-memory cache shared by every rule.
pub struct Cache {
    /// Entries by key (see [`policy::AvatarKey`] and [`policy::http_key`]), bounded in bytes.
    store: Store<Stored>,
    /// The time source for freshness; manual in tests.
    clock: Clock,
    /// How requests on cached routes were answered since start, for `/stats`.
    counters: counters::Counters,
    /// Makes the copies of bodies to store, on a thread of its own (see [`Keeper`]).
    keeper: Keeper,
    /// Where the invalidations this instance performs are shared, when clustered.
    publisher: OnceLock<Publisher>,
    /// The freshness cap in milliseconds ([`NO_CAP`]: none), set while a clustered instance cannot read the
    /// other instances' invalidations: a stored response is fresh at most this long after it was stored or
    /// validated. One relaxed load per lookup; the cluster's reader sets and clears it.
    freshness_cap: AtomicU64,
}

/// [`Cache::freshness_cap`] when nothing caps freshness.
const NO_CAP: u64 = u64::MAX;

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
    /// Nothing servable: this request fetches it, or waits for the one that does.
    Miss(Miss),
}

/// A lookup that found nothing servable.
pub enum Miss {
    /// Nobody is fetching it: this request fetches, revalidating `stale` if there is one.
    Fill {
        /// The claim on the key.
        fill: Fill,
        /// The stored, stale response: its validators go upstream, and it may answer if the upstream fails.
        stale: Option<Arc<CachedResponse>>,
    },
    /// Another request is fetching it: wait for that.
    Wait {
        /// The wait on the other request's fill.
        waiter: FillWaiter<Stored>,
        /// The stored, stale response, which may answer if the fetch fails.
        stale: Option<Arc<CachedResponse>>,
    },
}

/// A claimed fill: exactly one per key at a time.
pub type Fill = FillGuard<Stored>;

impl Cache {
    /// A cache of `capacity` bytes.
    pub fn new(capacity: u64, clock: Clock) -> Self {
        Self {
            store: Store::new(capacity),
            clock,
            counters: counters::Counters::default(),
            keeper: Keeper::start(),
            publisher: OnceLock::new(),
            freshness_cap: AtomicU64::new(NO_CAP),
        }
    }

    /// Finds a servable response for `request` under `primary` (following its `Vary` index to the variant),
    /// or claims or joins the fill for it.
    pub fn lookup(&self, primary: &str, request: &HeaderMap) -> Lookup {
        let now = self.clock.now();
        let cap = self.freshness_cap();
        let (key, stored) = self.resolve(primary, request);
        match stored
            .as_ref()
            .map(|entry| entry.staleness_within(now, cap))
        {
            Some(Staleness::Fresh) => Lookup::Fresh(stored.expect("matched Some")),
            Some(Staleness::WhileRevalidate) => {
                let refresh = match self.store.claim(&key) {
                    Claim::Leader(fill) => Some(fill),
                    Claim::Follower(_) => None,
                };
                let entry = stored.expect("matched Some");
                Lookup::StaleWhileRevalidate { entry, refresh }
            }
            _ => self.claim_or_find(&key, stored, now),
        }
    }

    /// Claims the fill for `key`, found without a servable entry a moment ago, or joins the fill under way.
    /// A fill can finish between that lookup and this claim (stored, then unregistered): the key is read
    /// once more after winning the claim, so such a request serves the new entry instead of fetching again.
    fn claim_or_find(&self, key: &str, stale: Option<Arc<CachedResponse>>, now: Instant) -> Lookup {
        match self.store.claim(key) {
            Claim::Leader(fill) => match self.store.get(key) {
                Some(Stored::Response(entry)) if self.is_fresh(&entry, now) => {
                    fill.publish(Some(Stored::Response(Arc::clone(&entry))));
                    Lookup::Fresh(entry)
                }
                _ => Lookup::Miss(Miss::Fill { fill, stale }),
            },
            Claim::Follower(waiter) => Lookup::Miss(Miss::Wait { waiter, stale }),
        }
    }

    /// The response stored under `primary` itself when it is fresh at `now` (on the cache clock); claims
    /// nothing. A key whose responses vary (a `Vary` index) gives `None`.
    pub fn fresh(&self, primary: &str, now: Instant) -> Option<Arc<CachedResponse>> {
        match self.store.get(primary) {
            Some(Stored::Response(entry)) if self.is_fresh(&entry, now) => Some(entry),
            _ => None,
        }
    }

    /// Whether `entry` may be served as fresh at `now`: fresh, and within the freshness cap when one is set.
    pub fn is_fresh(&self, entry: &CachedResponse, now: Instant) -> bool {
        entry.is_fresh_within(now, self.freshness_cap())
    }

    /// Caps freshness (`Some`): every stored response is served from memory at most `cap` after it was
    /// stored or validated, then revalidated; `None` lifts the cap. The cluster sets it while it cannot read
    /// the other instances' invalidations.
    pub fn cap_freshness(&self, cap: Option<Duration>) {
        let millis = cap.map_or(NO_CAP, |cap| {
            u64::try_from(cap.as_millis()).unwrap_or(NO_CAP - 1)
        });
        self.freshness_cap.store(millis, Ordering::Relaxed);
    }

    /// The freshness cap in force, if any.
    pub fn freshness_cap(&self) -> Option<Duration> {
        match self.freshness_cap.load(Ordering::Relaxed) {
            NO_CAP => None,
            millis => Some(Duration::from_millis(millis)),
        }
    }

    /// The request fields the responses stored under `primary` vary on (its `Vary` index), none when they
    /// do not vary or nothing is stored: what a request filling the key must carry besides the target.
    pub fn keyed_fields(&self, primary: &str) -> Vec<HeaderName> {
        match self.store.get(primary) {
            Some(Stored::Vary(index)) => index.names.clone(),
            _ => Vec::new(),
        }
    }

    /// The response stored for `request` under `primary`, whatever its freshness; claims nothing.
    pub fn peek(&self, primary: &str, request: &HeaderMap) -> Option<Arc<CachedResponse>> {
        self.resolve(primary, request).1
    }

    /// The key a request's response lives under (the variant key when the URL varies), and that response.
    fn resolve<'k>(
        &self,
        primary: &'k str,
        request: &HeaderMap,
    ) -> (Cow<'k, str>, Option<Arc<CachedResponse>>) {
        match self.store.get(primary) {
            Some(Stored::Response(entry)) => (Cow::Borrowed(primary), Some(entry)),
            Some(Stored::Vary(index)) => {
                let key = vary::variant_key(primary, &vary::values(&index.names, request));
                let entry = match self.store.get(&key) {
                    Some(Stored::Response(entry)) => Some(entry),
                    _ => None,
                };
                (Cow::Owned(key), entry)
            }
            None => (Cow::Borrowed(primary), None),
        }
    }

    /// Stores a filled response under `primary` (or under its variant key, with the `Vary` index under
    /// `primary`) and hands it to the fill's waiters. A fill a purge overtook stores nothing (its waiters,
    /// which asked before the purge, still get it).
    pub fn complete(&self, fill: Fill, primary: &str, entry: Arc<CachedResponse>) {
        fill.store_if_current(|| self.insert(primary, Arc::clone(&entry)));
        fill.publish(Some(Stored::Response(entry)));
    }

    /// Replaces the response `stored` that `request` found under `primary` with `updated`, unless it is not
    /// stored there any more (purged, or replaced by a fill) since it was read.
    pub fn update(
        &self,
        primary: &str,
        request: &HeaderMap,
        stored: &Arc<CachedResponse>,
        updated: Arc<CachedResponse>,
    ) {
        self.store.without_purges(|| {
            let current = self.resolve(primary, request).1;
            if current.is_some_and(|current| Arc::ptr_eq(&current, stored)) {
                self.insert(primary, updated);
            }
        });
    }

    /// Stores a response under `primary`, or under its variant key with the `Vary` index under `primary`.
    pub fn insert(&self, primary: &str, entry: Arc<CachedResponse>) {
        match (entry.vary_index(), &entry.vary) {
            (Some(index), Some(vary)) => {
                self.store.insert(primary, Stored::Vary(Arc::new(index)));
                let key = vary::variant_key(primary, &vary.1);
                self.store.insert(&key, Stored::Response(entry));
            }
            _ => self.store.insert(primary, Stored::Response(entry)),
        }
    }

    /// Drops what is stored under `primary`, every variant included, on this instance only: upkeep of one
    /// entry (a `HEAD` showed it outdated), not news for other instances (see [`Cache::invalidate`]).
    pub fn purge(&self, primary: &str) {
        self.purge_key(primary);
    }

    fn purge_key(&self, primary: &str) {
        if let Some(Stored::Vary(_)) = self.store.get(primary) {
            let primary = primary.to_owned();
            self.store
                .remove_if(move |key| vary::primary_of(key) == primary);
        }
        self.store.remove(primary);
    }

    /// Requests waiting right now on the fill of `key`.
    pub fn waiters(&self, key: &str) -> usize {
        self.store.waiters(key)
    }

    /// The most bytes it holds (`cache.capacity`).
    pub fn capacity(&self) -> u64 {
        self.store.capacity()
    }

    /// Entries and bytes held, after running pending maintenance.
    pub fn usage(&self) -> (u64, u64) {
        self.store.sync();
        (self.store.entry_count(), self.store.weighted_size())
    }

    /// Entries evicted for space so far (count as of the last [`Cache::usage`]).
    pub fn evictions(&self) -> u64 {
        self.store.evictions()
    }

    /// The cache clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The keeper thread, for the copy of a body to store.
    pub fn keeper(&self) -> &Keeper {
        &self.keeper
    }

    /// Counts one answered request on a cached route.
    pub fn count(&self, outcome: status::Outcome) {
        self.counters.count(outcome);
    }

    /// The outcome counters now.
    pub fn counts(&self) -> Counts {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Response;

    use super::*;
    use crate::cache::policy::{Freshness, Limits};

    fn fresh_entry(now: Instant) -> Stored {
        let (parts, ()) = Response::new(()).into_parts();
        let freshness = Freshness::fresh(Duration::from_secs(60));
        let limits = Limits::AVATAR_DEFAULTS;
        let body = bytes::Bytes::from_static(b"avatar");
        Stored::Response(Arc::new(CachedResponse::new(
            &parts,
            body,
            freshness,
            &limits,
            &HeaderMap::new(),
            now,
        )))
    }

    #[test]
    fn a_freshness_cap_makes_an_entry_held_that_long_revalidate() {
        let clock = Clock::manual();
        let cache = Cache::new(1 << 20, clock.clone());
        let Stored::Response(entry) = fresh_entry(clock.now()) else {
            unreachable!()
        };
        cache.insert("k", entry);
        clock.advance(Duration::from_secs(30));
        cache.cap_freshness(Some(Duration::from_secs(30)));
        assert!(cache.fresh("k", clock.now()).is_none(), "held for the cap");
        assert!(matches!(
            cache.lookup("k", &HeaderMap::new()),
            Lookup::Miss(Miss::Fill { stale: Some(_), .. })
        ));
        cache.cap_freshness(None);
        assert!(cache.fresh("k", clock.now()).is_some(), "60 s of max-age");
        assert_eq!(cache.freshness_cap(), None);
    }

    #[test]
    fn a_fill_that_finished_since_the_lookup_is_served_not_fetched_again() {
        let cache = Cache::new(1 << 20, Clock::system());
        let now = cache.clock().now();
        // The lookup missed; before its claim, another request's fill stored the entry and let go of the key.
        cache.store.insert("k", fresh_entry(now));
        assert!(matches!(
            cache.claim_or_find("k", None, now),
            Lookup::Fresh(_)
        ));
        // No fill is left claimed on the key, and a key that is really missing is claimed for a fill.
        assert!(matches!(cache.store.claim("k"), Claim::Leader(_)));
        assert!(matches!(
            cache.claim_or_find("absent", None, now),
            Lookup::Miss(Miss::Fill { .. })
        ));
    }

    #[test]
    fn an_update_of_a_response_purged_since_it_was_read_stores_nothing() {
        let cache = Cache::new(1 << 20, Clock::system());
        let now = cache.clock().now();
        let request = HeaderMap::new();
        let Stored::Response(read) = fresh_entry(now) else {
            unreachable!()
        };
        let Stored::Response(updated) = fresh_entry(now) else {
            unreachable!()
        };
        cache.insert("k", Arc::clone(&read));
        cache.purge("k");
        cache.update("k", &request, &read, Arc::clone(&updated));
        assert!(cache.peek("k", &request).is_none(), "purged stays purged");

        cache.insert("k", Arc::clone(&read));
        cache.update("k", &request, &read, Arc::clone(&updated));
        let current = cache.peek("k", &request).expect("updated");
        assert!(Arc::ptr_eq(&current, &updated));
    }
}
