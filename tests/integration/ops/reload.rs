//! Reloading the configuration: in-process through `reload::reload` (the upstream changes, the cache and open
//! connections stay, a broken file changes nothing, listener keys wait for a restart, per-connection
//! timeouts apply to new connections), and the real binary
//! on SIGHUP; a second SIGTERM stops the binary at once.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::support::ops::TempDir;
use crate::support::raw::Raw;
use crate::support::*;
use cloudreve_edge::Config;
use cloudreve_edge::reload;
use http::{Request, Response};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc};
use tokio::time::timeout;

const AVATAR: &str = "/api/v4/user/avatar/img1";
const PING: &str = "/api/v4/site/ping";

#[tokio::test]
async fn reload_changes_the_upstream_and_keeps_the_cache_and_open_connections() {
    let (first, second) = (
        FakeCloudreve::avatars().await,
        FakeCloudreve::avatars().await,
    );
    let proxy = TestProxy::start(&first.url()).await;
    let keep_alive = client();
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "MISS");
    let ping = || Request::get(proxy.url(PING)).body(empty()).unwrap();
    assert_eq!(send(&keep_alive, ping()).await.status, 200);

    let reloaded = reload::reload(proxy.proxy.live(), || Ok(test_config(&second.url()))).unwrap();
    assert_eq!(reloaded, reload::Reloaded::default());

    // Same client connection, new upstream.
    assert_eq!(send(&keep_alive, ping()).await.status, 200);
    assert_eq!(second.count_target(PING), 1);
    assert_eq!(first.count_target(PING), 1);
    // The cache survived: the avatar is still a hit, fetched from the first upstream only.
    assert_eq!(get(&proxy.url(AVATAR)).await.x_cache(), "HIT");
    assert_eq!(second.count_target(AVATAR), 0);
}

#[tokio::test]
async fn invalid_reload_keeps_the_running_configuration() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let err = reload::reload(proxy.proxy.live(), || {
        Config::from_toml("[upstream]\nurl = \"ftp://cloudreve:5212\"\n")
    })
    .unwrap_err();
    assert!(err.to_string().starts_with("upstream.url"), "{err}");
    assert_eq!(get(&proxy.url(PING)).await.status, 200);
    assert_eq!(upstream.count(), 1, "still the old upstream");
}

#[tokio::test]
async fn reload_applies_a_new_snapshot_path_and_refuses_one_in_a_missing_directory() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let live = proxy.proxy.live();
    let missing = "[cache]\nsnapshot_path = \"/nonexistent-cloudreve-edge/cache.snapshot\"\n";
    let err = reload::reload(live, || Config::from_toml(missing)).unwrap_err();
    assert!(err.to_string().starts_with("cache.snapshot_path"), "{err}");
    assert_eq!(live.load().config.cache.snapshot_path, None);

    let dir = std::env::temp_dir();
    let path = dir.join(format!("edge-reload-snapshot-{}", std::process::id()));
    let text = format!(
        "[cache]\nsnapshot_path = {:?}\n",
        path.display().to_string()
    );
    let reloaded = reload::reload(live, || Config::from_toml(&text)).unwrap();
    assert!(
        !reloaded.restart_needed.contains(&"cache.snapshot_path"),
        "{reloaded:?}"
    );
    assert_eq!(live.load().config.cache.snapshot_path, Some(path));
}

#[tokio::test]
async fn reload_keeps_listener_keys_until_a_restart_and_says_so() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let mut changed = test_config(&upstream.url());
    changed.set_listen("127.0.0.1:1").unwrap();
    changed.cache.capacity /= 2;
    changed.cache.avatar_limits_mut().stale_while_revalidate *= 2;
    changed.cache.rules[1].limits.stale_if_error /= 2;
    changed.log.level = "debug".to_owned();
    let reloaded = reload::reload(proxy.proxy.live(), || Ok(changed)).unwrap();
    assert_eq!(
        reloaded.restart_needed,
        ["server.listen", "cache.capacity", "cache.rules"],
        "the rules are fixed with the cache they fill"
    );
    assert_eq!(reloaded.log_level.as_deref(), Some("debug"));
    let running = proxy.proxy.live().load();
    assert_eq!(running.config.server.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(
        running.config.cache.rules,
        test_config(&upstream.url()).cache.rules
    );
    assert_eq!(running.config.log.level, "debug");
}

#[tokio::test]
async fn reload_applies_connection_timeouts_to_new_connections_and_keeps_the_limits() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    // Served before the reload: its limits were read when it was accepted (idle_timeout 30s).
    let mut before = Raw::connect(proxy.addr).await;
    before
        .send(b"GET /api/v4/site/ping HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(before.response().await.status, 200);

    let mut changed = test_config(&upstream.url());
    changed.server.idle_timeout = Duration::from_millis(200);
    changed.server.header_read_timeout = Duration::from_secs(1);
    changed.server.response_idle_timeout = Duration::from_secs(1);
    changed.server.send_timeout = Duration::from_secs(2);
    changed.upstream.max_connections = 3;
    changed.server.max_connections = 7;
    changed.server.max_request_head_size = 16 * 1024;
    changed.server.max_headers = 10;
    let reloaded = reload::reload(proxy.proxy.live(), || Ok(changed)).unwrap();
    assert_eq!(
        reloaded.restart_needed,
        [
            "server.max_connections",
            "server.max_request_head_size",
            "server.max_headers"
        ],
        "the slots and hyper's head limits are fixed at start; the timeouts are per connection"
    );
    let running = proxy.proxy.live().load();
    assert_eq!(
        running.config.server.idle_timeout,
        Duration::from_millis(200)
    );
    assert_eq!(running.config.server.max_connections, 10_000);
    assert_eq!(running.config.server.send_timeout, Duration::from_secs(2));
    assert_eq!(
        running.config.upstream.max_connections, 3,
        "the new upstream pool has its own cap"
    );

    // A connection accepted after the reload gets the new idle timeout; the one before keeps its own.
    let mut after = Raw::connect(proxy.addr).await;
    assert!(after.closed().await.is_empty(), "closed unanswered");
    assert_eq!(
        before.closed_within(Duration::from_millis(300)).await,
        None,
        "an open connection kept the idle timeout it was accepted with"
    );
}

#[tokio::test]
async fn reloaded_trusted_proxies_apply_to_new_connections() {
    let upstream = FakeCloudreve::avatars().await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let forged = || {
        Request::get(proxy.url(PING))
            .header("x-forwarded-for", "198.51.100.20")
            .body(empty())
            .unwrap()
    };
    send(&client(), forged()).await;
    assert_eq!(upstream.last().header("x-forwarded-for"), Some("127.0.0.1"));

    let mut trusting = test_config(&upstream.url());
    trusting.server.trusted_proxies =
        cloudreve_edge::config::TrustedProxies::parse(&["127.0.0.1".to_owned()]).unwrap();
    reload::reload(proxy.proxy.live(), || Ok(trusting)).unwrap();
    send(&client(), forged()).await;
    assert_eq!(
        upstream.last().header("x-forwarded-for"),
        Some("198.51.100.20, 127.0.0.1")
    );
}

// The binary

const BIN: &str = env!("CARGO_BIN_EXE_cloudreve-edge");

/// The binary on a config file, its stderr read line by line.
struct Edge {
    child: Child,
    stderr: mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
}

impl Edge {
    fn spawn(config: &std::path::Path) -> Self {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the binary");
        let (tx, stderr) = mpsc::unbounded_channel();
        let pipe = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stderr,
            log: Vec::new(),
        }
    }

    /// Reads stderr until a line contains `text`, within [`PATIENCE`].
    async fn line(&mut self, text: &str) -> String {
        let found = timeout(PATIENCE, async {
            while let Some(line) = self.stderr.recv().await {
                self.log.push(line.clone());
                if line.contains(text) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no line with {text:?}; log:\n{}", self.log.join("\n")),
        }
    }

    async fn listening(&mut self) -> SocketAddr {
        let line = self.line("listening").await;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap_or_else(|| panic!("no addr= in {line}"));
        addr.parse().unwrap()
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit_code(&mut self) -> Option<i32> {
        timeout(PATIENCE, self.child.wait())
            .await
            .expect("the process did not exit")
            .unwrap()
            .code()
    }
}

fn config_text(upstream: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"{upstream}\"\n"
    )
}

#[tokio::test]
async fn sighup_reloads_the_upstream_and_a_broken_file_keeps_the_old_one() {
    let (first, second) = (
        FakeCloudreve::avatars().await,
        FakeCloudreve::avatars().await,
    );
    let dir = TempDir::new("sighup");
    let path = dir.write("proxy.toml", &config_text(&first.url()));
    let mut edge = Edge::spawn(&path);
    let addr = edge.listening().await;
    let ping = format!("http://{addr}{PING}");
    assert_eq!(get(&ping).await.status, 200);
    assert_eq!(first.count(), 1);

    dir.write("proxy.toml", &config_text(&second.url()));
    edge.signal("HUP");
    edge.line("configuration reloaded").await;
    assert_eq!(get(&ping).await.status, 200);
    assert_eq!((first.count(), second.count()), (1, 1));

    dir.write("proxy.toml", "[upstream]\nurl = \"ftp://nowhere\"\n");
    edge.signal("HUP");
    let line = edge.line("configuration reload failed").await;
    assert!(line.contains("upstream.url"), "{line}");
    assert_eq!(get(&ping).await.status, 200);
    assert_eq!((first.count(), second.count()), (1, 2));

    edge.signal("TERM");
    assert_eq!(edge.exit_code().await, Some(0));
}

#[tokio::test]
async fn second_sigterm_stops_at_once_without_waiting_for_the_drain() {
    let gate = Arc::new(Notify::new());
    let held = Arc::clone(&gate);
    let upstream = FakeCloudreve::start(move |_| {
        let held = Arc::clone(&held);
        async move {
            held.notified().await;
            Response::new(full("late"))
        }
    })
    .await;
    let dir = TempDir::new("second-signal");
    // The drain would wait 30 s for the held request.
    let path = dir.write("proxy.toml", &config_text(&upstream.url()));
    let mut edge = Edge::spawn(&path);
    let addr = edge.listening().await;
    let url = format!("http://{addr}{PING}");
    let _held_request = tokio::spawn(async move { client().get(url.parse().unwrap()).await });
    eventually("the request reaches the upstream", || upstream.count() == 1).await;

    edge.signal("TERM");
    edge.line("draining").await;
    edge.signal("TERM");
    edge.line("received again").await;
    assert_eq!(edge.exit_code().await, Some(1));
    gate.notify_waiters();
}

#[tokio::test]
async fn sighup_reloads_on_the_single_threaded_runtime_too() {
    // One worker thread runs tokio's current-thread scheduler, where nothing may block the event loop.
    let (first, second) = (
        FakeCloudreve::avatars().await,
        FakeCloudreve::avatars().await,
    );
    let one_worker = |upstream: &str| {
        config_text(upstream).replace("[server]\n", "[server]\nworker_threads = 1\n")
    };
    let dir = TempDir::new("sighup-single");
    let path = dir.write("proxy.toml", &one_worker(&first.url()));
    let mut edge = Edge::spawn(&path);
    let addr = edge.listening().await;
    let ping = format!("http://{addr}{PING}");
    assert_eq!(get(&ping).await.status, 200);
    dir.write("proxy.toml", &one_worker(&second.url()));
    edge.signal("HUP");
    edge.line("configuration reloaded").await;
    assert_eq!(get(&ping).await.status, 200);
    assert_eq!((first.count(), second.count()), (1, 1));
    edge.signal("TERM");
    assert_eq!(edge.exit_code().await, Some(0));
}
