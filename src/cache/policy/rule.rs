//! A rule's parameters as the cache takes them: its kind and its limits. The cache owns these types; `config`
//! reads them from `proxy.toml` and re-exports them, and the cache never imports `config`.

use std::time::Duration;

use serde::Deserialize;

/// The kinds of cache rule: what the cache knows about the responses a rule stores. The cache owns it
/// (`config` re-exports it and reads it from a rule's `kind = "..."`, hence `Deserialize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Cloudreve's avatar route: `nocache`, images only, keyed by user id, invalidated by avatar changes.
    Avatar,
    /// A plain RFC 9111 shared cache.
    Http,
}

/// Limits and defaults that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body stored; larger ones are streamed through.
    pub max_object_size: usize,
    /// Cap on how long a 404 stays fresh.
    pub negative_ttl: Duration,
    /// `stale-while-revalidate` applied when the upstream sends none (Cloudreve never does).
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` applied when the upstream sends none (Cloudreve never does).
    pub stale_if_error: Duration,
    /// How long past freshness (and past its stale windows) an entry with a validator is kept to be
    /// revalidated; not a permission to serve it stale.
    pub keep: Duration,
    /// Heuristic freshness (RFC 9111 §4.2.2): this fraction of the time since `Last-Modified`...
    pub heuristic_fraction: f64,
    /// ...capped at this.
    pub heuristic_max: Duration,
}

#[cfg(test)]
impl Limits {
    /// The avatar rule's defaults, for the cache's own tests, which build entries without `config` (a
    /// test in `config` pins them equal to `Config::default()`'s).
    pub(crate) const AVATAR_DEFAULTS: Limits = Limits {
        max_object_size: 1 << 20,
        negative_ttl: Duration::from_secs(60),
        stale_while_revalidate: Duration::from_secs(60),
        stale_if_error: Duration::from_secs(24 * 3600),
        keep: Duration::from_secs(24 * 3600),
        heuristic_fraction: 0.1,
        heuristic_max: Duration::from_secs(24 * 3600),
    };
}

impl PartialEq for Limits {
    fn eq(&self, other: &Self) -> bool {
        self.max_object_size == other.max_object_size
            && self.negative_ttl == other.negative_ttl
            && self.stale_while_revalidate == other.stale_while_revalidate
            && self.stale_if_error == other.stale_if_error
            && self.keep == other.keep
            && self.heuristic_fraction.to_bits() == other.heuristic_fraction.to_bits()
            && self.heuristic_max == other.heuristic_max
    }
}
