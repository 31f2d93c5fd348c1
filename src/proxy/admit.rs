//! Phase 5, admit: what a fill brings back is stored if the policy allows it (RFC 9111 §3) and the rule
//! should hold it; a 304 refreshes the stored copy (§4.3.4) and a `HEAD` answer updates it (§4.3.5). An
//! `http` rule's body streams to its client while a copy fills the cache; an avatar's is read whole first.

use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::{Response, response};
use hyper::body::Incoming;

use super::Proxy;
use super::fill::{Fetched, FillContext};
use crate::body::{Body, Collected, collect_up_to};
use crate::cache::policy::{self, Exchange, Freshness, NotStored};
use crate::cache::{CachedResponse, Fill};
use crate::config::RuleKind;

impl Proxy {
    /// Phase 5: store what the policy allows; any other answer (but a server error, which keeps the stored
    /// copy for `stale-if-error`) supersedes what was stored.
    pub(super) async fn admit(
        self: &Arc<Self>,
        parts: response::Parts,
        body: Incoming,
        exchange: Exchange,
        context: &FillContext<'_>,
        fill: Fill,
    ) -> Fetched {
        let rule = &self.rules[context.rule];
        let freshness = match policy::admit(rule.kind, &parts, exchange, &rule.limits) {
            Ok(freshness) => freshness,
            Err(reason) => return refused(parts, body, reason, fill),
        };
        if rule.kind == RuleKind::Http {
            return self.admit_streaming(parts, body, freshness, context, fill);
        }
        self.admit_collected(parts, body, freshness, context, fill)
            .await
    }

    /// An `http` rule's fill: the body streams to the client while a copy fills the cache (RFC 9111 allows
    /// no less), stored when it ends whole within `max_object_size`.
    fn admit_streaming(
        self: &Arc<Self>,
        parts: response::Parts,
        body: Incoming,
        freshness: Freshness,
        context: &FillContext<'_>,
        fill: Fill,
    ) -> Fetched {
        let limits = self.rules[context.rule].limits;
        let head = head_of(&parts);
        let (proxy, primary, request) = (
            Arc::clone(self),
            context.primary.to_owned(),
            context.request.clone(),
        );
        let body = Body::teed(
            body,
            limits.max_object_size,
            self.cache.keeper().clone(),
            Box::new(move |bytes| {
                let now = proxy.cache.clock().now();
                let entry = CachedResponse::new(&head, bytes, freshness, &limits, &request, now);
                proxy.cache.complete(fill, &primary, Arc::new(entry));
            }),
        );
        let ttl = i64::try_from(freshness.fresh_for.as_secs()).unwrap_or(i64::MAX);
        Fetched::Streaming { parts, body, ttl }
    }

    /// An avatar's fill: the body is read whole before anyone is answered, then stored (passed on unstored
    /// when it outgrows `max_object_size`).
    async fn admit_collected(
        &self,
        parts: response::Parts,
        body: Incoming,
        freshness: Freshness,
        context: &FillContext<'_>,
        fill: Fill,
    ) -> Fetched {
        let limits = self.rules[context.rule].limits;
        let now = self.cache.clock().now();
        // The body of a collected fill is awaited under the head timeout too: waiters are held on it, and an
        // upstream that stalls mid-avatar must not hold them forever (a streamed body has
        // `server.response_idle_timeout` instead).
        let timeout = self.upstream().response_header_timeout();
        let keeper = Some(self.cache.keeper());
        let collected =
            tokio::time::timeout(timeout, collect_up_to(body, limits.max_object_size, keeper))
                .await;
        let Ok(collected) = collected else {
            return Fetched::Failed(self.upstream_body_timed_out(timeout));
        };
        match collected {
            Ok(Collected::Whole(bytes)) => {
                let entry =
                    CachedResponse::new(&parts, bytes, freshness, &limits, &context.request, now);
                let entry = Arc::new(entry);
                self.cache
                    .complete(fill, context.primary, Arc::clone(&entry));
                Fetched::Stored(entry, parts.status)
            }
            Ok(Collected::TooLarge(body)) => {
                fill.discard();
                let reason = Some(NotStored::TooLarge);
                Fetched::Passed {
                    parts,
                    body,
                    reason,
                }
            }
            Err(err) => Fetched::Failed(self.upstream_body_failed(err)),
        }
    }

    /// A 304 for the stored copy: its header fields are updated and its freshness starts over
    /// (RFC 9111 §4.3.4). If the 304 makes it unstorable, it is dropped and served this once.
    pub(super) fn refresh(
        &self,
        stale: &CachedResponse,
        not_modified: &response::Parts,
        exchange: Exchange,
        context: &FillContext<'_>,
        fill: Fill,
    ) -> Fetched {
        let rule = &self.rules[context.rule];
        let parts = merged(stale, &not_modified.headers);
        match policy::admit(rule.kind, &parts, exchange, &rule.limits) {
            Ok(freshness) => {
                let now = self.cache.clock().now();
                let body = stale.body.clone();
                let entry = CachedResponse::new(
                    &parts,
                    body,
                    freshness,
                    &rule.limits,
                    &context.request,
                    now,
                );
                let entry = Arc::new(entry);
                self.cache
                    .complete(fill, context.primary, Arc::clone(&entry));
                Fetched::Revalidated(entry)
            }
            Err(reason) => {
                fill.discard();
                let body = Body::full(stale.body.clone());
                Fetched::Passed {
                    parts,
                    body,
                    reason: Some(reason),
                }
            }
        }
    }

    /// A 200 to a `HEAD` for a stored `GET`: its fields update the stored ones, or it shows the stored one is
    /// outdated and drops it (RFC 9111 §4.3.5).
    pub(super) fn update_from_head(
        &self,
        stored: &Arc<CachedResponse>,
        head: &response::Parts,
        exchange: Exchange,
        rule: usize,
        primary: &str,
        request: &HeaderMap,
    ) {
        let rule = &self.rules[rule];
        if policy::head_invalidates(
            &stored.headers.to_map(0),
            &stored.validators(),
            &head.headers,
        ) {
            self.cache.purge(primary);
            return;
        }
        let parts = merged(stored, &head.headers);
        match policy::admit(rule.kind, &parts, exchange, &rule.limits) {
            Ok(freshness) => {
                let now = self.cache.clock().now();
                let body = stored.body.clone();
                let entry =
                    CachedResponse::new(&parts, body, freshness, &rule.limits, request, now);
                self.cache.update(primary, request, stored, Arc::new(entry));
            }
            Err(_) => self.cache.purge(primary),
        }
    }
}

/// A stored response's head with a newer response's header fields merged in (RFC 9111 §3.2). An `ETag` this
/// cache minted is taken out again, so it is minted anew rather than mistaken for the upstream's validator.
fn merged(stored: &CachedResponse, newer: &HeaderMap) -> response::Parts {
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = stored.status;
    parts.headers = policy::merge_not_modified(&stored.headers.to_map(0), newer);
    if stored.validators().etag.is_none() && !newer.contains_key(header::ETAG) {
        parts.headers.remove(header::ETAG);
    }
    parts
}

/// Status and header fields of a response head (its extensions are not needed to build an entry).
fn head_of(parts: &response::Parts) -> response::Parts {
    let (mut head, ()) = Response::new(()).into_parts();
    head.status = parts.status;
    head.headers = parts.headers.clone();
    head
}

/// An answer the policy refuses to store, passed on as it came. It supersedes the stored copy, but a server
/// error, which leaves it for `stale-if-error`.
fn refused(parts: response::Parts, body: Incoming, reason: NotStored, fill: Fill) -> Fetched {
    if parts.status.is_server_error() {
        fill.finish(None);
    } else {
        fill.discard();
    }
    let body = Body::Stream(body);
    Fetched::Passed {
        parts,
        body,
        reason: Some(reason),
    }
}
