//! The framing scanner: follows HTTP/1.1 message framing through a client's bytes (heads held back until
//! checked, bodies by length or chunks, RFC 9112 §6 and §7.1) and says what hyper may read.

use bytes::BytesMut;

use super::{Framing, REJECT_400, Violation, check_head};

/// Longest chunk-size line (size and extensions) accepted; hyper's own bound is of the same order.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Where the scanner is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a body with this many bytes left.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// HTTP/2: not HTTP/1.1 framing, nothing to check.
    Passthrough,
    /// A head was refused and replaced; nothing more is read.
    Rejected,
    /// A chunked body broke the grammar; the next read fails.
    Broken,
}

/// Position inside a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: extensions up to the CR.
    Extension,
    /// The LF after the size line.
    SizeLf {
        size: u64,
    },
    /// Chunk data left.
    Data(u64),
    /// The CRLF after chunk data.
    DataCr,
    DataLf,
    /// After the last chunk: a trailer field line or the final CRLF.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    /// The LF of the final CRLF.
    EndLf,
}

/// Follows HTTP/1.1 message framing through the client's bytes; see the module docs.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The head being collected, or the current chunk-size or trailer line (for its length bound).
    line: BytesMut,
    /// Largest head accepted.
    max_head: usize,
    /// hyper's field-count limit: a head with one more field makes hyper answer 431.
    max_headers: usize,
    /// Whether a request has been seen (an HTTP/2 preface is only valid first).
    seen_request: bool,
    /// The violation that stopped the scanner, for the log.
    violation: Option<Violation>,
}

impl Scanner {
    /// A scanner for a new connection.
    pub fn new(max_head: usize, max_headers: usize) -> Self {
        Self {
            state: State::Head,
            line: BytesMut::new(),
            max_head,
            max_headers,
            seen_request: false,
            violation: None,
        }
    }

    /// The violation found, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.violation
    }

    /// Takes `input` and appends to `out` what hyper may read: checked heads, body bytes, or a replacement.
    pub fn feed(&mut self, mut input: &[u8], out: &mut BytesMut) {
        while !input.is_empty() {
            let used = match self.state {
                State::Head => match self.whole_head(input, out) {
                    Some(used) => used,
                    None => self.head_bytes(input, out),
                },
                State::Body(left) => self.body_bytes(left, input, out),
                State::Chunked(chunk) => self.chunk_bytes(chunk, input, out),
                State::Passthrough => {
                    out.extend_from_slice(input);
                    input.len()
                }
                State::Rejected | State::Broken => return,
            };
            input = &input[used..];
        }
    }

    /// The client closed: an unfinished head goes to hyper as it is (hyper reports it as incomplete).
    pub fn eof(&mut self, out: &mut BytesMut) {
        if self.state == State::Head {
            out.extend_from_slice(&self.line.split());
        }
    }

    /// Whether reads should fail: the body broke the grammar.
    pub fn is_broken(&self) -> bool {
        self.state == State::Broken
    }

    /// Whether reading has ended (a refused head was replaced).
    pub fn is_done(&self) -> bool {
        self.state == State::Rejected
    }

    /// Whether there is nothing left to check (HTTP/2).
    pub fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// Whether part of a request head has arrived and the rest has not.
    pub fn in_head(&self) -> bool {
        self.state == State::Head && !self.line.is_empty()
    }

    /// Whether the next byte starts a request head: nothing of one is held, no body is under way.
    pub fn between_requests(&self) -> bool {
        self.state == State::Head && self.line.is_empty()
    }

    /// A request was taken out of the stream before it reached the scanner (a [`Scanner::plain_head`]
    /// answered beside hyper): it counts as seen, so an HTTP/2 preface after it is refused as late.
    pub fn skip_answered(&mut self) {
        self.seen_request = true;
    }

    /// The common case, a whole head at the start of `input` with every line ended by CRLF: checked where it
    /// lies and copied once. Anything else (a head split across reads, a bare CR or LF, a head near the size
    /// limit, a leading empty line) returns `None` for `head_bytes`, which also names the violation.
    fn whole_head(&mut self, input: &[u8], out: &mut BytesMut) -> Option<usize> {
        if !self.line.is_empty() {
            return None;
        }
        let (end, _) = crlf_head_at_start(input, self.max_head)?;
        self.admit(&input[..end], out);
        Some(end)
    }

    /// The length of the request head at the start of `input` when the scanner stands between requests and
    /// that head is whole, every line ends in CRLF, it fits the head's size and field limits, [`check_head`]
    /// accepts it and it announces no body: a request whose end the scanner and hyper cannot disagree on,
    /// and that hyper would not refuse for its size, which may be answered without either reading it.
    pub fn plain_head(&self, input: &[u8]) -> Option<usize> {
        if !self.between_requests() {
            return None;
        }
        let (end, lines) = crlf_head_at_start(input, self.max_head)?;
        // The request line and the empty line are not fields.
        let plain = lines - 2 <= self.max_headers
            && matches!(check_head(&input[..end]), Ok(Framing::Length(0)));
        plain.then_some(end)
    }

    /// Takes head bytes up to and including the next LF (or all of `input` without one), checking each as
    /// it comes: a CR must be followed by LF and an LF preceded by CR (RFC 9112 §2.2), and the head may not
    /// outgrow its limit. The bytes are appended to the line once, not one by one.
    fn head_bytes(&mut self, input: &[u8], out: &mut BytesMut) -> usize {
        let end = memchr::memchr(b'\n', input).map_or(input.len(), |i| i + 1);
        let run = &input[..end];
        let mut after_cr = self.line.last() == Some(&b'\r');
        for (i, &byte) in run.iter().enumerate() {
            if after_cr && byte != b'\n' {
                self.reject(Violation::BareCr, out);
                return i + 1;
            }
            if byte == b'\n' && !after_cr {
                self.reject(Violation::BareLf, out);
                return i + 1;
            }
            // At the LF that ends a line, the end of the head is looked for first (below).
            if byte != b'\n' && self.line.len() + i + 1 > self.max_head {
                self.reject(Violation::HeadTooLarge, out);
                return i + 1;
            }
            after_cr = byte == b'\r';
        }
        self.line.extend_from_slice(run);
        if run.last() == Some(&b'\n') {
            if &self.line[..] == b"\r\n" {
                // An empty line before a request line is ignored (RFC 9112 §2.2); hyper skips it too.
                out.extend_from_slice(&self.line);
                self.line.clear();
            } else if self.line.ends_with(b"\r\n\r\n") {
                self.end_head(out);
            } else if self.line.len() > self.max_head {
                self.reject(Violation::HeadTooLarge, out);
            }
        }
        end
    }

    /// The head collected in `line` is complete. The line keeps its capacity for the next head.
    fn end_head(&mut self, out: &mut BytesMut) {
        let line = std::mem::take(&mut self.line);
        self.admit(&line, out);
        if self.state != State::Rejected {
            self.line = line;
            self.line.clear();
        }
    }

    /// A complete head: passed on with the body framing it announces, or refused.
    fn admit(&mut self, head: &[u8], out: &mut BytesMut) {
        let framing = match check_head(head) {
            Ok(Framing::Http2) if self.seen_request => Err(Violation::LatePreface),
            other => other,
        };
        match framing {
            Ok(framing) => {
                self.seen_request = true;
                out.extend_from_slice(head);
                self.state = match framing {
                    Framing::Length(0) => State::Head,
                    Framing::Length(n) => State::Body(n),
                    Framing::Chunked => State::Chunked(Chunk::Size { size: 0, digits: 0 }),
                    Framing::Http2 => State::Passthrough,
                };
            }
            Err(violation) => self.reject(violation, out),
        }
    }

    /// Replaces the refused head with what makes hyper answer it: 431 for size, 400 for everything else.
    fn reject(&mut self, violation: Violation, out: &mut BytesMut) {
        self.violation = Some(violation);
        self.line = BytesMut::new();
        self.state = State::Rejected;
        if violation == Violation::HeadTooLarge {
            out.extend_from_slice(b"GET / HTTP/1.1\r\n");
            for _ in 0..=self.max_headers {
                out.extend_from_slice(b"x:y\r\n");
            }
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(REJECT_400);
        }
    }

    fn body_bytes(&mut self, left: u64, input: &[u8], out: &mut BytesMut) -> usize {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
        out.extend_from_slice(&input[..n]);
        let left = left - n as u64;
        self.state = if left == 0 {
            State::Head
        } else {
            State::Body(left)
        };
        n
    }

    fn chunk_bytes(&mut self, chunk: Chunk, input: &[u8], out: &mut BytesMut) -> usize {
        if let Chunk::Data(left) = chunk {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
            out.extend_from_slice(&input[..n]);
            let left = left - n as u64;
            self.state = State::Chunked(if left == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data(left)
            });
            return n;
        }
        let byte = input[0];
        out.extend_from_slice(&[byte]);
        match next_chunk_state(chunk, byte, &mut self.line) {
            Some(Chunk::EndLf) if byte == b'\n' => self.state = State::Head,
            Some(next) => self.state = State::Chunked(next),
            None => {
                self.violation = Some(Violation::Chunk);
                self.state = State::Broken;
            }
        }
        1
    }
}

/// A whole head at the start of `input` whose lines all end in CRLF, within `max_head` bytes: its length and
/// its number of lines (the empty one included). A leading empty line is left to `head_bytes`.
fn crlf_head_at_start(input: &[u8], max_head: usize) -> Option<(usize, usize)> {
    if input.starts_with(b"\r\n") {
        return None;
    }
    crlf_head(&input[..input.len().min(max_head)])
}

/// The length of the head at the start of `bytes` if it ends there (an empty line) and every line of it ends
/// with CRLF (no LF without a CR before it, and no CR without an LF after it), and its number of lines, the
/// empty one included.
fn crlf_head(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut lines = 0;
    for lf in memchr::memchr_iter(b'\n', bytes) {
        if lf == 0 || bytes[lf - 1] != b'\r' {
            return None;
        }
        lines += 1;
        if bytes[..=lf].ends_with(b"\r\n\r\n") {
            // Each LF has its own CR before it; as many CRs as LFs leaves no CR alone.
            let head = &bytes[..=lf];
            return (memchr::memchr_iter(b'\r', head).count() == lines).then_some((lf + 1, lines));
        }
    }
    None
}

/// One byte of chunked framing outside chunk data; `None` breaks the grammar. `Some(EndLf)` after a LF
/// means the body is complete. `line` counts the bytes of the current size or trailer line.
fn next_chunk_state(chunk: Chunk, byte: u8, line: &mut BytesMut) -> Option<Chunk> {
    line.extend_from_slice(&[byte]);
    if line.len() > MAX_CHUNK_LINE {
        return None;
    }
    let next = match (chunk, byte) {
        (Chunk::Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
            // 16 hex digits fill a u64; more would overflow (hyper refuses them too).
            if digits >= 16 {
                return None;
            }
            let digit = u64::from((byte as char).to_digit(16)?);
            Chunk::Size {
                size: size << 4 | digit,
                digits: digits + 1,
            }
        }
        (Chunk::Size { size, digits: 1.. }, b'\r') => Chunk::SizeLf { size },
        // The size was kept in the line; read it back.
        (Chunk::Extension, b'\r') => Chunk::SizeLf {
            size: chunk_size(line)?,
        },
        (Chunk::Size { digits: 1.., .. }, b';' | b' ' | b'\t') | (Chunk::Extension, _)
            if byte != b'\n' =>
        {
            Chunk::Extension
        }
        (Chunk::SizeLf { size: 0 } | Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
        (Chunk::SizeLf { size }, b'\n') => Chunk::Data(size),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
        (Chunk::TrailerStart, b'\r') | (Chunk::EndLf, b'\n') => Chunk::EndLf,
        (Chunk::TrailerLine, b'\r') => Chunk::TrailerLf,
        (Chunk::TrailerStart | Chunk::TrailerLine, _) if byte != b'\n' => Chunk::TrailerLine,
        _ => return None,
    };
    if matches!(
        next,
        Chunk::Data(_) | Chunk::TrailerStart | Chunk::Size { digits: 0, .. }
    ) || (chunk == Chunk::EndLf)
    {
        line.clear();
    }
    Some(next)
}

/// The hex size at the start of a size line with extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(input: &[u8]) -> (Vec<u8>, Scanner) {
        let mut scanner = Scanner::new(1024, 10);
        let mut out = BytesMut::new();
        scanner.feed(input, &mut out);
        (out.to_vec(), scanner)
    }

    fn scan_bytewise(input: &[u8]) -> (Vec<u8>, Scanner) {
        let mut scanner = Scanner::new(1024, 10);
        let mut out = BytesMut::new();
        for byte in input {
            scanner.feed(&[*byte], &mut out);
        }
        (out.to_vec(), scanner)
    }

    fn head(fields: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\nHost: a\r\n{fields}\r\n").into_bytes()
    }

    fn plain_head(input: &[u8], max_head: usize, max_headers: usize) -> Option<usize> {
        Scanner::new(max_head, max_headers).plain_head(input)
    }

    #[test]
    fn plain_head_is_a_whole_bodiless_head_the_scanner_passes_unchanged() {
        let get = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut pipelined = get.to_vec();
        pipelined.extend_from_slice(b"GET /b HTTP/1.1\r\n");
        assert_eq!(plain_head(get, 1024, 10), Some(get.len()));
        assert_eq!(plain_head(&pipelined, 1024, 10), Some(get.len()));
        for refused in [
            &b"GET /a HTTP/1.1\r\nHost: a\r\n"[..],
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
            b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /a HTTP/1.1\nHost: a\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\n x\r\n\r\n",
            b"GET /a HTTP/1.1\r\n\r\n",
            b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(
                plain_head(refused, 1024, 10),
                None,
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
        // Past the size or field limit it is the scanner's and hyper's, which answer 431.
        assert_eq!(plain_head(get, get.len() - 1, 10), None);
        assert_eq!(plain_head(get, get.len(), 1), Some(get.len()));
        let two = b"GET /a HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        assert_eq!(plain_head(two, 1024, 1), None);
        // What it accepts, the scanner passes unchanged and ends between requests.
        let (out, scanner) = scan(&pipelined[..get.len()]);
        assert_eq!(out, get);
        assert!(scanner.between_requests());
        // Only between requests: inside a body the same bytes are body.
        let (_, in_body) = scan(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 99\r\n\r\n");
        assert_eq!(in_body.plain_head(get), None);
    }

    #[test]
    fn plain_requests_pass_unchanged_and_pipelined() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /n HTTP/1.1\r\nHost: a\r\n\r\n";
        for (out, scanner) in [scan(input), scan_bytewise(input)] {
            assert_eq!(out, input);
            assert_eq!(scanner.violation(), None);
            assert_eq!(scanner.state, State::Head);
        }
    }

    #[test]
    fn chunked_body_is_followed_to_its_end() {
        let input = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n";
        for (out, scanner) in [scan(input), scan_bytewise(input)] {
            assert_eq!(out, input);
            assert_eq!(scanner.violation(), None);
            assert_eq!(scanner.state, State::Head);
        }
    }

    #[test]
    fn ambiguous_heads_are_replaced() {
        for (fields, violation) in [
            (
                "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
                Violation::LengthAndTransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n",
                Violation::LengthAndTransferEncoding,
            ),
            (
                "Content-Length: 1\r\nContent-Length: 1\r\n",
                Violation::DuplicateContentLength,
            ),
            ("Content-Length: 1, 1\r\n", Violation::InvalidContentLength),
            ("Content-Length: +1\r\n", Violation::InvalidContentLength),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                Violation::TransferEncoding,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                Violation::TransferEncoding,
            ),
            (
                "Transfer-Encoding: identity\r\n",
                Violation::TransferEncoding,
            ),
            ("X-A: 1\r\n 2\r\n", Violation::ObsFold),
            ("X-A : 1\r\n", Violation::MalformedField),
            ("Host: b\r\n", Violation::Host),
        ] {
            let (out, scanner) = scan(&head(fields));
            assert_eq!(out, REJECT_400, "{fields:?}");
            assert_eq!(scanner.violation(), Some(violation), "{fields:?}");
        }
    }

    #[test]
    fn bare_line_ends_are_refused() {
        let (out, scanner) = scan(b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n");
        assert_eq!(
            (out.as_slice(), scanner.violation()),
            (REJECT_400, Some(Violation::BareLf))
        );
        let (out, scanner) = scan(b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n");
        assert_eq!(
            (out.as_slice(), scanner.violation()),
            (REJECT_400, Some(Violation::BareCr))
        );
    }

    #[test]
    fn only_heads_of_crlf_lines_are_taken_whole() {
        let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET";
        let crlf_head_end = |bytes: &[u8]| crlf_head(bytes).map(|(end, _)| end);
        assert_eq!(crlf_head_end(good), Some(good.len() - 3));
        assert_eq!(crlf_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        for bad in [
            &b"a\rb\r\n\r\n"[..],
            b"a\nb\r\n\r\n",
            b"a\r\r\n\n\r\n\r\n",
            b"a\n\r\r\n\r\n",
            b"\ra\r\n\r\n",
        ] {
            assert_eq!(crlf_head_end(bad), None, "{bad:?}");
            // Whole or byte by byte, such a head is refused the same way.
            let (whole, bytewise) = (scan(bad), scan_bytewise(bad));
            assert_eq!(whole.0, bytewise.0, "{bad:?}");
            assert_eq!(whole.1.violation(), bytewise.1.violation(), "{bad:?}");
            assert!(whole.1.violation().is_some(), "{bad:?}");
        }
    }

    #[test]
    fn http11_needs_exactly_one_host_and_http10_none_or_one() {
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\n\r\n").1.violation(),
            Some(Violation::Host)
        );
        assert_eq!(scan(b"GET / HTTP/1.0\r\n\r\n").1.violation(), None);
        let te_in_10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            scan(te_in_10).1.violation(),
            Some(Violation::TransferEncoding)
        );
    }

    #[test]
    fn head_over_the_limit_becomes_one_hyper_answers_431() {
        let input = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(2000)
        );
        let (out, scanner) = scan(input.as_bytes());
        assert_eq!(scanner.violation(), Some(Violation::HeadTooLarge));
        assert_eq!(out.windows(5).filter(|w| w == b"x:y\r\n").count(), 11);
    }

    #[test]
    fn leading_empty_lines_pass() {
        let input = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan(input).0, input);
    }

    #[test]
    fn http2_preface_turns_checking_off_only_first() {
        let input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04";
        let (out, scanner) = scan(input);
        assert_eq!(out, input);
        assert!(scanner.is_passthrough());
        let late = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPRI * HTTP/2.0\r\n\r\n";
        assert_eq!(scan(late).1.violation(), Some(Violation::LatePreface));
    }

    #[test]
    fn broken_chunks_stop_the_stream() {
        for body in [
            "zz\r\n",
            "-1\r\n",
            "0x3\r\n",
            "3\nabc",
            "3\r\nabcd\r\n",
            "11111111111111111\r\n",
            ";\r\n",
        ] {
            let mut input = head("Transfer-Encoding: chunked\r\n");
            input.extend_from_slice(body.as_bytes());
            let (_, scanner) = scan(&input);
            assert!(scanner.is_broken(), "{body:?}");
            assert_eq!(scanner.violation(), Some(Violation::Chunk), "{body:?}");
        }
    }

    #[test]
    fn check_head_reads_the_framing() {
        assert_eq!(
            check_head(&head("Content-Length: 42\r\n")),
            Ok(Framing::Length(42))
        );
        assert_eq!(
            check_head(&head("transfer-encoding: Chunked\r\n")),
            Ok(Framing::Chunked)
        );
        assert_eq!(check_head(&head("")), Ok(Framing::Length(0)));
        // Names match whatever their case, and only whole: longer or shorter names that start alike are
        // other fields.
        assert_eq!(
            check_head(&head("CONTENT-length: 7\r\n")),
            Ok(Framing::Length(7))
        );
        assert_eq!(
            check_head(&head("Content-Lengths: x\r\nX-Host: b\r\nHos: c\r\n")),
            Ok(Framing::Length(0))
        );
        assert_eq!(check_head(&head("HOST: b\r\n")), Err(Violation::Host));
    }
}
