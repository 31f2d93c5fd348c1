//! The purge API on the admin listener: purging one avatar or all of them (the fake upstream's request counts
//! prove the next request goes to it), `/stats`, the bearer token, and the refusal to run a non-loopback
//! admin listener without one (in the configuration, on reload, and at the binary's start).

use std::process::{Output, Stdio};

use crate::support::ops::{TempDir, TestAdmin};
use crate::support::*;
use cloudreve_edge::config::AdminToken;
use cloudreve_edge::reload;
use http::Request;

const BIN: &str = env!("CARGO_BIN_EXE_cloudreve-edge");
const PROXY_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
/// `EX_USAGE`: the configuration cannot be used.
const EXIT_CONFIG: i32 = 64;
const ALICE: &str = "/api/v4/user/avatar/img1alice";
const BOB: &str = "/api/v4/user/avatar/img2bob";
const TOKEN: &str = "s3cret-t0ken";

/// `method url` on the admin listener, with `Authorization: Bearer <token>` when one is given.
async fn admin_call(method: &str, url: &str, token: Option<&str>) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(&client(), request.body(empty()).unwrap()).await
}

async fn stats(admin: &TestAdmin, token: Option<&str>) -> serde_json::Value {
    let reply = admin_call("GET", &admin.url("/stats"), token).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    reply.json()
}

/// A proxy in front of the avatar fake, its admin listener, and the fake.
async fn start(token: Option<&str>) -> (FakeCloudreve, TestProxy, TestAdmin) {
    let upstream = FakeCloudreve::avatars().await;
    let mut config = test_config(&upstream.url());
    config.admin.token = token.map(|t| AdminToken::new(t).unwrap());
    let proxy = TestProxy::start_with(config).await;
    let admin = TestAdmin::start(&proxy).await;
    (upstream, proxy, admin)
}

#[tokio::test]
async fn purging_one_avatar_makes_its_next_request_a_miss_and_keeps_the_others() {
    let (upstream, proxy, admin) = start(None).await;
    for path in [ALICE, BOB, ALICE, BOB] {
        get(&proxy.url(path)).await;
    }
    assert_eq!(get(&proxy.url(ALICE)).await.x_cache(), "HIT");
    assert_eq!(upstream.count_target(ALICE), 1);

    let reply = admin_call("POST", &admin.url("/purge/avatar/img1alice"), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        serde_json::json!({ "purged": true, "id": "img1alice" })
    );

    let again = get(&proxy.url(ALICE)).await;
    assert_eq!(again.x_cache(), "MISS", "{}", again.cache_status());
    assert_eq!(again.body, avatar_bytes("img1alice"));
    assert_eq!(
        upstream.count_target(ALICE),
        2,
        "the purged avatar was fetched again"
    );
    assert_eq!(get(&proxy.url(BOB)).await.x_cache(), "HIT");
    assert_eq!(
        upstream.count_target(BOB),
        1,
        "another user's avatar stayed"
    );
    assert_eq!(
        get(&proxy.url(ALICE)).await.x_cache(),
        "HIT",
        "stored again"
    );
    assert_eq!(upstream.count_target(ALICE), 2);
}

#[tokio::test]
async fn purge_takes_delete_and_purge_too_and_says_when_nothing_was_stored() {
    let (upstream, proxy, admin) = start(None).await;
    get(&proxy.url(ALICE)).await;
    let reply = admin_call("PURGE", &admin.url("/purge/avatar/img1alice"), None).await;
    assert_eq!(reply.json()["purged"], true);
    let reply = admin_call("DELETE", &admin.url("/purge/avatar/img1alice"), None).await;
    assert_eq!(
        (reply.status.as_u16(), &reply.json()["purged"]),
        (200, &serde_json::json!(false)),
        "already gone"
    );
    assert_eq!(get(&proxy.url(ALICE)).await.x_cache(), "MISS");
    assert_eq!(upstream.count_target(ALICE), 2);

    // Not the API's methods, and ids the cache never keys.
    for (method, path, status) in [
        ("GET", "/purge/avatar/img1alice", 405),
        ("GET", "/purge/all", 405),
        ("POST", "/stats", 405),
        ("POST", "/purge/avatar/", 400),
        ("POST", "/purge/avatar/img1%61lice", 400),
        ("POST", "/purge/avatar/a/b", 400),
    ] {
        let reply = admin_call(method, &admin.url(path), None).await;
        assert_eq!(reply.status, status, "{method} {path}");
    }
    assert_eq!(
        get(&proxy.url(ALICE)).await.x_cache(),
        "HIT",
        "none of those purged"
    );
}

#[tokio::test]
async fn purging_everything_sends_every_avatar_upstream_again() {
    let (upstream, proxy, admin) = start(None).await;
    for path in [ALICE, BOB] {
        assert_eq!(get(&proxy.url(path)).await.x_cache(), "MISS");
        assert_eq!(get(&proxy.url(path)).await.x_cache(), "HIT");
    }
    let reply = admin_call("POST", &admin.url("/purge/all"), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({ "purged": 2 }));
    let after = stats(&admin, None).await;
    assert_eq!((&after["entries"], &after["bytes"]), (&0.into(), &0.into()));

    for path in [ALICE, BOB] {
        assert_eq!(get(&proxy.url(path)).await.x_cache(), "MISS", "{path}");
        assert_eq!(upstream.count_target(path), 2, "{path}");
    }
}

#[tokio::test]
async fn stats_report_entries_bytes_and_a_hit_ratio_that_follows_the_traffic() {
    let (_upstream, proxy, admin) = start(None).await;
    let before = stats(&admin, None).await;
    assert_eq!(before["entries"], 0);
    assert_eq!(before["bytes"], 0);
    assert_eq!(before["requests"], 0);
    assert_eq!(
        before["hit_ratio"],
        serde_json::Value::Null,
        "no lookup yet"
    );

    assert_eq!(get(&proxy.url(ALICE)).await.x_cache(), "MISS");
    let one = stats(&admin, None).await;
    assert_eq!(one["entries"], 1);
    let bytes = one["bytes"].as_u64().unwrap();
    assert!(
        bytes >= avatar_bytes("img1alice").len() as u64,
        "the body at least: {bytes}"
    );
    assert_eq!(one["misses"], 1);
    assert_eq!(one["hit_ratio"], 0.0);

    let ratio = |stats: &serde_json::Value| stats["hit_ratio"].as_f64().unwrap();
    assert_eq!(get(&proxy.url(ALICE)).await.x_cache(), "HIT");
    assert_eq!(ratio(&stats(&admin, None).await), 0.5);
    assert_eq!(get(&proxy.url(ALICE)).await.x_cache(), "HIT");
    let hits = stats(&admin, None).await;
    assert!((ratio(&hits) - 2.0 / 3.0).abs() < 1e-9, "{hits}");
    assert_eq!(hits["hits"], 2);

    // A bypass is counted but is no lookup; a second avatar adds its entry and bytes.
    let bypass = get(&proxy.url(&format!("{ALICE}?nocache=1"))).await;
    assert_eq!(bypass.x_cache(), "BYPASS");
    assert_eq!(get(&proxy.url(BOB)).await.x_cache(), "MISS");
    let after = stats(&admin, None).await;
    assert_eq!(after["bypassed"], 1);
    assert_eq!(after["requests"], 5);
    assert_eq!(after["entries"], 2);
    assert!(after["bytes"].as_u64().unwrap() > bytes);
    assert_eq!(ratio(&after), 0.5, "{after}");
}

#[tokio::test]
async fn token_is_required_when_configured_and_health_stays_open() {
    let (upstream, proxy, admin) = start(Some(TOKEN)).await;
    get(&proxy.url(ALICE)).await;

    for (method, path) in [
        ("POST", "/purge/avatar/img1alice"),
        ("PURGE", "/purge/all"),
        ("GET", "/stats"),
        ("GET", "/purge/all"), // 401 before 405: nothing is learnt without the token
    ] {
        for token in [None, Some("wrong"), Some("s3cret-t0ke")] {
            let reply = admin_call(method, &admin.url(path), token).await;
            assert_eq!(reply.status, 401, "{method} {path} with {token:?}");
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(
        get(&proxy.url(ALICE)).await.x_cache(),
        "HIT",
        "the refused calls purged nothing"
    );

    assert_eq!(stats(&admin, Some(TOKEN)).await["entries"], 1);
    let reply = admin_call("POST", &admin.url("/purge/avatar/img1alice"), Some(TOKEN)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["purged"], true);
    assert_eq!(get(&proxy.url(ALICE)).await.x_cache(), "MISS");
    assert_eq!(upstream.count_target(ALICE), 2);

    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            get(&admin.url(path)).await.status,
            200,
            "{path} needs no token"
        );
    }
}

#[tokio::test]
async fn a_reload_rotates_the_token() {
    let (upstream, proxy, admin) = start(Some(TOKEN)).await;
    let mut rotated = test_config(&upstream.url());
    rotated.admin.token = Some(AdminToken::new("n3w-t0ken").unwrap());
    reload::reload(proxy.proxy.live(), || Ok(rotated)).unwrap();
    let old = admin_call("GET", &admin.url("/stats"), Some(TOKEN)).await;
    assert_eq!(old.status, 401);
    let new = admin_call("GET", &admin.url("/stats"), Some("n3w-t0ken")).await;
    assert_eq!(new.status, 200);
}

#[tokio::test]
async fn a_reload_cannot_drop_the_token_of_a_non_loopback_admin_listener() {
    let upstream = FakeCloudreve::avatars().await;
    let mut running = test_config(&upstream.url());
    // Never bound here: TestProxy serves the public listener only. The address is what a reload checks.
    running.set_admin_listen("192.0.2.11:9091").unwrap();
    running.admin.token = Some(AdminToken::new(TOKEN).unwrap());
    let proxy = TestProxy::start_with(running).await;

    // The new file moves the listener to loopback (a restart-only key) and drops the token.
    let without = test_config(&upstream.url());
    let err = reload::reload(proxy.proxy.live(), || Ok(without)).unwrap_err();
    assert!(err.to_string().starts_with("admin.token: "), "{err}");
    let config = &proxy.proxy.live().load().config;
    assert_eq!(
        config.admin.token.as_ref().map(AdminToken::as_str),
        Some(TOKEN)
    );
}

/// Runs the binary to its exit, within [`PATIENCE`].
async fn run_binary(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("the binary did not exit")
        .unwrap()
}

#[tokio::test]
async fn non_loopback_admin_listen_without_a_token_exits_64_before_binding() {
    // 192.0.2.0/24 is TEST-NET-1: not an address of this host, so should the check be missing, binding fails
    // (exit 1) instead of listening anywhere.
    let output = run_binary(&[
        "--config",
        PROXY_TOML,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "192.0.2.11:9091",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_CONFIG), "{stderr}");
    assert!(
        stderr.contains("invalid configuration: admin.token: must be set"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");

    // The same address with a token in the file passes the check.
    let dir = TempDir::new("purge-token");
    let file = dir.write(
        "proxy.toml",
        &format!("[admin]\nlisten = \"192.0.2.11:9091\"\ntoken = \"{TOKEN}\"\n"),
    );
    let output = run_binary(&["--config", file.to_str().unwrap(), "--check"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn purging_by_url_and_by_prefix_drops_exactly_what_they_name() {
    let upstream =
        FakeCloudreve::start(|request| async move { cloudreve_with_assets(&request) }).await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;
    let targets = ["/assets/a.js?v=1", "/assets/b.css", ALICE];
    for target in targets {
        get(&proxy.url(target)).await;
        assert_eq!(get(&proxy.url(target)).await.x_cache(), "HIT", "{target}");
    }
    let by_url = admin_call("PURGE", &admin.url("/purge/url/assets/a.js?v=1"), None).await;
    assert_eq!(
        by_url.json(),
        serde_json::json!({ "purged": "/assets/a.js?v=1" })
    );
    let after_url: Vec<_> = outcomes_of(&proxy, &targets).await;
    assert_eq!(after_url, ["MISS", "HIT", "HIT"]);
    let by_prefix = admin_call("POST", &admin.url("/purge/prefix/assets/"), None).await;
    assert_eq!(by_prefix.status, 200);
    let after_prefix: Vec<_> = outcomes_of(&proxy, &targets).await;
    assert_eq!(
        after_prefix,
        ["MISS", "MISS", "HIT"],
        "everything under /assets/, and not the avatar"
    );
    let unknown = admin_call("POST", &admin.url("/purge/url/api/v4/site/ping"), None).await;
    assert_eq!(unknown.status, 400, "no rule caches that URL");
}

/// `X-Cache` of a GET of each target, in order.
async fn outcomes_of(proxy: &TestProxy, targets: &[&str]) -> Vec<String> {
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(get(&proxy.url(target)).await.x_cache().to_owned());
    }
    outcomes
}

/// `X-Cache` of a GET of `target` with `Host: host`.
async fn outcome_for(proxy: &TestProxy, host: &str, target: &str) -> String {
    let request = Request::get(proxy.url(target)).header("host", host);
    let reply = send(&client(), request.body(empty()).unwrap()).await;
    reply.x_cache().to_owned()
}

#[tokio::test]
async fn under_a_rule_keyed_by_host_purges_drop_the_target_for_every_host() {
    let upstream =
        FakeCloudreve::start(|request| async move { cloudreve_with_assets(&request) }).await;
    let mut config = test_config(&upstream.url());
    config.cache.rules[1].key_includes_host = true;
    let proxy = TestProxy::start_with(config).await;
    let admin = TestAdmin::start(&proxy).await;
    let stored = [
        ("a.example", "/assets/a.js"),
        ("b.example:8080", "/assets/a.js"),
        ("a.example", "/assets/b.css"),
    ];
    for (host, target) in stored {
        assert_eq!(outcome_for(&proxy, host, target).await, "MISS");
        assert_eq!(outcome_for(&proxy, host, target).await, "HIT");
    }
    let by_url = admin_call("POST", &admin.url("/purge/url/assets/a.js"), None).await;
    assert_eq!(by_url.status, 200);
    let mut after_url = Vec::new();
    for (host, target) in stored {
        after_url.push(outcome_for(&proxy, host, target).await);
    }
    assert_eq!(
        after_url,
        ["MISS", "MISS", "HIT"],
        "both hosts' a.js, not b.css"
    );
    let by_prefix = admin_call("POST", &admin.url("/purge/prefix/assets/b"), None).await;
    assert_eq!(by_prefix.status, 200);
    assert_eq!(
        outcome_for(&proxy, "a.example", "/assets/b.css").await,
        "MISS"
    );
    assert_eq!(
        outcome_for(&proxy, "a.example", "/assets/a.js").await,
        "HIT"
    );
}

/// A purge that lands while a fill of the same avatar is in flight: the fill began before the purge, so what
/// it brings back may be the old avatar; it answers the requests that were waiting on it but is not stored,
/// and the next request goes upstream (before: the fill stored it after the purge, and the old avatar was
/// served until max-age).
#[tokio::test]
async fn a_fill_in_flight_when_a_purge_lands_does_not_store_what_it_brings() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = std::sync::Arc::clone(&release);
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let upstream = FakeCloudreve::start(move |request| {
        let response = cloudreve_avatar(&request);
        let held = first.swap(false, std::sync::atomic::Ordering::SeqCst);
        let gate = std::sync::Arc::clone(&gate);
        async move {
            if held {
                gate.notified().await;
            }
            response
        }
    })
    .await;
    let proxy = TestProxy::start(&upstream.url()).await;
    let admin = TestAdmin::start(&proxy).await;

    let url = proxy.url(ALICE);
    let in_flight = tokio::spawn(async move { get(&url).await });
    eventually("the fill reached the upstream", || {
        upstream.count_target(ALICE) == 1
    })
    .await;
    let reply = admin_call("POST", &admin.url("/purge/avatar/img1alice"), None).await;
    assert_eq!(reply.status, 200);
    release.notify_one();
    let overtaken = in_flight.await.unwrap();
    assert_eq!(overtaken.status, 200);
    assert_eq!(overtaken.body, avatar_bytes("img1alice"));

    let next = get(&proxy.url(ALICE)).await;
    assert_eq!(next.x_cache(), "MISS", "{}", next.cache_status());
    assert_eq!(
        upstream.count_target(ALICE),
        2,
        "the answer of the overtaken fill was not stored"
    );
    assert_eq!(get(&proxy.url(ALICE)).await.x_cache(), "HIT");
}
