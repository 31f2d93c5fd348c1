//! `proxy.toml`: the file schema, its typed defaults, and validation into the runtime [`Config`].
//!
//! The raw structs mirror the file (`deny_unknown_fields`, every key optional); [`RawConfig::validate`]
//! turns them into [`Config`] once, so nothing downstream re-checks a value. Every error names the key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use http::Uri;
use http::uri::{Authority, Scheme};
use serde::Deserialize;

use crate::tls::{ServerCert, UpstreamRoots};

mod cache;
mod cluster;
mod ops;

use cache::RawCache;
pub use cache::{CacheConfig, DEFAULT_SNAPSHOT_TIMEOUT, Limits, RuleConfig, RuleKind};
pub use cluster::{
    ClusterConfig, DEFAULT_CLUSTER_RETENTION, DEFAULT_CLUSTER_STREAM,
    DEFAULT_MAX_STALE_WHEN_DETACHED, RedisUrl,
};
pub use ops::{
    ACCESS_LOG_MODE, AdminConfig, AdminToken, DEFAULT_ADMIN_LISTEN, DEFAULT_READINESS_WINDOW,
    TrustedProxies, open_access_log, require_admin_token,
};

/// Listen address: every interface, port 8080 (the load balancer connects from another host).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Tokio worker threads; 0 means one per core the process may run on.
pub const DEFAULT_WORKER_THREADS: usize = 0;
/// How long in-flight requests may run after SIGTERM/SIGINT before the process exits anyway.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a whole request head (HTTP/1.1), from its first byte.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent streams allowed on one HTTP/2 client connection: nginx's `http2_max_concurrent_streams`. Each
/// stream may hold an upstream connection while it lasts, so this is what one client connection can ask of
/// `upstream.max_connections` (RFC 9113 §10.5).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// A client connection with no request in progress is closed after this long (keep-alive, HTTP/2, or a
/// connection that never sends a request).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A response body with nothing from the upstream for this long is aborted. Above Cloudreve's 30 s
/// server-sent-event keep-alive, so event streams are never cut.
pub const DEFAULT_RESPONSE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A response the client takes nothing of for this long is aborted and its connection closed: nginx's
/// `send_timeout`.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest `server.send_timeout`: the watchdog looks four times per timeout on every connection, and a
/// client on a slow network pauses for longer than a fraction of a second.
pub const MIN_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `server.send_timeout`: longer lets a client that reads nothing hold an upstream connection
/// for longer than anything else in the proxy waits.
pub const MAX_SEND_TIMEOUT: Duration = Duration::from_secs(3600);
/// Bytes of access lines held in memory for the writer thread; lines past it are dropped and counted.
pub const DEFAULT_ACCESS_LOG_BUFFER: ByteSize = ByteSize::mib(1);
/// The smallest `log.access_log_buffer`: a few lines, batched.
pub const MIN_ACCESS_LOG_BUFFER: ByteSize = ByteSize::kib(4);
/// The largest `log.access_log_buffer`.
pub const MAX_ACCESS_LOG_BUFFER: ByteSize = ByteSize::gib(1);
/// Largest request head (request line and header fields) accepted; larger ones get 431.
pub const DEFAULT_MAX_REQUEST_HEAD_SIZE: ByteSize = ByteSize::kib(64);
/// Most header fields accepted in one request head; more get 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Client connections served at once; further connections wait in the listen backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// hyper's floor for its HTTP/1.1 read buffer, which is what bounds a request head.
pub const MIN_REQUEST_HEAD_SIZE: u64 = 8 * 1024;
/// Cloudreve's own default listen port is 5212.
pub const DEFAULT_UPSTREAM_URL: &str = "http://127.0.0.1:5212";
/// TCP connect to the upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// From sending a request to receiving the upstream's response head. Bodies have no total timeout.
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest pause in a request body being forwarded; a client that stops sending is cut off (408).
pub const DEFAULT_REQUEST_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle keep-alive connections to the upstream are closed after this long.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle keep-alive connections to the upstream are kept.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Connections to the upstream open at once (one descriptor each); a request that needs one more waits up to
/// `upstream.connect_timeout`, then gets 503. Far above what one Cloudreve serves at once, far below the
/// descriptors a default `server.max_connections` leaves under a 65536 limit.
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 1024;
/// The most `upstream.max_connections` (and `server.max_connections`) can usefully be: Linux's `fs.nr_open`
/// default, the most descriptors any one process may hold.
pub const MAX_DESCRIPTORS: usize = 1 << 20;

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The public listener.
    pub server: ServerConfig,
    /// The Cloudreve server behind the proxy.
    pub upstream: UpstreamConfig,
    /// The cache and its rules.
    pub cache: CacheConfig,
    /// Logging.
    pub log: LogConfig,
    /// The admin listener: metrics and health.
    pub admin: AdminConfig,
    /// TLS on the public listener; `None` for plain HTTP.
    pub tls: Option<ServerCert>,
    /// Invalidation shared with other instances through Redis; `None` (no `[cluster]`): this instance alone.
    pub cluster: Option<ClusterConfig>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the public listener.
    pub listen: SocketAddr,
    /// Tokio worker threads; `None` means one per available core.
    pub worker_threads: Option<usize>,
    /// Grace period for in-flight requests on shutdown.
    pub drain_timeout: Duration,
    /// Limit on reading one HTTP/1.1 request head.
    pub header_read_timeout: Duration,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the real client.
    pub proxy_protocol: bool,
    /// Peers whose `X-Forwarded-For` and `X-Forwarded-Proto` are kept and extended rather than replaced.
    pub trusted_proxies: TrustedProxies,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// A response body with nothing from the upstream for this long is aborted.
    pub response_idle_timeout: Duration,
    /// A response the client takes nothing of for this long closes its connection.
    pub send_timeout: Duration,
    /// Largest request head in bytes (HTTP/1.1 head; HTTP/2 header list).
    pub max_request_head_size: usize,
    /// Most header fields in one HTTP/1.1 request head.
    pub max_headers: usize,
    /// Client connections served at once.
    pub max_connections: usize,
    /// Plain HTTP/1.1 `GET`s of fresh avatars are answered beside hyper (`express.rs`).
    pub express_lane: bool,
}

/// `[upstream]`
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme of the upstream: `http` or `https`.
    pub scheme: Scheme,
    /// For `https`: the roots its certificate is verified against.
    pub tls: Option<UpstreamRoots>,
    /// `host:port` the proxy connects to.
    pub authority: Authority,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed from the request (body included) to the response head.
    pub response_header_timeout: Duration,
    /// Longest pause in a request body being forwarded.
    pub request_body_idle_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Most connections kept for reuse (idle, or finishing a response body).
    pub pool_max_idle: usize,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// `[log]`
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Text for people, JSON for log pipelines.
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is not set (tracing-subscriber `EnvFilter` syntax).
    pub level: String,
    /// Emit one `access` event per request.
    pub access_log: bool,
    /// Where access lines go: a file opened for appending (mode 0640, reopened on SIGUSR1), or standard
    /// error when `None`.
    pub access_log_path: Option<std::path::PathBuf>,
    /// Bytes of access lines waiting for the writer thread at most.
    pub access_log_buffer: usize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, ...).
    #[error("line {line} `{source_line}`: {message}")]
    Parse {
        /// 1-based line of the offending key or value.
        line: usize,
        /// That line of the file, trimmed.
        source_line: String,
        /// What the parser said, e.g. "unknown field `capacityy`, expected one of ...".
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `upstream.url` or `cache.rules[1].prefix`.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The file as written; every key may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    server: RawServer,
    upstream: RawUpstream,
    cache: RawCache,
    log: RawLog,
    admin: ops::RawAdmin,
    tls: ops::RawTls,
    cluster: Option<cluster::RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    listen: String,
    worker_threads: usize,
    #[serde(with = "humantime_serde")]
    drain_timeout: Duration,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Duration,
    h2_max_concurrent_streams: u32,
    proxy_protocol: bool,
    trusted_proxies: Vec<String>,
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    response_idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    send_timeout: Duration,
    max_request_head_size: ByteSize,
    max_headers: usize,
    max_connections: usize,
    express_lane: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            worker_threads: DEFAULT_WORKER_THREADS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            response_idle_timeout: DEFAULT_RESPONSE_IDLE_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_request_head_size: DEFAULT_MAX_REQUEST_HEAD_SIZE,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            express_lane: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawUpstream {
    url: String,
    #[serde(with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    response_header_timeout: Duration,
    #[serde(with = "humantime_serde")]
    request_body_idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
    max_connections: usize,
    ca_file: String,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: DEFAULT_UPSTREAM_URL.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_header_timeout: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            request_body_idle_timeout: DEFAULT_REQUEST_BODY_IDLE_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
            max_connections: DEFAULT_UPSTREAM_MAX_CONNECTIONS,
            ca_file: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    format: LogFormat,
    level: String,
    access_log: bool,
    access_log_path: String,
    access_log_buffer: ByteSize,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
            access_log: true,
            access_log_path: String::new(),
            access_log_buffer: DEFAULT_ACCESS_LOG_BUFFER,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str::<RawConfig>(text)
            .map_err(|err| parse_error(text, &err))?
            .validate()
    }

    /// Replaces the listen address (the `--listen` flag).
    pub fn set_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.server.listen = parse_listen(listen)?;
        Ok(())
    }

    /// Replaces the admin listen address (the `--admin-listen` flag).
    pub fn set_admin_listen(&mut self, listen: &str) -> Result<(), ConfigError> {
        self.admin.listen = ops::parse_admin_listen(listen)?;
        Ok(())
    }

    /// Checks, again, what the flags may have changed: the admin listener stays off the public port, and off
    /// loopback it has a token.
    pub fn check_listeners(&self) -> Result<(), ConfigError> {
        ops::check_apart(&self.server, &self.admin)?;
        require_admin_token(self.admin.listen, self.admin.token.as_ref())
    }

    /// Replaces the upstream URL (the `--upstream` flag). An `https://` URL is verified against
    /// `upstream.ca_file` if the file set one, else the system's roots.
    pub fn set_upstream(&mut self, url: &str) -> Result<(), ConfigError> {
        let (scheme, authority) = parse_upstream_url(url)?;
        let https = scheme == Scheme::HTTPS;
        if https != self.upstream.tls.is_some() {
            let ca_file = self.upstream.tls.as_ref().and_then(|t| t.ca_file.clone());
            let ca_file = ca_file.map(|p| p.display().to_string()).unwrap_or_default();
            self.upstream.tls = ops::upstream_roots(https, if https { &ca_file } else { "" })?;
        }
        (self.upstream.scheme, self.upstream.authority) = (scheme, authority);
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        RawConfig::default()
            .validate()
            .expect("the built-in defaults are valid")
    }
}

impl RawConfig {
    /// Checks every value and builds the runtime [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let config = Config {
            server: self.server.validate()?,
            upstream: self.upstream.validate()?,
            cache: self.cache.validate()?,
            log: self.log.validate()?,
            admin: self.admin.validate()?,
            tls: self.tls.validate()?,
            cluster: self
                .cluster
                .map(cluster::RawCluster::validate)
                .transpose()?,
        };
        ops::check_apart(&config.server, &config.admin)?;
        require_admin_token(config.admin.listen, config.admin.token.as_ref())?;
        Ok(config)
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        non_zero("server.drain_timeout", self.drain_timeout)?;
        non_zero("server.header_read_timeout", self.header_read_timeout)?;
        non_zero("server.idle_timeout", self.idle_timeout)?;
        non_zero("server.response_idle_timeout", self.response_idle_timeout)?;
        send_timeout(self.send_timeout)?;
        at_least_one(
            "server.h2_max_concurrent_streams",
            self.h2_max_concurrent_streams as usize,
        )?;
        at_least_one("server.max_headers", self.max_headers)?;
        descriptors("server.max_connections", self.max_connections)?;
        let max_request_head_size = request_head_size(self.max_request_head_size)?;
        Ok(ServerConfig {
            listen: parse_listen(&self.listen)?,
            worker_threads: (self.worker_threads > 0).then_some(self.worker_threads),
            drain_timeout: self.drain_timeout,
            header_read_timeout: self.header_read_timeout,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            proxy_protocol: self.proxy_protocol,
            trusted_proxies: TrustedProxies::parse(&self.trusted_proxies)?,
            idle_timeout: self.idle_timeout,
            response_idle_timeout: self.response_idle_timeout,
            send_timeout: self.send_timeout,
            max_request_head_size,
            max_headers: self.max_headers,
            max_connections: self.max_connections,
            express_lane: self.express_lane,
        })
    }
}

impl RawUpstream {
    fn validate(self) -> Result<UpstreamConfig, ConfigError> {
        non_zero("upstream.connect_timeout", self.connect_timeout)?;
        non_zero(
            "upstream.response_header_timeout",
            self.response_header_timeout,
        )?;
        non_zero(
            "upstream.request_body_idle_timeout",
            self.request_body_idle_timeout,
        )?;
        descriptors("upstream.max_connections", self.max_connections)?;
        let (scheme, authority) = parse_upstream_url(&self.url)?;
        let tls = ops::upstream_roots(scheme == Scheme::HTTPS, &self.ca_file)?;
        Ok(UpstreamConfig {
            scheme,
            tls,
            authority,
            connect_timeout: self.connect_timeout,
            response_header_timeout: self.response_header_timeout,
            request_body_idle_timeout: self.request_body_idle_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle: self.pool_max_idle,
            max_connections: self.max_connections,
        })
    }
}

impl RawLog {
    fn validate(self) -> Result<LogConfig, ConfigError> {
        if let Err(e) = self.level.parse::<tracing_subscriber::EnvFilter>() {
            return Err(invalid("log.level", e.to_string()));
        }
        if !(MIN_ACCESS_LOG_BUFFER..=MAX_ACCESS_LOG_BUFFER).contains(&self.access_log_buffer) {
            return Err(invalid(
                "log.access_log_buffer",
                format!(
                    "{} is outside {MIN_ACCESS_LOG_BUFFER}..={MAX_ACCESS_LOG_BUFFER}",
                    self.access_log_buffer
                ),
            ));
        }
        let access_log_path = match self.access_log_path.as_str() {
            "" => None,
            path => {
                // Opened (and created) now, so a path the proxy cannot write is an error at start and at
                // reload, not lines lost later.
                if let Err(err) = ops::open_access_log(Path::new(path)) {
                    return Err(invalid(
                        "log.access_log_path",
                        format!("cannot open {path} for appending: {err}"),
                    ));
                }
                Some(path.into())
            }
        };
        Ok(LogConfig {
            format: self.format,
            level: self.level,
            access_log: self.access_log,
            access_log_path,
            access_log_buffer: usize::try_from(self.access_log_buffer.as_u64())
                .unwrap_or(usize::MAX),
        })
    }
}

/// One line for the operator: where, and what (toml's own rendering spans several lines).
fn parse_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |span| span.start);
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    let source_line = text.lines().nth(line - 1).unwrap_or("").trim().to_owned();
    let message = err.message().trim().replace('\n', " ");
    ConfigError::Parse {
        line,
        source_line,
        message,
    }
}

fn non_zero(key: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(invalid(key, "must be longer than 0s"));
    }
    Ok(())
}

fn at_least_one(key: &'static str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

/// A count of connections, each a file descriptor: at least one, at most what a process can hold.
fn descriptors(key: &'static str, value: usize) -> Result<(), ConfigError> {
    at_least_one(key, value)?;
    if value > MAX_DESCRIPTORS {
        return Err(invalid(
            key,
            format!("{value} is more than a process can open ({MAX_DESCRIPTORS} descriptors)"),
        ));
    }
    Ok(())
}

/// `server.send_timeout` within [`MIN_SEND_TIMEOUT`] and [`MAX_SEND_TIMEOUT`].
fn send_timeout(value: Duration) -> Result<(), ConfigError> {
    if (MIN_SEND_TIMEOUT..=MAX_SEND_TIMEOUT).contains(&value) {
        return Ok(());
    }
    Err(invalid(
        "server.send_timeout",
        format!("{value:?} is outside 1s to 1h"),
    ))
}

/// hyper bounds an HTTP/1.1 head by its read buffer, which cannot be smaller than 8 KiB; HTTP/2 takes the
/// limit as a `u32` header list size.
fn request_head_size(size: ByteSize) -> Result<usize, ConfigError> {
    const KEY: &str = "server.max_request_head_size";
    let bytes = size.as_u64();
    if bytes < MIN_REQUEST_HEAD_SIZE {
        return Err(invalid(
            KEY,
            format!("{size} is below the minimum of 8 KiB"),
        ));
    }
    if bytes > u64::from(u32::MAX) {
        return Err(invalid(KEY, "must be below 4 GiB"));
    }
    Ok(bytes as usize)
}

fn parse_listen(listen: &str) -> Result<SocketAddr, ConfigError> {
    listen.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("{listen:?} is not an IP address with a port, e.g. \"0.0.0.0:8080\" or \"[::]:8080\""),
        )
    })
}

/// Accepts `http://host[:port][/]` and `https://host[:port][/]`; the port defaults to 80 and 443. Paths, queries and credentials are refused
/// because the proxy forwards each request's own path unchanged.
fn parse_upstream_url(url: &str) -> Result<(Scheme, Authority), ConfigError> {
    const KEY: &str = "upstream.url";
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(KEY, format!("{url:?} is not a URL: {e}")))?;
    let (scheme, default_port) = match uri.scheme_str() {
        Some("http") => (Scheme::HTTP, 80),
        Some("https") => (Scheme::HTTPS, 443),
        _ => {
            return Err(invalid(
                KEY,
                format!("{url:?} must start with http:// or https://"),
            ));
        }
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| invalid(KEY, format!("{url:?} has no host")))?;
    if authority.as_str().contains('@') {
        return Err(invalid(KEY, "credentials in the URL are not supported"));
    }
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err(invalid(
            KEY,
            format!("{url:?} must not have a path or query; requests keep their own"),
        ));
    }
    let authority = match authority.port_u16() {
        Some(_) => authority.clone(),
        None => format!("{}:{default_port}", authority.host())
            .parse()
            .map_err(|_| invalid(KEY, format!("{url:?} has an invalid host")))?,
    };
    Ok((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an Invalid error, got {other}"),
        }
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.server.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.server.worker_threads, None);
        assert_eq!(config.upstream.authority.as_str(), "127.0.0.1:5212");
        assert_eq!(config.cache.capacity, 256 * 1024 * 1024);
        let kinds: Vec<_> = config
            .cache
            .rules
            .iter()
            .map(|r| (r.kind, r.prefix.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (RuleKind::Avatar, "/api/v4/user/avatar/"),
                (RuleKind::Http, "/assets/")
            ]
        );
        let avatar = config.cache.avatar().unwrap();
        assert_eq!(avatar.limits.max_object_size, 1024 * 1024);
        assert_eq!(avatar.limits.negative_ttl, Duration::from_secs(60));
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn the_cache_tests_limits_are_the_avatar_rules_defaults() {
        let config = Config::from_toml("").unwrap();
        let avatar = config.cache.avatar().unwrap();
        assert_eq!(avatar.limits, Limits::AVATAR_DEFAULTS);
    }

    #[test]
    fn units_are_parsed_from_strings() {
        let config = Config::from_toml(
            "[cache]\ncapacity = \"64 MiB\"\n[[cache.rules]]\nkind = \"avatar\"\n\
             max_object_size = \"512 KiB\"\nnegative_ttl = \"2m\"\n",
        )
        .unwrap();
        assert_eq!(config.cache.capacity, 64 * 1024 * 1024);
        let avatar = config.cache.avatar().unwrap();
        assert_eq!(avatar.limits.max_object_size, 512 * 1024);
        assert_eq!(avatar.limits.negative_ttl, Duration::from_secs(120));
        assert_eq!(
            config.cache.rules.len(),
            1,
            "a rules list replaces the default rules"
        );
    }

    #[test]
    fn rules_are_checked_one_by_one() {
        let cases = [
            ("kind = \"http\"", "cache.rules[0].prefix"),
            (
                "kind = \"http\"\nprefix = \"assets/\"",
                "cache.rules[0].prefix",
            ),
            (
                "kind = \"avatar\"\nprefix = \"/api/\"",
                "cache.rules[0].prefix",
            ),
            (
                "kind = \"http\"\nprefix = \"/a/\"\nheuristic_fraction = 2.0",
                "cache.rules[0].heuristic_fraction",
            ),
        ];
        for (rule, key) in cases {
            let err = Config::from_toml(&format!("[[cache.rules]]\n{rule}\n")).unwrap_err();
            assert_eq!(key_of(err), key, "{rule}");
        }
    }

    #[test]
    fn a_rule_needs_a_kind() {
        let err = Config::from_toml("[[cache.rules]]\nprefix = \"/a/\"\n").unwrap_err();
        assert!(err.to_string().contains("kind"), "{err}");
    }

    #[test]
    fn only_one_avatar_rule() {
        let err = Config::from_toml(
            "[[cache.rules]]\nkind = \"avatar\"\n[[cache.rules]]\nkind = \"avatar\"\n",
        )
        .unwrap_err();
        assert_eq!(key_of(err), "cache.rules");
    }

    #[test]
    fn snapshot_path_is_off_by_default_and_must_name_a_file_in_a_writable_directory() {
        let config = Config::default();
        assert_eq!(config.cache.snapshot_path, None);
        assert_eq!(config.cache.snapshot_timeout, DEFAULT_SNAPSHOT_TIMEOUT);
        let dir = std::env::temp_dir().join(format!("edge-config-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cache.snapshot");
        let toml = |path: &Path| {
            format!(
                "[cache]\nsnapshot_path = {:?}\n",
                path.display().to_string()
            )
        };
        let config = Config::from_toml(&toml(&file)).unwrap();
        assert_eq!(config.cache.snapshot_path.as_deref(), Some(file.as_path()));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe is removed"
        );
        for refused in [dir.clone(), dir.join("missing").join("cache.snapshot")] {
            let err = Config::from_toml(&toml(&refused)).unwrap_err();
            assert_eq!(key_of(err), "cache.snapshot_path", "{}", refused.display());
        }
        let err = Config::from_toml("[cache]\nsnapshot_timeout = \"0s\"\n").unwrap_err();
        assert_eq!(key_of(err), "cache.snapshot_timeout");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_rules_caches_nothing() {
        let config = Config::from_toml("[cache]\nrules = []\n").unwrap();
        assert!(config.cache.rules.is_empty());
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = Config::from_toml("[cache]\ncapacityy = \"1 MiB\"\n").unwrap_err();
        assert!(err.to_string().contains("capacityy"), "{err}");
    }

    #[test]
    fn parse_errors_are_one_line_with_the_line_number() {
        let err =
            Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\n\n[cache]\ncapacityy = 1\n")
                .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("line 5 `capacityy = 1`: unknown field `capacityy`"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn unknown_section_is_rejected() {
        let err = Config::from_toml("[cahce]\n").unwrap_err();
        assert!(err.to_string().contains("cahce"), "{err}");
    }

    #[test]
    fn upstream_url_without_port_defaults_to_80() {
        let config =
            Config::from_toml("[upstream]\nurl = \"http://cloudreve.internal\"\n").unwrap();
        assert_eq!(config.upstream.authority.as_str(), "cloudreve.internal:80");
    }

    #[test]
    fn upstream_url_with_trailing_slash_is_accepted() {
        let config = Config::from_toml("[upstream]\nurl = \"http://10.0.0.2:5212/\"\n").unwrap();
        assert_eq!(config.upstream.authority.as_str(), "10.0.0.2:5212");
    }

    #[test]
    fn bad_upstream_urls_name_the_key() {
        for url in [
            "ftp://x:1",
            "10.0.0.2:5212",
            "http://x:1/cloudreve",
            "http://u:p@x:1",
        ] {
            let err = Config::from_toml(&format!("[upstream]\nurl = \"{url}\"\n")).unwrap_err();
            assert_eq!(key_of(err), "upstream.url", "{url}");
        }
    }

    #[test]
    fn bad_listen_names_the_key() {
        let err = Config::from_toml("[server]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(key_of(err), "server.listen");
    }

    #[test]
    fn object_larger_than_capacity_is_rejected() {
        let err = Config::from_toml(
            "[cache]\ncapacity = \"1 MiB\"\n[[cache.rules]]\nkind = \"avatar\"\nmax_object_size = \"2 MiB\"\n",
        )
        .unwrap_err();
        assert_eq!(key_of(err), "cache.rules[0].max_object_size");
    }

    #[test]
    fn key_includes_host_is_refused_on_the_avatar_rule() {
        let err =
            Config::from_toml("[[cache.rules]]\nkind = \"avatar\"\nkey_includes_host = true\n")
                .unwrap_err();
        assert_eq!(key_of(err), "cache.rules[0].key_includes_host");
        let http = "[[cache.rules]]\nkind = \"http\"\nprefix = \"/a/\"\nkey_includes_host = true\n";
        assert!(Config::from_toml(http).unwrap().cache.rules[0].key_includes_host);
    }

    #[test]
    fn fill_fields_take_field_names_but_never_framing_or_preconditions() {
        let rule = |fields: &str| {
            Config::from_toml(&format!(
                "[[cache.rules]]\nkind = \"http\"\nprefix = \"/a/\"\nfill_fields = {fields}\n"
            ))
        };
        let config = rule(r#"["X-Request-Id", "traceparent"]"#).unwrap();
        assert_eq!(
            config.cache.rules[0].fill_fields,
            ["x-request-id", "traceparent"]
        );
        for refused in [
            r#"["content-length"]"#,
            r#"["If-None-Match"]"#,
            r#"["range"]"#,
            r#"["bad name"]"#,
        ] {
            let err = rule(refused).unwrap_err();
            assert_eq!(key_of(err), "cache.rules[0].fill_fields", "{refused}");
        }
    }

    #[test]
    fn zero_timeouts_are_rejected() {
        let err = Config::from_toml("[upstream]\nconnect_timeout = \"0s\"\n").unwrap_err();
        assert_eq!(key_of(err), "upstream.connect_timeout");
    }

    #[test]
    fn request_head_size_below_hypers_floor_is_rejected() {
        let err = Config::from_toml("[server]\nmax_request_head_size = \"4 KiB\"\n").unwrap_err();
        assert_eq!(key_of(err), "server.max_request_head_size");
        let config = Config::from_toml("[server]\nmax_request_head_size = \"8 KiB\"\n").unwrap();
        assert_eq!(config.server.max_request_head_size, 8192);
    }

    #[test]
    fn zero_limits_are_rejected() {
        for (key, line) in [
            ("server.max_connections", "max_connections = 0"),
            ("server.max_headers", "max_headers = 0"),
            ("server.idle_timeout", "idle_timeout = \"0s\""),
            (
                "server.h2_max_concurrent_streams",
                "h2_max_concurrent_streams = 0",
            ),
        ] {
            let err = Config::from_toml(&format!("[server]\n{line}\n")).unwrap_err();
            assert_eq!(key_of(err), key, "{line}");
        }
    }

    #[test]
    fn resource_limits_default_as_documented() {
        let config = Config::default();
        assert_eq!(config.server.h2_max_concurrent_streams, 100);
        assert_eq!(config.server.send_timeout, Duration::from_secs(60));
        assert_eq!(config.upstream.max_connections, 1024);
    }

    #[test]
    fn zero_or_absurd_resource_limits_are_rejected() {
        for (key, text) in [
            ("server.send_timeout", "[server]\nsend_timeout = \"0s\""),
            ("server.send_timeout", "[server]\nsend_timeout = \"500ms\""),
            ("server.send_timeout", "[server]\nsend_timeout = \"2h\""),
            (
                "upstream.max_connections",
                "[upstream]\nmax_connections = 0",
            ),
            (
                "upstream.max_connections",
                "[upstream]\nmax_connections = 1048577",
            ),
            (
                "server.max_connections",
                "[server]\nmax_connections = 1048577",
            ),
        ] {
            let err = Config::from_toml(&format!("{text}\n")).unwrap_err();
            assert_eq!(key_of(err), key, "{text}");
        }
        let config = Config::from_toml(
            "[server]\nsend_timeout = \"1s\"\n[upstream]\nmax_connections = 1048576\n",
        )
        .unwrap();
        assert_eq!(config.server.send_timeout, Duration::from_secs(1));
        assert_eq!(config.upstream.max_connections, 1 << 20);
    }

    #[test]
    fn bad_duration_is_a_parse_error_naming_the_key() {
        let err = Config::from_toml("[server]\ndrain_timeout = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("drain_timeout"), "{err}");
    }

    #[test]
    fn bad_log_level_names_the_key() {
        let err = Config::from_toml("[log]\nlevel = \"cloudreve_edge=loud\"\n").unwrap_err();
        assert_eq!(key_of(err), "log.level");
    }

    #[test]
    fn flags_override_the_file() {
        let mut config = Config::default();
        config.set_listen("127.0.0.1:0").unwrap();
        config.set_upstream("http://127.0.0.1:9").unwrap();
        assert_eq!(config.server.listen.port(), 0);
        assert_eq!(config.upstream.authority.as_str(), "127.0.0.1:9");
    }
}
