//! Phases 2 to 4 for avatars: lookup, one fill per key (a fetch, or a revalidation of the stored copy),
//! admission, stale serving (RFC 5861), and answering from memory.

use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::{Method, Request, Response, StatusCode, request, response};
use hyper::body::Incoming;

use super::Proxy;
use crate::access_log::AccessRecord;
use crate::body::{Body, Collected, collect_up_to};
use crate::cache::policy::{self, AvatarKey, Exchange, NotStored};
use crate::cache::serve::{self, Conditions};
use crate::cache::status::Outcome;
use crate::cache::{CacheStatus, CachedResponse, Fill, Lookup};
use crate::error::ProxyError;
use crate::upstream::{self, ClientInfo};

/// What one upstream fetch for an avatar came to.
enum Fetched {
    /// A new or replacing entry was stored.
    Stored(Arc<CachedResponse>, StatusCode),
    /// The upstream confirmed the stored entry (304) and it was refreshed.
    Revalidated(Arc<CachedResponse>),
    /// An answer that is not stored, passed on as it came.
    Passed {
        parts: response::Parts,
        body: Body,
        reason: Option<NotStored>,
    },
    /// No usable answer.
    Failed(ProxyError),
}

/// An upstream answer with the times the age calculation needs.
type Answered = (response::Parts, Incoming, Exchange);

impl Proxy {
    /// Phase 2: a fresh entry (or a stale one within `stale-while-revalidate`) is answered from memory;
    /// anything else is fetched once per key however many clients wait.
    pub(super) async fn serve_avatar(
        self: &Arc<Self>,
        request: Request<Incoming>,
        key: AvatarKey<'_>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let conditions = Conditions::of(request.method(), request.headers());
        match self.cache.lookup(key) {
            Lookup::Fresh(entry) => {
                let status = CacheStatus::new(Outcome::Hit);
                Ok(self.serve_stored(&entry, &conditions, status, record))
            }
            Lookup::StaleWhileRevalidate { entry, refresh } => {
                if let Some(fill) = refresh {
                    self.refresh_in_background(request, fill, Arc::clone(&entry), *client);
                }
                let status = CacheStatus {
                    detail: Some("stale-while-revalidate"),
                    ..CacheStatus::new(Outcome::Stale)
                };
                Ok(self.serve_stored(&entry, &conditions, status, record))
            }
            Lookup::Fill { fill, stale } => {
                let parts = fill_request(request, stale.as_deref());
                let (fetched, elapsed) = self.fill(parts, client, fill, stale.as_ref()).await;
                record.upstream_time = elapsed;
                self.answer(fetched, stale.as_ref(), &conditions, record)
            }
            Lookup::Wait { waiter, stale } => match waiter.wait().await {
                Some(entry) => {
                    let status = CacheStatus::new(Outcome::Collapsed);
                    Ok(self.serve_stored(&entry, &conditions, status, record))
                }
                // The fill stored nothing: this request goes upstream itself, at once.
                None => {
                    let fetched = self
                        .fetch_alone(fill_request(request, None), client, record)
                        .await;
                    self.answer(fetched, stale.as_ref(), &conditions, record)
                }
            },
        }
    }

    /// One request refreshes a stale entry while others keep being served the stale copy (RFC 5861 §3).
    fn refresh_in_background(
        self: &Arc<Self>,
        request: Request<Incoming>,
        fill: Fill,
        stale: Arc<CachedResponse>,
        client: ClientInfo,
    ) {
        let parts = fill_request(request, Some(&stale));
        let proxy = Arc::clone(self);
        tokio::spawn(async move {
            let (fetched, _) = proxy.fill(parts, &client, fill, Some(&stale)).await;
            if let Fetched::Failed(err) = fetched {
                tracing::warn!(error = %err, "background refresh of an avatar failed; the stored copy stays");
            }
        });
    }

    /// Phases 3 and 4 for the one request that holds the fill: fetch (revalidating `stale` if there is one),
    /// then store, refresh or pass on. On failure the guard is dropped, which sends waiters on their own way.
    async fn fill(
        &self,
        parts: request::Parts,
        client: &ClientInfo,
        fill: Fill,
        stale: Option<&Arc<CachedResponse>>,
    ) -> (Fetched, Option<Duration>) {
        let (answered, elapsed) = self.fetch(parts, client).await;
        let fetched = match answered {
            Err(err) => Fetched::Failed(err),
            Ok((parts, body, exchange)) => match stale {
                Some(stale) if parts.status == StatusCode::NOT_MODIFIED => {
                    self.refresh(stale, &parts, exchange, fill)
                }
                _ => self.admit(parts, body, exchange, fill).await,
            },
        };
        (fetched, elapsed)
    }

    /// Phase 4: store what the policy allows; any other answer (but a server error, which keeps the stored
    /// copy for `stale-if-error`) supersedes what was stored.
    async fn admit(
        &self,
        parts: response::Parts,
        body: Incoming,
        exchange: Exchange,
        fill: Fill,
    ) -> Fetched {
        let limits = *self.cache.limits();
        let freshness = match policy::admit(&parts, exchange, &limits) {
            Ok(freshness) => freshness,
            Err(reason) => {
                if parts.status.is_server_error() {
                    fill.finish(None);
                } else {
                    fill.discard();
                }
                let body = Body::Stream(body);
                return Fetched::Passed {
                    parts,
                    body,
                    reason: Some(reason),
                };
            }
        };
        match collect_up_to(body, limits.max_object_size).await {
            Ok(Collected::Whole(bytes)) => {
                let entry = self.cache.entry(&parts, bytes, freshness);
                fill.finish(Some(Arc::clone(&entry)));
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
    fn refresh(
        &self,
        stale: &CachedResponse,
        not_modified: &response::Parts,
        exchange: Exchange,
        fill: Fill,
    ) -> Fetched {
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = stale.status;
        parts.headers = policy::merge_not_modified(&stale.headers, &not_modified.headers);
        match policy::admit(&parts, exchange, self.cache.limits()) {
            Ok(freshness) => {
                let entry = self.cache.entry(&parts, stale.body.clone(), freshness);
                fill.finish(Some(Arc::clone(&entry)));
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

    /// An avatar fetched for this client alone, because the fill it waited for stored nothing.
    async fn fetch_alone(
        &self,
        parts: request::Parts,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Fetched {
        let (answered, elapsed) = self.fetch(parts, client).await;
        record.upstream_time = elapsed;
        match answered {
            Err(err) => Fetched::Failed(err),
            Ok((parts, body, exchange)) => {
                // Say why the waited-for fill stored nothing, when this answer shows it.
                let reason = policy::admit(&parts, exchange, self.cache.limits()).err();
                let body = Body::Stream(body);
                Fetched::Passed {
                    parts,
                    body,
                    reason,
                }
            }
        }
    }

    /// Phase 3 for avatars: one upstream request, with the times RFC 9111 §4.2.3 needs.
    async fn fetch(
        &self,
        mut parts: request::Parts,
        client: &ClientInfo,
    ) -> (Result<Answered, ProxyError>, Option<Duration>) {
        let authorized = parts.headers.contains_key(header::AUTHORIZATION);
        let upstream = self.upstream();
        if let Err(err) = upstream.prepare_request(&mut parts, client) {
            return (Err(err), None);
        }
        let request_time = self.cache.clock().system_now();
        let (result, elapsed) = self
            .send(&upstream, Request::from_parts(parts, Body::Empty))
            .await;
        let elapsed = Some(elapsed);
        let answered = result.map(|response| {
            let exchange = Exchange {
                request_time,
                response_time: self.cache.clock().system_now(),
                authorized,
            };
            let (mut parts, body) = response.into_parts();
            upstream::prepare_response(&mut parts);
            (parts, body, exchange)
        });
        (answered, elapsed)
    }

    /// What the client gets for a fetch: the stored entry, the upstream's answer, or, when the upstream failed,
    /// the stale copy if `stale-if-error` allows it (RFC 5861 §4).
    fn answer(
        &self,
        fetched: Fetched,
        stale: Option<&Arc<CachedResponse>>,
        conditions: &Conditions,
        record: &mut AccessRecord,
    ) -> Result<Response<Body>, ProxyError> {
        let now = self.cache.clock().now();
        let fallback = stale.filter(|entry| entry.may_serve_on_error(now));
        match fetched {
            Fetched::Stored(entry, fwd_status) => {
                let status = CacheStatus {
                    fwd_status: Some(fwd_status),
                    had_stale: stale.is_some(),
                    ..CacheStatus::new(Outcome::Stored)
                };
                Ok(self.serve_stored(&entry, conditions, status, record))
            }
            Fetched::Revalidated(entry) => {
                let status = CacheStatus {
                    fwd_status: Some(StatusCode::NOT_MODIFIED),
                    ..CacheStatus::new(Outcome::Revalidated)
                };
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
                    fwd_status: Some(parts.status),
                    detail: reason.map(NotStored::as_str),
                    had_stale: stale.is_some(),
                    ..CacheStatus::new(Outcome::Miss)
                };
                record.cache = Some(status);
                // For HEAD the GET's body is dropped unread: the client asked for headers only.
                let body = if conditions.head { Body::Empty } else { body };
                Ok(Response::from_parts(parts, body))
            }
            Fetched::Failed(err) => match fallback {
                Some(entry) => {
                    tracing::warn!(error = %err, "upstream failed; serving the stored avatar (stale-if-error)");
                    Ok(self.serve_on_error(entry, None, conditions, record))
                }
                None => {
                    record.cache = Some(CacheStatus {
                        detail: Some("upstream-error"),
                        had_stale: stale.is_some(),
                        ..CacheStatus::new(Outcome::Miss)
                    });
                    Err(err)
                }
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

    /// A stored response as this client gets it (its conditions and range answered from memory).
    fn serve_stored(
        &self,
        entry: &CachedResponse,
        conditions: &Conditions,
        mut status: CacheStatus,
        record: &mut AccessRecord,
    ) -> Response<Body> {
        let now = self.cache.clock().now();
        status.ttl = Some(entry.signed_ttl(now));
        record.cache = Some(status);
        serve::respond(entry, conditions, now)
    }
}

/// The request a fill sends: a plain `GET` for the whole representation (Cloudreve has no `HEAD` route, and
/// a stored copy must not be a 304 or a range) with the client's other headers, plus the stored validator when
/// it revalidates.
fn fill_request(request: Request<Incoming>, stale: Option<&CachedResponse>) -> request::Parts {
    let (mut parts, _unused_body) = request.into_parts();
    parts.method = Method::GET;
    policy::prepare_fill_request(&mut parts.headers);
    if let Some((name, value)) = stale.and_then(|entry| policy::revalidation_header(&entry.headers))
    {
        parts.headers.insert(name, value);
    }
    parts
}
