//! The operational parts of `proxy.toml`: the `[admin]` listener, `[tls]`, the upstream's CA and trusted
//! proxies. Same rules as the rest of the schema: typed defaults, every error names its key; certificate files
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
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// How recent an upstream answer must be for `/readyz` to skip its own probe.
    pub readiness_window: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: String,
    #[serde(with = "humantime_serde")]
    readiness_window: Duration,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN.to_owned(),
            readiness_window: DEFAULT_READINESS_WINDOW,
        }
    }
}

impl RawAdmin {
    pub(super) fn validate(self) -> Result<AdminConfig, ConfigError> {
        non_zero("admin.readiness_window", self.readiness_window)?;
        Ok(AdminConfig {
            listen: parse_admin_listen(&self.listen)?,
            readiness_window: self.readiness_window,
        })
    }
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
