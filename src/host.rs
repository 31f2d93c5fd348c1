//! The host a request is for, and what counts as one: the one check of a `Host` value or a request-target
//! authority (RFC 9110 §7.2, RFC 3986 §3.2.2-3.2.3), used by the framing guard on raw HTTP/1.1 heads, by
//! the request filter on every protocol, and by the upstream request.

use http::Uri;
use http::header::{self, HeaderMap};

/// Why a request's host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// More than one `Host` field line (RFC 9112 §3.2: MUST answer 400; in HTTP/2 too, where `Host` is
    /// no list either, RFC 9110 §7.2, §5.3).
    Repeated,
    /// A `Host` value that is not a host (see [`valid`]).
    Invalid,
    /// A request-target authority (HTTP/2 `:authority`, an HTTP/1.1 absolute-form target) that is not a
    /// host: userinfo (RFC 9110 §4.2.4: `user:pass@` is not to be sent, and is refused here), an empty host
    /// (RFC 9110 §4.2.1), or anything else [`valid`] refuses.
    InvalidAuthority,
}

impl HostError {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Repeated => "repeated-host",
            Self::Invalid => "invalid-host",
            Self::InvalidAuthority => "invalid-authority",
        }
    }
}

/// Whether `value` is a host this proxy accepts, `uri-host [ ":" port ]` read strictly:
///
/// - empty: the `Host` a client sends for a target without an authority (RFC 9110 §7.2); or
/// - a name of ASCII letters, digits, `-`, `.`, `_` and `~` (RFC 3986 `unreserved`; an IPv4 address is
///   one), or an IPv6 address in brackets; then optionally `:` and a port of 1 to 5 digits, at most 65535.
///
/// Refused although RFC 3986 allows them in a `reg-name` or an `IP-literal`, because no host name has them
/// and each is one more way for two parsers to disagree: percent-encoding, the other sub-delims
/// (`!$&'()*+,;=`), IPvFuture, IPv6 zone ids, an empty port (`host:`). Refused as not a host at all:
/// userinfo (`@`), a path, query or fragment (`/`, `?`, `#`), whitespace, anything not ASCII.
pub fn valid(value: &[u8]) -> bool {
    // One pass, no `memchr`: a `Host` is a dozen bytes, where a vectorised search costs more than it saves,
    // and every HTTP/1.1 head (the express lane's hits too) is checked.
    let (name_valid, name_end) = match value.first() {
        None => return true,
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(close) => (valid_ipv6(&value[1..close]), close + 1),
            None => return false,
        },
        Some(_) => {
            let end = value
                .iter()
                .position(|&b| !NAME_BYTE[usize::from(b)])
                .unwrap_or(value.len());
            (end > 0, end)
        }
    };
    name_valid && valid_port(&value[name_end..])
}

/// The bytes of a host name: RFC 3986 `unreserved` (letters, digits, `-`, `.`, `_`, `~`). A table, because
/// every HTTP/1.1 head's `Host` is checked on the express lane's hit path too.
static NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

/// The inside of an IP-literal: an IPv6 address (no zone id, no IPvFuture).
fn valid_ipv6(address: &[u8]) -> bool {
    std::str::from_utf8(address).is_ok_and(|address| address.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Nothing, or `:` and 1 to 5 digits naming a port (at most 65535).
fn valid_port(port: &[u8]) -> bool {
    let digits = match port {
        [] => return true,
        [b':', digits @ ..] if (1..=5).contains(&digits.len()) => digits,
        _ => return false,
    };
    let mut number = 0_u32;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return false;
        }
        number = number * 10 + u32::from(digit - b'0');
    }
    number <= u32::from(u16::MAX)
}

/// The host a request is for, the one decision every reader of it shares (the cache key, invalidation, the
/// upstream `Host`): the request target's authority when it has one (HTTP/2 `:authority`, an HTTP/1.1
/// absolute-form target, whose `Host` is then ignored: RFC 9112 §3.2.3), else its one `Host` field, else
/// none (HTTP/1.0 may omit it). Refused: a second `Host` line, a `Host` or an authority that is not [`valid`],
/// an empty authority. The request filter calls it before anything reads the request, so nothing past it
/// sees an invalid host; HTTP/2's own rule (`host` agreeing with `:authority`) is the framing check's.
pub fn effective<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<Option<&'a str>, HostError> {
    let mut lines = headers.get_all(header::HOST).iter();
    let field = lines.next();
    if lines.next().is_some() {
        return Err(HostError::Repeated);
    }
    let field = match field {
        // A valid host is ASCII, so `to_str` cannot fail on it.
        Some(value) if valid(value.as_bytes()) => value.to_str().ok(),
        Some(_) => return Err(HostError::Invalid),
        None => None,
    };
    match uri.authority().map(|authority| authority.as_str()) {
        Some(authority) if authority.is_empty() || !valid(authority.as_bytes()) => {
            Err(HostError::InvalidAuthority)
        }
        Some(authority) => Ok(Some(authority)),
        None => Ok(field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_bracketed_ipv6_with_an_optional_port() {
        for host in [
            "",
            "cloud.example",
            "Cloud.Example:8080",
            "127.0.0.1:5212",
            "a_b-c~d.example",
            "localhost:0",
            "localhost:65535",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::8a2e:370:7334]",
            "[::ffff:192.0.2.1]:443",
        ] {
            assert!(valid(host.as_bytes()), "{host:?}");
        }
    }

    #[test]
    fn anything_else_is_not_a_host() {
        for host in [
            "a/b",
            "a?b",
            "a#b",
            "user@a",
            "user:secret@a",
            "a b",
            " a",
            "a\tb",
            "a,b",
            "a;b",
            "a=b",
            "(a)",
            "%61",
            "caf\u{e9}",
            "a:",
            "a:8x",
            "a:+80",
            "a:65536",
            "a:000080",
            "a:1:2",
            ":80",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[zz::1]",
            "[127.0.0.1]",
            "[v1.x]",
            "[fe80::1%25eth0]",
            "[]",
        ] {
            assert!(!valid(host.as_bytes()), "{host:?}");
        }
    }

    fn effective_of(target: &str, hosts: &[&str]) -> Result<Option<String>, HostError> {
        let uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(header::HOST, host.parse().unwrap());
        }
        effective(&uri, &headers).map(|host| host.map(str::to_owned))
    }

    #[test]
    fn the_authority_wins_else_the_one_host_field() {
        let host = |h: &str| Ok(Some(h.to_owned()));
        assert_eq!(
            effective_of("/a", &["cloud.example"]),
            host("cloud.example")
        );
        assert_eq!(effective_of("/a", &[]), Ok(None));
        assert_eq!(effective_of("/a", &[""]), host(""));
        assert_eq!(
            effective_of("http://a.example:81/x", &["b.example"]),
            host("a.example:81"),
            "RFC 9112 §3.2.3: the absolute form's authority, Host ignored"
        );
        assert_eq!(effective_of("http://a.example/x", &[]), host("a.example"));
    }

    #[test]
    fn repeated_invalid_hosts_and_userinfo_are_refused() {
        assert_eq!(
            effective_of("/a", &["a.example", "a.example"]),
            Err(HostError::Repeated)
        );
        assert_eq!(effective_of("/a", &["a/b"]), Err(HostError::Invalid));
        // Even where the authority would win: a request with an invalid field is refused whole.
        assert_eq!(
            effective_of("http://a.example/x", &["a/b"]),
            Err(HostError::Invalid)
        );
        for target in [
            "http://user:secret@a.example/x",
            "http://user@a.example/x",
            "http://a.example:/x",
        ] {
            assert_eq!(
                effective_of(target, &["a.example"]),
                Err(HostError::InvalidAuthority),
                "{target}"
            );
        }
    }
}
