//! The configuration in force, as one swappable snapshot ([`Live`]), and reloading it.
//!
//! Everything that may change while the process runs (the upstream client, trusted proxies, TLS certificates,
//! the per-connection timeouts, access logging) is read from the current [`Snapshot`] when it is used. A
//! reload builds a whole new snapshot and swaps it in: requests already running keep the snapshot they
//! started with, new ones get the new one, and no connection or cache entry is dropped. What cannot change
//! in a running process (listen addresses, connection and head limits, the cache's capacity, ...) keeps its
//! running value, and the reload says which keys those were. Which is which is written once, as the table
//! `KEYS`: one row per key of `proxy.toml`.

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
    /// The new `log.access_log_path` (`None` inside: standard error), when it changed (the binary owns the
    /// access log's writer and moves it).
    pub access_log_path: Option<Option<std::path::PathBuf>>,
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

/// What a reload does with one configuration key.
#[derive(Clone, Copy)]
enum OnReload {
    /// Read from the snapshot in force where it is used: the new value applies to what starts after the
    /// reload (a request, a connection, a handshake).
    Applies,
    /// Built into something made once at start (a listener, the runtime, the cache's moka instance, the log
    /// format): puts the running value back into the new configuration and says whether the two differed.
    Restart(fn(new: &mut Config, running: &Config) -> bool),
}

/// [`OnReload::Restart`] for the field at a path of [`Config`].
macro_rules! keep {
    ($($field:ident).+) => {
        OnReload::Restart(|new, running| kept(&mut new.$($field).+, &running.$($field).+))
    };
}

/// [`OnReload::Restart`] for a field of `[cluster]` (a section that may be absent: turning it on or off is
/// `cluster.redis_url`'s row, [`cluster_on_or_off`], which comes first).
macro_rules! keep_cluster {
    ($field:ident) => {
        OnReload::Restart(|new, running| match (&mut new.cluster, &running.cluster) {
            (Some(new), Some(running)) => kept(&mut new.$field, &running.$field),
            _ => false,
        })
    };
}

/// Every key of `proxy.toml` and what a reload does with it (`[[cache.rules]]`, a list of tables, is one
/// key); [`Reloaded::restart_needed`] names the keys in this order. README's SIGHUP paragraph says the same.
const KEYS: &[(&str, OnReload)] = &[
    ("server.listen", keep!(server.listen)),
    ("server.worker_threads", keep!(server.worker_threads)),
    ("server.drain_timeout", keep!(server.drain_timeout)),
    (
        "server.h2_max_concurrent_streams",
        keep!(server.h2_max_concurrent_streams),
    ),
    ("server.proxy_protocol", keep!(server.proxy_protocol)),
    // The connection slots are one semaphore sized at start, and the head limits are hyper's (its
    // connection builder is built once); the framing guard reads the same values so the two always agree.
    ("server.max_connections", keep!(server.max_connections)),
    (
        "server.max_request_head_size",
        keep!(server.max_request_head_size),
    ),
    ("server.max_headers", keep!(server.max_headers)),
    // Read when a connection is accepted: a reload applies to the connections accepted after it.
    ("server.header_read_timeout", OnReload::Applies),
    ("server.idle_timeout", OnReload::Applies),
    ("server.response_idle_timeout", OnReload::Applies),
    ("server.send_timeout", OnReload::Applies),
    ("server.express_lane", OnReload::Applies),
    ("server.trusted_proxies", OnReload::Applies),
    // Each snapshot builds its own upstream client, with a new pool.
    ("upstream.url", OnReload::Applies),
    ("upstream.ca_file", OnReload::Applies),
    ("upstream.connect_timeout", OnReload::Applies),
    ("upstream.response_header_timeout", OnReload::Applies),
    ("upstream.request_body_idle_timeout", OnReload::Applies),
    ("upstream.pool_idle_timeout", OnReload::Applies),
    ("upstream.pool_max_idle", OnReload::Applies),
    ("upstream.max_connections", OnReload::Applies),
    ("admin.listen", keep!(admin.listen)),
    // Checked by `reload` against the admin address actually bound.
    ("admin.token", OnReload::Applies),
    ("admin.readiness_window", OnReload::Applies),
    // moka cannot change a cache's capacity, and the rules are fixed with the cache they fill.
    ("cache.capacity", keep!(cache.capacity)),
    ("cache.rules", keep!(cache.rules)),
    // Read on drain: the snapshot is written where the configuration in force then says (the one read at
    // start was read from the path in force at start).
    ("cache.snapshot_path", OnReload::Applies),
    ("cache.snapshot_timeout", OnReload::Applies),
    ("log.format", keep!(log.format)),
    // Handed to the binary, which owns the subscriber ([`Reloaded::log_level`]).
    ("log.level", OnReload::Applies),
    ("log.access_log", OnReload::Applies),
    // Handed to the binary, which owns the access log's writer ([`Reloaded::access_log_path`]).
    ("log.access_log_path", OnReload::Applies),
    ("log.access_log_buffer", keep!(log.access_log_buffer)),
    // TLS on or off is the listener's; the certificate and key files are read again, for new handshakes.
    ("tls.cert", OnReload::Restart(tls_on_or_off)),
    ("tls.key", OnReload::Applies),
    // The cluster is started once, with its connections and tasks; `[cluster]` added or removed is
    // reported as its `redis_url`.
    ("cluster.redis_url", OnReload::Restart(cluster_on_or_off)),
    ("cluster.instance_id", keep_cluster!(instance_id)),
    ("cluster.stream", keep_cluster!(stream)),
    ("cluster.retention", keep_cluster!(retention)),
    (
        "cluster.max_stale_when_detached",
        keep_cluster!(max_stale_when_detached),
    ),
];

/// Puts `new` in force, except the keys [`KEYS`] says need a restart: those keep their running values and
/// are reported.
pub fn apply(live: &Live, mut new: Config) -> Reloaded {
    let running = live.load();
    let running = &running.config;
    let restart_needed = KEYS
        .iter()
        .filter_map(|&(key, on_reload)| match on_reload {
            OnReload::Restart(keep) => keep(&mut new, running).then_some(key),
            OnReload::Applies => None,
        })
        .collect();
    let log_level = (new.log.level != running.log.level).then(|| new.log.level.clone());
    let access_log_path = (new.log.access_log_path != running.log.access_log_path)
        .then(|| new.log.access_log_path.clone());
    live.store(Snapshot::new(new));
    Reloaded {
        restart_needed,
        log_level,
        access_log_path,
    }
}

/// Puts the running `old` back in place of `new` when they differ, and says whether they did.
fn kept<T: PartialEq + Clone>(new: &mut T, old: &T) -> bool {
    let differ = new != old;
    if differ {
        new.clone_from(old);
    }
    differ
}

/// Turning TLS on or off needs a restart (the listener is built with it or without); the certificate itself
/// may change.
fn tls_on_or_off(new: &mut Config, running: &Config) -> bool {
    let switched = new.tls.is_some() != running.tls.is_some();
    if switched {
        new.tls.clone_from(&running.tls);
    }
    switched
}

/// `[cluster]` added or removed keeps the running section whole; otherwise its `redis_url` is kept.
fn cluster_on_or_off(new: &mut Config, running: &Config) -> bool {
    match (&mut new.cluster, &running.cluster) {
        (Some(new), Some(running)) => kept(&mut new.redis_url, &running.redis_url),
        (None, None) => false,
        _ => {
            new.cluster.clone_from(&running.cluster);
            true
        }
    }
}

/// The integration tests' reader of `proxy.toml`, shared so both read its commented sections alike.
#[cfg(test)]
#[path = "../tests/integration/support/proxy_toml.rs"]
mod proxy_toml;

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_toml::uncommented;

    /// The keys of the checked-in `proxy.toml` (`section.key`), each with whether its line is marked
    /// `# (restart)`.
    fn proxy_toml_keys() -> Vec<(String, bool)> {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap();
        let text = uncommented(&text);
        let file: toml::Table = text.parse().unwrap();
        let marked = |section: &str, key: &str| {
            let mut in_section = false;
            text.lines().any(|line| {
                if line.starts_with('[') {
                    in_section = line.trim_matches(['[', ']']) == section;
                }
                in_section && line.starts_with(&format!("{key} =")) && line.ends_with("# (restart)")
            })
        };
        let mut keys = Vec::new();
        for (section, table) in &file {
            for key in table
                .as_table()
                .expect("every top-level key is a section")
                .keys()
            {
                keys.push((format!("{section}.{key}"), marked(section, key)));
            }
        }
        keys
    }

    #[test]
    fn every_key_of_proxy_toml_has_a_row_and_each_marked_restart_is_kept() {
        let mut in_file: Vec<_> = proxy_toml_keys().into_iter().map(|(key, _)| key).collect();
        let mut in_table: Vec<_> = KEYS.iter().map(|(key, _)| (*key).to_owned()).collect();
        in_file.sort();
        in_table.sort();
        assert_eq!(in_table, in_file, "one row in reload::KEYS per key");
        for (key, _) in proxy_toml_keys().into_iter().filter(|(_, marked)| *marked) {
            let row = KEYS.iter().find(|(k, _)| *k == key).map(|(_, on)| *on);
            assert!(
                matches!(row, Some(OnReload::Restart(_))),
                "{key} is marked (restart) in proxy.toml but applies on reload"
            );
        }
    }

    #[test]
    fn the_cluster_section_keeps_its_running_value_on_reload() {
        let clustered =
            || Config::from_toml("[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n").unwrap();
        let live = Live::new(clustered());
        let mut new = clustered();
        let cluster = new.cluster.as_mut().unwrap();
        cluster.stream = "other".to_owned();
        cluster.retention *= 2;
        assert_eq!(
            apply(&live, new).restart_needed,
            ["cluster.stream", "cluster.retention"]
        );
        assert_eq!(live.load().config.cluster, clustered().cluster);
        assert_eq!(
            apply(&live, Config::default()).restart_needed,
            ["cluster.redis_url"]
        );
        assert_eq!(live.load().config.cluster, clustered().cluster);
    }

    #[test]
    fn a_restart_key_keeps_its_running_value_and_is_reported() {
        let live = Live::new(Config::default());
        let mut new = Config::default();
        new.server.max_headers += 1;
        new.server.idle_timeout *= 2;
        new.log.level = "debug".to_owned();
        let reloaded = apply(&live, new);
        assert_eq!(reloaded.restart_needed, ["server.max_headers"]);
        assert_eq!(reloaded.log_level.as_deref(), Some("debug"));
        let running = live.load();
        assert_eq!(
            running.config.server.max_headers,
            Config::default().server.max_headers
        );
        assert_eq!(
            running.config.server.idle_timeout,
            Config::default().server.idle_timeout * 2
        );
    }
}
