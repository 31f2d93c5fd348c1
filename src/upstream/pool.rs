//! Keep-alive HTTP/1.1 connections to the one upstream.
//!
//! hyper-util's general-purpose client keys its pool by scheme and authority (SipHash on every checkout and
//! return), builds a connect future for every request and spawns a task to return each connection. With a
//! single upstream none of that is needed, and this pool costs a forwarded request a fifth fewer instructions
//! (BENCHMARKS.md, "Figures behind choices in the code"). Here a connection is a `SendRequest` in a list: a
//! request takes one that is ready (idle, open), or opens a new one; the connection goes back to the list
//! with the response head and turns ready again by itself once its response body has been read to the end.
//!
//! A pooled connection the upstream closed while it sat idle fails before the request is written; the
//! request comes back unsent and is tried on another connection, then on a new one (as hyper-util does).
//! A request that was already written is never sent twice.
//!
//! Every open connection holds a permit (`upstream.max_connections`) until its driver task ends, so what all
//! clients together hold of the upstream is bounded, however many streams HTTP/2 multiplies onto a client
//! connection (RFC 9113 §10.5). At the cap a request waits for a permit or a pooled connection turning idle,
//! at most `open_wait`, then fails as [`PoolError::Saturated`].

use std::error::Error as StdError;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_service::Service as _;

use crate::upload::UploadBody;

/// Pooled connections found closed before the request is given a new one.
const MAX_STALE_ATTEMPTS: usize = 4;

/// At the cap, how often a waiting request looks for a pooled connection turning idle: nothing signals it
/// (hyper marks a connection ready once its response body has been read), while a closing connection's
/// permit wakes the waiter at once.
const RECHECK: Duration = Duration::from_millis(20);

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be made (refused, unreachable, timed out, TLS failed).
    #[error("could not connect to the upstream")]
    Connect(#[source] Box<dyn StdError + Send + Sync>),
    /// The connection failed while the request was sent or the response head awaited.
    #[error("upstream request failed")]
    Request(#[source] hyper::Error),
    /// `upstream.max_connections` were open and none freed within this long.
    #[error("no upstream connection freed within {0:?}")]
    Saturated(Duration),
}

/// How many connections a [`Pool`] keeps and opens.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// An idle connection is closed after this long (`upstream.pool_idle_timeout`).
    pub idle_timeout: Duration,
    /// Connections kept for reuse (`upstream.pool_max_idle`).
    pub max_pooled: usize,
    /// Connections open at once (`upstream.max_connections`).
    pub max_open: usize,
    /// How long a request waits at `max_open` for a connection to free (`upstream.connect_timeout`).
    pub open_wait: Duration,
}

/// A connection for one request: a pooled one, ready, or room to open a new one.
enum Slot {
    Pooled(http1::SendRequest<UploadBody>),
    New(OwnedSemaphorePermit),
}

/// Connections to the configured upstream. The state sits behind an `Arc` so that the task closing idle
/// connections can hold it weakly and end with the pool.
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/` of the upstream: what the connector connects to (and, for TLS, verifies).
    target: Uri,
    /// Connections that are idle or busy with a response body, most recently returned last.
    conns: Mutex<Conns>,
    idle_timeout: Duration,
    max_pooled: usize,
    /// One permit per open connection, held by its driver task until the connection closes.
    open: Arc<Semaphore>,
    /// How long a request waits for a permit or a pooled connection at the cap.
    open_wait: Duration,
}

#[derive(Default)]
struct Conns {
    list: Vec<Conn>,
    /// The task that closes idle connections runs (started with the first connection).
    reaper: bool,
}

struct Conn {
    sender: http1::SendRequest<UploadBody>,
    /// When it was last given a request's response; idle since then at the latest.
    returned: Instant,
}

impl Pool {
    /// A pool for `target` (`scheme://authority/`) within `limits`.
    pub fn new(connector: HttpsConnector<HttpConnector>, target: Uri, limits: PoolLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                connector,
                target,
                conns: Mutex::new(Conns::default()),
                idle_timeout: limits.idle_timeout,
                max_pooled: limits.max_pooled,
                open: Arc::new(Semaphore::new(limits.max_open)),
                open_wait: limits.open_wait,
            }),
        }
    }

    /// Sends `request` (origin-form target, `Host` set) on a pooled or new connection and returns the
    /// response head; the body streams from the connection.
    pub async fn send(
        &self,
        mut request: Request<UploadBody>,
    ) -> Result<Response<Incoming>, PoolError> {
        for _ in 0..MAX_STALE_ATTEMPTS {
            let mut sender = match self.inner.slot().await? {
                Slot::Pooled(sender) => sender,
                Slot::New(permit) => return self.send_new(permit, request).await,
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(sender);
                    return Ok(response);
                }
                Err(mut err) => match err.take_message() {
                    // Closed before anything was written: safe to send elsewhere.
                    Some(unsent) => request = unsent,
                    None => return Err(PoolError::Request(err.into_error())),
                },
            }
        }
        let permit = self.inner.permit().await?;
        self.send_new(permit, request).await
    }

    /// Sends `request` on a new connection, which holds `permit` while it is open.
    async fn send_new(
        &self,
        permit: OwnedSemaphorePermit,
        request: Request<UploadBody>,
    ) -> Result<Response<Incoming>, PoolError> {
        let mut sender = self.inner.connect(permit).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(PoolError::Request)?;
        self.checkin(sender);
        Ok(response)
    }

    /// Keeps a connection whose response head has arrived. It becomes ready for the next request when the
    /// body has been read; a body dropped unread closes it instead.
    fn checkin(&self, sender: http1::SendRequest<UploadBody>) {
        let mut conns = self.inner.lock();
        if conns.list.len() >= self.inner.max_pooled || sender.is_closed() {
            return;
        }
        conns.list.push(Conn {
            sender,
            returned: Instant::now(),
        });
        if !conns.reaper {
            conns.reaper = true;
            tokio::spawn(reap(Arc::downgrade(&self.inner), self.inner.idle_timeout));
        }
    }

    /// Connections held now (idle or finishing a response body).
    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.inner.lock().list.len()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently returned connection that is ready for a request; closed ones are dropped on the way.
    fn checkout(&self) -> Option<http1::SendRequest<UploadBody>> {
        let mut conns = self.lock();
        let mut i = conns.list.len();
        while i > 0 {
            i -= 1;
            let sender = &conns.list[i].sender;
            if sender.is_closed() {
                conns.list.swap_remove(i);
            } else if sender.is_ready() {
                return Some(conns.list.remove(i).sender);
            }
        }
        None
    }

    /// A pooled connection that is ready, else room for a new one; at the cap, whichever comes first within
    /// `open_wait`.
    async fn slot(&self) -> Result<Slot, PoolError> {
        if let Some(sender) = self.checkout() {
            return Ok(Slot::Pooled(sender));
        }
        if let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() {
            return Ok(Slot::New(permit));
        }
        let deadline = Instant::now() + self.open_wait;
        while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            let open = Arc::clone(&self.open).acquire_owned();
            if let Ok(permit) = tokio::time::timeout(wait.min(RECHECK), open).await {
                return Ok(Slot::New(permit.expect("the semaphore is never closed")));
            }
            if let Some(sender) = self.checkout() {
                return Ok(Slot::Pooled(sender));
            }
        }
        Err(PoolError::Saturated(self.open_wait))
    }

    /// Room for a new connection, waiting at the cap for at most `open_wait`.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, PoolError> {
        let open = Arc::clone(&self.open).acquire_owned();
        match tokio::time::timeout(self.open_wait, open).await {
            Ok(permit) => Ok(permit.expect("the semaphore is never closed")),
            Err(_) => Err(PoolError::Saturated(self.open_wait)),
        }
    }

    /// Opens a connection; its driver task holds `permit` until the connection closes.
    async fn connect(
        &self,
        permit: OwnedSemaphorePermit,
    ) -> Result<http1::SendRequest<UploadBody>, PoolError> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|err| PoolError::Connect(Box::new(err)))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection closed with an error");
            }
            drop(permit);
        });
        Ok(sender)
    }

    /// Drops connections that are closed, or idle for `idle_timeout` by `now`.
    fn prune(&self, now: Instant) {
        self.lock().list.retain(|conn| {
            let idle_too_long = conn.sender.is_ready()
                && now.saturating_duration_since(conn.returned) >= self.idle_timeout;
            !conn.sender.is_closed() && !idle_too_long
        });
    }
}

/// Closes idle connections every quarter of the idle timeout, for as long as the pool exists.
async fn reap(pool: Weak<Inner>, idle_timeout: Duration) {
    let period = (idle_timeout / 4).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.prune(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::body::Body;

    fn pool(addr: std::net::SocketAddr, idle_timeout: Duration, max_pooled: usize) -> Pool {
        capped_pool(addr, idle_timeout, max_pooled, 1024)
    }

    fn capped_pool(
        addr: std::net::SocketAddr,
        idle_timeout: Duration,
        max_pooled: usize,
        max_open: usize,
    ) -> Pool {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(&crate::tls::UpstreamRoots::none()))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let target = format!("http://{addr}/").parse().unwrap();
        let limits = PoolLimits {
            idle_timeout,
            max_pooled,
            max_open,
            open_wait: Duration::from_millis(300),
        };
        Pool::new(connector, target, limits)
    }

    fn get(path: &str) -> Request<UploadBody> {
        let request = Request::get(path)
            .header("host", "upstream")
            .body(Body::Empty)
            .unwrap();
        let (parts, body) = request.into_parts();
        let (body, _sent) = UploadBody::new(body, Duration::from_secs(5));
        Request::from_parts(parts, body)
    }

    /// A keep-alive HTTP/1.1 upstream on loopback that counts the connections it accepts.
    async fn upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        // `/big/...`: 4 MiB, more than the connection buffers while nobody reads it.
                        let body = match request.uri().path().starts_with("/big/") {
                            true => Bytes::from(vec![b'x'; 4 << 20]),
                            false => Bytes::from(request.uri().to_string()),
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    async fn body_of(response: Response<Incoming>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn one_connection_serves_requests_one_after_another() {
        let (addr, accepted) = upstream().await;
        let pool = pool(addr, Duration::from_secs(90), 8);
        for i in 0..5 {
            let response = pool.send(get(&format!("/n/{i}"))).await.unwrap();
            // The request reached the upstream in origin form, as sent.
            assert_eq!(body_of(response).await, format!("/n/{i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.pooled(), 1);
    }

    #[tokio::test]
    async fn a_busy_connection_is_not_shared_and_the_pool_keeps_at_most_its_limit() {
        let (addr, accepted) = upstream().await;
        let pool = pool(addr, Duration::from_secs(90), 2);
        // Three large responses held unread at once: three connections.
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(pool.send(get(&format!("/big/{i}"))).await.unwrap());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.pooled(), 2, "the third is not kept");
        for response in held {
            assert_eq!(body_of(response).await.len(), 4 << 20);
        }
        // The two kept ones are reused; nothing new is opened.
        for i in 0..4 {
            body_of(pool.send(get(&format!("/again/{i}"))).await.unwrap()).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_costs_no_request() {
        // Answers one request per connection with keep-alive framing, then closes without saying so.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(n @ 1..) = stream.read(&mut buf).await else {
                        break;
                    };
                    head.extend_from_slice(&buf[..n]);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                drop(stream);
            }
        });
        let pool = pool(addr, Duration::from_secs(90), 8);
        for _ in 0..3 {
            let response = pool.send(get("/")).await.unwrap();
            assert_eq!(body_of(response).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (addr, accepted) = upstream().await;
        let pool = pool(addr, Duration::from_secs(10), 8);
        body_of(pool.send(get("/")).await.unwrap()).await;
        assert_eq!(pool.pooled(), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(pool.pooled(), 1, "not idle long enough yet");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(pool.pooled(), 0);
        // The next request opens a new connection.
        body_of(pool.send(get("/")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn at_the_cap_a_request_waits_then_fails_and_an_idle_connection_is_still_reused() {
        let (addr, accepted) = upstream().await;
        let pool = capped_pool(addr, Duration::from_secs(90), 8, 1);
        // The one connection is busy while its large response is held unread.
        let held = pool.send(get("/big/0")).await.unwrap();
        let err = pool.send(get("/second")).await.unwrap_err();
        assert!(matches!(err, PoolError::Saturated(_)), "{err:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Read to its end, it turns idle; a request waiting at the cap takes it.
        let waiting = tokio::spawn(async move {
            let response = pool.send(get("/third")).await;
            (pool, response)
        });
        assert_eq!(body_of(held).await.len(), 4 << 20);
        let (pool, response) = waiting.await.unwrap();
        assert_eq!(body_of(response.unwrap()).await, "/third");
        body_of(pool.send(get("/fourth")).await.unwrap()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "never past the cap");
    }

    #[tokio::test]
    async fn a_closed_connection_gives_its_room_back() {
        let (addr, accepted) = upstream().await;
        // Nothing is kept for reuse: each connection closes after its response.
        let pool = capped_pool(addr, Duration::from_secs(90), 0, 1);
        for i in 0..3 {
            let response = pool.send(get(&format!("/n/{i}"))).await.unwrap();
            assert_eq!(body_of(response).await, format!("/n/{i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = pool(addr, Duration::from_secs(90), 8)
            .send(get("/"))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolError::Connect(_)), "{err:?}");
    }
}
