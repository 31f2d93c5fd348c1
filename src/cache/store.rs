//! Cache storage: moka entries bounded in bytes, per-entry expiry, coalesced fills and purge.
//!
//! Knows nothing of HTTP: values are opaque, they only report their weight and time to live.
//!
//! A purge wins over the fills in flight for what it drops: it detaches them (the next request claims a new
//! fill instead of joining one that may bring the old answer) and a detached fill stores nothing, though its
//! waiters still get what it fetched. Purges, and the stores of fills, run under the fills lock, so a fill
//! either stored before the purge (and the purge drops it) or finds itself detached.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use tokio::sync::watch;

/// What the store needs to know about a value.
pub trait Stored: Clone + Send + Sync + 'static {
    /// Bytes the value costs in memory (body, headers, bookkeeping).
    fn weight(&self) -> u64;
    /// How long the value may stay in the store.
    fn time_to_live(&self) -> Duration;
}

/// A byte-bounded key-value store with one in-flight fill per key. Cloning it is cheap and shares the store.
pub struct Store<V: Stored> {
    /// The entries. Weighed in bytes (key plus [`Stored::weight`]); each expires at its own time.
    entries: Cache<Arc<str>, V>,
    /// Keys being fetched right now, with the channel their result is published on. A key is here from the
    /// moment one request claims it until that request finishes or gives up.
    fills: Arc<Mutex<Fills<V>>>,
    /// Entries removed to stay within the byte budget (not expired, replaced or purged ones), for metrics.
    evictions: Arc<AtomicU64>,
    /// While a restore (a snapshot loading) is under way: the keys written or removed since it began, which it
    /// must not bring back or overwrite. `restoring` lets the request path skip the lock when none is.
    touched: Arc<Mutex<Option<Touched>>>,
    /// Whether `touched` is `Some`.
    restoring: Arc<AtomicBool>,
    /// Removals so far (one key, by predicate, or all), so that a snapshot written while one happened is
    /// given up rather than bring the removed entry back.
    removals: Arc<AtomicU64>,
}

/// What changed in the store since a restore began.
#[derive(Default)]
struct Touched {
    /// Keys inserted or removed one by one.
    keys: HashSet<Arc<str>>,
    /// A removal by predicate, or of everything: nothing more may be restored.
    broad: bool,
}

/// What [`Store::restore`] did with one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Stored: the key held nothing, and nothing wrote or removed it since the restore began.
    Inserted,
    /// Not stored: the key holds a value, or was written or removed since the restore began.
    Superseded,
    /// Not stored, nor anything after it: a removal by predicate (a purge of a prefix, or of everything)
    /// happened since the restore began, and what it would have removed cannot be told apart.
    Stopped,
}

/// Keys being fetched, each with the channel its outcome is published on.
type Fills<V> = HashMap<Arc<str>, watch::Sender<FillState<V>>>;

impl<V: Stored> Clone for Store<V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            fills: Arc::clone(&self.fills),
            evictions: Arc::clone(&self.evictions),
            touched: Arc::clone(&self.touched),
            restoring: Arc::clone(&self.restoring),
            removals: Arc::clone(&self.removals),
        }
    }
}

#[derive(Clone)]
enum FillState<V> {
    Pending,
    Done(Option<V>),
}

/// The result of [`Store::claim`].
pub enum Claim<V: Stored> {
    /// Nobody is fetching this key: the caller fetches it and reports through the guard.
    Leader(FillGuard<V>),
    /// Another request is fetching this key: wait for its result.
    Follower(FillWaiter<V>),
}

/// The right, and the duty, to fill one key. Dropping it unfinished releases the waiters with nothing.
/// It owns a handle on the store, so a fill can finish in a background task.
pub struct FillGuard<V: Stored> {
    store: Store<V>,
    key: Arc<str>,
    tx: watch::Sender<FillState<V>>,
}

/// A wait on another request's fill.
pub struct FillWaiter<V: Stored> {
    rx: watch::Receiver<FillState<V>>,
}

struct PerEntryExpiry;

impl<V: Stored> Expiry<Arc<str>, V> for PerEntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &V,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.time_to_live())
    }

    fn expire_after_update(
        &self,
        _key: &Arc<str>,
        value: &V,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.time_to_live())
    }
}

impl<V: Stored> Store<V> {
    /// A store holding at most `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = Arc::clone(&evictions);
        let entries = Cache::builder()
            .name("avatars")
            .max_capacity(capacity)
            .weigher(|key: &Arc<str>, value: &V| {
                let weight = key.len() as u64 + value.weight();
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryExpiry)
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evicted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            entries,
            fills: Arc::new(Mutex::new(HashMap::new())),
            evictions,
            touched: Arc::new(Mutex::new(None)),
            restoring: Arc::new(AtomicBool::new(false)),
            removals: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The value stored under `key`, if any (it may be stale by the caller's rules).
    pub fn get(&self, key: &str) -> Option<V> {
        self.entries.get(key)
    }

    /// Stores a value, replacing any other.
    pub fn insert(&self, key: &str, value: V) {
        self.touch(Some(key));
        self.entries.insert(key.into(), value);
    }

    /// Removes a key, and detaches the fill in flight for it.
    pub fn remove(&self, key: &str) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        self.touch(Some(key));
        let mut fills = self.lock_fills();
        fills.remove(key);
        self.entries.invalidate(key);
    }

    /// Removes every entry, and detaches every fill in flight.
    pub fn clear(&self) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        self.touch(None);
        let mut fills = self.lock_fills();
        fills.clear();
        self.entries.invalidate_all();
    }

    /// Removes every entry whose key satisfies `predicate`, and detaches the fills in flight for such keys.
    /// Removal is immediate for lookups (moka checks the predicate on every read) and the memory is
    /// reclaimed by its maintenance.
    pub fn remove_if(&self, predicate: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        self.touch(None);
        let mut fills = self.lock_fills();
        fills.retain(|key, _| !predicate(key));
        // Only fails when invalidation closures are not enabled, which `new` always does.
        let _ = self
            .entries
            .invalidate_entries_if(move |key, _| predicate(key));
    }

    /// Runs `write` with purges held off: a purge happens wholly before it or wholly after.
    pub fn without_purges<R>(&self, write: impl FnOnce() -> R) -> R {
        let _fills = self.lock_fills();
        write()
    }

    fn lock_fills(&self) -> std::sync::MutexGuard<'_, Fills<V>> {
        self.fills.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Becomes the one request fetching `key`, or joins the one already doing so.
    pub fn claim(&self, key: &str) -> Claim<V> {
        let mut fills = self.lock_fills();
        if let Some(tx) = fills.get(key) {
            return Claim::Follower(FillWaiter { rx: tx.subscribe() });
        }
        let (tx, _) = watch::channel(FillState::Pending);
        fills.insert(key.into(), tx.clone());
        Claim::Leader(FillGuard {
            store: self.clone(),
            key: key.into(),
            tx,
        })
    }

    /// How many requests are waiting on the fill of `key` right now (0 when none is in flight).
    pub fn waiters(&self, key: &str) -> usize {
        let fills = self.lock_fills();
        fills.get(key).map_or(0, watch::Sender::receiver_count)
    }

    /// The most bytes it holds.
    pub fn capacity(&self) -> u64 {
        self.entries.policy().max_capacity().unwrap_or(u64::MAX)
    }

    /// Number of entries (approximate until pending maintenance has run).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Bytes held (approximate until pending maintenance has run).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Entries evicted for space since the store was made (after pending maintenance has run).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Runs moka's pending maintenance (evictions, counters) now; for tests and stats.
    pub fn sync(&self) {
        self.entries.run_pending_tasks();
    }

    /// Every entry held now, with its key (a weakly consistent view: writes made meanwhile may or may not
    /// show). For writing a snapshot.
    pub fn iter(&self) -> impl Iterator<Item = (Arc<str>, V)> + '_ {
        self.entries
            .iter()
            .map(|(key, value)| (Arc::clone(&*key), value))
    }

    /// Removals so far: compared before and after a read of every entry ([`Store::iter`]), it tells whether
    /// one may have been missed.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::SeqCst)
    }

    /// Starts a restore: from now until [`Store::end_restore`], every key written or removed is remembered,
    /// so that [`Store::restore`] never brings back what was removed meanwhile nor overwrites a newer value.
    pub fn begin_restore(&self) {
        *self.touched.lock().unwrap_or_else(PoisonError::into_inner) = Some(Touched::default());
        self.restoring.store(true, Ordering::SeqCst);
    }

    /// Stores a value from before the process started (a snapshot), unless the key holds a value or was
    /// written or removed since [`Store::begin_restore`]. The check and the insert are one step for writers:
    /// a removal that comes after it removes the restored value.
    pub fn restore(&self, key: &str, value: V) -> Restored {
        let touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        match touched.as_ref() {
            Some(touched) if touched.broad => Restored::Stopped,
            Some(touched) if touched.keys.contains(key) => Restored::Superseded,
            // Without a restore begun, nothing is known about what happened to the key: never stored.
            None => Restored::Stopped,
            Some(_) => {
                let entry = self.entries.entry(key.into()).or_insert_with(|| value);
                if entry.is_fresh() {
                    Restored::Inserted
                } else {
                    Restored::Superseded
                }
            }
        }
    }

    /// Ends the restore begun by [`Store::begin_restore`]: writes and removals are no longer remembered.
    pub fn end_restore(&self) {
        self.restoring.store(false, Ordering::SeqCst);
        *self.touched.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Remembers a write or removal of `key` (`None`: a removal by predicate) while a restore is under way.
    /// Taken before the write itself, so a restore that checks after it sees it, and a restore that inserted
    /// before it has its value replaced or removed by it.
    fn touch(&self, key: Option<&str>) {
        if !self.restoring.load(Ordering::SeqCst) {
            return;
        }
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(touched) = touched.as_mut() {
            match key {
                Some(key) => {
                    touched.keys.insert(key.into());
                }
                None => touched.broad = true,
            }
        }
    }

    /// Unregisters the fill publishing on `tx`, unless a purge detached it already (another fill may hold
    /// the key by now).
    fn end_fill(&self, key: &str, tx: &watch::Sender<FillState<V>>) {
        let mut fills = self.lock_fills();
        if fills
            .get(key)
            .is_some_and(|current| current.same_channel(tx))
        {
            fills.remove(key);
        }
    }
}

impl<V: Stored> FillGuard<V> {
    /// Publishes the fill's outcome: `Some` is stored under the fill's key and handed to every waiter, `None`
    /// sends the waiters on their own way at once.
    pub fn finish(self, value: Option<V>) {
        if let Some(value) = &value {
            self.store_if_current(|| self.store.insert(&self.key, value.clone()));
        }
        self.publish(value);
    }

    /// Runs `store` unless a purge detached this fill since it was claimed, with purges held off meanwhile:
    /// what a purge dropped is never stored again by a fill that began before it. Whether it ran.
    pub fn store_if_current(&self, store: impl FnOnce()) -> bool {
        let fills = self.store.lock_fills();
        let current = fills
            .get(&self.key)
            .is_some_and(|tx| tx.same_channel(&self.tx));
        if current {
            store();
        }
        current
    }

    /// Hands the outcome to the waiters without storing anything (the caller stored it where it belongs).
    /// Stored first, then unregistered: a request arriving in between finds the entry or joins this fill.
    pub fn publish(self, value: Option<V>) {
        self.tx.send_replace(FillState::Done(value));
    }

    /// The key this fill is for.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl<V: Stored> FillGuard<V> {
    /// Stores nothing and drops what the store held for the key: the upstream's answer superseded it.
    pub fn discard(self) {
        // Not a purge (the fill stays current), but a removal a restore must not undo.
        self.store.touch(Some(&self.key));
        self.store.entries.invalidate(&self.key);
        self.finish(None);
    }
}

impl<V: Stored> Drop for FillGuard<V> {
    fn drop(&mut self) {
        self.store.end_fill(&self.key, &self.tx);
        // An unfinished fill (error, cancelled request) releases its waiters with nothing.
        self.tx.send_if_modified(|state| match state {
            FillState::Pending => {
                *state = FillState::Done(None);
                true
            }
            FillState::Done(_) => false,
        });
    }
}

impl<V: Stored> FillWaiter<V> {
    /// The value the leader stored, or `None` if it stored nothing.
    pub async fn wait(mut self) -> Option<V> {
        let state = self
            .rx
            .wait_for(|s| matches!(s, FillState::Done(_)))
            .await
            .ok()?;
        match &*state {
            FillState::Done(value) => value.clone(),
            FillState::Pending => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Blob(Arc<Vec<u8>>, Duration);

    impl Stored for Blob {
        fn weight(&self) -> u64 {
            self.0.len() as u64
        }
        fn time_to_live(&self) -> Duration {
            self.1
        }
    }

    fn blob(len: usize) -> Blob {
        Blob(Arc::new(vec![0; len]), Duration::from_secs(60))
    }

    #[test]
    fn capacity_is_bounded_in_bytes() {
        let store = Store::new(10_000);
        for i in 0..100 {
            store.insert(&format!("k{i}"), blob(1_000));
        }
        store.sync();
        assert!(store.weighted_size() <= 10_000, "{}", store.weighted_size());
        assert!(store.entry_count() <= 10);
    }

    #[test]
    fn evictions_for_space_are_counted_and_purges_are_not() {
        let store = Store::new(10_000);
        for i in 0..100 {
            store.insert(&format!("k{i}"), blob(1_000));
        }
        store.sync();
        let evicted = store.evictions();
        assert_eq!(evicted, 100 - store.entry_count(), "every entry not kept");
        store.remove("k99");
        store.remove("k0");
        store.clear();
        store.sync();
        assert_eq!(
            store.evictions(),
            evicted,
            "purges (one or all) are not evictions"
        );
    }

    #[test]
    fn object_larger_than_capacity_is_not_kept() {
        let store = Store::new(1_000);
        store.insert("big", blob(2_000));
        store.sync();
        assert_eq!(store.get("big"), None);
    }

    #[test]
    fn entries_expire_at_their_own_time() {
        let store = Store::new(10_000);
        store.insert("short", Blob(Arc::new(vec![1]), Duration::from_millis(1)));
        store.insert("long", blob(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.get("short"), None);
        assert!(store.get("long").is_some());
    }

    #[test]
    fn remove_drops_the_entry() {
        let store = Store::new(10_000);
        store.insert("k", blob(1));
        store.remove("k");
        assert_eq!(store.get("k"), None);
    }

    #[tokio::test]
    async fn second_claim_follows_and_gets_the_value() {
        let store = Store::new(10_000);
        let Claim::Leader(guard) = store.claim("k") else {
            panic!("first claim must lead")
        };
        let Claim::Follower(waiter) = store.claim("k") else {
            panic!("second claim must follow")
        };
        guard.finish(Some(blob(3)));
        assert_eq!(waiter.wait().await, Some(blob(3)));
        assert_eq!(store.get("k"), Some(blob(3)));
    }

    #[tokio::test]
    async fn finishing_with_nothing_releases_followers_empty() {
        let store: Store<Blob> = Store::new(10_000);
        let Claim::Leader(guard) = store.claim("k") else {
            panic!()
        };
        let Claim::Follower(waiter) = store.claim("k") else {
            panic!()
        };
        guard.finish(None);
        assert_eq!(waiter.wait().await, None);
        assert!(
            matches!(store.claim("k"), Claim::Leader(_)),
            "the key is free again"
        );
    }

    #[tokio::test]
    async fn discarding_removes_the_old_entry_and_releases_followers() {
        let store = Store::new(10_000);
        store.insert("k", blob(1));
        let Claim::Leader(guard) = store.claim("k") else {
            panic!()
        };
        let Claim::Follower(waiter) = store.claim("k") else {
            panic!()
        };
        guard.discard();
        assert_eq!(waiter.wait().await, None);
        assert_eq!(store.get("k"), None);
    }

    #[test]
    fn waiters_are_counted_per_key() {
        let store: Store<Blob> = Store::new(10_000);
        assert_eq!(store.waiters("k"), 0);
        let _leader = store.claim("k");
        let _a = store.claim("k");
        let _b = store.claim("k");
        assert_eq!(store.waiters("k"), 2);
        assert_eq!(store.waiters("other"), 0);
    }

    #[tokio::test]
    async fn dropped_leader_releases_followers() {
        let store: Store<Blob> = Store::new(10_000);
        let Claim::Leader(guard) = store.claim("k") else {
            panic!()
        };
        let Claim::Follower(waiter) = store.claim("k") else {
            panic!()
        };
        drop(guard);
        assert_eq!(waiter.wait().await, None);
    }

    #[tokio::test]
    async fn a_fill_overtaken_by_a_purge_stores_nothing_but_answers_its_waiters() {
        for purge in [
            (|store: &Store<Blob>| store.remove("k")) as fn(&Store<Blob>),
            |store| store.remove_if(|key| key.starts_with('k')),
            Store::clear,
        ] {
            let store = Store::new(10_000);
            let Claim::Leader(old) = store.claim("k") else {
                panic!("first claim must lead")
            };
            let Claim::Follower(waiter) = store.claim("k") else {
                panic!("second claim must follow")
            };
            purge(&store);
            // A request after the purge does not join the fill that began before it.
            let Claim::Leader(new) = store.claim("k") else {
                panic!("the purge detached the old fill")
            };
            old.finish(Some(blob(1)));
            assert_eq!(store.get("k"), None, "the overtaken fill stored nothing");
            assert_eq!(
                waiter.wait().await,
                Some(blob(1)),
                "its waiter got its answer"
            );
            // The old fill's end leaves the new fill registered, and the new one stores.
            assert!(matches!(store.claim("k"), Claim::Follower(_)));
            new.finish(Some(blob(2)));
            assert_eq!(store.get("k"), Some(blob(2)));
        }
    }

    #[test]
    fn a_purge_of_other_keys_leaves_a_fill_current() {
        let store = Store::new(10_000);
        let Claim::Leader(fill) = store.claim("k") else {
            panic!()
        };
        store.remove("other");
        store.remove_if(|key| key == "x");
        fill.finish(Some(blob(1)));
        assert_eq!(store.get("k"), Some(blob(1)));
    }

    #[test]
    fn a_restore_stores_only_keys_nothing_wrote_or_removed_since_it_began() {
        let store = Store::new(10_000);
        assert_eq!(store.restore("k", blob(1)), Restored::Stopped, "not begun");
        store.insert("held", blob(2));
        store.begin_restore();
        store.insert("written", blob(3));
        store.remove("removed");
        let Claim::Leader(fill) = store.claim("discarded") else {
            panic!("nobody fills it")
        };
        fill.discard();
        assert_eq!(store.restore("fresh", blob(1)), Restored::Inserted);
        assert_eq!(store.restore("discarded", blob(1)), Restored::Superseded);
        assert_eq!(store.restore("held", blob(1)), Restored::Superseded);
        assert_eq!(store.restore("written", blob(1)), Restored::Superseded);
        assert_eq!(store.restore("removed", blob(1)), Restored::Superseded);
        assert_eq!(store.get("held"), Some(blob(2)));
        assert_eq!(store.get("removed"), None);
        store.remove_if(|key| key.starts_with('x'));
        assert_eq!(store.restore("other", blob(1)), Restored::Stopped);
        store.end_restore();
        assert_eq!(store.restore("other", blob(1)), Restored::Stopped);
        assert!(
            store.touched.lock().unwrap().is_none(),
            "nothing remembered after the end"
        );
    }

    #[test]
    fn claims_on_different_keys_are_independent() {
        let store: Store<Blob> = Store::new(10_000);
        let _a = store.claim("a");
        assert!(matches!(store.claim("b"), Claim::Leader(_)));
    }
}
