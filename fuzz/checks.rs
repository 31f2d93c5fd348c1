//! The properties the fuzz targets check, one function per target, each taking arbitrary bytes and panicking
//! when a property fails. Shared by the `cargo fuzz` targets (`fuzz_targets/`, libFuzzer, nightly) and the
//! seeded random run on stable that CI executes (`tests/hostile_fuzz.rs`), so both check the same things.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use cloudreve_edge::cache::policy::{self, AvatarKey, Exchange, Limits};
use cloudreve_edge::framing::{self, Scanner};
use cloudreve_edge::route::{self, AVATAR_PREFIX, NoCache, Route};
use http::{HeaderName, HeaderValue, Method, Response, Uri};

/// `route::classify`: never panics; an avatar key is exactly the path segment, canonical, and only for
/// `GET`/`HEAD` with a falsy `nocache`; every avatar-path `GET`/`HEAD` is either cached or bypassed.
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
    let cacheable_method = method == Method::GET || method == Method::HEAD;
    match route::classify(method, &uri) {
        Route::Avatar(key) => {
            assert!(cacheable_method, "{method} reached the cache");
            assert_eq!(
                uri.path(),
                format!("{AVATAR_PREFIX}{}", key.as_str()),
                "key is not the path"
            );
            assert!(AvatarKey::from_path_segment(key.as_str()).is_some());
            assert_eq!(NoCache::parse(uri.query()), NoCache::False);
        }
        Route::AvatarBypass(_) => {
            assert!(cacheable_method && uri.path().starts_with(AVATAR_PREFIX));
        }
        Route::Pass => assert!(!cacheable_method || !uri.path().starts_with(AVATAR_PREFIX)),
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
};

/// `cache::policy::admit` on an arbitrary response head: never panics, is deterministic, and never admits
/// what a shared avatar cache must not hold.
pub fn admit(data: &[u8]) {
    let Some((parts, exchange)) = response_from(data) else {
        return;
    };
    let decision = policy::admit(&parts, exchange, &LIMITS);
    assert_eq!(
        decision,
        policy::admit(&parts, exchange, &LIMITS),
        "not deterministic"
    );
    let Ok(freshness) = decision else {
        return;
    };
    let status = parts.status.as_u16();
    assert!(matches!(status, 200 | 301 | 302 | 404), "stored a {status}");
    assert!(
        !parts.headers.contains_key(http::header::SET_COOKIE),
        "stored a Set-Cookie"
    );
    let varies = parts.headers.get_all(http::header::VARY).iter();
    assert!(
        varies
            .into_iter()
            .all(|v| v.as_bytes().trim_ascii().is_empty()),
        "stored a Vary"
    );
    if status == 200 {
        let image = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes().trim_ascii_start());
        assert!(
            image.is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case(b"image/")),
            "stored a non-image 200"
        );
    }
    assert!(!freshness.fresh_for.is_zero(), "stored already stale");
    if status == 404 {
        assert!(
            freshness.fresh_for <= LIMITS.negative_ttl,
            "404 kept past negative_ttl"
        );
    }
    for value in parts.headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            panic!("stored with an unreadable Cache-Control");
        };
        if value.contains('"') {
            continue; // quoted strings may hide anything; the unit tests cover them
        }
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            let name = directive.split('=').next().unwrap_or("").trim();
            assert!(
                !matches!(name, "no-store" | "private" | "no-cache"),
                "stored despite {value:?}"
            );
        }
    }
    if let Some(length) = parts.headers.get(http::header::CONTENT_LENGTH) {
        if let Ok(length) = length.to_str().unwrap_or("").trim().parse::<u64>() {
            assert!(
                length <= LIMITS.max_object_size as u64,
                "stored past max_object_size"
            );
        }
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
/// reads, and a stream it accepts is passed on byte for byte.
pub fn framing(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let _ = framing::check_head(input);
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
