//! Cache poisoning and cache keys: what an attacker can put in a request or what the upstream marks as
//! personal never changes what other clients get from the cache. (The plain storability rules are in
//! `caching.rs`; these are the adversarial cases.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::raw_h2::{H2Outcome, RawH2};
use crate::support::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const A: &str = "/api/v4/user/avatar/imgA";
const B: &str = "/api/v4/user/avatar/imgB";

/// An upstream that resolves ids the way Cloudreve does (percent-decoded, case-sensitive) and, like a
/// poisonable origin, reflects the request headers attackers use into a cacheable image response.
async fn reflecting_upstream() -> FakeCloudreve {
    FakeCloudreve::start(|request: Request<Incoming>| async move {
        let path = request.uri().path();
        let Some(raw_id) = path.strip_prefix("/api/v4/user/avatar/") else {
            return json_response(r#"{"code":0}"#);
        };
        let id = percent_decode(raw_id);
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) || id.is_empty() {
            return json_response(r#"{"code":40001,"msg":"Parameter error"}"#);
        }
        let reflected: Vec<String> = [
            "host",
            "x-forwarded-host",
            "x-original-url",
            "x-rewrite-url",
            "x-forwarded-scheme",
            "x-http-method-override",
            "cookie",
            "authorization",
        ]
        .iter()
        .filter_map(|name| {
            request
                .headers()
                .get(*name)
                .map(|v| format!("{name}={v:?}"))
        })
        .collect();
        Response::builder()
            .header("content-type", "image/png")
            .header("cache-control", "public, max-age=86400")
            .body(full(format!("avatar of {id}; {}", reflected.join("; "))))
            .unwrap()
    })
    .await
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(empty()).unwrap()).await
}

const ATTACK_HEADERS: &[(&str, &str)] = &[
    ("host", "evil.example"),
    ("x-forwarded-host", "evil.example"),
    ("x-original-url", B),
    ("x-rewrite-url", B),
    ("x-forwarded-scheme", "nothttps"),
    ("x-http-method-override", "DELETE"),
];

#[tokio::test]
async fn unkeyed_headers_never_choose_the_entry_or_reach_the_key() {
    let upstream = reflecting_upstream().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    // The attacker fills A with rewriting headers: the entry is A's, under A's key only.
    let attack = get_with(&proxy.url(A), ATTACK_HEADERS).await;
    assert_eq!(attack.x_cache(), "MISS");
    assert!(String::from_utf8_lossy(&attack.body).starts_with("avatar of imgA"));
    // B is untouched: its first request is a miss with B's bytes.
    let b = get(&proxy.url(B)).await;
    assert_eq!(b.x_cache(), "MISS");
    assert!(
        String::from_utf8_lossy(&b.body).starts_with("avatar of imgB"),
        "{:?}",
        b.body
    );
    // Requests with other attack headers still get the same stored A: the headers are not part of the key.
    let again = get_with(
        &proxy.url(A),
        &[("x-original-url", "/api/v4/user/avatar/imgC")],
    )
    .await;
    assert_eq!(again.x_cache(), "HIT");
    assert_eq!(again.body, attack.body);
    assert_eq!(proxy.proxy.cache().usage().0, 2);
}

#[tokio::test]
async fn a_header_reflected_by_the_origin_is_only_as_safe_as_the_origin() {
    // Documents the boundary: the key is the id alone because Cloudreve's avatar answer depends on the id
    // alone (upstream-contract.md). A response that says it varies is refused, whatever it varies on.
    let upstream = FakeCloudreve::start(|request: Request<Incoming>| async move {
        let host = request.headers().get("x-forwarded-host").cloned();
        Response::builder()
            .header("content-type", "image/png")
            .header("cache-control", "public, max-age=86400")
            .header("vary", "X-Forwarded-Host")
            .body(full(format!("for {host:?}")))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let poisoned = get_with(&proxy.url(A), &[("x-forwarded-host", "evil.example")]).await;
    assert!(
        poisoned.cache_status().contains("detail=vary"),
        "{}",
        poisoned.cache_status()
    );
    let victim = get(&proxy.url(A)).await;
    assert_eq!(victim.body, "for None");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn personal_or_uncacheable_answers_are_never_served_to_another_client() {
    // Each answer is marked public with a long max-age, and still must not be stored.
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "set-cookie",
            &[
                ("content-type", "image/png"),
                ("set-cookie", "session=victim"),
            ],
        ),
        (
            "set-cookie on a redirect",
            &[("location", "https://gravatar/x"), ("set-cookie", "s=1")],
        ),
        (
            "private",
            &[("content-type", "image/png"), ("cache-control", "private")],
        ),
        (
            "private field",
            &[
                ("content-type", "image/png"),
                ("cache-control", "private=\"x-user\""),
            ],
        ),
        (
            "no-store",
            &[("content-type", "image/png"), ("cache-control", "no-store")],
        ),
        (
            "json",
            &[("content-type", "application/json; charset=utf-8")],
        ),
        ("no content type", &[]),
        ("vary star", &[("content-type", "image/png"), ("vary", "*")]),
        (
            "vary accept-encoding",
            &[("content-type", "image/png"), ("vary", "Accept-Encoding")],
        ),
        (
            "vary cookie",
            &[("content-type", "image/png"), ("vary", "Cookie")],
        ),
    ];
    for (case, headers) in cases {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let status = if headers.iter().any(|(n, _)| n == "location") {
            302
        } else {
            200
        };
        let upstream = FakeCloudreve::start(move |request: Request<Incoming>| {
            let headers = headers.clone();
            async move {
                let who = request
                    .headers()
                    .get("authorization")
                    .map_or("anonymous".to_owned(), |v| v.to_str().unwrap().to_owned());
                let mut response = Response::builder()
                    .status(status)
                    .header("cache-control", "public, max-age=86400");
                for (name, value) in &headers {
                    response = response.header(name.as_str(), value.as_str());
                }
                response
                    .body(full(format!("personal bytes of {who}")))
                    .unwrap()
            }
        })
        .await;
        let proxy = TestProxy::start(&upstream.url()).await;
        let first = get_with(&proxy.url(A), &[("authorization", "Bearer victim")]).await;
        assert_eq!(first.x_cache(), "MISS", "{case}");
        let second = get(&proxy.url(A)).await;
        assert_eq!(
            second.x_cache(),
            "MISS",
            "{case}: {}",
            second.cache_status()
        );
        assert_eq!(second.body, "personal bytes of anonymous", "{case}");
        assert_eq!(upstream.count(), 2, "{case}");
        assert_eq!(proxy.proxy.cache().usage().0, 0, "{case}");
    }
}

#[tokio::test]
async fn odd_avatar_paths_never_hit_or_fill_another_users_entry() {
    let upstream = reflecting_upstream().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let a = get(&proxy.url(A)).await;
    let b = get(&proxy.url(B)).await;
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"));
    let odd = [
        // Cloudreve decodes these to imgA or imgB: forwarded, never stored under any key.
        "/api/v4/user/avatar/img%41",
        "/api/v4/user/avatar/%69%6d%67%42",
        "/api/v4/user/avatar/imgA%00",
        "/api/v4/user/avatar/imgA/",
        "/api/v4/user/avatar/imgA%2F..%2FimgB",
        "/api/v4/user/avatar/./imgB",
        "/api/v4/user/avatar/../avatar/imgB",
        "/api/v4/user/avatar/imgA;imgB",
        "/api/v4/user/avatar/imgA%3Fnocache=0",
        "/api/v4/user//avatar/imgA",
        "/API/v4/user/avatar/imgA",
        "/api/v4/user/avatar/imgA?nocache=1",
        "/api/v4/user/avatar/imgA?nocache=yes",
    ];
    for target in odd {
        let reply = get(&proxy.url(target)).await;
        assert_ne!(reply.x_cache(), "HIT", "{target}: {}", reply.cache_status());
        assert!(
            !reply.cache_status().contains("stored"),
            "{target}: {}",
            reply.cache_status()
        );
    }
    // Case is part of a hashid: another user, another key, never A's entry.
    let upper = get(&proxy.url("/api/v4/user/avatar/IMGA")).await;
    assert_eq!(upper.x_cache(), "MISS");
    assert!(String::from_utf8_lossy(&upper.body).starts_with("avatar of IMGA"));
    // The two stored entries are unchanged, each with its own bytes.
    let (a2, b2) = (get(&proxy.url(A)).await, get(&proxy.url(B)).await);
    assert_eq!((a2.x_cache(), b2.x_cache()), ("HIT", "HIT"));
    assert_eq!((a2.body, b2.body), (a.body, b.body));
    assert_eq!(proxy.proxy.cache().usage().0, 3, "imgA, imgB and IMGA only");
}

#[tokio::test]
async fn nocache_tricks_follow_cloudreves_first_value() {
    let upstream = reflecting_upstream().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    get(&proxy.url(A)).await;
    for (query, expected) in [
        ("?nocache=1&nocache=0", "BYPASS"),
        ("?nocache=0&nocache=1", "HIT"),
        ("?nocache=%31", "BYPASS"),
        ("?NOCACHE=1", "HIT"),
        ("?nocache=1;x&nocache=0", "HIT"),
        ("?key=1&nocache=true", "BYPASS"),
    ] {
        let reply = get(&proxy.url(&format!("{A}{query}"))).await;
        assert_eq!(
            reply.x_cache(),
            expected,
            "{query}: {}",
            reply.cache_status()
        );
    }
}

/// A minimal origin over raw TCP that answers each request head at once, before reading its body, then
/// reads the body its `Content-Length` announces (as a real server that answers early does). It records every
/// head it parsed. A `GET` is answered with the target it parsed, cacheable for everyone.
async fn early_answering_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer_early(stream, Arc::clone(&seen)));
        }
    });
    (url, heads)
}

async fn answer_early(mut stream: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    loop {
        let Some(head) = read_head(&mut stream).await else {
            return;
        };
        heads.lock().unwrap().push(head.clone());
        let mut request_line = head.split(' ');
        let (method, target) = (
            request_line.next().unwrap(),
            request_line.next().unwrap_or(""),
        );
        let body = format!("target={target}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncache-control: public, max-age=600\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            if method == "HEAD" { "" } else { &body }
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if skip_body(&mut stream, &head).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_head_with_a_body_leaves_no_length_on_the_upstream_connection() {
    // #12: a HEAD forwarded with its client's `Content-Length` and no body left the upstream reading the next
    // request on the pooled connection as that body, so an answer for another target was stored as
    // /assets/app.js for everyone.
    let (url, heads) = early_answering_upstream().await;
    let proxy = TestProxy::start(&url).await;
    let head = raw_exchange(
        proxy.addr,
        b"HEAD /assets/x HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let get = raw_exchange(
        proxy.addr,
        b"GET /assets/app.js HTTP/1.1\r\nHost: edge\r\nX-Note: GET /evil HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(get.ends_with("\r\n\r\ntarget=/assets/app.js"), "{get}");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads[0].starts_with("HEAD /assets/x HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        !heads[0].to_ascii_lowercase().contains("content-length"),
        "a HEAD with no body announces none: {heads:?}"
    );
    assert!(
        heads[1].starts_with("GET /assets/app.js HTTP/1.1\r\n"),
        "{heads:?}"
    );
    let stored = get_with(&proxy.url("/assets/app.js"), &[]).await;
    assert_eq!(
        (stored.x_cache(), stored.body.as_ref()),
        ("HIT", &b"target=/assets/app.js"[..])
    );
}

/// Fields a client may send that no key covers: none may reach the upstream on a request the cache sends.
const UNKEYED: &[(&str, &str)] = &[
    ("user-agent", "browser/1"),
    ("x-forwarded-host", "evil.example"),
    ("x-original-url", "/evil"),
    ("x-rewrite-url", "/evil"),
    ("x-forwarded-scheme", "nothttps"),
    ("x-http-method-override", "DELETE"),
    ("cookie", "session=victim"),
    ("accept", "text/evil"),
    ("accept-encoding", "gzip"),
    ("accept-language", "de"),
    ("origin", "https://evil.example"),
    ("x-custom", "1"),
    ("range", "bytes=0-1"),
    ("if-none-match", "\"client\""),
    ("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT"),
    ("pragma", "no-cache"),
];

/// What a request the cache sends may carry: where it is for and who asks, the proxy's forwarding fields,
/// and a revalidation's stored validators.
const CARRIED: &[&str] = &[
    "host",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "via",
    "if-none-match",
    "if-modified-since",
];

async fn send_with(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(empty()).unwrap()).await
}

#[tokio::test]
async fn fills_revalidations_refreshes_and_heads_carry_only_what_the_key_covers() {
    // #12: every request the cache sends is built from what the key covers, so no unkeyed field a client
    // sends can change an answer stored for everyone.
    let upstream = FakeCloudreve::start(|request: Request<Incoming>| async move {
        if !request.uri().path().starts_with("/assets/") {
            return cloudreve_avatar(&request);
        }
        let unchanged = request
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"");
        Response::builder()
            .status(if unchanged { 304 } else { 200 })
            .header(
                "cache-control",
                "public, max-age=10, stale-while-revalidate=10",
            )
            .header("etag", "\"v1\"")
            .body(full(if unchanged { "" } else { "asset" }))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let asset = proxy.url("/assets/a.js");
    assert_eq!(send_with("GET", &asset, UNKEYED).await.x_cache(), "MISS");
    let head = send_with("HEAD", &proxy.url("/assets/h.js"), UNKEYED).await;
    assert!(
        head.cache_status().contains("detail=head"),
        "{}",
        head.cache_status()
    );
    proxy.clock.advance(Duration::from_secs(15));
    assert_eq!(send_with("GET", &asset, UNKEYED).await.x_cache(), "STALE");
    eventually("the background refresh", || upstream.count() == 3).await;
    eventually("the refresh stored", || {
        proxy
            .proxy
            .cache()
            .fresh("/assets/a.js", proxy.clock.now())
            .is_some()
    })
    .await;
    proxy.clock.advance(Duration::from_secs(30));
    assert_eq!(
        send_with("GET", &asset, UNKEYED).await.x_cache(),
        "REVALIDATED"
    );
    let avatar = send_with("GET", &proxy.url("/api/v4/user/avatar/img1"), UNKEYED).await;
    assert_eq!(avatar.x_cache(), "MISS");

    let received = upstream.received();
    let what: Vec<(String, &str)> = received
        .iter()
        .map(|r| (r.method.to_string(), r.target.as_str()))
        .collect();
    assert_eq!(
        what,
        [
            ("GET".to_owned(), "/assets/a.js"),
            ("HEAD".to_owned(), "/assets/h.js"),
            ("GET".to_owned(), "/assets/a.js"),
            ("GET".to_owned(), "/assets/a.js"),
            ("GET".to_owned(), "/api/v4/user/avatar/img1"),
        ],
        "fill, HEAD, background refresh, revalidation, avatar fill"
    );
    for (index, seen) in received.iter().enumerate() {
        for name in seen.headers.keys() {
            assert!(
                CARRIED.contains(&name.as_str()),
                "request {index} carried {name}"
            );
        }
        assert_eq!(
            seen.header("user-agent"),
            Some("browser/1"),
            "request {index}"
        );
        assert_ne!(
            seen.header("if-none-match"),
            Some("\"client\""),
            "request {index}"
        );
        assert_ne!(
            seen.header("if-modified-since"),
            Some("Sat, 01 Jan 2000 00:00:00 GMT"),
            "request {index}"
        );
    }
    for revalidation in &received[2..4] {
        assert_eq!(revalidation.header("if-none-match"), Some("\"v1\""));
    }
}

/// With `key_includes_host` the key holds the host and the target apart, and a `Host` is a host: one that
/// would run into the target (`a/assets` + `/assets/x` spells what `a` + `/assets/assets/x` does) is refused
/// over HTTP/1.1 and HTTP/2 alike, and never fills the entry another host's clients get.
#[tokio::test]
async fn a_host_that_runs_into_the_target_is_refused_and_never_poisons_another_hosts_entry() {
    let upstream = FakeCloudreve::start(|request: Request<Incoming>| async move {
        let host = request.headers().get("host").cloned();
        Response::builder()
            .header("cache-control", "public, max-age=600")
            .body(full(format!("for {host:?}")))
            .unwrap()
    })
    .await;
    let mut config = test_config(&upstream.url());
    config.cache.rules[1].key_includes_host = true;
    let proxy = TestProxy::start_with(config).await;

    let attack = get_with(&proxy.url("/assets/x"), &[("host", "a/assets")]).await;
    assert_eq!(attack.status, 400, "{}", attack.cache_status());
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut h2 = RawH2::start(stream).await;
    let fields = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/assets/x"),
        ("host", "a/assets"),
    ];
    assert!(
        matches!(h2.request(&fields, b"").await, H2Outcome::Response(400, _)),
        "over HTTP/2"
    );
    assert_eq!(upstream.count(), 0, "the attack reached nothing");

    let victim = get_with(&proxy.url("/assets/assets/x"), &[("host", "a")]).await;
    assert_eq!(victim.x_cache(), "MISS");
    assert_eq!(victim.body, r#"for Some("a")"#);
    assert_eq!(proxy.proxy.cache().usage().0, 1, "the victim's entry only");
}
