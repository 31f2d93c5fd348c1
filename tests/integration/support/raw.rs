//! A raw HTTP/1.1 client for bytes no well-behaved client sends, and a check that a connection was closed.
//! Every wait is bounded by [`PATIENCE`](super::PATIENCE).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

/// One response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head as text, header names as sent.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A client connection that writes exactly the bytes it is given.
pub struct Raw {
    stream: TcpStream,
    /// Bytes read past the last response.
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes bytes; the server may already have closed, so a failure is returned, not a panic.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Shuts down the writing side (`shutdown(SHUT_WR)`, as `nc -N` and some HTTP/1.0 clients do after their
    /// request): the server reads end of stream, and can still write.
    pub async fn shutdown_write(&mut self) {
        tokio::time::timeout(PATIENCE, self.stream.shutdown())
            .await
            .expect("shutdown timed out")
            .expect("shutdown failed");
    }

    /// Reads one response (a head, then a `Content-Length` body; without one, the body runs to the close).
    pub async fn response(&mut self) -> RawResponse {
        tokio::time::timeout(PATIENCE, self.read_response())
            .await
            .expect("no complete response within PATIENCE")
    }

    async fn read_response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                self.fill().await > 0,
                "closed before a response head: {:?}",
                self.text()
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"));
        let mut response = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        let length = response
            .header("content-length")
            .map(|v| v.parse::<usize>().unwrap());
        match length {
            Some(length) => {
                while self.buf.len() < length {
                    assert!(self.fill().await > 0, "closed inside a response body");
                }
                response.body = self.buf.drain(..length).collect();
            }
            None if status == 304 || status == 204 || status < 200 => {}
            None => {
                while self.fill().await > 0 {}
                response.body = std::mem::take(&mut self.buf);
            }
        }
        response
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
        let read = tokio::time::timeout(within, async { while self.fill().await > 0 {} }).await;
        read.ok().map(|()| std::mem::take(&mut self.buf))
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

    /// Reads what is there; 0 on close or reset.
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
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
