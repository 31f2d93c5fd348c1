//! Phase 2, classify: what no path may see is refused, then `route::classify` sorts the request: under a
//! cache rule (looked up, phase 3) or not (forwarded, phase 4 in `forward.rs`), and which rule it fell under
//! is recorded for the metrics and the access event.

use http::{Request, Uri, Version};

use super::Proxy;
use crate::access_log::AccessRecord;
use crate::config::RuleKind;
use crate::error::ProxyError;
use crate::framing;
use crate::host;
use crate::route::{self, Route};

impl Proxy {
    /// Phase 2: the route of `request`, whose target is `uri` (the route borrows it).
    pub(super) fn classify<'a, B>(
        &self,
        request: &Request<B>,
        uri: &'a Uri,
        record: &mut AccessRecord,
    ) -> Result<Route<'a>, ProxyError> {
        check_request(request)?;
        let route = route::classify(request.method(), uri, request.headers(), &self.rules);
        record.rule = rule_kind(&route);
        Ok(route)
    }

    /// Index of the avatar rule in `rules`, for an avatar route.
    pub(super) fn avatar_rule(&self) -> usize {
        self.avatar_rule
            .expect("an avatar route implies an avatar rule")
    }
}

/// Phase 2, first: what no path may see. An HTTP/2 field list is held to the rules the framing guard holds
/// HTTP/1.1 heads to (the guard sees no HTTP/2), and every request's host is checked ([`host::effective`]),
/// so the cache key, invalidation and the upstream `Host` only ever read a valid one. A few comparisons,
/// no allocation.
fn check_request<B>(request: &Request<B>) -> Result<(), ProxyError> {
    if request.version() == Version::HTTP_2 {
        framing::check_http2(request.uri(), request.headers())
            .map_err(|violation| ProxyError::MalformedRequest(violation.as_str()))?;
    }
    host::effective(request.uri(), request.headers())
        .map_err(|err| ProxyError::MalformedRequest(err.as_str()))?;
    Ok(())
}

/// The kind of the rule a route falls under, if any (the metrics' `route` label).
fn rule_kind(route: &Route<'_>) -> Option<RuleKind> {
    match route {
        Route::Avatar(_) | Route::AvatarBypass { .. } => Some(RuleKind::Avatar),
        Route::Http { .. } => Some(RuleKind::Http),
        Route::RuleBypass(kind, _) => Some(*kind),
        Route::AvatarChange(_) | Route::Unsafe | Route::Pass => None,
    }
}
