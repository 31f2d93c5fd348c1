//! An access event as one line of bytes, in the `text` or `json` layout of the rest of the log (the
//! tracing-subscriber formats), written into a buffer the caller reuses: no allocation per line.

use std::cell::Cell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Version;

/// What one access line says.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// When the event is written.
    pub at: SystemTime,
    /// Client address.
    pub client: SocketAddr,
    /// Request method.
    pub method: &'a str,
    /// Request path, without the query.
    pub path: &'a str,
    /// Protocol the client spoke.
    pub version: Version,
    /// Response status code.
    pub status: u16,
    /// What the cache did (`hit`, `miss`, ... or `-`): one of the fixed labels, written unescaped.
    pub cache: &'static str,
    /// Time to the upstream's response head, when the request went upstream.
    pub upstream: Option<Duration>,
    /// Body bytes sent.
    pub bytes: u64,
    /// Whether the whole body was sent.
    pub complete: bool,
    /// Time from the request head to the end of the response.
    pub duration: Duration,
}

/// Appends the `text` line: `<time>  INFO access: client=... method=... path="..." ...`, newline included.
pub fn text(out: &mut Vec<u8>, fields: &Fields<'_>) {
    timestamp(out, fields.at);
    out.extend_from_slice(b"  INFO access: client=");
    address(out, fields.client);
    out.extend_from_slice(b" method=");
    out.extend_from_slice(fields.method.as_bytes());
    out.extend_from_slice(b" path=");
    quoted(out, fields.path, Escape::Debug);
    out.extend_from_slice(b" version=");
    out.extend_from_slice(version(fields.version).as_bytes());
    out.extend_from_slice(b" status=");
    integer(out, u64::from(fields.status));
    out.extend_from_slice(b" cache=\"");
    out.extend_from_slice(fields.cache.as_bytes());
    out.push(b'"');
    if let Some(upstream) = fields.upstream {
        out.extend_from_slice(b" upstream_ms=");
        millis(out, upstream);
    }
    out.extend_from_slice(b" bytes=");
    integer(out, fields.bytes);
    out.extend_from_slice(b" complete=");
    out.extend_from_slice(if fields.complete { b"true" } else { b"false" });
    out.extend_from_slice(b" duration_ms=");
    millis(out, fields.duration);
    out.push(b'\n');
}

/// Appends the `json` line: one object with the event's fields flattened, as the rest of the JSON log.
pub fn json(out: &mut Vec<u8>, fields: &Fields<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, fields.at);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"client\":\"");
    address(out, fields.client);
    out.extend_from_slice(b"\",\"method\":");
    quoted(out, fields.method, Escape::Json);
    out.extend_from_slice(b",\"path\":");
    quoted(out, fields.path, Escape::Json);
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(version(fields.version).as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    integer(out, u64::from(fields.status));
    out.extend_from_slice(b",\"cache\":\"");
    out.extend_from_slice(fields.cache.as_bytes());
    out.push(b'"');
    if let Some(upstream) = fields.upstream {
        out.extend_from_slice(b",\"upstream_ms\":");
        millis(out, upstream);
    }
    out.extend_from_slice(b",\"bytes\":");
    integer(out, fields.bytes);
    out.extend_from_slice(b",\"complete\":");
    out.extend_from_slice(if fields.complete { b"true" } else { b"false" });
    out.extend_from_slice(b",\"duration_ms\":");
    millis(out, fields.duration);
    out.extend_from_slice(b",\"target\":\"access\"}\n");
}

/// `a.b.c.d:port`, or `[v6]:port`, as `Display` writes them; an IPv4 address assembled in place and
/// copied once (the formatting machinery, or a copy per part, cost more than the rest of the line).
fn address(out: &mut Vec<u8>, address: SocketAddr) {
    let SocketAddr::V4(v4) = address else {
        let _ = write!(out, "{address}");
        return;
    };
    // "255.255.255.255:65535" at most.
    let mut text = [0u8; 21];
    let mut len = 0;
    for (i, byte) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if byte >= 100 {
            text[len] = b'0' + byte / 100;
            len += 1;
        }
        if byte >= 10 {
            text[len] = b'0' + byte / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + byte % 10;
        len += 1;
    }
    text[len] = b':';
    len += 1;
    let port = v4.port();
    let digits = match port {
        10_000.. => 5,
        1_000.. => 4,
        100.. => 3,
        10.. => 2,
        _ => 1,
    };
    let mut rest = port;
    for slot in text[len..len + digits].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    len += digits;
    out.extend_from_slice(&text[..len]);
}

fn version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn integer(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Milliseconds with three decimals (microsecond precision), without going through floating point.
fn millis(out: &mut Vec<u8>, duration: Duration) {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    integer(out, micros / 1000);
    let mut fraction = [b'.'; 4];
    fraction[1..].copy_from_slice(&padded_digits::<3>(micros % 1000));
    out.extend_from_slice(&fraction);
}

/// The last `WIDTH` decimal digits of `value`, zero-padded.
fn padded_digits<const WIDTH: usize>(value: u64) -> [u8; WIDTH] {
    let mut digits = [b'0'; WIDTH];
    let mut rest = value;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits
}

/// `value` in decimal, zero-padded to `width` digits.
fn padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(value).as_bytes();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

#[derive(Clone, Copy)]
enum Escape {
    /// Rust's `Debug` for strings, as tracing's text format writes string fields.
    Debug,
    /// JSON (RFC 8259 §7).
    Json,
}

/// The bytes [`quoted`] escapes: `"`, `\\` and the control characters, in both layouts.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0x7f] = true;
    table
};

fn quoted(out: &mut Vec<u8>, value: &str, escape: Escape) {
    out.push(b'"');
    if !value.bytes().any(|byte| ESCAPED[usize::from(byte)]) {
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    for &byte in value.as_bytes() {
        match byte {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', byte]),
            0x00..=0x1f | 0x7f => match escape {
                Escape::Debug => {
                    let _ = write!(out, "\\u{{{byte:x}}}");
                }
                Escape::Json => {
                    let _ = write!(out, "\\u{byte:04x}");
                }
            },
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// `YYYY-MM-DDTHH:MM:SS`: the part of a timestamp that changes once a second.
type Second = [u8; 19];

thread_local! {
    /// The second the thread last wrote a timestamp in, and its text.
    static LAST_SECOND: Cell<(u64, Second)> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 in UTC with microseconds, `2026-12-02T18:24:04.103291Z`, as tracing-subscriber writes it. The
/// date and time of day are worked out once a second per thread.
fn timestamp(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (last, mut text) = LAST_SECOND.get();
    if last != seconds {
        text = second(seconds);
        LAST_SECOND.set((seconds, text));
    }
    // "YYYY-MM-DDTHH:MM:SS.ffffffZ", copied once.
    let mut whole = [0u8; 27];
    whole[..19].copy_from_slice(&text);
    whole[19] = b'.';
    whole[20..26].copy_from_slice(&padded_digits::<6>(u64::from(since.subsec_micros())));
    whole[26] = b'Z';
    out.extend_from_slice(&whole);
}

/// The date and time of day of a second since the epoch, as [`Second`].
fn second(seconds: u64) -> Second {
    let mut text = Vec::with_capacity(19);
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    padded(&mut text, year, 4);
    text.push(b'-');
    padded(&mut text, month, 2);
    text.push(b'-');
    padded(&mut text, day, 2);
    text.push(b'T');
    padded(&mut text, of_day / 3600, 2);
    text.push(b':');
    padded(&mut text, of_day / 60 % 60, 2);
    text.push(b':');
    padded(&mut text, of_day % 60, 2);
    // Four-digit years: until 9999.
    text.try_into().unwrap_or([b'9'; 19])
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (H. Hinnant's `civil_from_days`, for days
/// on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fields<'static> {
        Fields {
            at: UNIX_EPOCH + Duration::new(1_796_235_844, 103_291_000),
            client: "127.0.0.1:39236".parse().unwrap(),
            method: "GET",
            path: "/api/v4/user/avatar/lpua",
            version: Version::HTTP_11,
            status: 200,
            cache: "miss",
            upstream: Some(Duration::from_nanos(968_505)),
            bytes: 91,
            complete: true,
            duration: Duration::from_nanos(1_983_809),
        }
    }

    #[test]
    fn text_line_reads_like_the_rest_of_the_log() {
        let mut out = Vec::new();
        text(&mut out, &sample());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-02T18:24:04.103291Z  INFO access: client=127.0.0.1:39236 method=GET \
             path=\"/api/v4/user/avatar/lpua\" version=HTTP/1.1 status=200 cache=\"miss\" \
             upstream_ms=0.968 bytes=91 complete=true duration_ms=1.983\n"
        );
    }

    #[test]
    fn json_line_is_one_object_serde_reads_back() {
        let mut out = Vec::new();
        let mut fields = sample();
        fields.upstream = None;
        fields.path = "/a\"b\\c\u{1}d";
        json(&mut out, &fields);
        assert_eq!(out.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "timestamp": "2026-12-02T18:24:04.103291Z",
                "level": "INFO",
                "client": "127.0.0.1:39236",
                "method": "GET",
                "path": "/a\"b\\c\u{1}d",
                "version": "HTTP/1.1",
                "status": 200,
                "cache": "miss",
                "bytes": 91,
                "complete": true,
                "duration_ms": 1.983,
                "target": "access",
            })
        );
    }

    #[test]
    fn text_escapes_as_debug_does() {
        let mut out = Vec::new();
        let path = "/a\"b\\c\u{1}d\u{7f}é";
        quoted(&mut out, path, Escape::Debug);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{path:?}"));
    }

    #[test]
    fn addresses_read_as_display_writes_them() {
        for address in [
            "127.0.0.1:39236",
            "10.20.255.0:0",
            "[::1]:8080",
            "[2001:db8::7]:1",
        ] {
            let address: SocketAddr = address.parse().unwrap();
            let mut out = Vec::new();
            super::address(&mut out, address);
            assert_eq!(String::from_utf8(out).unwrap(), address.to_string());
        }
    }

    #[test]
    fn timestamps_within_a_second_and_across_seconds_are_right() {
        let base = UNIX_EPOCH + Duration::from_secs(1_796_235_844);
        for (at, text) in [
            (base, "2026-12-02T18:24:04.000000Z"),
            (
                base + Duration::from_micros(999_999),
                "2026-12-02T18:24:04.999999Z",
            ),
            (base + Duration::from_secs(1), "2026-12-02T18:24:05.000000Z"),
            (
                base - Duration::from_secs(86_400),
                "2026-12-01T18:24:04.000000Z",
            ),
            (
                base + Duration::from_micros(5),
                "2026-12-02T18:24:04.000005Z",
            ),
        ] {
            let mut out = Vec::new();
            timestamp(&mut out, at);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn milliseconds_have_three_decimals() {
        for (micros, text) in [
            (0, "0.000"),
            (5, "0.005"),
            (999, "0.999"),
            (1_000, "1.000"),
            (12_345_678, "12345.678"),
        ] {
            let mut out = Vec::new();
            millis(&mut out, Duration::from_micros(micros));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn padding_matches_format() {
        for value in [0, 7, 42, 999, 1000, 123_456, 999_999, 1_000_000, 12_345_678] {
            for width in [2, 3, 4, 6] {
                let mut out = Vec::new();
                padded(&mut out, value, width);
                assert_eq!(String::from_utf8(out).unwrap(), format!("{value:0width$}"));
            }
        }
    }

    #[test]
    fn dates_match_the_calendar() {
        // Day 0, a leap day, the turn of a century that is a leap year, and today.
        for (days, date) in [
            (0, (1970, 1, 1)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (20_789, (2026, 12, 2)),
            (47_540, (2100, 2, 28)),
            (47_541, (2100, 3, 1)),
        ] {
            assert_eq!(civil_from_days(days), date, "day {days}");
        }
    }
}
