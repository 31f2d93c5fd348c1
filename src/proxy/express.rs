//! Phases 2, 3, 6 and 7 for a request the express lane brings (`express.rs`): a plain `GET` of an avatar the
//! cache holds fresh, answered with the bytes the full path would send (both rendered by `hit.rs`), counted
//! and logged as it would be.

use std::net::SocketAddr;

use http::StatusCode;

use super::Proxy;
use super::hit::Hit;
use crate::access_log::AccessRecord;
use crate::cache::CacheStatus;
use crate::cache::status::Outcome;
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
        let hit = Hit::new(&entry, now, CacheStatus::new(Outcome::Hit));
        let mut head = Vec::with_capacity(HEAD_CAPACITY);
        hit.write_head(&mut head);
        self.count(Some(RuleKind::Avatar), Some(Outcome::Hit), entry.status);
        self.metrics.express_answered();
        let done = self
            .access_logging()
            .then(|| logged(target, client, hit.status(), entry.status));
        Some(Answer {
            head,
            body: entry.body.clone(),
            done,
        })
    }
}

/// Phase 7's access event, written once the answer is out (or the client gone).
fn logged(
    target: &str,
    client: SocketAddr,
    status: CacheStatus,
    code: StatusCode,
) -> Box<dyn FnOnce(u64, bool) + Send> {
    let mut record = AccessRecord::express(target, client);
    record.rule = Some(RuleKind::Avatar);
    record.cache = Some(status);
    Box::new(move |sent, complete| record.log(code, sent, complete))
}
