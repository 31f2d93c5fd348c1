//! The `cloudreve-edge` binary: command line, logging, configuration, then [`cloudreve_edge::server::run`].

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use cloudreve_edge::config::{ConfigError, LogConfig, LogFormat};
use cloudreve_edge::{Config, Proxy, admin, demo, server};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that cannot be used (sysexits `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;

/// An edge caching reverse proxy for Cloudreve.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, value_name = "PATH", default_value = "proxy.toml")]
    config: PathBuf,
    /// Listen address, overriding `server.listen` (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin listen address, overriding `admin.listen` (e.g. 127.0.0.1:9091).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Upstream Cloudreve URL, overriding `upstream.url` (e.g. http://127.0.0.1:5212).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Run in front of a built-in Cloudreve look-alike on loopback, to try the cache without a Cloudreve.
    #[arg(long, conflicts_with = "upstream")]
    demo: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("cloudreve-edge: invalid configuration: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    init_tracing(&config.log);
    match start(config, cli.demo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("cloudreve-edge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The file (or the defaults, for `--demo` without a file), then the flags over it.
fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = if cli.demo && !cli.config.exists() {
        Config::default()
    } else {
        Config::load(&cli.config)?
    };
    if cli.demo {
        // The demo listens on loopback only, whatever the file says.
        config.set_listen(&format!("127.0.0.1:{}", config.server.listen.port()))?;
        config.set_admin_listen(&format!("127.0.0.1:{}", config.admin.listen.port()))?;
    }
    if let Some(listen) = &cli.listen {
        config.set_listen(listen)?;
    }
    if let Some(listen) = &cli.admin_listen {
        config.set_admin_listen(listen)?;
    }
    if let Some(upstream) = &cli.upstream {
        config.set_upstream(upstream)?;
    }
    config.check_listeners()?;
    Ok(config)
}

fn init_tracing(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn start(config: Config, demo: bool) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.server.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(config, demo))
}

async fn run(mut config: Config, demo: bool) -> anyhow::Result<()> {
    if demo {
        let upstream = demo::spawn_upstream()
            .await
            .context("cannot start the demo upstream")?;
        config.set_upstream(&format!("http://{upstream}"))?;
    }
    // Before the listening line: a signal sent the moment the proxy reports ready must already be a shutdown.
    let shutdown = shutdown_signal();
    let listener = bind(config.server.listen).await?;
    let admin_listener = bind(config.admin.listen).await?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let proxy = Proxy::new(&config);
    // The admin listener is never shut down: it answers /readyz (503) through the whole drain.
    tokio::spawn(admin::run(
        admin_listener,
        Arc::clone(&proxy),
        std::future::pending(),
    ));
    tracing::info!(%addr, admin = %admin_addr, upstream = %config.upstream.authority, "listening");
    if demo {
        println!("{}", demo::instructions(addr, admin_addr));
    }
    server::run(listener, proxy, &config.server, shutdown).await?;
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called, not when the future is
/// first polled: until then the default disposition would kill the process instead of draining it.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn received(signal: std::io::Result<Signal>) {
        match signal {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    }
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    if terminate.is_err() {
        tracing::warn!("cannot listen for SIGTERM; only Ctrl-C stops the proxy");
    }
    async move {
        tokio::select! {
            () = received(terminate) => tracing::info!("SIGTERM received"),
            () = received(interrupt) => tracing::info!("SIGINT received"),
        }
    }
}
