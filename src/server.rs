//! The public listener: accepting connections, serving HTTP/1.1 and HTTP/2 (cleartext) on one port, and a
//! graceful drain on shutdown. Knows nothing of caching.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::config::ServerConfig;
use crate::framing::{FramingGuard, HeadLimits};
use crate::limits::{Activity, ConnectionSlots, Tracked};
use crate::proxy::Proxy;
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
    let builder = connection_builder(config);
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
                    let connection = Connection::new(peer, config, closed.clone());
                    serve(stream, connection, &builder, &graceful, &proxy, slot);
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
    drop(listener);
    drain(graceful, config.drain_timeout).await;
    drop(close);
    Ok(())
}

/// HTTP/1.1 and HTTP/2 (prior knowledge) on the same connection type, with the configured limits.
fn connection_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
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
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_concurrent_streams)
        // RFC 9113 §6.5.2 SETTINGS_MAX_HEADER_LIST_SIZE: the HTTP/2 counterpart of the head size.
        .max_header_list_size(u32::try_from(config.max_request_head_size).unwrap_or(u32::MAX));
    builder
}

/// One accepted client connection, before it is served.
struct Connection {
    /// The client's address.
    peer: SocketAddr,
    /// Closed after this long with no request in progress.
    idle_timeout: Duration,
    /// Completes when the server closes every connection (end of the drain).
    closed: watch::Receiver<()>,
    /// Head limits, for the framing guard.
    head_limits: HeadLimits,
    /// A response body with nothing from its source for this long is aborted.
    response_idle_timeout: Duration,
}

impl Connection {
    fn new(peer: SocketAddr, config: &ServerConfig, closed: watch::Receiver<()>) -> Self {
        Self {
            peer,
            idle_timeout: config.idle_timeout,
            closed,
            head_limits: HeadLimits {
                max_size: config.max_request_head_size,
                max_fields: config.max_headers,
                read_timeout: config.header_read_timeout,
            },
            response_idle_timeout: config.response_idle_timeout,
        }
    }
}

fn serve(
    stream: TcpStream,
    connection: Connection,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    proxy: &Arc<Proxy>,
    slot: OwnedSemaphorePermit,
) {
    let Connection {
        peer,
        idle_timeout,
        mut closed,
        head_limits,
        response_idle_timeout,
    } = connection;
    // Small responses (avatars, JSON) should leave at once rather than wait for more bytes.
    let _ = stream.set_nodelay(true);
    let client = ClientInfo {
        addr: peer,
        tls: false,
    };
    let proxy = Arc::clone(proxy);
    let activity = Activity::new();
    let requests = activity.clone();
    let service = service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        let in_progress = requests.begin();
        async move {
            let response = proxy.handle(request, client).await?;
            Ok::<_, Infallible>(
                response.map(|body| Tracked::new(body, in_progress, response_idle_timeout)),
            )
        }
    });
    let connection = builder
        // HTTP/1.1 heads are checked for ambiguous framing before hyper reads them (framing.rs).
        .serve_connection(
            TokioIo::new(FramingGuard::new(stream, head_limits, peer)),
            service,
        )
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        tokio::select! {
            result = connection => if let Err(err) = result {
                // A client that goes away mid-request is routine; log for debugging only.
                tracing::debug!(client = %peer, error = %err, "connection closed with an error");
            },
            // Nothing is ever sent: this completes when the server drops the sender.
            _ = closed.changed() => tracing::debug!(client = %peer, "connection closed by the server"),
            () = activity.idle_for(idle_timeout) => tracing::debug!(client = %peer, "idle connection closed"),
        }
        drop(slot);
    });
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
