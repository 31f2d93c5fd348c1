//! Revalidation, pure: the validators a stored response keeps, the conditional request fields a
//! revalidation sends (RFC 9111 §4.3.1), and what a 304 or a `HEAD` answer does to the stored copy
//! (§4.3.4, §4.3.5).

use http::header::{self, HeaderMap, HeaderValue};

use super::RuleKind;

/// The header fields of a stored response after a 304 validated it (RFC 9111 §4.3.4, §3.2): every field the
/// 304 carries replaces the stored ones of that name, except `Content-Length`, which describes the stored body.
pub fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut merged = stored.clone();
    for name in not_modified.keys() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    merged
}

/// The validators a revalidation sends (RFC 9111 §4.3.1). The avatar rule sends `If-Modified-Since` only:
/// Cloudreve sends no ETag, and an `If-None-Match` makes it skip the date check and answer a full 200 (Go
/// `http.ServeContent`). Other rules send the upstream's own `ETag` as `If-None-Match` and its
/// `Last-Modified` as `If-Modified-Since`. An `ETag` this cache minted is never sent upstream.
pub fn revalidation_headers(
    kind: RuleKind,
    validators: &Validators,
) -> Vec<(header::HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(2);
    if let (RuleKind::Http, Some(etag)) = (kind, &validators.etag) {
        headers.push((header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(last_modified) = &validators.last_modified {
        headers.push((header::IF_MODIFIED_SINCE, last_modified.clone()));
    }
    headers
}

/// The upstream's own validators of a stored response, kept apart from what this cache adds (a minted ETag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The upstream's `ETag`.
    pub etag: Option<HeaderValue>,
    /// The upstream's `Last-Modified`.
    pub last_modified: Option<HeaderValue>,
}

impl Validators {
    /// The validators in an upstream response head.
    pub fn of(headers: &HeaderMap) -> Self {
        Self {
            etag: headers.get(header::ETAG).cloned(),
            last_modified: headers.get(header::LAST_MODIFIED).cloned(),
        }
    }
}

/// After a 200 to a `HEAD` the cache sent (RFC 9111 §4.3.5): a stored `GET` response whose `Content-Length`,
/// `ETag` or `Last-Modified` differ from the `HEAD`'s is no longer the current representation and must go;
/// otherwise its header fields are updated like after a 304.
pub fn head_invalidates(
    stored: &HeaderMap,
    stored_validators: &Validators,
    head: &HeaderMap,
) -> bool {
    let differs = |stored: Option<&HeaderValue>, name: header::HeaderName| matches!((stored, head.get(name)), (Some(a), Some(b)) if a != b);
    differs(stored.get(header::CONTENT_LENGTH), header::CONTENT_LENGTH)
        || differs(stored_validators.etag.as_ref(), header::ETAG)
        || differs(
            stored_validators.last_modified.as_ref(),
            header::LAST_MODIFIED,
        )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{png, response};
    use super::*;

    #[test]
    fn not_modified_replaces_fields_but_not_the_length() {
        let stored = png("max-age=10").headers;
        let mut stored = stored;
        stored.insert("content-length", "500".parse().unwrap());
        stored.insert("x-kept", "1".parse().unwrap());
        let mut fresh = HeaderMap::new();
        fresh.insert("cache-control", "max-age=99".parse().unwrap());
        fresh.insert("content-length", "0".parse().unwrap());
        let merged = merge_not_modified(&stored, &fresh);
        assert_eq!(merged["cache-control"], "max-age=99");
        assert_eq!(merged["content-length"], "500");
        assert_eq!(merged["x-kept"], "1");
        assert_eq!(merged["content-type"], "image/png");
    }

    #[test]
    fn avatar_revalidation_uses_if_modified_since_only() {
        let mut stored = png("max-age=10").headers;
        let none = Validators::of(&stored);
        assert!(
            revalidation_headers(RuleKind::Avatar, &none).is_empty(),
            "nothing to revalidate with"
        );
        stored.insert(
            "last-modified",
            "Sun, 29 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        stored.insert("etag", "\"abc\"".parse().unwrap());
        let sent = revalidation_headers(RuleKind::Avatar, &Validators::of(&stored));
        assert_eq!(
            sent,
            [(
                header::IF_MODIFIED_SINCE,
                "Sun, 29 Nov 2026 12:00:00 GMT".parse().unwrap()
            )]
        );
    }

    #[test]
    fn http_revalidation_sends_both_validators() {
        let mut stored = png("max-age=10").headers;
        stored.insert(
            "last-modified",
            "Sun, 29 Nov 2026 12:00:00 GMT".parse().unwrap(),
        );
        stored.insert("etag", "\"abc\"".parse().unwrap());
        let sent = revalidation_headers(RuleKind::Http, &Validators::of(&stored));
        let names: Vec<_> = sent.iter().map(|(name, _)| name.clone()).collect();
        assert_eq!(names, [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE]);
    }

    #[test]
    fn head_answers_with_other_validators_invalidate() {
        let stored = response(200, &[("etag", "\"v1\""), ("content-length", "5")]).headers;
        let validators = Validators::of(&stored);
        let same = response(200, &[("etag", "\"v1\""), ("content-length", "5")]).headers;
        let other_tag = response(200, &[("etag", "\"v2\"")]).headers;
        let other_length = response(200, &[("content-length", "6")]).headers;
        assert!(!head_invalidates(&stored, &validators, &same));
        assert!(head_invalidates(&stored, &validators, &other_tag));
        assert!(head_invalidates(&stored, &validators, &other_length));
    }
}
