//! The properties the fuzz targets check, one function per target, each taking arbitrary bytes and panicking
//! when a property fails. Shared by the `cargo fuzz` targets (`fuzz_targets/`, libFuzzer, nightly) and the
//! seeded random run on stable that CI executes (`tests/integration/hostile/fuzz.rs`), so both check the same things.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::BytesMut;
use cloudreve_edge::cache::policy::{self, AvatarKey, Exchange, Limits};
use cloudreve_edge::config::{Config, RuleConfig, RuleKind};
use cloudreve_edge::framing::{self, Scanner};
use cloudreve_edge::host;
use cloudreve_edge::invalidate::{self, MAX_CONFIRMATION_SIZE};
use cloudreve_edge::route::{self, AVATAR_PREFIX, AvatarChange, Bypass, NoCache, Route};
use http::header::{self, HeaderMap};
use http::{HeaderName, HeaderValue, Method, Response, Uri};

/// The rule sets the route check classifies under: the defaults (avatar, then `/assets/` as `http`), and
/// the same with `key_includes_host` on every `http` rule (the avatar rule refuses it) plus a catch-all
/// `http` rule last.
fn rule_sets() -> &'static [Vec<RuleConfig>; 2] {
    static RULES: OnceLock<[Vec<RuleConfig>; 2]> = OnceLock::new();
    RULES.get_or_init(|| {
        let hosted = Config::from_toml(
            "[[cache.rules]]\nkind = \"avatar\"\n\
             [[cache.rules]]\nkind = \"http\"\nprefix = \"/assets/\"\nkey_includes_host = true\n\
             [[cache.rules]]\nkind = \"http\"\nprefix = \"/\"\nkey_includes_host = true\n",
        )
        .expect("a valid rule set");
        [Config::default().cache.rules, hosted.cache.rules]
    })
}

/// `route::classify`: never panics, and every route it gives is the one the rules call for. An avatar key is
/// exactly the path segment, canonical, and only for `GET`/`HEAD` with a falsy `nocache`; every avatar-path
/// `GET`/`HEAD` is cached or bypassed; an `http` key is the raw target (after the lower-cased host and a
/// space when the rule keys on it) under the first matching rule; a client's `no-store` skips every rule;
/// only the two avatar-changing `PUT`s are `AvatarChange`, and unsafe methods are never cached.
///
/// The first byte picks the method (its value mod 5), whether the request says `Cache-Control: no-store`
/// (0x40) and the rule set (0x80: every rule keyed on `Host`, and a catch-all `http` rule).
pub fn route(data: &[u8]) {
    let Some((&selector, target)) = data.split_first() else {
        return;
    };
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::OPTIONS,
    ];
    let method = &methods[usize::from(selector) % methods.len()];
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let no_store = selector & 0x40 != 0;
    let rules = &rule_sets()[usize::from(selector >> 7)];
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("Cloud.Example"));
    if no_store {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, no-store"),
        );
    }
    // The request filter refuses what `host::effective` refuses (an authority with userinfo, say) before
    // classification: such a request never gets a route.
    if host::effective(&uri, &headers).is_err() {
        return;
    }
    let path = uri.path();
    let cacheable_method = method == Method::GET || method == Method::HEAD;
    let matched = rules
        .iter()
        .position(|rule| path.starts_with(rule.prefix.as_str()));
    let avatar_path = path.starts_with(AVATAR_PREFIX);
    match route::classify(method, &uri, &headers, rules) {
        Route::Avatar(key) => {
            assert!(cacheable_method && !no_store, "{method} reached the cache");
            assert_eq!(
                path,
                format!("{AVATAR_PREFIX}{}", key.as_str()),
                "key is not the path"
            );
            assert!(AvatarKey::from_path_segment(key.as_str()).is_some());
            assert_eq!(NoCache::parse(uri.query()), NoCache::False);
        }
        Route::AvatarBypass { reason, key } => {
            assert!(cacheable_method && !no_store && avatar_path);
            let segment = &path[AVATAR_PREFIX.len()..];
            assert_eq!(key, AvatarKey::from_path_segment(segment), "bypass key");
            assert_eq!(
                reason == Bypass::NonCanonicalId,
                key.is_none() && NoCache::parse(uri.query()) == NoCache::False,
                "{reason:?}"
            );
        }
        Route::Http { rule, key } => {
            assert!(cacheable_method && !no_store, "{method} reached the cache");
            assert_eq!(matched, Some(rule), "not the first matching rule");
            let rule = &rules[rule];
            assert_eq!(rule.kind, RuleKind::Http);
            let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
            let host = uri.authority().map_or("Cloud.Example", |a| a.as_str());
            let expected = if rule.key_includes_host {
                format!("{} {target}", host.to_ascii_lowercase())
            } else {
                target.to_owned()
            };
            assert_eq!(key, expected, "http key");
        }
        Route::RuleBypass(kind, reason) => {
            assert!(cacheable_method && no_store, "{reason:?}");
            assert_eq!(reason, Bypass::RequestNoStore);
            assert_eq!(Some(kind), matched.map(|i| rules[i].kind));
        }
        Route::AvatarChange(change) => {
            assert_eq!(method, Method::PUT);
            match change {
                AvatarChange::Own => assert_eq!(path, route::OWN_AVATAR_PATH),
                AvatarChange::AdminEdit => {
                    let id = path.strip_prefix(route::ADMIN_USER_PREFIX);
                    assert!(
                        id.is_some_and(
                            |id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
                        )
                    );
                }
            }
        }
        Route::Unsafe => assert!(
            !cacheable_method && method != Method::OPTIONS,
            "{method} is safe"
        ),
        Route::Pass => assert!(
            method == Method::OPTIONS || (cacheable_method && matched.is_none()),
            "{method} {path} passed"
        ),
    }
}

/// `NoCache::parse` agrees with a plain re-implementation of what Cloudreve does (gin's `URL.Query()`: Go's
/// `url.ParseQuery` with its error dropped, first value, `strconv.ParseBool`) on any query string of up to
/// 1000 pairs. Past that the proxy stops predicting and may only be *more* careful: wherever it would use
/// the cache, Cloudreve must read `nocache` as false too.
pub fn nocache(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let ours = NoCache::parse(Some(&query));
    let cloudreve = reference_nocache(&query);
    if query.split('&').count() <= 1000 {
        assert_eq!(ours, cloudreve, "{query:?}");
    } else if ours == NoCache::False {
        assert_eq!(
            cloudreve,
            NoCache::False,
            "cached what Cloudreve bypasses: {query:?}"
        );
    }
}

/// Go's default `urlmaxqueryparams` (a 1.25.x backport, GODEBUG-adjustable): past it `ParseQuery` returns an
/// error before reading any pair, and `URL.Query()` drops the error, so every parameter is absent.
const GO_MAX_QUERY_PARAMS: usize = 10_000;

/// The slow, obvious version: decode every pair the way Go does, keep the first `nocache`.
fn reference_nocache(query: &str) -> NoCache {
    let pairs: Vec<&str> = query.split('&').collect();
    if pairs.len() > GO_MAX_QUERY_PARAMS {
        return NoCache::False;
    }
    for pair in pairs {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (go_unescape(key), go_unescape(value)) else {
            continue;
        };
        if key == b"nocache" {
            return match value.as_slice() {
                b"" | b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => NoCache::False,
                b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => NoCache::True,
                _ => NoCache::Invalid,
            };
        }
    }
    NoCache::False
}

fn go_unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

const LIMITS: Limits = Limits {
    max_object_size: 4096,
    negative_ttl: Duration::from_secs(60),
    stale_while_revalidate: Duration::from_secs(60),
    stale_if_error: Duration::from_secs(86_400),
    keep: Duration::from_secs(86_400),
    heuristic_fraction: 0.1,
    heuristic_max: Duration::from_secs(86_400),
};

/// `cache::policy::admit` on an arbitrary response head, for each kind of rule: never panics, is
/// deterministic, and never admits what a shared cache must not hold (RFC 9111 §3: `no-store`, `private`,
/// `Authorization` without `public`/`s-maxage`/`must-revalidate`; `no-cache` only with a validator and
/// never served stale), nor what the rule should not: `Set-Cookie`, `Vary: *`, over-size or stale-on-arrival
/// answers, 404/410 past `negative_ttl`; for avatars only image 200s, 301, 302 and 404, never with `Vary`;
/// for `http` rules no 1xx, 206 or 304; a 5xx never stands in for a failing upstream. The directives checked are those in force: `CDN-Cache-Control` when
/// it has a value (RFC 9213), else `Cache-Control`.
pub fn admit(data: &[u8]) {
    let Some((parts, exchange)) = response_from(data) else {
        return;
    };
    for kind in [RuleKind::Avatar, RuleKind::Http] {
        admit_as(kind, &parts, exchange);
    }
}

fn admit_as(kind: RuleKind, parts: &http::response::Parts, exchange: Exchange) {
    let decision = policy::admit(kind, parts, exchange, &LIMITS);
    assert_eq!(
        decision,
        policy::admit(kind, parts, exchange, &LIMITS),
        "not deterministic"
    );
    let Ok(freshness) = decision else {
        return;
    };
    let status = parts.status.as_u16();
    let headers = &parts.headers;
    match kind {
        RuleKind::Avatar => {
            assert!(matches!(status, 200 | 301 | 302 | 404), "stored a {status}");
            if status == 200 {
                let image = headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.as_bytes().trim_ascii_start());
                assert!(
                    image.is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case(b"image/")),
                    "stored a non-image 200"
                );
            }
        }
        RuleKind::Http => assert!(
            status >= 200 && status != 206 && status != 304,
            "{kind:?} stored a {status}"
        ),
    }
    assert!(
        !headers.contains_key(header::SET_COOKIE),
        "stored a Set-Cookie"
    );
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            panic!("stored with an unreadable Vary");
        };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            assert!(token != "*", "stored a Vary: *");
            assert!(
                kind != RuleKind::Avatar,
                "{kind:?} stored a Vary: {value:?}"
            );
        }
    }
    let validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    assert!(
        validator || !freshness.fresh_for.is_zero(),
        "stored already stale, with nothing to revalidate with"
    );
    if status == 404 || status == 410 {
        assert!(
            freshness.fresh_for <= LIMITS.negative_ttl,
            "{status} kept past negative_ttl"
        );
    }
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        if let Ok(length) = length.to_str().unwrap_or("").trim().parse::<u64>() {
            assert!(
                length <= LIMITS.max_object_size as u64,
                "stored past max_object_size"
            );
        }
    }
    let Some(names) = directives_in_force(headers) else {
        return; // quoted strings may hide anything; the unit tests cover them
    };
    let has = |wanted: &[&str]| names.iter().any(|n| wanted.contains(&n.as_str()));
    assert!(!has(&["no-store", "private"]), "stored despite {names:?}");
    if exchange.authorized {
        assert!(
            has(&["public", "s-maxage", "must-revalidate", "proxy-revalidate"]),
            "stored an answer to Authorization without permission: {names:?}"
        );
    }
    if has(&["no-cache"]) {
        assert!(validator, "stored a no-cache answer with no validator");
        assert!(freshness.fresh_for.is_zero(), "no-cache stored as fresh");
    }
    if status >= 500 {
        assert!(
            freshness.stale_if_error.is_zero(),
            "a stored {status} may stand in for a failing upstream"
        );
    }
    // `s-maxage` carries `proxy-revalidate` for a shared cache (RFC 9111 §5.2.2.10).
    if has(&[
        "no-cache",
        "must-revalidate",
        "proxy-revalidate",
        "s-maxage",
    ]) {
        assert!(
            freshness.stale_while_revalidate.is_zero() && freshness.stale_if_error.is_zero(),
            "may serve stale despite {names:?}"
        );
    }
}

/// The lower-cased directive names of the caching field in force; `None` when a value has a quote, or when
/// this plain reading cannot tell which field is in force.
fn directives_in_force(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in headers.get_all(field_in_force(headers)?) {
        let Ok(value) = value.to_str() else {
            panic!("stored with an unreadable {value:?}");
        };
        if value.contains('"') {
            return None;
        }
        for directive in value.split(',') {
            let name = directive.split('=').next().unwrap_or("").trim();
            names.push(name.to_ascii_lowercase());
        }
    }
    Some(names)
}

/// RFC 9213 §2.1: `CDN-Cache-Control` when it is a valid, non-empty Dictionary whose directives have the
/// types inferred for them, else `Cache-Control`. Read plainly, not with the crate's parser: members that
/// are a lower-case name alone or with an Integer are told apart; anything else (parameters, strings, inner
/// lists, other items) gives `None`.
fn field_in_force(headers: &HeaderMap) -> Option<HeaderName> {
    let cdn = HeaderName::from_static("cdn-cache-control");
    let lines: Vec<&[u8]> = headers
        .get_all(&cdn)
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .collect();
    if lines.iter().all(|line| line.is_empty()) {
        return Some(header::CACHE_CONTROL);
    }
    let joined = lines.join(&b", "[..]);
    if !joined.is_ascii() {
        return Some(header::CACHE_CONTROL);
    }
    let joined = String::from_utf8(joined).expect("ASCII");
    let mut valid = true;
    for member in joined.split(',') {
        valid &= member_is_valid(member.trim_matches([' ', '\t']))?;
    }
    Some(if valid { cdn } else { header::CACHE_CONTROL })
}

/// Whether one Dictionary member is valid, with the type RFC 9213 §2.1 infers for its directive: a name
/// alone is Boolean true (wrong for a duration), `name=digits` an Integer (wrong for a flag). An empty
/// member or an upper-case letter in a name fails the parse. `None` when this reading cannot tell.
fn member_is_valid(member: &str) -> Option<bool> {
    let (name, value) = match member.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (member, None),
    };
    let key = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    if !key {
        return (name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase())).then_some(false);
    }
    let duration = matches!(
        name,
        "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error"
    );
    let flag = matches!(
        name,
        "no-store" | "no-cache" | "private" | "public" | "must-revalidate" | "proxy-revalidate"
    );
    match value {
        None => Some(!duration),
        Some(v) if (1..=15).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) => {
            Some(!flag)
        }
        Some(_) => None,
    }
}

/// Builds a response head from bytes: two bytes of status, one of timing, then `name:value` lines.
fn response_from(data: &[u8]) -> Option<(http::response::Parts, Exchange)> {
    let (head, rest) = data.split_at_checked(3)?;
    let status = 100 + u16::from_be_bytes([head[0], head[1]]) % 500;
    let mut builder = Response::builder().status(status);
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let exchange = Exchange {
        request_time: base,
        response_time: base + Duration::from_secs(u64::from(head[2] % 8)),
        authorized: head[2] & 0x80 != 0,
    };
    Some((parts, exchange))
}

/// The HTTP/1.1 framing guard: its verdict and output do not depend on how the bytes are split into
/// reads, and a stream it accepts is passed on byte for byte. A head the express lane may answer in its
/// place (`Scanner::plain_head`) is one the scanner passes unchanged and after which it stands between requests.
pub fn framing(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let _ = framing::check_head(input);
    if let Some(len) = Scanner::new(2048, 16).plain_head(input) {
        let mut scanner = Scanner::new(2048, 16);
        let mut out = BytesMut::new();
        scanner.feed(&input[..len], &mut out);
        assert_eq!(scanner.violation(), None, "a plain head was refused");
        assert_eq!(&out[..], &input[..len], "a plain head was changed");
        assert!(scanner.between_requests(), "a plain head announced a body");
    }
    let whole = scan_in_pieces(input, input.len().max(1));
    let pieces = scan_in_pieces(input, usize::from(split % 7) + 1);
    assert_eq!(whole, pieces, "the verdict depends on how reads are split");
    let (out, violation) = whole;
    if violation.is_none() {
        assert_eq!(out, input, "an accepted stream was changed");
    }
}

fn scan_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, Option<framing::Violation>) {
    let mut scanner = Scanner::new(2048, 16);
    let mut out = BytesMut::new();
    for chunk in input.chunks(piece) {
        scanner.feed(chunk, &mut out);
    }
    scanner.eof(&mut out);
    (out.to_vec(), scanner.violation())
}

/// `invalidate::jwt_subject`, the user an avatar change names (the `sub` of its bearer JWT, unverified: the
/// proxy acts on it only after Cloudreve accepted the request). The first byte picks the mode:
///
/// - even: the rest is an arbitrary `Authorization` value. Whenever a subject comes out, it is a canonical
///   avatar id, the value is `Bearer ` and three dot-separated segments with a payload of at most
///   `MAX_CONFIRMATION_SIZE`, and the payload is a JSON object whose `sub` is that id (RFC 7519 §7.2, read as
///   Cloudreve's Go does: base64url, an object, the last of repeated members).
/// - odd: the rest is a `sub` (its length in the next byte) and another claim's value, built into a
///   well-formed token: the subject is found exactly when it is a canonical avatar id.
pub fn jwt_sub(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        jwt_sub_of_any_header(rest);
    } else {
        jwt_sub_of_a_built_token(rest);
    }
}

fn jwt_sub_of_any_header(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return; // hyper never hands over such a value
    };
    let Some(sub) = invalidate::jwt_subject(&value) else {
        return;
    };
    assert!(
        AvatarKey::from_path_segment(&sub).is_some(),
        "non-canonical sub {sub:?}"
    );
    let text = value.to_str().expect("a subject from an unreadable value");
    let token = text
        .strip_prefix("Bearer ")
        .expect("no Bearer scheme")
        .trim();
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "not three JWT segments: {token:?}");
    assert!(
        segments[1].len() <= MAX_CONFIRMATION_SIZE,
        "payload too large"
    );
    assert_eq!(
        reference_sub(segments[1]).as_deref(),
        Some(sub.as_str()),
        "not the payload's sub: {token:?}"
    );
}

/// The slow, obvious reading of a JWT payload's `sub`: base64url with padding tolerated (RFC 7515 §2), a JSON
/// object (RFC 7519 §7.2), its members read as Go's `encoding/json` reads them for Cloudreve: the last `sub`
/// wins, and other members' values are skipped without failing on bad UTF-8 (Go replaces it).
fn reference_sub(payload: &str) -> Option<String> {
    use serde::Deserializer as _;
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let mut reader = serde_json::Deserializer::from_slice(&json);
    let sub = reader.deserialize_map(LastSub).ok()?;
    reader.end().ok()?;
    sub
}

/// Visits a JSON object only, keeping its last `sub`.
struct LastSub;

impl<'de> serde::de::Visitor<'de> for LastSub {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut sub = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "sub" {
                sub = Some(map.next_value::<String>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(sub)
    }
}

fn jwt_sub_of_a_built_token(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (sub, other) = rest.split_at(usize::from(len).min(rest.len()));
    let (sub, other) = (
        String::from_utf8_lossy(sub).into_owned(),
        String::from_utf8_lossy(other).into_owned(),
    );
    let claims = serde_json::json!({
        "token_type": "access",
        "other": other,
        "sub": sub,
        "exp": 1_745_655_578,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let value = HeaderValue::try_from(format!("Bearer eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln"))
        .expect("base64url is a valid header value");
    let expected = AvatarKey::from_path_segment(&sub).map(|key| key.as_str().to_owned());
    assert_eq!(
        invalidate::jwt_subject(&value),
        expected,
        "sub {sub:?} in {claims}"
    );
}
