//! The operational parts of `proxy.toml`: the `[admin]` listener and its token, `[tls]`, the upstream's CA
//! and trusted proxies. Same rules as the rest of the schema: typed defaults, every error names its key; certificate files
//! are read here, so `--check` and a reload reject a broken one before it is used.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{ConfigError, ServerConfig, invalid, non_zero};
use crate::tls::{ServerCert, UpstreamRoots};

/// Admin listener: loopback only, so metrics and health are not public unless the operator says so.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// An upstream answer this recent makes `/readyz` say ready without probing.
pub const DEFAULT_READINESS_WINDOW: Duration = Duration::from_secs(10);

/// `[admin]`
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`, the purge API).
    pub listen: SocketAddr,
    /// How recent an upstream answer must be for `/readyz` to skip its own probe.
    pub readiness_window: Duration,
    /// The bearer token the purge API (`/purge/...`, `/stats`) asks for; `None`: no token (loopback only).
    pub token: Option<AdminToken>,
}

/// `admin.token`: a bearer token (RFC 6750 `b64token` characters). Its `Debug` output hides it, so a logged
/// configuration never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Checks the characters: letters, digits and `-._~+/`, then optional trailing `=`, as what
    /// `openssl rand -hex 32` or `openssl rand -base64 32` prints.
    pub fn new(token: &str) -> Result<Self, ConfigError> {
        let body = token.trim_end_matches('=');
        let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
        if body.is_empty() || !body.chars().all(b64token) {
            return Err(invalid(
                "admin.token",
                "must be letters, digits and -._~+/ (then optional =), e.g. the output of \
                 `openssl rand -hex 32`",
            ));
        }
        Ok(Self(token.to_owned()))
    }

    /// The token as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: String,
    #[serde(with = "humantime_serde")]
    readiness_window: Duration,
    token: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN.to_owned(),
            readiness_window: DEFAULT_READINESS_WINDOW,
            token: String::new(),
        }
    }
}

impl RawAdmin {
    pub(super) fn validate(self) -> Result<AdminConfig, ConfigError> {
        non_zero("admin.readiness_window", self.readiness_window)?;
        let token = match self.token.as_str() {
            "" => None,
            token => Some(AdminToken::new(token)?),
        };
        Ok(AdminConfig {
            listen: parse_admin_listen(&self.listen)?,
            readiness_window: self.readiness_window,
            token,
        })
    }
}

/// Permissions of an access log file the proxy creates (access logs hold client addresses).
pub const ACCESS_LOG_MODE: u32 = 0o640;

/// Opens an access log file for appending, creating it with [`ACCESS_LOG_MODE`]: how the writer opens it,
/// and how validation finds out at start and at reload that it cannot.
pub fn open_access_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(ACCESS_LOG_MODE)
        .open(path)
}

/// The purge API on an admin listener other clients can reach must ask for a token: off loopback, none set is
/// an error naming `admin.token`. Checked at start (after the flags) and on every reload, against the admin
/// address that is actually bound.
pub fn require_admin_token(
    listen: SocketAddr,
    token: Option<&AdminToken>,
) -> Result<(), ConfigError> {
    if token.is_some() || listen.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(invalid(
        "admin.token",
        format!(
            "must be set when admin.listen ({listen}) is not a loopback address: the purge API would be \
             open to anyone who reaches it (or listen on 127.0.0.1)"
        ),
    ))
}

pub(super) fn parse_admin_listen(listen: &str) -> Result<SocketAddr, ConfigError> {
    listen.parse().map_err(|_| {
        invalid(
            "admin.listen",
            format!("{listen:?} is not an IP address with a port, e.g. \"127.0.0.1:9091\""),
        )
    })
}

/// `[tls]`: both files, or neither (plain HTTP).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTls {
    cert: String,
    key: String,
}

impl RawTls {
    pub(super) fn validate(self) -> Result<Option<ServerCert>, ConfigError> {
        match (self.cert.is_empty(), self.key.is_empty()) {
            (true, true) => Ok(None),
            (false, true) => Err(invalid("tls.key", "is needed when tls.cert is set")),
            (true, false) => Err(invalid("tls.cert", "is needed when tls.key is set")),
            (false, false) => ServerCert::load(Path::new(&self.cert), Path::new(&self.key))
                .map(Some)
                .map_err(|e| invalid("tls.cert", e.to_string())),
        }
    }
}

/// The roots for an `https://` upstream: `upstream.ca_file`, or the system's when it is empty. `None` for
/// `http://`, where a CA file would be a mistake worth reporting.
pub(super) fn upstream_roots(
    https: bool,
    ca_file: &str,
) -> Result<Option<UpstreamRoots>, ConfigError> {
    const KEY: &str = "upstream.ca_file";
    if !https {
        if !ca_file.is_empty() {
            return Err(invalid(KEY, "is only used with an https:// upstream.url"));
        }
        return Ok(None);
    }
    let ca_file = (!ca_file.is_empty()).then(|| Path::new(ca_file));
    UpstreamRoots::load(ca_file)
        .map(Some)
        .map_err(|e| invalid(KEY, e.to_string()))
}

/// The admin listener never shares the public port: metrics, readiness and (later) purging are for the
/// operator and the load balancer, not for clients. Port 0 (any free port, as tests use) never clashes.
pub(super) fn check_apart(server: &ServerConfig, admin: &AdminConfig) -> Result<(), ConfigError> {
    let (public, private) = (server.listen, admin.listen);
    let same_port = public.port() == private.port() && public.port() != 0;
    let overlap = public.ip() == private.ip()
        || public.ip().is_unspecified()
        || private.ip().is_unspecified();
    if same_port && overlap {
        return Err(invalid(
            "admin.listen",
            format!(
                "{private} overlaps server.listen ({public}); the admin listener needs its own port"
            ),
        ));
    }
    Ok(())
}

/// Peers whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// The networks, as written (a bare address is a /32 or /128).
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `2001:db8::/32`) and bare addresses.
    pub fn parse(entries: &[String]) -> Result<Self, ConfigError> {
        let networks = entries
            .iter()
            .map(|entry| parse_network(entry))
            .collect::<Result<_, _>>()?;
        Ok(Self { networks })
    }

    /// Whether `ip` is inside one of the networks. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports for an IPv4 peer) is compared as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|network| network.contains(&ip))
    }
}

fn parse_network(entry: &str) -> Result<IpNet, ConfigError> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            invalid(
                "server.trusted_proxies",
                format!("{entry:?} is not an address or a CIDR such as \"10.0.0.0/8\""),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        TrustedProxies::parse(&entries).unwrap()
    }

    #[test]
    fn admin_on_the_public_port_is_rejected() {
        for (public, admin) in [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:9091", "0.0.0.0:9091"),
        ] {
            let text = format!("[server]\nlisten = \"{public}\"\n[admin]\nlisten = \"{admin}\"\n");
            let err = crate::Config::from_toml(&text).unwrap_err();
            assert!(err.to_string().starts_with("admin.listen: "), "{err}");
        }
    }

    #[test]
    fn admin_on_another_port_or_address_is_accepted() {
        for (public, admin) in [
            ("0.0.0.0:8080", "127.0.0.1:9091"),
            ("10.0.0.1:80", "127.0.0.1:80"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            let text = format!("[server]\nlisten = \"{public}\"\n[admin]\nlisten = \"{admin}\"\n");
            crate::Config::from_toml(&text).unwrap();
        }
    }

    fn admin(listen: &str, token: &str) -> Result<crate::Config, ConfigError> {
        crate::Config::from_toml(&format!(
            "[admin]\nlisten = \"{listen}\"\ntoken = \"{token}\"\n"
        ))
    }

    #[test]
    fn non_loopback_admin_without_a_token_is_refused() {
        for listen in [
            "0.0.0.0:9091",
            "10.0.0.11:9091",
            "[::]:9091",
            "[2001:db8::1]:9091",
            "[::ffff:10.0.0.1]:9091",
        ] {
            let err = admin(listen, "").unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("admin.token: "), "{listen}: {message}");
            assert!(message.contains("loopback"), "{message}");
        }
    }

    #[test]
    fn loopback_admin_needs_no_token() {
        for listen in [
            "127.0.0.1:9091",
            "127.0.0.53:9091",
            "[::1]:9091",
            "[::ffff:127.0.0.1]:9091",
        ] {
            let config = admin(listen, "").unwrap();
            assert!(config.admin.token.is_none(), "{listen}");
        }
        assert!(crate::Config::default().admin.token.is_none());
    }

    #[test]
    fn non_loopback_admin_with_a_token_is_accepted() {
        let config = admin("0.0.0.0:9091", "0123456789abcdef").unwrap();
        let token = config.admin.token.expect("set");
        assert_eq!(token.as_str(), "0123456789abcdef");
    }

    #[test]
    fn a_flag_moving_the_admin_listener_off_loopback_needs_a_token() {
        let mut config = crate::Config::default();
        config.set_admin_listen("0.0.0.0:9091").unwrap();
        let err = config.check_listeners().unwrap_err();
        assert!(err.to_string().starts_with("admin.token: "), "{err}");
        config.admin.token = Some(AdminToken::new("s3cret").unwrap());
        config.check_listeners().unwrap();
    }

    #[test]
    fn token_characters_are_checked() {
        for bad in ["two words", "quote\\\"", "=", "tab\\t", "ünï"] {
            let err = admin("127.0.0.1:9091", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("admin.token: "),
                "{bad:?}: {err}"
            );
        }
        for good in [
            "s3cret",
            "a-b.c_d~e+f/g==",
            "0123456789abcdef0123456789abcdef",
        ] {
            admin("127.0.0.1:9091", good).unwrap();
        }
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let config = admin("0.0.0.0:9091", "hunter2hunter2").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn cidrs_and_bare_addresses_are_matched() {
        let list = trusted(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
        for inside in ["10.200.1.1", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(list.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["11.0.0.1", "192.0.2.8", "2001:db9::1"] {
            assert!(!list.contains(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn empty_list_trusts_nobody() {
        assert!(!trusted(&[]).contains("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_entry_names_the_key() {
        let err = TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).unwrap_err();
        assert!(
            err.to_string().starts_with("server.trusted_proxies: "),
            "{err}"
        );
    }
}
