//! The process and server lifecycle: configuration errors at start-up (before anything is bound), graceful
//! shutdown of the real binary on SIGTERM/SIGINT, the drain timeout and idle connections in-process, `--demo`,
//! and the JSON access log.
//!
//! The binary is found through its log: its address is read from the `listening` line, never guessed or
//! slept for. Every child is spawned with `kill_on_drop`, so a failing test leaves no process behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::binary::{Edge, Scratch, edge_command, field};
use crate::support::raw::Raw;
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::timeout;

const PROXY_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
/// `EX_USAGE`: the configuration cannot be used.
const EXIT_CONFIG: i32 = 64;
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

// Fixtures

/// Runs the binary to its end (configuration errors, `--check`), within [`PATIENCE`].
async fn run_to_end(args: &[&str]) -> Output {
    timeout(PATIENCE, edge_command(args).output())
        .await
        .unwrap_or_else(|_| panic!("cloudreve-edge {args:?} did not exit"))
        .expect("cannot run the binary")
}

/// A configuration error: exit 64, one `invalid configuration` message on stderr naming `key`, nothing else.
fn assert_config_error(output: &Output, key: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(EXIT_CONFIG),
        "exit status; stderr: {stderr}"
    );
    assert!(
        stderr.starts_with("cloudreve-edge: invalid configuration: "),
        "{stderr}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("cloudreve-edge:"))
            .count(),
        1,
        "exactly one message: {stderr}"
    );
    assert!(stderr.contains(key), "the message names {key}: {stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Connects until the address refuses, within [`PATIENCE`] (a connection that still succeeds is dropped).
async fn refused_soon(addr: SocketAddr) {
    timeout(PATIENCE, async {
        loop {
            match TcpStream::connect(addr).await {
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => return,
                Err(err) => panic!("connect to {addr}: unexpected error {err}"),
                Ok(stream) => drop(stream),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{addr} still accepts connections"));
}

/// A loopback port held by the test for the rest of its life.
fn hold_a_port() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A config file that listens on `listen` and breaks one key with `broken` (TOML, with its own section).
fn config_with(listen: SocketAddr, broken: &str) -> String {
    format!("[server]\nlisten = \"{listen}\"\n\n{broken}\n")
}

/// Runs the binary on a file listening on a port the test holds, broken by `broken`: it must fail as a
/// configuration error naming `key`. A bind attempt would fail with exit 1 ("cannot listen"), so exit 64
/// shows the process stopped before binding.
async fn assert_rejected_before_binding(broken: &str, key: &str) {
    let (_held, addr) = hold_a_port();
    let scratch = Scratch::new("invalid");
    let path = scratch.config(&config_with(addr, broken));
    let output = run_to_end(&["--config", &path]).await;
    assert_config_error(&output, key);
}

// 1. Configuration errors stop the binary before it binds

#[tokio::test]
async fn invalid_upstream_url_exits_64_before_binding() {
    assert_rejected_before_binding("[upstream]\nurl = \"ftp://cloudreve:5212\"", "upstream.url")
        .await;
}

#[tokio::test]
async fn object_size_over_capacity_exits_64_before_binding() {
    assert_rejected_before_binding(
        "[cache]\ncapacity = \"1 MiB\"\n[[cache.rules]]\nkind = \"avatar\"\nmax_object_size = \"2 MiB\"",
        "cache.rules[0].max_object_size",
    )
    .await;
}

#[tokio::test]
async fn key_includes_host_on_the_avatar_rule_exits_64_before_binding() {
    // Both avatar paths key by the id alone; the flag is refused rather than silently ignored (#12).
    assert_rejected_before_binding(
        "[[cache.rules]]\nkind = \"avatar\"\nkey_includes_host = true",
        "cache.rules[0].key_includes_host",
    )
    .await;
}

#[tokio::test]
async fn snapshot_path_in_a_missing_directory_exits_64_before_binding() {
    assert_rejected_before_binding(
        "[cache]\nsnapshot_path = \"/nonexistent-cloudreve-edge/cache.snapshot\"",
        "cache.snapshot_path",
    )
    .await;
}

#[tokio::test]
async fn unknown_key_exits_64_before_binding() {
    assert_rejected_before_binding("[cache]\ncapacityy = \"64 MiB\"", "capacityy").await;
}

#[tokio::test]
async fn held_port_with_a_valid_file_fails_to_bind_with_exit_1() {
    // The contrast to the tests above: with a valid file the same held port is a bind error, not 64.
    let (_held, addr) = hold_a_port();
    let scratch = Scratch::new("held");
    let path = scratch.config(&config_with(
        addr,
        "[upstream]\nurl = \"http://127.0.0.1:9\"",
    ));
    let output = run_to_end(&["--config", &path]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn missing_config_file_exits_64() {
    let scratch = Scratch::new("missing");
    let path = scratch.path().join("nowhere.toml");
    let path = path.to_str().unwrap();
    let output = run_to_end(&["--config", path]).await;
    assert_config_error(&output, path);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn check_accepts_the_checked_in_proxy_toml() {
    let output = run_to_end(&["--config", PROXY_TOML, "--check"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{PROXY_TOML}: ok")
    );
}

#[tokio::test]
async fn upstream_flag_overrides_the_file_and_is_validated() {
    let output = run_to_end(&["--config", PROXY_TOML, "--check", "--upstream", "ftp://x"]).await;
    assert_config_error(&output, "upstream.url");
    let output = run_to_end(&[
        "--config",
        PROXY_TOML,
        "--check",
        "--upstream",
        "http://cloudreve.internal:5212",
    ])
    .await;
    assert_eq!(output.status.code(), Some(0));
}

#[tokio::test]
async fn listen_flag_overrides_the_file_and_is_validated() {
    let output = run_to_end(&["--config", PROXY_TOML, "--check", "--listen", "localhost"]).await;
    assert_config_error(&output, "server.listen");
    let output = run_to_end(&["--config", PROXY_TOML, "--check", "--listen", "[::1]:9"]).await;
    assert_eq!(output.status.code(), Some(0));
}

// 2. Graceful shutdown of the binary

/// The binary on the checked-in `proxy.toml`, on `127.0.0.1:0`, in front of `upstream`.
async fn start_edge(upstream: &str) -> (Edge, SocketAddr) {
    let mut edge = Edge::spawn(
        &[
            "--config",
            PROXY_TOML,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
        ],
        &[],
        None,
    );
    let (addr, line) = edge.listening().await;
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
    assert_eq!(
        format!("http://{}", field(&line, "upstream")),
        upstream,
        "--upstream overrides the file"
    );
    (edge, addr)
}

#[tokio::test]
async fn sigterm_stops_accepting_and_lets_the_in_flight_request_finish() {
    let body = Bytes::from(
        (0..256 * 1024)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let gate = Arc::new(Notify::new());
    let upstream = {
        let gate = Arc::clone(&gate);
        let body = body.clone();
        FakeCloudreve::start(move |_| {
            let gate = Arc::clone(&gate);
            let body = body.clone();
            async move {
                gate.notified().await;
                Response::builder()
                    .header("content-type", "application/octet-stream")
                    .body(full(body))
                    .unwrap()
            }
        })
        .await
    };
    let (mut edge, addr) = start_edge(&upstream.url()).await;

    let url = format!("http://{addr}/api/v4/file/content/7");
    let in_flight = tokio::spawn(async move { get(&url).await });
    eventually("the request reached the upstream", || upstream.count() == 1).await;

    edge.signal("TERM");
    edge.stderr_line("SIGTERM received", |l| l.contains("SIGTERM received"))
        .await;
    let draining = edge
        .stderr_line("the draining line", |l| l.contains("draining"))
        .await;
    assert_eq!(field(&draining, "open_connections"), "1", "{draining}");
    refused_soon(addr).await;
    assert!(
        edge.child.try_wait().unwrap().is_none(),
        "the process waits for the in-flight request"
    );

    gate.notify_one();
    let reply = timeout(PATIENCE, in_flight).await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, body, "the whole body after shutdown began");
    // No assertion on `Connection: close`: hyper adds it only if the connection task saw the drain signal
    // before writing the head, and the signal follows the "draining" line by a race the test cannot order.

    let status = edge.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
    let log = edge.whole_log().await;
    assert!(
        log.iter()
            .any(|l| l.contains("drained; all connections closed")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn sigint_on_an_idle_proxy_exits_0() {
    let upstream = FakeCloudreve::avatars().await;
    let (mut edge, addr) = start_edge(&upstream.url()).await;
    edge.signal("INT");
    let status = edge.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
    let log = edge.whole_log().await;
    assert!(
        log.iter().any(|l| l.contains("SIGINT received")),
        "{log:#?}"
    );
    refused_soon(addr).await;
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn sigterm_right_after_the_listening_line_exits_0() {
    // The listening line is the readiness signal; a SIGTERM sent the moment it appears must already be
    // handled as a shutdown, not kill the process by the default disposition.
    for _ in 0..10 {
        let mut edge = Edge::spawn(
            &[
                "--config",
                PROXY_TOML,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--upstream",
                "http://127.0.0.1:9",
            ],
            &[],
            None,
        );
        edge.listening().await;
        edge.signal("TERM");
        let status = edge.exit_status().await;
        assert_eq!(status.code(), Some(0), "{status}");
    }
}

// 3. Drain timeout and idle connections (in-process)

#[tokio::test]
async fn drain_timeout_ends_shutdown_with_a_request_still_in_flight() {
    let upstream = FakeCloudreve::start(|_| std::future::pending::<Response<TestBody>>()).await;
    let mut config = test_config(&upstream.url());
    let drain_timeout = Duration::from_millis(300);
    config.server.drain_timeout = drain_timeout;
    let mut proxy = TestProxy::start_with(config).await;

    let url = proxy.url("/api/v4/file/content/7");
    let in_flight = tokio::spawn(async move {
        client()
            .request(Request::get(url).body(empty()).unwrap())
            .await
    });
    eventually("the request reached the upstream", || upstream.count() == 1).await;

    let began = Instant::now();
    proxy.begin_shutdown();
    proxy.finished().await.unwrap();
    let took = began.elapsed();
    assert!(
        took >= drain_timeout,
        "returned after {took:?}, before the drain timeout"
    );

    // The request never completed; once `run` has returned its connection is closed, not left running.
    let outcome = timeout(PATIENCE, in_flight)
        .await
        .expect("the in-flight connection outlived server::run")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn idle_keep_alive_connection_does_not_hold_up_shutdown() {
    let upstream = FakeCloudreve::avatars().await;
    let mut config = test_config(&upstream.url());
    // Longer than PATIENCE: a shutdown that waited for the idle connection would fail `finished()`.
    config.server.drain_timeout = Duration::from_secs(60);
    let mut proxy = TestProxy::start_with(config).await;

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let response = timeout(
        PATIENCE,
        sender.send_request(
            Request::get("/api/v4/site/ping")
                .header("host", proxy.addr.to_string())
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("connection"),
        None,
        "the connection stays open after the request"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"code":0,"data":"pong","msg":""}"#);
    assert!(
        !connection.is_finished(),
        "the connection stays open after the request"
    );

    proxy.begin_shutdown();
    proxy.finished().await.unwrap();
    timeout(PATIENCE, connection)
        .await
        .expect("the idle connection was not closed")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn idle_http2_connection_does_not_hold_up_shutdown() {
    let upstream = FakeCloudreve::avatars().await;
    let mut config = test_config(&upstream.url());
    config.server.drain_timeout = Duration::from_secs(60);
    let mut proxy = TestProxy::start_with(config).await;

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get(proxy.url("/api/v4/site/ping"))
        .body(empty())
        .unwrap();
    let response = answered(sender.send_request(request)).await;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();

    proxy.begin_shutdown();
    proxy.finished().await.unwrap();
    timeout(PATIENCE, connection)
        .await
        .expect("the idle HTTP/2 connection was not closed")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn silent_connection_does_not_hold_up_shutdown() {
    // Connected, nothing sent yet (the protocol is not even known): not a request in flight.
    let upstream = FakeCloudreve::avatars().await;
    let mut config = test_config(&upstream.url());
    config.server.drain_timeout = Duration::from_secs(60);
    config.server.header_read_timeout = Duration::from_secs(60);
    let mut proxy = TestProxy::start_with(config).await;

    let mut stream = Raw::connect(proxy.addr).await;
    // A served request on a second connection shows the first has been accepted (accept is in order).
    assert_eq!(get(&proxy.url("/api/v4/site/ping")).await.status, 200);

    proxy.begin_shutdown();
    proxy.finished().await.unwrap();
    // A reset is a close too.
    let rest = stream
        .closed_within(PATIENCE)
        .await
        .expect("the silent connection was not closed");
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

// 4. --demo

#[tokio::test]
async fn demo_serves_miss_then_hit_bypass_and_pass_through() {
    // No proxy.toml in the working directory: the demo runs on the built-in defaults.
    let scratch = Scratch::new("demo");
    let mut edge = Edge::spawn(
        &[
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
        Some(scratch.path()),
    );
    let line = edge
        .stdout_line("the demo instructions", |l| l.contains("proxy on http://"))
        .await;
    let base = line
        .split("proxy on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no proxy URL in {line:?}"));
    let addr: SocketAddr = base
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not http://127.0.0.1:PORT: {base:?}"));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
    edge.stdout_line("the curl examples", |l| {
        l.contains(&format!("curl -si {base}/api/v4/user/avatar/lpua"))
    })
    .await;

    let first = get(&format!("{base}/api/v4/user/avatar/lpua")).await;
    let second = get(&format!("{base}/api/v4/user/avatar/lpua")).await;
    assert_eq!(first.status, 200);
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert!(second.body.starts_with(PNG_SIGNATURE), "{:?}", second.body);
    assert_eq!(first.body, second.body);
    assert_eq!(second.header("content-type"), Some("image/png"));

    let bypass = get(&format!("{base}/api/v4/user/avatar/lpua?nocache=1")).await;
    assert_eq!(bypass.x_cache(), "BYPASS");
    assert!(bypass.body.starts_with(PNG_SIGNATURE));

    let ping = get(&format!("{base}/api/v4/site/ping")).await;
    assert_eq!(ping.status, 200);
    assert_eq!(ping.json()["code"], 0);

    edge.signal("TERM");
    let status = edge.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

// 5. The access log

#[tokio::test]
async fn json_access_log_has_one_event_per_request() {
    let upstream = FakeCloudreve::avatars().await;
    let scratch = Scratch::new("access");
    // The file turns logging off; RUST_LOG replaces the file's level.
    let path = scratch.config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"{}\"\n\n[log]\nformat = \"json\"\nlevel = \"off\"\n",
        upstream.url()
    ));
    let mut edge = Edge::spawn(
        &["--config", &path],
        // cloudreve_edge=info only for the listening line, which carries the port.
        &[("RUST_LOG", "access=info,cloudreve_edge=info")],
        None,
    );
    let listening = edge
        .stderr_line("the listening event", |l| l.contains("listening"))
        .await;
    let listening: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();

    // A raw request, so the client address is known.
    let mut stream = Raw::connect(addr).await;
    let client = stream.local_addr();
    let request = format!(
        "GET /api/v4/user/avatar/img1?nocache=false HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    );
    stream.send(request.as_bytes()).await.unwrap();
    let response = stream.closed_cleanly().await;
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(response.ends_with(&avatar_bytes("img1")));

    let access = edge
        .stderr_line("the access event", |l| l.contains(r#""target":"access""#))
        .await;
    let event: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(event["method"], "GET", "{event}");
    assert_eq!(
        event["path"], "/api/v4/user/avatar/img1",
        "the path, without the query: {event}"
    );
    assert_eq!(event["status"], 200, "{event}");
    assert_eq!(event["cache"], "miss", "{event}");
    assert_eq!(event["bytes"], avatar_bytes("img1").len(), "{event}");
    assert_eq!(event["client"], client.to_string(), "{event}");
    assert_eq!(event["complete"], true, "{event}");

    // A hit the express lane answers (plain GET, keep-alive) writes the same event, once it is sent.
    let mut stream = Raw::connect(addr).await;
    let client = stream.local_addr();
    let request = format!("GET /api/v4/user/avatar/img1 HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    stream.send(request.as_bytes()).await.unwrap();
    let head = stream.head().await;
    assert!(head.contains("x-cache: HIT"), "{head}");
    let access = edge
        .stderr_line("the hit's access event", |l| {
            l.contains(r#""target":"access""#) && l.contains(r#""cache":"hit""#)
        })
        .await;
    let event: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(event["path"], "/api/v4/user/avatar/img1", "{event}");
    assert_eq!(event["status"], 200, "{event}");
    assert_eq!(event["bytes"], avatar_bytes("img1").len(), "{event}");
    assert_eq!(event["client"], client.to_string(), "{event}");
    assert_eq!(event["complete"], true, "{event}");
    drop(stream);

    edge.signal("TERM");
    assert_eq!(edge.exit_status().await.code(), Some(0));
    let log = edge.whole_log().await;
    let events: Vec<serde_json::Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert_eq!(
        events.iter().filter(|e| e["target"] == "access").count(),
        2,
        "{log:#?}"
    );
}

/// A proxy (the binary) in front of the avatar fake, writing access lines to `access.log` in `scratch`.
async fn start_logging_to_a_file(scratch: &Scratch, upstream: &str) -> (Edge, SocketAddr, PathBuf) {
    let log = scratch.path().join("access.log");
    let path = scratch.config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"{upstream}\"\n\n[log]\naccess_log_path = \"{}\"\n",
        log.display()
    ));
    let mut edge = Edge::spawn(&["--config", &path], &[], None);
    let (addr, _) = edge.listening().await;
    (edge, addr, log)
}

/// `count` requests on one keep-alive connection: avatar misses then hits (express lane) and pass-through,
/// each answered 200.
async fn requests(addr: SocketAddr, count: usize) {
    let client = client();
    for i in 0..count {
        let path = match i % 3 {
            0 => format!("/api/v4/user/avatar/img{}", i % 7),
            1 => "/api/v4/user/avatar/img1".to_owned(),
            _ => format!("/api/v4/site/config?n={i}"),
        };
        let request = Request::get(format!("http://{addr}{path}"))
            .body(empty())
            .unwrap();
        let reply = send(&client, request).await;
        assert!(!reply.status.is_server_error(), "{path}: {}", reply.status);
    }
}

/// The lines of an access log file, each checked to be one whole access line.
fn access_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for line in &lines {
        assert!(
            line.contains(" INFO access: client=127.0.0.1:") && line.contains(" duration_ms="),
            "{line}"
        );
    }
    lines
}

#[tokio::test]
async fn every_access_line_is_in_the_file_after_sigterm() {
    let upstream = FakeCloudreve::avatars().await;
    let scratch = Scratch::new("access-file");
    let (mut edge, addr, log) = start_logging_to_a_file(&scratch, &upstream.url()).await;
    const REQUESTS: usize = 300;
    requests(addr, REQUESTS).await;
    // Less than a second after the last answer: most lines are still in memory, and the drain writes them.
    edge.signal("TERM");
    assert_eq!(edge.exit_status().await.code(), Some(0));
    let lines = access_lines(&log);
    assert_eq!(
        lines.len(),
        REQUESTS,
        "{:#?}",
        &lines[lines.len().saturating_sub(3)..]
    );
    assert!(lines.iter().any(|l| l.contains(r#"cache="hit""#)));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#"path="/api/v4/site/config""#))
    );
    assert!(
        !edge.whole_log().await.iter().any(|l| l.contains("access:")),
        "no access line on stderr"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "at most 0640: {mode:o}");
}

#[tokio::test]
async fn sigusr1_reopens_the_access_log_after_a_rotation() {
    let upstream = FakeCloudreve::avatars().await;
    let scratch = Scratch::new("access-rotate");
    let (mut edge, addr, log) = start_logging_to_a_file(&scratch, &upstream.url()).await;
    requests(addr, 10).await;
    // Written within a second (the writer's timer), without a drain.
    let deadline = Instant::now() + PATIENCE;
    while access_lines(&log).len() < 10 {
        assert!(
            Instant::now() < deadline,
            "the first 10 lines were never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rotated = scratch.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    edge.signal("USR1");
    edge.stderr_line("the reopen", |l| l.contains("access log reopened"))
        .await;
    requests(addr, 5).await;
    edge.signal("TERM");
    assert_eq!(edge.exit_status().await.code(), Some(0));
    assert_eq!(access_lines(&rotated).len(), 10, "before the rotation");
    assert_eq!(access_lines(&log).len(), 5, "after it, in a new file");
}

#[tokio::test]
async fn an_access_log_that_cannot_be_written_drops_lines_counted_and_serves_on() {
    let upstream = FakeCloudreve::avatars().await;
    let scratch = Scratch::new("access-full");
    // /dev/full opens, and every write to it fails with ENOSPC: a disk that filled up.
    let path = scratch.config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"{}\"\n\n[log]\naccess_log_path = \"/dev/full\"\n",
        upstream.url()
    ));
    let mut edge = Edge::spawn(&["--config", &path], &[], None);
    let (addr, line) = edge.listening().await;
    let admin: SocketAddr = field(&line, "admin").parse().unwrap();
    requests(addr, 30).await;
    edge.stderr_line("the failing write", |l| {
        l.contains("WARN") && l.contains("cannot write the access log")
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = get(&format!("http://{admin}/metrics")).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        let dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("cloudreve_edge_access_log_dropped_total "))
            .map(|v| v.parse::<f64>().unwrap());
        // The scrape's own line is dropped too, after the 30.
        if dropped.is_some_and(|d| d >= 30.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped lines not counted: {dropped:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    requests(addr, 3).await;
    edge.signal("TERM");
    assert_eq!(edge.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn an_access_log_path_that_cannot_be_opened_exits_64_before_binding() {
    assert_rejected_before_binding(
        "[log]\naccess_log_path = \"/nonexistent-dir/access.log\"",
        "log.access_log_path",
    )
    .await;
}
