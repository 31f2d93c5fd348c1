//! The express lane's side of the framing guard: a [`Shortcut`] answers some requests from their raw head in
//! place of hyper, and [`Express`] holds one connection's answer under way and knows when hyper is idle.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::Scanner;
use crate::limits::{Activity, RequestGuard};

/// Answers some requests itself, from the raw head, in place of hyper (the express lane, `express.rs`).
///
/// It is only asked at a moment when hyper has nothing in progress on the connection: every request it
/// was given has been answered and its response written and flushed, and hyper waits for the next head.
/// The answer is written before anything else reaches the socket, so responses stay in request order.
/// The head it is given is whole and announces no body ([`Scanner::plain_head`]): skipping it leaves the
/// stream at the next request for the scanner and for hyper alike.
pub trait Shortcut: Send + Sync {
    /// A first look at the bytes a request starts with (its request line, perhaps cut short), before the head
    /// is checked: `false` leaves it to hyper at no further cost.
    fn may_answer(&self, start: &[u8]) -> bool;

    /// The whole response to `head` from `client`, or `None` to leave the request to hyper.
    fn answer(&self, head: &[u8], client: SocketAddr) -> Option<Answer>;
}

/// A whole response a [`Shortcut`] gives, written to the client as it is.
pub struct Answer {
    /// Status line and header fields, up to and including the empty line.
    pub head: Vec<u8>,
    /// The body, all of it.
    pub body: Bytes,
    /// Called once with the bytes of the body sent and whether the whole response was (the access log).
    pub done: Option<Box<dyn FnOnce(u64, bool) + Send>>,
}

impl Answer {
    /// Reports the answer finished, `written` bytes of it sent.
    fn finish(mut self, written: usize) {
        let body_sent = written.saturating_sub(self.head.len());
        let complete = written == self.head.len() + self.body.len();
        if let Some(done) = self.done.take() {
            done(body_sent as u64, complete);
        }
    }
}

/// A [`Shortcut`] at work on one connection.
pub(super) struct Express {
    /// Who answers.
    shortcut: Arc<dyn Shortcut>,
    /// The connection's requests in progress in hyper: none, or hyper is busy.
    activity: Activity,
    /// The answer being written, and how much of it is out.
    writing: Option<(Answer, usize)>,
    /// While the answer under way waits on a client that does not take it (the socket is full), it counts
    /// as a request in progress whose response waits on the client, timed by `server.send_timeout` as
    /// hyper's are. Most answers go out in one write and never need one.
    blocked: Option<RequestGuard>,
    /// hyper has written since it last flushed: a response of its may still be on its way.
    pub(super) hyper_unflushed: bool,
}

impl Express {
    /// `shortcut` on a connection whose requests in hyper `activity` counts.
    pub(super) fn new(shortcut: Arc<dyn Shortcut>, activity: Activity) -> Self {
        Self {
            shortcut,
            activity,
            writing: None,
            blocked: None,
            hyper_unflushed: false,
        }
    }

    /// The answer to the request at the start of `input`, when it is a plain one, hyper is idle, and the
    /// shortcut knows it; returns the head's length. The answer is then the one under way.
    pub(super) fn answer(
        &mut self,
        input: &[u8],
        scanner: &Scanner,
        peer: SocketAddr,
    ) -> Option<usize> {
        // The guard writes an answer out before it reads again, so none is under way here.
        debug_assert!(self.writing.is_none());
        let hyper_idle = !self.hyper_unflushed && self.activity.is_idle();
        if !hyper_idle || !self.shortcut.may_answer(input) {
            return None;
        }
        let len = scanner.plain_head(input)?;
        let answer = self.shortcut.answer(&input[..len], peer)?;
        // A request came and went: the idle clock restarts, as it does when a response of hyper's ends.
        self.activity.touch();
        self.writing = Some((answer, 0));
        Some(len)
    }

    /// Writes the answer under way to `io`, head and body in one vectored write when the socket takes it.
    pub(super) fn poll_write_answer<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let Some((answer, written)) = &mut self.writing else {
            return Poll::Ready(Ok(()));
        };
        let total = answer.head.len() + answer.body.len();
        while *written < total {
            let (head, body) = match answer.head.get(*written..) {
                Some(head) => (head, &answer.body[..]),
                None => (&[][..], &answer.body[*written - answer.head.len()..]),
            };
            let slices = [IoSlice::new(head), IoSlice::new(body)];
            let Poll::Ready(result) = Pin::new(&mut *io).poll_write_vectored(cx, &slices) else {
                return self.client_turn();
            };
            match result {
                Ok(0) => return Poll::Ready(Err(self.abandon(io::ErrorKind::WriteZero.into()))),
                Ok(n) => {
                    *written += n;
                    // The client took some: its wait, if any, starts again.
                    if let Some(blocked) = &mut self.blocked {
                        blocked.client_turn();
                    }
                }
                Err(err) => return Poll::Ready(Err(self.abandon(err))),
            }
        }
        // As hyper does after its writes: a stream that buffers (TLS may) sends what it holds.
        let Poll::Ready(flushed) = Pin::new(io).poll_flush(cx) else {
            return self.client_turn();
        };
        if let Err(err) = flushed {
            return Poll::Ready(Err(self.abandon(err)));
        }
        if let Some((answer, written)) = self.writing.take() {
            answer.finish(written);
        }
        // Out: the connection is idle from now.
        self.blocked = None;
        Poll::Ready(Ok(()))
    }

    /// The answer under way waits on the client, which takes no more for now.
    fn client_turn(&mut self) -> Poll<io::Result<()>> {
        if self.blocked.is_none() {
            let mut blocked = self.activity.begin();
            blocked.client_turn();
            self.blocked = Some(blocked);
        }
        Poll::Pending
    }

    /// The client cannot be written to: the answer under way is reported as far as it got.
    fn abandon(&mut self, err: io::Error) -> io::Error {
        if let Some((answer, written)) = self.writing.take() {
            answer.finish(written);
        }
        self.blocked = None;
        err
    }
}

impl Drop for Express {
    fn drop(&mut self) {
        if let Some((answer, written)) = self.writing.take() {
            answer.finish(written);
        }
    }
}
