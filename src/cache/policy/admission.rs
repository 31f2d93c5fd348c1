//! Admission, pure: whether an upstream answer may be stored and for how long, decided once when it arrives
//! (RFC 9111 §3: what a shared cache may store, and what the rule should hold), and a request's `no-store`.

use http::header::{self, HeaderMap};
use http::{StatusCode, response};

use super::super::directives::CacheControl;
use super::super::vary;
use super::avatar::represents_avatar;
use super::freshness::{freshness_lifetime, initial_age, single_value};
use super::stale::stale_windows;
use super::{Exchange, Freshness, Limits, NotStored, RuleKind};

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
    let (stale_while_revalidate, stale_if_error) =
        stale_windows(&cc, res.status, lifetime.is_none(), limits);
    Ok(Freshness {
        fresh_for,
        initial_age,
        stale_while_revalidate,
        stale_if_error,
        revalidatable: validator,
    })
}

/// Whether a body of `len` bytes may be stored.
pub fn fits(len: u64, limits: &Limits) -> Result<(), NotStored> {
    if len > limits.max_object_size as u64 {
        return Err(NotStored::TooLarge);
    }
    Ok(())
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

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    single_value(headers, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
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

    use super::super::fixtures::*;
    use super::*;
    use std::time::Duration;

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
    fn not_found_ttl_is_capped() {
        let res = response(404, &[("cache-control", "public, max-age=86400")]);
        assert_eq!(fresh_for(&res), Ok(60));
        let res = response(404, &[("cache-control", "public, max-age=5")]);
        assert_eq!(fresh_for(&res), Ok(5));
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
