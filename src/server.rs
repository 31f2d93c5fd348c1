//! The public listener: accepting connections, the PROXY protocol header when enabled, TLS when configured,
//! serving HTTP/1.1 and HTTP/2 on one port, and a graceful drain on shutdown. Knows nothing of caching.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::proxy::Proxy;
use crate::proxy_protocol::{self, Rewind};
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
    let tls = tls.then(|| TlsAcceptor::from(tls::server_config(Arc::clone(proxy.live()))));
    let connections = Arc::new(Connections {
        builder: connection_builder(config),
        tls,
        proxy,
        proxy_protocol: config.proxy_protocol,
        handshake_timeout: config.header_read_timeout,
    });
    let graceful = GracefulShutdown::new();
    // Every connection task ends when `close` is dropped: after the drain, or when this future is.
    let (close, closed) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    spawn_connection(&connections, stream, peer, graceful.watcher(), closed.clone());
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

/// What every connection of the listener shares.
struct Connections {
    /// HTTP/1.1 + HTTP/2 settings.
    builder: auto::Builder<TokioExecutor>,
    /// TLS termination, when `[tls]` is configured.
    tls: Option<TlsAcceptor>,
    /// The request handler.
    proxy: Arc<Proxy>,
    /// Each connection starts with a PROXY protocol header.
    proxy_protocol: bool,
    /// Time allowed for each step before HTTP: the PROXY header, the TLS handshake.
    handshake_timeout: Duration,
}

/// One task per connection, ended early when the server closes (`closed` sees its sender dropped).
fn spawn_connection(
    connections: &Arc<Connections>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    mut closed: watch::Receiver<()>,
) {
    let connections = Arc::clone(connections);
    tokio::spawn(async move {
        let _open = connections.proxy.metrics().connection_opened();
        tokio::select! {
            () = connections.serve(stream, peer, watcher) => {}
            // Nothing is ever sent: this completes when the server drops the sender.
            _ = closed.changed() => tracing::debug!(client = %peer, "connection closed by the server"),
        }
    });
}

impl Connections {
    /// The life of one connection: the PROXY header if enabled, the TLS handshake if configured, then HTTP
    /// until either side closes.
    async fn serve(&self, stream: TcpStream, peer: SocketAddr, watcher: Watcher) {
        // Small responses (avatars, JSON) should leave at once rather than wait for more bytes.
        let _ = stream.set_nodelay(true);
        let Some((stream, addr)) = self.client_address(stream, peer).await else {
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
        };
        let Some(acceptor) = &self.tls else {
            return self.serve_http(stream, client, watcher).await;
        };
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                client.tls = true;
                self.serve_http(stream, client, watcher).await;
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
    ) -> Option<(Rewind<TcpStream>, SocketAddr)> {
        if !self.proxy_protocol {
            return Some((Rewind::new(Bytes::new(), stream), peer));
        }
        let read = proxy_protocol::read_header(&mut stream);
        match tokio::time::timeout(self.handshake_timeout, read).await {
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

    /// HTTP/1.1 or HTTP/2 on an established stream, watched by the graceful drain.
    async fn serve_http<I>(&self, io: I, client: ClientInfo, watcher: Watcher)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = Arc::clone(&self.proxy);
        let service = service_fn(move |request| {
            let proxy = Arc::clone(&proxy);
            async move { proxy.handle(request, client).await }
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
