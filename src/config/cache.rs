//! `[cache]` and its ordered `[[cache.rules]]`: which paths are cached, by which kind of rule, with which limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use http::header::HeaderName;
use serde::Deserialize;

use super::{ConfigError, invalid};
pub use crate::cache::policy::{Limits, RuleKind};
use crate::cloudreve::AVATAR_PREFIX;

/// Memory for cached responses (bodies, headers and keys), in bytes, shared by all rules.
pub const DEFAULT_CACHE_CAPACITY: ByteSize = ByteSize::mib(256);
/// Responses larger than this are streamed through, never stored (per rule).
pub const DEFAULT_MAX_OBJECT_SIZE: ByteSize = ByteSize::mib(1);
/// The `/assets/` rule stores the web app's bundles, which are larger than avatars.
pub const DEFAULT_ASSETS_MAX_OBJECT_SIZE: ByteSize = ByteSize::mib(8);
/// A stored 404 or 410 is kept at most this long, whatever the upstream's max-age says.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// The avatar rule: past freshness, a stored avatar is still served this long while one request refreshes it
/// (RFC 5861 §3). Cloudreve sends no `stale-while-revalidate` and an avatar a minute old is as good as a new
/// one to every page that shows it; this rule is the operator's out-of-band permission (RFC 9111 §4.2.4).
pub const DEFAULT_AVATAR_STALE_WHILE_REVALIDATE: Duration = Duration::from_secs(60);
/// The avatar rule: past freshness, a stored avatar is still served this long when Cloudreve is down or
/// failing (RFC 5861 §4), so a Cloudreve restart does not break every avatar on a page.
pub const DEFAULT_AVATAR_STALE_IF_ERROR: Duration = Duration::from_secs(24 * 3600);
/// An `http` rule serves nothing stale the origin did not allow (RFC 9111 §4.2.4): its own RFC 5861
/// directives still apply; a rule that sets a window is the operator's permission.
pub const DEFAULT_HTTP_STALE_WHILE_REVALIDATE: Duration = Duration::ZERO;
/// As [`DEFAULT_HTTP_STALE_WHILE_REVALIDATE`], for `stale-if-error`.
pub const DEFAULT_HTTP_STALE_IF_ERROR: Duration = Duration::ZERO;
/// Past freshness and every stale window, an entry with a validator is kept this long to be revalidated
/// (a 304 then refreshes it without its body crossing the network again): Varnish's `keep`.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Heuristic freshness (RFC 9111 §4.2.2): this fraction of the time since `Last-Modified`...
pub const DEFAULT_HEURISTIC_FRACTION: f64 = 0.1;
/// ...and never more than this.
pub const DEFAULT_HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);
/// The longest the snapshot written on drain may take (`cache.snapshot_timeout`): past it, the snapshot is
/// given up and the process exits; the next start is cold. Well inside the 30 s an orchestrator usually
/// allows after SIGTERM once the drain is done (Kubernetes' grace period, systemd's is 90 s).
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);
/// The path prefix of the web app's hashed bundles (`public, max-age=31536000` from Cloudreve).
pub const ASSETS_PREFIX: &str = "/assets/";

/// `[cache]`
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Byte budget for the whole cache, all rules together.
    pub capacity: u64,
    /// The rules, in order; the first whose prefix matches a `GET`/`HEAD` path decides.
    pub rules: Vec<RuleConfig>,
    /// Where the cache is written on drain and read back at start (warm restart); `None`: off.
    pub snapshot_path: Option<PathBuf>,
    /// The longest writing the snapshot may take.
    pub snapshot_timeout: Duration,
}

/// One `[[cache.rules]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// What the rule knows about the responses it caches.
    pub kind: RuleKind,
    /// Raw path prefix the rule matches (compared byte for byte, never decoded).
    pub prefix: String,
    /// Size, TTL, stale and heuristic limits.
    pub limits: Limits,
    /// The `Host` the client sent is part of the key (for upstreams that serve several sites).
    pub key_includes_host: bool,
    /// Request fields a fill carries besides what the key covers (`cache::request`), for fields the
    /// upstream's answer never depends on: request ids, trace context.
    pub fill_fields: Vec<HeaderName>,
}

/// `stale_while_revalidate` when the rule sets none: the avatar rule's Cloudreve-aware window, none for
/// an `http` rule (RFC 9111 §4.2.4).
fn default_stale_while_revalidate(kind: RuleKind) -> Duration {
    match kind {
        RuleKind::Avatar => DEFAULT_AVATAR_STALE_WHILE_REVALIDATE,
        RuleKind::Http => DEFAULT_HTTP_STALE_WHILE_REVALIDATE,
    }
}

/// `stale_if_error` when the rule sets none, likewise.
fn default_stale_if_error(kind: RuleKind) -> Duration {
    match kind {
        RuleKind::Avatar => DEFAULT_AVATAR_STALE_IF_ERROR,
        RuleKind::Http => DEFAULT_HTTP_STALE_IF_ERROR,
    }
}

impl CacheConfig {
    /// The avatar rule, if configured.
    pub fn avatar(&self) -> Option<&RuleConfig> {
        self.rules.iter().find(|r| r.kind == RuleKind::Avatar)
    }

    /// The avatar rule's limits, to adjust (tests and tools).
    pub fn avatar_limits_mut(&mut self) -> &mut Limits {
        let rule = self.rules.iter_mut().find(|r| r.kind == RuleKind::Avatar);
        &mut rule.expect("no avatar rule is configured").limits
    }

    /// The largest object any rule stores.
    pub fn max_object_size(&self) -> usize {
        self.rules
            .iter()
            .map(|r| r.limits.max_object_size)
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCache {
    capacity: ByteSize,
    rules: Vec<RawRule>,
    snapshot_path: String,
    #[serde(with = "humantime_serde")]
    snapshot_timeout: Duration,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CACHE_CAPACITY,
            rules: vec![RawRule::new(RuleKind::Avatar), RawRule::assets()],
            snapshot_path: String::new(),
            snapshot_timeout: DEFAULT_SNAPSHOT_TIMEOUT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    kind: RuleKind,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default = "default_max_object_size")]
    max_object_size: ByteSize,
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    negative_ttl: Duration,
    /// Unset: the kind's default ([`default_stale_while_revalidate`]).
    #[serde(default, with = "humantime_serde")]
    stale_while_revalidate: Option<Duration>,
    /// Unset: the kind's default ([`default_stale_if_error`]).
    #[serde(default, with = "humantime_serde")]
    stale_if_error: Option<Duration>,
    #[serde(default = "default_keep", with = "humantime_serde")]
    keep: Duration,
    #[serde(default)]
    key_includes_host: bool,
    #[serde(default)]
    fill_fields: Vec<String>,
    #[serde(default = "default_heuristic_fraction")]
    heuristic_fraction: f64,
    #[serde(default = "default_heuristic_max", with = "humantime_serde")]
    heuristic_max: Duration,
}

fn default_max_object_size() -> ByteSize {
    DEFAULT_MAX_OBJECT_SIZE
}
fn default_negative_ttl() -> Duration {
    DEFAULT_NEGATIVE_TTL
}
fn default_keep() -> Duration {
    DEFAULT_KEEP
}
fn default_heuristic_fraction() -> f64 {
    DEFAULT_HEURISTIC_FRACTION
}
fn default_heuristic_max() -> Duration {
    DEFAULT_HEURISTIC_MAX
}

impl RawRule {
    fn new(kind: RuleKind) -> Self {
        Self {
            kind,
            prefix: None,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            stale_while_revalidate: None,
            stale_if_error: None,
            keep: DEFAULT_KEEP,
            key_includes_host: false,
            fill_fields: Vec::new(),
            heuristic_fraction: DEFAULT_HEURISTIC_FRACTION,
            heuristic_max: DEFAULT_HEURISTIC_MAX,
        }
    }

    fn assets() -> Self {
        Self {
            prefix: Some(ASSETS_PREFIX.to_owned()),
            max_object_size: DEFAULT_ASSETS_MAX_OBJECT_SIZE,
            ..Self::new(RuleKind::Http)
        }
    }
}

impl RawCache {
    pub(super) fn validate(self) -> Result<CacheConfig, ConfigError> {
        let capacity = self.capacity.as_u64();
        if capacity == 0 {
            return Err(invalid("cache.capacity", "must be more than 0 bytes"));
        }
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| rule.validate(index, capacity))
            .collect::<Result<Vec<_>, _>>()?;
        if rules.iter().filter(|r| r.kind == RuleKind::Avatar).count() > 1 {
            return Err(invalid(
                "cache.rules",
                "at most one rule may be of kind \"avatar\"",
            ));
        }
        if self.snapshot_timeout.is_zero() {
            return Err(invalid(
                "cache.snapshot_timeout",
                "must be more than 0s (leave cache.snapshot_path empty to write no snapshot)",
            ));
        }
        let snapshot_path = (!self.snapshot_path.is_empty())
            .then(|| snapshot_path(&self.snapshot_path))
            .transpose()?;
        Ok(CacheConfig {
            capacity,
            rules,
            snapshot_path,
            snapshot_timeout: self.snapshot_timeout,
        })
    }
}

/// `cache.snapshot_path`: a file name in a directory that exists and that this process may write (a file is
/// created there and removed again, as the snapshot's temporary file will be), so that a drain never finds
/// out too late. Checked at start and on every reload.
fn snapshot_path(path: &str) -> Result<PathBuf, ConfigError> {
    const KEY: &str = "cache.snapshot_path";
    let path = PathBuf::from(path);
    let Some(name) = path.file_name() else {
        return Err(invalid(KEY, format!("{} names no file", path.display())));
    };
    if path.is_dir() {
        return Err(invalid(
            KEY,
            format!("{} is a directory; name a file in it", path.display()),
        ));
    }
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        return Err(invalid(
            KEY,
            format!("directory {} does not exist", directory.display()),
        ));
    }
    let probe = directory.join(format!(
        ".{}.probe-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(path)
        }
        Err(err) => Err(invalid(
            KEY,
            format!("cannot write in {}: {err}", directory.display()),
        )),
    }
}

impl RawRule {
    fn validate(self, index: usize, capacity: u64) -> Result<RuleConfig, ConfigError> {
        let key = |field: &str| format!("cache.rules[{index}].{field}");
        let prefix = match (self.kind, self.prefix) {
            (RuleKind::Avatar, None) => AVATAR_PREFIX.to_owned(),
            (RuleKind::Avatar, Some(prefix)) if prefix == AVATAR_PREFIX => prefix,
            (RuleKind::Avatar, Some(_)) => {
                return Err(invalid(
                    key("prefix"),
                    format!("an avatar rule covers {AVATAR_PREFIX} only"),
                ));
            }
            (RuleKind::Http, Some(prefix)) if prefix.starts_with('/') => prefix,
            (RuleKind::Http, _) => {
                return Err(invalid(
                    key("prefix"),
                    "an http rule needs a path prefix starting with /",
                ));
            }
        };
        let max_object_size = self.max_object_size.as_u64();
        if max_object_size > capacity {
            let message = format!("{} is larger than cache.capacity", self.max_object_size);
            return Err(invalid(key("max_object_size"), message));
        }
        // moka weighs entries with a u32; keep one object well inside it.
        if max_object_size > u64::from(u32::MAX / 2) {
            return Err(invalid(key("max_object_size"), "must be below 2 GiB"));
        }
        if self.kind == RuleKind::Avatar && self.key_includes_host {
            // Both of the avatar rule's paths (hyper's and the express lane) key by the id alone: Cloudreve's
            // avatar answer depends on nothing else (upstream-contract.md). Taking the flag and ignoring it
            // would serve one site's avatars to another behind a multi-site upstream.
            return Err(invalid(
                key("key_includes_host"),
                "the avatar rule keys by the user id alone; put sites that share ids behind separate \
                 proxies, or leave it false",
            ));
        }
        if !(0.0..=1.0).contains(&self.heuristic_fraction) {
            return Err(invalid(
                key("heuristic_fraction"),
                "must be between 0 and 1",
            ));
        }
        Ok(RuleConfig {
            kind: self.kind,
            prefix,
            limits: Limits {
                max_object_size: max_object_size as usize,
                negative_ttl: self.negative_ttl,
                stale_while_revalidate: self
                    .stale_while_revalidate
                    .unwrap_or(default_stale_while_revalidate(self.kind)),
                stale_if_error: self
                    .stale_if_error
                    .unwrap_or(default_stale_if_error(self.kind)),
                keep: self.keep,
                heuristic_fraction: self.heuristic_fraction,
                heuristic_max: self.heuristic_max,
            },
            key_includes_host: self.key_includes_host,
            fill_fields: fill_fields(&self.fill_fields)
                .map_err(|why| invalid(key("fill_fields"), why))?,
        })
    }
}

/// Fields a fill never carries, whatever `fill_fields` says: its framing and the hop-by-hop fields (a fill has
/// no body, and its connection is the proxy's), the client's preconditions and ranges (a fill fetches the
/// whole current representation for everyone), and `Host` (carried already).
const NEVER_ON_A_FILL: [&str; 18] = [
    "connection",
    "content-length",
    "expect",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
];

/// `fill_fields`, as field names: valid ones, and none a fill may not carry.
fn fill_fields(names: &[String]) -> Result<Vec<HeaderName>, String> {
    names
        .iter()
        .map(|name| {
            let field = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a field name"))?;
            if NEVER_ON_A_FILL.contains(&field.as_str()) {
                return Err(format!("{name:?} is never sent on a fill"));
            }
            Ok(field)
        })
        .collect()
}
