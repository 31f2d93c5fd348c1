//! Phase 3, lookup, for requests a cache rule matched: a fresh entry (or a stale one within
//! `stale-while-revalidate`, refreshed in the background, RFC 5861 §3) is answered from memory; anything
//! else is filled (`fill.rs`) once per key however many clients wait. A `HEAD` under an `http` rule is
//! answered from a fresh stored `GET`, or forwarded and its answer used to update the stored one.

use std::sync::Arc;

use http::{Request, Response, StatusCode, request};
use hyper::body::Incoming;

use super::Proxy;
use crate::access_log::AccessRecord;
use crate::body::Body;
use crate::cache::request::{self as cache_request, Purpose};
use crate::cache::serve::Conditions;
use crate::cache::status::Outcome;
use crate::cache::{CacheStatus, CachedResponse, Lookup, Miss};
use crate::config::RuleKind;
use crate::error::ProxyError;
use crate::upstream::ClientInfo;

/// A request a cache rule matched, as the phases after classify see it.
pub(super) struct Cached<'a> {
    /// The request head. Its body is dropped: the body of a `GET` or `HEAD` means nothing (RFC 9110
    /// §9.3.1), and none of it is sent upstream.
    pub(super) head: request::Parts,
    /// Index of the rule in `Proxy::rules`.
    pub(super) rule: usize,
    /// The primary cache key.
    pub(super) primary: &'a str,
    /// The client's conditions and range, answered from memory.
    pub(super) conditions: Conditions,
}

impl<'a> Cached<'a> {
    /// `request` under the rule at `rule`, keyed `primary`.
    pub(super) fn new(request: Request<Incoming>, rule: usize, primary: &'a str) -> Self {
        let (head, body) = request.into_parts();
        drop(body);
        let conditions = Conditions::of(&head.method, &head.headers);
        Self {
            head,
            rule,
            primary,
            conditions,
        }
    }
}

/// What the lookup found.
pub(super) enum Found {
    /// A stored response that answers (phase 6), and what the cache did.
    Stored(Arc<CachedResponse>, CacheStatus),
    /// A `HEAD` under an `http` rule, answered by [`Proxy::serve_head`].
    Head,
    /// Nothing servable: this request fills it (phase 4), or waits for the one that does.
    Miss(Miss),
}

impl Proxy {
    /// Phase 3: a fresh entry answers; a stale one within `stale-while-revalidate` answers too, and this
    /// request starts its refresh in the background unless another one already has; anything else misses.
    pub(super) fn lookup(self: &Arc<Self>, cached: &Cached<'_>, client: &ClientInfo) -> Found {
        if self.rules[cached.rule].kind == RuleKind::Http && cached.conditions.head {
            return Found::Head;
        }
        match self.cache.lookup(cached.primary, &cached.head.headers) {
            Lookup::Fresh(entry) => Found::Stored(entry, CacheStatus::new(Outcome::Hit)),
            Lookup::StaleWhileRevalidate { entry, refresh } => {
                if let Some(fill) = refresh {
                    let stale = Arc::clone(&entry);
                    self.refresh_in_background(cached, fill, stale, client.without_interim());
                }
                let status = CacheStatus {
                    detail: Some("stale-while-revalidate"),
                    ..CacheStatus::new(Outcome::Stale)
                };
                Found::Stored(entry, status)
            }
            Lookup::Miss(miss) => Found::Miss(miss),
        }
    }

    /// `HEAD` under an `http` rule: answered from a fresh stored `GET`; otherwise forwarded (built like a
    /// fill, from what the key covers), and a 200 updates or invalidates the stored `GET` (RFC 9111 §4.3.5).
    pub(super) async fn serve_head(
        &self,
        cached: &Cached<'_>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let (head, rule, primary) = (&cached.head, cached.rule, cached.primary);
        let stored = self.cache.peek(primary, &head.headers);
        let now = self.cache.clock().now();
        if let Some(entry) = stored
            .as_ref()
            .filter(|entry| self.cache.is_fresh(entry, now))
        {
            return Ok(self.serve_stored(
                entry,
                &cached.conditions,
                CacheStatus::new(Outcome::Hit),
                record,
            ));
        }
        let keyed = self.cache.keyed_fields(primary);
        let also = &self.rules[rule].fill_fields;
        let parts = cache_request::build(head, Purpose::Head, &keyed, also);
        let request_headers = parts.headers.clone();
        let (answered, elapsed) = self.fetch(parts, client).await;
        record.upstream_time = elapsed;
        let (parts, body, exchange) = answered?;
        if let (Some(stored), StatusCode::OK) = (&stored, parts.status) {
            self.update_from_head(stored, &parts, exchange, rule, primary, &request_headers);
        }
        record.cache = Some(CacheStatus {
            fwd_status: Some(parts.status),
            detail: Some("head"),
            had_stale: stored.is_some(),
            ..CacheStatus::new(Outcome::Miss)
        });
        Ok(Response::from_parts(parts, Body::Stream(body)))
    }
}
