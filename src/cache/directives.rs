//! Response caching directives: `Cache-Control` (RFC 9111 §5.2), or `CDN-Cache-Control` (RFC 9213) when
//! the upstream targets CDNs, parsed once into the few facts the policy needs. Pure.

use std::time::Duration;

use http::header::{self, HeaderMap};

use super::policy::NotStored;

/// `delta-seconds` (RFC 9111 §1.2.2): digits only; values past 2^31 are taken as 2^31.
pub(super) fn delta_seconds(value: &str) -> Option<u64> {
    const CAP: u64 = 1 << 31;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().map_or(CAP, |v| v.min(CAP)))
}

/// The response directives this cache acts on (RFC 9111 §5.2.2, RFC 5861). Names are case-insensitive;
/// unknown directives are ignored. A duration given twice with different values, or given an invalid value,
/// is `Some(None)`: present but invalid, which makes the response stale (§4.2.1).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub max_age: Option<Option<u64>>,
    pub s_maxage: Option<Option<u64>>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// The directives came from `CDN-Cache-Control`, so `Expires` is to be ignored (RFC 9213 §2.1).
    pub targeted: bool,
}

/// The targeted field for CDNs (RFC 9213): when present with a value, it replaces `Cache-Control` (and
/// `Expires`) for this cache.
pub(super) const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

impl CacheControl {
    /// The directives of a response: its `CDN-Cache-Control` when present and non-empty (RFC 9213 §2.1),
    /// else its `Cache-Control`.
    pub fn of_response(headers: &HeaderMap) -> Self {
        let targeted = headers
            .get_all(CDN_CACHE_CONTROL)
            .iter()
            .any(|v| !v.as_bytes().trim_ascii().is_empty());
        if targeted {
            Self {
                targeted: true,
                ..Self::parse_field(headers, CDN_CACHE_CONTROL)
            }
        } else {
            Self::parse_field(headers, header::CACHE_CONTROL.as_str())
        }
    }

    /// The directives of a request's `Cache-Control` (RFC 9111 §5.2.1; of those, this cache acts on
    /// `no-store` only).
    pub fn of_request(headers: &HeaderMap) -> Self {
        Self::parse_field(headers, header::CACHE_CONTROL.as_str())
    }

    fn parse_field(headers: &HeaderMap, name: &str) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(name) {
            // A value that is not visible ASCII cannot be read, so fail closed as if it said no-store.
            let Ok(value) = value.to_str() else {
                cc.no_store = true;
                continue;
            };
            for (name, arg) in directives(value) {
                cc.apply(name, arg);
            }
        }
        cc
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        let set_duration = |slot: &mut Option<Option<u64>>| {
            let parsed = arg.and_then(delta_seconds);
            *slot = match *slot {
                None => Some(parsed),
                Some(previous) if previous == parsed => Some(parsed),
                Some(_) => Some(None),
            };
        };
        match name.to_ascii_lowercase().as_str() {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" | "proxy-revalidate" => self.must_revalidate = true,
            "max-age" => set_duration(&mut self.max_age),
            "s-maxage" => set_duration(&mut self.s_maxage),
            // RFC 5861: an invalid value is ignored like an unknown directive.
            "stale-while-revalidate" => self.stale_while_revalidate = arg.and_then(delta_seconds),
            "stale-if-error" => self.stale_if_error = arg.and_then(delta_seconds),
            _ => {}
        }
    }

    /// A stale-serving window: the upstream's own, else the configured default; none at all when the
    /// response forbids serving it stale (RFC 9111 §4.2.4). This is the one place that decides it.
    pub fn stale_window(&self, directive: Option<u64>, default: Duration) -> Duration {
        if self.forbids_stale_use() {
            return Duration::ZERO;
        }
        directive.map_or(default, Duration::from_secs)
    }

    /// `must-revalidate` and `proxy-revalidate` (RFC 9111 §5.2.2.2, §5.2.2.8), `no-cache` (§5.2.2.4), and
    /// `s-maxage`, which carries `proxy-revalidate` for a shared cache (§5.2.2.10), whatever stale windows
    /// the response or the rule give: such a response is revalidated once stale, never served stale.
    fn forbids_stale_use(&self) -> bool {
        self.must_revalidate || self.no_cache || self.s_maxage.is_some()
    }

    /// RFC 9111 §3 (and §3.5 for requests with `Authorization`), for a shared cache.
    pub fn allows_shared_storage(&self, authorized: bool) -> Result<(), NotStored> {
        if self.no_store {
            return Err(NotStored::NoStore);
        }
        if self.private {
            return Err(NotStored::Private);
        }
        if authorized && !(self.public || self.must_revalidate || self.s_maxage.is_some()) {
            return Err(NotStored::Authorization);
        }
        Ok(())
    }
}

/// Splits a `Cache-Control` value into `(name, argument)` pairs. Arguments may be tokens or quoted strings;
/// commas inside quotes (e.g. `private="a, b"`) do not split.
fn directives(value: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let end = directive_end(rest);
            let (item, tail) = rest.split_at(end);
            rest = tail.strip_prefix(',').unwrap_or(tail);
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            return Some(match item.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(unquote(arg.trim()))),
                None => (item, None),
            });
        }
    })
}

fn directive_end(s: &str) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return i,
            _ => {}
        }
    }
    s.len()
}

fn unquote(arg: &str) -> &str {
    arg.strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_commas_do_not_split_directives() {
        let names: Vec<_> = directives("private=\"a, b\", max-age=3").collect();
        assert_eq!(names, [("private", Some("a, b")), ("max-age", Some("3"))]);
    }

    #[test]
    fn cdn_cache_control_replaces_cache_control() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
        headers.insert(CDN_CACHE_CONTROL, "max-age=600".parse().unwrap());
        let cc = CacheControl::of_response(&headers);
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(Some(600)));
        assert!(cc.targeted);
    }

    #[test]
    fn empty_cdn_cache_control_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, "max-age=5".parse().unwrap());
        headers.insert(CDN_CACHE_CONTROL, "".parse().unwrap());
        let cc = CacheControl::of_response(&headers);
        assert_eq!(cc.max_age, Some(Some(5)));
        assert!(!cc.targeted);
    }

    /// The stale windows (`stale-while-revalidate`, `stale-if-error`) of a response with these fields, when
    /// the rule's defaults are 60 s and 600 s.
    fn windows(fields: &[(&'static str, &str)]) -> (u64, u64) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, value.parse().unwrap());
        }
        let cc = CacheControl::of_response(&headers);
        let window = |directive, default| cc.stale_window(directive, Duration::from_secs(default));
        (
            window(cc.stale_while_revalidate, 60).as_secs(),
            window(cc.stale_if_error, 600).as_secs(),
        )
    }

    /// RFC 9111 §5.2.2.10: `s-maxage` carries `proxy-revalidate` for a shared cache, whatever the response's
    /// RFC 5861 directives or the rule's defaults say; in `CDN-Cache-Control` too (RFC 9213 §2.2: the same
    /// semantics as in `Cache-Control`).
    #[test]
    fn s_maxage_forbids_stale_use() {
        let permissive = "s-maxage=1, stale-while-revalidate=60, stale-if-error=600";
        assert_eq!(windows(&[("cache-control", permissive)]), (0, 0));
        assert_eq!(windows(&[("cdn-cache-control", permissive)]), (0, 0));
        assert_eq!(windows(&[("cache-control", "s-maxage=1")]), (0, 0));
        assert_eq!(windows(&[("cache-control", "s-maxage=soon")]), (0, 0));
        assert_eq!(
            windows(&[("cache-control", "max-age=1, stale-if-error=9")]),
            (60, 9),
            "without s-maxage the windows apply"
        );
        assert_eq!(
            windows(&[
                ("cache-control", permissive),
                ("cdn-cache-control", "max-age=1, stale-if-error=9"),
            ]),
            (60, 9),
            "a valid CDN-Cache-Control replaces the Cache-Control that had s-maxage"
        );
    }
}
