//! A stored response as one client receives it: the client's own preconditions (RFC 9110 §13) and byte range
//! (RFC 9110 §14) answered from memory. Pure. The fields a hit adds (`Age`, `Cache-Status`, ...) and their
//! order are `proxy::hit`'s, for both lanes.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use super::CachedResponse;
use crate::body::Body;

/// Header fields a 304 carries from the stored 200 (RFC 9110 §15.4.5): the validators and the caching
/// metadata, not the content's own description.
const NOT_MODIFIED_DROPS: [header::HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
];

/// The parts of a client request that decide how a stored response is served. Taken before the request is
/// consumed, cheaply: none of these headers are usually present.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// The request is `HEAD`: headers only.
    pub head: bool,
    if_match: Option<HeaderValue>,
    if_none_match: Option<HeaderValue>,
    if_modified_since: Option<HeaderValue>,
    if_unmodified_since: Option<HeaderValue>,
    range: Option<HeaderValue>,
    if_range: Option<HeaderValue>,
}

impl Conditions {
    /// Reads the conditions of a request.
    pub fn of(method: &Method, headers: &HeaderMap) -> Self {
        let mut conditions = Self {
            head: method == Method::HEAD,
            ..Self::default()
        };
        // One pass over the request's fields: on most requests none of these is present, and comparing
        // standard names is cheaper than six lookups.
        for (name, value) in headers {
            let slot = match *name {
                header::IF_MATCH => &mut conditions.if_match,
                header::IF_NONE_MATCH => &mut conditions.if_none_match,
                header::IF_MODIFIED_SINCE => &mut conditions.if_modified_since,
                header::IF_UNMODIFIED_SINCE => &mut conditions.if_unmodified_since,
                // Range is defined for GET only (RFC 9110 §14.2).
                header::RANGE if method == Method::GET => &mut conditions.range,
                header::IF_RANGE => &mut conditions.if_range,
                _ => continue,
            };
            // The first field line counts, as `HeaderMap::get` would have it.
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        conditions
    }
}

/// What the stored response becomes for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Full,
    NotModified,
    PreconditionFailed,
    Partial(u64, u64),
    Unsatisfiable,
}

/// Builds the response for `entry`: the stored status, headers and body, or a 304, 412, 206 or 416 when the
/// client's conditions call for one. What a hit adds to it (`Age`, `Cache-Status`, ...) is `proxy::hit`'s.
pub fn respond(entry: &CachedResponse, conditions: &Conditions) -> Response<Body> {
    match evaluate(entry, conditions) {
        Answer::Full => full(entry, conditions.head),
        Answer::NotModified => not_modified(entry),
        Answer::PreconditionFailed => bare(StatusCode::PRECONDITION_FAILED, entry),
        Answer::Partial(first, last) => partial(entry, first, last, conditions.head),
        Answer::Unsatisfiable => unsatisfiable(entry),
    }
}

/// RFC 9110 §13.2.2, in its order. Preconditions only apply to a 2xx representation (§13.2.1): a stored
/// redirect or 404 is served as it is.
fn evaluate(entry: &CachedResponse, c: &Conditions) -> Answer {
    if entry.status != StatusCode::OK {
        return Answer::Full;
    }
    // Looked up only for the fields that compare it: a stored value becomes a `HeaderValue` when read.
    let etag = (c.if_match.is_some() || c.if_none_match.is_some())
        .then(|| entry.headers.get(&header::ETAG))
        .flatten();
    let etag = etag.as_ref();
    if let Some(if_match) = &c.if_match {
        if !etag_list_matches(if_match, etag, Comparison::Strong) {
            return Answer::PreconditionFailed;
        }
    } else if let Some(since) = c.if_unmodified_since.as_ref().and_then(date) {
        if entry.last_modified.is_some_and(|modified| modified > since) {
            return Answer::PreconditionFailed;
        }
    }
    if let Some(if_none_match) = &c.if_none_match {
        if etag_list_matches(if_none_match, etag, Comparison::Weak) {
            return Answer::NotModified;
        }
    } else if let Some(since) = c.if_modified_since.as_ref().and_then(date) {
        if entry
            .last_modified
            .is_some_and(|modified| modified <= since)
        {
            return Answer::NotModified;
        }
    }
    match &c.range {
        Some(range) if if_range_holds(entry, c.if_range.as_ref()) => {
            byte_range(range, entry.body.len() as u64)
        }
        _ => Answer::Full,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// `If-Match` / `If-None-Match`: `*`, or a list of entity-tags (RFC 9110 §8.8.3.2 comparison).
fn etag_list_matches(
    list: &HeaderValue,
    current: Option<&HeaderValue>,
    comparison: Comparison,
) -> bool {
    let Ok(list) = list.to_str() else {
        return false;
    };
    if list.trim() == "*" {
        return true;
    }
    let Some(current) = current.and_then(|c| c.to_str().ok()) else {
        return false;
    };
    list.split(',')
        .map(str::trim)
        .any(|candidate| etags_match(candidate, current, comparison))
}

fn etags_match(a: &str, b: &str, comparison: Comparison) -> bool {
    let (a_weak, a_tag) = split_weak(a);
    let (b_weak, b_tag) = split_weak(b);
    let strong_ok = comparison == Comparison::Weak || !(a_weak || b_weak);
    strong_ok && a_tag == b_tag && a_tag.starts_with('"') && a_tag.len() >= 2
}

fn split_weak(tag: &str) -> (bool, &str) {
    match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

/// `If-Range` (RFC 9110 §13.1.5): the range applies only if the validator still names this representation:
/// a strong entity-tag equal to ours, or a date equal to our `Last-Modified`.
fn if_range_holds(entry: &CachedResponse, if_range: Option<&HeaderValue>) -> bool {
    let Some(value) = if_range else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    if text.trim_start().starts_with(['"', 'W']) {
        let current = entry.headers.get(&header::ETAG);
        return current
            .as_ref()
            .and_then(|current| current.to_str().ok())
            .is_some_and(|current| etags_match(text.trim(), current, Comparison::Strong));
    }
    date(value).is_some_and(|since| entry.last_modified == Some(since))
}

/// A single byte range becomes a 206; an unsatisfiable one a 416. Several ranges, or a malformed header, are
/// ignored and the whole representation is sent, which RFC 9110 §14.2 allows.
fn byte_range(range: &HeaderValue, len: u64) -> Answer {
    use http_range_header::RangeUnsatisfiableError;
    let Ok(text) = range.to_str() else {
        return Answer::Full;
    };
    let validated =
        http_range_header::parse_range_header(text).and_then(|ranges| ranges.validate(len));
    match validated {
        Ok(ranges) if ranges.len() == 1 => Answer::Partial(*ranges[0].start(), *ranges[0].end()),
        Err(RangeUnsatisfiableError::Unsatisfiable) => Answer::Unsatisfiable,
        _ => Answer::Full,
    }
}

fn date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

fn full(entry: &CachedResponse, head: bool) -> Response<Body> {
    let body = if head {
        Body::Empty
    } else {
        Body::full(entry.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = entry.status;
    // Room for what is added on the way out: Age, Cache-Status, X-Cache.
    *response.headers_mut() = entry.headers.to_map(3);
    response
}

fn not_modified(entry: &CachedResponse) -> Response<Body> {
    let mut response = bare(StatusCode::NOT_MODIFIED, entry);
    *response.headers_mut() = entry.headers.to_map(3);
    for name in &NOT_MODIFIED_DROPS {
        response.headers_mut().remove(name);
    }
    response
}

fn partial(entry: &CachedResponse, first: u64, last: u64, head: bool) -> Response<Body> {
    let len = entry.body.len() as u64;
    let slice = entry.body.slice(first as usize..=last as usize);
    let mut response = full(entry, head);
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    if !head {
        *response.body_mut() = Body::full(slice.clone());
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(slice.len()));
    let content_range = format!("bytes {first}-{last}/{len}");
    headers.insert(
        header::CONTENT_RANGE,
        HeaderValue::try_from(content_range).expect("ASCII"),
    );
    response
}

fn unsatisfiable(entry: &CachedResponse) -> Response<Body> {
    let mut response = bare(StatusCode::RANGE_NOT_SATISFIABLE, entry);
    let content_range = format!("bytes */{}", entry.body.len());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_RANGE,
        HeaderValue::try_from(content_range).expect("ASCII"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// A status with no body, keeping the stored validators so the client can tell what it was about.
fn bare(status: StatusCode, entry: &CachedResponse) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    for name in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::CACHE_CONTROL,
        header::DATE,
        header::VIA,
    ] {
        if let Some(value) = entry.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::{Freshness, Limits};
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const LAST_MODIFIED: &str = "Sun, 29 Nov 2026 12:00:00 GMT";

    fn entry(status: u16) -> (Arc<CachedResponse>, Instant) {
        let now = Instant::now();
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = StatusCode::from_u16(status).unwrap();
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        parts.headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static(LAST_MODIFIED),
        );
        let freshness = Freshness::fresh(Duration::from_secs(60));
        let limits = Limits::AVATAR_DEFAULTS;
        let body = Bytes::from_static(b"0123456789");
        let entry = CachedResponse::new(&parts, body, freshness, &limits, &HeaderMap::new(), now);
        (Arc::new(entry), now)
    }

    fn answer(request: &[(&str, &str)]) -> Response<Body> {
        answer_for(200, "GET", request)
    }

    fn answer_for(status: u16, method: &str, request: &[(&str, &str)]) -> Response<Body> {
        let (entry, _) = entry(status);
        let mut headers = HeaderMap::new();
        for (name, value) in request {
            let etag = entry.headers.get(&header::ETAG);
            let etag = etag.as_ref().map_or("", |v| v.to_str().unwrap());
            let value = value.replace("$ETAG", etag);
            let name = header::HeaderName::from_bytes(name.as_bytes()).unwrap();
            headers.append(name, HeaderValue::try_from(value).unwrap());
        }
        respond(&entry, &Conditions::of(&method.parse().unwrap(), &headers))
    }

    fn etag() -> String {
        entry(200)
            .0
            .headers
            .get(&header::ETAG)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn minted_etag_is_strong_and_stable_for_the_same_bytes() {
        let tag = etag();
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34,
            "{tag}"
        );
        assert_eq!(tag, etag());
    }

    #[test]
    fn if_none_match_with_our_etag_is_304() {
        for inm in ["$ETAG", "W/$ETAG", "\"other\", $ETAG", "*"] {
            let response = answer(&[("if-none-match", inm)]);
            assert_eq!(response.status(), 304, "{inm}");
            assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
            assert!(response.headers().contains_key(header::ETAG));
        }
    }

    #[test]
    fn if_none_match_with_another_etag_is_200_and_ignores_ims() {
        let response = answer(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", LAST_MODIFIED),
        ]);
        assert_eq!(response.status(), 200);
    }

    #[test]
    fn if_modified_since_at_or_after_last_modified_is_304() {
        assert_eq!(
            answer(&[("if-modified-since", LAST_MODIFIED)]).status(),
            304
        );
        assert_eq!(
            answer(&[("if-modified-since", "Mon, 30 Nov 2026 00:00:00 GMT")]).status(),
            304
        );
        assert_eq!(
            answer(&[("if-modified-since", "Sat, 28 Nov 2026 00:00:00 GMT")]).status(),
            200
        );
        assert_eq!(answer(&[("if-modified-since", "yesterday")]).status(), 200);
    }

    #[test]
    fn failed_preconditions_are_412() {
        assert_eq!(answer(&[("if-match", "\"other\"")]).status(), 412);
        assert_eq!(
            answer(&[("if-match", "W/$ETAG")]).status(),
            412,
            "If-Match compares strongly"
        );
        assert_eq!(answer(&[("if-match", "$ETAG")]).status(), 200);
        assert_eq!(
            answer(&[("if-unmodified-since", "Sat, 28 Nov 2026 00:00:00 GMT")]).status(),
            412
        );
        assert_eq!(
            answer(&[("if-unmodified-since", LAST_MODIFIED)]).status(),
            200
        );
    }

    #[test]
    fn single_range_is_206_from_memory() {
        let response = answer(&[("range", "bytes=2-4")]);
        assert_eq!(response.status(), 206);
        assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "3");
        let suffix = answer(&[("range", "bytes=-3")]);
        assert_eq!(suffix.headers()[header::CONTENT_RANGE], "bytes 7-9/10");
        let open = answer(&[("range", "bytes=8-")]);
        assert_eq!(open.headers()[header::CONTENT_RANGE], "bytes 8-9/10");
    }

    #[test]
    fn unsatisfiable_range_is_416() {
        let response = answer(&[("range", "bytes=20-30")]);
        assert_eq!(response.status(), 416);
        assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes */10");
    }

    #[test]
    fn several_or_malformed_ranges_get_the_whole() {
        for range in ["bytes=0-1,4-5", "bytes=x", "items=0-1", "bytes=5-2"] {
            assert_eq!(answer(&[("range", range)]).status(), 200, "{range}");
        }
    }

    #[test]
    fn if_range_must_name_this_representation() {
        assert_eq!(
            answer(&[("range", "bytes=0-1"), ("if-range", "$ETAG")]).status(),
            206
        );
        assert_eq!(
            answer(&[("range", "bytes=0-1"), ("if-range", LAST_MODIFIED)]).status(),
            206
        );
        assert_eq!(
            answer(&[("range", "bytes=0-1"), ("if-range", "\"old\"")]).status(),
            200
        );
        assert_eq!(
            answer(&[("range", "bytes=0-1"), ("if-range", "W/$ETAG")]).status(),
            200
        );
        assert_eq!(
            answer(&[
                ("range", "bytes=0-1"),
                ("if-range", "Sat, 28 Nov 2026 00:00:00 GMT")
            ])
            .status(),
            200
        );
    }

    #[test]
    fn head_ignores_range_and_sends_no_body() {
        let response = answer_for(200, "HEAD", &[("range", "bytes=0-1")]);
        assert_eq!(response.status(), 200);
        assert!(matches!(response.body(), Body::Empty));
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "10");
    }

    #[test]
    fn redirects_and_404s_ignore_preconditions() {
        for status in [302, 404] {
            let response = answer_for(
                status,
                "GET",
                &[("if-modified-since", LAST_MODIFIED), ("range", "bytes=0-1")],
            );
            assert_eq!(response.status(), status);
        }
    }
}
