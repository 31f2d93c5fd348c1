//! Freshness, pure: how long a stored response is fresh (RFC 9111 §4.2.1: `s-maxage`, `max-age`, `Expires`;
//! §4.2.2 heuristics), its age on arrival (§4.2.3), and how long the store keeps it.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{StatusCode, response};

use super::super::directives::{CacheControl, delta_seconds};
use super::{Limits, NotStored};

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

/// Freshness lifetime, RFC 9111 §4.2.1: `s-maxage` (a shared cache), else `max-age`, else `Expires - Date`
/// (`Expires` is ignored when the directives came from `CDN-Cache-Control`, RFC 9213), else heuristic
/// freshness (§4.2.2) for a status that allows it, else zero when there is a validator to revalidate with.
pub(super) fn freshness_lifetime(
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
pub(super) fn heuristically_cacheable(status: StatusCode) -> bool {
    const HEURISTICALLY_CACHEABLE: [u16; 12] =
        [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];
    HEURISTICALLY_CACHEABLE.contains(&status.as_u16())
}

/// `corrected_initial_age` of RFC 9111 §4.2.3: the larger of what the clocks say (`Date`) and what the
/// caches on the way say (`Age` plus the time the request took).
pub(super) fn initial_age(headers: &HeaderMap, exchange: Exchange) -> Duration {
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

pub(super) fn single_value(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::super::admit;
    use super::super::fixtures::*;
    use super::*;
    use crate::cache::policy::RuleKind;
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
}
