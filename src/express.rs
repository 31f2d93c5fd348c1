//! The express lane: a plain HTTP/1.1 `GET` of an avatar the cache holds fresh, answered from its raw head
//! on the connection, without hyper building a request and a response for it.
//!
//! The framing guard offers each whole request head without a body to [`Express`] at a moment hyper has
//! nothing in progress on the connection (`framing/shortcut.rs`). It takes only requests whose answer
//! nothing but the target decides: `GET`, HTTP/1.1, an origin-form target without a query, and header
//! fields from the list in `harmless` only: no conditionals, ranges, `Cache-Control`, `Authorization`,
//! `Expect`, `Connection` other than `keep-alive`, or anything unknown (a `Host` that is not a host never gets
//! here: the guard refuses its head, as it does on the full path). Everything else, and every lookup
//! that does not find a fresh avatar, goes to hyper and the full path (`proxy`), which answers the same
//! way, only slower. The bytes are the full path's (one renderer for both, `proxy/hit.rs`), and so are the
//! metrics and the access event (`proxy/express.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::RuleKind;
use crate::framing::{Answer, Shortcut};
use crate::proxy::Proxy;

/// Most header fields a head may have to be taken (a browser sends about fifteen); more go to hyper.
const MAX_FIELDS: usize = 32;

/// The longest name in [`harmless`]'s list.
const LONGEST_HARMLESS: usize = 18;

/// The express lane of one proxy.
pub struct Express {
    proxy: Arc<Proxy>,
    /// `GET ` and the avatar rule's prefix: what every request the lane takes starts with (the rules are
    /// fixed for the life of the process). `None` without an avatar rule: the lane takes nothing.
    request_start: Option<Vec<u8>>,
}

impl Express {
    /// The lane for `proxy`'s cache.
    pub fn new(proxy: Arc<Proxy>) -> Arc<Self> {
        let request_start = proxy
            .rules()
            .iter()
            .find(|rule| rule.kind == RuleKind::Avatar)
            .map(|rule| [b"GET ", rule.prefix.as_bytes()].concat());
        Arc::new(Self {
            proxy,
            request_start,
        })
    }
}

impl Shortcut for Express {
    fn may_answer(&self, start: &[u8]) -> bool {
        // Cuts short the checks of every request that cannot be a plain avatar `GET` (pass-through, assets,
        // `nocache`, ...): the prefix, then a target that ends at a space, before any `?`.
        let prefix = self.request_start.as_deref().unwrap_or_default();
        let Some(id) = start.strip_prefix(prefix).filter(|_| !prefix.is_empty()) else {
            return false;
        };
        memchr::memchr2(b' ', b'?', id).is_some_and(|end| id[end] == b' ')
    }

    fn answer(&self, head: &[u8], client: SocketAddr) -> Option<Answer> {
        let target = plain_get_target(head)?;
        self.proxy.answer_plain_get(target, client)
    }
}

/// The target of `head` when the lane may take it: see the module docs.
fn plain_get_target(head: &[u8]) -> Option<&str> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    if !request.parse(head).ok()?.is_complete() {
        return None;
    }
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let target = request
        .path
        .filter(|t| t.starts_with('/') && !t.contains('?'))?;
    request.headers.iter().all(harmless).then_some(target)
}

/// Whether a field changes nothing in the answer to a hit. Anything not listed sends the request down the
/// full path, so a field the full path learns to read is never missed here. Names compare without case.
fn harmless(field: &httparse::Header<'_>) -> bool {
    let name = field.name.as_bytes();
    let mut lower = [0; LONGEST_HARMLESS];
    let Some(lower) = lower.get_mut(..name.len()) else {
        return false;
    };
    for (to, from) in lower.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    match &*lower {
        // HTTP/1.1 keeps the connection open anyway; anything else (close, upgrade, a hop-by-hop field
        // list) is for the full path.
        b"connection" => field.value.eq_ignore_ascii_case(b"keep-alive"),
        b"host"
        | b"user-agent"
        | b"accept"
        | b"accept-encoding"
        | b"accept-language"
        | b"referer"
        | b"cookie"
        | b"origin"
        | b"dnt"
        | b"priority"
        | b"sec-fetch-site"
        | b"sec-fetch-mode"
        | b"sec-fetch-dest"
        | b"sec-fetch-user"
        | b"sec-ch-ua"
        | b"sec-ch-ua-mobile"
        | b"sec-ch-ua-platform"
        | b"sec-gpc"
        | b"x-forwarded-for"
        | b"x-forwarded-proto"
        | b"x-forwarded-host"
        | b"x-forwarded-port"
        | b"x-forwarded-server"
        | b"x-amzn-trace-id"
        | b"cf-connecting-ip"
        | b"cf-ipcountry"
        | b"cf-ray"
        | b"cf-visitor"
        | b"cdn-loop"
        | b"true-client-ip"
        | b"via"
        | b"x-real-ip"
        | b"x-request-id"
        | b"forwarded"
        | b"traceparent"
        | b"tracestate" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn only_gets_under_the_avatar_rule_are_looked_at() {
        let lane = Express::new(Proxy::new(&Config::default()));
        assert!(lane.may_answer(b"GET /api/v4/user/avatar/lpua HTTP/1.1\r\n"));
        for other in [
            &b"GET /api/v4/site/config HTTP/1.1\r\n"[..],
            b"HEAD /api/v4/user/avatar/lpua HTTP/1.1\r\n",
            b"GET /api/v4/user/ava",
            b"GET /api/v4/user/avatar/lpua?nocache=1 HTTP/1.1\r\n",
            b"GET /api/v4/user/avatar/lpua",
            b"PRI * HTTP/2.0\r\n",
        ] {
            assert!(
                !lane.may_answer(other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        let mut config = Config::default();
        config
            .cache
            .rules
            .retain(|rule| rule.kind != RuleKind::Avatar);
        let without = Express::new(Proxy::new(&config));
        assert!(!without.may_answer(b"GET /api/v4/user/avatar/lpua HTTP/1.1\r\n"));
    }

    fn target(head: &str) -> Option<&str> {
        plain_get_target(head.as_bytes())
    }

    #[test]
    fn takes_plain_gets_with_harmless_fields_only() {
        let browser = "GET /api/v4/user/avatar/lpua HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\n\
            Accept: image/avif,image/webp,*/*\r\nAccept-Encoding: gzip\r\nReferer: https://a/\r\n\
            Sec-Fetch-Dest: image\r\nConnection: Keep-Alive\r\n\r\n";
        assert_eq!(target(browser), Some("/api/v4/user/avatar/lpua"));
        for refused in [
            "HEAD /a HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET /a?nocache=0 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/a HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nCache-Control: no-store\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nX-Unknown: 1\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nX-Forwarded-For-Something-Longer: 1\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nHos: a\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(target(refused), None, "{refused:?}");
        }
        let every = [
            "Host",
            "User-Agent",
            "Accept",
            "Accept-Encoding",
            "Accept-Language",
            "Referer",
            "Cookie",
            "Origin",
            "DNT",
            "Priority",
            "Sec-Fetch-Site",
            "Sec-Fetch-Mode",
            "Sec-Fetch-Dest",
            "Sec-Fetch-User",
            "Sec-CH-UA",
            "Sec-CH-UA-Mobile",
            "Sec-CH-UA-Platform",
            "Sec-GPC",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Forwarded-Port",
            "X-Forwarded-Server",
            "X-Amzn-Trace-Id",
            "CF-Connecting-IP",
            "CF-IPCountry",
            "CF-Ray",
            "CF-Visitor",
            "CDN-Loop",
            "True-Client-IP",
            "Via",
            "X-Real-IP",
            "X-Request-Id",
            "Forwarded",
            "Traceparent",
            "Tracestate",
        ]
        .map(|name| format!("GET /a HTTP/1.1\r\nHost: a\r\n{name}: 1\r\n\r\n"));
        for head in every {
            assert_eq!(target(&head), Some("/a"), "{head:?}");
        }
        let crowded = format!(
            "GET /a HTTP/1.1\r\n{}\r\n",
            "Host: a\r\n".repeat(MAX_FIELDS + 1)
        );
        assert_eq!(target(&crowded), None);
    }
}
