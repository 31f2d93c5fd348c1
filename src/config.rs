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

/// Listen address: every interface, port 8080 (the load balancer connects from another host).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Tokio worker threads; 0 means one per core the process may run on.
pub const DEFAULT_WORKER_THREADS: usize = 0;
/// How long in-flight requests may run after SIGTERM/SIGINT before the process exits anyway.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a whole request head (HTTP/1.1), from its first byte.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent streams allowed on one HTTP/2 client connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// A client connection with no request in progress is closed after this long (keep-alive, HTTP/2, or a
/// connection that never sends a request).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A response body with nothing from the upstream for this long is aborted. Above Cloudreve's 30 s
/// server-sent-event keep-alive, so event streams are never cut.
pub const DEFAULT_RESPONSE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
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
/// Memory for cached avatars (bodies, headers and keys), in bytes.
pub const DEFAULT_CACHE_CAPACITY: ByteSize = ByteSize::mib(256);
/// Responses larger than this are streamed through, never stored.
pub const DEFAULT_MAX_OBJECT_SIZE: ByteSize = ByteSize::mib(1);
/// A stored 404 ("no avatar yet") is kept at most this long, whatever upstream's max-age says.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The public listener.
    pub server: ServerConfig,
    /// The Cloudreve server behind the proxy.
    pub upstream: UpstreamConfig,
    /// The avatar cache.
    pub cache: CacheConfig,
    /// Logging.
    pub log: LogConfig,
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
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// A response body with nothing from the upstream for this long is aborted.
    pub response_idle_timeout: Duration,
    /// Largest request head in bytes (HTTP/1.1 head; HTTP/2 header list).
    pub max_request_head_size: usize,
    /// Most header fields in one HTTP/1.1 request head.
    pub max_headers: usize,
    /// Client connections served at once.
    pub max_connections: usize,
}

/// `[upstream]`
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme of the upstream (only `http` for now).
    pub scheme: Scheme,
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
    /// Maximum idle pooled connections.
    pub pool_max_idle: usize,
}

/// `[cache]`
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Byte budget for the whole cache.
    pub capacity: u64,
    /// Largest body that is stored.
    pub max_object_size: usize,
    /// Cap on the freshness of a stored 404.
    pub negative_ttl: Duration,
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
        /// Dotted key, e.g. `upstream.url`.
        key: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
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
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    response_idle_timeout: Duration,
    max_request_head_size: ByteSize,
    max_headers: usize,
    max_connections: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            worker_threads: DEFAULT_WORKER_THREADS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            response_idle_timeout: DEFAULT_RESPONSE_IDLE_TIMEOUT,
            max_request_head_size: DEFAULT_MAX_REQUEST_HEAD_SIZE,
            max_headers: DEFAULT_MAX_HEADERS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCache {
    capacity: ByteSize,
    max_object_size: ByteSize,
    #[serde(with = "humantime_serde")]
    negative_ttl: Duration,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CACHE_CAPACITY,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    format: LogFormat,
    level: String,
    access_log: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
            access_log: true,
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

    /// Replaces the upstream URL (the `--upstream` flag).
    pub fn set_upstream(&mut self, url: &str) -> Result<(), ConfigError> {
        (self.upstream.scheme, self.upstream.authority) = parse_upstream_url(url)?;
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
        Ok(Config {
            server: self.server.validate()?,
            upstream: self.upstream.validate()?,
            cache: self.cache.validate()?,
            log: self.log.validate()?,
        })
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        non_zero("server.drain_timeout", self.drain_timeout)?;
        non_zero("server.header_read_timeout", self.header_read_timeout)?;
        non_zero("server.idle_timeout", self.idle_timeout)?;
        non_zero("server.response_idle_timeout", self.response_idle_timeout)?;
        at_least_one(
            "server.h2_max_concurrent_streams",
            self.h2_max_concurrent_streams as usize,
        )?;
        at_least_one("server.max_headers", self.max_headers)?;
        at_least_one("server.max_connections", self.max_connections)?;
        let max_request_head_size = request_head_size(self.max_request_head_size)?;
        Ok(ServerConfig {
            listen: parse_listen(&self.listen)?,
            worker_threads: (self.worker_threads > 0).then_some(self.worker_threads),
            drain_timeout: self.drain_timeout,
            header_read_timeout: self.header_read_timeout,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            idle_timeout: self.idle_timeout,
            response_idle_timeout: self.response_idle_timeout,
            max_request_head_size,
            max_headers: self.max_headers,
            max_connections: self.max_connections,
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
        let (scheme, authority) = parse_upstream_url(&self.url)?;
        Ok(UpstreamConfig {
            scheme,
            authority,
            connect_timeout: self.connect_timeout,
            response_header_timeout: self.response_header_timeout,
            request_body_idle_timeout: self.request_body_idle_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle: self.pool_max_idle,
        })
    }
}

impl RawCache {
    fn validate(self) -> Result<CacheConfig, ConfigError> {
        let capacity = self.capacity.as_u64();
        let max_object_size = self.max_object_size.as_u64();
        if capacity == 0 {
            return Err(invalid("cache.capacity", "must be more than 0 bytes"));
        }
        if max_object_size > capacity {
            return Err(invalid(
                "cache.max_object_size",
                format!(
                    "{} is larger than cache.capacity ({})",
                    self.max_object_size, self.capacity
                ),
            ));
        }
        // moka weighs entries with a u32; keep one object well inside it.
        if max_object_size > u64::from(u32::MAX / 2) {
            return Err(invalid("cache.max_object_size", "must be below 2 GiB"));
        }
        Ok(CacheConfig {
            capacity,
            max_object_size: max_object_size as usize,
            negative_ttl: self.negative_ttl,
        })
    }
}

impl RawLog {
    fn validate(self) -> Result<LogConfig, ConfigError> {
        if let Err(e) = self.level.parse::<tracing_subscriber::EnvFilter>() {
            return Err(invalid("log.level", e.to_string()));
        }
        Ok(LogConfig {
            format: self.format,
            level: self.level,
            access_log: self.access_log,
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

/// Accepts `http://host[:port][/]`; the port defaults to 80. Paths, queries and credentials are refused
/// because the proxy forwards each request's own path unchanged.
fn parse_upstream_url(url: &str) -> Result<(Scheme, Authority), ConfigError> {
    const KEY: &str = "upstream.url";
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(KEY, format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                KEY,
                "https upstreams are not supported yet; use http://",
            ));
        }
        _ => return Err(invalid(KEY, format!("{url:?} must start with http://"))),
    }
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
        None => format!("{}:80", authority.host())
            .parse()
            .map_err(|_| invalid(KEY, format!("{url:?} has an invalid host")))?,
    };
    Ok((Scheme::HTTP, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(err: ConfigError) -> &'static str {
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
        assert_eq!(config.cache.capacity, DEFAULT_CACHE_CAPACITY.as_u64());
        assert_eq!(config.cache.max_object_size, 1024 * 1024);
        assert_eq!(config.cache.negative_ttl, Duration::from_secs(60));
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn units_are_parsed_from_strings() {
        let config = Config::from_toml(
            "[cache]\ncapacity = \"64 MiB\"\nmax_object_size = \"512 KiB\"\nnegative_ttl = \"2m\"\n",
        )
        .unwrap();
        assert_eq!(config.cache.capacity, 64 * 1024 * 1024);
        assert_eq!(config.cache.max_object_size, 512 * 1024);
        assert_eq!(config.cache.negative_ttl, Duration::from_secs(120));
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
            "https://x",
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
        let err = Config::from_toml("[cache]\ncapacity = \"1 MiB\"\nmax_object_size = \"2 MiB\"\n")
            .unwrap_err();
        assert_eq!(key_of(err), "cache.max_object_size");
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
