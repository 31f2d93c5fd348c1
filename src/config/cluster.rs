//! `[cluster]`: invalidation shared with the other instances through a Redis Stream (`cluster/`). The whole
//! section is optional: without it no Redis code runs. Same rules as the rest of the schema: typed defaults,
//! every error names its key. Nothing here connects; the URL is only parsed.

use std::time::Duration;

use redis::IntoConnectionInfo as _;
use serde::Deserialize;

use super::{ConfigError, invalid, non_zero};

/// The stream every instance appends its invalidations to and reads the others' from.
pub const DEFAULT_CLUSTER_STREAM: &str = "cloudreve-edge:invalidations";
/// How long events stay in the stream (`XADD ... MINID ~ now - retention`): an instance away for less than
/// this catches up on what it missed; one away longer drops its whole cache when it comes back.
pub const DEFAULT_CLUSTER_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// While the stream cannot be read, a stored response is served from memory for at most this long after it
/// was stored or last validated, then revalidated upstream (cheap 304s): an invalidation another instance
/// performed meanwhile is missed for no longer than this.
pub const DEFAULT_MAX_STALE_WHEN_DETACHED: Duration = Duration::from_secs(300);
/// The shortest `cluster.retention`: an instance restarting or reconnecting needs the events of at least
/// that long to catch up instead of dropping its cache.
pub const MIN_CLUSTER_RETENTION: Duration = Duration::from_secs(60);
/// The longest `cluster.instance_id` and `cluster.stream`: they travel in every event and log line.
const MAX_NAME_LEN: usize = 200;

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis server holding the stream: `redis://` or `rediss://` (TLS).
    pub redis_url: RedisUrl,
    /// This instance's name in the events it writes (it skips its own); `None`: `hostname-pid`, decided
    /// when the cluster starts.
    pub instance_id: Option<String>,
    /// The stream's key; its epoch key is this followed by `:epoch`.
    pub stream: String,
    /// How long events are kept in the stream.
    pub retention: Duration,
    /// The freshness cap on stored responses while the stream cannot be read.
    pub max_stale_when_detached: Duration,
}

/// `cluster.redis_url`: may carry a password, so its `Debug` output shows only the scheme and the host.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL without credentials, for logs: `scheme://host:port/db`.
    pub fn redacted(&self) -> String {
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://{rest}")
            }
            None => "<redis url>".to_owned(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCluster {
    redis_url: String,
    instance_id: String,
    stream: String,
    #[serde(with = "humantime_serde")]
    retention: Duration,
    #[serde(with = "humantime_serde")]
    max_stale_when_detached: Duration,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            instance_id: String::new(),
            stream: DEFAULT_CLUSTER_STREAM.to_owned(),
            retention: DEFAULT_CLUSTER_RETENTION,
            max_stale_when_detached: DEFAULT_MAX_STALE_WHEN_DETACHED,
        }
    }
}

impl RawCluster {
    pub(super) fn validate(self) -> Result<ClusterConfig, ConfigError> {
        non_zero(
            "cluster.max_stale_when_detached",
            self.max_stale_when_detached,
        )?;
        if self.retention < MIN_CLUSTER_RETENTION {
            return Err(invalid(
                "cluster.retention",
                format!("{:?} is shorter than the minimum of 1m", self.retention),
            ));
        }
        let instance_id = match self.instance_id.as_str() {
            "" => None,
            id => Some(name("cluster.instance_id", id)?.to_owned()),
        };
        Ok(ClusterConfig {
            redis_url: redis_url(&self.redis_url)?,
            instance_id,
            stream: name("cluster.stream", &self.stream)?.to_owned(),
            retention: self.retention,
            max_stale_when_detached: self.max_stale_when_detached,
        })
    }
}

/// `redis://[[user]:password@]host[:port][/db]` or the same with `rediss://` (TLS, verified against the
/// system's roots); parsed here so `--check` refuses a bad one.
fn redis_url(url: &str) -> Result<RedisUrl, ConfigError> {
    const KEY: &str = "cluster.redis_url";
    if url.is_empty() {
        return Err(invalid(
            KEY,
            "is needed in [cluster], e.g. \"redis://10.0.0.9:6379\" (remove the section to run alone)",
        ));
    }
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(invalid(
            KEY,
            format!(
                "{:?} must start with redis:// or rediss:// (TLS)",
                RedisUrl(url.to_owned()).redacted()
            ),
        ));
    }
    match url.into_connection_info() {
        Ok(_) => Ok(RedisUrl(url.to_owned())),
        // The parser's message never repeats the URL, so no password reaches the log.
        Err(err) => Err(invalid(KEY, format!("not a Redis URL: {err}"))),
    }
}

/// An instance id or a key name: printable ASCII without spaces, so log lines and `CLIENT LIST` stay
/// readable, and short.
fn name<'a>(key: &'static str, value: &'a str) -> Result<&'a str, ConfigError> {
    if value.is_empty()
        || value.len() > MAX_NAME_LEN
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            key,
            format!("must be 1 to {MAX_NAME_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn key_of(text: &str) -> String {
        match Config::from_toml(text).unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an Invalid error, got {other}"),
        }
    }

    #[test]
    fn no_section_is_no_cluster() {
        assert_eq!(Config::from_toml("").unwrap().cluster, None);
    }

    #[test]
    fn a_section_with_a_url_takes_the_documented_defaults() {
        let config = Config::from_toml("[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(config.redis_url.as_str(), "redis://127.0.0.1:6379");
        assert_eq!(config.instance_id, None);
        assert_eq!(config.stream, "cloudreve-edge:invalidations");
        assert_eq!(config.retention, Duration::from_secs(86_400));
        assert_eq!(config.max_stale_when_detached, Duration::from_secs(300));
    }

    #[test]
    fn tls_urls_and_every_key_are_read() {
        let config = Config::from_toml(
            "[cluster]\nredis_url = \"rediss://:pw@redis.internal:6380/2\"\ninstance_id = \"edge-a\"\n\
             stream = \"edge:inv\"\nretention = \"2h\"\nmax_stale_when_detached = \"30s\"\n",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(config.instance_id.as_deref(), Some("edge-a"));
        assert_eq!(config.stream, "edge:inv");
        assert_eq!(config.retention, Duration::from_secs(7200));
        assert_eq!(config.max_stale_when_detached, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (line, key) in [
            ("stream = \"x\"", "cluster.redis_url"),
            ("redis_url = \"http://127.0.0.1:6379\"", "cluster.redis_url"),
            ("redis_url = \"127.0.0.1:6379\"", "cluster.redis_url"),
            ("redis_url = \"redis://h:99999\"", "cluster.redis_url"),
            ("redis_url = \"redis://h/x\"\n", "cluster.redis_url"),
        ] {
            assert_eq!(key_of(&format!("[cluster]\n{line}\n")), key, "{line}");
        }
        let url = "[cluster]\nredis_url = \"redis://h\"\n";
        for (line, key) in [
            ("instance_id = \"a b\"", "cluster.instance_id"),
            ("stream = \"\"", "cluster.stream"),
            ("retention = \"10s\"", "cluster.retention"),
            (
                "max_stale_when_detached = \"0s\"",
                "cluster.max_stale_when_detached",
            ),
        ] {
            assert_eq!(key_of(&format!("{url}{line}\n")), key, "{line}");
        }
        let err = Config::from_toml(&format!("{url}redis_urll = \"x\"\n")).unwrap_err();
        assert!(err.to_string().contains("redis_urll"), "{err}");
    }

    #[test]
    fn the_password_never_shows() {
        let url = RedisUrl("rediss://user:s3cret@redis.internal:6380/0".to_owned());
        assert_eq!(url.redacted(), "rediss://redis.internal:6380/0");
        assert!(!format!("{url:?}").contains("s3cret"));
        let err = Config::from_toml("[cluster]\nredis_url = \"http://u:s3cret@h\"\n").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
