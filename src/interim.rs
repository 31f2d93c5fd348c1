//! 1xx interim responses (RFC 9110 §15.2; `103 Early Hints`, RFC 8297) from the upstream to an HTTP/1.1
//! client, written by the framing guard beside hyper, whose server cannot send one.
//!
//! A proxy MUST forward a 1xx it did not ask for itself (RFC 9110 §15.2), and the one place that can write
//! one on a client connection is the framing guard (`framing/guard.rs`), which every byte hyper writes
//! passes through. Each HTTP/1.1 connection has one [`Slot`]: the request path queues the interim responses
//! of the request in progress there ([`Interim::send`], called by the upstream client as each one
//! arrives), and the guard's [`Writer`] writes them out, but only where no response of hyper's can be cut:
//!
//! - **after everything before the request**: hyper hands a request to the service only once the response
//!   before it is wholly in its write buffer (pipelining: its `Writing::KeepAlive`), and it flushes the
//!   socket only once that buffer is empty. So when hyper flushes after the request began ([`Slot::begin`]),
//!   every byte of earlier responses has passed through the guard, and an interim response written then
//!   follows them (`Writer::hyper_flushes`).
//! - **before the request's final response**: the final response is decided when the request path returns
//!   it, and it seals the request then ([`Interim::seal`]); hyper writes nothing of it before. An interim
//!   response queued by then goes out before hyper's next write; one that comes later is dropped, and so is
//!   everything queued once hyper has written after the seal (`Writer::hyper_writes`). A request that
//!   waited for another's cache fill never went upstream and has nothing to send.
//! - **never to HTTP/1.0**, which has no 1xx (RFC 9110 §15.2: a server MUST NOT send one), and never over
//!   HTTP/2, where hyper gives no access to h2's `send_informational`.
//!
//! What is forwarded: every 1xx but `100 Continue` (hyper's server answers the client's
//! `Expect: 100-continue` itself when the body is first read; Cloudreve's own `100` answers the proxy) and
//! `101` (a protocol switch nobody asked for: `Upgrade` is hop-by-hop). At most [`MAX_QUEUED`] bytes wait
//! for a client at a time; more is dropped (an upstream can send 1xx responses until its response-head
//! timeout). Interim responses are never stored: the upstream client hands the cache the final one only.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use http::header::HeaderMap;
use http::{StatusCode, Version};
use tokio::io::AsyncWrite;

/// Interim response bytes queued for one client at most (as much again may be on its way out): a few
/// `Link` fields are a few hundred bytes.
pub const MAX_QUEUED: usize = 16 * 1024;

/// The interim responses of one HTTP/1.1 connection: which request may have them, and those not yet written.
#[derive(Debug, Default)]
pub struct Slot {
    /// The request in progress: its number (one more per request, from 1) shifted left by one, and the low
    /// bit set while it takes interim responses (HTTP/1.1, not sealed). Written on the connection's task
    /// only (hyper serves one HTTP/1.1 request at a time); read by the upstream client's tasks.
    state: AtomicU64,
    /// Whether `queue` holds bytes: the guard looks on each of hyper's writes and flushes, without the lock.
    queued: AtomicBool,
    /// What waits to be written, and who writes it.
    queue: Mutex<Queue>,
}

/// Behind [`Slot`]'s lock.
#[derive(Debug, Default)]
struct Queue {
    /// The request `bytes` belong to.
    request: u64,
    /// Encoded interim responses (HTTP/1.1 status line and fields), in the order they came.
    bytes: Vec<u8>,
    /// Wakes the connection's task, whose guard writes `bytes`.
    waker: Option<Waker>,
}

/// One request's way to its client's connection.
#[derive(Debug, Clone)]
pub struct Interim {
    /// The connection.
    slot: Arc<Slot>,
    /// The request's number.
    request: u64,
}

impl Slot {
    /// The slot of a new connection.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// hyper hands the service a request of `version`: from now on it is the connection's request, and
    /// whatever was queued for an earlier one is not sent. `Some` when it may have interim responses
    /// (HTTP/1.1).
    pub fn begin(self: &Arc<Self>, version: Version) -> Option<Interim> {
        let http11 = match version {
            Version::HTTP_11 => true,
            Version::HTTP_09 | Version::HTTP_10 => false,
            // HTTP/2 and later: several requests at once, framed by hyper, which sends no 1xx there.
            _ => return None,
        };
        let request = self.request() + 1;
        self.state
            .store(request << 1 | u64::from(http11), Ordering::Release);
        http11.then(|| Interim {
            slot: Arc::clone(self),
            request,
        })
    }

    /// The number of the connection's request.
    fn request(&self) -> u64 {
        self.state.load(Ordering::Acquire) >> 1
    }

    /// Whether the connection's request takes interim responses.
    fn open(&self) -> bool {
        self.state.load(Ordering::Acquire) & 1 == 1
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Interim {
    /// Queues an interim response of the upstream's for the client (its hop-by-hop fields already removed)
    /// and wakes the connection to write it; dropped when it may not be forwarded, when the request is no
    /// longer the connection's or is sealed, or when [`MAX_QUEUED`] would be passed.
    pub fn send(&self, status: StatusCode, headers: &HeaderMap) {
        if !forwarded(status) {
            return;
        }
        let message = encode(status, headers);
        let mut queue = self.slot.lock();
        let open = self.request << 1 | 1;
        if self.slot.state.load(Ordering::Acquire) != open {
            return;
        }
        if queue.request != self.request {
            queue.request = self.request;
            queue.bytes.clear();
        }
        if queue.bytes.len() + message.len() > MAX_QUEUED {
            tracing::debug!(
                status = status.as_u16(),
                "interim response dropped: the client has not taken the ones before"
            );
            return;
        }
        queue.bytes.extend_from_slice(&message);
        self.slot.queued.store(true, Ordering::Release);
        if let Some(waker) = &queue.waker {
            waker.wake_by_ref();
        }
    }

    /// The request's final response is decided: no interim response may follow (RFC 9110 §15.2).
    pub fn seal(&self) {
        let open = self.request << 1 | 1;
        if self.slot.state.load(Ordering::Acquire) == open {
            self.slot.state.store(open & !1, Ordering::Release);
        }
    }
}

/// The 1xx responses a client gets: not `100 Continue` (hyper's server answered the client's expectation
/// itself) and not `101` (a switch to a protocol the client never asked the proxy for).
fn forwarded(status: StatusCode) -> bool {
    status.is_informational()
        && status != StatusCode::CONTINUE
        && status != StatusCode::SWITCHING_PROTOCOLS
}

/// An interim response as HTTP/1.1 writes it (RFC 9112 §4): the status line (a reason phrase for the codes
/// that have one), the field lines, the empty line.
fn encode(status: StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The framing guard's side of a [`Slot`]: writes the queued interim responses where they may go.
#[derive(Debug)]
pub struct Writer {
    /// The connection's slot.
    slot: Arc<Slot>,
    /// The request that was the connection's when hyper last flushed (its buffer then empty): everything
    /// before it has passed through the guard.
    cleared: u64,
    /// The request whose final response hyper has begun to write (it wrote after the seal).
    answered: u64,
    /// The interim responses being written, and how much of them is out.
    writing: Option<(Vec<u8>, usize)>,
    /// The waker given to the slot, so it is replaced only when the task's changes.
    waker: Option<Waker>,
}

/// What the queue holds, for the request in progress.
enum Queued {
    /// Nothing, or nothing to keep.
    Nothing,
    /// Bytes to write now.
    Write(Vec<u8>),
    /// Bytes to write at hyper's next flush: hyper may still hold an earlier response's end.
    Later,
}

impl Writer {
    /// The writer of `slot`'s interim responses.
    pub fn new(slot: Arc<Slot>) -> Self {
        Self {
            slot,
            cleared: 0,
            answered: 0,
            writing: None,
            waker: None,
        }
    }

    /// hyper flushes: its write buffer is empty, so nothing of a response before the connection's request
    /// is left to come. While that request takes interim responses, the connection's task is the one to wake.
    pub fn hyper_flushes(&mut self, cx: &Context<'_>) {
        self.cleared = self.slot.request();
        if !self.slot.open() || self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return;
        }
        self.waker = Some(cx.waker().clone());
        self.slot.lock().waker = Some(cx.waker().clone());
    }

    /// hyper has written (after [`Writer::poll_write`] let it): once the request is sealed, what hyper writes
    /// is its final response, and nothing queued for it may follow.
    pub fn hyper_writes(&mut self) {
        if !self.slot.open() {
            self.answered = self.slot.request();
        }
    }

    /// Writes the interim responses that may go now to `io`; ready once they are all out (hyper's bytes must
    /// not come between).
    pub fn poll_write<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.writing.is_none() {
            if !self.slot.queued.load(Ordering::Acquire) {
                return Poll::Ready(Ok(()));
            }
            match self.take() {
                Queued::Write(bytes) => self.writing = Some((bytes, 0)),
                Queued::Nothing | Queued::Later => return Poll::Ready(Ok(())),
            }
        }
        let Some((bytes, written)) = &mut self.writing else {
            return Poll::Ready(Ok(()));
        };
        while *written < bytes.len() {
            let slice = [IoSlice::new(&bytes[*written..])];
            match std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slice)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *written += n,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
        self.writing = None;
        Poll::Ready(Ok(()))
    }

    /// Takes what is queued when it may be written now or never; leaves it when it must wait for a flush.
    fn take(&self) -> Queued {
        let request = self.slot.request();
        let mut queue = self.slot.lock();
        let current = queue.request == request && self.answered != request;
        if current && self.cleared != request {
            return Queued::Later;
        }
        self.slot.queued.store(false, Ordering::Release);
        let bytes = std::mem::take(&mut queue.bytes);
        if current {
            Queued::Write(bytes)
        } else {
            Queued::Nothing
        }
    }
}

/// The slot may outlive the connection for a while (an upstream request's callback holds it): it must not
/// keep the connection's task alive through its waker.
impl Drop for Writer {
    fn drop(&mut self) {
        if self.waker.is_some() {
            self.slot.lock().waker = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(link: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::LINK, link.parse().unwrap());
        headers
    }

    const HINTS_A: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n";

    /// Runs `writer` once, as the guard does on hyper's flush, and returns what it wrote.
    fn flush(writer: &mut Writer) -> Vec<u8> {
        let mut cx = Context::from_waker(Waker::noop());
        writer.hyper_flushes(&cx);
        write(writer, &mut cx)
    }

    /// Runs `writer` once, as the guard does before hyper writes, and returns what it wrote first.
    fn before_hyper_writes(writer: &mut Writer) -> Vec<u8> {
        let mut cx = Context::from_waker(Waker::noop());
        let out = write(writer, &mut cx);
        writer.hyper_writes();
        out
    }

    fn write(writer: &mut Writer, cx: &mut Context<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(writer.poll_write(&mut out, cx).is_ready());
        out
    }

    #[test]
    fn an_interim_response_is_written_at_the_first_flush_after_its_request_began() {
        let slot = Slot::new();
        let mut writer = Writer::new(Arc::clone(&slot));
        let interim = slot.begin(Version::HTTP_11).unwrap();
        interim.send(StatusCode::from_u16(103).unwrap(), &hints("</a.css>"));
        // hyper may still hold the end of the response before: nothing until it flushed.
        assert_eq!(before_hyper_writes(&mut writer), b"");
        assert_eq!(flush(&mut writer), HINTS_A);
        assert_eq!(flush(&mut writer), b"", "written once");
    }

    #[test]
    fn an_interim_response_queued_before_the_seal_precedes_the_final_one_and_later_ones_are_dropped()
     {
        let slot = Slot::new();
        let mut writer = Writer::new(Arc::clone(&slot));
        let interim = slot.begin(Version::HTTP_11).unwrap();
        assert_eq!(flush(&mut writer), b"");
        interim.send(StatusCode::from_u16(103).unwrap(), &hints("</a.css>"));
        interim.seal();
        interim.send(StatusCode::from_u16(103).unwrap(), &hints("</late.css>"));
        // hyper writes the final response: the one queued in time goes first, the late one never.
        assert_eq!(before_hyper_writes(&mut writer), HINTS_A);
        assert_eq!(flush(&mut writer), b"");
    }

    #[test]
    fn what_comes_after_hyper_began_the_final_response_is_never_written() {
        // The upstream client may look at the state just before the seal and queue just after the guard
        // looked: once hyper wrote after the seal, such bytes are dropped, never written after its bytes.
        let slot = Slot::new();
        let mut writer = Writer::new(Arc::clone(&slot));
        let interim = slot.begin(Version::HTTP_11).unwrap();
        assert_eq!(flush(&mut writer), b"");
        interim.seal();
        assert_eq!(before_hyper_writes(&mut writer), b"");
        {
            let mut queue = slot.lock();
            queue.request = interim.request;
            queue.bytes.extend_from_slice(HINTS_A);
            slot.queued.store(true, Ordering::Release);
        }
        assert_eq!(flush(&mut writer), b"");
        assert_eq!(before_hyper_writes(&mut writer), b"");
    }

    #[test]
    fn an_interim_response_of_an_earlier_request_is_never_written() {
        let slot = Slot::new();
        let mut writer = Writer::new(Arc::clone(&slot));
        let first = slot.begin(Version::HTTP_11).unwrap();
        first.send(StatusCode::from_u16(103).unwrap(), &hints("</a.css>"));
        let second = slot.begin(Version::HTTP_11).unwrap();
        assert_eq!(flush(&mut writer), b"", "queued for the first request");
        first.send(StatusCode::from_u16(103).unwrap(), &hints("</a.css>"));
        assert_eq!(flush(&mut writer), b"", "the first request is over");
        second.send(StatusCode::from_u16(103).unwrap(), &hints("</b.css>"));
        assert_eq!(
            flush(&mut writer),
            b"HTTP/1.1 103 Early Hints\r\nlink: </b.css>\r\n\r\n"
        );
    }

    #[test]
    fn http_1_0_and_http_2_requests_take_none() {
        let slot = Slot::new();
        let mut writer = Writer::new(Arc::clone(&slot));
        let first = slot.begin(Version::HTTP_11).unwrap();
        assert!(slot.begin(Version::HTTP_10).is_none());
        first.send(StatusCode::from_u16(103).unwrap(), &hints("</a.css>"));
        assert_eq!(
            flush(&mut writer),
            b"",
            "the HTTP/1.0 request is in progress"
        );
        assert!(slot.begin(Version::HTTP_2).is_none());
    }

    #[test]
    fn continue_and_switching_protocols_are_not_forwarded() {
        let slot = Slot::new();
        let mut writer = Writer::new(Arc::clone(&slot));
        let interim = slot.begin(Version::HTTP_11).unwrap();
        interim.send(StatusCode::CONTINUE, &HeaderMap::new());
        interim.send(StatusCode::SWITCHING_PROTOCOLS, &HeaderMap::new());
        interim.send(StatusCode::OK, &HeaderMap::new());
        assert_eq!(flush(&mut writer), b"");
        interim.send(StatusCode::PROCESSING, &HeaderMap::new());
        assert_eq!(flush(&mut writer), b"HTTP/1.1 102 Processing\r\n\r\n");
        interim.send(StatusCode::from_u16(199).unwrap(), &HeaderMap::new());
        assert_eq!(flush(&mut writer), b"HTTP/1.1 199 \r\n\r\n");
    }

    #[test]
    fn what_waits_for_a_client_is_bounded() {
        let slot = Slot::new();
        let mut writer = Writer::new(Arc::clone(&slot));
        let interim = slot.begin(Version::HTTP_11).unwrap();
        let link = format!("<{}>", "x".repeat(1000));
        for _ in 0..100 {
            interim.send(StatusCode::from_u16(103).unwrap(), &hints(&link));
        }
        let written = flush(&mut writer);
        assert!(written.len() <= MAX_QUEUED, "{}", written.len());
        assert!(written.len() > MAX_QUEUED - 1100, "{}", written.len());
        interim.send(StatusCode::from_u16(103).unwrap(), &hints(&link));
        assert!(!flush(&mut writer).is_empty(), "room again once written");
    }

    #[test]
    fn a_queued_interim_response_wakes_the_connection() {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let slot = Slot::new();
        let mut writer = Writer::new(Arc::clone(&slot));
        let interim = slot.begin(Version::HTTP_11).unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        writer.hyper_flushes(&Context::from_waker(&waker));
        interim.send(StatusCode::from_u16(103).unwrap(), &hints("</a.css>"));
        assert!(flag.0.load(Ordering::SeqCst));
    }
}
