//! What an invalidation drops, as a value: the proxy applies it here and, when clustered, hands the same value
//! to the other instances, which apply it to their own cache (`cluster/`).
//!
//! Every invalidation the proxy decides on (the purge API, a confirmed avatar change, a `nocache` answer that
//! shows a newer avatar, RFC 9111 §4.4 after an unsafe request) goes through [`Cache::invalidate`]; one that
//! arrives from another instance goes through [`Cache::apply`], which does not send it on again. Both are
//! idempotent: applying an event twice drops nothing more.

use serde::{Deserialize, Serialize};

use super::{Cache, policy, vary};

/// What to drop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invalidation {
    /// One primary key (an avatar key or an http key), every variant under it included.
    Key(String),
    /// A request target under every host (a rule keyed on the host holds one entry per host).
    Target(String),
    /// Every entry whose path starts with this raw prefix.
    Prefix(String),
    /// Everything.
    All,
}

/// Receives the invalidations this instance performed, to share them (set once at start).
pub type Publisher = Box<dyn Fn(&Invalidation) + Send + Sync>;

impl Cache {
    /// Applies an invalidation this instance decided on, then hands it to the publisher, if any.
    pub fn invalidate(&self, what: &Invalidation) {
        self.apply(what);
        if let Some(publish) = self.publisher.get() {
            publish(what);
        }
    }

    /// Applies an invalidation without sharing it: one another instance performed.
    pub fn apply(&self, what: &Invalidation) {
        match what {
            Invalidation::Key(primary) => self.purge_key(primary),
            Invalidation::Target(target) => {
                let target = target.clone();
                self.store.remove_if(move |key| {
                    policy::key_target(vary::primary_of(key)) == Some(target.as_str())
                });
            }
            Invalidation::Prefix(prefix) => {
                let prefix = prefix.clone();
                self.store
                    .remove_if(move |key| policy::key_path_starts_with(key, &prefix));
            }
            Invalidation::All => self.store.clear(),
        }
    }

    /// Sets where [`Cache::invalidate`] sends what it applied. Only the first call takes effect; `false`
    /// tells a second one it was ignored.
    pub fn set_publisher(&self, publish: Publisher) -> bool {
        self.publisher.set(publish).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::cache::Clock;

    #[test]
    fn invalidate_publishes_what_it_applied_and_apply_publishes_nothing() {
        let cache = Cache::new(1 << 20, Clock::system());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        assert!(cache.set_publisher(Box::new(move |what| {
            sink.lock().unwrap().push(what.clone());
        })));
        assert!(!cache.set_publisher(Box::new(|_| {})), "set once");
        cache.invalidate(&Invalidation::Key("lpua".into()));
        cache.apply(&Invalidation::Prefix("/assets/".into()));
        cache.invalidate(&Invalidation::All);
        assert_eq!(
            *seen.lock().unwrap(),
            [Invalidation::Key("lpua".into()), Invalidation::All]
        );
    }
}
