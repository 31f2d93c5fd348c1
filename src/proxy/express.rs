//! Phases 2, 6 and 7 for a request the express lane brings (`express.rs`): a plain `GET` of an avatar the
//! cache holds fresh, answered with the bytes the full path would send, counted and logged as it would be.

use std::net::SocketAddr;
use std::time::SystemTime;

use http::{Method, StatusCode, Uri, Version, header};

use super::{CACHE_STATUS, Proxy, X_CACHE};
use crate::access_log::AccessRecord;
use crate::cache::serve;
use crate::cache::status::Outcome;
use crate::cache::{CacheStatus, CachedResponse};
use crate::config::RuleKind;
use crate::framing::Answer;
use crate::route;

/// Room for a typical avatar head: status line, six or so stored fields, `Age`, `Cache-Status`, `X-Cache`.
const HEAD_CAPACITY: usize = 384;

impl Proxy {
    /// The answer to a plain `GET` of `target` (no query, no header field the full path reads; see
    /// `express.rs`) from `client`, when it is an avatar stored fresh; `None` leaves it to the full path.
    pub fn answer_plain_get(&self, target: &str, client: SocketAddr) -> Option<Answer> {
        let key = route::plain_get_avatar(target, &self.rules)?;
        let now = self.cache.clock().now();
        let entry = self.cache.fresh(key.as_str(), now)?;
        let status = CacheStatus {
            ttl: Some(entry.signed_ttl(now)),
            ..CacheStatus::new(Outcome::Hit)
        };
        let mut head = Vec::with_capacity(HEAD_CAPACITY);
        serve::write_full_head(&entry, now, &mut head);
        write_filtered(&entry, &status, &mut head);
        self.cache.count(status.outcome);
        self.metrics.express_hit(entry.status);
        let done = self
            .access_logging()
            .then(|| logged(target, client, status, entry.status))
            .flatten();
        Some(Answer {
            head,
            body: entry.body.clone(),
            done,
        })
    }
}

/// Phase 6 as `response_filter` does it, and what hyper adds to a head: `content-length: 0` for an empty
/// body, then `Date` when the stored response has none. Ends the head.
fn write_filtered(entry: &CachedResponse, status: &CacheStatus, out: &mut Vec<u8>) {
    out.extend_from_slice(CACHE_STATUS.as_str().as_bytes());
    out.extend_from_slice(b": ");
    status.write_value(out);
    out.extend_from_slice(b"\r\n");
    let x_cache = status.x_cache();
    serve::write_field(out, X_CACHE.as_str(), x_cache.as_bytes());
    if entry.body.is_empty() {
        // Where hyper puts it for an empty body: after the fields it was given (`serve::write_full_head`).
        serve::write_field(out, header::CONTENT_LENGTH.as_str(), b"0");
    }
    if !entry.headers.contains_key(&header::DATE) {
        let date = httpdate::fmt_http_date(SystemTime::now());
        serve::write_field(out, header::DATE.as_str(), date.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Phase 7's access event, written once the answer is out (or the client gone).
fn logged(
    target: &str,
    client: SocketAddr,
    status: CacheStatus,
    code: StatusCode,
) -> Option<Box<dyn FnOnce(u64, bool) + Send>> {
    let uri = Uri::try_from(target).ok()?;
    let mut record = AccessRecord::start(&Method::GET, &uri, Version::HTTP_11, client);
    record.rule = Some(RuleKind::Avatar);
    record.cache = Some(status);
    Some(Box::new(move |sent, complete| {
        record.log(code, sent, complete)
    }))
}
