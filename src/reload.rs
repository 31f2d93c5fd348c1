//! The configuration in force, as one swappable snapshot ([`Live`]), and reloading it.
//!
//! Everything that may change while the process runs (the upstream client, trusted proxies, TLS certificates,
//! the per-connection timeouts, access logging) is read from the current [`Snapshot`] when it is used. A
//! reload builds a whole new snapshot and swaps it in: requests already running keep the snapshot they
//! started with, new ones get the new one, and no connection or cache entry is dropped. What cannot change
//! in a running process (listen addresses, connection and head limits, the cache's capacity, ...) keeps its
//! running value, and the reload says which keys those were.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError, require_admin_token};
use crate::upstream::Upstream;

mod cert;

pub use cert::LiveCert;

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

/// What a successful reload changed, and what it could not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys whose new value needs a restart; the running value was kept for each.
    pub restart_needed: Vec<&'static str>,
    /// The new `log.level`, when it changed (the binary owns the subscriber and applies it).
    pub log_level: Option<String>,
}

/// Re-reads the configuration with `load` and puts it in force; on an error the running configuration stays
/// as it is and the error is returned (and logged) whole. The new `admin.token` is checked against the admin
/// address actually bound (kept until a restart), so a reload cannot leave a non-loopback purge API open.
pub fn reload(
    live: &Live,
    load: impl FnOnce() -> Result<Config, ConfigError>,
) -> Result<Reloaded, ConfigError> {
    let loaded = load().and_then(|config| {
        let bound = live.load().config.admin.listen;
        require_admin_token(bound, config.admin.token.as_ref())?;
        Ok(config)
    });
    match loaded {
        Ok(config) => {
            let reloaded = apply(live, config);
            tracing::info!(
                upstream = %live.load().config.upstream.authority,
                restart_needed = ?reloaded.restart_needed,
                "configuration reloaded"
            );
            Ok(reloaded)
        }
        Err(err) => {
            tracing::error!(error = %err, "configuration reload failed; keeping the running configuration");
            Err(err)
        }
    }
}

/// Puts `new` in force, except the keys that belong to things built once at start (listeners, the runtime,
/// the cache's moka instance, the log format): those keep their running values and are reported.
pub fn apply(live: &Live, mut new: Config) -> Reloaded {
    let old = live.load();
    let old = &old.config;
    let mut restart = Vec::new();
    let server = (&mut new.server, &old.server);
    keep(
        &mut restart,
        "server.listen",
        &mut server.0.listen,
        &server.1.listen,
    );
    keep(
        &mut restart,
        "server.worker_threads",
        &mut server.0.worker_threads,
        &server.1.worker_threads,
    );
    keep(
        &mut restart,
        "server.drain_timeout",
        &mut server.0.drain_timeout,
        &server.1.drain_timeout,
    );
    keep(
        &mut restart,
        "server.h2_max_concurrent_streams",
        &mut server.0.h2_max_concurrent_streams,
        &server.1.h2_max_concurrent_streams,
    );
    keep(
        &mut restart,
        "server.proxy_protocol",
        &mut server.0.proxy_protocol,
        &server.1.proxy_protocol,
    );
    // The connection slots are one semaphore sized at start, and the head limits are hyper's (its connection
    // builder is built once); the framing guard reads the same values so the two always agree. The
    // per-connection timeouts (`header_read_timeout`, `idle_timeout`, `response_idle_timeout`,
    // `send_timeout`) are read
    // when a connection is accepted: a reload applies to the connections accepted after it.
    keep(
        &mut restart,
        "server.max_connections",
        &mut server.0.max_connections,
        &server.1.max_connections,
    );
    keep(
        &mut restart,
        "server.max_request_head_size",
        &mut server.0.max_request_head_size,
        &server.1.max_request_head_size,
    );
    keep(
        &mut restart,
        "server.max_headers",
        &mut server.0.max_headers,
        &server.1.max_headers,
    );
    keep(
        &mut restart,
        "admin.listen",
        &mut new.admin.listen,
        &old.admin.listen,
    );
    // moka cannot change a cache's capacity, and the rules are fixed with the cache they fill.
    keep(
        &mut restart,
        "cache.capacity",
        &mut new.cache.capacity,
        &old.cache.capacity,
    );
    keep(
        &mut restart,
        "cache.rules",
        &mut new.cache.rules,
        &old.cache.rules,
    );
    keep(
        &mut restart,
        "log.format",
        &mut new.log.format,
        &old.log.format,
    );
    // TLS on or off is the listener's; the certificate itself may change.
    if new.tls.is_some() != old.tls.is_some() {
        restart.push("tls.cert");
        new.tls.clone_from(&old.tls);
    }
    let log_level = (new.log.level != old.log.level).then(|| new.log.level.clone());
    live.store(Snapshot::new(new));
    Reloaded {
        restart_needed: restart,
        log_level,
    }
}

/// Keeps the running value of `key` when the new one differs, and notes it.
fn keep<T: PartialEq + Clone>(
    restart: &mut Vec<&'static str>,
    key: &'static str,
    new: &mut T,
    old: &T,
) {
    if new != old {
        restart.push(key);
        new.clone_from(old);
    }
}
