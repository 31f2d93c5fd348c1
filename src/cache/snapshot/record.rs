//! A stored response as a snapshot record and back. Times travel as wall-clock times (the cache clock's
//! instants mean nothing to another process), so the time the process was down counts in a restored entry's
//! age, exactly as time resident here does.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::format::{Doubt, RecordMeta, ResponseMeta};
use crate::cache::entry::{CachedResponse, Fields};
use crate::cache::policy::Freshness;

/// The record of `entry`, stored under `key`, written at `written_at` (wall clock, since the Unix epoch)
/// when the cache clock says `now`.
pub(super) fn record_of(
    key: &str,
    entry: &CachedResponse,
    now: Instant,
    written_at: Duration,
) -> RecordMeta {
    let resident = now.saturating_duration_since(entry.stored_at);
    let stored_at = written_at.saturating_sub(resident);
    let freshness = entry.freshness;
    RecordMeta {
        key: key.to_owned(),
        stored_at,
        expires_at: stored_at + entry.retain_for,
        response: ResponseMeta {
            status: entry.status.as_u16(),
            fields: entry
                .headers
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_vec()))
                .collect(),
            body_hash: entry.body_hash,
            etag_minted: entry.etag_minted,
            vary: entry.vary.as_deref().map(|(names, values)| {
                let names = names.iter().map(|n| n.as_str().to_owned()).collect();
                (names, values.clone())
            }),
            fresh_for: freshness.fresh_for,
            initial_age: freshness.initial_age,
            stale_while_revalidate: freshness.stale_while_revalidate,
            stale_if_error: freshness.stale_if_error,
            revalidatable: freshness.revalidatable,
        },
    }
}

/// The entry a record describes, as if it had stayed in the cache since it was stored: resident for the
/// time between its `stored_at` and `now_wall` (wall clock, since the Unix epoch), which the cache clock
/// says is `now`. `None` when the store would have dropped it by now. `index` names the record in a doubt.
pub(super) fn entry_of(
    meta: RecordMeta,
    body: Bytes,
    now: Instant,
    now_wall: Duration,
    index: u64,
) -> Result<Option<CachedResponse>, Doubt> {
    let malformed = |why: &str| Doubt::Malformed {
        record: index,
        why: why.to_owned(),
    };
    if meta.expires_at < meta.stored_at {
        return Err(malformed("expires before it was stored"));
    }
    if now_wall >= meta.expires_at {
        return Ok(None);
    }
    let elapsed = now_wall.saturating_sub(meta.stored_at);
    // Linux's monotonic clock goes back before boot without trouble; a platform whose cannot gets a miss.
    let Some(stored_at) = now.checked_sub(elapsed) else {
        return Ok(None);
    };
    let response = meta.response;
    let status = StatusCode::from_u16(response.status).map_err(|_| malformed("status"))?;
    let mut headers = HeaderMap::with_capacity(response.fields.len());
    for (name, value) in response.fields {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| malformed("field name"))?;
        let value = HeaderValue::from_bytes(&value).map_err(|_| malformed("field value"))?;
        headers.append(name, value);
    }
    let vary = match response.vary {
        Some((names, values)) => {
            let names = names
                .iter()
                .map(|name| HeaderName::from_bytes(name.as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| malformed("vary name"))?;
            Some(Box::new((names, values)))
        }
        None => None,
    };
    // As `CachedResponse::new` reads it, from the fields stored.
    let last_modified = headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    Ok(Some(CachedResponse {
        status,
        headers: Fields::detached(&headers),
        body,
        body_hash: response.body_hash,
        last_modified,
        etag_minted: response.etag_minted,
        vary,
        stored_at,
        freshness: Freshness {
            fresh_for: response.fresh_for,
            initial_age: response.initial_age,
            stale_while_revalidate: response.stale_while_revalidate,
            stale_if_error: response.stale_if_error,
            revalidatable: response.revalidatable,
        },
        retain_for: meta.expires_at - meta.stored_at,
        restored_after: elapsed,
    }))
}
