//! Phase 7, observe: traffic that shows a stored response changed drops it, at once; and what every answer
//! gets last: `Cache-Status`/`X-Cache`, the counters and metrics, the access event.
//!
//! - A non-error answer to an unsafe method drops the target URI and the `Location` / `Content-Location`
//!   URIs on the same authority (RFC 9111 §4.4), under whichever rule would cache them.
//! - `PUT /api/v4/user/setting/avatar` answered `code: 0`: the user the bearer token names.
//! - `PUT /api/v4/admin/user/{n}` answered `code: 0`: the user its `data.hash_id` names.
//! - A `nocache` avatar answer (Cloudreve's settings page asks for one after every change) that differs from
//!   the stored copy in status, `Last-Modified` or bytes.
//!
//! Only small JSON answers on the two change routes are read (up to `MAX_CONFIRMATION_SIZE`); `nocache`
//! answers are hashed as they stream, never held.

use std::sync::Arc;

use http::{HeaderValue, Method, Response, StatusCode, Uri, header, response};

use super::Proxy;
use super::hit::{CACHE_STATUS, X_CACHE};
use crate::access_log::{AccessRecord, LoggedBody};
use crate::body::{Body, Collected, collect_up_to};
use crate::cache::Invalidation;
use crate::cache::policy::{self, AvatarKey};
use crate::cache::status::Outcome;
use crate::config::RuleKind;
use crate::error::ProxyError;
use crate::invalidate::{self, MAX_CONFIRMATION_SIZE};
use crate::route::{self, AvatarChange, Bypass};

impl Proxy {
    /// Reads the answer to an avatar change and, when Cloudreve confirmed it, drops that user's stored avatar
    /// before the client hears of the success.
    pub(super) async fn observe_change(
        &self,
        change: AvatarChange,
        authorization: Option<&HeaderValue>,
        response: Response<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let subject = match change {
            AvatarChange::Own => authorization.and_then(invalidate::jwt_subject),
            AvatarChange::AdminEdit => None,
        };
        if response.status() != StatusCode::OK || (change == AvatarChange::Own && subject.is_none())
        {
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let Body::Stream(incoming) = body else {
            return Ok(Response::from_parts(parts, body));
        };
        // Read before the client gets the head, so under the head timeout (like a fill's body): an upstream
        // that stalls mid-confirmation must not hold the client forever.
        let timeout = self.upstream().response_header_timeout();
        let collected = tokio::time::timeout(
            timeout,
            collect_up_to(incoming, MAX_CONFIRMATION_SIZE, None),
        )
        .await
        .map_err(|_| self.upstream_body_timed_out(timeout))?
        .map_err(|err| self.upstream_body_failed(err))?;
        let bytes = match collected {
            Collected::Whole(bytes) => bytes,
            Collected::TooLarge(body) => return Ok(Response::from_parts(parts, body)),
        };
        let changed = match change {
            AvatarChange::Own => subject.filter(|_| invalidate::confirmed(&bytes)),
            AvatarChange::AdminEdit => invalidate::admin_subject(&bytes),
        };
        if let Some(user) = changed {
            self.purge_user(&user, "Cloudreve confirmed an avatar change");
        }
        Ok(Response::from_parts(parts, Body::full(bytes)))
    }

    /// Compares a `nocache` answer with the stored copy: a different status or `Last-Modified` drops it at
    /// once; otherwise the bytes are hashed as they pass and a difference drops it when the body ends.
    /// Answers that are not an avatar representation (JSON errors about the requester) tell nothing.
    pub(super) fn watch_bypass(
        self: &Arc<Self>,
        method: &Method,
        response: Response<Body>,
        reason: Bypass,
        key: Option<AvatarKey<'_>>,
    ) -> Response<Body> {
        let (Bypass::NoCache, Some(key), &Method::GET) = (reason, key, method) else {
            return response;
        };
        let Some(stored) = self.cache.peek(key.as_str(), &http::HeaderMap::new()) else {
            return response;
        };
        let (parts, body) = response.into_parts();
        if !policy::describes_avatar(&parts) {
            return Response::from_parts(parts, body);
        }
        let modified = parts.headers.get(header::LAST_MODIFIED);
        if parts.status != stored.status
            || modified != stored.headers.get(&header::LAST_MODIFIED).as_ref()
        {
            self.purge_user(key.as_str(), "a nocache answer shows a newer avatar");
            return Response::from_parts(parts, body);
        }
        let expected = (stored.body_hash, stored.body.len() as u64);
        let proxy = Arc::clone(self);
        let user = key.as_str().to_owned();
        let body = body.watched(Box::new(move |hash, len| {
            if (hash, len) != expected {
                proxy.purge_user(
                    &user,
                    "a nocache answer has other bytes than the stored avatar",
                );
            }
        }));
        Response::from_parts(parts, body)
    }

    /// RFC 9111 §4.4: drops what [`policy::invalidated_by_unsafe`] names after an unsafe request's answer,
    /// under whichever rule would cache each target.
    pub(super) fn invalidate_after_unsafe(
        &self,
        target: &Uri,
        host: Option<&str>,
        response: &Response<Body>,
    ) {
        let target = target.path_and_query().map(|pq| pq.as_str());
        let invalidated =
            policy::invalidated_by_unsafe(response.status(), response.headers(), target, host);
        for path_and_query in invalidated {
            if let Some(key) = route::key_for(path_and_query, host, &self.rules) {
                self.cache.invalidate(&Invalidation::Key(key.into_owned()));
                tracing::debug!(target = path_and_query, "invalidated by an unsafe request");
            }
        }
    }

    /// Phase 7 for every answer of the full path: `Cache-Status` and `X-Cache` on an answer a rule matched,
    /// the counters and the request metrics, and the access event, written when the body ends.
    pub(super) fn observe(
        &self,
        response: Response<Body>,
        record: AccessRecord,
    ) -> Response<LoggedBody> {
        let (mut parts, body) = response.into_parts();
        label(&mut parts, &record);
        let outcome = record.cache.map(|status| status.outcome);
        self.count(record.rule, outcome, parts.status);
        let body = record.finish(parts.status, body, self.access_logging());
        Response::from_parts(parts, body)
    }

    /// Every answer is counted here, on either lane (an express-lane hit included): the cache's outcome
    /// counter (`/stats`) and the request metrics.
    pub(super) fn count(&self, rule: Option<RuleKind>, cache: Option<Outcome>, code: StatusCode) {
        if let Some(outcome) = cache {
            self.cache.count(outcome);
        }
        self.metrics.count(rule, cache, code);
    }

    fn purge_user(&self, user: &str, why: &'static str) {
        if let Some(key) = AvatarKey::from_path_segment(user) {
            self.cache
                .invalidate(&Invalidation::Key(key.as_str().to_owned()));
            tracing::info!(user, why, "stored avatar dropped");
        }
    }
}

/// Every response a rule matched says what the cache did (a hit's head has it already, in its place,
/// `hit.rs`).
fn label(parts: &mut response::Parts, record: &AccessRecord) {
    let Some(status) = record.cache.filter(|_| !record.labelled) else {
        return;
    };
    parts
        .headers
        .insert(CACHE_STATUS.clone(), status.header_value());
    parts.headers.insert(X_CACHE.clone(), status.x_cache());
}
