//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2) on accepted connections: the header a
//! load balancer sends before any byte of the client's, naming the real client address. Parsing is `ppp`'s.
//!
//! When the listener has it enabled, every connection must start with a header (the specification forbids
//! guessing), and the bytes read past the header are handed back through [`Rewind`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A v1 header is at most 107 bytes; a v2 header is 16 bytes plus addresses and TLVs, which load balancers
/// keep to a few hundred bytes. Anything longer is refused rather than buffered.
pub const MAX_HEADER_LEN: usize = 4096;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The connection ended or failed before a whole header arrived.
    #[error("connection failed before a whole PROXY header: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a PROXY header (e.g. a client speaking HTTP straight to the listener).
    #[error("not a PROXY protocol header: {0}")]
    Invalid(String),
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("PROXY header longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
}

/// A connection's PROXY header, read.
#[derive(Debug)]
pub struct Accepted {
    /// The client address the header names; `None` for `LOCAL` (v2) and `UNKNOWN` (v1), which a load
    /// balancer sends for its own health checks: the connection's peer is then the client.
    pub source: Option<SocketAddr>,
    /// Bytes received after the header, to be read before the rest of the stream.
    pub rest: Bytes,
}

/// Reads one PROXY header (v1 or v2) from the start of `stream`. The caller bounds the time it may take.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Accepted, HeaderError> {
    let mut buffer = BytesMut::with_capacity(256);
    loop {
        if stream.read_buf(&mut buffer).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let parsed = HeaderResult::parse(&buffer);
        if parsed.is_incomplete() {
            if buffer.len() >= MAX_HEADER_LEN {
                return Err(HeaderError::TooLong);
            }
            continue;
        }
        let (len, source) = header_source(parsed)?;
        buffer.advance(len);
        return Ok(Accepted {
            source,
            rest: buffer.freeze(),
        });
    }
}

/// The header's length and the client address it names.
fn header_source(parsed: HeaderResult<'_>) -> Result<(usize, Option<SocketAddr>), HeaderError> {
    match parsed {
        HeaderResult::V1(Ok(header)) => Ok((header.header.len(), v1_source(&header.addresses))),
        HeaderResult::V2(Ok(header)) => Ok((header.len(), v2_source(&header))),
        HeaderResult::V1(Err(err)) => Err(HeaderError::Invalid(err.to_string())),
        HeaderResult::V2(Err(err)) => Err(HeaderError::Invalid(err.to_string())),
    }
}

fn v1_source(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

/// A stream whose first bytes were already read: they are returned first, then the stream continues.
#[derive(Debug)]
pub struct Rewind<S> {
    /// Bytes read ahead and not yet returned.
    prefix: Bytes,
    /// The stream itself; writes go straight to it.
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, preceded by `prefix`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Accepted, HeaderError> {
        let mut input = bytes;
        read_header(&mut input).await
    }

    #[tokio::test]
    async fn v1_tcp4_names_the_source_and_keeps_the_rest() {
        let accepted = parse(b"PROXY TCP4 203.0.113.9 10.0.0.1 41000 8080\r\nGET / HTTP/1.1\r\n")
            .await
            .unwrap();
        assert_eq!(accepted.source, Some("203.0.113.9:41000".parse().unwrap()));
        assert_eq!(&accepted.rest[..], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn v1_unknown_names_no_source() {
        let accepted = parse(b"PROXY UNKNOWN\r\nGET").await.unwrap();
        assert_eq!(accepted.source, None);
        assert_eq!(&accepted.rest[..], b"GET");
    }

    #[tokio::test]
    async fn v2_proxy_ipv6_names_the_source() {
        let source: SocketAddr = "[2001:db8::7]:5555".parse().unwrap();
        let destination: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let mut bytes = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (source, destination),
        )
        .write_tlv(v2::Type::NoOp, b"padding")
        .unwrap()
        .build()
        .unwrap();
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        let accepted = parse(&bytes).await.unwrap();
        assert_eq!(accepted.source, Some(source));
        assert_eq!(&accepted.rest[..], b"PRI * HTTP/2.0");
    }

    #[tokio::test]
    async fn v2_local_names_no_source() {
        let bytes = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&bytes).await.unwrap().source, None);
    }

    #[tokio::test]
    async fn plain_http_is_refused() {
        let err = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap_err();
        assert!(matches!(err, HeaderError::Invalid(_)), "{err}");
    }

    #[tokio::test]
    async fn truncated_header_is_an_io_error() {
        let err = parse(b"PROXY TCP4 203.0.113.9").await.unwrap_err();
        assert!(matches!(err, HeaderError::Io(_)), "{err}");
    }

    #[tokio::test]
    async fn rewind_returns_the_prefix_first() {
        let mut stream = Rewind::new(Bytes::from_static(b"abc"), &b"def"[..]);
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "abcdef");
    }
}
