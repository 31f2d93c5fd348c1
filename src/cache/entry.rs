//! What the store holds: a stored response with its freshness, or the `Vary` index of a URL whose responses
//! are stored per variant.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, response};

use super::policy::{Freshness, Limits, Validators};
use super::store;
use super::vary;

/// A store value.
#[derive(Debug, Clone)]
pub enum Stored {
    /// A stored response.
    Response(Arc<CachedResponse>),
    /// Under a primary key whose responses vary: the request fields that pick the variant (RFC 9111 §4.1).
    Vary(Arc<VaryIndex>),
}

/// The fields a URL's responses vary on, and how long to remember that.
#[derive(Debug)]
pub struct VaryIndex {
    /// Nominated request fields, normalised (see [`vary::names`]).
    pub names: Vec<HeaderName>,
    /// As long as the variant it was stored with.
    retain_for: Duration,
}

/// A stored response: status, end-to-end headers and the whole body, with its freshness.
#[derive(Debug)]
pub struct CachedResponse {
    /// Upstream status.
    pub status: StatusCode,
    /// Upstream headers, hop-by-hop ones already removed, plus a minted strong `ETag` for a 200 without one;
    /// `Age` is recomputed when served.
    pub headers: Fields,
    /// The whole body; cloning it is a reference count, not a copy.
    pub body: Bytes,
    /// Hash of the body (xxh3-128), the source of the minted `ETag` and of change detection.
    pub body_hash: u128,
    /// `Last-Modified`, parsed, for the client's `If-Modified-Since` and `If-Range`.
    pub last_modified: Option<SystemTime>,
    /// The `ETag` in `headers` was minted here, not sent by the upstream (so it is never sent back).
    etag_minted: bool,
    /// The nominated request fields and their values in the request that produced it, when it varies.
    pub vary: Option<Box<(Vec<HeaderName>, String)>>,
    /// When it was stored, on the cache clock.
    stored_at: Instant,
    /// Age when stored, freshness left then, and the stale windows (RFC 9111 §4.2, RFC 5861).
    freshness: Freshness,
    /// How long the store keeps it (fresh, then stale-servable or revalidatable).
    retain_for: Duration,
}

/// Where an entry stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Fresh: serve it.
    Fresh,
    /// Stale within `stale-while-revalidate`: serve it and refresh it in the background.
    WhileRevalidate,
    /// Stale: revalidate before use (it may still answer if the upstream fails, see
    /// [`CachedResponse::may_serve_on_error`]).
    MustRevalidate,
}

impl CachedResponse {
    /// Builds an entry from an admitted response head and its whole body, read at `now`. `request` is the
    /// request the upstream answered (its nominated fields pick this variant).
    pub fn new(
        parts: &response::Parts,
        body: Bytes,
        freshness: Freshness,
        limits: &Limits,
        request: &HeaderMap,
        now: Instant,
    ) -> Self {
        let validators = Validators::of(&parts.headers);
        let mut headers = parts.headers.clone();
        // Age is recomputed on every hit; the length is now known exactly, which a HEAD answer needs even
        // when the upstream sent the body chunked.
        headers.remove(header::AGE);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let body_hash = xxhash_rust::xxh3::xxh3_128(&body);
        let etag_minted = parts.status == StatusCode::OK && validators.etag.is_none();
        if etag_minted {
            // A strong validator for the client's If-None-Match / If-Range, answered here; never sent upstream.
            let etag = format!("\"{body_hash:032x}\"");
            headers.insert(
                header::ETAG,
                HeaderValue::try_from(etag).expect("hex is ASCII"),
            );
        }
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let vary = vary::names(&parts.headers)
            .filter(|names| !names.is_empty())
            .map(|names| {
                let values = vary::values(&names, request);
                Box::new((names, values))
            });
        Self {
            status: parts.status,
            headers: Fields::detached(&headers),
            body,
            body_hash,
            last_modified,
            etag_minted,
            vary,
            stored_at: now,
            freshness,
            retain_for: freshness.retain_for(limits),
        }
    }

    /// Whether this response may answer `request` (RFC 9111 §4.1): always, unless it varies and the request's
    /// nominated fields differ.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .as_ref()
            .is_none_or(|vary| vary::values(&vary.0, request) == vary.1)
    }

    /// The `Vary` index to store under the primary key, when this response varies.
    pub fn vary_index(&self) -> Option<VaryIndex> {
        self.vary.as_ref().map(|vary| VaryIndex {
            names: vary.0.clone(),
            retain_for: self.retain_for,
        })
    }

    /// The upstream's own validators, for revalidation (never a minted `ETag`).
    pub fn validators(&self) -> Validators {
        Validators {
            etag: self
                .headers
                .get(&header::ETAG)
                .filter(|_| !self.etag_minted)
                .cloned(),
            last_modified: self.headers.get(&header::LAST_MODIFIED).cloned(),
        }
    }

    /// Fresh at `now`: younger than its freshness lifetime.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.ttl(now) > Duration::ZERO
    }

    /// Freshness left at `now`.
    pub fn ttl(&self, now: Instant) -> Duration {
        self.freshness.fresh_for.saturating_sub(self.resident(now))
    }

    /// `Cache-Status` `ttl`: whole seconds of freshness left, negative once stale (RFC 9211 §2.5).
    pub fn signed_ttl(&self, now: Instant) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        if self.is_fresh(now) {
            secs(self.ttl(now))
        } else {
            -secs(self.stale_for(now))
        }
    }

    /// How long it has been stale at `now` (zero while fresh).
    pub fn stale_for(&self, now: Instant) -> Duration {
        self.resident(now).saturating_sub(self.freshness.fresh_for)
    }

    /// Whether it may be served, and how, at `now`.
    pub fn staleness(&self, now: Instant) -> Staleness {
        let swr = self.freshness.stale_while_revalidate;
        if self.is_fresh(now) {
            Staleness::Fresh
        } else if !swr.is_zero() && self.stale_for(now) <= swr {
            Staleness::WhileRevalidate
        } else {
            Staleness::MustRevalidate
        }
    }

    /// Whether it may answer for an upstream that failed, at `now` (RFC 5861 §4 `stale-if-error`).
    pub fn may_serve_on_error(&self, now: Instant) -> bool {
        self.is_fresh(now) || self.stale_for(now) <= self.freshness.stale_if_error
    }

    /// Current age at `now` (RFC 9111 §4.2.3: age on arrival plus time resident here), in whole seconds.
    pub fn age(&self, now: Instant) -> u64 {
        (self.freshness.initial_age + self.resident(now)).as_secs()
    }

    fn resident(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }
}

/// The header fields of a stored response, compact: exactly one slot per field (a `HeaderMap` reserves a
/// power-of-two table, about 1 KiB more per entry), the values sharing one allocation of their own (hyper
/// parses values as slices of the connection's read buffer, 8 KiB and more, which must not stay alive with
/// the entry). Served, they become a `HeaderMap` sized for the fields the cache adds.
#[derive(Debug, Clone)]
pub struct Fields(Box<[(HeaderName, HeaderValue)]>);

impl Fields {
    /// Copies `headers`, its values into one buffer.
    pub fn detached(headers: &HeaderMap) -> Self {
        let total: usize = headers.values().map(HeaderValue::len).sum();
        let mut arena = BytesMut::with_capacity(total);
        for value in headers.values() {
            arena.extend_from_slice(value.as_bytes());
        }
        let arena = arena.freeze();
        let mut offset = 0;
        let fields = headers
            .iter()
            .map(|(name, value)| {
                let bytes = arena.slice(offset..offset + value.len());
                offset += value.len();
                let mut copy = HeaderValue::from_maybe_shared(bytes)
                    .expect("a header value stays valid when copied");
                copy.set_sensitive(value.is_sensitive());
                (name.clone(), copy)
            })
            .collect();
        Self(fields)
    }

    /// The first value of a field.
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// Whether a field is present.
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// Every field line, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().map(|(name, value)| (name, value))
    }

    /// The fields as a `HeaderMap` with room for `more` fields besides.
    pub fn to_map(&self, more: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.0.len() + more);
        for (name, value) in self.iter() {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

/// Rough per-entry bookkeeping cost beyond body and headers (the Arc, the moka node, the key).
const ENTRY_OVERHEAD: u64 = 256;

impl store::Stored for Stored {
    fn weight(&self) -> u64 {
        match self {
            Self::Response(entry) => {
                let headers: usize = entry
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len() + 32)
                    .sum();
                entry.body.len() as u64 + headers as u64 + ENTRY_OVERHEAD
            }
            Self::Vary(index) => ENTRY_OVERHEAD + 32 * index.names.len() as u64,
        }
    }

    fn time_to_live(&self) -> Duration {
        match self {
            Self::Response(entry) => entry.retain_for,
            Self::Vary(index) => index.retain_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_object_size: 1 << 20,
        negative_ttl: Duration::from_secs(60),
        stale_while_revalidate: Duration::from_secs(10),
        stale_if_error: Duration::from_secs(100),
        heuristic_fraction: 0.1,
        heuristic_max: Duration::from_secs(3600),
    };

    fn freshness() -> Freshness {
        Freshness {
            fresh_for: Duration::from_secs(60),
            initial_age: Duration::from_secs(5),
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(100),
        }
    }

    fn entry(
        parts: &response::Parts,
        body: &'static [u8],
        request: &HeaderMap,
        now: Instant,
    ) -> CachedResponse {
        CachedResponse::new(
            parts,
            Bytes::from_static(body),
            freshness(),
            &LIMITS,
            request,
            now,
        )
    }

    fn parts(headers: &[(&str, &str)]) -> response::Parts {
        let mut builder = http::Response::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn stored_headers_do_not_keep_the_read_buffer_alive() {
        let buffer = Bytes::from(b"image/png".repeat(1000));
        let shared = HeaderValue::from_maybe_shared(buffer.slice(0..9)).unwrap();
        let mut head = parts(&[]);
        head.headers.insert(header::CONTENT_TYPE, shared);
        let entry = entry(&head, b"png", &HeaderMap::new(), Instant::now());
        let stored = entry.headers.get(&header::CONTENT_TYPE).unwrap().as_bytes();
        assert_eq!(stored, b"image/png");
        assert!(
            !buffer.as_ptr_range().contains(&stored.as_ptr()),
            "the value must be a copy, not a slice of the buffer"
        );
    }

    #[test]
    fn entry_knows_its_length_and_forgets_upstream_age() {
        let entry = entry(
            &parts(&[("age", "5")]),
            b"12345",
            &HeaderMap::new(),
            Instant::now(),
        );
        assert_eq!(entry.headers.get(&header::CONTENT_LENGTH).unwrap(), "5");
        assert!(!entry.headers.contains_key(&header::AGE));
    }

    #[test]
    fn minted_etag_is_not_an_upstream_validator() {
        let minted = entry(&parts(&[]), b"x", &HeaderMap::new(), Instant::now());
        assert!(minted.headers.contains_key(&header::ETAG));
        assert_eq!(minted.validators().etag, None);
        let upstream = entry(
            &parts(&[("etag", "\"v1\"")]),
            b"x",
            &HeaderMap::new(),
            Instant::now(),
        );
        assert_eq!(upstream.headers.get(&header::ETAG).unwrap(), "\"v1\"");
        assert_eq!(upstream.validators().etag.unwrap(), "\"v1\"");
    }

    #[test]
    fn varying_entry_matches_only_its_variant() {
        let mut gzip = HeaderMap::new();
        gzip.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let entry = entry(
            &parts(&[("vary", "Accept-Encoding")]),
            b"x",
            &gzip,
            Instant::now(),
        );
        assert!(entry.matches(&gzip));
        assert!(!entry.matches(&HeaderMap::new()));
        assert_eq!(entry.vary_index().unwrap().names, [header::ACCEPT_ENCODING]);
    }

    #[test]
    fn age_ttl_and_staleness_follow_the_clock() {
        let start = Instant::now();
        let entry = entry(&parts(&[]), b"", &HeaderMap::new(), start);
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(entry.age(at(10)), 15);
        assert_eq!(entry.ttl(at(10)).as_secs(), 50);
        assert_eq!(entry.staleness(at(59)), Staleness::Fresh);
        assert_eq!(entry.staleness(at(65)), Staleness::WhileRevalidate);
        assert_eq!(entry.staleness(at(71)), Staleness::MustRevalidate);
        assert_eq!(entry.signed_ttl(at(65)), -5);
        assert!(entry.may_serve_on_error(at(160)));
        assert!(!entry.may_serve_on_error(at(161)));
    }
}
