//! The `cloudreve-edge` binary: command line, logging, configuration, then [`cloudreve_edge::server::run`].

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use cloudreve_edge::config::{ConfigError, LogConfig, LogFormat};
use cloudreve_edge::reload;
use cloudreve_edge::{Config, Proxy, access_log, admin, cluster, demo, restart, server};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that cannot be used (sysexits `EX_USAGE`).
const EXIT_CONFIG: u8 = 64;
/// Exit code when a second SIGTERM/SIGINT cut the drain short.
const EXIT_FORCED: u8 = 1;
/// After the drain, invalidations still queued for the cluster's stream get this long to be appended.
const CLUSTER_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

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
    let set_level = init_tracing(&config.log);
    if let Err(err) = start_access_log(&config.log) {
        eprintln!("cloudreve-edge: invalid configuration: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let result = start(cli, config, set_level);
    // Whatever ended the run, the lines still in memory are written before the process exits.
    if let Some(sink) = access_log::installed() {
        sink.close();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("cloudreve-edge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the access log's writer thread, on `log.access_log_path` or standard error. Started even with
/// `log.access_log = false`, which a reload can turn on.
fn start_access_log(log: &LogConfig) -> Result<(), String> {
    let sink = access_log::Sink::start(log.access_log_path.as_deref(), log.access_log_buffer)
        .map_err(|err| format!("log.access_log_path: {err}"))?;
    // Only the first install takes effect, and this is the first.
    let _ = access_log::install(sink, log.format);
    access_log::refresh_filter();
    Ok(())
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

/// Applies a new `log.level` to the running subscriber.
type SetLevel = Box<dyn Fn(&str) + Send + Sync>;

/// Starts logging, and returns how to change the level later (a reload). `RUST_LOG`, when set, wins over
/// `log.level` at start and on every reload.
fn init_tracing(log: &LogConfig) -> SetLevel {
    type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_wins = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // The handle's type names the formatter, so each format keeps its own behind the same closure type.
    let reload: Reload = match log.format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()))
        }
    };
    Box::new(move |level| {
        if env_wins {
            tracing::info!(level, "RUST_LOG is set; the new log.level is not applied");
            return;
        }
        match reload(EnvFilter::new(level)) {
            Ok(()) => tracing::info!(level, "log level changed"),
            Err(err) => tracing::warn!(error = %err, "cannot change the log level"),
        }
    })
}

fn start(cli: Cli, config: Config, set_level: SetLevel) -> anyhow::Result<()> {
    let runtime = runtime_for(config.server.worker_threads)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(cli, config, set_level))
}

/// One worker thread (a one-core machine, or `taskset` to one CPU) gets tokio's current-thread scheduler:
/// the same event loop without the work-stealing machinery a single worker never uses. More get the
/// multi-thread scheduler with that many workers.
fn runtime_for(worker_threads: Option<usize>) -> tokio::runtime::Builder {
    let threads = worker_threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    if threads == 1 {
        return tokio::runtime::Builder::new_current_thread();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads);
    builder
}

async fn run(cli: Cli, mut config: Config, set_level: SetLevel) -> anyhow::Result<()> {
    let mut demo_upstream = None;
    if cli.demo {
        let upstream = demo::spawn_upstream()
            .await
            .context("cannot start the demo upstream")?;
        let url = format!("http://{upstream}");
        config.set_upstream(&url)?;
        demo_upstream = Some(url);
    }
    // Before the listening line: a signal sent the moment the proxy reports ready must already be a shutdown.
    let signals = Signals::install().context("cannot install signal handlers")?;
    let listener = bind(config.server.listen).await?;
    let admin_listener = bind(config.admin.listen).await?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let proxy = Proxy::new(&config);
    // Before anything is served (the purge API included): from here on the restore keeps out every key a fill
    // or a purge touches. The outcome carries the snapshot's stream id, for a clustered reader's replay.
    let restart::Restoring { outcome, finished } = restart::restore_in_background(&proxy);
    // Kept for the life of the process: dropping it stops sharing invalidations. It reads from the stream's
    // end, and again from the snapshot's stream id once the restore has stored its entries.
    let cluster = match &config.cluster {
        Some(cluster) => {
            let cluster =
                cluster::start(cluster, &proxy, None).context("cannot start the cluster")?;
            cluster.replay_after(async move {
                match outcome.await {
                    Ok(restart::Restored::Loaded { stream_id, .. }) => stream_id,
                    _ => None,
                }
            });
            Some(cluster)
        }
        None => None,
    };
    // The admin listener is never shut down: it answers /readyz (503) through the whole drain.
    tokio::spawn(admin::run(
        admin_listener,
        Arc::clone(&proxy),
        std::future::pending(),
    ));
    tracing::info!(%addr, admin = %admin_addr, upstream = %config.upstream.authority, "listening");
    if cli.demo {
        println!("{}", demo::instructions(addr, admin_addr));
    }
    let live = Arc::clone(proxy.live());
    let cli = Arc::new(cli);
    let demo_upstream = Arc::new(demo_upstream);
    let set_level: Arc<SetLevel> = Arc::new(set_level);
    let reload_config = move || {
        let (live, cli, demo_upstream) = (
            Arc::clone(&live),
            Arc::clone(&cli),
            Arc::clone(&demo_upstream),
        );
        let set_level = Arc::clone(&set_level);
        async move {
            // Reading files (and the system's CA roots) blocks: done on the blocking pool, so the event loop
            // keeps serving (also with the current-thread scheduler).
            let result = tokio::task::spawn_blocking(move || {
                reload::reload(&live, || {
                    let mut config = load_config(&cli)?;
                    if let Some(url) = demo_upstream.as_ref() {
                        config.set_upstream(url)?;
                    }
                    Ok(config)
                })
            })
            .await;
            let Ok(Ok(reloaded)) = result else {
                return;
            };
            if let Some(level) = reloaded.log_level {
                set_level(&level);
                access_log::refresh_filter();
            }
            if let (Some(path), Some(sink)) = (reloaded.access_log_path, access_log::installed()) {
                match sink.retarget(path.as_deref()) {
                    Ok(()) => tracing::info!(path = ?path, "access log moved"),
                    Err(err) => {
                        tracing::error!(path = ?path, error = %err, "log.access_log_path: cannot open; access lines go where they went");
                    }
                }
            }
        }
    };
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(signals.handle(stop, reload_config));
    let shutdown = async {
        let _ = stopped.await;
    };
    server::run(listener, Arc::clone(&proxy), &config.server, shutdown).await?;
    // The drain is over: what it invalidated last still has to reach the other instances.
    if let Some(cluster) = &cluster {
        if !cluster.flush(CLUSTER_FLUSH_TIMEOUT).await {
            tracing::warn!("cluster: invalidations still queued at exit were not shared");
        }
    }
    // Drained: only the admin listener's purges still change the cache, and one during the write gives the
    // snapshot up (it would bring the purged entry back).
    // With the id of the last invalidation the cache reflects, read before the write begins: one applied
    // while it writes is replayed again at the next start, which drops nothing more.
    let stream_id = cluster.as_ref().and_then(cluster::Cluster::last_applied_id);
    restart::save(&proxy, &finished, stream_id).await;
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The signals the process answers. Installed before the listeners are bound: until then the default
/// disposition would kill the process instead of draining it.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    user1: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
            user1: signal(SignalKind::user_defined1())?,
        })
    }

    /// SIGTERM or SIGINT starts the drain (`stop`); a second one exits at once. SIGHUP reloads. SIGUSR1
    /// reopens the access log file (after logrotate moved it, as nginx does).
    async fn handle<F: Future<Output = ()>>(
        mut self,
        stop: oneshot::Sender<()>,
        reload: impl Fn() -> F,
    ) {
        let mut stop = Some(stop);
        loop {
            let name = tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP received; reloading the configuration");
                    reload().await;
                    continue;
                }
                _ = self.user1.recv() => {
                    tracing::info!("SIGUSR1 received; reopening the access log");
                    if let Some(sink) = access_log::installed() {
                        sink.reopen();
                    }
                    continue;
                }
            };
            let Some(stop) = stop.take() else {
                tracing::warn!(
                    "{name} received again; stopping now, without waiting for the drain"
                );
                std::process::exit(i32::from(EXIT_FORCED));
            };
            tracing::info!("{name} received");
            let _ = stop.send(());
        }
    }
}
