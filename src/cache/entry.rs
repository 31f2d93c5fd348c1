//! What the store holds: a stored response with its freshness, or the `Vary` index of a URL whose responses
//! are stored per variant.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
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
    pub(super) retain_for: Duration,
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
    pub(super) etag_minted: bool,
    /// The nominated request fields and their values in the request that produced it, when it varies.
    pub vary: Option<Box<(Vec<HeaderName>, String)>>,
    /// When it was stored, on the cache clock.
    pub(super) stored_at: Instant,
    /// Age when stored, freshness left then, and the stale windows (RFC 9111 §4.2, RFC 5861).
    pub(super) freshness: Freshness,
    /// How long the store keeps it from `stored_at` (fresh, then stale-servable or revalidatable).
    pub(super) retain_for: Duration,
    /// For an entry restored from a snapshot, how long it had been stored when it was restored (`stored_at`
    /// is that long before the restore); zero for the others. The store keeps it `retain_for` less this.
    pub(super) restored_after: Duration,
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
            restored_after: Duration::ZERO,
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
            // From now, as the store counts it for the variant (see `restored_after`).
            retain_for: self.retain_for.saturating_sub(self.restored_after),
        })
    }

    /// The upstream's own validators, for revalidation (never a minted `ETag`).
    pub fn validators(&self) -> Validators {
        Validators {
            etag: self
                .headers
                .get(&header::ETAG)
                .filter(|_| !self.etag_minted),
            last_modified: self.headers.get(&header::LAST_MODIFIED),
        }
    }

    /// Fresh at `now`: younger than its freshness lifetime.
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.ttl(now) > Duration::ZERO
    }

    /// Fresh at `now` and, under a freshness cap (`cap`: the cluster is detached, see
    /// [`super::Cache::cap_freshness`]), stored or validated less than `cap` ago.
    pub fn is_fresh_within(&self, now: Instant, cap: Option<Duration>) -> bool {
        !self.past_cap(now, cap) && self.is_fresh(now)
    }

    /// [`CachedResponse::staleness`] under a freshness cap: past the cap, an entry must be revalidated (no
    /// `stale-while-revalidate` either: what it may have missed is exactly what a revalidation finds out).
    pub fn staleness_within(&self, now: Instant, cap: Option<Duration>) -> Staleness {
        if self.past_cap(now, cap) {
            return Staleness::MustRevalidate;
        }
        self.staleness(now)
    }

    /// Whether the entry has been held, since stored or validated, for `cap` or longer.
    fn past_cap(&self, now: Instant, cap: Option<Duration>) -> bool {
        cap.is_some_and(|cap| self.resident(now) >= cap)
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

    /// Whether it may answer for an upstream that failed, at `now` (RFC 5861 §4 `stale-if-error`): fresh, or
    /// stale within a window it has. With none, never: an entry stale for no time yet (stored with no
    /// lifetime) is stale all the same.
    pub fn may_serve_on_error(&self, now: Instant) -> bool {
        let sie = self.freshness.stale_if_error;
        self.is_fresh(now) || (!sie.is_zero() && self.stale_for(now) <= sie)
    }

    /// Current age at `now` (RFC 9111 §4.2.3: age on arrival plus time resident here), in whole seconds.
    pub fn age(&self, now: Instant) -> u64 {
        (self.freshness.initial_age + self.resident(now)).as_secs()
    }

    fn resident(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }
}

/// The header fields of a stored response, compact and ready to write: one buffer holding a table of the
/// fields (per field its name as one byte for a name in [`NAMES`], and where its line and value lie), then
/// the field lines as HTTP/1.1 writes them (`name: value` and CRLF). About 230 bytes for an avatar's five
/// fields, where a slice of `(HeaderName, HeaderValue)` pairs took 72 bytes a pair besides the values. The
/// express lane writes the lines in one copy; served through hyper, the fields become a `HeaderMap` sized for
/// the fields the cache adds, each value a slice of the buffer. Never a slice of the connection's read
/// buffer (8 KiB and more, which must not stay alive with the entry).
#[derive(Clone)]
pub struct Fields(Bytes);

/// Header names stored as one byte: those a response to keep is likely to carry.
static NAMES: [HeaderName; 33] = [
    header::ACCEPT_RANGES,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LENGTH,
    header::CONTENT_LOCATION,
    header::CONTENT_RANGE,
    header::CONTENT_SECURITY_POLICY,
    header::CONTENT_TYPE,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::LINK,
    header::LOCATION,
    header::PRAGMA,
    header::REFERRER_POLICY,
    header::RETRY_AFTER,
    header::SERVER,
    header::STRICT_TRANSPORT_SECURITY,
    header::VARY,
    header::VIA,
    header::WARNING,
    header::X_CONTENT_TYPE_OPTIONS,
    header::X_FRAME_OPTIONS,
    header::X_XSS_PROTECTION,
];

/// The name byte of a field whose name is not in [`NAMES`] (it is read from its line).
const OTHER_NAME: u8 = u8::MAX;

/// The size of the field count at the start of the buffer.
const COUNT: usize = 2;

/// The size of one field's record in the table: the name byte, then the offsets of its line, its value and
/// the value's end, `u32` each.
const RECORD: usize = 13;

/// One field's record, read from the table: its name and where its line and value lie in the buffer.
struct Record<'a> {
    name: StoredName<'a>,
    line: usize,
    value_start: usize,
    value_end: usize,
}

/// A stored field's name: one of [`NAMES`], or the bytes of another.
#[derive(Debug, Clone, Copy)]
enum StoredName<'a> {
    Known(&'static HeaderName),
    Other(&'a str),
}

impl<'a> StoredName<'a> {
    fn as_str(self) -> &'a str {
        match self {
            Self::Known(name) => name.as_str(),
            Self::Other(name) => name,
        }
    }

    fn is(&self, name: &HeaderName) -> bool {
        match self {
            Self::Known(known) => *known == name,
            Self::Other(other) => *other == name.as_str(),
        }
    }
}

impl Fields {
    /// Copies `headers`, in order.
    pub fn detached(headers: &HeaderMap) -> Self {
        let lines: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
            .sum();
        let table = COUNT + RECORD * headers.len();
        let count = u16::try_from(headers.len()).expect("a response head has fewer fields");
        let mut buf = BytesMut::with_capacity(table + lines);
        buf.put_u16_le(count);
        let mut line = table;
        for (name, value) in headers {
            let name_byte = NAMES.iter().position(|known| known == name);
            buf.put_u8(name_byte.map_or(OTHER_NAME, |index| index as u8));
            let value_start = line + name.as_str().len() + 2;
            let value_end = value_start + value.len();
            for offset in [line, value_start, value_end] {
                buf.put_u32_le(u32::try_from(offset).expect("a response head is under 4 GiB"));
            }
            line = value_end + 2;
        }
        for (name, value) in headers {
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        debug_assert_eq!(buf.len(), line);
        Self(buf.freeze())
    }

    /// The bytes the fields take (table and lines).
    pub fn stored_len(&self) -> usize {
        self.0.len()
    }

    /// The field lines, `name: value` and CRLF each, as HTTP/1.1 writes them.
    pub fn lines(&self) -> &[u8] {
        &self.0[self.table_len()..]
    }

    fn table_len(&self) -> usize {
        let count = self
            .0
            .first_chunk::<COUNT>()
            .expect("the buffer starts with the count");
        COUNT + RECORD * usize::from(u16::from_le_bytes(*count))
    }

    /// The field lines with the first `name` line left out: the lines before it and the lines after it
    /// (all of them and nothing when there is none).
    pub fn lines_without(&self, name: &HeaderName) -> (&[u8], &[u8]) {
        let Some(record) = self.records().find(|record| record.name.is(name)) else {
            return (self.lines(), &[]);
        };
        let line_end = record.value_end + 2;
        (&self.0[self.table_len()..record.line], &self.0[line_end..])
    }

    /// Every field, in order: its name and its value's bytes.
    fn fields(&self) -> impl ExactSizeIterator<Item = (StoredName<'_>, &[u8])> {
        self.records()
            .map(|record| (record.name, &self.0[record.value_start..record.value_end]))
    }

    /// The table, record by record.
    fn records(&self) -> impl ExactSizeIterator<Item = Record<'_>> {
        let buf = &self.0[..];
        buf[COUNT..self.table_len()]
            .chunks_exact(RECORD)
            .map(move |record| {
                let offset = |at: usize| {
                    let bytes = record[at..at + 4].try_into().expect("four bytes");
                    u32::from_le_bytes(bytes) as usize
                };
                let (line, value_start, value_end) = (offset(1), offset(5), offset(9));
                let name = match NAMES.get(usize::from(record[0])) {
                    Some(known) => StoredName::Known(known),
                    None => StoredName::Other(
                        std::str::from_utf8(&buf[line..value_start - 2])
                            .expect("stored from a HeaderName"),
                    ),
                };
                Record {
                    name,
                    line,
                    value_start,
                    value_end,
                }
            })
    }

    /// A value of these fields, as a `HeaderValue` sharing the buffer.
    fn value(&self, value: &[u8]) -> HeaderValue {
        HeaderValue::from_maybe_shared(self.0.slice_ref(value)).expect("stored from a HeaderValue")
    }

    /// The first value of a field.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.fields()
            .find(|(stored, _)| stored.is(name))
            .map(|(_, value)| self.value(value))
    }

    /// Whether a field is present.
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        self.fields().any(|(stored, _)| stored.is(name))
    }

    /// Every field line, in order, as name and value bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields().map(|(name, value)| (name.as_str(), value))
    }

    /// The fields as a `HeaderMap` with room for `more` fields besides.
    pub fn to_map(&self, more: usize) -> HeaderMap {
        let fields = self.fields();
        let mut map = HeaderMap::with_capacity(fields.len() + more);
        for (name, value) in fields {
            let name = match name {
                StoredName::Known(name) => name.clone(),
                StoredName::Other(name) => {
                    HeaderName::from_bytes(name.as_bytes()).expect("stored from a HeaderName")
                }
            };
            map.append(name, self.value(value));
        }
        map
    }
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(value))),
            )
            .finish()
    }
}

/// What an entry costs beyond its body, its header fields and its key: the `CachedResponse`, the shared
/// handles on its buffers, moka's nodes, hash table slot and timer, and the allocator's own headers. Measured
/// with `scripts/bench-memory.sh` (the figures: BENCHMARKS.md, "Figures behind choices in the code"), so
/// `cache.capacity` is close to the memory the entries really take.
const ENTRY_OVERHEAD: u64 = 800;

impl store::Stored for Stored {
    fn weight(&self) -> u64 {
        match self {
            Self::Response(entry) => {
                (entry.body.len() + entry.headers.stored_len()) as u64 + ENTRY_OVERHEAD
            }
            Self::Vary(index) => ENTRY_OVERHEAD + 32 * index.names.len() as u64,
        }
    }

    fn time_to_live(&self) -> Duration {
        match self {
            Self::Response(entry) => entry.retain_for.saturating_sub(entry.restored_after),
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
        keep: Duration::from_secs(100),
        heuristic_fraction: 0.1,
        heuristic_max: Duration::from_secs(3600),
    };

    fn freshness() -> Freshness {
        Freshness {
            fresh_for: Duration::from_secs(60),
            initial_age: Duration::from_secs(5),
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(100),
            revalidatable: true,
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
        let stored = entry.headers.get(&header::CONTENT_TYPE).unwrap();
        let stored = stored.as_bytes();
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

    #[test]
    fn fields_keep_every_line_in_order_known_names_or_not() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        headers.append("x-cloudreve-trace", HeaderValue::from_static("a1"));
        headers.append(header::LINK, HeaderValue::from_static("</a>; rel=preload"));
        headers.append(header::LINK, HeaderValue::from_static("</b>; rel=preload"));
        headers.append("x-empty", HeaderValue::from_static(""));
        headers.append(
            "x-opaque",
            HeaderValue::from_bytes(b"caf\xe9 \tend").unwrap(), // obs-text and a tab are valid
        );
        let fields = Fields::detached(&headers);
        let lines: Vec<(String, Vec<u8>)> = fields
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_vec()))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        assert_eq!(lines, expected);
        let mut written = Vec::new();
        for (name, value) in &headers {
            written.extend_from_slice(name.as_str().as_bytes());
            written.extend_from_slice(b": ");
            written.extend_from_slice(value.as_bytes());
            written.extend_from_slice(b"\r\n");
        }
        assert_eq!(fields.lines(), &written[..]);
        assert_eq!(fields.to_map(0), headers);
        assert_eq!(fields.get(&header::LINK).unwrap(), "</a>; rel=preload");
        assert_eq!(
            fields
                .get(&HeaderName::from_static("x-cloudreve-trace"))
                .unwrap(),
            "a1"
        );
        assert!(fields.contains_key(&HeaderName::from_static("x-empty")));
        assert!(!fields.contains_key(&header::ETAG));
        assert!(!fields.contains_key(&HeaderName::from_static("x-cloudreve")));
        let none = Fields::detached(&HeaderMap::new());
        assert!(none.iter().next().is_none());
        assert!(none.lines().is_empty());
    }

    #[test]
    fn lines_without_a_field_are_the_lines_around_it() {
        let mut headers = HeaderMap::new();
        headers.append(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        headers.append("x-after", HeaderValue::from_static("1"));
        let fields = Fields::detached(&headers);
        assert_eq!(
            fields.lines_without(&header::CONTENT_LENGTH),
            (&b"cache-control: public\r\n"[..], &b"x-after: 1\r\n"[..])
        );
        assert_eq!(
            fields.lines_without(&header::ETAG),
            (fields.lines(), &b""[..]),
            "absent: every line, before"
        );
    }

    #[test]
    fn every_known_name_fits_in_its_byte() {
        assert!(NAMES.len() < usize::from(OTHER_NAME));
        for (index, name) in NAMES.iter().enumerate() {
            assert_eq!(
                NAMES.iter().position(|other| other == name),
                Some(index),
                "{name} is listed once"
            );
        }
    }
}
