//! The cache key, pure: exactly one documented derivation per rule kind (an avatar's hashid, an `http` rule's
//! raw target and optional host), and reading a key back for purges.

use std::borrow::Cow;

/// The cache key of an avatar: exactly the user's hashid from the request path.
///
/// # Security invariant
///
/// The key names exactly the representation stored, so one user can never be served another's bytes:
/// - It is the path segment after `/api/v4/user/avatar/`, byte for byte, and only when that segment is in the
///   one form Cloudreve matches without decoding: 1 to [`AvatarKey::MAX_LEN`] ASCII letters and digits
///   (the hashid alphabet, case-sensitive like Cloudreve). Anything else (percent-encoded, dotted, slashed,
///   empty, overlong) has no key and bypasses the cache, because the proxy would have to guess what Cloudreve
///   decodes it to.
/// - Nothing else goes in, on purpose: Cloudreve's avatar response depends on the id alone (not on who asks,
///   nor on other query parameters such as the frontend's `key=`, nor on headers; it sends no `Vary`). A
///   response that says otherwise (`Vary`, `Set-Cookie`, `private`) is not stored (see [`admit`](super::admit)).
/// - Requests whose `nocache` is truthy or invalid never reach the cache (see `route::classify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AvatarKey<'a>(&'a str);

impl<'a> AvatarKey<'a> {
    /// Longest id accepted; Cloudreve's hashids of 64-bit ids are far shorter.
    pub const MAX_LEN: usize = 64;

    /// The key for the raw path segment after the avatar prefix, if it is a canonical hashid.
    pub fn from_path_segment(segment: &'a str) -> Option<Self> {
        let canonical = (1..=Self::MAX_LEN).contains(&segment.len())
            && segment.bytes().all(|b| b.is_ascii_alphanumeric());
        canonical.then_some(Self(segment))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// The cache key of a response under an `http` rule: the raw path and query, byte for byte, never decoded
/// (RFC 9111 §4.1 "the target URI"); when the rule keys on the host, the lower-cased host, a space, then
/// that target. The method class is always `GET` (only `GET` fills the cache; `HEAD` is answered from the
/// stored `GET`), so it is not spelled out.
///
/// # Security invariant
///
/// The key names exactly the representation stored:
/// - The target is taken as received: two targets that differ in any byte (encoding, case, a trailing `?`)
///   are different keys, and the upstream is always asked for exactly the bytes keyed.
/// - Without `key_includes_host`, the rule asserts that the upstream serves one site for every `Host`; with
///   it, every host has its own entries.
/// - The host and the target cannot run into each other: the host is one `crate::host::valid` accepts (the
///   request filter refused any other), which holds no space and no `/`, and a request target holds no space
///   (the request line ends it at one, RFC 9112 §3; `http::Uri` refuses one in an HTTP/2 `:path`). So the
///   first space of a key ends its host, and two (host, target) pairs share a key only when both parts are
///   equal; a key without host starts with the target's `/`, one with a host never does.
/// - Every http key contains a `/` (the path's first byte); an avatar key never does, so the two kinds can
///   never name each other's entries. Variant keys extend a primary key after a newline, which no target and
///   no header value contains.
/// - What the key leaves out is covered by admission: `Vary` stores one entry per nominated field values,
///   `Set-Cookie`/`private`/`no-store` are never stored, `Authorization` only as RFC 9111 §3.5 allows.
pub fn http_key<'a>(path_and_query: &'a str, host: Option<&str>) -> Cow<'a, str> {
    match host {
        None => Cow::Borrowed(path_and_query),
        Some(host) => Cow::Owned(format!("{} {path_and_query}", host.to_ascii_lowercase())),
    }
}

/// The request target an http key names, read back as [`http_key`] wrote it: the key itself when it starts
/// with `/`, else what follows the host and its space. `None` for an avatar key. A variant key's target
/// runs on into its variant part (see `vary::primary_of` for the primary key alone).
pub fn key_target(key: &str) -> Option<&str> {
    if key.starts_with('/') {
        return Some(key);
    }
    key.split_once(' ').map(|(_, target)| target)
}

/// Whether a stored key's path starts with `prefix` (for purge by prefix). An avatar key stands for
/// `/api/v4/user/avatar/{id}`; an http key's path is its target ([`key_target`]).
pub fn key_path_starts_with(key: &str, prefix: &str) -> bool {
    match key_target(key) {
        Some(target) => target.starts_with(prefix),
        None => {
            let avatar = crate::cloudreve::AVATAR_PREFIX;
            match prefix.strip_prefix(avatar) {
                Some(rest) => key.starts_with(rest),
                None => avatar.starts_with(prefix),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_accepts_hashids_only() {
        assert!(AvatarKey::from_path_segment("lpua").is_some());
        assert!(AvatarKey::from_path_segment("O2UR").is_some());
        for bad in [
            "",
            "lp%75a",
            "a/b",
            "a.b",
            "a b",
            "ä",
            "a-b",
            &"a".repeat(65),
        ] {
            assert!(AvatarKey::from_path_segment(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn distinct_ids_are_distinct_keys() {
        assert_ne!(
            AvatarKey::from_path_segment("lpua"),
            AvatarKey::from_path_segment("LPUA")
        );
    }

    #[test]
    fn keys_of_the_two_kinds_never_meet() {
        assert_eq!(http_key("/assets/a.js?v=1", None), "/assets/a.js?v=1");
        assert_eq!(http_key("/a", Some("Cloud.Example")), "cloud.example /a");
        assert!(http_key("/a", Some("h")).contains('/'));
        assert!(
            !AvatarKey::from_path_segment("lpua")
                .unwrap()
                .as_str()
                .contains('/')
        );
    }

    #[test]
    fn host_and_target_never_run_into_each_other() {
        // Before the space, `a/assets` + `/assets/x` and `a` + `/assets/assets/x` were one key.
        assert_ne!(
            http_key("/assets/x", Some("a/assets")),
            http_key("/assets/assets/x", Some("a"))
        );
        // Over valid hosts (with ports, IPv6, empty) and targets, a key is equal only for equal parts, and
        // gives its target back.
        let hosts = [
            None,
            Some(""),
            Some("a"),
            Some("a:80"),
            Some("[::1]:80"),
            Some("a.b"),
        ];
        let targets = ["/", "/b", "/a/b", "/:80/b", "/b?a b=%20", "/é"];
        for (host, target) in hosts
            .iter()
            .flat_map(|h| targets.iter().map(move |t| (h, t)))
        {
            let key = http_key(target, *host);
            assert_eq!(key_target(&key), Some(*target), "{key:?}");
            for (other_host, other_target) in hosts
                .iter()
                .flat_map(|h| targets.iter().map(move |t| (h, t)))
            {
                let same = (host, target) == (other_host, other_target);
                assert_eq!(key == http_key(other_target, *other_host), same, "{key:?}");
            }
        }
        // What the invariant rests on: a host has no space, and neither has a target.
        assert!(!crate::host::valid(b"a b"));
        assert!(http::uri::PathAndQuery::try_from("/a b").is_err());
        assert_eq!(key_target("lpua"), None);
    }

    #[test]
    fn prefixes_match_key_paths() {
        assert!(key_path_starts_with("/assets/a.js", "/assets/"));
        assert!(key_path_starts_with(
            "host.example /assets/a.js",
            "/assets/"
        ));
        assert!(key_path_starts_with(" /assets/a.js", "/assets/"));
        assert!(!key_path_starts_with("assets.example /f/x", "/assets/"));
        assert!(!key_path_starts_with("/f/x", "/assets/"));
        assert!(key_path_starts_with("lpua", "/api/v4/user/avatar/"));
        assert!(key_path_starts_with("lpua", "/api/v4/user/avatar/lp"));
        assert!(!key_path_starts_with("lpua", "/api/v4/user/avatar/x"));
        assert!(key_path_starts_with("lpua", "/api/"));
        assert!(!key_path_starts_with("lpua", "/assets/"));
    }
}
