//! The framing guard: the client connection as hyper reads it, with the [`Scanner`] between the socket and
//! hyper, the request head timed from its first byte, the requests a [`Shortcut`] answers beside hyper, and
//! the upstream's 1xx interim responses written beside hyper (`interim.rs`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::Scanner;
use super::shortcut::{Express, Shortcut};
use crate::interim;
use crate::limits::Activity;

/// Bytes read from the socket at a time, into a buffer on the stack: an idle connection holds no buffer of
/// the guard's (slowloris connections by the thousand stay cheap).
const READ_CHUNK: usize = 8 * 1024;

/// The request head limits of the `[server]` section.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head, in bytes.
    pub max_size: usize,
    /// Most header fields (hyper's own limit; the guard only needs it to make hyper answer 431).
    pub max_fields: usize,
    /// Time from the first byte of a head to its end.
    pub read_timeout: Duration,
}

/// The client side of an HTTP/1.1 connection, with [`Scanner`] between the socket and hyper.
///
/// It also times each request head from its first byte: the guard holds a head back until it is complete,
/// so hyper (and hyper-util's protocol detection, which waits for 24 bytes) cannot see a slow head arrive.
/// The time before the first byte is the idle watchdog's (`limits.rs`).
pub struct FramingGuard<IO> {
    io: IO,
    scanner: Scanner,
    /// Time allowed for one head.
    read_timeout: Duration,
    /// Running while a head is partly in.
    head_timer: Option<Pin<Box<Sleep>>>,
    /// Checked bytes hyper has not read yet.
    ready: BytesMut,
    /// The client, for the log.
    peer: SocketAddr,
    /// Whether the refusal was logged.
    logged: bool,
    /// Requests answered beside hyper, when a [`Shortcut`] is set.
    express: Option<Express>,
    /// Client bytes read behind a head answered beside hyper, not looked at until that answer is out.
    unread: Bytes,
    /// The upstream's interim responses to the request in progress, when a slot is set.
    interim: Option<interim::Writer>,
}

impl<IO> FramingGuard<IO> {
    /// Wraps the connection of `peer` with the server's head limits.
    pub fn new(io: IO, limits: HeadLimits, peer: SocketAddr) -> Self {
        Self {
            io,
            scanner: Scanner::new(limits.max_size, limits.max_fields),
            read_timeout: limits.read_timeout,
            head_timer: None,
            ready: BytesMut::new(),
            peer,
            logged: false,
            express: None,
            unread: Bytes::new(),
            interim: None,
        }
    }

    /// Writes the interim responses the requests of this connection queue in `slot`.
    pub fn with_interim(mut self, slot: Arc<interim::Slot>) -> Self {
        self.interim = Some(interim::Writer::new(slot));
        self
    }

    /// Lets `shortcut` answer the requests it knows while hyper has none of `activity`'s in progress.
    pub fn with_shortcut(mut self, shortcut: Arc<dyn Shortcut>, activity: Activity) -> Self {
        self.express = Some(Express::new(shortcut, activity));
        self
    }

    fn log_violation(&mut self) {
        if let (Some(violation), false) = (self.scanner.violation(), self.logged) {
            self.logged = true;
            tracing::info!(
                client = %self.peer,
                reason = violation.as_str(),
                "request refused by the HTTP/1.1 framing guard"
            );
        }
    }

    /// Starts the head timer when a head has begun, stops it when none is partly in.
    fn time_head(&mut self) {
        match (self.scanner.in_head(), self.head_timer.is_some()) {
            (true, false) => {
                self.head_timer = Some(Box::pin(tokio::time::sleep(self.read_timeout)));
            }
            (false, true) => self.head_timer = None,
            _ => {}
        }
    }

    /// Whether the head under way has run out of time.
    fn head_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        self.head_timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> FramingGuard<IO> {
    /// Takes bytes read from the client: an answered request is skipped while its answer goes out, the
    /// rest goes through the scanner to hyper.
    fn take(&mut self, input: &[u8]) {
        if let Some(express) = &mut self.express {
            if let Some(len) = express.answer(input, &self.scanner, self.peer) {
                self.scanner.skip_answered();
                self.unread = Bytes::copy_from_slice(&input[len..]);
                return;
            }
        }
        self.scanner.feed(input, &mut self.ready);
        self.time_head();
    }

    /// Writes the answer under way, if any; ready once it is all out.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(express) = &mut self.express else {
            return Poll::Ready(Ok(()));
        };
        express.poll_write_answer(&mut self.io, cx)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            // An answer given beside hyper goes out before anything else happens on the connection.
            ready!(this.poll_answer(cx))?;
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                if this.ready.is_empty() {
                    // Give the allocation back rather than keep it for an idle connection.
                    this.ready = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.scanner.is_passthrough() {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            if this.scanner.is_done() {
                this.log_violation();
                return Poll::Ready(Ok(())); // end of stream: hyper closes after its answer
            }
            if this.scanner.is_broken() {
                this.log_violation();
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed chunked request body",
                )));
            }
            if !this.unread.is_empty() {
                let unread = std::mem::take(&mut this.unread);
                this.take(&unread);
                continue;
            }
            // Not zeroed: the socket writes what is read, and only that part is looked at.
            let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut scratch);
            if Pin::new(&mut this.io)
                .poll_read(cx, &mut read)?
                .is_pending()
            {
                if this.head_timed_out(cx) {
                    tracing::debug!("request head not received in time");
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
                return Poll::Pending;
            }
            let filled = read.filled();
            if filled.is_empty() {
                this.scanner.eof(&mut this.ready);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.take(filled);
        }
    }
}

/// hyper's writes pass straight through, after any answer under way. That it wrote and whether it flushed
/// since is noted: hyper flushes only once its buffer is written out, so after a flush nothing of its
/// responses is left on its way (see [`Shortcut`]).
impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.before_hyper_writes(cx))?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.before_hyper_writes(cx))?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        // hyper flushes only with its write buffer empty: the request in progress may have its interim
        // responses now (`interim.rs`), and this flush sends them too.
        let this = &mut *self;
        if let Some(interim) = &mut this.interim {
            interim.hyper_flushes(cx);
            ready!(interim.poll_write(&mut this.io, cx))?;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        if let Some(express) = &mut self.express {
            express.hyper_unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> FramingGuard<IO> {
    /// hyper is about to write: any answer under way goes first, then the interim responses that may precede
    /// hyper's bytes, and hyper counts as busy until it flushes.
    fn before_hyper_writes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        if let Some(interim) = &mut self.interim {
            ready!(interim.poll_write(&mut self.io, cx))?;
            interim.hyper_writes();
        }
        if let Some(express) = &mut self.express {
            express.hyper_unflushed = true;
        }
        Poll::Ready(Ok(()))
    }
}
