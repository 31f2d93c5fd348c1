//! Why a response is not stored: the one verdict admission gives, also given by the directive parser
//! (`no-store`, `private`, `Authorization`), each reason a `Cache-Status` `detail=` token.

/// Why a response is not stored. Each maps to a `Cache-Status` `detail=` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// A status the rule does not store (avatars: other than 200, 301, 302, 404; any rule: 1xx, 206, 304).
    Status,
    /// A 200 whose `Content-Type` is not `image/*`: Cloudreve's errors are JSON 200s.
    NotImage,
    /// `Set-Cookie` would hand one client's cookie to everyone.
    SetCookie,
    /// `Vary: *` (never matches), or any `Vary` on the avatar route (its key takes no request headers).
    Vary,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private` (RFC 9111 §5.2.2.7).
    Private,
    /// `Cache-Control: no-cache` without a validator to revalidate with: it could never be used.
    NoCache,
    /// The request carried `Authorization` and the response does not allow sharing it (RFC 9111 §3.5).
    Authorization,
    /// Neither freshness (explicit, or heuristic where allowed) nor a validator; or an invalid explicit
    /// freshness (RFC 9111 §4.2.1: treat as stale). Never given a default TTL.
    NoFreshness,
    /// Already stale when it arrived (its age is past its lifetime).
    StaleOnArrival,
    /// The body is larger than `cache.max_object_size`.
    TooLarge,
}

impl NotStored {
    /// Token for `Cache-Status` `detail=` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::NotImage => "not-image",
            Self::SetCookie => "set-cookie",
            Self::Vary => "vary",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::NoCache => "no-cache",
            Self::Authorization => "authorization",
            Self::NoFreshness => "no-freshness",
            Self::StaleOnArrival => "stale",
            Self::TooLarge => "too-large",
        }
    }
}
