//! Cache policy, pure: the cache key, what may be stored, and for how long (RFC 9111).
//!
//! Everything is decided once, when a response arrives: the hit path only compares a stored deadline.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, response};

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
///   response that says otherwise (`Vary`, `Set-Cookie`, `private`) is not stored (see [`admit`]).
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

/// Limits and defaults that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body stored; larger ones are streamed through.
    pub max_object_size: usize,
    /// Cap on how long a 404 stays fresh.
    pub negative_ttl: Duration,
    /// `stale-while-revalidate` applied when the upstream sends none (Cloudreve never does).
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` applied when the upstream sends none (Cloudreve never does).
    pub stale_if_error: Duration,
}

/// How a stored response may be used over time, fixed when it is stored (RFC 9111 §4.2, RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Remaining freshness from the moment of storing (lifetime minus the age on arrival, capped for 404);
    /// zero for `no-cache`, which is stored but revalidated before every use.
    pub fresh_for: Duration,
    /// The response's age when it arrived (RFC 9111 §4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    /// How long past freshness it may be served while one request refreshes it (RFC 5861 §3).
    pub stale_while_revalidate: Duration,
    /// How long past freshness it may be served when the upstream fails (RFC 5861 §4).
    pub stale_if_error: Duration,
}

impl Freshness {
    /// How long the store keeps the entry: while fresh, and as long as it may still be served stale or be
    /// revalidated. A revalidatable entry is worth keeping even when it may not be served stale.
    pub fn retain_for(&self, limits: &Limits) -> Duration {
        let stale_use = self.stale_while_revalidate.max(self.stale_if_error);
        self.fresh_for + stale_use.max(limits.stale_if_error)
    }
}

/// Why a response is not stored. Each maps to a `Cache-Status` `detail=` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Status other than 200, 301, 302, 404.
    Status,
    /// A 200 whose `Content-Type` is not `image/*`: Cloudreve's errors are JSON 200s.
    NotImage,
    /// `Set-Cookie` would hand one client's cookie to everyone.
    SetCookie,
    /// `Vary` names request headers the avatar key does not include.
    Vary,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private` (RFC 9111 §5.2.2.7).
    Private,
    /// `Cache-Control: no-cache` without a `Last-Modified` to revalidate with: it could never be used.
    NoCache,
    /// The request carried `Authorization` and the response does not allow sharing it (RFC 9111 §3.5).
    Authorization,
    /// No `s-maxage`, `max-age` or `Expires`, or an invalid one (RFC 9111 §4.2.1: treat as stale).
    NoFreshness,
    /// Already stale when it arrived (its age is past its lifetime).
    StaleOnArrival,
    /// The body is larger than `cache.max_object_size`.
    TooLarge,
}

impl NotStored {
    /// Token for `Cache-Status` `detail=` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::NotImage => "not-image",
            Self::SetCookie => "set-cookie",
            Self::Vary => "vary",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::NoCache => "no-cache",
            Self::Authorization => "authorization",
            Self::NoFreshness => "no-freshness",
            Self::StaleOnArrival => "stale",
            Self::TooLarge => "too-large",
        }
    }
}

/// When a response was fetched, for the age calculation of RFC 9111 §4.2.3.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// When the request was sent upstream.
    pub request_time: SystemTime,
    /// When the response head arrived.
    pub response_time: SystemTime,
    /// The request carried `Authorization`.
    pub authorized: bool,
}

/// Decides whether an upstream answer to an avatar request may be stored, and for how long.
///
/// Storable means both what RFC 9111 §3 lets a shared cache store and what this route should hold:
/// an `image/*` 200, a 301/302 redirect (Gravatar), or a 404 ("no avatar yet") kept at most
/// `negative_ttl`. A declared `Content-Length` over the size limit is refused here; a body without one is
/// held to the same limit while it is read.
pub fn admit(
    res: &response::Parts,
    exchange: Exchange,
    limits: &Limits,
) -> Result<Freshness, NotStored> {
    route_allows(res)?;
    if let Some(length) = declared_length(&res.headers) {
        fits(length, limits)?;
    }
    let cc = CacheControl::parse(&res.headers);
    cc.allows_shared_storage(exchange.authorized)?;
    // A no-cache response is revalidated before every use, so it needs no lifetime of its own.
    let lifetime = if cc.no_cache {
        Duration::ZERO
    } else {
        freshness_lifetime(&cc, &res.headers, exchange.response_time)?
    };
    let initial_age = initial_age(&res.headers, exchange);
    let mut fresh_for = lifetime.saturating_sub(initial_age);
    if res.status == StatusCode::NOT_FOUND {
        fresh_for = fresh_for.min(limits.negative_ttl);
    }
    if cc.no_cache {
        // "store, but validate before each use" (RFC 9111 §5.2.2.4): only worth it with a validator.
        if !res.headers.contains_key(header::LAST_MODIFIED) {
            return Err(NotStored::NoCache);
        }
        fresh_for = Duration::ZERO;
    } else if fresh_for.is_zero() {
        return Err(NotStored::StaleOnArrival);
    }
    Ok(Freshness {
        fresh_for,
        initial_age,
        stale_while_revalidate: cc
            .stale_window(cc.stale_while_revalidate, limits.stale_while_revalidate),
        stale_if_error: cc.stale_window(cc.stale_if_error, limits.stale_if_error),
    })
}

/// The header fields of a stored response after a 304 validated it (RFC 9111 §4.3.4, §3.2): every field the
/// 304 carries replaces the stored ones of that name, except `Content-Length`, which describes the stored body.
pub fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    for name in not_modified.keys() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    merged
}

/// The validator a revalidation sends: `If-Modified-Since` with the stored `Last-Modified`, and never
/// `If-None-Match`: Cloudreve sends no ETag, and an `If-None-Match` makes it skip the date check and answer a
/// full 200 (Go `http.ServeContent`).
pub fn revalidation_header(stored: &HeaderMap) -> Option<(header::HeaderName, HeaderValue)> {
    let last_modified = stored.get(header::LAST_MODIFIED)?;
    Some((header::IF_MODIFIED_SINCE, last_modified.clone()))
}

/// Shapes the request headers of a fill: it must fetch the whole, current representation, whatever this
/// client asked for. Its conditionals and `Range` are its own business (answered from the stored copy or
/// not at all); forwarding them could bring back a 304 or a 206 that cannot be stored for everyone.
/// The request body of a `GET`/`HEAD` has no meaning (RFC 9110 §9.3.1) and is not sent.
pub fn prepare_fill_request(headers: &mut HeaderMap) {
    for name in [
        header::IF_MODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONTENT_TYPE,
    ] {
        headers.remove(name);
    }
}

/// Whether a body of `len` bytes may be stored.
pub fn fits(len: u64, limits: &Limits) -> Result<(), NotStored> {
    if len > limits.max_object_size as u64 {
        return Err(NotStored::TooLarge);
    }
    Ok(())
}

/// Whether an answer on the avatar URL is an avatar representation at all (an image, a redirect to
/// Gravatar, or "no avatar yet"), rather than an error about the request.
pub fn describes_avatar(res: &response::Parts) -> bool {
    represents_avatar(res).is_ok()
}

fn represents_avatar(res: &response::Parts) -> Result<(), NotStored> {
    match res.status {
        StatusCode::OK if !is_image(&res.headers) => Err(NotStored::NotImage),
        StatusCode::OK
        | StatusCode::MOVED_PERMANENTLY
        | StatusCode::FOUND
        | StatusCode::NOT_FOUND => Ok(()),
        _ => Err(NotStored::Status),
    }
}

/// The route's own rules: which statuses and content this cache holds for an avatar URL.
fn route_allows(res: &response::Parts) -> Result<(), NotStored> {
    represents_avatar(res)?;
    if res.headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if res
        .headers
        .get_all(header::VARY)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().is_empty())
    {
        return Err(NotStored::Vary);
    }
    Ok(())
}

fn is_image(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes().trim_ascii_start();
    value.len() > 6 && value[..6].eq_ignore_ascii_case(b"image/")
}

/// Freshness lifetime, RFC 9111 §4.2.1: `s-maxage` (a shared cache), else `max-age`, else `Expires - Date`.
/// No heuristic freshness: a response without explicit freshness is not stored.
fn freshness_lifetime(
    cc: &CacheControl,
    headers: &HeaderMap,
    response_time: SystemTime,
) -> Result<Duration, NotStored> {
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return lifetime
            .map(Duration::from_secs)
            .ok_or(NotStored::NoFreshness);
    }
    let expires = single_value(headers, header::EXPIRES).ok_or(NotStored::NoFreshness)?;
    // An invalid Expires (e.g. "0") means "already expired" (RFC 9111 §5.3).
    let expires = http_date(expires).ok_or(NotStored::StaleOnArrival)?;
    let date = single_value(headers, header::DATE)
        .and_then(http_date)
        .unwrap_or(response_time);
    Ok(expires.duration_since(date).unwrap_or_default())
}

/// `corrected_initial_age` of RFC 9111 §4.2.3: the larger of what the clocks say (`Date`) and what the
/// caches on the way say (`Age` plus the time the request took).
fn initial_age(headers: &HeaderMap, exchange: Exchange) -> Duration {
    let date = single_value(headers, header::DATE).and_then(http_date);
    let apparent_age = date
        .and_then(|date| exchange.response_time.duration_since(date).ok())
        .unwrap_or_default();
    let response_delay = exchange
        .response_time
        .duration_since(exchange.request_time)
        .unwrap_or_default();
    let corrected_age_value = age_value(headers) + response_delay;
    apparent_age.max(corrected_age_value)
}

/// The `Age` header (RFC 9111 §5.1): the first member of a list; an invalid value is ignored.
fn age_value(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| delta_seconds(v.trim()))
        .map_or(Duration::ZERO, Duration::from_secs)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    single_value(headers, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

fn single_value(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// `delta-seconds` (RFC 9111 §1.2.2): digits only; values past 2^31 are taken as 2^31.
fn delta_seconds(value: &str) -> Option<u64> {
    const CAP: u64 = 1 << 31;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().map_or(CAP, |v| v.min(CAP)))
}

/// The response `Cache-Control` directives this cache acts on (RFC 9111 §5.2.2). Names are case-insensitive;
/// unknown directives are ignored. A duration given twice with different values, or given an invalid value,
/// is `Some(None)`: present but invalid, which makes the response stale (§4.2.1).
#[derive(Debug, Default, PartialEq, Eq)]
struct CacheControl {
    no_store: bool,
    no_cache: bool,
    private: bool,
    public: bool,
    must_revalidate: bool,
    max_age: Option<Option<u64>>,
    s_maxage: Option<Option<u64>>,
    stale_while_revalidate: Option<u64>,
    stale_if_error: Option<u64>,
}

impl CacheControl {
    fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
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
    /// response forbids serving it stale (`must-revalidate`, `proxy-revalidate`, `no-cache`; RFC 9111 §4.2.4).
    fn stale_window(&self, directive: Option<u64>, default: Duration) -> Duration {
        if self.must_revalidate || self.no_cache {
            return Duration::ZERO;
        }
        directive.map_or(default, Duration::from_secs)
    }

    /// RFC 9111 §3 (and §3.5 for requests with `Authorization`), for a shared cache.
    fn allows_shared_storage(&self, authorized: bool) -> Result<(), NotStored> {
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
    use http::Response;

    const LIMITS: Limits = Limits {
        max_object_size: 1024,
        negative_ttl: Duration::from_secs(60),
        stale_while_revalidate: Duration::from_secs(60),
        stale_if_error: Duration::from_secs(86400),
    };

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn exchange() -> Exchange {
        Exchange {
            request_time: at(0),
            response_time: at(0),
            authorized: false,
        }
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn png(cache_control: &str) -> response::Parts {
        response(
            200,
            &[
                ("content-type", "image/png"),
                ("cache-control", cache_control),
            ],
        )
    }

    fn fresh_for(res: &response::Parts) -> Result<u64, NotStored> {
        admit(res, exchange(), &LIMITS).map(|f| f.fresh_for.as_secs())
    }

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
    fn cloudreve_png_is_stored_for_its_max_age() {
        assert_eq!(fresh_for(&png("public, max-age=86400")), Ok(86400));
    }

    #[test]
    fn s_maxage_wins_over_max_age() {
        assert_eq!(
            fresh_for(&png("public, max-age=86400, s-maxage=600")),
            Ok(600)
        );
        assert_eq!(fresh_for(&png("s-maxage=600, max-age=86400")), Ok(600));
    }

    #[test]
    fn directive_names_are_case_insensitive() {
        assert_eq!(fresh_for(&png("Public, MAX-AGE=30")), Ok(30));
        assert_eq!(
            fresh_for(&png("No-Store, max-age=30")),
            Err(NotStored::NoStore)
        );
    }

    #[test]
    fn upstream_age_is_subtracted() {
        let mut res = png("public, max-age=100");
        res.headers.insert("age", "30".parse().unwrap());
        let freshness = admit(&res, exchange(), &LIMITS).unwrap();
        assert_eq!(freshness.fresh_for, Duration::from_secs(70));
        assert_eq!(freshness.initial_age, Duration::from_secs(30));
    }

    #[test]
    fn response_delay_counts_as_age() {
        let ex = Exchange {
            request_time: at(0),
            response_time: at(5),
            ..exchange()
        };
        let freshness = admit(&png("max-age=100"), ex, &LIMITS).unwrap();
        assert_eq!(freshness.initial_age, Duration::from_secs(5));
    }

    #[test]
    fn apparent_age_from_date_counts_when_larger() {
        let mut res = png("max-age=100");
        res.headers
            .insert("date", httpdate::fmt_http_date(at(0)).parse().unwrap());
        let ex = Exchange {
            request_time: at(40),
            response_time: at(40),
            ..exchange()
        };
        assert_eq!(
            admit(&res, ex, &LIMITS).unwrap().fresh_for,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn invalid_age_is_ignored() {
        for age in ["-5", "abc", ""] {
            let mut res = png("max-age=100");
            res.headers.insert("age", age.parse().unwrap());
            assert_eq!(fresh_for(&res), Ok(100), "{age:?}");
        }
    }

    #[test]
    fn list_age_uses_first_member() {
        let mut res = png("max-age=100");
        res.headers.insert("age", "10, 50".parse().unwrap());
        assert_eq!(fresh_for(&res), Ok(90));
    }

    #[test]
    fn age_past_lifetime_is_not_stored() {
        let mut res = png("max-age=100");
        res.headers.insert("age", "100".parse().unwrap());
        assert_eq!(fresh_for(&res), Err(NotStored::StaleOnArrival));
    }

    #[test]
    fn max_age_zero_is_not_stored() {
        assert_eq!(
            fresh_for(&png("public, max-age=0")),
            Err(NotStored::StaleOnArrival)
        );
    }

    #[test]
    fn invalid_max_age_is_stale() {
        for cc in [
            "max-age=abc",
            "max-age=-1",
            "max-age=",
            "max-age",
            "max-age=1.5",
        ] {
            assert_eq!(fresh_for(&png(cc)), Err(NotStored::NoFreshness), "{cc}");
        }
    }

    #[test]
    fn conflicting_duplicate_max_age_is_stale() {
        assert_eq!(
            fresh_for(&png("max-age=10, max-age=20")),
            Err(NotStored::NoFreshness)
        );
        assert_eq!(fresh_for(&png("max-age=10, max-age=10")), Ok(10));
    }

    #[test]
    fn quoted_max_age_is_accepted() {
        assert_eq!(fresh_for(&png("max-age=\"60\"")), Ok(60));
    }

    #[test]
    fn huge_max_age_saturates() {
        assert_eq!(
            fresh_for(&png("max-age=99999999999999999999999")),
            Ok(1 << 31)
        );
    }

    #[test]
    fn directives_split_across_header_lines() {
        let res = response(
            200,
            &[
                ("content-type", "image/png"),
                ("cache-control", "public"),
                ("cache-control", "max-age=5"),
            ],
        );
        assert_eq!(fresh_for(&res), Ok(5));
    }

    #[test]
    fn quoted_commas_do_not_split_directives() {
        assert_eq!(
            fresh_for(&png("no-cache=\"a, max-age=5\", max-age=9")),
            Err(NotStored::NoCache)
        );
        let names: Vec<_> = directives("private=\"a, b\", max-age=3").collect();
        assert_eq!(names, [("private", Some("a, b")), ("max-age", Some("3"))]);
    }

    #[test]
    fn unknown_directives_are_ignored() {
        assert_eq!(
            fresh_for(&png("public, max-age=10, immutable, x-thing=\"1\"")),
            Ok(10)
        );
    }

    #[test]
    fn no_store_private_no_cache_are_not_stored() {
        assert_eq!(
            fresh_for(&png("no-store, max-age=10")),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            fresh_for(&png("private, max-age=10")),
            Err(NotStored::Private)
        );
        assert_eq!(
            fresh_for(&png("private=\"set-cookie\", max-age=10")),
            Err(NotStored::Private)
        );
        assert_eq!(
            fresh_for(&png("private, no-cache")),
            Err(NotStored::Private)
        );
        assert_eq!(
            fresh_for(&png("public, no-cache, max-age=10")),
            Err(NotStored::NoCache)
        );
    }

    #[test]
    fn no_freshness_information_is_not_stored() {
        assert_eq!(fresh_for(&png("public")), Err(NotStored::NoFreshness));
        assert_eq!(
            fresh_for(&response(200, &[("content-type", "image/png")])),
            Err(NotStored::NoFreshness)
        );
    }

    #[test]
    fn expires_minus_date_is_the_lifetime_without_max_age() {
        let res = response(
            200,
            &[
                ("content-type", "image/png"),
                ("date", &httpdate::fmt_http_date(at(0))),
                ("expires", &httpdate::fmt_http_date(at(300))),
            ],
        );
        assert_eq!(fresh_for(&res), Ok(300));
    }

    #[test]
    fn max_age_wins_over_expires() {
        let mut res = png("max-age=10");
        res.headers
            .insert("expires", httpdate::fmt_http_date(at(300)).parse().unwrap());
        assert_eq!(fresh_for(&res), Ok(10));
    }

    #[test]
    fn invalid_expires_is_already_expired() {
        let res = response(200, &[("content-type", "image/png"), ("expires", "0")]);
        assert_eq!(fresh_for(&res), Err(NotStored::StaleOnArrival));
    }

    #[test]
    fn json_200_is_never_stored() {
        let res = response(
            200,
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("cache-control", "public, max-age=86400"),
            ],
        );
        assert_eq!(fresh_for(&res), Err(NotStored::NotImage));
        let res = response(200, &[("cache-control", "public, max-age=86400")]);
        assert_eq!(fresh_for(&res), Err(NotStored::NotImage));
    }

    #[test]
    fn content_type_match_is_case_insensitive() {
        let res = response(
            200,
            &[
                ("content-type", "Image/PNG"),
                ("cache-control", "max-age=5"),
            ],
        );
        assert_eq!(fresh_for(&res), Ok(5));
        let res = response(
            200,
            &[("content-type", "image/"), ("cache-control", "max-age=5")],
        );
        assert_eq!(fresh_for(&res), Err(NotStored::NotImage));
    }

    #[test]
    fn redirects_are_stored() {
        for status in [301, 302] {
            let res = response(
                status,
                &[
                    ("location", "https://gravatar/x"),
                    ("cache-control", "public, max-age=86400"),
                ],
            );
            assert_eq!(fresh_for(&res), Ok(86400), "{status}");
        }
    }

    #[test]
    fn not_found_ttl_is_capped() {
        let res = response(404, &[("cache-control", "public, max-age=86400")]);
        assert_eq!(fresh_for(&res), Ok(60));
        let res = response(404, &[("cache-control", "public, max-age=5")]);
        assert_eq!(fresh_for(&res), Ok(5));
    }

    #[test]
    fn server_errors_and_other_statuses_are_not_stored() {
        for status in [500, 502, 503, 304, 206, 403, 410] {
            let res = response(
                status,
                &[
                    ("content-type", "image/png"),
                    ("cache-control", "public, max-age=86400"),
                ],
            );
            assert_eq!(fresh_for(&res), Err(NotStored::Status), "{status}");
        }
    }

    #[test]
    fn set_cookie_is_never_stored() {
        let mut res = png("public, max-age=10");
        res.headers.insert("set-cookie", "a=b".parse().unwrap());
        assert_eq!(fresh_for(&res), Err(NotStored::SetCookie));
    }

    #[test]
    fn vary_is_not_stored() {
        let mut res = png("public, max-age=10");
        res.headers.insert("vary", "Origin".parse().unwrap());
        assert_eq!(fresh_for(&res), Err(NotStored::Vary));
    }

    #[test]
    fn authorization_needs_explicit_permission() {
        let ex = Exchange {
            authorized: true,
            ..exchange()
        };
        assert_eq!(
            admit(&png("max-age=10"), ex, &LIMITS).map(|_| ()),
            Err(NotStored::Authorization)
        );
        assert!(admit(&png("public, max-age=10"), ex, &LIMITS).is_ok());
        assert!(admit(&png("s-maxage=10"), ex, &LIMITS).is_ok());
        assert!(admit(&png("must-revalidate, max-age=10"), ex, &LIMITS).is_ok());
    }

    #[test]
    fn unreadable_cache_control_fails_closed() {
        let mut res = response(200, &[("content-type", "image/png")]);
        res.headers.insert(
            "cache-control",
            http::HeaderValue::from_bytes(b"max-age=5, \xff").unwrap(),
        );
        assert_eq!(fresh_for(&res), Err(NotStored::NoStore));
    }

    #[test]
    fn declared_length_over_the_limit_is_not_stored() {
        let mut res = png("max-age=10");
        res.headers
            .insert("content-length", "1025".parse().unwrap());
        assert_eq!(fresh_for(&res), Err(NotStored::TooLarge));
        res.headers
            .insert("content-length", "1024".parse().unwrap());
        assert_eq!(fresh_for(&res), Ok(10));
    }

    fn windows(res: &response::Parts) -> (u64, u64) {
        let f = admit(res, exchange(), &LIMITS).unwrap();
        (
            f.stale_while_revalidate.as_secs(),
            f.stale_if_error.as_secs(),
        )
    }

    #[test]
    fn no_cache_with_a_validator_is_stored_but_never_fresh() {
        let mut res = png("public, no-cache, max-age=600");
        res.headers.insert(
            "last-modified",
            "Sun, 29 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        let freshness = admit(&res, exchange(), &LIMITS).unwrap();
        assert_eq!(freshness.fresh_for, Duration::ZERO);
        assert_eq!(windows(&res), (0, 0), "no-cache forbids serving it stale");
    }

    #[test]
    fn no_cache_without_max_age_is_stored_for_revalidation() {
        let mut res = png("public, no-cache");
        res.headers.insert(
            "last-modified",
            "Sun, 29 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(fresh_for(&res), Ok(0));
    }

    #[test]
    fn stale_windows_default_from_config() {
        assert_eq!(windows(&png("public, max-age=10")), (60, 86400));
    }

    #[test]
    fn stale_windows_from_the_upstream_win() {
        let res = png("max-age=10, stale-while-revalidate=5, stale-if-error=7");
        assert_eq!(windows(&res), (5, 7));
    }

    #[test]
    fn invalid_stale_windows_are_ignored() {
        let res = png("max-age=10, stale-while-revalidate=soon, stale-if-error=-1");
        assert_eq!(windows(&res), (60, 86400));
    }

    #[test]
    fn must_revalidate_forbids_stale_use() {
        for cc in [
            "max-age=10, must-revalidate",
            "max-age=10, proxy-revalidate, stale-if-error=99",
        ] {
            assert_eq!(windows(&png(cc)), (0, 0), "{cc}");
        }
    }

    #[test]
    fn entries_are_kept_for_stale_use_and_revalidation() {
        let freshness = admit(&png("max-age=10, stale-if-error=5"), exchange(), &LIMITS).unwrap();
        assert_eq!(
            freshness.retain_for(&LIMITS),
            Duration::from_secs(10 + 86400)
        );
    }

    #[test]
    fn not_modified_replaces_fields_but_not_the_length() {
        let stored = png("max-age=10").headers;
        let mut stored = stored;
        stored.insert("content-length", "500".parse().unwrap());
        stored.insert("x-kept", "1".parse().unwrap());
        let mut fresh = HeaderMap::new();
        fresh.insert("cache-control", "max-age=99".parse().unwrap());
        fresh.insert("content-length", "0".parse().unwrap());
        let merged = merge_not_modified(&stored, &fresh);
        assert_eq!(merged["cache-control"], "max-age=99");
        assert_eq!(merged["content-length"], "500");
        assert_eq!(merged["x-kept"], "1");
        assert_eq!(merged["content-type"], "image/png");
    }

    #[test]
    fn revalidation_uses_if_modified_since_only() {
        let mut stored = png("max-age=10").headers;
        assert_eq!(
            revalidation_header(&stored),
            None,
            "nothing to revalidate with"
        );
        stored.insert(
            "last-modified",
            "Sun, 29 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        stored.insert("etag", "\"abc\"".parse().unwrap());
        let (name, value) = revalidation_header(&stored).unwrap();
        assert_eq!(name, header::IF_MODIFIED_SINCE);
        assert_eq!(value, "Sun, 29 Nov 2026 12:00:00 GMT");
    }

    #[test]
    fn size_limit_is_inclusive() {
        assert_eq!(fits(1024, &LIMITS), Ok(()));
        assert_eq!(fits(1025, &LIMITS), Err(NotStored::TooLarge));
    }
}
