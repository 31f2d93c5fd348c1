//! Phase 4, fill, for requests a cache rule matched: one upstream request per key (a fetch, or a revalidation
//! of the stored copy with its validators) while the others wait for it, and the background refresh of an
//! entry served stale while it revalidates (RFC 5861 §3). What it brings back is admitted by `admit.rs`.
//!
//! The two kinds differ in three places: the avatar rule revalidates with `If-Modified-Since` only and reads
//! its small bodies whole before answering (so a `HEAD` miss can be filled with a `GET`); an `http` rule
//! streams a fill to its client while keeping a copy (RFC 9111 allows no less), and forwards a `HEAD` it
//! cannot answer, updating the stored `GET` from the answer (§4.3.5).

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap};
use http::{Request, StatusCode, request, response};
use hyper::body::Incoming;

use super::Proxy;
use super::lookup::Cached;
use crate::access_log::AccessRecord;
use crate::body::Body;
use crate::cache::policy::{self, Exchange, NotStored};
use crate::cache::request::{self as cache_request, Purpose};
use crate::cache::vary;
use crate::cache::{CachedResponse, Fill, Miss, Stored};
use crate::error::ProxyError;
use crate::upstream::{self, ClientInfo};

/// What one upstream fetch for a key came to.
pub(super) enum Fetched {
    /// A new or replacing entry was stored.
    Stored(Arc<CachedResponse>, StatusCode),
    /// The upstream's answer streams to the client while a copy fills the cache (`http` rules).
    Streaming {
        parts: response::Parts,
        body: Body,
        ttl: i64,
    },
    /// The upstream confirmed the stored entry (304) and it was refreshed.
    Revalidated(Arc<CachedResponse>),
    /// Another request's fill stored a response this one can use: it waited for it.
    Collapsed(Arc<CachedResponse>),
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

/// What a fill needs to know besides the upstream's answer.
pub(super) struct FillContext<'a> {
    /// Index of the rule in `Proxy::rules`.
    pub(super) rule: usize,
    /// The primary key.
    pub(super) primary: &'a str,
    /// The request headers sent upstream (their `Vary`-nominated values pick the variant).
    pub(super) request: HeaderMap,
}

impl Proxy {
    /// Phases 4 and 5 for a miss: the request that holds the key's fill fetches (revalidating the stale copy
    /// if there is one) and stores what the policy allows; the others wait for it and take what it stored, or
    /// go upstream alone when it stored nothing they can use. The stale copy comes back too: it may answer
    /// for a failing upstream (phase 6).
    pub(super) async fn fill(
        self: &Arc<Self>,
        miss: Miss,
        cached: &Cached<'_>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> (Fetched, Option<Arc<CachedResponse>>) {
        match miss {
            Miss::Fill { fill, stale } => {
                let fetched = self.fill_claimed(cached, fill, stale.as_ref(), client, record);
                (fetched.await, stale)
            }
            Miss::Wait { waiter, stale } => {
                let fetched = match waiter.wait().await {
                    Some(Stored::Response(entry)) if entry.matches(&cached.head.headers) => {
                        Fetched::Collapsed(entry)
                    }
                    // The fill stored nothing this request can use: it goes upstream itself, at once.
                    _ => {
                        let parts = self.fill_request(cached, None);
                        self.fetch_alone(parts, cached.rule, client, record).await
                    }
                };
                (fetched, stale)
            }
        }
    }

    /// The request that holds the fill: fetches and admits; an answer that varies on a field this client sent
    /// and the fill did not carry is stored for the fill's request, and this client gets one of its own.
    async fn fill_claimed(
        self: &Arc<Self>,
        cached: &Cached<'_>,
        fill: Fill,
        stale: Option<&Arc<CachedResponse>>,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Fetched {
        let parts = self.fill_request(cached, stale.map(|stale| &**stale));
        let context = FillContext {
            rule: cached.rule,
            primary: cached.primary,
            request: parts.headers.clone(),
        };
        let (fetched, elapsed) = self
            .fetch_and_admit(parts, client, &context, fill, stale)
            .await;
        record.upstream_time = elapsed;
        match varies_on_more(&fetched, &cached.head, &context.request) {
            Some(keyed) => {
                self.finish_in_background(fetched);
                let also = &self.rules[cached.rule].fill_fields;
                let parts = cache_request::build(&cached.head, Purpose::Fetch, &keyed, also);
                self.fetch_alone(parts, cached.rule, client, record).await
            }
            None => fetched,
        }
    }

    /// One request refreshes a stale entry while others keep being served the stale copy (RFC 5861 §3).
    pub(super) fn refresh_in_background(
        self: &Arc<Self>,
        cached: &Cached<'_>,
        fill: Fill,
        stale: Arc<CachedResponse>,
        client: ClientInfo,
    ) {
        // Built now, from what the key covers: nothing else of the client that triggered it goes along.
        let parts = self.fill_request(cached, Some(&stale));
        let (rule, primary) = (cached.rule, cached.primary.to_owned());
        let headers = parts.headers.clone();
        let proxy = Arc::clone(self);
        tokio::spawn(async move {
            let context = FillContext {
                rule,
                primary: &primary,
                request: headers,
            };
            let (fetched, _) = proxy
                .fetch_and_admit(parts, &client, &context, fill, Some(&stale))
                .await;
            if let Fetched::Failed(err) = &fetched {
                tracing::warn!(error = %err, key = primary, "background refresh failed; the stored copy stays");
            }
            proxy.finish_in_background(fetched);
        });
    }

    /// A fill whose answer no client reads: a streaming body is read through in a task of its own, so the copy
    /// it feeds is stored (given up like a body a client reads, after `server.response_idle_timeout` with
    /// nothing, which releases the key's fill).
    fn finish_in_background(&self, fetched: Fetched) {
        if let Fetched::Streaming { body, .. } = fetched {
            let pause = self.live().load().config.server.response_idle_timeout;
            tokio::spawn(drain(body, pause));
        }
    }

    /// Phases 4 and 5 for the one request that holds the fill: fetch (revalidating `stale` if there is one),
    /// then store, refresh or pass on. On failure the guard is dropped, which sends waiters on their own way.
    async fn fetch_and_admit(
        self: &Arc<Self>,
        parts: request::Parts,
        client: &ClientInfo,
        context: &FillContext<'_>,
        fill: Fill,
        stale: Option<&Arc<CachedResponse>>,
    ) -> (Fetched, Option<Duration>) {
        let (answered, elapsed) = self.fetch(parts, client).await;
        let fetched = match answered {
            Err(err) => Fetched::Failed(err),
            Ok((parts, body, exchange)) => match stale {
                Some(stale) if parts.status == StatusCode::NOT_MODIFIED => {
                    self.refresh(stale, &parts, exchange, context, fill)
                }
                _ => self.admit(parts, body, exchange, context, fill).await,
            },
        };
        (fetched, elapsed)
    }

    /// The request a fill sends for `cached` (`cache::request`): the whole representation, with the validators
    /// of `stale` when it revalidates a stored copy. A plain `GET` either way: a stored copy must not be a
    /// 304 or a range, and Cloudreve has no `HEAD` route for avatars.
    fn fill_request(&self, cached: &Cached<'_>, stale: Option<&CachedResponse>) -> request::Parts {
        let rule = &self.rules[cached.rule];
        let validators = stale.map(CachedResponse::validators);
        let purpose = match &validators {
            Some(validators) => Purpose::Revalidate(rule.kind, validators),
            None => Purpose::Fetch,
        };
        let keyed = self.cache.keyed_fields(cached.primary);
        cache_request::build(&cached.head, purpose, &keyed, &rule.fill_fields)
    }

    /// A response fetched for this client alone, because the fill it waited for stored nothing it can use.
    async fn fetch_alone(
        &self,
        parts: request::Parts,
        rule: usize,
        client: &ClientInfo,
        record: &mut AccessRecord,
    ) -> Fetched {
        let (answered, elapsed) = self.fetch(parts, client).await;
        record.upstream_time = elapsed;
        match answered {
            Err(err) => Fetched::Failed(err),
            Ok((parts, body, exchange)) => {
                let rule = &self.rules[rule];
                // Say why the waited-for fill stored nothing, when this answer shows it.
                let reason = policy::admit(rule.kind, &parts, exchange, &rule.limits).err();
                let body = Body::Stream(body);
                Fetched::Passed {
                    parts,
                    body,
                    reason,
                }
            }
        }
    }

    /// Phase 4 for cached routes: one upstream request, with the times RFC 9111 §4.2.3 needs.
    pub(super) async fn fetch(
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
}

/// Reads a body to its end, discarding it (bounded by the body itself; a failure just ends it).
async fn drain(mut body: Body, pause: Duration) {
    use http_body_util::BodyExt;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(pause, body.frame()).await {}
}

/// The fields a fill's answer varies on, when it varies on one this client sent and the fill did not carry
/// (nothing stored said the URL varies on it, so the fill went without it, `cache::request`). That answer
/// is right for the request the fill made, and stored for it, but not for this client (a CORS answer made
/// without its `Origin`, say): the client gets an answer of its own, fetched with those fields.
fn varies_on_more(
    fetched: &Fetched,
    client: &request::Parts,
    sent: &HeaderMap,
) -> Option<Vec<header::HeaderName>> {
    let Fetched::Streaming { parts, .. } = fetched else {
        return None;
    };
    let names = vary::names(&parts.headers)?;
    let missing =
        |name: &header::HeaderName| client.headers.contains_key(name) && !sent.contains_key(name);
    names.iter().any(missing).then_some(names)
}
