//! Stale use, pure: the windows a stored response may be served stale in (RFC 5861 §3, §4), fixed when it
//! is stored; whether the response allows any at all is the directives' one decision (RFC 9111 §4.2.4).

use std::time::Duration;

use http::StatusCode;

use super::super::directives::CacheControl;
use super::Limits;
use super::freshness::heuristically_cacheable;

/// The `stale-while-revalidate` and `stale-if-error` windows of a response being stored: the upstream's own,
/// else the rule's (`CacheControl::stale_window`); `stale-if-error` only for a response that may stand in
/// for a failing upstream at all. `revalidate_only`: stored with no lifetime, only to be revalidated.
pub(super) fn stale_windows(
    cc: &CacheControl,
    status: StatusCode,
    revalidate_only: bool,
    limits: &Limits,
) -> (Duration, Duration) {
    let stale_while_revalidate =
        cc.stale_window(cc.stale_while_revalidate, limits.stale_while_revalidate);
    let stale_if_error = if may_stand_in_for_errors(status, revalidate_only) {
        cc.stale_window(cc.stale_if_error, limits.stale_if_error)
    } else {
        Duration::ZERO
    };
    (stale_while_revalidate, stale_if_error)
}

/// Whether a stored response may answer in place of a failing upstream at all (RFC 5861 §4), whatever
/// `stale-if-error` says: never a server error (the upstream's own new answer says more than an old one),
/// nor a status that is not heuristically cacheable stored with no lifetime, only to be revalidated (a 403
/// kept for its `ETag` is no answer to stand in for anything).
fn may_stand_in_for_errors(status: StatusCode, revalidate_only: bool) -> bool {
    !status.is_server_error() && (heuristically_cacheable(status) || !revalidate_only)
}

#[cfg(test)]
mod tests {
    use super::super::admit;
    use super::super::fixtures::*;
    use crate::cache::policy::RuleKind;

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
}
