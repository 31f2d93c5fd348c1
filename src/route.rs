//! Request classification: which path a request takes through the proxy, from its method, target and the
//! configured cache rules.
//!
//! This is where the proxy's knowledge of Cloudreve's URLs is applied (the paths themselves are in
//! `cloudreve.rs`, re-exported here). It does no I/O; it allocates only for the key of a rule that includes
//! `Host`.

use std::borrow::Cow;

use http::header::{self, HeaderMap};
use http::{Method, Uri};

use crate::cache::policy::{self, AvatarKey};
use crate::config::{RuleConfig, RuleKind};
use crate::host;

pub use crate::cloudreve::{ADMIN_USER_PREFIX, AVATAR_PREFIX, OWN_AVATAR_PATH};

/// What the proxy does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// An avatar request the cache answers: looked up, and filled on a miss.
    Avatar(AvatarKey<'a>),
    /// An avatar request the cache must not answer; forwarded as it came. `key` is the stored entry it may
    /// tell something about (a `nocache` answer shows whether the stored copy is still current).
    AvatarBypass {
        /// Why the cache is skipped.
        reason: Bypass,
        /// The key, when the id is canonical.
        key: Option<AvatarKey<'a>>,
    },
    /// A `GET`/`HEAD` under an `http` rule: looked up by its key, and filled on a miss.
    Http {
        /// Index of the rule in `cache.rules`.
        rule: usize,
        /// The primary cache key ([`policy::http_key`]).
        key: Cow<'a, str>,
    },
    /// A request under a rule that must not touch the cache (`Cache-Control: no-store` from the client,
    /// RFC 9111 §5.2.1.5); forwarded as it came.
    RuleBypass(RuleKind, Bypass),
    /// A request that may change an avatar: forwarded, and its confirmed answer invalidates the stored copy.
    AvatarChange(AvatarChange),
    /// A method that is not safe: forwarded; a non-error answer invalidates what it names (RFC 9111 §4.4).
    Unsafe,
    /// Everything else: forwarded as it came.
    Pass,
}

/// Which avatar-changing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvatarChange {
    /// A user uploads their own avatar or switches to Gravatar; the user is the token's `sub`.
    Own,
    /// An admin edits a user; the user is `data.hash_id` of the answer.
    AdminEdit,
}

/// Why an avatar request skips the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// `nocache` is truthy: Cloudreve's settings page asks for the current avatar.
    NoCache,
    /// `nocache` is neither true nor false: Cloudreve answers its own parameter error.
    InvalidNoCache,
    /// The id is not in the one form Cloudreve accepts unencoded (`[A-Za-z0-9]+`), e.g. percent-encoded
    /// or with a trailing slash. Cloudreve may still resolve it, so it is forwarded rather than guessed at.
    NonCanonicalId,
    /// The client sent `Cache-Control: no-store` (RFC 9111 §5.2.1.5): nothing of the exchange is stored.
    RequestNoStore,
    /// An `http` rule's request carries `Authorization`: its answer may depend on the credentials, which
    /// the key does not cover and a fill never carries (`cache::request`), so it goes upstream as it came and
    /// nothing of it is stored (as Varnish's built-in policy does). The avatar rule needs none: Cloudreve's
    /// avatar does not depend on who asks, and its fills go without the credentials.
    Authorization,
}

impl Bypass {
    /// Short name for logs and `Cache-Status` `detail=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCache => "nocache",
            Self::InvalidNoCache => "invalid-nocache",
            Self::NonCanonicalId => "non-canonical-id",
            Self::RequestNoStore => "request-no-store",
            Self::Authorization => "authorization",
        }
    }
}

/// Classifies a request. Only `GET` and `HEAD` can reach the cache, under the first rule whose prefix the raw
/// path starts with. On the avatar route, `HEAD` is answered from the stored `GET` (Cloudreve itself would
/// answer 404).
pub fn classify<'a>(
    method: &Method,
    uri: &'a Uri,
    headers: &HeaderMap,
    rules: &[RuleConfig],
) -> Route<'a> {
    if method == Method::PUT {
        if let Some(change) = classify_change(uri.path()) {
            return Route::AvatarChange(change);
        }
    }
    if method != Method::GET && method != Method::HEAD {
        let safe = method == Method::OPTIONS || method == Method::TRACE;
        return if safe { Route::Pass } else { Route::Unsafe };
    }
    let Some((index, rule)) = rule_for(uri.path(), rules) else {
        return Route::Pass;
    };
    if policy::request_forbids_storing(headers) {
        return Route::RuleBypass(rule.kind, Bypass::RequestNoStore);
    }
    if rule.kind == RuleKind::Http && headers.contains_key(header::AUTHORIZATION) {
        return Route::RuleBypass(rule.kind, Bypass::Authorization);
    }
    match rule.kind {
        RuleKind::Avatar => classify_avatar(uri),
        RuleKind::Http => Route::Http {
            rule: index,
            key: http_key_of(uri, headers, rule),
        },
    }
}

/// What [`classify`] gives a `GET` of `target` (origin form) that carries no header field it reads, when
/// that is `Route::Avatar`: the key, found without a `Uri` or a `HeaderMap` (the express lane). A query,
/// even an empty one, gives `None`, as does anything but the avatar rule.
pub fn plain_get_avatar<'a>(target: &'a str, rules: &[RuleConfig]) -> Option<AvatarKey<'a>> {
    if target.contains('?') {
        return None;
    }
    match rule_for(target, rules)? {
        (_, rule) if rule.kind == RuleKind::Avatar => avatar_key(target),
        _ => None,
    }
}

/// The key of an avatar path (no query): its segment after [`AVATAR_PREFIX`], when canonical.
fn avatar_key(path: &str) -> Option<AvatarKey<'_>> {
    AvatarKey::from_path_segment(path.strip_prefix(AVATAR_PREFIX)?)
}

/// The first rule whose prefix the raw path starts with.
pub fn rule_for<'r>(path: &str, rules: &'r [RuleConfig]) -> Option<(usize, &'r RuleConfig)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, rule)| path.starts_with(&rule.prefix))
}

/// The primary cache key a `GET` of `path_and_query` would have, under whichever rule would take it; for the
/// invalidation of URIs an unsafe request names (RFC 9111 §4.4).
pub fn key_for<'a>(
    path_and_query: &'a str,
    host: Option<&str>,
    rules: &[RuleConfig],
) -> Option<Cow<'a, str>> {
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    let (_, rule) = rule_for(path, rules)?;
    match rule.kind {
        RuleKind::Avatar => avatar_key(path).map(|key| Cow::Borrowed(key.as_str())),
        RuleKind::Http => Some(policy::http_key(
            path_and_query,
            host.filter(|_| rule.key_includes_host),
        )),
    }
}

/// Whether the rule that would cache a `GET` of `path_and_query` keys on the host: it then holds one entry
/// per host asked, which [`key_for`] without a host does not name (the purge API drops them all).
pub fn keyed_by_host(path_and_query: &str, rules: &[RuleConfig]) -> bool {
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    rule_for(path, rules)
        .is_some_and(|(_, rule)| rule.kind == RuleKind::Http && rule.key_includes_host)
}

fn http_key_of<'a>(uri: &'a Uri, headers: &HeaderMap, rule: &RuleConfig) -> Cow<'a, str> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    match rule
        .key_includes_host
        .then(|| request_host(uri, headers))
        .flatten()
    {
        Some(host) => Cow::Owned(policy::http_key(target, Some(host)).into_owned()),
        None => Cow::Borrowed(target),
    }
}

/// The host a request is for, as [`host::effective`] decides it (the target's authority, else its one
/// `Host`); `None` without one. The request filter refused every request whose host that function refuses
/// before classification, so none reaches here.
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    host::effective(uri, headers).ok().flatten()
}

fn classify_avatar(uri: &Uri) -> Route<'_> {
    let Some(segment) = uri.path().strip_prefix(AVATAR_PREFIX) else {
        return Route::Pass;
    };
    let key = AvatarKey::from_path_segment(segment);
    let bypass = |reason| Route::AvatarBypass { reason, key };
    match (NoCache::parse(uri.query()), key) {
        (NoCache::True, _) => bypass(Bypass::NoCache),
        (NoCache::Invalid, _) => bypass(Bypass::InvalidNoCache),
        (NoCache::False, Some(key)) => Route::Avatar(key),
        (NoCache::False, None) => bypass(Bypass::NonCanonicalId),
    }
}

fn classify_change(path: &str) -> Option<AvatarChange> {
    if path == OWN_AVATAR_PATH {
        return Some(AvatarChange::Own);
    }
    let admin_edit = path
        .strip_prefix(ADMIN_USER_PREFIX)
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    admin_edit.then_some(AvatarChange::AdminEdit)
}

/// The `nocache` query parameter, read exactly as Cloudreve reads it: gin's `ShouldBindQuery` takes the first
/// value of the key after Go's `url.ParseQuery`, treats an empty value as false, then `strconv.ParseBool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCache {
    /// Absent, empty, or one of `0 f F FALSE false False`.
    False,
    /// One of `1 t T TRUE true True`.
    True,
    /// Anything else: Cloudreve answers `{"code":40001,"msg":"Parameter error"}`.
    Invalid,
}

/// How many `&`-separated pairs the proxy reads before it stops predicting what Cloudreve sees. This is the
/// proxy's own cut, not Go's: `url.ParseQuery` refuses a query of more than 10,000 parameters by default
/// (Go 1.26, and the 1.25.6 and 1.24.12 security releases; `GODEBUG=urlmaxqueryparams=N` moves it, 0 removes
/// it, older releases have none), and gin's `URL.Query()` then drops every parameter. Where Cloudreve's limit
/// lies depends on how it was built, so past 1000 pairs `nocache` reads as invalid: the request is forwarded
/// untouched and never cached, which is right whatever Cloudreve makes of it. No real client sends that
/// many, so the only cost is a bypass; the gain is a bound on the work per request.
const MAX_QUERY_PARAMS: usize = 1000;

impl NoCache {
    /// Parses a raw query string (without `?`).
    pub fn parse(query: Option<&str>) -> Self {
        let Some(query) = query else {
            return Self::False;
        };
        for (index, pair) in query.split('&').enumerate() {
            if index >= MAX_QUERY_PARAMS {
                return Self::Invalid;
            }
            // Go skips a pair containing ';' (since 1.17) and empty pairs.
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            // Go skips a pair whose key or value does not unescape.
            let (Some(key), Some(value)) = (unescape(raw_key), unescape(raw_value)) else {
                continue;
            };
            if key.as_bytes() == Some(b"nocache") {
                return value.as_bytes().map_or(Self::Invalid, Self::from_go_bool);
            }
        }
        Self::False
    }

    fn from_go_bool(value: &[u8]) -> Self {
        match value {
            b"" | b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Self::False,
            b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Self::True,
            _ => Self::Invalid,
        }
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte, a malformed escape is an error (`None`).
fn unescape(raw: &str) -> Option<Unescaped> {
    let mut out = Unescaped::default();
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        let decoded = match b {
            b'+' => b' ',
            b'%' => {
                let hi = hex(bytes.next()?)?;
                let lo = hex(bytes.next()?)?;
                hi << 4 | lo
            }
            other => other,
        };
        out.push(decoded);
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A decoded key or value, kept inline so parsing never allocates. Every name and value the parser compares
/// against is at most 7 bytes, so anything longer than [`INLINE`] is only remembered as "too long".
#[derive(Default)]
struct Unescaped {
    buf: [u8; INLINE],
    len: usize,
}

const INLINE: usize = 16;

impl Unescaped {
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
        }
        self.len = self.len.saturating_add(1);
    }

    /// The decoded bytes, or `None` when they were too long to keep (and so equal nothing we look for).
    fn as_bytes(&self) -> Option<&[u8]> {
        self.buf.get(..self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn route(method: &str, target: &str) -> String {
        route_with(method, target, &[])
    }

    fn route_with(method: &str, target: &str, headers: &[(&str, &str)]) -> String {
        let uri: Uri = target.parse().unwrap();
        let method: Method = method.parse().unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let rules = crate::config::Config::default().cache.rules;
        format!("{:?}", classify(&method, &uri, &map, &rules))
    }

    fn nocache(query: &str) -> NoCache {
        NoCache::parse(Some(query))
    }

    #[test]
    fn plain_get_avatar_agrees_with_classify() {
        let rules = crate::config::Config::default().cache.rules;
        for target in [
            "/api/v4/user/avatar/lpua",
            "/api/v4/user/avatar/lpua?",
            "/api/v4/user/avatar/lpua?nocache=false",
            "/api/v4/user/avatar/lpua?nocache=true",
            "/api/v4/user/avatar/lp%75a",
            "/api/v4/user/avatar/lpua/",
            "/api/v4/user/avatar/",
            "/api/v4/user/avatar",
            "/api/v4/user/avatarx",
            "/api/v4/user/avatar/a.b",
            "/assets/app.js",
            "/api/v4/site/config",
            "/",
        ] {
            let uri: Uri = target.parse().unwrap();
            let classified = match classify(&Method::GET, &uri, &HeaderMap::new(), &rules) {
                Route::Avatar(key) if uri.query().is_none() => Some(key),
                _ => None,
            };
            assert_eq!(plain_get_avatar(target, &rules), classified, "{target}");
        }
        assert!(plain_get_avatar("/api/v4/user/avatar/lpua", &rules).is_some());
        // Under an earlier rule, an avatar path is that rule's.
        let mut shadowed = rules.clone();
        shadowed.insert(
            0,
            RuleConfig {
                prefix: "/api/".into(),
                ..rules[1].clone()
            },
        );
        assert_eq!(
            plain_get_avatar("/api/v4/user/avatar/lpua", &shadowed),
            None
        );
    }

    #[test]
    fn plain_avatar_get_is_cached_by_id() {
        assert_eq!(
            route("GET", "/api/v4/user/avatar/lpua"),
            r#"Avatar(AvatarKey("lpua"))"#
        );
    }

    #[test]
    fn head_is_cached_like_get() {
        assert_eq!(
            route("HEAD", "/api/v4/user/avatar/lpua"),
            r#"Avatar(AvatarKey("lpua"))"#
        );
    }

    #[test]
    fn unsafe_methods_invalidate_and_safe_ones_pass() {
        for method in ["POST", "PUT", "DELETE", "PATCH", "PROPFIND", "MKCOL"] {
            assert_eq!(
                route(method, "/api/v4/user/avatar/lpua"),
                "Unsafe",
                "{method}"
            );
        }
        for method in ["OPTIONS", "TRACE"] {
            assert_eq!(
                route(method, "/api/v4/user/avatar/lpua"),
                "Pass",
                "{method}"
            );
        }
    }

    #[test]
    fn assets_are_cached_by_raw_target() {
        assert_eq!(
            route("GET", "/assets/index-a1b2.js?v=1"),
            r#"Http { rule: 1, key: "/assets/index-a1b2.js?v=1" }"#
        );
        assert_eq!(
            route("HEAD", "/assets/x.css"),
            r#"Http { rule: 1, key: "/assets/x.css" }"#
        );
        assert_eq!(route("GET", "/%61ssets/x.css"), "Pass", "never decoded");
    }

    #[test]
    fn request_no_store_bypasses_every_rule() {
        for target in ["/assets/x.js", "/api/v4/user/avatar/lpua"] {
            let route = route_with("GET", target, &[("cache-control", "max-age=0, No-Store")]);
            assert!(route.ends_with(", RequestNoStore)"), "{target}: {route}");
        }
    }

    #[test]
    fn credentials_bypass_http_rules_but_not_the_avatar_rule() {
        let bearer = [("authorization", "Bearer t")];
        assert_eq!(
            route_with("GET", "/assets/x.js", &bearer),
            "RuleBypass(Http, Authorization)"
        );
        assert!(
            route_with("GET", "/api/v4/user/avatar/lpua", &bearer).starts_with("Avatar("),
            "an avatar does not depend on who asks"
        );
    }

    #[test]
    fn host_joins_the_key_when_the_rule_says_so() {
        let mut rules = crate::config::Config::default().cache.rules;
        rules[1].key_includes_host = true;
        let uri: Uri = "/assets/a.js".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "Cloud.Example".parse().unwrap());
        let route = classify(&Method::GET, &uri, &headers, &rules);
        assert_eq!(
            format!("{route:?}"),
            r#"Http { rule: 1, key: "cloud.example /assets/a.js" }"#
        );
    }

    #[test]
    fn keys_for_invalidation_follow_the_rules() {
        let rules = crate::config::Config::default().cache.rules;
        assert_eq!(
            key_for("/assets/a.js?x", None, &rules).as_deref(),
            Some("/assets/a.js?x")
        );
        assert_eq!(
            key_for("/api/v4/user/avatar/lpua", None, &rules).as_deref(),
            Some("lpua")
        );
        assert_eq!(key_for("/api/v4/user/avatar/lp%75a", None, &rules), None);
        assert_eq!(key_for("/api/v4/site/ping", None, &rules), None);
    }

    #[test]
    fn other_paths_pass() {
        for target in [
            "/api/v4/user/avatar",
            "/api/v4/user/avatarx/lpua",
            "/api/v4/user/info/lpua",
            "/API/v4/user/avatar/lpua",
            "/api/v4//user/avatar/lpua",
            "/dav/api/v4/user/avatar/lpua",
        ] {
            assert_eq!(route("GET", target), "Pass", "{target}");
        }
    }

    #[test]
    fn key_ignores_other_query_parameters() {
        assert_eq!(
            route("GET", "/api/v4/user/avatar/lpua?key=7"),
            r#"Avatar(AvatarKey("lpua"))"#
        );
        assert_eq!(
            route("GET", "/api/v4/user/avatar/lpua?nocache=0&key=7"),
            r#"Avatar(AvatarKey("lpua"))"#
        );
    }

    #[test]
    fn ids_keep_their_case() {
        assert_eq!(
            route("GET", "/api/v4/user/avatar/LPUA"),
            r#"Avatar(AvatarKey("LPUA"))"#
        );
    }

    #[test]
    fn non_canonical_ids_bypass() {
        for target in [
            "/api/v4/user/avatar/",
            "/api/v4/user/avatar/lpua/",
            "/api/v4/user/avatar/lp%75a",
            "/api/v4/user/avatar/lpua/extra",
            "/api/v4/user/avatar/lp.ua",
            "/api/v4/user/avatar/..",
        ] {
            assert_eq!(
                route("GET", target),
                "AvatarBypass { reason: NonCanonicalId, key: None }",
                "{target}"
            );
        }
    }

    #[test]
    fn nocache_truthy_bypasses() {
        assert_eq!(
            route("GET", "/api/v4/user/avatar/lpua?nocache=1&key=2"),
            r#"AvatarBypass { reason: NoCache, key: Some(AvatarKey("lpua")) }"#
        );
    }

    #[test]
    fn nocache_invalid_bypasses() {
        assert_eq!(
            route("GET", "/api/v4/user/avatar/lpua?nocache=yes"),
            r#"AvatarBypass { reason: InvalidNoCache, key: Some(AvatarKey("lpua")) }"#
        );
    }

    #[test]
    fn avatar_changes_are_recognised() {
        assert_eq!(
            route("PUT", "/api/v4/user/setting/avatar"),
            "AvatarChange(Own)"
        );
        assert_eq!(
            route("PUT", "/api/v4/admin/user/12"),
            "AvatarChange(AdminEdit)"
        );
        for (method, target) in [
            ("POST", "/api/v4/user/setting/avatar"),
            ("PUT", "/api/v4/user/setting"),
            ("PUT", "/api/v4/user/setting/avatar/"),
            ("PUT", "/api/v4/admin/user/"),
            ("PUT", "/api/v4/admin/user/lpua"),
            ("PUT", "/api/v4/admin/user/1/x"),
        ] {
            assert_eq!(route(method, target), "Unsafe", "{method} {target}");
        }
        assert_eq!(route("GET", "/api/v4/admin/user/12"), "Pass");
    }

    #[test]
    fn nocache_follows_go_parse_bool() {
        for value in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(
                nocache(&format!("nocache={value}")),
                NoCache::True,
                "{value}"
            );
        }
        for value in ["0", "f", "F", "FALSE", "false", "False", ""] {
            assert_eq!(
                nocache(&format!("nocache={value}")),
                NoCache::False,
                "{value}"
            );
        }
        for value in ["yes", "on", "2", "tRUE", " 1", "1 ", "-1", "truee"] {
            assert_eq!(
                nocache(&format!("nocache={value}")),
                NoCache::Invalid,
                "{value}"
            );
        }
    }

    #[test]
    fn nocache_absent_or_bare_is_false() {
        assert_eq!(NoCache::parse(None), NoCache::False);
        assert_eq!(nocache(""), NoCache::False);
        assert_eq!(nocache("nocache"), NoCache::False);
        assert_eq!(nocache("key=1"), NoCache::False);
    }

    #[test]
    fn nocache_first_value_wins() {
        assert_eq!(nocache("nocache=1&nocache=0"), NoCache::True);
        assert_eq!(nocache("nocache=0&nocache=1"), NoCache::False);
        assert_eq!(nocache("nocache=&nocache=1"), NoCache::False);
    }

    #[test]
    fn nocache_is_unescaped_like_go() {
        assert_eq!(nocache("nocache=%31"), NoCache::True);
        assert_eq!(nocache("no%63ache=true"), NoCache::True);
        assert_eq!(nocache("nocache=tru%65"), NoCache::True);
        assert_eq!(nocache("nocache=+1"), NoCache::Invalid);
    }

    #[test]
    fn nocache_key_is_case_sensitive() {
        assert_eq!(nocache("NOCACHE=1"), NoCache::False);
        assert_eq!(nocache("NoCache=1"), NoCache::False);
    }

    #[test]
    fn nocache_pairs_go_skips_are_skipped() {
        // a ';' makes Go drop the pair, so the next value is the first one Cloudreve sees
        assert_eq!(nocache("nocache=1;x&nocache=0"), NoCache::False);
        // a malformed escape drops the pair
        assert_eq!(nocache("nocache=%zz&nocache=1"), NoCache::True);
        assert_eq!(nocache("nocache=%3&nocache=1"), NoCache::True);
        assert_eq!(nocache("&&nocache=t"), NoCache::True);
    }

    #[test]
    fn nocache_overlong_values_are_invalid_not_truncated() {
        assert_eq!(nocache("nocache=truetruetruetruetrue"), NoCache::Invalid);
        assert_eq!(nocache("nocachenocachenocache=1"), NoCache::False);
    }

    #[test]
    fn too_many_parameters_are_not_predicted() {
        let query = "a=1&".repeat(MAX_QUERY_PARAMS) + "nocache=1";
        assert_eq!(nocache(&query), NoCache::Invalid);
    }
}
