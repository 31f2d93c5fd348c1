//! What the cache did for one response, as `Cache-Status` (RFC 9211) and `X-Cache`.

use std::fmt::Write;

use http::{HeaderValue, StatusCode};

/// The cache's name in `Cache-Status`.
pub const CACHE_NAME: &str = "cloudreve-edge";

/// The outcome of one avatar request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    /// What happened.
    pub outcome: Outcome,
    /// Status upstream answered, when the request went there (`fwd-status`).
    pub fwd_status: Option<StatusCode>,
    /// Freshness left in whole seconds, when the response is served from or stored in the cache (`ttl`).
    pub ttl: Option<u64>,
    /// Why the response was not stored or the cache was skipped (`detail`).
    pub detail: Option<&'static str>,
}

/// What the cache did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from memory.
    Hit,
    /// Fetched upstream and stored.
    Stored,
    /// Waited for another request's fetch and served its stored result.
    Collapsed,
    /// Fetched upstream and not stored.
    Miss,
    /// The cache was not consulted (`nocache`, or an id it does not key).
    Bypass,
}

impl Outcome {
    /// Short name for the access log and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stored | Self::Miss => "miss",
            Self::Collapsed => "coalesced",
            Self::Bypass => "bypass",
        }
    }
}

impl CacheStatus {
    /// An outcome with no parameters yet.
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            fwd_status: None,
            ttl: None,
            detail: None,
        }
    }

    /// The `X-Cache` value, for dashboards that predate RFC 9211.
    pub fn x_cache(&self) -> HeaderValue {
        HeaderValue::from_static(match self.outcome {
            Outcome::Hit | Outcome::Collapsed => "HIT",
            Outcome::Stored | Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
        })
    }

    /// The `Cache-Status` value, e.g. `cloudreve-edge; hit; ttl=86312` or
    /// `cloudreve-edge; fwd=miss; fwd-status=200; stored; ttl=86400`.
    pub fn header_value(&self) -> HeaderValue {
        let mut out = String::with_capacity(64);
        out.push_str(CACHE_NAME);
        out.push_str(match self.outcome {
            Outcome::Hit => "; hit",
            Outcome::Stored | Outcome::Collapsed | Outcome::Miss => "; fwd=miss",
            Outcome::Bypass => "; fwd=bypass",
        });
        if let Some(status) = self.fwd_status {
            let _ = write!(out, "; fwd-status={}", status.as_u16());
        }
        match self.outcome {
            Outcome::Stored => out.push_str("; stored"),
            Outcome::Collapsed => out.push_str("; collapsed"),
            _ => {}
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(out, "; ttl={ttl}");
        }
        if let Some(detail) = self.detail {
            let _ = write!(out, "; detail={detail}");
        }
        HeaderValue::try_from(out).expect("Cache-Status is built from ASCII tokens")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_reads_as_rfc_9211() {
        let status = CacheStatus {
            ttl: Some(86312),
            ..CacheStatus::new(Outcome::Hit)
        };
        assert_eq!(status.header_value(), "cloudreve-edge; hit; ttl=86312");
        assert_eq!(status.x_cache(), "HIT");
    }

    #[test]
    fn stored_miss_names_forward_and_storage() {
        let status = CacheStatus {
            fwd_status: Some(StatusCode::OK),
            ttl: Some(86400),
            ..CacheStatus::new(Outcome::Stored)
        };
        assert_eq!(
            status.header_value(),
            "cloudreve-edge; fwd=miss; fwd-status=200; stored; ttl=86400"
        );
        assert_eq!(status.x_cache(), "MISS");
    }

    #[test]
    fn unstored_miss_says_why() {
        let status = CacheStatus {
            fwd_status: Some(StatusCode::OK),
            detail: Some("not-image"),
            ..CacheStatus::new(Outcome::Miss)
        };
        assert_eq!(
            status.header_value(),
            "cloudreve-edge; fwd=miss; fwd-status=200; detail=not-image"
        );
    }

    #[test]
    fn bypass_and_collapsed() {
        let bypass = CacheStatus {
            detail: Some("nocache"),
            ..CacheStatus::new(Outcome::Bypass)
        };
        assert_eq!(
            bypass.header_value(),
            "cloudreve-edge; fwd=bypass; detail=nocache"
        );
        assert_eq!(bypass.x_cache(), "BYPASS");
        let collapsed = CacheStatus {
            ttl: Some(5),
            ..CacheStatus::new(Outcome::Collapsed)
        };
        assert_eq!(
            collapsed.header_value(),
            "cloudreve-edge; fwd=miss; collapsed; ttl=5"
        );
        assert_eq!(collapsed.x_cache(), "HIT");
    }
}
