//! Connection limits the server enforces beyond hyper's own: how many client connections are served at once,
//! and how long a connection may sit with no request in progress. Knows nothing of caching or proxying.
//!
//! hyper bounds the request head (size, field count, HTTP/1.1 read time) and HTTP/2 streams; what it does not
//! bound is a connection that never sends a request (hyper-util's protocol detection waits for the first 24
//! bytes with no timer), an idle HTTP/2 connection, or the number of connections. Only *idle* time is limited
//! here: a request in progress, however long it streams (downloads, uploads, server-sent events), is never cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

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

/// What a connection is doing, as the idle watchdog needs it. Requests update it with two atomic operations
/// and never wake the watchdog: it sleeps until the earliest moment the connection could be idle long enough
/// and looks then (at most once per idle timeout while requests keep it busy).
struct State {
    /// Requests whose response has not finished (or been dropped).
    in_flight: AtomicUsize,
    /// When the connection last became idle (accepted, or a response finished), in nanoseconds since `opened`.
    idle_since: AtomicU64,
    /// When the connection was accepted.
    opened: Instant,
}

/// Request bookkeeping of one connection, shared by its service and its watchdog.
#[derive(Clone)]
pub struct Activity {
    state: Arc<State>,
}

impl Activity {
    /// A connection accepted now, idle until its first request.
    pub fn new() -> Self {
        Self {
            state: Arc::new(State {
                in_flight: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
                opened: Instant::now(),
            }),
        }
    }

    /// Marks a request as started; it is in progress until the returned guard is dropped (the guard travels
    /// with the response body, so a streaming response counts until its last byte).
    pub fn begin(&self) -> RequestGuard {
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            state: Arc::clone(&self.state),
        }
    }

    /// Whether no request is in progress.
    pub fn is_idle(&self) -> bool {
        self.state.in_flight.load(Ordering::Acquire) == 0
    }

    /// A request began and ended just now (answered at once, beside hyper): the idle clock restarts.
    pub fn touch(&self) {
        self.state.mark_idle_now();
    }

    /// Completes when the connection has had no request in progress for `idle_timeout`; never completes
    /// while one is. Dropping the connection then loses nothing: no request is on it.
    pub async fn idle_for(&self, idle_timeout: Duration) {
        let state = &self.state;
        let sleep = tokio::time::sleep_until(state.opened + idle_timeout);
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            let now = Instant::now();
            let deadline = if state.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: look again one timeout from now. A request that ends before then restarts the clock
                // at its end, which is later than this look, so no idle time is lost.
                now + idle_timeout
            } else {
                let idle_since =
                    state.opened + Duration::from_nanos(state.idle_since.load(Ordering::Acquire));
                let due = idle_since + idle_timeout;
                if due <= now {
                    return;
                }
                due
            };
            sleep.as_mut().reset(deadline);
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// One request in progress on a connection.
pub struct RequestGuard {
    state: Arc<State>,
}

impl State {
    /// Records now as the moment the connection last became idle.
    fn mark_idle_now(&self) {
        // Saturates after 584 years of one connection.
        let since = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The latest end wins when requests of one HTTP/2 connection end on different threads at once.
        self.idle_since.fetch_max(since, Ordering::Release);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // Published before the count drops, so a watchdog that sees no request in flight sees when it ended.
        self.state.mark_idle_now();
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress until the body ends or is dropped, and
/// is aborted when its source (the upstream) sends nothing for `stall_limit` while the client waits for
/// more. The client then sees a cut connection or stream (RFC 9112 §8: an incomplete message), never a
/// body that looks complete. A slow *client* does not count: the timer runs only while this body is asked
/// for its next piece and has none.
pub struct Tracked<B> {
    body: B,
    _guard: RequestGuard,
    stall_limit: Duration,
    /// Armed from the first poll that finds no piece ready.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Tracked<B> {
    /// `body`, counted by `guard`, aborted after `stall_limit` without a piece.
    pub fn new(body: B, guard: RequestGuard, stall_limit: Duration) -> Self {
        Self {
            body,
            _guard: guard,
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
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
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
    async fn idle_connection_times_out() {
        let activity = Activity::new();
        let started = Instant::now();
        activity.idle_for(Duration::from_secs(30)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn request_in_progress_is_never_idle_and_restarts_the_clock() {
        let activity = Activity::new();
        let guard = activity.begin();
        let watchdog = activity.clone();
        let started = Instant::now();
        let idle = tokio::spawn(async move { watchdog.idle_for(Duration::from_secs(30)).await });
        // A request lasting ten idle timeouts.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!idle.is_finished(), "cut while a request was in progress");
        drop(guard);
        idle.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(330));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_at_once_restarts_the_clock() {
        let activity = Activity::new();
        let watchdog = activity.clone();
        let started = Instant::now();
        let idle = tokio::spawn(async move { watchdog.idle_for(Duration::from_secs(30)).await });
        // The express lane answers a request at 20 s without hyper: no guard, only a touch.
        tokio::time::sleep(Duration::from_secs(20)).await;
        activity.touch();
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(
            !idle.is_finished(),
            "closed 30 s after the accept, not after the request"
        );
        idle.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(50));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_of_overlapping_requests_restarts_the_clock() {
        let activity = Activity::new();
        let watchdog = activity.clone();
        let started = Instant::now();
        let idle = tokio::spawn(async move { watchdog.idle_for(Duration::from_secs(30)).await });
        // Idle 20 s, then two requests (HTTP/2 streams) that end at 25 s and 40 s.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let short = activity.begin();
        let long = activity.begin();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(short);
        tokio::time::sleep(Duration::from_secs(15)).await;
        drop(long);
        // Still open one moment before 40 + 30 s.
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(
            !idle.is_finished(),
            "closed before the idle timeout after the last request"
        );
        idle.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(70));
    }

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
