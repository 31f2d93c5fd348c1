//! A stored response answered from memory, rendered once for both lanes: [`Hit`] lists the header fields in
//! the order an HTTP/1.1 client receives them ([`FIELDS`]); the express lane writes that list as bytes
//! ([`Hit::write_head`]), the full path builds hyper's `HeaderMap` from it ([`Hit::response`]) and hyper
//! writes the two fields it adds itself where the list puts them. The test below serves the same hit
//! through a real hyper connection and through the lane, and compares the bytes.

use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;
use crate::cache::serve::{self, Conditions};
use crate::cache::{CacheStatus, CachedResponse};

/// `Cache-Status` (RFC 9211).
pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// `X-Cache`, for dashboards that predate RFC 9211.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// One field (or, for [`Field::Stored`], the run of fields) of a hit's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The stored fields, in stored order; the full path's are those the client's conditions leave
    /// (`cache::serve`). An empty body's `content-length` is not among them: see [`Field::EmptyLength`].
    Stored,
    /// `Age`, current (RFC 9111 §4.2.3, §5.1).
    Age,
    /// `Cache-Status`: what the cache did (RFC 9211 §2).
    CacheStatus,
    /// `X-Cache`: the same, in one word.
    XCache,
    /// `content-length: 0` for an empty body. hyper skips the stored one and writes this after every field it
    /// was given, except for a 204, which must not carry one (RFC 9110 §8.6), and a 304, which need not.
    EmptyLength,
    /// `Date`, when the stored response has none: hyper adds it last (RFC 9110 §6.6.1).
    Date,
}

/// The order of a hit's fields, the one both writers follow.
pub const FIELDS: [Field; 6] = [
    Field::Stored,
    Field::Age,
    Field::CacheStatus,
    Field::XCache,
    Field::EmptyLength,
    Field::Date,
];

/// A stored response answered at one moment: the entry, the cache clock's `now` (for `Age` and the ttl) and
/// what the cache did. A borrowed view: making one copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    /// The stored response.
    entry: &'a CachedResponse,
    /// The moment it is answered, on the cache clock.
    now: Instant,
    /// What the cache did, with the entry's ttl at `now`.
    status: CacheStatus,
}

impl<'a> Hit<'a> {
    /// `entry` answered at `now`, as `status` says (its ttl is set here, RFC 9211 §2.5).
    pub fn new(entry: &'a CachedResponse, now: Instant, status: CacheStatus) -> Self {
        let status = CacheStatus {
            ttl: Some(entry.signed_ttl(now)),
            ..status
        };
        Self { entry, now, status }
    }

    /// What the cache did, for the access event and the counters.
    pub fn status(&self) -> CacheStatus {
        self.status
    }

    /// The express lane's writer: the whole head of the answer to a plain `GET`, as HTTP/1.1 bytes (status
    /// line, [`FIELDS`], the empty line), the bytes hyper writes for [`Hit::response`].
    pub fn write_head(&self, out: &mut Vec<u8>) {
        write_status_line(self.entry.status, out);
        for field in FIELDS {
            self.write(field, out);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The full path's writer: the answer for a client with `conditions` (the whole entry, or the 304, 412,
    /// 206 or 416 they call for, `cache::serve`), with [`FIELDS`] in its `HeaderMap`.
    pub fn response(&self, conditions: &Conditions) -> Response<Body> {
        let mut response = serve::respond(self.entry, conditions);
        for field in FIELDS {
            self.insert(field, response.headers_mut());
        }
        response
    }

    fn write(&self, field: Field, out: &mut Vec<u8>) {
        match field {
            Field::Stored => self.write_stored(out),
            Field::Age => {
                let mut age = itoa::Buffer::new();
                let age = age.format(self.entry.age(self.now));
                write_field(out, header::AGE.as_str(), age.as_bytes());
            }
            Field::CacheStatus => {
                out.extend_from_slice(CACHE_STATUS.as_str().as_bytes());
                out.extend_from_slice(b": ");
                self.status.write_value(out);
                out.extend_from_slice(b"\r\n");
            }
            Field::XCache => {
                let x_cache = self.status.x_cache();
                write_field(out, X_CACHE.as_str(), x_cache.as_bytes());
            }
            Field::EmptyLength if self.empty_length() => {
                write_field(out, header::CONTENT_LENGTH.as_str(), b"0");
            }
            Field::Date if !self.entry.headers.contains_key(&header::DATE) => {
                let date = httpdate::fmt_http_date(SystemTime::now());
                write_field(out, header::DATE.as_str(), date.as_bytes());
            }
            Field::EmptyLength | Field::Date => {}
        }
    }

    fn insert(&self, field: Field, headers: &mut HeaderMap) {
        match field {
            Field::Age => {
                let age = HeaderValue::from(self.entry.age(self.now));
                headers.insert(header::AGE, age);
            }
            Field::CacheStatus => {
                headers.insert(CACHE_STATUS.clone(), self.status.header_value());
            }
            Field::XCache => {
                headers.insert(X_CACHE.clone(), self.status.x_cache());
            }
            // The stored fields are the map's first already (`serve::respond` built it from them, for this
            // client); hyper writes the other two itself, after every field in the map, in this order.
            Field::Stored | Field::EmptyLength | Field::Date => {}
        }
    }

    /// The stored field lines, in one copy (two around an empty body's `content-length`).
    fn write_stored(&self, out: &mut Vec<u8>) {
        if self.entry.body.is_empty() {
            let (before, after) = self.entry.headers.lines_without(&header::CONTENT_LENGTH);
            out.extend_from_slice(before);
            out.extend_from_slice(after);
        } else {
            out.extend_from_slice(self.entry.headers.lines());
        }
    }

    /// Whether the head ends with `content-length: 0`, as hyper ends it for an empty body.
    fn empty_length(&self) -> bool {
        let status = self.entry.status;
        self.entry.body.is_empty()
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::NOT_MODIFIED
    }
}

/// The status line as hyper writes it: a status with no reason phrase of its own gets `<none>`.
fn write_status_line(status: StatusCode, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one field line, `name: value` and CRLF.
fn write_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::cache::policy::Freshness;
    use crate::cache::status::Outcome;
    use crate::config::Config;

    /// Bounds every wait on the in-process connection.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// The longest response head read back.
    const MAX_HEAD: usize = 1 << 16;

    const DATE: &str = "Sun, 29 Nov 2026 12:00:00 GMT";

    /// An entry stored at `at` from an upstream answer with `fields` and `body`, fresh for a minute.
    fn stored(
        status: u16,
        fields: &[(&str, &str)],
        body: &'static [u8],
        at: Instant,
    ) -> CachedResponse {
        let mut builder = Response::builder().status(status);
        for (name, value) in fields {
            builder = builder.header(*name, *value);
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        let limits = Config::default().cache.rules[0].limits;
        let freshness = Freshness::fresh(Duration::from_secs(60));
        let body = Bytes::from_static(body);
        CachedResponse::new(&parts, body, freshness, &limits, &HeaderMap::new(), at)
    }

    /// What a hyper HTTP/1.1 connection writes for `response` to `GET /a`: its head (to the empty line) and
    /// its body.
    async fn through_hyper(response: Response<Body>) -> (String, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(MAX_HEAD);
        let response = Mutex::new(Some(response));
        let service = service_fn(move |_| {
            let response = response.lock().unwrap().take().expect("one request");
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(server), service);
        let exchange = async move {
            client
                .write_all(b"GET /a HTTP/1.1\r\nHost: edge\r\n\r\n")
                .await
                .unwrap();
            read_response(&mut client).await
            // `client` dropped here: the connection sees the end of the stream and ends.
        };
        let joined = tokio::time::timeout(PATIENCE, async { tokio::join!(connection, exchange) });
        let (served, read) = joined.await.expect("hyper answered in time");
        served.expect("hyper served the response");
        read
    }

    /// One response: the head up to its empty line (at most [`MAX_HEAD`]), then a `content-length` body.
    async fn read_response(client: &mut DuplexStream) -> (String, Vec<u8>) {
        let mut bytes = Vec::new();
        let end = loop {
            if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(bytes.len() < MAX_HEAD, "no end of the head");
            read_some(client, &mut bytes).await;
        };
        let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map_or(0, |n| n.parse().unwrap());
        while bytes.len() < end + length {
            read_some(client, &mut bytes).await;
        }
        (head, bytes.split_off(end))
    }

    async fn read_some(client: &mut DuplexStream, bytes: &mut Vec<u8>) {
        let mut chunk = [0; 4096];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(bytes));
        bytes.extend_from_slice(&chunk[..n]);
    }

    fn through_the_lane(hit: &Hit<'_>) -> String {
        let mut head = Vec::new();
        hit.write_head(&mut head);
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn a_hit_is_the_same_bytes_through_hyper_and_through_the_lane() {
        let at = Instant::now();
        let avatar = [
            ("content-type", "image/png"),
            ("cache-control", "public, max-age=86400"),
            ("date", DATE),
            ("last-modified", DATE),
            ("x-cloudreve-trace", "a1"),
            ("link", "</a>; rel=preload"),
            ("link", "</b>; rel=preload"),
        ];
        let cases = [
            (
                "a 200 with a body",
                stored(200, &avatar, b"\x89PNG\r\n", at),
            ),
            (
                "an empty 404",
                stored(404, &[("content-length", "0"), ("date", DATE)], b"", at),
            ),
            (
                "a 302",
                stored(
                    302,
                    &[("location", "https://gravatar.example/a"), ("date", DATE)],
                    b"",
                    at,
                ),
            ),
            ("no Date stored", stored(200, &avatar[..2], b"png", at)),
        ];
        for (case, entry) in &cases {
            let hit = Hit::new(
                entry,
                at + Duration::from_secs(7),
                CacheStatus::new(Outcome::Hit),
            );
            // hyper and the lane each write the current second into a `Date` they add: the second may turn
            // between the two once, not three times.
            let mut tries = 0;
            let ((full, body), lane) = loop {
                let lane = through_the_lane(&hit);
                let full = through_hyper(hit.response(&Conditions::default())).await;
                tries += 1;
                if full.0 == lane || tries == 3 {
                    break (full, lane);
                }
            };
            assert_eq!(full, lane, "{case}");
            assert_eq!(body, entry.body, "{case}");
            assert!(lane.contains("\r\nage: 7\r\n"), "{case}: {lane}");
            assert!(
                lane.contains("\r\ncache-status: cloudreve-edge; hit; ttl=53\r\n"),
                "{case}: {lane}"
            );
            assert!(lane.contains("\r\ndate: "), "{case}: {lane}");
        }
    }

    #[test]
    fn plain_request_gets_the_whole_entry_with_age() {
        let now = Instant::now();
        let fields = [("content-type", "image/png"), ("last-modified", DATE)];
        let entry = stored(200, &fields, b"0123456789", now);
        let hit = Hit::new(&entry, now, CacheStatus::new(Outcome::Hit));
        let response = hit.response(&Conditions::default());
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::AGE], "0");
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "10");
    }
}
