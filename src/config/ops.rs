//! The operational parts of `proxy.toml`: trusted proxies (this file grows the admin listener and TLS
//! sections). Same rules as the rest of the schema: typed defaults, every error names its key.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{ConfigError, invalid};

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
