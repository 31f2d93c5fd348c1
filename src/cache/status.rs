//! What the cache did for one response, as `Cache-Status` (RFC 9211) and `X-Cache`.

use http::{HeaderValue, StatusCode};

/// The cache's name in `Cache-Status`.
pub const CACHE_NAME: &str = "cloudreve-edge";

/// What the cache did for one avatar request, with the RFC 9211 parameters that describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    /// What happened, in one word (logs, metrics, `X-Cache`).
    pub outcome: Outcome,
    /// Status upstream answered, when the request went there (`fwd-status`).
    pub fwd_status: Option<StatusCode>,
    /// Freshness left in whole seconds when served from or stored in the cache; negative when a stale
    /// response is served (`ttl`).
    pub ttl: Option<i64>,
    /// Why the response was not stored, the cache was skipped, or a stale response was used (`detail`).
    pub detail: Option<&'static str>,
    /// A stored response existed but was stale, so the request went upstream (`fwd=stale`, not `fwd=miss`).
    pub had_stale: bool,
}

/// What the cache did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served fresh from memory.
    Hit,
    /// Served stale from memory within `stale-while-revalidate`, while one request refreshes it.
    Stale,
    /// Served stale from memory because the upstream failed (`stale-if-error`).
    StaleIfError,
    /// The stored response was stale, the upstream confirmed it (304), and it was served from memory.
    Revalidated,
    /// Fetched upstream and stored (a miss, or a stale entry replaced).
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
            Self::Stale | Self::StaleIfError => "stale",
            Self::Revalidated => "revalidated",
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
            had_stale: false,
        }
    }

    /// The `X-Cache` value, for dashboards that predate RFC 9211.
    pub fn x_cache(&self) -> HeaderValue {
        HeaderValue::from_static(match self.outcome {
            Outcome::Hit | Outcome::Collapsed => "HIT",
            Outcome::Stale | Outcome::StaleIfError => "STALE",
            Outcome::Revalidated => "REVALIDATED",
            Outcome::Stored | Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
        })
    }

    /// The `Cache-Status` value (built on every response a rule matched, so without the formatting machinery),
    /// e.g. `cloudreve-edge; hit; ttl=86312` or
    /// `cloudreve-edge; fwd=miss; fwd-status=200; stored; ttl=86400`.
    pub fn header_value(&self) -> HeaderValue {
        let mut out = Vec::with_capacity(64);
        self.write_value(&mut out);
        HeaderValue::try_from(out).expect("Cache-Status is built from ASCII tokens")
    }

    /// Appends the `Cache-Status` value to `out` (the express lane writes it straight into a response head).
    pub fn write_value(&self, out: &mut Vec<u8>) {
        let mut push = |text: &str| out.extend_from_slice(text.as_bytes());
        push(CACHE_NAME);
        push(match self.outcome {
            Outcome::Hit | Outcome::Stale => "; hit",
            Outcome::StaleIfError | Outcome::Revalidated => "; fwd=stale",
            Outcome::Stored | Outcome::Collapsed | Outcome::Miss if self.had_stale => "; fwd=stale",
            Outcome::Stored | Outcome::Collapsed | Outcome::Miss => "; fwd=miss",
            Outcome::Bypass => "; fwd=bypass",
        });
        let mut number = itoa::Buffer::new();
        if let Some(status) = self.fwd_status {
            push("; fwd-status=");
            push(number.format(status.as_u16()));
        }
        match self.outcome {
            Outcome::Stored => push("; stored"),
            Outcome::Collapsed => push("; collapsed"),
            _ => {}
        }
        if let Some(ttl) = self.ttl {
            push("; ttl=");
            push(number.format(ttl));
        }
        if let Some(detail) = self.detail {
            push("; detail=");
            push(detail);
        }
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

    #[test]
    fn stale_uses_read_as_rfc_9211() {
        let swr = CacheStatus {
            ttl: Some(-12),
            detail: Some("stale-while-revalidate"),
            ..CacheStatus::new(Outcome::Stale)
        };
        assert_eq!(
            swr.header_value(),
            "cloudreve-edge; hit; ttl=-12; detail=stale-while-revalidate"
        );
        assert_eq!(swr.x_cache(), "STALE");
        let on_error = CacheStatus {
            fwd_status: Some(StatusCode::SERVICE_UNAVAILABLE),
            ttl: Some(-400),
            detail: Some("stale-if-error"),
            ..CacheStatus::new(Outcome::StaleIfError)
        };
        assert_eq!(
            on_error.header_value(),
            "cloudreve-edge; fwd=stale; fwd-status=503; ttl=-400; detail=stale-if-error"
        );
        let revalidated = CacheStatus {
            fwd_status: Some(StatusCode::NOT_MODIFIED),
            ttl: Some(86400),
            ..CacheStatus::new(Outcome::Revalidated)
        };
        assert_eq!(
            revalidated.header_value(),
            "cloudreve-edge; fwd=stale; fwd-status=304; ttl=86400"
        );
        assert_eq!(revalidated.x_cache(), "REVALIDATED");
        let replaced = CacheStatus {
            fwd_status: Some(StatusCode::OK),
            ttl: Some(86400),
            had_stale: true,
            ..CacheStatus::new(Outcome::Stored)
        };
        assert_eq!(
            replaced.header_value(),
            "cloudreve-edge; fwd=stale; fwd-status=200; stored; ttl=86400"
        );
    }
}
