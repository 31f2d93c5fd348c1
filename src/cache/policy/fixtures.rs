//! Fixtures shared by the policy's unit tests: the limits they assume, a fixed clock, and response heads.

use std::time::{Duration, SystemTime};

use http::{Response, response};

use super::{Exchange, Limits, NotStored, RuleKind, admit};

pub(super) const LIMITS: Limits = Limits {
    max_object_size: 1024,
    negative_ttl: Duration::from_secs(60),
    stale_while_revalidate: Duration::from_secs(60),
    stale_if_error: Duration::from_secs(86400),
    keep: Duration::from_secs(86400),
    heuristic_fraction: 0.1,
    heuristic_max: Duration::from_secs(86400),
};

pub(super) fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

pub(super) fn exchange() -> Exchange {
    Exchange {
        request_time: at(0),
        response_time: at(0),
        authorized: false,
    }
}

pub(super) fn response(status: u16, headers: &[(&str, &str)]) -> response::Parts {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

pub(super) fn png(cache_control: &str) -> response::Parts {
    response(
        200,
        &[
            ("content-type", "image/png"),
            ("cache-control", cache_control),
        ],
    )
}

pub(super) fn fresh_for(res: &response::Parts) -> Result<u64, NotStored> {
    admit(RuleKind::Avatar, res, exchange(), &LIMITS).map(|f| f.fresh_for.as_secs())
}

pub(super) fn windows(res: &response::Parts) -> (u64, u64) {
    let f = admit(RuleKind::Avatar, res, exchange(), &LIMITS).unwrap();
    (
        f.stale_while_revalidate.as_secs(),
        f.stale_if_error.as_secs(),
    )
}
