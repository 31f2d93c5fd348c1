//! Several instances sharing invalidations through a real Redis (`[cluster]`): what one instance drops, the
//! others drop (their own fake Cloudreve sees the next request); events missed while away are replayed;
//! history lost while away (trimmed, Redis restarted empty) drops everything; while Redis is down an
//! instance serves within the freshness cap, then revalidates. The propagation time is printed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ::redis::Value;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudreve_edge::cache::policy::AvatarKey;
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use tokio::io::AsyncBufReadExt as _;

use crate::support::ops::{TempDir, TestCa};
use crate::support::redis::{Node, TestRedis};
use crate::support::*;

const ALICE: &str = "/api/v4/user/avatar/img1alice";
const BOB: &str = "/api/v4/user/avatar/img2bob";
const ASSET: &str = "/assets/app.js";
const APPLIED: &str = "cloudreve_edge_cluster_applied_total";
const PUBLISHED: &str = "cloudreve_edge_cluster_published_total";
const RESYNCS: &str = "cloudreve_edge_cluster_resyncs_total";
const STREAM: &str = "cloudreve-edge:invalidations";

/// Cloudreve as far as these tests need it: avatars (a 304 to a revalidation) and assets, a confirmed
/// avatar change, and `POST`s under `/assets/` that succeed (an unsafe method's invalidation).
fn fleet_cloudreve(request: &Request<Incoming>) -> Response<TestBody> {
    let path = request.uri().path();
    let avatar = path.starts_with("/api/v4/user/avatar/");
    match *request.method() {
        Method::PUT if path == "/api/v4/user/setting/avatar" => {
            json_response(r#"{"code":0,"msg":""}"#)
        }
        Method::POST if path.starts_with("/assets/") => {
            Response::builder().status(204).body(empty()).unwrap()
        }
        Method::GET if avatar && request.headers().contains_key("if-modified-since") => {
            Response::builder()
                .status(304)
                .header("cache-control", "public, max-age=86400")
                .header("last-modified", "Sun, 29 Nov 2026 12:00:00 GMT")
                .body(empty())
                .unwrap()
        }
        _ => cloudreve_with_assets(request),
    }
}

async fn cloudreve() -> FakeCloudreve {
    FakeCloudreve::start(|request| async move { fleet_cloudreve(&request) }).await
}

/// `POST` on an instance's admin listener (no token: loopback).
async fn admin_post(node: &Node, path: &str) -> Reply {
    request("POST", &node.admin.url(path)).await
}

/// A Cloudreve access token naming `sub`.
fn bearer(sub: &str) -> String {
    let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"token_type":"access","sub":"{sub}"}}"#));
    format!("Bearer eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln")
}

/// Fills `path` on `node` and checks the next request is a hit.
async fn cached(node: &Node, path: &str) {
    get(&node.proxy.url(path)).await;
    assert_eq!(get(&node.proxy.url(path)).await.x_cache(), "HIT", "{path}");
}

#[tokio::test]
async fn a_purge_on_one_instance_is_a_miss_on_the_other() {
    let redis = TestRedis::start().await;
    let a = Node::join(&redis.url(), "a", cloudreve().await).await;
    let b = Node::join(&redis.url(), "b", cloudreve().await).await;
    let purges = [
        ("/purge/avatar/img1alice", ALICE),
        ("/purge/url/assets/app.js", ASSET),
        ("/purge/prefix/assets/", ASSET),
        ("/purge/all", BOB),
    ];
    for (done, (purge, path)) in purges.into_iter().enumerate() {
        cached(&b, path).await;
        let fetched = b.upstream.count_target(path);
        assert_eq!(admin_post(&a, purge).await.status, 200, "{purge}");
        b.until_metric(APPLIED, &[], |n| n > done as f64).await;
        assert_eq!(get(&b.proxy.url(path)).await.x_cache(), "MISS", "{purge}");
        assert_eq!(b.upstream.count_target(path), fetched + 1, "{purge}");
    }
    a.until_metric(PUBLISHED, &[], |n| n == 4.0).await;
    assert_eq!(
        a.metric(APPLIED, &[]).await,
        0.0,
        "an instance skips its own events"
    );
    assert_eq!(b.metric(RESYNCS, &[]).await, 0.0);
}

#[tokio::test]
async fn an_avatar_change_and_an_unsafe_request_seen_by_one_instance_reach_the_other() {
    let redis = TestRedis::start().await;
    let a = Node::join(&redis.url(), "a", cloudreve().await).await;
    let b = Node::join(&redis.url(), "b", cloudreve().await).await;
    cached(&b, ALICE).await;
    cached(&b, BOB).await;
    cached(&b, ASSET).await;

    let change = send(
        &client(),
        Request::put(a.proxy.url("/api/v4/user/setting/avatar"))
            .header("authorization", bearer("img1alice"))
            .body(full("new png"))
            .unwrap(),
    )
    .await;
    assert_eq!(change.json()["code"], 0);
    b.until_metric(APPLIED, &[], |n| n >= 1.0).await;
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "MISS");
    assert_eq!(
        get(&b.proxy.url(BOB)).await.x_cache(),
        "HIT",
        "only that user"
    );

    let post = send(
        &client(),
        Request::post(a.proxy.url(ASSET)).body(full("x")).unwrap(),
    )
    .await;
    assert_eq!(post.status, 204);
    b.until_metric(APPLIED, &[], |n| n >= 2.0).await;
    assert_eq!(get(&b.proxy.url(ASSET)).await.x_cache(), "MISS");
}

#[tokio::test]
async fn events_appended_while_a_reader_is_away_are_replayed_when_it_is_back() {
    let redis = TestRedis::start().await;
    // A writes as `default`; B as the user the test shuts out (its connections killed, new ones refused).
    let a = Node::join(&redis.default_url(), "a", cloudreve().await).await;
    let b = Node::join(&redis.url(), "b", cloudreve().await).await;
    cached(&b, ALICE).await;
    cached(&b, BOB).await;

    redis.shut_out().await;
    b.until_connected(false).await;
    assert_eq!(admin_post(&a, "/purge/avatar/img1alice").await.status, 200);
    // Appended after the purge call returns, by A's writer.
    a.until_metric(PUBLISHED, &[], |n| n == 1.0).await;
    assert_eq!(
        get(&b.proxy.url(ALICE)).await.x_cache(),
        "HIT",
        "B has not read the purge yet"
    );

    redis.let_in().await;
    b.until_connected(true).await;
    assert_eq!(
        b.metric(APPLIED, &[]).await,
        1.0,
        "replayed from B's last id"
    );
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "MISS");
    assert_eq!(
        get(&b.proxy.url(BOB)).await.x_cache(),
        "HIT",
        "nothing else dropped"
    );
    assert_eq!(b.metric(RESYNCS, &[]).await, 0.0);
}

#[tokio::test]
async fn an_append_after_its_connection_was_killed_is_not_lost() {
    let redis = TestRedis::start().await;
    let a = Node::join(&redis.url(), "a", cloudreve().await).await;
    let b = Node::join(&redis.url(), "b", cloudreve().await).await;
    cached(&b, ALICE).await;
    cached(&b, BOB).await;
    // Every connection of both instances: A's writer finds its connection closed at the next append.
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    assert_eq!(admin_post(&a, "/purge/avatar/img1alice").await.status, 200);
    b.until_metric(APPLIED, &[], |n| n >= 1.0).await;
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "MISS");
    assert_eq!(get(&b.proxy.url(BOB)).await.x_cache(), "HIT");
    assert_eq!(a.metric(PUBLISHED, &[]).await, 1.0);
    assert_eq!(
        a.metric("cloudreve_edge_cluster_publish_failed_total", &[])
            .await,
        0.0
    );
}

#[tokio::test]
async fn an_invalidation_that_could_not_be_appended_makes_the_others_drop_everything() {
    let redis = TestRedis::start().await;
    // This time A is the one kept out: its append fails whatever it retries.
    let a = Node::join(&redis.url(), "a", cloudreve().await).await;
    let b = Node::join(&redis.default_url(), "b", cloudreve().await).await;
    cached(&b, ALICE).await;
    cached(&b, BOB).await;

    redis.shut_out().await;
    assert_eq!(admin_post(&a, "/purge/avatar/img1alice").await.status, 200);
    a.until_metric(
        "cloudreve_edge_cluster_publish_failed_total",
        &[("reason", "redis")],
        |n| n == 1.0,
    )
    .await;
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "HIT");

    redis.let_in().await;
    b.until_metric(RESYNCS, &[("reason", "peer_gap")], |n| n == 1.0)
        .await;
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "MISS");
    assert_eq!(
        get(&b.proxy.url(BOB)).await.x_cache(),
        "MISS",
        "which entries A's lost purge named, B cannot know"
    );
}

#[tokio::test]
async fn a_stream_trimmed_past_a_reader_while_it_is_away_drops_its_whole_cache() {
    let redis = TestRedis::start().await;
    let a = Node::join(&redis.default_url(), "a", cloudreve().await).await;
    let b = Node::join(&redis.url(), "b", cloudreve().await).await;
    cached(&b, ALICE).await;
    cached(&b, BOB).await;

    redis.shut_out().await;
    b.until_connected(false).await;
    admin_post(&a, "/purge/avatar/img1alice").await;
    a.until_metric(PUBLISHED, &[], |n| n == 1.0).await;
    redis.cmd(&["XTRIM", STREAM, "MAXLEN", "0"]).await;
    admin_post(&a, "/purge/url/assets/app.js").await;
    a.until_metric(PUBLISHED, &[], |n| n == 2.0).await;

    redis.let_in().await;
    b.until_connected(true).await;
    assert_eq!(b.metric(RESYNCS, &[("reason", "trimmed")]).await, 1.0);
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "MISS");
    assert_eq!(
        get(&b.proxy.url(BOB)).await.x_cache(),
        "MISS",
        "what the trimmed events dropped is unknown: everything goes"
    );
}

#[tokio::test]
async fn a_reader_whose_own_entry_aged_out_while_it_was_away_loses_nothing_and_drops_nothing() {
    let redis = TestRedis::start().await;
    let a = Node::join(&redis.default_url(), "a", cloudreve().await).await;
    let b = Node::join(&redis.url(), "b", cloudreve().await).await;
    admin_post(&a, "/purge/avatar/img9nobody").await;
    b.until_metric(APPLIED, &[], |n| n == 1.0).await;
    cached(&b, ALICE).await;
    cached(&b, BOB).await;

    redis.shut_out().await;
    b.until_connected(false).await;
    admin_post(&a, "/purge/avatar/img1alice").await;
    a.until_metric(PUBLISHED, &[], |n| n == 2.0).await;
    // What `MINID ~` does to entries older than cluster.retention: B's own position goes, A's new one stays.
    let newest = stream_ids(&redis).await.pop().unwrap();
    redis.cmd(&["XTRIM", STREAM, "MINID", &newest]).await;
    assert_eq!(stream_ids(&redis).await, [newest]);

    redis.let_in().await;
    b.until_connected(true).await;
    assert_eq!(
        b.metric(RESYNCS, &[]).await,
        0.0,
        "nothing after B's entry was lost"
    );
    assert_eq!(b.metric(APPLIED, &[]).await, 2.0);
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "MISS");
    assert_eq!(get(&b.proxy.url(BOB)).await.x_cache(), "HIT");
}

/// The ids of the stream's entries, oldest first.
async fn stream_ids(redis: &TestRedis) -> Vec<String> {
    let Value::Array(entries) = redis.cmd(&["XRANGE", STREAM, "-", "+"]).await else {
        panic!("XRANGE answers an array");
    };
    entries
        .iter()
        .map(|entry| match entry {
            Value::Array(parts) => ::redis::from_redis_value_ref(&parts[0]).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn with_redis_down_an_instance_serves_within_the_cap_then_revalidates_and_resyncs_when_back()
{
    let mut redis = TestRedis::start().await;
    let b = Node::join(&redis.url(), "b", cloudreve().await).await;
    cached(&b, ALICE).await;
    assert_eq!(b.upstream.count_target(ALICE), 1);

    redis.stop().await;
    b.until_connected(false).await;
    assert_eq!(
        get(&b.admin.url("/readyz")).await.status,
        200,
        "readiness ignores Redis"
    );
    b.proxy.clock.advance(Duration::from_secs(59));
    assert_eq!(
        get(&b.proxy.url(ALICE)).await.x_cache(),
        "HIT",
        "within the cap"
    );
    assert_eq!(b.upstream.count_target(ALICE), 1);
    b.proxy.clock.advance(Duration::from_secs(2));
    get(&b.proxy.url(ALICE)).await;
    assert_eq!(
        b.upstream.count_target(ALICE),
        2,
        "fresh for a day by max-age, revalidated past the cap"
    );
    let revalidation = b.upstream.last();
    assert_eq!(
        revalidation.header("if-modified-since"),
        Some("Sun, 29 Nov 2026 12:00:00 GMT")
    );
    assert_eq!(
        get(&b.proxy.url(ALICE)).await.x_cache(),
        "HIT",
        "validated just now"
    );

    redis.restart().await;
    b.until_connected(true).await;
    assert_eq!(
        b.metric(RESYNCS, &[("reason", "epoch")]).await,
        1.0,
        "a Redis that came back empty"
    );
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "MISS");
    b.proxy.clock.advance(Duration::from_secs(120));
    assert_eq!(
        get(&b.proxy.url(ALICE)).await.x_cache(),
        "HIT",
        "attached again: the upstream's freshness, uncapped"
    );
}

#[tokio::test]
async fn a_flush_returns_once_what_was_queued_is_in_the_stream_and_never_hangs() {
    let redis = TestRedis::start().await;
    let a = Node::join(&redis.url(), "a", cloudreve().await).await;
    for purge in ["/purge/avatar/img1alice", "/purge/avatar/img2bob"] {
        admin_post(&a, purge).await;
    }
    assert!(a.cluster.flush(PATIENCE).await);
    assert_eq!(
        redis.cmd(&["XLEN", STREAM]).await,
        Value::Int(2),
        "no waiting"
    );
    // With Redis refusing it, the writer gives up on the append after its retries (counted), and the flush
    // after `within` at the latest.
    redis.shut_out().await;
    admin_post(&a, "/purge/avatar/img1alice").await;
    let flushed = a.cluster.flush(Duration::from_millis(1)).await;
    assert!(!flushed, "an append retries for longer than that");
    assert!(a.cluster.flush(PATIENCE).await);
    // The purge, then the `all` the writer owes the others, tried before each later job.
    let failed = a
        .metric(
            "cloudreve_edge_cluster_publish_failed_total",
            &[("reason", "redis")],
        )
        .await;
    assert!(failed >= 2.0, "{failed}");
    assert_eq!(redis.cmd(&["XLEN", STREAM]).await, Value::Int(2));
}

#[tokio::test]
async fn an_instance_started_while_redis_is_down_serves_detached_then_attaches() {
    let mut redis = TestRedis::start().await;
    redis.stop().await;
    let b = Node::start(&redis.url(), "b", cloudreve().await, None).await;
    b.until_connected(false).await;
    cached(&b, ALICE).await;
    b.proxy.clock.advance(Duration::from_secs(61));
    get(&b.proxy.url(ALICE)).await;
    assert_eq!(b.upstream.count_target(ALICE), 2, "capped from the start");
    redis.restart().await;
    b.until_connected(true).await;
    assert_eq!(b.metric(RESYNCS, &[]).await, 0.0, "nothing was ever read");
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "HIT");
}

#[tokio::test]
async fn a_reader_resumes_after_the_id_it_is_given_and_reports_where_it_is() {
    let redis = TestRedis::start().await;
    let a = Node::join(&redis.url(), "a", cloudreve().await).await;
    for purge in ["/purge/avatar/img1alice", "/purge/avatar/img2bob"] {
        admin_post(&a, purge).await;
    }
    a.until_metric(PUBLISHED, &[], |n| n == 2.0).await;
    let ids = stream_ids(&redis).await;
    assert_eq!(ids.len(), 2);
    // As a snapshot's stream id would be passed back: the second event is replayed, the first is not.
    let b = Node::start(&redis.url(), "b", cloudreve().await, Some(&ids[0])).await;
    b.until_connected(true).await;
    assert_eq!(b.metric(APPLIED, &[]).await, 1.0);
    assert_eq!(b.metric(RESYNCS, &[]).await, 0.0);
    assert_eq!(
        b.cluster.last_applied_id().as_deref(),
        Some(ids[1].as_str())
    );
    assert_eq!(b.cluster.instance_id(), "b");
}

/// Purges on A until each is gone from B's cache, 200 times: prints the time from sending the purge call to
/// A's admin listener to the entry's absence on B. No timed assertion; BENCHMARKS.md keeps the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_time_from_a_purge_on_one_instance_to_a_miss_on_the_other() {
    const PURGES: usize = 200;
    let redis = TestRedis::start().await;
    let a = Node::join(&redis.url(), "a", cloudreve().await).await;
    let b = Node::join(&redis.url(), "b", cloudreve().await).await;
    let purger = client();
    let mut times = Vec::with_capacity(PURGES);
    for i in 0..PURGES {
        let id = format!("img{i}");
        get(&b.proxy.url(&format!("/api/v4/user/avatar/{id}"))).await;
        let key = AvatarKey::from_path_segment(&id).unwrap();
        let stored = || {
            b.proxy()
                .cache()
                .peek(key.as_str(), &HeaderMap::new())
                .is_some()
        };
        assert!(stored());
        let purge = Request::post(a.admin.url(&format!("/purge/avatar/{id}")))
            .body(empty())
            .unwrap();
        let sent = Instant::now();
        assert_eq!(send(&purger, purge).await.status, 200);
        let deadline = sent + PATIENCE;
        while stored() {
            assert!(Instant::now() < deadline, "purge {i} never reached B");
            tokio::task::yield_now().await;
        }
        times.push(sent.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "cluster propagation over loopback, {PURGES} purges A -> B: p50 {:?}, p99 {:?}, max {:?}",
        at(0.50),
        at(0.99),
        times[PURGES - 1]
    );
    assert_eq!(b.metric(APPLIED, &[]).await, PURGES as f64);
}

/// `deploy/redis-invalidations.conf`'s user line, as `ACL SETUSER` arguments (name first).
fn deploy_redis_user() -> Vec<String> {
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/redis-invalidations.conf"
    ))
    .unwrap();
    conf.lines()
        .filter_map(|line| line.strip_prefix("user "))
        .find(|rule| rule.starts_with("cloudreve-edge "))
        .expect("a cloudreve-edge user")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_deploy_examples_redis_user_may_do_everything_an_instance_does() {
    let redis = TestRedis::start().await;
    let user = deploy_redis_user();
    let mut setuser = vec!["ACL", "SETUSER"];
    setuser.extend(user.iter().map(String::as_str));
    redis.cmd(&setuser).await;
    let password = user.iter().find_map(|rule| rule.strip_prefix('>')).unwrap();
    let url = format!("redis://{}:{password}@127.0.0.1:{}", user[0], redis.port);
    let a = Node::join(&url, "a", cloudreve().await).await;
    let b = Node::join(&url, "b", cloudreve().await).await;
    cached(&b, ALICE).await;
    assert_eq!(admin_post(&a, "/purge/avatar/img1alice").await.status, 200);
    b.until_metric(APPLIED, &[], |n| n == 1.0).await;
    assert_eq!(get(&b.proxy.url(ALICE)).await.x_cache(), "MISS");
    // What reaches B now reaches it on new connections, which run every check (the epoch key, TYPE,
    // XINFO STREAM) first.
    cached(&b, BOB).await;
    redis.cmd(&["CLIENT", "KILL", "USER", &user[0]]).await;
    assert_eq!(admin_post(&a, "/purge/avatar/img2bob").await.status, 200);
    b.until_metric(APPLIED, &[], |n| n == 2.0).await;
    assert_eq!(get(&b.proxy.url(BOB)).await.x_cache(), "MISS");
    assert_eq!(b.metric(RESYNCS, &[]).await, 0.0);
}

const BIN: &str = env!("CARGO_BIN_EXE_cloudreve-edge");

/// The binary's log (stderr), read line by line.
struct Logged {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    seen: Vec<String>,
}

impl Logged {
    /// Runs the binary on `config` (loopback listeners on free ports), with `cert_file` as the roots it
    /// trusts (`SSL_CERT_FILE`), or the system's.
    fn start(config: &Path, cert_file: Option<&Path>) -> Self {
        let mut command = tokio::process::Command::new(BIN);
        command
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(file) = cert_file {
            command.env("SSL_CERT_FILE", file);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        Self {
            child,
            lines: tokio::io::BufReader::new(stderr).lines(),
            seen: Vec::new(),
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exits after its drain")
            .unwrap()
    }

    /// The first line (from here on) that contains `wanted`, within [`PATIENCE`].
    async fn until(&mut self, wanted: &str) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                self.seen.push(line.clone());
                if line.contains(wanted) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no {wanted:?} in the log:\n{}", self.seen.join("\n")),
        }
    }
}

#[tokio::test]
async fn the_binary_joins_a_rediss_redis_it_trusts_and_only_that_one() {
    let dir = TempDir::new("rediss");
    let ca = TestCa::new("redis test CA");
    let leaf = ca.leaf("redis");
    let ca_file = dir.write("ca.pem", &ca.pem);
    let redis = TestRedis::start_tls(
        &dir.write("redis.crt", &leaf.cert_pem),
        &dir.write("redis.key", &leaf.key_pem),
        &ca_file,
    )
    .await;
    let config = dir.write(
        "proxy.toml",
        &format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[cluster]\n\
             redis_url = \"rediss://127.0.0.1:{}\"\ninstance_id = \"tls\"\n",
            redis.tls_port.unwrap()
        ),
    );

    let mut trusting = Logged::start(&config, Some(&ca_file));
    let listening = trusting.until("listening").await;
    trusting
        .until("cluster: reading the invalidation stream")
        .await;
    // The writer speaks TLS too: a purge on this instance lands in the stream, at the latest when it exits.
    let admin = listening
        .split_whitespace()
        .find_map(|field| field.strip_prefix("admin="))
        .expect("the admin address in the listening line");
    assert_eq!(
        request("POST", &format!("http://{admin}/purge/all"))
            .await
            .status,
        200
    );
    // Right away: the process flushes its queue after the drain, before it exits.
    assert!(trusting.terminate().await.success());
    assert_eq!(redis.cmd(&["XLEN", STREAM]).await, Value::Int(1));

    // Verified against the system's roots, the test CA's certificate is refused; the proxy serves anyway.
    let mut doubting = Logged::start(&config, None);
    doubting.until("listening").await;
    let refused = doubting
        .until("cluster: cannot read the invalidation stream")
        .await;
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
}

#[tokio::test]
async fn an_avatar_purged_elsewhere_while_an_instance_was_down_is_not_served_from_its_snapshot() {
    use crate::support::binary::{Edge, Scratch, field};

    let redis = TestRedis::start().await;
    let a = Node::join(&redis.default_url(), "a", cloudreve().await).await;
    let upstream = cloudreve().await;
    let scratch = Scratch::new("cluster-snapshot");
    let snapshot = scratch.path().join("cache.snapshot");
    let config = scratch.config(&format!(
        "[cache]\nsnapshot_path = {:?}\n[log]\naccess_log = false\n[cluster]\nredis_url = {:?}\n\
         instance_id = \"b\"\n",
        snapshot.display().to_string(),
        redis.url()
    ));
    let start = || async {
        let (mut edge, addr, _) = Edge::serve(&config, &upstream.url(), scratch.path()).await;
        edge.logged("reading the stream", |l| {
            l.contains("cluster: reading the invalidation stream")
        })
        .await;
        (edge, format!("http://{addr}"))
    };

    let (mut first, base) = start().await;
    for path in [ALICE, BOB] {
        get(&format!("{base}{path}")).await;
    }
    first.signal("TERM");
    assert_eq!(first.exit_status().await.code(), Some(0));
    let written = first
        .logged("snapshot written", |l| l.contains("cache snapshot written"))
        .await;
    assert_eq!(field(&written, "entries"), "2", "{written}");

    // While B is down, A purges Alice's avatar.
    assert_eq!(admin_post(&a, "/purge/avatar/img1alice").await.status, 200);
    a.until_metric(PUBLISHED, &[], |n| n == 1.0).await;

    let (mut second, base) = start().await;
    second
        .logged("restored", |l| l.contains("cache snapshot restored"))
        .await;
    second
        .logged("replayed", |l| {
            l.contains("cluster: replaying the invalidations since the snapshot")
        })
        .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Until the replay has applied the purge, Alice may still be a hit from the snapshot.
        let reply = get(&format!("{base}{ALICE}")).await;
        if reply.x_cache() != "HIT" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Alice's purge was never replayed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        upstream.count_target(ALICE),
        2,
        "fetched again after the restart"
    );
    assert_eq!(get(&format!("{base}{BOB}")).await.x_cache(), "HIT");
    assert_eq!(
        upstream.count_target(BOB),
        1,
        "Bob's came from the snapshot"
    );
}
