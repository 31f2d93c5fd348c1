//! The public listener: accepting connections within `max_connections`, the PROXY protocol header when
//! enabled, TLS when configured, the HTTP/1.1 framing guard on the bytes that are left, serving HTTP/1.1 and
//! HTTP/2 on one port, closing idle connections, and a graceful drain on shutdown. Knows nothing of caching.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::express::Express;
use crate::framing::{FramingGuard, HeadLimits, Shortcut};
use crate::interim;
use crate::limits::{Activity, Closing, ConnectionSlots, Tracked};
use crate::proxy::Proxy;
use crate::proxy_protocol::{self, Rewind};
use crate::reload;
use crate::tls;
use crate::upstream::ClientInfo;

/// After a failed `accept` (e.g. out of file descriptors) the loop waits this long instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `listener` until `shutdown` completes, then stops accepting and lets in-flight requests finish for
/// up to `drain_timeout`; connections still open then are closed as it returns (or when it is dropped), never
/// left running on their own. Takes a bound listener so tests and benchmarks can run the real proxy on port 0.
pub async fn run(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // TLS or not is a property of the listener, fixed at start; the certificate follows reloads.
    let tls = proxy.live().load().config.tls.is_some();
    let tls = tls.then(|| {
        let certs = reload::LiveCert::new(Arc::clone(proxy.live()));
        TlsAcceptor::from(tls::server_config(certs))
    });
    let connections = Arc::new(Connections {
        builder: connection_builder(config),
        tls,
        express: Express::new(Arc::clone(&proxy)),
        proxy,
        proxy_protocol: config.proxy_protocol,
        max_request_head_size: config.max_request_head_size,
        max_headers: config.max_headers,
    });
    let graceful = GracefulShutdown::new();
    let slots = ConnectionSlots::new(config.max_connections);
    // Every connection task ends when `close` is dropped: after the drain, or when this future is.
    let (close, closed) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        // A free slot first: at `max_connections` the loop waits here, not on accept, so further clients
        // wait in the listen backlog instead of being accepted and starved.
        let slot = tokio::select! {
            slot = slots.acquire() => slot,
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let watcher = graceful.watcher();
                    spawn_connection(&connections, stream, peer, slot, watcher, closed.clone());
                }
                Err(err) => {
                    // Errors of one connection attempt never stop the listener.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    // First, so `/readyz` turns 503 while the connections still open are drained.
    connections.proxy.health().begin_drain();
    drop(listener);
    drain(graceful, config.drain_timeout).await;
    drop(close);
    Ok(())
}

/// Runs hyper's HTTP/2 stream tasks (HTTP/1.1 spawns nothing). Each is boxed before `tokio::spawn`: a stream
/// task holds the whole request future, several KiB, and `spawn` would otherwise copy it through each of its
/// layers (BENCHMARKS.md, "Figures behind choices in the code"). HTTP/1.1 requests are polled in place and
/// allocate nothing for this.
///
/// A stream is first polled once right here, in the connection's task: a cache hit is answered and sent
/// within that poll and needs no task at all (fewer instructions and more h2c hits a second, measured with
/// `scripts/bench-h2.sh`: BENCHMARKS.md). A stream still pending is spawned and polled again by its task,
/// which registers the task's waker (the first poll's waker does nothing, and a future must allow a poll it
/// was not woken for). A stream that panics in that first poll is dropped, as its task would be, not the
/// connection.
#[derive(Clone, Copy, Debug)]
struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let mut future = Box::pin(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            future.as_mut().poll(&mut cx).is_pending()
        }));
        if let Ok(true) = first {
            tokio::spawn(future);
        }
    }
}

/// HTTP/1.1 and HTTP/2 (prior knowledge) on the same connection type, with the configured limits.
fn connection_builder(config: &ServerConfig) -> auto::Builder<StreamExecutor> {
    let mut builder = auto::Builder::new(StreamExecutor);
    builder
        .http1()
        .timer(TokioTimer::new())
        // The head is timed by the framing guard, from its first byte (hyper's timer would also count the
        // idle time before it, which is `idle_timeout`'s, and cannot see a head the guard holds back).
        .header_read_timeout(None)
        // hyper's read buffer bounds the head: a head that does not fit gets 431 (RFC 6585 §5). Bodies are
        // read through the same buffer in pieces, so this does not limit them.
        .max_buf_size(config.max_request_head_size)
        .max_headers(config.max_headers)
        // A client that shuts down its writing side after a whole request (`nc -N`, some HTTP/1.0 clients)
        // still reads (TCP's half-close, RFC 9293 §3.6): its end of stream ends the connection after the
        // answer, not before it.
        .half_close(true)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_concurrent_streams)
        // RFC 9113 §6.5.2 SETTINGS_MAX_HEADER_LIST_SIZE: the HTTP/2 counterpart of the head size.
        .max_header_list_size(u32::try_from(config.max_request_head_size).unwrap_or(u32::MAX));
    builder
}

/// What every connection of the listener shares.
struct Connections {
    /// HTTP/1.1 + HTTP/2 settings.
    builder: auto::Builder<StreamExecutor>,
    /// TLS termination, when `[tls]` is configured.
    tls: Option<TlsAcceptor>,
    /// The request handler.
    proxy: Arc<Proxy>,
    /// The express lane (`server.express_lane`), answering fresh avatar hits beside hyper.
    express: Arc<dyn Shortcut>,
    /// Each connection starts with a PROXY protocol header.
    proxy_protocol: bool,
    /// `server.max_request_head_size`, as `builder` has it (the guard and hyper must agree).
    max_request_head_size: usize,
    /// `server.max_headers`, as `builder` has it.
    max_headers: usize,
}

/// The limits of one connection, read from the configuration in force when it is accepted (so a reload
/// applies to the connections accepted after it).
#[derive(Clone, Copy)]
struct ConnectionLimits {
    /// Closed after this long with no request in progress (`server.idle_timeout`).
    idle_timeout: Duration,
    /// Time allowed for each step before HTTP (the PROXY header, the TLS handshake) and for each HTTP/1.1
    /// request head from its first byte (`server.header_read_timeout`).
    handshake_timeout: Duration,
    /// Head limits, for the framing guard.
    head: HeadLimits,
    /// A response body with nothing from its source for this long is aborted.
    response_idle_timeout: Duration,
    /// A response the client takes nothing of for this long closes the connection (`server.send_timeout`).
    send_timeout: Duration,
    /// Fresh avatar hits are answered beside hyper.
    express_lane: bool,
}

impl Connections {
    fn limits(&self) -> ConnectionLimits {
        let snapshot = self.proxy.live().load();
        let server = &snapshot.config.server;
        ConnectionLimits {
            idle_timeout: server.idle_timeout,
            handshake_timeout: server.header_read_timeout,
            head: HeadLimits {
                max_size: self.max_request_head_size,
                max_fields: self.max_headers,
                read_timeout: server.header_read_timeout,
            },
            response_idle_timeout: server.response_idle_timeout,
            send_timeout: server.send_timeout,
            express_lane: server.express_lane,
        }
    }
}

/// One task per connection, holding its `slot` until it ends; ended early when the server closes (`closed`
/// sees its sender dropped), when the connection has had no request in progress for `idle_timeout`, or when
/// one of its responses has waited on the client for `send_timeout`. Ending it drops the connection with
/// its response bodies, and so their upstream connections, which close rather than wait on this client.
/// It is the whole connection, as nginx's `send_timeout` does for HTTP/1.1 and HTTP/2: a client that left
/// one response unread for that long is not reading.
fn spawn_connection(
    connections: &Arc<Connections>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    watcher: Watcher,
    mut closed: watch::Receiver<()>,
) {
    let connections = Arc::clone(connections);
    tokio::spawn(async move {
        let _open = connections.proxy.metrics().connection_opened();
        let limits = connections.limits();
        // Idle from its accept: a connection that never sends a request (or never finishes its PROXY header
        // or handshake) is closed like an idle keep-alive one.
        let activity = Activity::new();
        tokio::select! {
            () = connections.serve(stream, peer, watcher, limits, activity.clone()) => {}
            // Nothing is ever sent: this completes when the server drops the sender.
            _ = closed.changed() => tracing::debug!(client = %peer, "connection closed by the server"),
            closing = activity.watch(limits.idle_timeout, limits.send_timeout) => match closing {
                Closing::Idle => tracing::debug!(client = %peer, "idle connection closed"),
                Closing::ClientStalled => tracing::debug!(
                    client = %peer,
                    "connection closed: the client took nothing of a response for server.send_timeout"
                ),
            },
        }
        drop(slot);
    });
}

impl Connections {
    /// The life of one connection: the PROXY header if enabled, the TLS handshake if configured, then HTTP
    /// until either side closes.
    async fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        watcher: Watcher,
        limits: ConnectionLimits,
        activity: Activity,
    ) {
        // Small responses (avatars, JSON) should leave at once rather than wait for more bytes.
        let _ = stream.set_nodelay(true);
        let Some((stream, addr)) = self
            .client_address(stream, peer, limits.handshake_timeout)
            .await
        else {
            return;
        };
        // Trusted proxies follow reloads: each connection reads the list in force when it starts.
        let trusted = self
            .proxy
            .live()
            .load()
            .config
            .server
            .trusted_proxies
            .contains(addr.ip());
        let mut client = ClientInfo {
            addr,
            tls: false,
            trusted,
            interim: None,
        };
        let Some(acceptor) = &self.tls else {
            return self
                .serve_http(stream, client, watcher, limits, activity)
                .await;
        };
        match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                client.tls = true;
                self.serve_http(stream, client, watcher, limits, activity)
                    .await;
            }
            // Scanners and clients with no common version or suite: routine, not an operator's problem.
            Ok(Err(err)) => tracing::debug!(client = %addr, error = %err, "TLS handshake failed"),
            Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
        }
    }

    /// The client's address: the peer's, or the one its PROXY header names. `None` when the header is
    /// missing, malformed or late: the connection is closed without a response (HAProxy's behaviour).
    async fn client_address(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Option<(Rewind<TcpStream>, SocketAddr)> {
        if !self.proxy_protocol {
            return Some((Rewind::new(Bytes::new(), stream), peer));
        }
        let read = proxy_protocol::read_header(&mut stream);
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(accepted)) => {
                let addr = accepted.source.unwrap_or(peer);
                Some((Rewind::new(accepted.rest, stream), addr))
            }
            Ok(Err(err)) => {
                tracing::debug!(peer = %peer, error = %err, "PROXY header refused");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "no PROXY header in time");
                None
            }
        }
    }

    /// HTTP/1.1 or HTTP/2 on an established stream (decrypted, its PROXY header consumed), watched by the
    /// graceful drain. The framing guard sits right under hyper: it must see exactly the bytes hyper would,
    /// so a PROXY line is never read as a request line and TLS records never as HTTP.
    async fn serve_http<I>(
        &self,
        io: I,
        client: ClientInfo,
        watcher: Watcher,
        limits: ConnectionLimits,
        activity: Activity,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // HTTP/1.1 heads are checked for ambiguous framing before hyper reads them (framing.rs), fresh
        // avatar hits answered there while hyper is idle (express.rs), and the upstream's 1xx interim
        // responses written there for the request in progress (interim.rs).
        let slot = interim::Slot::new();
        let mut io =
            FramingGuard::new(io, limits.head, client.addr).with_interim(Arc::clone(&slot));
        if limits.express_lane {
            io = io.with_shortcut(Arc::clone(&self.express), activity.clone());
        }
        let proxy = Arc::clone(&self.proxy);
        let response_idle_timeout = limits.response_idle_timeout;
        let service = service_fn(move |request: Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            // Counted in progress (not idle) from its head until its response body ends or is dropped.
            let in_progress = activity.begin();
            // The connection's request from here: hyper hands one over only once the response before it is
            // wholly in its write buffer, so the guard can tell when the request may get interim responses.
            let client = ClientInfo {
                interim: slot.begin(request.version()),
                ..client
            };
            async move {
                let response = proxy.handle(request, client).await?;
                Ok::<_, Infallible>(
                    response.map(|body| Tracked::new(body, in_progress, response_idle_timeout)),
                )
            }
        });
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        if let Err(err) = watcher.watch(connection).await {
            // A client that goes away mid-request is routine; log for debugging only.
            tracing::debug!(client = %client.addr, error = %err, "connection closed with an error");
        }
    }
}

/// Lets open connections finish their in-flight requests (idle keep-alive connections close at once).
async fn drain(graceful: GracefulShutdown, timeout: Duration) {
    let open = graceful.count();
    tracing::info!(open_connections = open, ?timeout, "draining");
    match tokio::time::timeout(timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained; all connections closed"),
        Err(_) => tracing::warn!(
            ?timeout,
            "drain timeout reached; closing the remaining connections"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Sets its flag when dropped.
    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_stream_that_is_ready_at_once_runs_before_execute_returns() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Flag(Arc::clone(&ran));
        StreamExecutor.execute(async move { drop(flag) });
        assert!(
            ran.load(Ordering::SeqCst),
            "polled in place, not left to a task"
        );
    }

    #[tokio::test]
    async fn a_pending_stream_is_spawned_and_woken_by_its_task() {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (finished, done) = tokio::sync::oneshot::channel::<()>();
        StreamExecutor.execute(async move {
            wait.await.unwrap();
            finished.send(()).unwrap();
        });
        go.send(()).unwrap();
        // Completes only if the spawned task registered its own waker: the first poll's did nothing.
        tokio::time::timeout(std::time::Duration::from_secs(10), done)
            .await
            .expect("the stream finished")
            .unwrap();
    }

    #[tokio::test]
    async fn a_stream_that_panics_in_its_first_poll_is_dropped_not_the_caller() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(Arc::clone(&dropped));
        StreamExecutor.execute(async move {
            let _flag = flag;
            panic!("a bug in one stream");
        });
        assert!(dropped.load(Ordering::SeqCst), "the stream was dropped");
    }
}
