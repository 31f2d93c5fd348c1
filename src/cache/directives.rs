//! Response caching directives: `Cache-Control` (RFC 9111 §5.2), or `CDN-Cache-Control` (RFC 9213) when
//! the upstream targets CDNs with a valid one, parsed once into the few facts the policy needs. Pure.

mod targeted;

use std::time::Duration;

use http::header::{self, HeaderMap};

use super::policy::NotStored;

/// The largest `delta-seconds` kept: values past 2^31 are taken as 2^31 (RFC 9111 §1.2.2).
const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// `delta-seconds` (RFC 9111 §1.2.2): digits only; values past 2^31 are taken as 2^31.
pub(super) fn delta_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        value
            .parse::<u64>()
            .map_or(DELTA_SECONDS_MAX, |v| v.min(DELTA_SECONDS_MAX)),
    )
}

/// The response directives this cache acts on (RFC 9111 §5.2.2, RFC 5861); unknown directives are ignored.
/// In `Cache-Control`, names are case-insensitive, and a duration given twice with different values, or
/// given an invalid value, is `Some(None)`: present but invalid, which makes the response stale (§4.2.1).
/// `CDN-Cache-Control` follows the Structured Field rules instead (see `targeted`).
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
    /// The directives came from `CDN-Cache-Control`, so `Expires` is to be ignored (RFC 9213 §2.2).
    pub targeted: bool,
}

impl CacheControl {
    /// The directives of a response: its `CDN-Cache-Control` when that is valid and not empty, else its
    /// `Cache-Control` (RFC 9213 §2.2: an empty or unparsable targeted field is as if absent).
    pub fn of_response(headers: &HeaderMap) -> Self {
        targeted::directives(headers)
            .unwrap_or_else(|| Self::parse_field(headers, header::CACHE_CONTROL.as_str()))
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
        self.set(&name.to_ascii_lowercase(), arg.and_then(delta_seconds));
    }

    /// One directive, by its lower-case name; `seconds` is its argument as `delta-seconds`, `None` when it
    /// has none or an invalid one.
    fn set(&mut self, name: &str, seconds: Option<u64>) {
        let set_duration = |slot: &mut Option<Option<u64>>| {
            *slot = match *slot {
                None => Some(seconds),
                Some(previous) if previous == seconds => Some(seconds),
                Some(_) => Some(None),
            };
        };
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" | "proxy-revalidate" => self.must_revalidate = true,
            "max-age" => set_duration(&mut self.max_age),
            "s-maxage" => set_duration(&mut self.s_maxage),
            // RFC 5861: an invalid value is ignored like an unknown directive.
            "stale-while-revalidate" => self.stale_while_revalidate = seconds,
            "stale-if-error" => self.stale_if_error = seconds,
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
