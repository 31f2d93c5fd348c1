//! The one body type that flows through the proxy, both ways: nothing, bytes in memory, or a stream.
//!
//! An enum rather than a boxed trait object, so a cache hit allocates no body and a streamed body is polled
//! directly. Streams are never collected here; [`collect_up_to`] reads at most a bounded prefix.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use hyper::body::{Body as HttpBody, Incoming};

// The keeper lives beside the body it copies: it knows bytes and threads, nothing of the cache, which
// re-exports it as `cache::Keeper`.
mod keeper;

pub use keeper::{Copying, Keeper};

/// A request or response body.
#[derive(Debug, Default)]
pub enum Body {
    /// No bytes.
    #[default]
    Empty,
    /// Bytes in memory (a cached avatar, an error message); `None` once sent.
    Full(Option<Bytes>),
    /// A stream from a peer, passed on frame by frame.
    Stream(Incoming),
    /// A stream whose first bytes were already read (a response found too large to cache while reading it).
    Prefixed {
        /// Bytes read before the decision; `None` once sent.
        prefix: Option<Bytes>,
        /// The rest of the stream.
        rest: Incoming,
    },
    /// A body passed on unchanged while its bytes are hashed; the digest is reported when it ends whole.
    Watched(Box<Watched>),
    /// A body streamed to the client while a copy is kept for the cache (a streaming fill).
    Teed(Box<Tee>),
}

/// Called with the whole body of a teed stream that ended within its limit.
pub type OnWhole = Box<dyn FnOnce(Bytes) + Send + Sync>;

/// The state of [`Body::Teed`]: the copy stops, and `on_whole` is dropped unused, as soon as the body grows
/// past `limit` or fails; so a partial copy is never handed on. A body that came in one chunk is copied by
/// the keeper (see [`Keeper`]) while its last frame waits, so the client sees the end of the body only once
/// the copy is stored, as with a body copied in place.
pub struct Tee {
    inner: Incoming,
    copy: Copied,
    limit: usize,
    on_whole: Option<OnWhole>,
    keeper: Keeper,
    /// The keeper's copy under way, and the last frame (or the end) held back until it is stored.
    finishing: Option<(Copying, Option<Polled>)>,
}

/// What polling a body gave.
type Polled = Result<Frame<Bytes>, hyper::Error>;

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tee")
            .field("copied", &self.copy.len())
            .field("limit", &self.limit)
            .finish()
    }
}

/// Called with the xxh3-128 digest and length of a body that ended whole.
pub type OnDigest = Box<dyn FnOnce(u128, u64) + Send + Sync>;

/// The state of [`Body::Watched`].
pub struct Watched {
    inner: Body,
    hasher: xxhash_rust::xxh3::Xxh3,
    len: u64,
    on_digest: Option<OnDigest>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("inner", &self.inner)
            .field("len", &self.len)
            .finish()
    }
}

impl Body {
    /// A body of bytes in memory (no bytes at all is [`Body::Empty`]).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::Empty
        } else {
            Self::Full(Some(bytes))
        }
    }
}

impl Body {
    /// Passes `self` on unchanged and calls `on_digest` with its hash and length if it ends whole. A body that
    /// fails or is dropped early reports nothing.
    pub fn watched(self, on_digest: OnDigest) -> Self {
        Self::Watched(Box::new(Watched {
            inner: self,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            len: 0,
            on_digest: Some(on_digest),
        }))
    }
}

impl Body {
    /// Streams `inner` on while copying it, up to `limit` bytes; `on_whole` gets the copy if the body ends
    /// whole within the limit.
    /// `keeper` makes the copy of a body that comes in one chunk; one in several is assembled here.
    pub fn teed(inner: Incoming, limit: usize, keeper: Keeper, on_whole: OnWhole) -> Self {
        let expected = (inner.size_hint().lower() as usize).min(limit);
        Self::Teed(Box::new(Tee {
            inner,
            copy: Copied::new(expected),
            limit,
            on_whole: Some(on_whole),
            keeper,
            finishing: None,
        }))
    }
}

impl Tee {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some((copying, _)) = &mut self.finishing {
            let copy = std::task::ready!(Pin::new(copying).poll(cx));
            let (_, held) = self.finishing.take().expect("finishing");
            if let Some(on_whole) = self.on_whole.take() {
                on_whole(copy);
            }
            return Poll::Ready(held);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), true) = (frame.data_ref(), self.on_whole.is_some()) {
                    if self.copy.len() + data.len() > self.limit {
                        self.abandon();
                    } else {
                        self.copy.push(data.clone());
                    }
                }
                // hyper stops polling once a body says it has ended (e.g. its Content-Length is reached).
                self.inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            Poll::Ready(Some(Err(_))) => {
                self.abandon();
                false
            }
            Poll::Pending => false,
        };
        if !ended || self.on_whole.is_none() {
            return polled;
        }
        let copy = std::mem::take(&mut self.copy);
        match copy.single() {
            Some(chunk) => {
                let Poll::Ready(held) = polled else {
                    unreachable!("an ended body was ready")
                };
                self.finishing = Some((self.keeper.copying(chunk), held));
                self.poll_frame(cx)
            }
            None => {
                if let Some(on_whole) = self.on_whole.take() {
                    on_whole(copy.into_bytes());
                }
                polled
            }
        }
    }

    fn abandon(&mut self) {
        self.on_whole = None;
        self.copy = Copied::default();
    }
}

impl Watched {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.hasher.update(data);
                    self.len += data.len() as u64;
                }
                // hyper stops polling once a body says it has ended (e.g. its Content-Length is reached).
                if self.inner.is_end_stream() {
                    self.report();
                }
            }
            Poll::Ready(None) => self.report(),
            Poll::Ready(Some(Err(_))) => self.on_digest = None,
            Poll::Pending => {}
        }
        polled
    }

    fn report(&mut self) {
        if let Some(on_digest) = self.on_digest.take() {
            on_digest(self.hasher.digest128(), self.len);
        }
    }
}

impl From<Incoming> for Body {
    fn from(incoming: Incoming) -> Self {
        Self::Stream(incoming)
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(incoming) => Pin::new(incoming).poll_frame(cx),
            Self::Prefixed { prefix, rest } => match prefix.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Pin::new(rest).poll_frame(cx),
            },
            Self::Watched(watched) => watched.poll_frame(cx),
            Self::Teed(tee) => tee.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty | Self::Full(None) => true,
            Self::Full(Some(_))
            | Self::Prefixed {
                prefix: Some(_), ..
            } => false,
            Self::Stream(incoming) | Self::Prefixed { rest: incoming, .. } => {
                incoming.is_end_stream()
            }
            // Polled to the end even when empty, so the digest is always reported.
            Self::Watched(watched) => watched.on_digest.is_none() && watched.inner.is_end_stream(),
            Self::Teed(tee) => tee.on_whole.is_none() && tee.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty | Self::Full(None) => SizeHint::with_exact(0),
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Stream(incoming) => incoming.size_hint(),
            Self::Prefixed { prefix, rest } => {
                let done = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + done);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + done);
                }
                hint
            }
            Self::Watched(watched) => watched.inner.size_hint(),
            Self::Teed(tee) => tee.inner.size_hint(),
        }
    }
}

/// The outcome of reading a body with a size limit.
#[derive(Debug)]
pub enum Collected {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// The body is larger than the limit: what was read so far followed by the rest, ready to stream on.
    TooLarge(Body),
}

/// Reads `body` whole if it is at most `limit` bytes. Past the limit it stops reading and hands back a body
/// that replays what was read and streams the rest, so nothing larger than `limit` is ever held.
///
/// The copy of a whole body is made by `keeper` when there is one and the body came in one chunk (see
/// [`Keeper`]): bodies the cache keeps are collected with the cache's keeper, others without.
pub async fn collect_up_to(
    mut body: Incoming,
    limit: usize,
    keeper: Option<&Keeper>,
) -> Result<Collected, hyper::Error> {
    use http_body_util::BodyExt;

    if body.size_hint().lower() > limit as u64 {
        return Ok(Collected::TooLarge(Body::Stream(body)));
    }
    let mut copy = Copied::new(body.size_hint().lower() as usize);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: avatars have none worth keeping
        };
        let past_limit = copy.len() + data.len() > limit;
        copy.push(data);
        if past_limit {
            return Ok(Collected::TooLarge(Body::Prefixed {
                prefix: Some(copy.into_bytes()),
                rest: body,
            }));
        }
    }
    Ok(Collected::Whole(copy.keep(keeper).await))
}

/// A body's bytes copied out of the connection's read buffers (hyper hands out slices of them, 8 KiB and
/// more, which must not stay alive with a stored copy), in one allocation of their exact size when the length
/// was known.
///
/// The first chunk is held as it came and copied only when a second one arrives or the body ends, so a body
/// read in one go (most avatars) is copied once, by the cache's [`Keeper`] when it is to be stored. Only one
/// chunk is ever held uncopied, so a trickling upstream cannot pin a read buffer per chunk.
#[derive(Debug, Default)]
struct Copied {
    /// The first chunk, not yet copied (empty once `rest` has begun).
    first: Bytes,
    /// Everything from the second chunk on, the first copied in ahead of it.
    rest: BytesMut,
    /// The expected length (Content-Length), to size the copy.
    expected: usize,
}

impl Copied {
    fn new(expected: usize) -> Self {
        Self {
            expected,
            ..Self::default()
        }
    }

    fn len(&self) -> usize {
        self.first.len() + self.rest.len()
    }

    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.rest.is_empty() {
            if self.first.is_empty() {
                self.first = data; // held, not copied: see above
                return;
            }
            let first = std::mem::take(&mut self.first);
            self.rest
                .reserve(self.expected.max(first.len() + data.len()));
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&data);
    }

    /// The whole copy, made by `keeper` if the body came in one chunk.
    async fn keep(self, keeper: Option<&Keeper>) -> Bytes {
        match (keeper, self.single()) {
            (Some(keeper), Some(chunk)) => keeper.copying(chunk).await,
            _ => self.into_bytes(),
        }
    }

    /// The body's one chunk, not yet copied, if it came in one.
    fn single(&self) -> Option<Bytes> {
        (self.rest.is_empty() && !self.first.is_empty()).then(|| self.first.clone())
    }

    fn into_bytes(self) -> Bytes {
        if self.rest.is_empty() {
            Bytes::copy_from_slice(&self.first)
        } else {
            exact(self.rest)
        }
    }
}

/// The bytes in an allocation of their own size: a buffer that grew by doubling would otherwise keep up to
/// twice its length alive for as long as the cache holds it.
pub fn exact(buf: BytesMut) -> Bytes {
    if buf.capacity() > buf.len() + buf.len() / 16 {
        Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read buffer and a chunk sliced out of it, as hyper hands them out.
    fn chunk_of(buffer: &Bytes, range: std::ops::Range<usize>) -> Bytes {
        buffer.slice(range)
    }

    #[test]
    fn a_body_in_one_chunk_is_copied_and_frees_the_read_buffer() {
        let buffer = Bytes::from((0..8192u32).map(|i| i as u8).collect::<Vec<_>>());
        let mut copy = Copied::new(4196);
        copy.push(chunk_of(&buffer, 100..4296));
        let whole = copy.into_bytes();
        assert_eq!(whole, buffer.slice(100..4296));
        assert!(
            buffer.try_into_mut().is_ok(),
            "nothing kept refers to the read buffer"
        );
    }

    #[test]
    fn a_body_in_several_chunks_is_copied_whole_and_holds_no_read_buffer() {
        let first = Bytes::from(vec![1u8; 8192]);
        let second = Bytes::from(vec![2u8; 8192]);
        let mut copy = Copied::new(0); // no Content-Length
        copy.push(Bytes::new()); // an empty frame changes nothing
        copy.push(chunk_of(&first, 0..3000));
        assert_eq!(copy.len(), 3000);
        copy.push(chunk_of(&second, 0..2000));
        copy.push(chunk_of(&second, 2000..2500));
        assert_eq!(copy.len(), 5500);
        let whole = copy.into_bytes();
        assert_eq!(&whole[..3000], &[1u8; 3000][..]);
        assert_eq!(&whole[3000..], &[2u8; 2500][..]);
        assert!(
            first.try_into_mut().is_ok(),
            "the first buffer was copied out"
        );
        assert!(second.try_into_mut().is_ok(), "so were the others");
    }

    #[tokio::test]
    async fn kept_copies_are_the_same_bytes_with_or_without_a_keeper() {
        let keeper = Keeper::start();
        let buffer = Bytes::from(vec![9u8; 8192]);
        for keeper in [None, Some(&keeper)] {
            let mut one = Copied::new(4196);
            one.push(buffer.slice(0..4196));
            assert_eq!(one.keep(keeper).await, buffer.slice(0..4196));
            let mut two = Copied::new(4196);
            two.push(buffer.slice(0..96));
            two.push(buffer.slice(96..4196));
            assert_eq!(two.keep(keeper).await, buffer.slice(0..4196));
            assert_eq!(Copied::new(0).keep(keeper).await, Bytes::new());
        }
        assert!(
            buffer.try_into_mut().is_ok(),
            "no copy refers to the buffer"
        );
    }

    /// A response body from a real HTTP/1.1 exchange on loopback (hyper makes `Incoming` only itself).
    async fn incoming(body: &'static [u8]) -> Incoming {
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |_| async move {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    Bytes::from_static(body),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get("/").body(Body::Empty).unwrap();
        sender.send_request(request).await.unwrap().into_body()
    }

    #[tokio::test]
    async fn a_teed_body_ends_only_after_the_keepers_copy_is_stored() {
        use http_body_util::BodyExt;
        use std::sync::{Arc, Mutex};

        let (keeper, jobs) = Keeper::by_hand();
        let events = Arc::new(Mutex::new(Vec::new()));
        let stored = Arc::clone(&events);
        let body = Body::teed(
            incoming(b"console.log(1)").await,
            1024,
            keeper,
            Box::new(move |copy| stored.lock().unwrap().push(format!("stored {copy:?}"))),
        );
        let streamed = Arc::clone(&events);
        let client = tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                let frame = frame.unwrap();
                let data = frame.data_ref().unwrap();
                streamed.lock().unwrap().push(format!("sent {data:?}"));
            }
            streamed.lock().unwrap().push("end".to_owned());
        });
        // The body has come whole and its copy is asked for; nothing reaches the client until it is made.
        let job = tokio::task::spawn_blocking(move || jobs.recv().unwrap())
            .await
            .unwrap();
        assert!(
            events.lock().unwrap().is_empty(),
            "{:?}",
            events.lock().unwrap()
        );
        job.finish();
        client.await.unwrap();
        assert_eq!(
            *events.lock().unwrap(),
            [
                r#"stored b"console.log(1)""#,
                r#"sent b"console.log(1)""#,
                "end"
            ]
        );
    }
}
