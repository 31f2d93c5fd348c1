//! Cache policy, pure: the cache key, what may be stored, and for how long (RFC 9111).
//!
//! Everything is decided once, when a response arrives: the hit path only compares a stored deadline.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};

use super::directives::{CacheControl, delta_seconds};
use super::vary;
use http::{StatusCode, response};

#[cfg(test)]
mod fixtures;
mod invalidation;
mod key;
mod not_stored;
mod revalidation;
mod rule;

pub use invalidation::invalidated_by_unsafe;
pub use key::{AvatarKey, http_key, key_path_starts_with, key_target};
pub use not_stored::NotStored;
pub use revalidation::{Validators, head_invalidates, merge_not_modified, revalidation_headers};
pub use rule::{Limits, RuleKind};

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
    /// It has a validator, so once stale it can still be revalidated (and is kept for `keep`).
    pub revalidatable: bool,
}

#[cfg(test)]
impl Freshness {
    /// Fresh for `fresh_for` from the moment of storing, stored with no age, never served stale.
    pub fn fresh(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            initial_age: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            revalidatable: false,
        }
    }
}

impl Freshness {
    /// How long the store keeps the entry: while fresh, and as long as it may still be served stale or, with
    /// a validator, be revalidated (`keep`). Keeping is not serving: past its stale windows an entry is only
    /// ever revalidated, never sent as it is.
    pub fn retain_for(&self, limits: &Limits) -> Duration {
        let keep = if self.revalidatable {
            limits.keep
        } else {
            Duration::ZERO
        };
        let stale_use = self.stale_while_revalidate.max(self.stale_if_error);
        self.fresh_for + stale_use.max(keep)
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

/// A request whose `Cache-Control` says `no-store` (RFC 9111 §5.2.1.5): nothing of its exchange may be
/// stored. Read with the response parser, so a quoted argument such as `x="a,no-store,b"` does not count, and an
/// unreadable (non-ASCII) value fails closed. The other request directives are client preferences this cache
/// does not follow.
pub fn request_forbids_storing(headers: &HeaderMap) -> bool {
    CacheControl::of_request(headers).no_store
}

/// Decides whether an upstream answer to a rule's `GET` may be stored, and for how long.
///
/// Storable means what RFC 9111 §3 lets a shared cache store (final status, no `no-store`, no `private`,
/// `Authorization` only with `public`/`s-maxage`/`must-revalidate`) *and* what the rule should hold. For the
/// avatar rule: an `image/*` 200, a 301/302 redirect (Gravatar), or a 404 ("no avatar yet"), never with a
/// `Vary`. For any rule: no `Set-Cookie`, no `Vary: *`, and 404/410 kept at most `negative_ttl`. A declared
/// `Content-Length` over the size limit is refused here; a body without one is held to the same limit while
/// it is read.
pub fn admit(
    kind: RuleKind,
    res: &response::Parts,
    exchange: Exchange,
    limits: &Limits,
) -> Result<Freshness, NotStored> {
    kind_allows(kind, res)?;
    if let Some(length) = declared_length(&res.headers) {
        fits(length, limits)?;
    }
    let cc = CacheControl::of_response(&res.headers);
    cc.allows_shared_storage(exchange.authorized)?;
    let validator = has_validator(&res.headers);
    // A no-cache response is revalidated before every use, so it needs no lifetime of its own; it is only
    // worth storing with a validator to revalidate with.
    let lifetime = if cc.no_cache {
        validator.then_some(None).ok_or(NotStored::NoCache)?
    } else {
        freshness_lifetime(&cc, res, exchange.response_time, limits, validator)?
    };
    let initial_age = initial_age(&res.headers, exchange);
    let mut fresh_for = lifetime.unwrap_or_default().saturating_sub(initial_age);
    if matches!(res.status, StatusCode::NOT_FOUND | StatusCode::GONE) {
        fresh_for = fresh_for.min(limits.negative_ttl);
    }
    if fresh_for.is_zero() && !validator {
        return Err(NotStored::StaleOnArrival);
    }
    let stale_if_error = if may_stand_in_for_errors(res.status, lifetime.is_none()) {
        cc.stale_window(cc.stale_if_error, limits.stale_if_error)
    } else {
        Duration::ZERO
    };
    Ok(Freshness {
        fresh_for,
        initial_age,
        stale_while_revalidate: cc
            .stale_window(cc.stale_while_revalidate, limits.stale_while_revalidate),
        stale_if_error,
        revalidatable: validator,
    })
}

/// Whether a stored response may answer in place of a failing upstream at all (RFC 5861 §4), whatever
/// `stale-if-error` says: never a server error (the upstream's own new answer says more than an old one),
/// nor a status that is not heuristically cacheable stored with no lifetime, only to be revalidated (a 403
/// kept for its `ETag` is no answer to stand in for anything).
fn may_stand_in_for_errors(status: StatusCode, revalidate_only: bool) -> bool {
    !status.is_server_error() && (heuristically_cacheable(status) || !revalidate_only)
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

/// What the rule's kind holds: the avatar rule its three representations and nothing that varies; any rule
/// a final, complete status (RFC 9111 §3), no `Set-Cookie` and no `Vary: *`.
fn kind_allows(kind: RuleKind, res: &response::Parts) -> Result<(), NotStored> {
    match kind {
        RuleKind::Avatar => represents_avatar(res)?,
        // 206 and 304 are not stored as such: fills ask for the whole representation, and a 304 refreshes
        // the stored one (§4.3.4). 1xx are not final.
        RuleKind::Http => {
            let status = res.status;
            if status.is_informational()
                || status == StatusCode::PARTIAL_CONTENT
                || status == StatusCode::NOT_MODIFIED
            {
                return Err(NotStored::Status);
            }
        }
    }
    if res.headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    match (kind, vary::names(&res.headers)) {
        (_, None) => Err(NotStored::Vary),
        (RuleKind::Avatar, Some(names)) if !names.is_empty() => Err(NotStored::Vary),
        _ => Ok(()),
    }
}

fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

fn is_image(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes().trim_ascii_start();
    value.len() > 6 && value[..6].eq_ignore_ascii_case(b"image/")
}

/// Freshness lifetime, RFC 9111 §4.2.1: `s-maxage` (a shared cache), else `max-age`, else `Expires - Date`
/// (`Expires` is ignored when the directives came from `CDN-Cache-Control`, RFC 9213), else heuristic
/// freshness (§4.2.2) for a status that allows it, else zero when there is a validator to revalidate with.
fn freshness_lifetime(
    cc: &CacheControl,
    res: &response::Parts,
    response_time: SystemTime,
    limits: &Limits,
    validator: bool,
) -> Result<Option<Duration>, NotStored> {
    let headers = &res.headers;
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return lifetime
            .map(|seconds| Some(Duration::from_secs(seconds)))
            .ok_or(NotStored::NoFreshness);
    }
    let date = single_value(headers, header::DATE)
        .and_then(http_date)
        .unwrap_or(response_time);
    if let Some(expires) = single_value(headers, header::EXPIRES).filter(|_| !cc.targeted) {
        // An invalid Expires (e.g. "0") means "already expired" (RFC 9111 §5.3).
        return match http_date(expires) {
            Some(expires) => Ok(Some(expires.duration_since(date).unwrap_or_default())),
            None if validator => Ok(None),
            None => Err(NotStored::StaleOnArrival),
        };
    }
    if let Some(lifetime) = heuristic_lifetime(res, date, limits) {
        return Ok(Some(lifetime));
    }
    validator.then_some(None).ok_or(NotStored::NoFreshness)
}

/// RFC 9111 §4.2.2: for a status heuristically cacheable by default (RFC 9110 §15.1) with a
/// `Last-Modified`, a fraction of the time since it was modified, capped; nothing otherwise.
fn heuristic_lifetime(
    res: &response::Parts,
    date: SystemTime,
    limits: &Limits,
) -> Option<Duration> {
    if !heuristically_cacheable(res.status) {
        return None;
    }
    let last_modified = single_value(&res.headers, header::LAST_MODIFIED).and_then(http_date)?;
    let since = date.duration_since(last_modified).ok()?;
    Some(
        since
            .mul_f64(limits.heuristic_fraction)
            .min(limits.heuristic_max),
    )
}

/// The statuses RFC 9110 §15.1 makes heuristically cacheable.
fn heuristically_cacheable(status: StatusCode) -> bool {
    const HEURISTICALLY_CACHEABLE: [u16; 12] =
        [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];
    HEURISTICALLY_CACHEABLE.contains(&status.as_u16())
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_no_store_is_read_as_a_directive_not_as_text() {
        let request = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, value.parse().unwrap());
            request_forbids_storing(&headers)
        };
        assert!(request("max-age=0, No-Store"));
        assert!(request("no-store"));
        assert!(!request("no-cache, max-age=0"));
        // A quoted argument is one value: the old hand-split read this as a no-store.
        assert!(!request(r#"x="a,no-store,b""#));
        assert!(!request_forbids_storing(&HeaderMap::new()));
    }

    use super::fixtures::*;
    use super::*;
    use http::HeaderValue;

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
        let freshness = admit(RuleKind::Avatar, &res, exchange(), &LIMITS).unwrap();
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
        let freshness = admit(RuleKind::Avatar, &png("max-age=100"), ex, &LIMITS).unwrap();
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
            admit(RuleKind::Avatar, &res, ex, &LIMITS)
                .unwrap()
                .fresh_for,
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
            admit(RuleKind::Avatar, &png("max-age=10"), ex, &LIMITS).map(|_| ()),
            Err(NotStored::Authorization)
        );
        assert!(admit(RuleKind::Avatar, &png("public, max-age=10"), ex, &LIMITS).is_ok());
        assert!(admit(RuleKind::Avatar, &png("s-maxage=10"), ex, &LIMITS).is_ok());
        assert!(
            admit(
                RuleKind::Avatar,
                &png("must-revalidate, max-age=10"),
                ex,
                &LIMITS
            )
            .is_ok()
        );
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
        let f = admit(RuleKind::Avatar, res, exchange(), &LIMITS).unwrap();
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
        let freshness = admit(RuleKind::Avatar, &res, exchange(), &LIMITS).unwrap();
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

    /// RFC 9111 §5.2.2.10 (#13): `s-maxage` carries `proxy-revalidate`: stored and fresh for its
    /// `s-maxage`, then revalidated, never served stale, whatever windows the response or the rule give.
    #[test]
    fn s_maxage_forbids_stale_use() {
        let res = png("public, s-maxage=10, stale-while-revalidate=5, stale-if-error=7");
        assert_eq!(fresh_for(&res), Ok(10));
        assert_eq!(windows(&res), (0, 0));
        let targeted = response(
            200,
            &[
                ("content-type", "image/png"),
                ("cdn-cache-control", "s-maxage=10, stale-if-error=7"),
            ],
        );
        assert_eq!(windows(&targeted), (0, 0), "in CDN-Cache-Control too");
    }

    #[test]
    fn entries_are_kept_for_stale_use_and_with_a_validator_for_revalidation() {
        let limits = Limits {
            keep: Duration::from_secs(3600),
            ..LIMITS
        };
        let kept = |res: &response::Parts| {
            let freshness = admit(RuleKind::Http, res, exchange(), &limits).unwrap();
            freshness.retain_for(&limits).as_secs()
        };
        // No validator: nothing to revalidate with, kept only while it may be served stale (the larger
        // window: the rule's stale-while-revalidate, 60 s).
        assert_eq!(kept(&png("max-age=10, stale-if-error=5")), 10 + 60);
        // A validator: kept for `keep` past freshness too, to be revalidated (#13).
        let mut validated = png("max-age=10, stale-if-error=5");
        validated
            .headers
            .insert("etag", HeaderValue::from_static("\"v1\""));
        assert_eq!(kept(&validated), 10 + 3600);
        // `keep` is not a stale window: with none at all the entry is kept, and never served stale.
        let none = Limits {
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            ..limits
        };
        let freshness = admit(RuleKind::Http, &validated, exchange(), &none).unwrap();
        assert_eq!(freshness.retain_for(&none).as_secs(), 10 + 3600);
        assert_eq!(
            (freshness.stale_while_revalidate, freshness.stale_if_error),
            (Duration::ZERO, Duration::from_secs(5)),
            "only the origin's own window"
        );
    }

    #[test]
    fn stored_errors_never_stand_in_for_a_failing_upstream() {
        let sie = |status: u16, headers: &[(&str, &str)]| {
            let res = response(status, headers);
            admit(RuleKind::Http, &res, exchange(), &LIMITS)
                .unwrap()
                .stale_if_error
                .as_secs()
        };
        let explicit = [("cache-control", "max-age=10, stale-if-error=600")];
        assert_eq!(sie(200, &explicit), 600);
        assert_eq!(
            sie(403, &explicit),
            600,
            "explicitly fresh: the origin chose"
        );
        assert_eq!(sie(500, &explicit), 0, "a server error, never");
        assert_eq!(sie(503, &explicit), 0);
        // Stored with no lifetime, only for its validator.
        let revalidate_only = [("cache-control", "stale-if-error=600"), ("etag", "\"v\"")];
        assert_eq!(sie(403, &revalidate_only), 0, "not heuristically cacheable");
        assert_eq!(sie(200, &revalidate_only), 600, "heuristically cacheable");
    }

    #[test]
    fn size_limit_is_inclusive() {
        assert_eq!(fits(1024, &LIMITS), Ok(()));
        assert_eq!(fits(1025, &LIMITS), Err(NotStored::TooLarge));
    }

    /// RFC 9111 decisions for `http` rules, table-driven: status and header fields in, freshness (seconds)
    /// or the reason for not storing out.
    #[test]
    fn http_rule_admission_table() {
        let date = httpdate::fmt_http_date(at(0));
        let ten_days_earlier = httpdate::fmt_http_date(at(0) - Duration::from_secs(10 * 86400));
        let in_90s = httpdate::fmt_http_date(at(90));
        type Case<'a> = (
            &'a str,
            u16,
            Vec<(&'a str, &'a str)>,
            Result<u64, NotStored>,
        );
        let cases: Vec<Case> = vec![
            (
                "§3 explicit freshness",
                200,
                vec![("cache-control", "max-age=60")],
                Ok(60),
            ),
            (
                "§3 any final status may be stored",
                500,
                vec![("cache-control", "max-age=60")],
                Ok(60),
            ),
            (
                "§3 206 is not stored as such",
                206,
                vec![("cache-control", "max-age=60")],
                Err(NotStored::Status),
            ),
            (
                "§3 304 refreshes, is not stored",
                304,
                vec![("cache-control", "max-age=60")],
                Err(NotStored::Status),
            ),
            (
                "§3 no-store",
                200,
                vec![("cache-control", "max-age=60, no-store")],
                Err(NotStored::NoStore),
            ),
            (
                "§3 private",
                200,
                vec![("cache-control", "max-age=60, private")],
                Err(NotStored::Private),
            ),
            (
                "§4.1 Vary: * never matches",
                200,
                vec![("cache-control", "max-age=60"), ("vary", "*")],
                Err(NotStored::Vary),
            ),
            (
                "§4.1 other Vary is stored per variant",
                200,
                vec![("cache-control", "max-age=60"), ("vary", "accept-encoding")],
                Ok(60),
            ),
            (
                "cookies are never shared",
                200,
                vec![
                    ("cache-control", "public, max-age=60"),
                    ("set-cookie", "a=1"),
                ],
                Err(NotStored::SetCookie),
            ),
            (
                "§4.2.1 Expires - Date",
                200,
                vec![("date", &date), ("expires", &in_90s)],
                Ok(90),
            ),
            (
                "§4.2.2 heuristic: 10% of 10 days, capped at 1 day",
                200,
                vec![("date", &date), ("last-modified", &ten_days_earlier)],
                Ok(86400),
            ),
            (
                "§4.2.2 no heuristic for 201",
                201,
                vec![("date", &date), ("last-modified", &ten_days_earlier)],
                Ok(0),
            ),
            (
                "§4.2.2 no heuristic for 500, no validator",
                500,
                vec![("date", &date)],
                Err(NotStored::NoFreshness),
            ),
            (
                "validator only: stored, always stale",
                200,
                vec![("etag", "\"v\"")],
                Ok(0),
            ),
            (
                "nothing at all: never a default TTL",
                200,
                vec![],
                Err(NotStored::NoFreshness),
            ),
            (
                "negative TTL caps 410",
                410,
                vec![("cache-control", "max-age=600")],
                Ok(60),
            ),
            (
                "RFC 9213 CDN-Cache-Control wins",
                200,
                vec![
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=30"),
                ],
                Ok(30),
            ),
            (
                "RFC 9213 an invalid CDN-Cache-Control is ignored (a String max-age)",
                200,
                vec![
                    ("cache-control", "max-age=5"),
                    ("cdn-cache-control", "max-age=\"60\""),
                ],
                Ok(5),
            ),
            (
                "RFC 9213 an invalid CDN-Cache-Control leaves Expires in force",
                200,
                vec![
                    ("cdn-cache-control", "max-age=60.0"),
                    ("expires", &in_90s),
                    ("date", &date),
                ],
                Ok(90),
            ),
            (
                "RFC 9213 an invalid CDN-Cache-Control cannot lift no-store",
                200,
                vec![
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=600, public=?0"),
                ],
                Err(NotStored::NoStore),
            ),
            (
                "RFC 9213 Expires is ignored with CDN-Cache-Control",
                200,
                vec![
                    ("cdn-cache-control", "public"),
                    ("expires", &in_90s),
                    ("date", &date),
                ],
                Err(NotStored::NoFreshness),
            ),
        ];
        for (rule, status, headers, expected) in cases {
            let res = response(status, &headers);
            let got =
                admit(RuleKind::Http, &res, exchange(), &LIMITS).map(|f| f.fresh_for.as_secs());
            assert_eq!(got, expected, "{rule}");
        }
    }

    #[test]
    fn http_rule_authorization_follows_section_3_5() {
        let ex = Exchange {
            authorized: true,
            ..exchange()
        };
        let stored = |cc: &str| {
            admit(
                RuleKind::Http,
                &response(200, &[("cache-control", cc)]),
                ex,
                &LIMITS,
            )
            .is_ok()
        };
        assert!(!stored("max-age=60"));
        assert!(stored("public, max-age=60"));
        assert!(stored("s-maxage=60"));
        assert!(stored("must-revalidate, max-age=60"));
    }
}
