//! The one raw HTTP/1.1 client, for bytes no well-behaved client sends and for reading exactly what the proxy
//! wrote: connect, write raw bytes, read one response head, read a response (by `Content-Length`, chunked, or
//! to the close), read until the close; over TCP or any other stream (TLS). Raw upstreams read request heads
//! with [`read_head`]. Every wait a test makes here is bounded by [`PATIENCE`](super::PATIENCE).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

/// Longest head read before the reader gives up: the proxy's own limit is 64 KiB.
const MAX_HEAD: usize = 64 * 1024;

/// One response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head as text (status line and fields, through the blank line), header names as sent.
    pub head: String,
    /// The body: its `Content-Length` bytes, its chunks' data joined, or what came before the close.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }

    /// The head and the body.
    pub fn into_parts(self) -> (String, Vec<u8>) {
        (self.head, self.body)
    }
}

/// The first value of a header in a head (case-insensitive name).
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The status line of a head.
pub fn status_line(head: &str) -> &str {
    head.lines().next().unwrap_or("")
}

/// A client connection that writes exactly the bytes it is given and reads exactly what comes back.
pub struct Raw<S = TcpStream> {
    stream: S,
    /// Bytes read past the last thing returned.
    buf: Vec<u8>,
}

impl Raw {
    /// A new connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Self::over(stream)
    }

    /// The client's own address, as the proxy sees it.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// A client on a connection already open (a TLS stream, a socket with a small buffer).
    pub fn over(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes bytes and flushes them, within [`PATIENCE`]; the server may already have closed (or stopped
    /// reading), so a failure is returned, not a panic.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(PATIENCE, write)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Shuts down the writing side (`shutdown(SHUT_WR)`, as `nc -N` and some HTTP/1.0 clients do after their
    /// request): the server reads end of stream, and can still write.
    pub async fn shutdown_write(&mut self) {
        tokio::time::timeout(PATIENCE, self.stream.shutdown())
            .await
            .expect("shutdown timed out")
            .expect("shutdown failed");
    }

    /// Reads one response head (for a `HEAD`, whose body is never sent), within [`PATIENCE`].
    pub async fn head(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.read_head())
            .await
            .expect("no response head within PATIENCE")
    }

    /// Reads one response: its head, then a body by `Content-Length`, chunked, or to the close (none for a
    /// 1xx, 204 or 304), within [`PATIENCE`].
    pub async fn response(&mut self) -> RawResponse {
        tokio::time::timeout(PATIENCE, self.read_response())
            .await
            .expect("no complete response within PATIENCE")
    }

    async fn read_head(&mut self) -> String {
        let end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            assert!(self.buf.len() < MAX_HEAD, "response head too long");
            assert!(
                self.fill().await > 0,
                "closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        assert!(head.starts_with("HTTP/1."), "no response head: {head:?}");
        head
    }

    async fn read_response(&mut self) -> RawResponse {
        let head = self.read_head().await;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"));
        let chunked = header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length = header(&head, "content-length").map(|v| v.parse::<usize>().unwrap());
        let body = match length {
            _ if status == 304 || status == 204 || status < 200 => Vec::new(),
            _ if chunked => self.chunked_body().await,
            Some(length) => self.take(length).await,
            None => self.rest().await,
        };
        RawResponse { status, head, body }
    }

    /// A chunked body (RFC 9112 §7.1), its chunks' data joined; extensions and trailers are read and dropped.
    async fn chunked_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("not a chunk size: {line:?}"));
            if size == 0 {
                while !self.line().await.is_empty() {}
                return body;
            }
            body.extend(self.take(size).await);
            assert_eq!(self.line().await, "", "no CRLF after a chunk's data");
        }
    }

    /// One line, without its CRLF.
    async fn line(&mut self) -> String {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return line;
            }
            assert!(self.fill().await > 0, "closed inside a chunked body");
        }
    }

    /// Exactly `n` bytes.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await > 0, "closed inside a response body");
        }
        self.buf.drain(..n).collect()
    }

    /// Everything up to the close.
    async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// Waits (bounded) for the server to close the connection and returns what it sent first, if anything.
    /// Panics if it stays open for [`PATIENCE`].
    pub async fn closed(&mut self) -> Vec<u8> {
        self.closed_within(PATIENCE)
            .await
            .expect("the connection was left open")
    }

    /// Like [`Raw::closed`], but `None` if the connection is still open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(within, self.rest()).await.ok()
    }

    /// Like [`Raw::closed`], and the close was clean: an end of stream, not a reset.
    pub async fn closed_cleanly(&mut self) -> Vec<u8> {
        let read = async {
            while self.read_some().await.expect("a clean close, not a reset") > 0 {}
            std::mem::take(&mut self.buf)
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the connection was left open")
    }

    /// Reads until at least `n` bytes have arrived in all (head included), within [`PATIENCE`].
    pub async fn read_at_least(&mut self, n: usize) {
        tokio::time::timeout(PATIENCE, async {
            while self.buf.len() < n {
                assert!(
                    self.fill().await > 0,
                    "closed after {} bytes",
                    self.buf.len()
                );
            }
        })
        .await
        .expect("the bytes did not come within PATIENCE");
        self.buf.clear();
    }

    /// Reads what is there; 0 on close or reset (a TLS peer may end with close_notify or just close: both
    /// are the end).
    async fn fill(&mut self) -> usize {
        self.read_some().await.unwrap_or(0)
    }

    /// Reads what is there; `Ok(0)` at the end of the stream.
    async fn read_some(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `bytes` on a new connection and returns the first response; the connection is returned too, to
/// check what happens to it next.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (RawResponse, Raw) {
    let mut raw = Raw::connect(addr).await;
    raw.send(bytes)
        .await
        .expect("the proxy closed before reading the request");
    let response = raw.response().await;
    (response, raw)
}

/// Writes raw bytes to `addr` and reads until the server closes the connection (send `Connection: close`).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    tokio::time::timeout(PATIENCE, async {
        let mut raw = Raw::connect(addr).await;
        raw.send(bytes).await.unwrap();
        String::from_utf8_lossy(&raw.closed().await).into_owned()
    })
    .await
    .expect("raw exchange timed out")
}

/// Reads and drops what the proxy sends until it closes the connection, or resets it: a raw upstream
/// holding a connection open.
pub async fn drain(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await.unwrap_or(0) > 0 {}
}

/// Reads and drops the body a request head announces by `Content-Length` (none without one), or what
/// arrives of it before the connection ends.
pub async fn skip_body(stream: &mut TcpStream, head: &str) -> std::io::Result<u64> {
    let length = header(head, "content-length").map_or(0, |n| n.parse::<u64>().unwrap_or(0));
    tokio::io::copy(&mut stream.take(length), &mut tokio::io::sink()).await
}

/// Reads one request head from a raw upstream's connection, byte by byte so that nothing after it is taken
/// (the caller reads the body itself); `None` if the connection ends first.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 || head.len() >= MAX_HEAD {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
