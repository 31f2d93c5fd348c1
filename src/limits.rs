//! Connection limits the server enforces beyond hyper's own: how many client connections are served at once,
//! how long a connection may sit with no request in progress, and how long a response may wait on a client
//! that takes nothing of it. Knows nothing of caching or proxying.
//!
//! hyper bounds the request head (size, field count, HTTP/1.1 read time) and HTTP/2 streams; what it does not
//! bound is a connection that never sends a request (hyper-util's protocol detection waits for the first 24
//! bytes with no timer), an idle HTTP/2 connection, the number of connections, or a client that stops
//! reading (a full socket buffer; an HTTP/2 stream window left at 0, RFC 9113 §10.5), which would hold its
//! response's upstream connection forever. Only *idle* and *stalled* time is limited here: a request in
//! progress, however long it streams (downloads, uploads, server-sent events), is never cut while bytes move.

mod watchdog;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use watchdog::{Activity, Closing, RequestGuard};

/// Slots for client connections: one permit per connection, held until the connection task ends.
#[derive(Clone)]
pub struct ConnectionSlots {
    /// `max_connections` permits.
    permits: Arc<Semaphore>,
}

impl ConnectionSlots {
    /// Room for `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// Waits for a free slot. The accept loop calls this *before* accepting, so at the limit new connections
    /// wait in the kernel's listen backlog (and the loop waits on a semaphore, not spinning on accept+close).
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

/// A response body that keeps its request counted as in progress until the body ends or is dropped, and
/// is aborted when its source (the upstream) sends nothing for `stall_limit` while the client waits for
/// more. The client then sees a cut connection or stream (RFC 9112 §8: an incomplete message), never a
/// body that looks complete. A slow *client* does not count: the timer runs only while this body is asked
/// for its next piece and has none. The client's turn is the other half: from the body's start and from each
/// piece it gives until it is asked again, the response waits on the client, which the connection's
/// watchdog times (`server.send_timeout`).
pub struct Tracked<B> {
    body: B,
    guard: RequestGuard,
    stall_limit: Duration,
    /// Armed from the first poll that finds no piece ready.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Tracked<B> {
    /// `body`, counted by `guard`, aborted after `stall_limit` without a piece.
    pub fn new(body: B, mut guard: RequestGuard, stall_limit: Duration) -> Self {
        guard.client_turn();
        Self {
            body,
            guard,
            stall_limit,
            stall: None,
        }
    }
}

/// The upstream sent nothing of a response body for `server.response_idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing of the response body for {0:?}")]
pub struct ResponseStalled(Duration);

impl<B> HttpBody for Tracked<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stall = None;
                match &frame {
                    Some(Ok(_)) => this.guard.client_turn(),
                    Some(Err(_)) | None => this.guard.clear_turn(),
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                this.guard.clear_turn();
                let limit = this.stall_limit;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!(?limit, "response body stalled; aborting it");
                        Poll::Ready(Some(Err(Box::new(ResponseStalled(limit)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_wait_at_the_limit() {
        let slots = ConnectionSlots::new(1);
        let first = slots.acquire().await;
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        drop(first);
        let _slot = waiting.await.unwrap();
    }
}
