//! Phase 6, answer, for requests a cache rule matched: what the client gets once the lookup or the fill is
//! done: the stored response (rendered by `hit.rs`, like the express lane's), the upstream's answer, or, when
//! the upstream failed, the stale copy if `stale-if-error` allows it (RFC 5861 §4).

use std::sync::Arc;

use http::{Response, StatusCode, response};

use super::Proxy;
use super::fill::Fetched;
use super::hit::Hit;
use crate::access_log::AccessRecord;
use crate::body::Body;
use crate::cache::policy::NotStored;
use crate::cache::serve::Conditions;
use crate::cache::status::Outcome;
use crate::cache::{CacheStatus, CachedResponse};
use crate::error::ProxyError;

impl Proxy {
    /// Phase 6 after a fill: what the client gets: the stored entry, the upstream's answer, or, when the
    /// upstream failed, the stale copy if `stale-if-error` allows it (RFC 5861 §4).
    pub(super) fn answer(
        &self,
        fetched: Fetched,
        stale: Option<&Arc<CachedResponse>>,
        conditions: &Conditions,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let now = self.cache.clock().now();
        let fallback = stale.filter(|entry| entry.may_serve_on_error(now));
        let had_stale = stale.is_some();
        match fetched {
            Fetched::Stored(entry, fwd_status) => {
                let status = forwarded(Outcome::Stored, fwd_status, had_stale);
                Ok(self.serve_stored(&entry, conditions, status, record))
            }
            Fetched::Streaming { parts, body, ttl } => {
                let status = CacheStatus {
                    ttl: Some(ttl),
                    ..forwarded(Outcome::Stored, parts.status, had_stale)
                };
                Ok(passed_on(parts, body, status, record))
            }
            Fetched::Collapsed(entry) => {
                let status = CacheStatus::new(Outcome::Collapsed);
                Ok(self.serve_stored(&entry, conditions, status, record))
            }
            Fetched::Revalidated(entry) => {
                let status = forwarded(Outcome::Revalidated, StatusCode::NOT_MODIFIED, false);
                Ok(self.serve_stored(&entry, conditions, status, record))
            }
            Fetched::Passed { parts, .. }
                if parts.status.is_server_error() && fallback.is_some() =>
            {
                let entry = fallback.expect("checked by the guard");
                Ok(self.serve_on_error(entry, Some(parts.status), conditions, record))
            }
            Fetched::Passed {
                parts,
                body,
                reason,
            } => {
                let status = CacheStatus {
                    detail: reason.map(NotStored::as_str),
                    ..forwarded(Outcome::Miss, parts.status, had_stale)
                };
                // For HEAD the GET's body is dropped unread: the client asked for headers only.
                let body = if conditions.head { Body::Empty } else { body };
                Ok(passed_on(parts, body, status, record))
            }
            Fetched::Failed(err) => match fallback {
                Some(entry) => {
                    tracing::warn!(error = %err, "upstream failed; serving the stored copy (stale-if-error)");
                    Ok(self.serve_on_error(entry, None, conditions, record))
                }
                None => Err(failed(err, had_stale, record)),
            },
        }
    }

    fn serve_on_error(
        &self,
        entry: &CachedResponse,
        fwd_status: Option<StatusCode>,
        conditions: &Conditions,
        record: &mut AccessRecord,
    ) -> Response<Body> {
        let status = CacheStatus {
            fwd_status,
            detail: Some("stale-if-error"),
            ..CacheStatus::new(Outcome::StaleIfError)
        };
        self.serve_stored(entry, conditions, status, record)
    }

    /// Phase 6 from memory: a stored response as this client gets it (its conditions and range answered
    /// from memory), rendered by [`Hit`] like the express lane's.
    pub(super) fn serve_stored(
        &self,
        entry: &CachedResponse,
        conditions: &Conditions,
        status: CacheStatus,
        record: &mut AccessRecord,
    ) -> Response<Body> {
        let hit = Hit::new(entry, self.cache.clock().now(), status);
        record.cache = Some(hit.status());
        record.labelled = true;
        hit.response(conditions)
    }
}

/// The upstream's answer on its way to the client, `status` saying what the cache did.
fn passed_on(
    parts: response::Parts,
    body: Body,
    status: CacheStatus,
    record: &mut AccessRecord,
) -> Response<Body> {
    record.cache = Some(status);
    Response::from_parts(parts, body)
}

/// No answer from the upstream and no stale copy allowed to stand in: the error is the answer.
fn failed(err: ProxyError, had_stale: bool, record: &mut AccessRecord) -> ProxyError {
    record.cache = Some(CacheStatus {
        detail: Some("upstream-error"),
        had_stale,
        ..CacheStatus::new(Outcome::Miss)
    });
    err
}

/// What the cache did for a request that went upstream, which answered `fwd_status`; `had_stale` says a
/// stored copy was there, stale (`fwd=stale`).
fn forwarded(outcome: Outcome, fwd_status: StatusCode, had_stale: bool) -> CacheStatus {
    CacheStatus {
        fwd_status: Some(fwd_status),
        had_stale,
        ..CacheStatus::new(outcome)
    }
}
