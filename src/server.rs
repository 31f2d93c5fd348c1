//! The public listener: accepting connections, serving HTTP/1.1 and HTTP/2 (cleartext) on one port, and a
//! graceful drain on shutdown. Knows nothing of caching.

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
use tokio::sync::watch;

use crate::config::ServerConfig;
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
    // Every connection task ends when `close` is dropped: after the drain, or when this future is.
    let (close, closed) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve(stream, peer, &builder, &graceful, &proxy, closed.clone()),
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
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.h2_max_concurrent_streams);
    builder
}

fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    proxy: &Arc<Proxy>,
    mut closed: watch::Receiver<()>,
) {
    // Small responses (avatars, JSON) should leave at once rather than wait for more bytes.
    let _ = stream.set_nodelay(true);
    let client = ClientInfo {
        addr: peer,
        tls: false,
    };
    let proxy = Arc::clone(proxy);
    let service = service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        async move { proxy.handle(request, client).await }
    });
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
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
        }
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
