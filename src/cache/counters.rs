//! How cached-route requests were answered since start, for `/stats` and its hit ratio.

use std::sync::atomic::{AtomicU64, Ordering};

use super::status::Outcome;

/// Outcome counters, one per [`Outcome`] family.
#[derive(Debug, Default)]
pub struct Counters {
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
    /// Served from memory after the upstream confirmed it with a 304.
    pub revalidated: u64,
    /// Served another request's fetch.
    pub coalesced: u64,
    /// Fetched from the upstream (stored or not).
    pub miss: u64,
    /// Not looked up (`nocache`, non-canonical ids, `no-store` requests).
    pub bypass: u64,
}

impl Counters {
    /// Counts one answered request.
    pub fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Hit => &self.hit,
            Outcome::Stale | Outcome::StaleIfError => &self.stale,
            Outcome::Revalidated => &self.revalidated,
            Outcome::Collapsed => &self.coalesced,
            Outcome::Stored | Outcome::Miss => &self.miss,
            Outcome::Bypass => &self.bypass,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Counts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counts {
            hit: read(&self.hit),
            stale: read(&self.stale),
            revalidated: read(&self.revalidated),
            coalesced: read(&self.coalesced),
            miss: read(&self.miss),
            bypass: read(&self.bypass),
        }
    }
}

impl Counts {
    /// Requests counted, bypasses included.
    pub fn requests(&self) -> u64 {
        self.hit + self.stale + self.revalidated + self.coalesced + self.miss + self.bypass
    }

    /// Share of looked-up requests whose body came from memory rather than from the upstream (hits, stale
    /// answers, revalidations and coalesced waits); `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let from_memory = self.hit + self.stale + self.revalidated + self.coalesced;
        let looked_up = from_memory + self.miss;
        (looked_up > 0).then(|| from_memory as f64 / looked_up as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_and_give_the_hit_ratio() {
        let counters = Counters::default();
        assert_eq!(counters.snapshot().hit_ratio(), None);
        for outcome in [
            Outcome::Hit,
            Outcome::Hit,
            Outcome::Stale,
            Outcome::Stored,
            Outcome::Bypass,
        ] {
            counters.count(outcome);
        }
        let counts = counters.snapshot();
        assert_eq!(
            (counts.hit, counts.stale, counts.miss, counts.bypass),
            (2, 1, 1, 1)
        );
        assert_eq!(counts.requests(), 5);
        assert_eq!(counts.hit_ratio(), Some(0.75), "bypasses are not lookups");
    }
}
