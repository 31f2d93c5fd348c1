//! HTTP/1.1 request framing, checked on the raw bytes before hyper parses them, so that no message whose
//! length two parsers could read differently is ever served (RFC 9112 §6.3, §11.2 request smuggling).
//!
//! The proxy sits behind a load balancer that reuses connections: if the two disagree on where a request
//! ends, the rest of one client's bytes becomes another request. hyper is lenient where RFC 9112 allows it
//! to be (a bare LF ends a line; `Content-Length` with `Transfer-Encoding` is read as chunked; repeated equal
//! `Content-Length`s are merged; `gzip, chunked` is accepted), and a lenient backend is exactly what a
//! smuggling attack needs. [`FramingGuard`] sits between the socket and hyper, holds back each request head
//! until it has seen all of it, and lets it through only if it is unambiguous:
//!
//! - every line ends in CRLF: no bare LF, no bare CR (RFC 9112 §2.2), no obs-fold (§5.2);
//! - at most one `Content-Length`, a plain decimal (RFC 9110 §8.6), and never with `Transfer-Encoding`
//!   (RFC 9112 §6.3 lets a server reject this; it must close the connection either way);
//! - `Transfer-Encoding` only as exactly one `chunked` (§6.1: the proxy decodes no other coding, and
//!   forwarding one it dropped would corrupt the body), and only in HTTP/1.1;
//! - exactly one `Host` in HTTP/1.1, at most one in HTTP/1.0 (§3.2: MUST answer 400), and that one a host
//!   (`host::valid`: RFC 9110 §7.2 `uri-host [":" port]`, strictly).
//!
//! A head that fails is never given to hyper: in its place hyper gets a line it answers with `400` (or a head
//! it answers with `431` when the head is too large), then end of stream, so the connection closes after
//! that answer (§9.6: its state is unknown). The body framing of accepted heads is followed (length or
//! chunks, §7.1) so the next head is found where hyper will look for it; a chunked body that breaks the
//! grammar makes the read fail, which aborts the request and closes the connection. An HTTP/2 preface
//! turns the guard off: HTTP/2 frames every message itself, and the request filter holds its field lists to
//! the same rules with the same code ([`check_http2`]).
//!
//! Because it sees each head whole before hyper, the guard is also where the express lane (`express.rs`)
//! answers a [`Scanner::plain_head`] request beside hyper, through a [`Shortcut`], when hyper has nothing in
//! progress.

mod guard;
mod scanner;
mod shortcut;

pub use guard::{FramingGuard, HeadLimits};
pub use scanner::Scanner;
pub use shortcut::{Answer, Shortcut};

use http::Uri;
use http::header::{self, HeaderMap};

use crate::host;

/// What hyper is given in place of a rejected head: not a request line (a NUL is not a token), so it answers
/// `400 Bad Request` and closes.
pub(crate) const REJECT_400: &[u8] = b"\0\r\n\r\n";

/// The HTTP/2 connection preface starts with this "request line" (RFC 9113 §3.4).
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";

/// Why a request head or body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A LF without the CR before it (RFC 9112 §2.2).
    BareLf,
    /// A CR without a LF after it (RFC 9112 §2.2).
    BareCr,
    /// A field line starting with whitespace: a folded line (RFC 9112 §5.2).
    ObsFold,
    /// A field line without a colon, or whitespace before the colon (RFC 9112 §5.1).
    MalformedField,
    /// More than one `Content-Length` line, or a list in one.
    DuplicateContentLength,
    /// A `Content-Length` that is not a plain decimal number.
    InvalidContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3).
    LengthAndTransferEncoding,
    /// A `Transfer-Encoding` other than exactly one `chunked`, or one in HTTP/1.0 (RFC 9112 §6.1).
    TransferEncoding,
    /// No `Host` in HTTP/1.1, or more than one (RFC 9112 §3.2).
    Host,
    /// A `Host` value that is not a host (RFC 9110 §7.2; see `host::valid`).
    InvalidHost,
    /// An HTTP/2 `host` field that differs from `:authority` (RFC 9113 §8.3.1).
    HostMismatch,
    /// An HTTP/2 preface after an HTTP/1.1 request.
    LatePreface,
    /// The head is larger than `server.max_request_head_size`.
    HeadTooLarge,
    /// The chunked body breaks the grammar of RFC 9112 §7.1.
    Chunk,
}

impl Violation {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BareLf => "bare-lf",
            Self::BareCr => "bare-cr",
            Self::ObsFold => "obs-fold",
            Self::MalformedField => "malformed-field",
            Self::DuplicateContentLength => "duplicate-content-length",
            Self::InvalidContentLength => "invalid-content-length",
            Self::LengthAndTransferEncoding => "content-length-with-transfer-encoding",
            Self::TransferEncoding => "transfer-encoding",
            Self::Host => "host",
            Self::InvalidHost => "invalid-host",
            Self::HostMismatch => "host-mismatch",
            Self::LatePreface => "late-http2-preface",
            Self::HeadTooLarge => "head-too-large",
            Self::Chunk => "chunk",
        }
    }
}

/// How the body after an accepted head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// Chunked (RFC 9112 §7.1).
    Chunked,
    /// The HTTP/2 preface: the rest is HTTP/2.
    Http2,
}

/// Checks one complete request head (request line, field lines, and the empty line), known to use CRLF
/// only, and says how its body is framed.
pub fn check_head(head: &[u8]) -> Result<Framing, Violation> {
    let mut lines = lines(head);
    let request_line = lines.next().unwrap_or_default();
    if request_line == H2_PREFACE_LINE {
        return Ok(Framing::Http2);
    }
    let protocol = if request_line.ends_with(b" HTTP/1.1") {
        Protocol::Http11
    } else {
        Protocol::Http10
    };
    let mut fields = FieldCounts::default();
    for line in lines.take_while(|line| !line.is_empty()) {
        fields.add(line)?;
    }
    fields.framing(protocol)
}

/// The guard's rules for the field list of an HTTP/2 request, as hyper hands it over, by the same table
/// (`FieldCounts`) with HTTP/2's differences (RFC 9113 §8.2.2, §8.3.1): `Transfer-Encoding` is malformed
/// in any form (h2 refuses it first, like the other connection-specific fields), `Host` may be absent
/// (`:authority` names the host), and a `host` that differs from `:authority` is malformed. h2 itself
/// refuses a `Content-Length` that is not a number, or two that differ; a repeated equal one, an empty one,
/// two `host` fields and an invalid host are refused here.
pub fn check_http2(uri: &Uri, headers: &HeaderMap) -> Result<(), Violation> {
    let mut fields = FieldCounts::default();
    for (name, value) in headers {
        fields.field(name.as_str().as_bytes(), value.as_bytes())?;
    }
    fields.framing(Protocol::Http2)?;
    match (uri.authority(), headers.get(header::HOST)) {
        (Some(authority), Some(host))
            if !authority
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes()) =>
        {
            Err(Violation::HostMismatch)
        }
        _ => Ok(()),
    }
}

/// Whose framing rules a request's fields are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.0 (and anything but HTTP/1.1 on a request line): `Host` optional, no chunked coding.
    Http10,
    /// HTTP/1.1: exactly one `Host`; chunked is the one transfer coding.
    Http11,
    /// HTTP/2: `Host` optional, no `Transfer-Encoding` at all.
    Http2,
}

/// The lines of `head` split at each LF, a CR before it dropped; after the last LF, the rest. Found with
/// `memchr`: a browser's head is hundreds of bytes, and this runs for every request.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let bytes = rest?;
        let line = match memchr::memchr(b'\n', bytes) {
            Some(lf) => {
                rest = Some(&bytes[lf + 1..]);
                &bytes[..lf]
            }
            None => {
                rest = None;
                bytes
            }
        };
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// What the framing decision needs from the field lines.
#[derive(Default)]
struct FieldCounts {
    content_length: Option<u64>,
    content_lengths: usize,
    transfer_encodings: usize,
    hosts: usize,
}

impl FieldCounts {
    /// One HTTP/1.1 field line; the whitespace around its value is not part of it (RFC 9112 §5.1).
    fn add(&mut self, line: &[u8]) -> Result<(), Violation> {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(Violation::ObsFold);
        }
        let colon = memchr::memchr(b':', line).ok_or(Violation::MalformedField)?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.is_empty() || name.ends_with(b" ") || name.ends_with(b"\t") {
            return Err(Violation::MalformedField);
        }
        self.field(name, value)
    }

    /// One field, by name and value, whatever the protocol carried it.
    fn field(&mut self, name: &[u8], value: &[u8]) -> Result<(), Violation> {
        // The length first: most names are none of the three.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                self.content_lengths += 1;
                self.content_length = Some(decimal(value).ok_or(Violation::InvalidContentLength)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.transfer_encodings += 1;
                if !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(Violation::TransferEncoding);
                }
            }
            4 if name.eq_ignore_ascii_case(b"host") => {
                self.hosts += 1;
                if !host::valid(value) {
                    return Err(Violation::InvalidHost);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn framing(&self, protocol: Protocol) -> Result<Framing, Violation> {
        let http11 = protocol == Protocol::Http11;
        if self.hosts > 1 || (http11 && self.hosts == 0) {
            return Err(Violation::Host);
        }
        if self.content_lengths > 1 {
            return Err(Violation::DuplicateContentLength);
        }
        match (self.content_length, self.transfer_encodings) {
            (Some(_), 1..) => Err(Violation::LengthAndTransferEncoding),
            (_, 2..) => Err(Violation::TransferEncoding),
            // Chunked is HTTP/1.1's alone (RFC 9112 §6.1, RFC 9113 §8.2.2).
            (None, 1) if !http11 => Err(Violation::TransferEncoding),
            (None, 1) => Ok(Framing::Chunked),
            (length, _) => Ok(Framing::Length(length.unwrap_or(0))),
        }
    }
}

/// `1*DIGIT` (RFC 9110 §8.6), no sign, no list; `None` past `u64`.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_field_must_hold_a_host() {
        let head = |version: &str, host: &str| {
            check_head(format!("GET / HTTP/{version}\r\nHost:{host}\r\n\r\n").as_bytes())
        };
        assert_eq!(head("1.1", " a/b"), Err(Violation::InvalidHost));
        assert_eq!(head("1.0", " a b"), Err(Violation::InvalidHost));
        assert_eq!(head("1.1", " user@a"), Err(Violation::InvalidHost));
        // The whitespace around a value is not part of it (RFC 9112 §5.1).
        assert_eq!(
            head("1.1", "\t cloud.example:8080 "),
            Ok(Framing::Length(0))
        );
        assert_eq!(head("1.1", ""), Ok(Framing::Length(0)));
    }

    fn h2(authority: Option<&str>, fields: &[(&str, &str)]) -> Result<(), Violation> {
        let uri: Uri = match authority {
            Some(authority) => format!("http://{authority}/x").parse().unwrap(),
            None => "/x".parse().unwrap(),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        check_http2(&uri, &headers)
    }

    #[test]
    fn http2_field_lists_follow_the_guards_table() {
        assert_eq!(h2(Some("a.example"), &[]), Ok(()));
        assert_eq!(h2(None, &[]), Ok(()), "no host at all is HTTP/1.0's case");
        assert_eq!(h2(None, &[("host", "a.example")]), Ok(()));
        assert_eq!(h2(Some("a.example"), &[("host", "A.Example")]), Ok(()));
        assert_eq!(h2(Some("a"), &[("content-length", "5")]), Ok(()));
        for (fields, violation) in [
            (&[("host", "a"), ("host", "a")][..], Violation::Host),
            (&[("host", "a/b")], Violation::InvalidHost),
            (
                &[("content-length", "1"), ("content-length", "1")],
                Violation::DuplicateContentLength,
            ),
            (&[("content-length", "")], Violation::InvalidContentLength),
            (
                &[("content-length", "1, 1")],
                Violation::InvalidContentLength,
            ),
            (
                &[("transfer-encoding", "chunked")],
                Violation::TransferEncoding,
            ),
            (
                &[("content-length", "1"), ("transfer-encoding", "chunked")],
                Violation::LengthAndTransferEncoding,
            ),
        ] {
            assert_eq!(h2(None, fields), Err(violation), "{fields:?}");
        }
        assert_eq!(
            h2(Some("a.example"), &[("host", "b.example")]),
            Err(Violation::HostMismatch)
        );
    }

    #[test]
    fn lines_split_at_each_lf_and_drop_one_cr_before_it() {
        for input in [
            &b""[..],
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\n\n",
            b"a\r\r\nb\rc\n\r",
            b"\r\n",
            b"x\n",
        ] {
            let expected: Vec<&[u8]> = input
                .split(|&b| b == b'\n')
                .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
                .collect();
            assert_eq!(lines(input).collect::<Vec<_>>(), expected, "{input:?}");
        }
    }
}
