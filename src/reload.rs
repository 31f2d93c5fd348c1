//! The configuration in force, as one swappable snapshot ([`Live`]), and reloading it.
//!
//! Everything that may change while the process runs (the upstream client, trusted proxies, TLS certificates,
//! access logging) is read from the current [`Snapshot`] when it is used. A reload builds a whole new snapshot
//! and swaps it in: requests already running keep the snapshot they started with, new ones get the new one,
//! and no connection or cache entry is dropped.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::upstream::Upstream;

/// One consistent view of the running configuration and what is built from it.
pub struct Snapshot {
    /// The validated configuration.
    pub config: Config,
    /// The client to `config.upstream`; a new one (new pool) per snapshot.
    pub upstream: Arc<Upstream>,
}

impl Snapshot {
    /// Builds what the configuration needs.
    pub fn new(config: Config) -> Self {
        let upstream = Arc::new(Upstream::new(&config.upstream));
        Self { config, upstream }
    }
}

/// The one swappable handle on the running configuration.
pub struct Live {
    /// The snapshot in force.
    current: ArcSwap<Snapshot>,
}

impl Live {
    /// A handle holding `config`.
    pub fn new(config: Config) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::new(config)),
        }
    }

    /// The snapshot in force now. Hold it for the length of one use (a request, a connection's setup).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The upstream client in force now.
    pub fn upstream(&self) -> Arc<Upstream> {
        Arc::clone(&self.current.load().upstream)
    }

    /// Puts `snapshot` in force for everything that starts from now on.
    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
