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
use crate::cache::{CacheStatus, Lookup};
use crate::config::RuleKind;
use crate::error::ProxyError;
use crate::upstream::ClientInfo;

impl Proxy {
    /// Phase 2: a fresh entry (or a stale one within `stale-while-revalidate`) is answered from memory;
    /// anything else is fetched once per key however many clients wait.
    pub(super) async fn serve_cached(
        self: &Arc<Self>,
        request: Request<Incoming>,
        rule: usize,
        primary: &str,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        // The body of a `GET` or `HEAD` means nothing (RFC 9110 §9.3.1): none of it is sent upstream.
        let (head, body) = request.into_parts();
        drop(body);
        let conditions = Conditions::of(&head.method, &head.headers);
        let kind = self.rules[rule].kind;
        if kind == RuleKind::Http && conditions.head {
            let forwarded = self.serve_head(&head, rule, primary, &conditions, client, record);
            return Box::pin(forwarded).await;
        }
        match self.cache.lookup(primary, &head.headers) {
            Lookup::Fresh(entry) => {
                let status = CacheStatus::new(Outcome::Hit);
                Ok(self.serve_stored(&entry, &conditions, status, record))
            }
            Lookup::StaleWhileRevalidate { entry, refresh } => {
                if let Some(fill) = refresh {
                    self.refresh_in_background(
                        &head,
                        rule,
                        primary,
                        fill,
                        Arc::clone(&entry),
                        client.without_interim(),
                    );
                }
                let status = CacheStatus {
                    detail: Some("stale-while-revalidate"),
                    ..CacheStatus::new(Outcome::Stale)
                };
                Ok(self.serve_stored(&entry, &conditions, status, record))
            }
            // The paths that wait on the upstream hold large futures; boxed, they do not weigh on every hit
            // (and on every pass-through request, whose future contains this one).
            Lookup::Miss(miss) => {
                let miss = self.serve_miss(miss, &head, rule, primary, &conditions, client, record);
                Box::pin(miss).await
            }
        }
    }

    /// `HEAD` under an `http` rule: answered from a fresh stored `GET`; otherwise forwarded (built like a
    /// fill, from what the key covers), and a 200 updates or invalidates the stored `GET` (RFC 9111 §4.3.5).
    async fn serve_head(
        &self,
        head: &request::Parts,
        rule: usize,
        primary: &str,
        conditions: &Conditions,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let stored = self.cache.peek(primary, &head.headers);
        let now = self.cache.clock().now();
        if let Some(entry) = stored.as_ref().filter(|entry| entry.is_fresh(now)) {
            return Ok(self.serve_stored(
                entry,
                conditions,
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
