//! A raw HTTP/2 client for header lists a conforming client refuses to send (a `host` field without
//! `:authority`, repeated fields, connection-specific fields): each header block is written as given, every
//! field an HPACK literal without indexing or Huffman coding (RFC 7541 §6.2.2), so the test says exactly
//! what reaches the proxy. Every wait is bounded by [`PATIENCE`](super::PATIENCE).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::PATIENCE;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// What became of one request.
#[derive(Debug, PartialEq, Eq)]
pub enum H2Outcome {
    /// A response: its status (0 for one outside HPACK's static table, which the tests never expect) and
    /// body.
    Response(u16, Vec<u8>),
    /// The stream was reset with this error code (1: PROTOCOL_ERROR).
    Reset(u32),
    /// The connection was ended with GOAWAY and this error code.
    GoAway(u32),
}

/// One HTTP/2 connection over `S` (TCP or TLS), stream ids counted from 1.
pub struct RawH2<S> {
    stream: S,
    next_id: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawH2<S> {
    /// Sends the preface and empty SETTINGS; the server's SETTINGS are acknowledged as they are read.
    pub async fn start(mut stream: S) -> Self {
        stream.write_all(PREFACE).await.unwrap();
        stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        Self { stream, next_id: 1 }
    }

    /// Sends one request with exactly `fields` (pseudo-fields included, in order) and `body` (none: the
    /// HEADERS frame ends the stream), and reads what the server makes of it, within `PATIENCE`.
    pub async fn request(&mut self, fields: &[(&str, &str)], body: &[u8]) -> H2Outcome {
        let id = self.next_id;
        self.next_id += 2;
        let block = header_block(fields);
        let end = if body.is_empty() { END_STREAM } else { 0 };
        let mut bytes = frame(HEADERS, END_HEADERS | end, id, &block);
        if !body.is_empty() {
            bytes.extend_from_slice(&frame(DATA, END_STREAM, id, body));
        }
        self.stream.write_all(&bytes).await.unwrap();
        tokio::time::timeout(PATIENCE, self.outcome(id))
            .await
            .expect("no answer on the stream within PATIENCE")
    }

    async fn outcome(&mut self, id: u32) -> H2Outcome {
        let mut status = None;
        let mut body = Vec::new();
        // Bounded by the timeout around it; each turn reads one frame.
        loop {
            let (kind, flags, stream, payload) = self.read_frame().await;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    self.stream
                        .write_all(&frame(SETTINGS, ACK, 0, &[]))
                        .await
                        .unwrap();
                }
                GOAWAY => return H2Outcome::GoAway(u32_at(&payload, 4)),
                RST_STREAM if stream == id => return H2Outcome::Reset(u32_at(&payload, 0)),
                HEADERS if stream == id => status = Some(static_status(&payload)),
                DATA if stream == id => body.extend_from_slice(&payload),
                _ => {}
            }
            if stream == id && flags & END_STREAM != 0 && matches!(kind, HEADERS | DATA) {
                return H2Outcome::Response(status.expect("DATA before HEADERS"), body);
            }
        }
    }

    /// One frame: type, flags, stream id, payload.
    async fn read_frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
        let mut head = [0u8; 9];
        self.stream
            .read_exact(&mut head)
            .await
            .expect("the connection closed");
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; length];
        self.stream.read_exact(&mut payload).await.unwrap();
        (head[3], head[4], u32_at(&head, 5) & 0x7fff_ffff, payload)
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![length[1], length[2], length[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Every field a literal without indexing, with a new name (RFC 7541 §6.2.2).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        string(&mut block, name.as_bytes());
        string(&mut block, value.as_bytes());
    }
    block
}

/// A string literal without Huffman coding: its length as a 7-bit prefix integer (RFC 7541 §5.1, §5.2).
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut length = bytes.len();
    if length < 127 {
        out.push(length as u8);
    } else {
        out.push(127);
        length -= 127;
        while length >= 128 {
            out.push((length % 128) as u8 | 0x80);
            length /= 128;
        }
        out.push(length as u8);
    }
    out.extend_from_slice(bytes);
}

/// The `:status` of a response header block when it is an indexed field of the static table (RFC 7541
/// Appendix A: indices 8 to 14), as h2 sends 200, 204, 206, 304, 400, 404 and 500; 0 otherwise.
fn static_status(block: &[u8]) -> u16 {
    match block.first() {
        Some(0x88) => 200,
        Some(0x89) => 204,
        Some(0x8a) => 206,
        Some(0x8b) => 304,
        Some(0x8c) => 400,
        Some(0x8d) => 404,
        Some(0x8e) => 500,
        _ => 0,
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}
