//! A request body on its way to the upstream: it tells when it has been sent whole, so the response-head
//! timeout starts only then, and it gives up on a client that pauses too long in the middle of it.
//!
//! Cloudreve answers an upload chunk (25 MiB by default) only after reading all of it, so a timer running
//! from the request head would cut every upload slower than the timeout. Measuring the pause between pieces
//! instead cuts only a client that stopped sending, never one whose bytes still flow.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::body::Body;

/// Why a client's request body did not arrive whole.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The body broke off or was malformed (e.g. an invalid chunk size, RFC 9112 §7.1).
    #[error("the request body was malformed or cut off")]
    Broken(#[source] hyper::Error),
    /// No piece of the body arrived for this long.
    #[error("the request body paused for more than {0:?}")]
    Stalled(Duration),
}

/// The body of a request being forwarded. Ends (or fails) exactly like the client's body.
pub struct UploadBody {
    inner: Body,
    /// Fired once the body has ended; dropped unfired if it fails.
    sent: Option<oneshot::Sender<()>>,
    /// Longest pause allowed between two pieces.
    pause_limit: Duration,
    /// The pause timer, armed (`waiting`) from the first poll that finds no piece ready.
    pause: Pin<Box<Sleep>>,
    waiting: bool,
}

impl UploadBody {
    /// Wraps `inner`; the receiver completes when it has been sent whole (at once for an empty body).
    pub fn new(inner: Body, pause_limit: Duration) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut body = Self {
            inner,
            sent: Some(tx),
            pause_limit,
            pause: Box::pin(tokio::time::sleep(pause_limit)),
            waiting: false,
        };
        if body.inner.is_end_stream() {
            body.finished();
        }
        (body, rx)
    }

    fn finished(&mut self) {
        if let Some(sent) = self.sent.take() {
            let _ = sent.send(());
        }
    }
}

impl HttpBody for UploadBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.finished();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(ClientBodyError::Broken(err)))),
            Poll::Ready(Some(Ok(frame))) => {
                self.waiting = false;
                if self.inner.is_end_stream() {
                    self.finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    let deadline = Instant::now() + self.pause_limit;
                    self.pause.as_mut().reset(deadline);
                }
                ready!(self.pause.as_mut().poll(cx));
                Poll::Ready(Some(Err(ClientBodyError::Stalled(self.pause_limit))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn empty_body_counts_as_sent_at_once() {
        let (_body, sent) = UploadBody::new(Body::Empty, Duration::from_secs(1));
        sent.await.expect("signalled");
    }

    #[tokio::test]
    async fn full_body_is_sent_when_read() {
        let (body, mut sent) = UploadBody::new(Body::full("abc"), Duration::from_secs(1));
        assert!(sent.try_recv().is_err(), "not sent before it is read");
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "abc");
        sent.await.expect("signalled");
    }
}
