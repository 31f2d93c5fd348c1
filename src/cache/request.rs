//! The requests the cache itself sends upstream (fills, revalidations, background refreshes, forwarded `HEAD`s),
//! built here and nowhere else, from nothing but what the cache key covers.
//!
//! A stored answer is served to everyone whose request has its key, so the request that fetched it may carry
//! only what the key and the rule account for (RFC 9111 §4.1): the target, `Host`, the fields a stored `Vary`
//! names, and the proxy's own forwarding fields. Anything else a client sent (`X-Forwarded-Host`,
//! `X-Original-URL`, `X-HTTP-Method-Override`, `Cookie`, `Authorization`, ...) could change the upstream's
//! answer without changing the key, and so poison it for every later client. And the request is framed for
//! what it is: no body, so no `Content-Length` or `Transfer-Encoding` of the client's (RFC 9112 §6.3); a
//! `HEAD` that kept its client's `Content-Length: N` left the upstream reading the next request on the
//! connection as that body.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, request};

use super::policy::{self, RuleKind, Validators};

/// What a cache request is for.
#[derive(Debug, Clone, Copy)]
pub enum Purpose<'a> {
    /// The whole current representation, to store (a miss, a background refresh with nothing to
    /// revalidate, a waiter whose fill stored nothing it can use).
    Fetch,
    /// A stored response checked with its validators (RFC 9111 §4.3.1); a `GET`, so a changed
    /// representation comes back whole.
    Revalidate(RuleKind, &'a Validators),
    /// A `HEAD` the cache cannot answer, forwarded so its answer can update the stored `GET` (§4.3.5).
    Head,
}

/// Request fields carried from the client on every cache request besides the `Vary`-nominated ones: where the
/// request is for (`Host`, under the rule's own `key_includes_host` contract), the client software (which a
/// shared answer must not depend on either: an origin that varies on it says so with `Vary`), and the
/// forwarding fields, which [`crate::upstream::Upstream::prepare_request`] then keeps only from a trusted
/// peer and sets itself.
static CARRIED: [&HeaderName; 4] = [
    &header::HOST,
    &header::USER_AGENT,
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The request the cache sends for `client`'s request, for `purpose`: `GET` (or `HEAD`) of the same target,
/// with no body, carrying the [`CARRIED`] fields, the fields named by `keyed` (the `Vary` the cache has
/// seen for this URL; fields nothing stored varies on are not sent, so a first fill stores the answer to a
/// request without them, under a variant that says so), the rule's `fill_fields` (`also`: fields the
/// operator vouches change no answer, such as request ids), and the stored validators when it revalidates.
/// Nothing else of the client's request is kept: not its other fields, body, framing or extensions.
pub fn build(
    client: &request::Parts,
    purpose: Purpose<'_>,
    keyed: &[HeaderName],
    also: &[HeaderName],
) -> request::Parts {
    let method = match purpose {
        Purpose::Head => Method::HEAD,
        Purpose::Fetch | Purpose::Revalidate(..) => Method::GET,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = client.uri.clone();
    // The version the client spoke, for `Via`; the upstream request itself is always HTTP/1.1.
    parts.version = client.version;
    parts.headers = carried(&client.headers, keyed, also);
    if let Purpose::Revalidate(kind, validators) = purpose {
        for (name, value) in policy::revalidation_headers(kind, validators) {
            parts.headers.insert(name, value);
        }
    }
    parts
}

/// The client's lines of the carried, the keyed and the `also` fields, in that order.
fn carried(client: &HeaderMap, keyed: &[HeaderName], also: &[HeaderName]) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(CARRIED.len() + keyed.len() + also.len() + 2);
    for name in CARRIED.into_iter().chain(keyed).chain(also) {
        if headers.contains_key(name) {
            continue;
        }
        for value in client.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Version};

    use super::*;

    /// A client request carrying every kind of field a cache request must not pass on, and a body's framing.
    fn hostile() -> request::Parts {
        let (parts, ()) = Request::head("/assets/app.js?v=1")
            .version(Version::HTTP_2)
            .header("host", "edge.example")
            .header("user-agent", "browser/1")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("accept-language", "de")
            .header("accept-encoding", "gzip")
            .header("content-length", "5")
            .header("transfer-encoding", "chunked")
            .header("expect", "100-continue")
            .header("x-forwarded-host", "evil.example")
            .header("x-original-url", "/evil")
            .header("x-rewrite-url", "/evil")
            .header("x-http-method-override", "DELETE")
            .header("cookie", "session=victim")
            .header("authorization", "Bearer victim")
            .header("if-none-match", "\"client\"")
            .header("range", "bytes=0-1")
            .header("cache-control", "no-cache")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    fn names(parts: &request::Parts) -> Vec<&str> {
        parts.headers.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn a_fetch_carries_the_allow_list_only() {
        let sent = build(&hostile(), Purpose::Fetch, &[], &[]);
        assert_eq!(sent.method, Method::GET);
        assert_eq!(sent.uri, "/assets/app.js?v=1");
        assert_eq!(sent.version, Version::HTTP_2);
        assert_eq!(
            names(&sent),
            ["host", "user-agent", "x-forwarded-for", "x-forwarded-proto"]
        );
        assert_eq!(sent.headers["host"], "edge.example");
    }

    #[test]
    fn a_head_has_no_framing_of_the_clients() {
        let sent = build(&hostile(), Purpose::Head, &[], &[]);
        assert_eq!(sent.method, Method::HEAD);
        for framing in ["content-length", "transfer-encoding", "expect"] {
            assert!(!sent.headers.contains_key(framing), "{framing}");
        }
    }

    #[test]
    fn keyed_fields_travel_with_every_line() {
        let mut client = hostile();
        client
            .headers
            .append(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr"));
        let keyed = [header::ACCEPT_LANGUAGE, header::COOKIE];
        let sent = build(&client, Purpose::Fetch, &keyed, &[]);
        let languages: Vec<_> = sent
            .headers
            .get_all(header::ACCEPT_LANGUAGE)
            .iter()
            .collect();
        assert_eq!(languages, ["de", "fr"]);
        assert_eq!(sent.headers[header::COOKIE], "session=victim");
        assert!(
            !sent.headers.contains_key(header::ACCEPT_ENCODING),
            "not keyed"
        );
        // A keyed field that is also carried is not sent twice.
        let sent = build(&client, Purpose::Fetch, &[header::HOST], &[]);
        assert_eq!(sent.headers.get_all(header::HOST).iter().count(), 1);
    }

    #[test]
    fn the_rules_fill_fields_travel_too() {
        let mut client = hostile();
        client
            .headers
            .insert("x-request-id", HeaderValue::from_static("r-1"));
        let also = [HeaderName::from_static("x-request-id")];
        let sent = build(&client, Purpose::Fetch, &[], &also);
        assert_eq!(sent.headers["x-request-id"], "r-1");
        assert!(!sent.headers.contains_key("x-custom"));
    }

    #[test]
    fn a_revalidation_sends_the_stored_validators_not_the_clients() {
        let validators = Validators {
            etag: Some(HeaderValue::from_static("\"stored\"")),
            last_modified: Some(HeaderValue::from_static("Sat, 01 Jan 2022 00:00:00 GMT")),
        };
        let sent = build(
            &hostile(),
            Purpose::Revalidate(RuleKind::Http, &validators),
            &[],
            &[],
        );
        assert_eq!(sent.method, Method::GET);
        assert_eq!(sent.headers[header::IF_NONE_MATCH], "\"stored\"");
        assert_eq!(
            sent.headers[header::IF_MODIFIED_SINCE],
            "Sat, 01 Jan 2022 00:00:00 GMT"
        );
        assert!(!sent.headers.contains_key(header::RANGE));
        let avatar = build(
            &hostile(),
            Purpose::Revalidate(RuleKind::Avatar, &validators),
            &[],
            &[],
        );
        assert!(!avatar.headers.contains_key(header::IF_NONE_MATCH));
    }
}
